"""The document of one starting structure (collection ``structures``)."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

from dp_screen.schemas.common import Provenance

if TYPE_CHECKING:
    from dp_screen.structures.perovskite import BuiltStructure


def settings_hash(settings: dict) -> str:
    """Short stable hash of a settings dict (keys sorted)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def structure_id(composition_id: str, ordering: str, tilt: str, method: str) -> str:
    """Id of a starting structure: composition, ordering, tilt system and method."""
    return f"{composition_id}:{ordering}:{tilt}:{method}"


class StructureDoc(BaseModel):
    """A starting structure (or the reason it could not be built)."""

    structure_id: str
    composition_id: str
    formula: str
    ordering: str
    tilt: str
    method: str
    status: Literal["built", "failed"]
    error: str | None = None
    space_group: int | None = Field(None, description="spglib space-group number of the built structure")
    space_group_expected: int | None = Field(None, description="number from the tilt tables (None: no table)")
    gii: float | None = Field(None, description="global instability index (v.u.)")
    tilt_angles: list[float] | None = Field(None, description="tilt amplitude about x, y, z (degrees)")
    bond_lengths: dict[str, float] | None = None
    volume_per_fu: float | None = None
    n_atoms: int | None = None
    structure: dict | None = Field(None, description="pymatgen Structure.as_dict() of the primitive cell")
    bv_parameters: list[dict] = Field(default_factory=list, description="bond-valence parameters used, with source")
    settings_hash: str
    provenance: Provenance

    @classmethod
    def from_built(
        cls, composition_id: str, built: BuiltStructure, settings: dict, provenance: Provenance
    ) -> StructureDoc:
        """Document of a successfully built structure."""
        return cls(
            structure_id=structure_id(composition_id, built.ordering, built.tilt, built.method),
            composition_id=composition_id,
            formula=built.species.formula,
            ordering=built.ordering,
            tilt=built.tilt,
            method=built.method,
            status="built",
            space_group=built.space_group,
            space_group_expected=built.space_group_expected,
            gii=None if built.gii != built.gii else built.gii,
            tilt_angles=built.tilt_angles,
            bond_lengths=built.bond_lengths,
            volume_per_fu=built.volume_per_fu,
            n_atoms=len(built.structure),
            structure=built.structure.as_dict(),
            bv_parameters=built.bv_parameters,
            settings_hash=settings_hash(settings),
            provenance=provenance,
        )

    @classmethod
    def from_error(
        cls,
        composition_id: str,
        formula: str,
        ordering: str,
        tilt: str,
        method: str,
        error: Exception,
        settings: dict,
        provenance: Provenance,
    ) -> StructureDoc:
        """Document recording why a structure could not be built (so a re-run does not retry it)."""
        return cls(
            structure_id=structure_id(composition_id, ordering, tilt, method),
            composition_id=composition_id,
            formula=formula,
            ordering=ordering,
            tilt=tilt,
            method=method,
            status="failed",
            error=str(error),
            settings_hash=settings_hash(settings),
            provenance=provenance,
        )
