"""The device check behind ``benchmarks/gpu_check.sh``: batched relaxation throughput on a GPU against the ASE
one-at-a-time path on the same structures, the largest batch that fits, float32 against float64, and the whole
default space projected in GPU-hours; how long the device waits for the CPU inside a relax job (timestamps: the
job's wall time against the time in the model and optimiser); and the CsA'BB'X6 campaign projected on a 16-core node
with one GPU from the measured GPU rate and the CPU side's per-structure cost (``benchmarks/bench_pipeline.py``'s
measurement, run here). ``--campaign-cs`` screens the whole CsA'BB'X6 subset on the machine instead, building in
parallel processes on every core and identifying in worker processes while one process feeds the device.

    python benchmarks/gpu_check.py [--device cuda] [--n 512] [--ase 8]
    python benchmarks/gpu_check.py --campaign-cs
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench_pipeline's measurement and store
# relaxations of the default space x the five default tilt systems: 1,102,850 structures, oxidation-state twins
# sharing theirs (`dp-screen enumerate --dry-run`)
FULL_SPACE = 897_000
NODE_CORES = 16


def sample_structures(n: int, seed: int = 0):
    """BVM starting structures of random compositions of the default space, default tilt systems."""
    from dp_screen.jobs.enumerate import EnumerationSettings, enumerate_table
    from dp_screen.structures.perovskite import SiteSpeciesSet, build_bvm_structures
    from dp_screen.structures.tilts import DEFAULT_TILTS

    _, df = enumerate_table(EnumerationSettings(bv_filter="exact"))
    rows = df.sample(n=max(1, n // 5), random_state=seed).to_dict("records")
    out = []
    for ordering in DEFAULT_TILTS:
        mine = [r for r in rows if r["expected_ordering"] == ordering]
        for tilt in DEFAULT_TILTS[ordering]:
            built = build_bvm_structures([SiteSpeciesSet.from_row(r) for r in mine], ordering, tilt) if mine else []
            out += [b.structure for b in built if not isinstance(b, Exception)]
    random.Random(seed).shuffle(out)
    return out[:n]


def throughput(structures, model, settings, ase: bool = False) -> dict:
    from dp_screen.mlip.relax import relax_structures, relax_structures_ase

    t0 = time.perf_counter()
    results = (relax_structures_ase if ase else relax_structures)(structures, model, settings)
    seconds = time.perf_counter() - t0
    atom_steps = sum(len(r.structure) * max(r.n_steps, 1) for r in results)
    return {
        "seconds": seconds,
        "structures_per_s": len(results) / seconds,
        "atom_steps_per_s": atom_steps / seconds,
        "mean_steps": sum(r.n_steps for r in results) / len(results),
        "mean_atoms": sum(len(r.structure) for r in results) / len(results),
        "converged": sum(r.converged for r in results) / len(results),
    }


def largest_batch(structures, model) -> int | None:
    """Atoms TorchSim's memory estimate fits on the device in one batch (None on the CPU)."""
    if not model.device.startswith("cuda"):
        return None
    import torch_sim as ts
    from torch_sim.autobatching import estimate_max_memory_scaler

    from dp_screen.mlip.relax import _torchsim_model

    tm = _torchsim_model(model)
    states = [ts.initialize_state([s], tm.device, tm.dtype) for s in structures[:8]]
    return int(estimate_max_memory_scaler(states, tm, [float(len(s)) for s in structures[:8]]))


def check(args) -> None:
    from dp_screen.mlip.models import load_model
    from dp_screen.mlip.relax import RelaxSettings

    structures = sample_structures(args.n)
    settings = RelaxSettings(max_steps=args.max_steps)
    print(
        f"{len(structures)} structures ({sum(len(s) for s in structures) / len(structures):.1f} atoms on average), "
        f"FIRE fmax {settings.fmax} eV/A, max |stress| {settings.max_stress_gpa} GPa, <= {args.max_steps} steps",
        flush=True,
    )
    rows = {}
    for dtype in ("float32", "float64"):
        model = load_model(args.model, device=args.device, dtype=dtype)
        rows[f"batched {dtype}"] = throughput(structures, model, settings)
        print(
            f"batched {dtype:7s} on {model.device}: {rows[f'batched {dtype}']['structures_per_s']:.1f} structures/s, "
            f"{rows[f'batched {dtype}']['atom_steps_per_s']:.3g} atom-steps/s",
            flush=True,
        )
    model = load_model(args.model, device=args.device, dtype="float32")
    few = structures[: args.ase]
    rows["batched float32 (same as ASE)"] = throughput(few, model, settings)
    rows["ASE one at a time float32"] = throughput(few, model, settings, ase=True)
    ratio = (
        rows["batched float32 (same as ASE)"]["atom_steps_per_s"]
        / rows["ASE one at a time float32"]["atom_steps_per_s"]
    )
    print(
        f"on the same {len(few)} structures: batched {rows['batched float32 (same as ASE)']['atom_steps_per_s']:.3g} "
        f"vs ASE {rows['ASE one at a time float32']['atom_steps_per_s']:.3g} atom-steps/s: {ratio:.1f}x",
        flush=True,
    )
    print(f"largest batch that fits (TorchSim's estimate, atoms): {largest_batch(structures, model)}")
    best = rows["batched float32"]
    hours = FULL_SPACE * best["mean_atoms"] * best["mean_steps"] / best["atom_steps_per_s"] / 3600
    print(f"float32 / float64 throughput: {best['atom_steps_per_s'] / rows['batched float64']['atom_steps_per_s']:.2f}")
    print(
        f"whole default space ({FULL_SPACE:,d} relaxations, {best['mean_steps']:.0f} steps of "
        f"{best['mean_atoms']:.1f} atoms on average): {hours:.1f} hours on this {model.device} at the float32 rate"
    )
    wait = device_wait(args)
    project_cs(best, wait)


def device_wait(args) -> dict:
    """A relax job (``relax_store``, the campaign's code path) on a small store: its wall time against the time the
    device spends in the model and optimiser; the rest is the device waiting for the CPU (reads, documents, writes,
    handing finished structures to the identification processes, summaries)."""
    import tempfile
    from pathlib import Path

    from bench_pipeline import prepared_store

    import dp_screen.jobs.relax as relax_job

    inside = [0.0]
    real = relax_job.relax_structures

    def timed(*a, **k):
        t = time.perf_counter()
        try:
            return real(*a, **k)
        finally:
            inside[0] += time.perf_counter() - t

    home = Path(tempfile.mkdtemp(prefix="dp_gpu_wait_"))
    with prepared_store(home, args.wait_n) as (db, query):
        relax_job.relax_structures = timed
        try:
            t0 = time.perf_counter()
            res = relax_job.relax_store(args.model, None, db, query=query, device=args.device, progress=None)
            wall = time.perf_counter() - t0
        finally:
            relax_job.relax_structures = real
    out = {"structures": res["relaxed"], "wall_s": wall, "device_s": inside[0], "wait_share": 1 - inside[0] / wall}
    print(
        f"relax job on {res['relaxed']} structures: {wall:.1f} s wall, {inside[0]:.1f} s in the model and optimiser: "
        f"the device waits for the CPU {100 * out['wait_share']:.0f}% of the job (job start included)",
        flush=True,
    )
    return out


def project_cs(best: dict, wait: dict) -> None:
    """The CsA'BB'X6 campaign on a 16-core node with one GPU: the GPU's time at the measured rate against the CPU
    side's (build + relax machinery per structure, bench_pipeline's measurement here, over 15 cores)."""
    from bench_pipeline import measure

    from dp_screen.jobs.build import relaxation_counts
    from dp_screen.jobs.enumerate import EnumerationSettings, enumerate_table

    _, df = enumerate_table(EnumerationSettings())
    counts = relaxation_counts(df[(df["A"] == "Cs") | (df["A2"] == "Cs")])  # oxidation-state twins relax once
    cpu = measure(40, 0)
    n_relax = counts["relaxations"]
    gpu_h = n_relax * best["mean_atoms"] * best["mean_steps"] / best["atom_steps_per_s"] / 3600
    cpu_s = (counts["structures"] * cpu["build_ms"] + n_relax * cpu["relax_machinery_ms"]) / 1e3
    cpu_h = cpu_s / (NODE_CORES - 1) / 3600
    print(
        f"CsA'BB'X6 campaign ({counts['structures']:,d} structures, {n_relax:,d} relaxations: twins share theirs) on a "
        f"{NODE_CORES}-core node with this GPU: GPU {gpu_h:.2f} h at the float32 rate; CPU side build "
        f"{cpu['build_ms']:.1f} ms per structure + relax machinery {cpu['relax_machinery_ms']:.1f} ms per relaxation "
        f"per core = {cpu_h:.2f} h over {NODE_CORES - 1} cores; projected {max(gpu_h, cpu_h):.2f} h, bound by the "
        f"{'GPU' if gpu_h >= cpu_h else 'CPU'}"
    )


def _build_chunk(ids: list[str], settings) -> dict:
    from dp_screen.jobs.build import BuildSettings, build_structures_to_store

    return build_structures_to_store(BuildSettings(), settings, query={"composition_id": {"$in": ids}}, progress=None)


def campaign_cs(args) -> None:
    """Every CsA'BB'X6 composition x the default tilt systems, enumerated, built (chunks in parallel processes, every
    core) and relaxed (one process feeds the device; identification in worker processes) on this machine."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from dp_screen.campaign_store import CampaignStore
    from dp_screen.flows.local import default_workers
    from dp_screen.jobs.enumerate import EnumerationSettings, write_compositions
    from dp_screen.jobs.relax import relax_store
    from dp_screen.settings import DPScreenSettings
    from dp_screen.stores import database_uri

    settings = DPScreenSettings(home=args.home)
    settings = settings.model_copy(update={"db_uri": database_uri(settings), "home": settings.home.resolve()})
    t0 = time.perf_counter()
    write_compositions(EnumerationSettings(), settings)
    query = {"$or": [{"A": "Cs"}, {"A2": "Cs"}]}
    ids = sorted(d["composition_id"] for d in CampaignStore(settings).compositions(query, ["composition_id"]))
    ids = ids[: args.cs_limit] if args.cs_limit else ids
    chunks = [ids[i : i + 200] for i in range(0, len(ids), 200)]
    built = {"built": 0, "skipped": 0}
    with ProcessPoolExecutor(default_workers(), mp_context=multiprocessing.get_context("forkserver")) as pool:
        for out in pool.map(_build_chunk, chunks, [settings] * len(chunks)):
            built["built"] += out["built"]
            built["skipped"] += out["skipped"]
    print(
        f"built {built['built']} structures ({built['skipped']} already) of {len(ids)} compositions in "
        f"{time.perf_counter() - t0:.0f} s on {default_workers()} processes",
        flush=True,
    )
    t1 = time.perf_counter()
    relaxed = relax_store(
        args.model, None, settings, query={"composition_id": {"$in": ids}}, device=args.device, progress=None
    )
    seconds = time.perf_counter() - t1
    print(
        f"relaxed {relaxed['relaxed']} ({relaxed['converged']} converged, {relaxed['failed']} failed, "
        f"{relaxed['not_perovskite']} no longer perovskites) in {seconds:.0f} s: "
        f"{relaxed['relaxed'] / max(seconds, 1e-9):.1f} structures/s; results in {settings.home.resolve()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="default: cuda when present")
    parser.add_argument("--model", default=None, help="MACE file (default: the packaged model)")
    parser.add_argument("--n", type=int, default=512, help="structures for the batched runs")
    parser.add_argument("--ase", type=int, default=8, help="structures for the ASE comparison")
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--campaign-cs", action="store_true", help="screen the whole CsA'BB'X6 subset instead")
    parser.add_argument("--home", default=".dp_screen_cs", help="project folder of --campaign-cs")
    parser.add_argument(
        "--cs-limit", type=int, default=None, help="only the first N CsA'BB'X6 compositions (a smoke test)"
    )
    parser.add_argument("--wait-n", type=int, default=20, help="compositions (x 5 tilts) of the device-wait job")
    args = parser.parse_args()
    (campaign_cs if args.campaign_cs else check)(args)


if __name__ == "__main__":
    main()
