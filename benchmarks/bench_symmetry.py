"""Space groups by spglib and by moyopy: time per search and where the two disagree.

The cells of tests/test_scale_machinery.py's comparison: bond-valence starts of Sr2CoMoO6 and Sr2TiTiO6 in every
rock-salt tilt system, each also rattled by 0.004 A (40% of the 0.01 A identification tolerance: borderline by
design), searched at the three tolerances of dp_screen.structures.phases.SYMPRECS. It says why identification stays
on spglib although moyopy is faster.

    python benchmarks/bench_symmetry.py [--save]

``--save`` writes the figures to benchmarks/results/bench_symmetry.json for the documentation.
"""

from __future__ import annotations

import logging
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")


def cells():
    import numpy as np
    from pymatgen.core import Structure

    from dp_screen.structures.perovskite import SiteSpeciesSet, build_bvm_structure
    from dp_screen.structures.tilts import SPACE_GROUPS

    rng = np.random.default_rng(0)
    out = []
    for sp in (
        SiteSpeciesSet(("Sr", 2), ("Sr", 2), ("Co", 2), ("Mo", 6), ("O", -2)),
        SiteSpeciesSet(("Sr", 2), ("Sr", 2), ("Ti", 4), ("Ti", 4), ("O", -2)),
    ):
        for tilt in SPACE_GROUPS["rocksalt"]:
            s = build_bvm_structure(sp, "rocksalt", tilt).structure
            out += [
                (f"{sp.formula} {tilt}", s),
                (
                    f"{sp.formula} {tilt} rattled",
                    Structure(
                        s.lattice,
                        s.species,
                        s.cart_coords + rng.normal(0, 0.004, (len(s), 3)),
                        coords_are_cartesian=True,
                    ),
                ),
            ]
    return out


def main() -> None:
    import argparse

    import moyopy
    import spglib

    from dp_screen.structures.phases import SYMPRECS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save", action="store_true", help="write benchmarks/results/bench_symmetry.json (docs)")
    args = parser.parse_args()
    logging.getLogger("moyo").setLevel(logging.ERROR)  # moyopy's notes on primitive-cell orbits
    arrays = []
    for name, s in cells():
        codes: dict[str, int] = {}
        arrays.append(
            (name, s.lattice.matrix, s.frac_coords, [codes.setdefault(x.species_string, len(codes) + 1) for x in s])
        )
    timing = {"spglib": 0.0, "moyopy": 0.0}
    by_kind: dict[str, list[float]] = {"untilted": [], "tilted": []}  # spglib per search, unrattled starts
    mismatches = []
    for name, lat, frac, nums in arrays:
        for tol in SYMPRECS:
            t0 = time.perf_counter()
            a = spglib.get_symmetry_dataset((lat, frac, nums), symprec=tol).number
            dt = time.perf_counter() - t0
            timing["spglib"] += dt
            if not name.endswith("rattled"):
                by_kind["untilted" if " a0a0a0" in name else "tilted"].append(dt)
            t0 = time.perf_counter()
            b = moyopy.MoyoDataset(moyopy.Cell(lat.tolist(), frac.tolist(), nums), symprec=tol).number
            timing["moyopy"] += time.perf_counter() - t0
            if a != b:
                mismatches.append(f"{name} at {tol:g} A: spglib {a}, moyopy {b}")
    n = len(arrays) * len(SYMPRECS)
    print(f"{len(arrays)} cells x {len(SYMPRECS)} tolerances = {n} searches")
    print(
        f"ms per search: spglib {1e3 * timing['spglib'] / n:.2f}, moyopy {1e3 * timing['moyopy'] / n:.2f} "
        f"({timing['spglib'] / timing['moyopy']:.0f}x)"
    )
    untilted_ms, tilted_ms = (1e3 * sum(v) / len(v) for v in (by_kind["untilted"], by_kind["tilted"]))
    print(
        f"spglib ms per search of an unrattled start: untilted {untilted_ms:.1f}, tilted {tilted_ms:.1f} "
        f"({untilted_ms / tilted_ms:.0f}x)"
    )
    print(f"disagreements: {len(mismatches)} of {n}")
    for m in mismatches:
        print("  " + m)
    if args.save:
        from _results import save_figures

        save_figures(
            "bench_symmetry",
            {
                "searches (cells x tolerances)": f"{len(arrays)} x {len(SYMPRECS)} = {n}",
                "spglib, ms per search": round(1e3 * timing["spglib"] / n, 2),
                "moyopy, ms per search": round(1e3 * timing["moyopy"] / n, 2),
                "spglib / moyopy time": round(timing["spglib"] / timing["moyopy"], 1),
                "spglib, ms per search of an untilted start": round(untilted_ms, 1),
                "spglib, ms per search of a tilted start": round(tilted_ms, 1),
                "searches where they disagree": f"{len(mismatches)} of {n}",
                **{f"disagreement {k + 1}": m for k, m in enumerate(mismatches)},
            },
            note="why identification stays on spglib although moyopy is faster",
        )


if __name__ == "__main__":
    main()
