"""Benchmark of the starting-structure builder: accuracy against experiment and speed.

1. Accuracy: each experimental structure (``dp_screen.structures.experimental``: 7 compounds, each with its
   source) built with its known ordering and tilt; space group and volume per formula
   unit against experiment, for the BVM (both bond-valence parameter sets, with and without A displacements) and DLS
   methods; and the GII of the observed structures whose coordinates are known, under each parameter set.
2. Speed: a random sample of the default composition space, the default tilt set of each composition's expected
   ordering, built in batches on one core; structures per second and the projected time for the whole default space.

Usage: OMP_NUM_THREADS=1 python benchmarks/bench_structures.py [--sample 2000] [--chunk 1000] [--save]

``--save`` writes the figures to benchmarks/results/bench_structures.json for the documentation.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict

os.environ.setdefault("OMP_NUM_THREADS", "1")

from dp_screen.chemistry.composition_space import enumerate_compositions  # noqa: E402
from dp_screen.chemistry.site_tables import load_site_table  # noqa: E402
from dp_screen.errors import DPScreenError  # noqa: E402
from dp_screen.structures.bond_valence import (  # noqa: E402
    BV_PARAMETER_SETS,
    DEFAULT_BV_SET,
    bond_valence_table,
    global_instability_index,
)
from dp_screen.structures.experimental import EXPERIMENTS, observed_structure  # noqa: E402
from dp_screen.structures.perovskite import SiteSpeciesSet, build_bvm_structures, build_dls_structure  # noqa: E402
from dp_screen.structures.tilts import DEFAULT_TILTS  # noqa: E402

METHODS = ("bvm", "bvm+A", "bvm-BA", "dls")  # bvm-BA: the Brown & Altermatt parameter set (b = 0.37)


def accuracy() -> dict[str, str]:
    print("== accuracy against experiment (volume per formula unit, A^3) ==")
    print("bvm: default parameters (adams2001); bvm+A: with A displacements; bvm-BA: brown-altermatt parameter set")
    print(
        f"{'compound':11s} {'tilt':7s} {'method':6s} {'SG':>4s} {'exp SG':>6s} {'V built':>8s} {'V exp':>8s} "
        f"{'dV':>7s} {'GII':>6s}  source"
    )
    misses = defaultdict(int)
    for name, exp in EXPERIMENTS.items():
        species = SiteSpeciesSet(*exp.sites)
        v_exp = exp.volume_per_fu
        for method in METHODS:
            if method.startswith("bvm"):
                (built,) = build_bvm_structures(
                    [species],
                    exp.ordering,
                    exp.tilt,
                    move_a=method == "bvm+A",
                    bv_set="brown-altermatt" if method == "bvm-BA" else DEFAULT_BV_SET,
                )
            else:
                built = build_dls_structure(species, exp.ordering, exp.tilt)
            dv = 100 * (built.volume_per_fu / v_exp - 1)
            ok = built.space_group == exp.space_group and abs(dv) <= 3
            misses[method] += not ok
            print(
                f"{name:11s} {exp.tilt:7s} {method:6s} {built.space_group:4d} {exp.space_group:6d} "
                f"{built.volume_per_fu:8.2f} {v_exp:8.2f} {dv:+6.2f}% {built.gii:6.3f}  {'ok' if ok else 'MISS':4s} "
                f"{exp.source}"
            )
    counts = ", ".join(f"{m} {misses[m]}/{len(EXPERIMENTS)}" for m in METHODS)
    print(f"misses (|dV| > 3% or wrong space group): {counts}")
    figures = {
        f"{m}: built within 3% of the experimental volume, right space group": f"{len(EXPERIMENTS) - misses[m]} of "
        f"{len(EXPERIMENTS)}"
        for m in METHODS
    }
    print("== GII of the observed structures under each parameter set (v.u.; < 0.1 unstrained) ==")
    for name, exp in EXPERIMENTS.items():
        if exp.asymmetric_unit:
            s = observed_structure(name)
            row = "  ".join(
                f"{bv}: {global_instability_index(s, table=bond_valence_table(bv)):.3f}" for bv in BV_PARAMETER_SETS
            )
            print(f"{name:11s} {row}")
    return figures


def speed(sample: int, chunk: int) -> dict[str, object]:
    df = enumerate_compositions(load_site_table())
    rows = df.sample(sample, random_state=0).to_dict("records")
    groups: dict[tuple[str, str], list[SiteSpeciesSet]] = defaultdict(list)
    for row in rows:
        for tilt in DEFAULT_TILTS[row["expected_ordering"]]:
            groups[(row["expected_ordering"], tilt)].append(SiteSpeciesSet.from_row(row))
    n_total = sum(len(v) for v in groups.values())
    built = failed = 0
    t0 = time.perf_counter()
    for (ordering, tilt), species in groups.items():
        for start in range(0, len(species), chunk):
            for res in build_bvm_structures(species[start : start + chunk], ordering, tilt):
                if isinstance(res, DPScreenError):
                    failed += 1
                else:
                    built += 1
    dt = time.perf_counter() - t0
    rate = n_total / dt
    full = len(df) * 5
    print("== speed (one core, BVM, default tilt set of each composition's expected ordering) ==")
    print(
        f"{sample} compositions -> {n_total} structures ({built} built, {failed} failed: no bond-valence "
        f"parameters or symmetry) in {dt:.1f} s: {rate:.0f} structures/s on one core"
    )
    print(
        f"projected: the default space ({len(df)} compositions x 5 tilt systems = {full} structures) takes "
        f"{full / rate / 3600:.2f} h on one core, {full / rate / 2 / 3600:.2f} h on this 2-core machine "
        f"(target < 1 h)"
    )
    return {
        "speed sample": f"{sample} compositions, {n_total} structures ({built} built, {failed} failed)",
        "BVM builds per second, one core": round(rate),
        "the default space on this machine's cores (h)": round(full / rate / (os.cpu_count() or 1) / 3600, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=2000, help="compositions in the speed sample")
    parser.add_argument("--chunk", type=int, default=1000, help="compositions per batch")
    parser.add_argument("--save", action="store_true", help="write benchmarks/results/bench_structures.json (docs)")
    args = parser.parse_args()
    figures = accuracy()
    figures |= speed(args.sample, args.chunk)
    if args.save:
        from _results import save_figures

        save_figures(
            "bench_structures",
            figures,
            note="bvm: adams2001 parameters; bvm+A: with A displacements; bvm-BA: brown-altermatt; dls: DLS volumes",
        )


if __name__ == "__main__":
    main()
