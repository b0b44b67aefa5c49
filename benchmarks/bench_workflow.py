"""Overhead of the workflow machinery per structure, and the projected wall time of the full campaign on one H100
(README, "Benchmarks").

Runs the screening flow (jobflow run_locally + the embedded store, chunked fan-out) on N compositions x the default
tilt set (~10k structures for N = 2,000) with the model replaced by a stub that returns its input (no MLIP cost),
and times: building, the relax chunks' machinery (read structures, write relaxation documents, phase summaries),
and phase identification separately. The H100 projection combines that overhead with the relaxation cost
estimated from the published batched MACE throughput (about 3 microseconds per atom per optimisation step for
MACE-large on an H100, stack reference) and the mean cell size and FIRE step count measured here on the CPU.

Usage: OMP_NUM_THREADS=1 python benchmarks/bench_workflow.py [--compositions 2000] [--steps 150]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from jobflow import run_locally  # noqa: E402

import dp_screen.jobs.relax as relax_jobs  # noqa: E402
from dp_screen.flows.screening import ScreeningFlowMaker  # noqa: E402
from dp_screen.jobs.build import BuildMaker, BuildSettings  # noqa: E402
from dp_screen.jobs.enumerate import EnumerationSettings  # noqa: E402
from dp_screen.jobs.relax import RelaxMaker  # noqa: E402
from dp_screen.mlip.models import LoadedModel  # noqa: E402
from dp_screen.mlip.relax import RelaxResult  # noqa: E402
from dp_screen.settings import DPScreenSettings  # noqa: E402
from dp_screen.stores import EmbeddedServer, get_job_store, open_store  # noqa: E402
from dp_screen.structures import phases  # noqa: E402

TIMERS = {"phase": 0.0, "phase_n": 0}


def stub_model(*_args, **_kwargs) -> LoadedModel:
    return LoadedModel(model=None, name="stub", path=None, sha256="0" * 64, dtype="float64", device="cpu")


def stub_relax(structures, model, settings=None, progress=None):
    out = [
        RelaxResult(
            structure=s,
            energy=-5.0 * len(s),
            energy_per_atom=-5.0,
            max_force=0.0,
            max_stress_gpa=0.0,
            stress_gpa=[[0.0] * 3] * 3,
            n_steps=0,
            converged=True,
            initial_volume=s.volume,
        )
        for s in structures
    ]
    if progress:
        progress(len(out))
    return out


def timed_identify(*args, **kwargs):
    t0 = time.perf_counter()
    res = real_identify(*args, **kwargs)
    TIMERS["phase"] += time.perf_counter() - t0
    TIMERS["phase_n"] += 1
    return res


real_identify = phases.identify_phase


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compositions", type=int, default=2000)
    parser.add_argument("--chunk-size", type=int, default=500)
    parser.add_argument("--steps", type=float, default=150, help="mean FIRE steps per relaxation (measured)")
    parser.add_argument("--us-per-atom-step", type=float, default=3.0, help="H100 batched MACE cost")
    args = parser.parse_args()
    relax_jobs.load_model = stub_model
    relax_jobs.relax_structures = stub_relax
    relax_jobs.identify_phase = timed_identify
    home = tempfile.mkdtemp(prefix="dp_screen_bench_wf_")
    db = DPScreenSettings(home=home)
    EmbeddedServer(db).start()
    try:
        maker = ScreeningFlowMaker(
            campaign="bench",
            limit=args.compositions,
            chunk_size=args.chunk_size,
            enumeration=EnumerationSettings(bv_filter="any"),
            build=BuildMaker(settings=BuildSettings()),
            relax=RelaxMaker(model="stub"),
        )
        flow = maker.make(db.model_dump(mode="json"))
        t0 = time.perf_counter()
        responses = run_locally(flow, store=get_job_store(db), create_folders=False, log=False, ensure_success=True)
        total = time.perf_counter() - t0
        outputs = [r[1].output for r in responses.values() if 1 in r and isinstance(r[1].output, dict)]
        build_s = sum(o["seconds"] for o in outputs if "built" in o and "settings_hash" in o and "relaxed" not in o)
        relax_s = sum(o["seconds"] for o in outputs if "relaxed" in o)
        n = sum(o["relaxed"] for o in outputs if "relaxed" in o)
        with open_store("relaxations", db) as store:
            atoms = [d["n_atoms"] for d in store._collection.find({}, {"n_atoms": 1})]
    finally:
        EmbeddedServer(db).stop()
    machinery = relax_s - TIMERS["phase"]
    per_phase = TIMERS["phase"] / max(TIMERS["phase_n"], 1)
    print(
        f"{args.compositions} compositions, {n} structures (chunks of {args.chunk_size} compositions), "
        f"whole flow {total:.0f} s on this 2-core machine"
    )
    print(f"  build (BVM, stored):             {1e3 * build_s / n:7.2f} ms/structure")
    print(f"  relax-job machinery (no model):  {1e3 * machinery / n:7.2f} ms/structure (read, write, summaries)")
    print(f"  phase identification (spglib):   {1e3 * per_phase:7.2f} ms/structure")
    mean_atoms = float(np.mean(atoms))
    full = 220_570 * 5
    gpu_s = full * mean_atoms * args.steps * args.us_per_atom_step * 1e-6
    cpu_s = full * (machinery / n + per_phase)
    print(
        f"projection, full campaign ({full} structures, {mean_atoms:.1f} atoms each, {args.steps:.0f} FIRE steps): "
        f"MLIP on one H100 {gpu_s / 3600:.1f} h ({args.us_per_atom_step} us/atom-step, published MACE-large); "
        f"machinery + phase identification {cpu_s / 3600:.1f} CPU-core-h "
        f"(overlaps the GPU work when chunks run on several CPU cores; {cpu_s / 3600 / 16:.1f} h on 16 cores)"
    )


if __name__ == "__main__":
    main()
