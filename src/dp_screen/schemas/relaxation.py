"""The document of one MLIP relaxation (collection ``relaxations``) and a model's document (``models``)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from dp_screen.schemas.common import Provenance, utcnow

if TYPE_CHECKING:
    from dp_screen.mlip.relax import RelaxResult
    from dp_screen.structures.phases import PhaseIdentification


def relaxation_id(structure_id: str, model_sha256: str, settings_hash: str) -> str:
    """Id of a relaxation: the structure, the model (by hash) and the relaxation settings."""
    return f"{structure_id}|{model_sha256[:12]}|{settings_hash}"


class RelaxationDoc(BaseModel):
    """A relaxed structure with its energy, convergence and phase."""

    relaxation_id: str
    structure_id: str
    composition_id: str
    formula: str
    ordering: str
    start_tilt: str
    method: str = Field(..., description="how the starting structure was built (bvm, dls)")
    structure_settings_hash: str | None = Field(
        None, description="settings hash of the starting structure's build (None: made before 0.2.0)"
    )
    model_sha256: str
    model_name: str
    settings_hash: str
    energy: float = Field(..., description="total energy (eV)")
    energy_per_atom: float
    n_atoms: int
    max_force: float = Field(..., description="max atomic force at the end (eV/A)")
    max_cell_force: float
    stress_gpa: list[list[float]]
    n_steps: int
    converged: bool
    failed: bool
    reason: str | None = None
    wall_time_s: float
    volume_per_fu: float
    volume_change: float | None = None
    phase: dict | None = Field(None, description="space groups, B-X-B' angles, tilt candidates, stayed in start tilt")
    structure: dict
    provenance: Provenance
    created_at: datetime = Field(default_factory=utcnow)

    @classmethod
    def from_result(cls, struct_doc: dict, result: RelaxResult, phase: PhaseIdentification | None, model_prov: dict,
                    settings: dict, settings_hash: str) -> RelaxationDoc:  # fmt: skip
        """Document from a structure document and its relaxation result."""
        return cls(
            relaxation_id=relaxation_id(struct_doc["structure_id"], model_prov["model_sha256"], settings_hash),
            structure_id=struct_doc["structure_id"], composition_id=struct_doc["composition_id"],
            formula=struct_doc["formula"], ordering=struct_doc["ordering"], start_tilt=struct_doc["tilt"],
            method=struct_doc["method"], structure_settings_hash=struct_doc.get("settings_hash"),
            model_sha256=model_prov["model_sha256"], model_name=model_prov["model_name"],
            settings_hash=settings_hash, energy=result.energy, energy_per_atom=result.energy_per_atom,
            n_atoms=len(result.structure), max_force=result.max_force, max_cell_force=result.max_cell_force,
            stress_gpa=result.stress_gpa, n_steps=result.n_steps, converged=result.converged, failed=result.failed,
            reason=result.reason, wall_time_s=result.wall_time_s,
            volume_per_fu=result.structure.volume / (len(result.structure) / 10),
            volume_change=result.summary()["volume_change"], phase=phase.as_dict() if phase else None,
            structure=result.structure.as_dict(),
            provenance=Provenance(model_sha256=model_prov["model_sha256"], settings={**settings, **model_prov}),
        )  # fmt: skip


class ModelDoc(BaseModel):
    """A trained or fine-tuned model file with its errors."""

    model_id: str = Field(..., description="sha256 of the model file")
    sha256: str
    name: str
    version: int
    path: str
    foundation: str | None
    errors: dict
    settings: dict
    n_train: int
    provenance: Provenance
    created_at: datetime = Field(default_factory=utcnow)
