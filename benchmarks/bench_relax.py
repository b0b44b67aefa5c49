"""Batched relaxation (TorchSim, in-flight batching) against one structure at a time (ASE FIRE + FrechetCellFilter,
the atomate2 ForceFieldRelaxMaker way), same model, same starting structures, fmax 0.05.
Prints structures/s, atom-steps/s and the ratio. Target: >= 3x on this 2-core CPU, >= 30x on a GPU.

Usage: OMP_NUM_THREADS=1 python benchmarks/bench_relax.py [--n 64] [--model PATH] [--device cpu|cuda] [--save]

``--save`` writes the figures to benchmarks/results/bench_relax.json for the documentation.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from dp_screen.chemistry.composition_space import enumerate_compositions  # noqa: E402
from dp_screen.chemistry.site_tables import load_site_table  # noqa: E402
from dp_screen.errors import DPScreenError  # noqa: E402
from dp_screen.mlip.models import load_model  # noqa: E402
from dp_screen.mlip.relax import RelaxSettings, relax_structures, relax_structures_ase, uncovered_elements  # noqa: E402
from dp_screen.structures.bond_valence import bond_valence_coverage  # noqa: E402
from dp_screen.structures.perovskite import SiteSpeciesSet, build_bvm_structures  # noqa: E402


def starting_structures(n: int, model, seed: int = 0):
    """n BVM starting structures of real compositions (tilt a0a0c-, rock-salt ordering) whose elements the model
    covers, rattled by 0.03 A."""
    from pymatgen.core import Structure

    df = enumerate_compositions(load_site_table())
    df = df[(df.expected_ordering == "rocksalt") & df.tau_perovskite & bond_valence_coverage(df, "exact")]
    rows = df.sample(min(len(df), 40 * n), random_state=seed).to_dict("records")
    built = [
        b
        for b in build_bvm_structures([SiteSpeciesSet.from_row(r) for r in rows], "rocksalt", "a0a0c-")
        if not isinstance(b, DPScreenError) and not uncovered_elements(b.structure, model)
    ][:n]
    rng = np.random.default_rng(seed)
    return [
        Structure(
            b.structure.lattice,
            b.structure.species,
            b.structure.cart_coords + rng.normal(0, 0.03, (len(b.structure), 3)),
            coords_are_cartesian=True,
        )
        for b in built
    ]


def report(name, results, seconds) -> tuple[float, float]:
    atom_steps = sum(len(r.structure) * max(r.n_steps, 1) for r in results)
    conv = sum(r.converged for r in results)
    print(
        f"{name:8s} {len(results)} structures in {seconds:7.1f} s: {len(results) / seconds:6.2f} structures/s, "
        f"{atom_steps / seconds:8.0f} atom-steps/s; converged {conv}/{len(results)}, "
        f"mean steps {np.mean([r.n_steps for r in results]):.0f}"
    )
    return len(results) / seconds, atom_steps / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--model", default=None, help="model file (default: the packaged model)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--save", action="store_true", help="write benchmarks/results/bench_relax.json (docs)")
    args = parser.parse_args()
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    structures = starting_structures(args.n, model)
    settings = RelaxSettings(fmax=0.05, max_steps=args.max_steps)
    print(
        f"model {model.name} ({model.sha256[:12]}), {model.dtype}, device {model.device}; "
        f"{len(structures)} structures, {np.mean([len(s) for s in structures]):.0f} atoms each; fmax 0.05"
    )
    relax_structures(structures[:2], model, settings)  # warm-up (first-call overheads)
    t0 = time.perf_counter()
    batched = relax_structures(structures, model, settings)
    rate_b, steps_b = report("batched", batched, time.perf_counter() - t0)
    t0 = time.perf_counter()
    single = relax_structures_ase(structures, model, settings)
    rate_a, steps_a = report("ASE", single, time.perf_counter() - t0)
    de = [
        abs(b.energy_per_atom - a.energy_per_atom) * 1e3
        for b, a in zip(batched, single, strict=True)
        if b.converged and a.converged
    ]
    print(
        f"speed-up (structures/s, batched / ASE): {rate_b / rate_a:.1f}x; median |dE| between the two final "
        f"energies {np.median(de):.2f} meV/atom over {len(de)} structures converged in both"
    )
    if args.save:
        from _results import save_figures

        save_figures(
            "bench_relax",
            {
                "model": f"{model.name} ({model.sha256[:12]}), {model.dtype}, {model.device}",
                "structures": f"{len(structures)} of {np.mean([len(s) for s in structures]):.0f} atoms, fmax 0.05",
                "batched (TorchSim), structures/s": round(rate_b, 2),
                "batched, atom-steps/s": round(steps_b),
                "one at a time (ASE), structures/s": round(rate_a, 2),
                "ASE, atom-steps/s": round(steps_a),
                "speed-up, batched / ASE": f"{rate_b / rate_a:.1f}x (target >= 3x on a 2-core CPU, >= 30x on a GPU)",
                "median final-energy difference (meV/atom)": f"{np.median(de):.2f} over {len(de)} converged in both",
            },
            note="same model, same rattled bond-valence starts (a0a0c-), the two optimisers",
        )


if __name__ == "__main__":
    main()
