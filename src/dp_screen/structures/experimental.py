"""Experimental double perovskites for checking the structure builder (each with its source).

``EXPERIMENTS`` holds each compound's site species, ordering, tilt system, space group, room-temperature cell and
source; ``observed_structure`` gives the full observed structure (with oxidation states) for those whose atomic
coordinates are listed here, so bond-valence sums and GIIs of real structures can be measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from dp_screen.errors import InputError

if TYPE_CHECKING:
    from pymatgen.core import Structure

Site = tuple[str, int]


@dataclass(frozen=True)
class Experiment:
    """One observed compound: sites (A, A', B, B', X), ordering, tilt, space group, cell, source."""

    name: str
    sites: tuple[Site, Site, Site, Site, Site]
    ordering: str
    tilt: str
    space_group: int
    lattice: tuple[float, float, float, float, float, float]  # a, b, c (A), alpha, beta, gamma (degrees)
    formula_units: int  # per the cell above
    source: str
    # asymmetric unit (site role, species, fractional coordinates) where known, and the symmetry operations that
    # generate the cell from it (none: the standard setting of ``space_group``, from pymatgen's tables)
    asymmetric_unit: tuple[tuple[str, Site, tuple[float, float, float]], ...] = field(default=(), repr=False)
    symops: tuple[str, ...] = field(default=(), repr=False)

    @property
    def volume_per_fu(self) -> float:
        from pymatgen.core import Lattice

        return Lattice.from_parameters(*self.lattice).volume / self.formula_units


_P21N = ("x,y,z", "1/2+x,1/2-y,1/2+z", "1/2-x,1/2+y,1/2-z", "-x,-y,-z")

EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        Experiment(
            "Cs2AgBiCl6",
            (("Cs", 1), ("Cs", 1), ("Ag", 1), ("Bi", 3), ("Cl", -1)),
            "rocksalt",
            "a0a0a0",
            225,
            (10.777, 10.777, 10.777, 90, 90, 90),
            4,
            "McClure et al., Chem. Mater. 28, 1348 (2016)",
        ),
        Experiment(
            "Cs2AgBiBr6",
            (("Cs", 1), ("Cs", 1), ("Ag", 1), ("Bi", 3), ("Br", -1)),
            "rocksalt",
            "a0a0a0",
            225,
            (11.271, 11.271, 11.271, 90, 90, 90),
            4,
            "McClure et al., Chem. Mater. 28, 1348 (2016)",
        ),
        Experiment(
            "Cs2AgInCl6",
            (("Cs", 1), ("Cs", 1), ("Ag", 1), ("In", 3), ("Cl", -1)),
            "rocksalt",
            "a0a0a0",
            225,
            (10.47, 10.47, 10.47, 90, 90, 90),
            4,
            "Volonakis et al., J. Phys. Chem. Lett. 8, 772 (2017)",
        ),
        Experiment(
            "Ba2CaMoO6",
            (("Ba", 2), ("Ba", 2), ("Ca", 2), ("Mo", 6), ("O", -2)),
            "rocksalt",
            "a0a0a0",
            225,
            (8.3775, 8.3775, 8.3775, 90, 90, 90),
            4,
            "Nguyen, Cava & Fry-Petit, JSSC (2019)",
        ),
        Experiment(
            "Sr2CoMoO6",
            (("Sr", 2), ("Sr", 2), ("Co", 2), ("Mo", 6), ("O", -2)),
            "rocksalt",
            "a0a0c-",
            87,
            (5.5616, 5.5616, 7.9470, 90, 90, 90),
            2,
            "Ivanov et al., Mater. Res. Bull. 40, 840 (2005)",
        ),
        Experiment(
            "Na3AlF6",
            (("Na", 1), ("Na", 1), ("Na", 1), ("Al", 3), ("F", -1)),
            "rocksalt",
            "a+b-b-",
            14,
            (5.4054, 5.5934, 7.7672, 90, 89.81, 90),
            2,
            "Ross, Mitchell & Chakhmouradian, JSSC 172, 95 (2003), synthetic cryolite (AMCSD 0014034)",
            (
                ("A", ("Na", 1), (0.5138, 0.552, 0.2518)),
                ("B", ("Na", 1), (0.5, 0.0, 0.5)),
                ("B2", ("Al", 3), (0.5, 0.0, 0.0)),
                ("X", ("F", -1), (0.2255, 0.1765, 0.953)),
                ("X", ("F", -1), (0.3353, 0.7285, 0.9362)),
                ("X", ("F", -1), (0.397, 0.9564, 0.2182)),
            ),
            _P21N,
        ),
        Experiment(
            "Rb2NaAlF6",
            (("Rb", 1), ("Rb", 1), ("Na", 1), ("Al", 3), ("F", -1)),
            "rocksalt",
            "a0a0a0",
            225,
            (8.3087, 8.3087, 8.3087, 90, 90, 90),
            4,
            "Yakubovich, Kiriukhina & Dimitrova, Crystallogr. Rep. 58, 400 (2013)",
            (
                ("A", ("Rb", 1), (0.25, 0.25, 0.25)),
                ("B", ("Na", 1), (0.5, 0.0, 0.0)),
                ("B2", ("Al", 3), (0.0, 0.0, 0.0)),
                ("X", ("F", -1), (0.2187, 0.0, 0.0)),
            ),
        ),
    )
}


def observed_structure(name: str) -> Structure:
    """The observed structure of an experiment with coordinates, oxidation states set and a ``site`` property
    (A, B, B2, X) on every site."""
    from pymatgen.core import Lattice, Species, Structure
    from pymatgen.core.operations import SymmOp

    exp = EXPERIMENTS.get(name)
    if exp is None or not exp.asymmetric_unit:
        known = [k for k, e in EXPERIMENTS.items() if e.asymmetric_unit]
        raise InputError(f"no observed coordinates for {name!r}; known: {', '.join(known)}")
    lattice = Lattice.from_parameters(*exp.lattice)
    if not exp.symops:
        roles = [r for r, _, _ in exp.asymmetric_unit]
        species = [Species(*sp) for _, sp, _ in exp.asymmetric_unit]
        coords = [xyz for _, _, xyz in exp.asymmetric_unit]
        return Structure.from_spacegroup(exp.space_group, lattice, species, coords, site_properties={"site": roles})
    ops = [SymmOp.from_xyz_str(o) for o in exp.symops]
    species_all, coords_all, roles_all = [], [], []
    for role, sp, xyz in exp.asymmetric_unit:
        orbit: list[np.ndarray] = []
        for op in ops:
            f = op.operate(xyz) % 1.0
            if not any(np.allclose((f - g + 0.5) % 1.0 - 0.5, 0.0, atol=1e-3) for g in orbit):
                orbit.append(f)
        species_all += [Species(*sp)] * len(orbit)
        coords_all += orbit
        roles_all += [role] * len(orbit)
    return Structure(lattice, species_all, coords_all, site_properties={"site": roles_all})
