"""Write tests/data/machinery_reference.json: what phase identification and the perovskite gate say about a fixed
set of structures, so that a faster implementation can be checked to say the same (tests/test_scale_machinery.py).

The structures are made the same way every time (bond-valence starts of four compositions in the five default tilt
systems, each also rattled and strained with a seeded generator, some far enough to fail the gate); the file holds
only the answers: space groups at the three tolerances, the phase and tilt candidates, the B-X-B' angles, and the
gate's verdict, reason and measures. Made with the dp_screen of commit ee35e6a (spglib identification, the
per-pair gate):

    git worktree add /tmp/ref ee35e6a && PYTHONPATH=/tmp/ref/src python scripts/make_machinery_reference.py
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "machinery_reference.json"
COMPOSITIONS = [
    (("Sr", 2), ("Sr", 2), ("Co", 2), ("Mo", 6), ("O", -2)),
    (("Cs", 1), ("Cs", 1), ("Ag", 1), ("Bi", 3), ("Cl", -1)),
    (("Ba", 2), ("Ba", 2), ("Ca", 2), ("W", 6), ("O", -2)),
    (("Sr", 2), ("Sr", 2), ("Ti", 4), ("Ti", 4), ("O", -2)),
]
TILTS = ("a0a0a0", "a0a0c-", "a-a-a-", "a0b-b-", "a+b-b-")
RATTLES = (0.0, 0.004, 0.05, 0.35, 0.8)  # Angstrom: none, below a tolerance, small, large, destructive


def structures():
    """(name, structure, start tilt) of the fixed set."""
    import numpy as np
    from pymatgen.core import Lattice, Structure

    from dp_screen.structures.perovskite import SiteSpeciesSet, build_bvm_structure

    rng = np.random.default_rng(2026)
    out = []
    for sites in COMPOSITIONS:
        sp = SiteSpeciesSet(*sites)
        for tilt in TILTS:
            s = build_bvm_structure(sp, "rocksalt", tilt).structure
            for amp in RATTLES:
                strain = np.eye(3) + (amp / 4) * rng.normal(size=(3, 3))
                moved = Structure(
                    Lattice(s.lattice.matrix @ strain),
                    s.species,
                    s.cart_coords @ strain + amp * rng.normal(size=(len(s), 3)),
                    coords_are_cartesian=True,
                    site_properties=s.site_properties,
                )
                out.append((f"{sp.formula}|{tilt}|{amp}", moved, tilt))
            # targeted deformations that reach the gate's other checks: an A cation pushed out of its cavity, the
            # cell squeezed along one axis (a 7th anion closes in), and sheared hard (octahedra tilt past the bound)
            a_site = next(i for i, r in enumerate(s.site_properties["site"]) if r == "A")
            pushed = s.copy()
            pushed.translate_sites([a_site], [1.6, 0.9, 0.0], frac_coords=False, to_unit_cell=True)
            out.append((f"{sp.formula}|{tilt}|A pushed", pushed, tilt))
            for name, m in (
                ("squeezed", np.diag([1.0, 1.0, 0.62])),
                ("sheared", np.array([[1, 0.55, 0], [0, 1, 0], [0, 0, 1.0]])),
            ):
                out.append(
                    (
                        f"{sp.formula}|{tilt}|{name}",
                        Structure(
                            Lattice(s.lattice.matrix @ m), s.species, s.frac_coords, site_properties=s.site_properties
                        ),
                        tilt,
                    )
                )
    return out


def answers(structure, tilt) -> dict:
    from dp_screen.structures.perovskite_check import check_perovskite
    from dp_screen.structures.phases import identify_phase

    phase = identify_phase(structure, "rocksalt", tilt)
    gate = check_perovskite(structure)
    return {
        "space_groups": phase.space_groups,
        "phase": phase.phase,
        "candidates": phase.tilt_candidates,
        "mean_bxb_angle": phase.mean_bxb_angle,
        "gate": gate.as_dict(),
    }


def main() -> None:
    ref = {name: answers(s, tilt) for name, s, tilt in structures()}
    OUT.write_text(json.dumps(ref, indent=0, sort_keys=True, default=float) + "\n")
    print(f"wrote {OUT}: {len(ref)} structures, {sum(not r['gate']['ok'] for r in ref.values())} failing the gate")


if __name__ == "__main__":
    main()
