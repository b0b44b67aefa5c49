"""The typed cell: one double-perovskite structure with everything the pipeline needs to know about it.

A :class:`PerovskiteCell` is a pymatgen ``Structure`` (oxidation states on every site, the site role of every site
in the site property ``site``: A, A2, B, B2, X) plus its cation ordering, the tilt system it was built in, how it
was built (method and settings) and its provenance. The builders make one, :func:`dp_screen.api.relax` returns
relaxed ones with the same identity, and identification, the perovskite gate and DFT input read their roles and
oxidation states from it, so no step depends on decorations another step may have stripped. A structure from
elsewhere (a CIF, the Materials Project, ASE) becomes one through :meth:`PerovskiteCell.from_structure`, which
infers roles and ordering (:mod:`dp_screen.structures.roles`) or raises one error naming the structure.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from monty.json import MSONable
from pymatgen.core import Structure

if TYPE_CHECKING:
    from ase import Atoms

    from dp_screen.structures.perovskite import BuiltStructure

ROLE_ORDER = ("A", "A2", "B", "B2", "X")


@dataclass
class PerovskiteCell(MSONable):
    """An AA'BB'X6 double-perovskite cell with its site roles, oxidation states, ordering and origin.

    Parameters
    ----------
    structure
        The cell, with oxidation states and the site property ``site`` (A, A2, B, B2, X) on every site.
    ordering
        Cation ordering: ``rocksalt`` (A = A'), ``layered`` or ``rocksalt-A``.
    tilt
        The Glazer tilt system it was built in (None for a structure from elsewhere).
    method
        How it was made: ``bvm``, ``dls`` or ``external``.
    settings
        The build settings (bond-valence set, ...), for provenance.
    provenance
        Where it came from (code version; for a relaxed cell: model, relaxation settings, energy).
    """

    structure: Structure
    ordering: str
    tilt: str | None = None
    method: str = "external"
    settings: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        from dp_screen.errors import InputError
        from dp_screen.structures.roles import has_oxidation_states, has_site_roles
        from dp_screen.structures.tilts import SPACE_GROUPS

        if not (has_site_roles(self.structure) and has_oxidation_states(self.structure)):
            raise InputError(
                f"{self.structure.composition.reduced_formula}: a PerovskiteCell needs oxidation states "
                "and site roles on every site; make it with PerovskiteCell.from_structure (which infers "
                "them)"
            )
        if self.ordering not in SPACE_GROUPS:
            raise InputError(f"unknown ordering {self.ordering!r}; allowed: {', '.join(SPACE_GROUPS)}")

    # --------------------------------------------------------------------------------------------- identity
    @property
    def roles(self) -> list[str]:
        """The role of every site (A, A2, B, B2, X)."""
        return list(self.structure.site_properties["site"])

    @property
    def species(self) -> dict[str, tuple[str, int]]:
        """role -> (element, oxidation state), e.g. {"A": ("Sr", 2), ..., "X": ("O", -2)}; A2 / B2 as A / B where
        one species fills both."""
        out: dict[str, tuple[str, int]] = {}
        for role, sp in zip(self.roles, self.structure.species, strict=True):
            out.setdefault(role, (sp.symbol, int(round(sp.oxi_state))))
        out.setdefault("A2", out["A"])
        out.setdefault("B2", out["B"])
        return {r: out[r] for r in ROLE_ORDER}

    @property
    def composition_id(self) -> str:
        """The canonical composition id (as the enumeration writes it), e.g. ``Sr2+_Sr2+_Fe3+_Mo5+_O2-``."""
        from dp_screen.chemistry.composition_space import composition_id

        sp = self.species
        return composition_id(*sp["A"], *sp["A2"], *sp["B"], *sp["B2"], *sp["X"])

    @property
    def formula(self) -> str:
        """AA'BB'X6 formula in site order, e.g. ``Sr2FeMoO6``."""
        from dp_screen.chemistry.composition_space import formula

        sp = self.species
        return formula(*(sp[r][0] for r in ROLE_ORDER))

    @property
    def oxidation_states(self) -> dict[str, float]:
        """element -> oxidation state (the first site's, where an element has two)."""
        out: dict[str, float] = {}
        for sp in self.structure.species:
            out.setdefault(sp.symbol, float(sp.oxi_state))
        return out

    # ------------------------------------------------------------------------------------------- conversions
    @classmethod
    def from_built(cls, built: BuiltStructure, settings: dict | None = None) -> PerovskiteCell:
        """The cell of a builder's result (:mod:`dp_screen.structures.perovskite`)."""
        from dp_screen import __version__

        return cls(
            built.structure,
            built.ordering,
            built.tilt,
            built.method,
            dict(settings or {}),
            {"dp_screen_version": __version__, "space_group": built.space_group, "gii": built.gii},
        )

    @classmethod
    def from_structure(cls, structure: Structure, name: str | None = None, tilt: str | None = None) -> PerovskiteCell:
        """A cell of a structure from elsewhere: oxidation states and site roles kept where present, else inferred
        (:func:`dp_screen.structures.roles.ensure_site_roles`); InputError naming ``name`` if it is no AA'BB'X6
        double perovskite."""
        from dp_screen import __version__
        from dp_screen.structures.roles import ensure_site_roles, with_oxidation_states

        with_roles, ordering = ensure_site_roles(structure, name)
        with_roles = with_oxidation_states(with_roles, name=name)
        return cls(
            with_roles,
            ordering,
            tilt,
            "external",
            {},
            {"dp_screen_version": __version__, "source": name or "structure"},
        )

    @classmethod
    def from_ase(cls, atoms: Atoms, name: str | None = None) -> PerovskiteCell:
        """A cell of ASE ``Atoms`` (roles and oxidation states inferred, as :meth:`from_structure`)."""
        from pymatgen.io.ase import AseAtomsAdaptor

        return cls.from_structure(AseAtomsAdaptor.get_structure(atoms), name=name or atoms.get_chemical_formula())

    def to_structure(self) -> Structure:
        """A copy of the pymatgen structure (with oxidation states and site roles)."""
        return self.structure.copy()

    def to_ase(self) -> Atoms:
        """ASE ``Atoms`` of the cell; the roles ride along as the array ``site`` and the oxidation states as
        ``initial_charges`` (pymatgen's adaptor)."""
        from pymatgen.io.ase import AseAtomsAdaptor

        return AseAtomsAdaptor.get_atoms(self.structure)

    def with_structure(self, structure: Structure, **provenance) -> PerovskiteCell:
        """The same cell (roles, oxidation states, ordering, start tilt) at another geometry (a relaxed one), with
        ``provenance`` added."""
        from dp_screen.mlip.relax import _with_species

        return replace(
            self, structure=_with_species(structure, self.structure), provenance={**self.provenance, **provenance}
        )

    def __repr__(self) -> str:
        return (
            f"PerovskiteCell({self.formula}, {self.ordering}, tilt={self.tilt}, method={self.method}, "
            f"{len(self.structure)} atoms)"
        )

    def as_dict(self) -> dict:
        return {
            "@module": type(self).__module__,
            "@class": type(self).__name__,
            "structure": self.structure.as_dict(),
            "ordering": self.ordering,
            "tilt": self.tilt,
            "method": self.method,
            "settings": self.settings,
            "provenance": self.provenance,
        }

    @classmethod
    def from_dict(cls, d: dict) -> PerovskiteCell:
        return cls(
            Structure.from_dict(d["structure"]),
            d["ordering"],
            d.get("tilt"),
            d.get("method", "external"),
            d.get("settings") or {},
            d.get("provenance") or {},
        )
