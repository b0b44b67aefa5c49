"""The device check behind ``benchmarks/gpu_check.sh``: batched relaxation throughput on a GPU against the ASE
one-at-a-time path on the same structures, the largest batch that fits, float32 against float64, and the whole
default space projected in GPU-hours; ``--campaign-cs`` screens the whole CsA'BB'X6 subset on the machine instead.

    python benchmarks/gpu_check.py [--device cuda] [--n 512] [--ase 8]
    python benchmarks/gpu_check.py --campaign-cs
"""

from __future__ import annotations

import argparse
import os
import random
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
FULL_SPACE = 220_570 * 5  # compositions of the default space x the five default tilt systems


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
    return {"seconds": seconds, "structures_per_s": len(results) / seconds, "atom_steps_per_s": atom_steps / seconds,
            "mean_steps": sum(r.n_steps for r in results) / len(results),
            "mean_atoms": sum(len(r.structure) for r in results) / len(results),
            "converged": sum(r.converged for r in results) / len(results)}  # fmt: skip


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
    print(f"{len(structures)} structures ({sum(len(s) for s in structures) / len(structures):.1f} atoms on average), "
          f"FIRE fmax {settings.fmax} eV/A, max |stress| {settings.max_stress_gpa} GPa, <= {args.max_steps} steps",
          flush=True)  # fmt: skip
    rows = {}
    for dtype in ("float32", "float64"):
        model = load_model(args.model, device=args.device, dtype=dtype)
        rows[f"batched {dtype}"] = throughput(structures, model, settings)
        print(f"batched {dtype:7s} on {model.device}: {rows[f'batched {dtype}']['structures_per_s']:.1f} structures/s, "
              f"{rows[f'batched {dtype}']['atom_steps_per_s']:.3g} atom-steps/s", flush=True)  # fmt: skip
    model = load_model(args.model, device=args.device, dtype="float32")
    few = structures[: args.ase]
    rows["batched float32 (same as ASE)"] = throughput(few, model, settings)
    rows["ASE one at a time float32"] = throughput(few, model, settings, ase=True)
    ratio = rows["batched float32 (same as ASE)"]["atom_steps_per_s"] / rows["ASE one at a time float32"]["atom_steps_per_s"]
    print(f"on the same {len(few)} structures: batched {rows['batched float32 (same as ASE)']['atom_steps_per_s']:.3g} "
          f"vs ASE {rows['ASE one at a time float32']['atom_steps_per_s']:.3g} atom-steps/s: {ratio:.1f}x", flush=True)
    print(f"largest batch that fits (TorchSim's estimate, atoms): {largest_batch(structures, model)}")
    best = rows["batched float32"]
    hours = FULL_SPACE * best["mean_atoms"] * best["mean_steps"] / best["atom_steps_per_s"] / 3600
    print(f"float32 / float64 throughput: {best['atom_steps_per_s'] / rows['batched float64']['atom_steps_per_s']:.2f}")
    print(f"whole default space ({FULL_SPACE:,d} relaxations, {best['mean_steps']:.0f} steps of "
          f"{best['mean_atoms']:.1f} atoms on average): {hours:.1f} hours on this {model.device} at the float32 rate")


def campaign_cs(args) -> None:
    """Every CsA'BB'X6 composition x the default tilt systems, enumerated, built and relaxed on this machine."""
    from dp_screen.jobs.build import BuildSettings, build_structures_to_store
    from dp_screen.jobs.enumerate import EnumerationSettings, write_compositions
    from dp_screen.jobs.relax import relax_store
    from dp_screen.settings import DPScreenSettings

    settings = DPScreenSettings(home=args.home)
    t0 = time.perf_counter()
    write_compositions(EnumerationSettings(), settings)
    query = {"$or": [{"A": "Cs"}, {"A2": "Cs"}]}
    built = build_structures_to_store(BuildSettings(), settings, query=query)
    print(f"built {built['built']} structures ({built['skipped']} already) in {time.perf_counter() - t0:.0f} s", flush=True)
    t1 = time.perf_counter()
    relaxed = relax_store(args.model, None, settings, query={"composition_id": {"$regex": r"^(Cs\+_|[^_]+_Cs\+_)"}},
                          device=args.device, progress=None)  # fmt: skip
    seconds = time.perf_counter() - t1
    print(f"relaxed {relaxed['relaxed']} ({relaxed['converged']} converged, {relaxed['failed']} failed, "
          f"{relaxed['not_perovskite']} no longer perovskites) in {seconds:.0f} s: "
          f"{relaxed['relaxed'] / max(seconds, 1e-9):.1f} structures/s; results in {settings.home.resolve()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="default: cuda when present")
    parser.add_argument("--model", default=None, help="MACE file (default: the packaged model)")
    parser.add_argument("--n", type=int, default=512, help="structures for the batched runs")
    parser.add_argument("--ase", type=int, default=8, help="structures for the ASE comparison")
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--campaign-cs", action="store_true", help="screen the whole CsA'BB'X6 subset instead")
    parser.add_argument("--home", default=".dp_screen_cs", help="project folder of --campaign-cs")
    args = parser.parse_args()
    (campaign_cs if args.campaign_cs else check)(args)


if __name__ == "__main__":
    main()
