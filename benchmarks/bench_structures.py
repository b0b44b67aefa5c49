"""Benchmark of the starting-structure builder (issue "Starting structures", items 8 and 9).

1. Accuracy: each experimental structure (science reference section 7, plus Cs2AgInCl6) built with its known
   ordering and tilt; space group and volume per formula unit against experiment, for the BVM and DLS methods.
2. Speed: a random sample of the default composition space, the default tilt set of each composition's expected
   ordering, built in batches on one core; structures per second and the projected time for the whole default space.

Usage: OMP_NUM_THREADS=1 python benchmarks/bench_structures.py [--sample 2000] [--chunk 1000]
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
from dp_screen.structures.perovskite import SiteSpeciesSet, build_bvm_structures, build_dls_structure  # noqa: E402
from dp_screen.structures.tilts import DEFAULT_TILTS  # noqa: E402

# (name, species, tilt, space group, experimental volume per formula unit, source)
EXPERIMENTS = [
    ("Cs2AgBiCl6", (("Cs", 1), ("Cs", 1), ("Ag", 1), ("Bi", 3), ("Cl", -1)), "a0a0a0", 225, 10.777**3 / 4,
     "McClure et al., Chem. Mater. 28, 1348 (2016)"),
    ("Cs2AgBiBr6", (("Cs", 1), ("Cs", 1), ("Ag", 1), ("Bi", 3), ("Br", -1)), "a0a0a0", 225, 11.271**3 / 4,
     "McClure et al., Chem. Mater. 28, 1348 (2016)"),
    ("Cs2AgInCl6", (("Cs", 1), ("Cs", 1), ("Ag", 1), ("In", 3), ("Cl", -1)), "a0a0a0", 225, 10.47**3 / 4,
     "Volonakis et al., J. Phys. Chem. Lett. 8, 772 (2017)"),
    ("Ba2CaMoO6", (("Ba", 2), ("Ba", 2), ("Ca", 2), ("Mo", 6), ("O", -2)), "a0a0a0", 225, 8.3775**3 / 4,
     "Nguyen, Cava & Fry-Petit, JSSC (2019)"),
    ("Sr2CoMoO6", (("Sr", 2), ("Sr", 2), ("Co", 2), ("Mo", 6), ("O", -2)), "a0a0c-", 87, 5.5616**2 * 7.9470 / 2,
     "Ivanov et al., Mater. Res. Bull. 40, 840 (2005)"),
    ("Na3AlF6", (("Na", 1), ("Na", 1), ("Na", 1), ("Al", 3), ("F", -1)), "a+b-b-", 14,
     5.4054 * 5.5934 * 7.7672 / 2, "Ross et al., JSSC 172, 95 (2003)"),
]  # fmt: skip


def accuracy() -> None:
    print("== accuracy against experiment (volume per formula unit, A^3) ==")
    print(f"{'compound':11s} {'tilt':7s} {'method':5s} {'SG':>4s} {'exp SG':>6s} {'V built':>8s} {'V exp':>8s} "
          f"{'dV':>7s} {'GII':>6s}  source")
    for name, sp, tilt, sg, v_exp, source in EXPERIMENTS:
        species = SiteSpeciesSet(*sp)
        for method in ("bvm", "bvm+A", "dls"):
            if method.startswith("bvm"):
                (built,) = build_bvm_structures([species], "rocksalt", tilt, move_a=method == "bvm+A")
            else:
                built = build_dls_structure(species, "rocksalt", tilt)
            dv = 100 * (built.volume_per_fu / v_exp - 1)
            flag = "ok" if built.space_group == sg and abs(dv) <= 3 else "MISS"
            print(f"{name:11s} {tilt:7s} {method:5s} {built.space_group:4d} {sg:6d} {built.volume_per_fu:8.2f} "
                  f"{v_exp:8.2f} {dv:+6.2f}% {built.gii:6.3f}  {flag:4s} {source}")


def speed(sample: int, chunk: int) -> None:
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
    print(f"{sample} compositions -> {n_total} structures ({built} built, {failed} failed: no bond-valence "
          f"parameters or symmetry) in {dt:.1f} s: {rate:.0f} structures/s on one core")
    print(f"projected: the default space ({len(df)} compositions x 5 tilt systems = {full} structures) takes "
          f"{full / rate / 3600:.2f} h on one core, {full / rate / 2 / 3600:.2f} h on this 2-core machine "
          f"(target < 1 h)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=2000, help="compositions in the speed sample")
    parser.add_argument("--chunk", type=int, default=1000, help="compositions per batch")
    args = parser.parse_args()
    accuracy()
    speed(args.sample, args.chunk)


if __name__ == "__main__":
    main()
