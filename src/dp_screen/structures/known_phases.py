"""Experimentally characterised double perovskites with their observed (room-temperature) space groups: the known
answers a phase ranking is checked against (``benchmarks/bench_known_phases.py``).

Each entry gives the site species, the cation ordering, the observed space group, where given the observed cell
(lattice parameters rounded to three decimals; None where only the space group is used here) and the source. The
observed tilt system is the one the space group implies for the ordering and species pattern
(:func:`dp_screen.structures.phases.tilt_table`). The compounds of :mod:`dp_screen.structures.experimental` are
included. Room-temperature structures are compared with 0 K rankings: a compound cubic at room temperature may tilt
on cooling (e.g. Ba2CaWO6 is left out for that reason), so a few misses can be physical.
"""

from __future__ import annotations

from dataclasses import dataclass

from dp_screen.structures.experimental import EXPERIMENTS

Site = tuple[str, int]
VK2015 = "Vasala & Karppinen, Prog. Solid State Chem. 43, 1 (2015), review of A2B'B''O6 perovskites"


@dataclass(frozen=True)
class KnownPhase:
    """An observed double perovskite: sites (A, A', B, B', X), ordering, space group, cell (or None), source."""

    name: str
    sites: tuple[Site, Site, Site, Site, Site]
    ordering: str
    space_group: int
    lattice: tuple[float, float, float, float, float, float] | None
    formula_units: int
    source: str

    @property
    def volume_per_fu(self) -> float | None:
        """Observed volume per AA'BB'X6 formula unit (A^3), None without a cell."""
        if self.lattice is None:
            return None
        from pymatgen.core import Lattice

        return Lattice.from_parameters(*self.lattice).volume / self.formula_units

    @property
    def observed_tilt(self) -> str | None:
        """The tilt system the observed space group implies (None: no tilt system of the table gives it)."""
        from dp_screen.structures.phases import tilt_table

        same_a, same_b = self.sites[0] == self.sites[1], self.sites[2] == self.sites[3]
        tilts = [t for t, g in tilt_table(self.ordering, same_a, same_b).items() if g == self.space_group]
        return tilts[0] if tilts else None


def _cubic(a: float) -> tuple[float, float, float, float, float, float]:
    return (a, a, a, 90.0, 90.0, 90.0)


def _ba(b: Site, b2: Site) -> tuple[Site, Site, Site, Site, Site]:
    return (("Ba", 2), ("Ba", 2), b, b2, ("O", -2))


def _sr(b: Site, b2: Site) -> tuple[Site, Site, Site, Site, Site]:
    return (("Sr", 2), ("Sr", 2), b, b2, ("O", -2))


_OTHERS = (
    KnownPhase("Ba2MgWO6", _ba(("Mg", 2), ("W", 6)), "rocksalt", 225, _cubic(8.100), 4, VK2015),
    KnownPhase("Ba2NiWO6", _ba(("Ni", 2), ("W", 6)), "rocksalt", 225, _cubic(8.062), 4, VK2015),
    KnownPhase("Ba2ZnWO6", _ba(("Zn", 2), ("W", 6)), "rocksalt", 225, _cubic(8.112), 4, VK2015),
    KnownPhase(
        "Ba2FeMoO6",
        _ba(("Fe", 3), ("Mo", 5)),
        "rocksalt",
        225,
        _cubic(8.060),
        4,
        "Chmaissem et al., Phys. Rev. B 62, 14197 (2000)",
    ),
    KnownPhase("Ba2BiSbO6", _ba(("Bi", 3), ("Sb", 5)), "rocksalt", 148, None, 6, VK2015),
    KnownPhase(
        "Sr2FeMoO6",
        _sr(("Fe", 3), ("Mo", 5)),
        "rocksalt",
        87,
        (5.572, 5.572, 7.903, 90, 90, 90),
        2,
        "Chmaissem et al., Phys. Rev. B 62, 14197 (2000)",
    ),
    KnownPhase(
        "Sr2NiWO6",
        _sr(("Ni", 2), ("W", 6)),
        "rocksalt",
        87,
        (5.557, 5.557, 7.915, 90, 90, 90),
        2,
        "Iwanaga, Inaguma & Itoh, J. Solid State Chem. 147, 291 (1999)",
    ),
    KnownPhase("Sr2CuWO6", _sr(("Cu", 2), ("W", 6)), "rocksalt", 87, (5.428, 5.428, 8.414, 90, 90, 90), 2, VK2015),
    KnownPhase("Sr2MgWO6", _sr(("Mg", 2), ("W", 6)), "rocksalt", 87, None, 2, VK2015),
    KnownPhase(
        "Ca2FeMoO6",
        (("Ca", 2), ("Ca", 2), ("Fe", 3), ("Mo", 5), ("O", -2)),
        "rocksalt",
        14,
        (5.415, 5.522, 7.709, 90, 90.04, 90),
        2,
        VK2015,
    ),
    KnownPhase(
        "La2NiMnO6",
        (("La", 3), ("La", 3), ("Ni", 2), ("Mn", 4), ("O", -2)),
        "rocksalt",
        14,
        (5.467, 5.510, 7.751, 90, 90.12, 90),
        2,
        "Bull, Gleeson & Knight, J. Phys.: Condens. Matter 15, 4927 (2003)",
    ),
    KnownPhase(
        "Cs2AgSbCl6",
        (("Cs", 1), ("Cs", 1), ("Ag", 1), ("Sb", 3), ("Cl", -1)),
        "rocksalt",
        225,
        _cubic(10.699),
        4,
        "Tran, Panella, Chamorro, Morey & McQueen, Mater. Horiz. 4, 688 (2017)",
    ),
    KnownPhase(
        "Cs2NaBiCl6",
        (("Cs", 1), ("Cs", 1), ("Na", 1), ("Bi", 3), ("Cl", -1)),
        "rocksalt",
        225,
        _cubic(10.84),
        4,
        "Morss & Robinson, Acta Cryst. B28, 653 (1972)",
    ),
)

#: every known compound, the builder's experimental table first
KNOWN_PHASES: dict[str, KnownPhase] = {
    **{
        e.name: KnownPhase(e.name, e.sites, e.ordering, e.space_group, e.lattice, e.formula_units, e.source)
        for e in EXPERIMENTS.values()
    },
    **{k.name: k for k in _OTHERS},
}
