"""The document of one MLIP relaxation (collection ``relaxations``) and a model's document (``models``)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from dp_screen.schemas.common import Provenance, utcnow

if TYPE_CHECKING:
    from dp_screen.mlip.relax import RelaxResult
    from dp_screen.structures.perovskite_check import PerovskiteCheck
    from dp_screen.structures.phases import PhaseIdentification

#: why a relaxation is kept out of phase rankings (``excluded``), in the order they are checked
EXCLUSION_REASONS = ("failed", "not_converged", "not_perovskite")


def exclusion(failed: bool, converged: bool, perovskite_ok: bool | None) -> str | None:
    """The reason a relaxation is kept out of rankings (None: it is ranked)."""
    if failed:
        return "failed"
    if not converged:
        return "not_converged"
    if perovskite_ok is False:
        return "not_perovskite"
    return None


def relaxation_id(structure_id: str, model_sha256: str, settings_hash: str) -> str:
    """Id of a relaxation: the structure, the model (by hash) and the relaxation settings."""
    return f"{structure_id}|{model_sha256[:12]}|{settings_hash}"


def share_key(structure_doc: dict, model_sha256: str, settings_hash: str) -> str:
    """What oxidation-state twins share one relaxation by: the start's chemistry (its elements on the sites,
    :func:`dp_screen.chemistry.composition_space.chemistry_id`), ordering, tilt, method and build settings, the model
    and the relaxation settings."""
    from dp_screen.chemistry.composition_space import chemistry_id

    d = structure_doc
    chem = chemistry_id(d["composition_id"])
    return f"{chem}:{d['ordering']}:{d['tilt']}:{d['method']}:{d['settings_hash']}|{model_sha256[:12]}|{settings_hash}"


def twin_copy(doc: dict, structure_doc: dict) -> dict:
    """A relaxation document for the twin whose starting-structure document is ``structure_doc``: ``doc``'s
    relaxation (energies, phase, verdicts) with the twin's ids and its own oxidation states and site roles
    (:func:`dp_screen.structures.twins.redecorate`); ``relaxed_as`` names the start that was relaxed, and
    ``volume_change`` stays relative to that start."""
    from dp_screen.structures.twins import redecorate

    sid = structure_doc["structure_id"]
    return {
        **doc,
        "relaxation_id": relaxation_id(sid, doc["model_sha256"], doc["settings_hash"]),
        "structure_id": sid,
        "composition_id": structure_doc["composition_id"],
        "formula": structure_doc["formula"],
        "structure_settings_hash": structure_doc.get("settings_hash"),
        "relaxed_as": doc.get("relaxed_as") or doc["structure_id"],
        "structure": redecorate(doc["structure"], structure_doc["composition_id"]),
        "created_at": utcnow(),
    }


def summary_key(model_sha256: str, config_hash: str) -> str:
    """Field of a composition's phase summary for one model and relaxation settings: ``<sha[:12]>_<hash>``."""
    return f"{model_sha256[:12]}_{config_hash}"


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
    max_stress_gpa: float = Field(..., description="max |stress component| at the end (GPa)")
    stress_gpa: list[list[float]]
    n_steps: int
    converged: bool
    failed: bool
    reason: str | None = None
    wall_time_s: float
    volume_per_fu: float
    volume_change: float | None = None
    phase: dict | None = Field(None, description="space groups, B-X-B' angles, tilt candidates, stayed in start tilt")
    final_space_group: int | None = Field(None, description="space group after relaxation (spglib, 0.01 A)")
    phase_tilt: str | None = Field(
        None,
        description="the phase it is ranked under: the tilt system its final space "
        "group implies for its ordering and species pattern (SG<n>: none of the table)",
    )
    left_start_tilt: bool | None = Field(None, description="its final space group no longer allows the start tilt")
    not_perovskite: bool = Field(False, description="no longer a corner-sharing perovskite (see perovskite_check)")
    not_perovskite_reason: str | None = None
    perovskite_check: dict | None = None
    excluded: str | None = Field(
        None, description="why it is kept out of rankings: failed, not_converged, not_perovskite (None: ranked)"
    )
    energy_spread_mev_atom: float | None = Field(
        None, description="committee energy spread at the relaxed structure (meV/atom; None: not scored)"
    )
    force_spread_ev_a: float | None = Field(None, description="committee force spread at the relaxed structure (eV/A)")
    uncertainty: dict | None = Field(None, description="the committee's members (sha256) and per-member energies")
    share_key: str | None = Field(
        None,
        description="what oxidation-state twins share: chemistry, ordering, tilt, method, build settings, model, "
        "relaxation settings (see dp_screen.jobs.relax); None: made before relaxations were shared",
    )
    relaxed_as: str | None = Field(
        None, description="the structure id whose start was relaxed, when that is a twin's (None: its own start)"
    )
    structure: dict
    provenance: Provenance
    created_at: datetime = Field(default_factory=utcnow)

    @classmethod
    def from_result(
        cls,
        struct_doc: dict,
        result: RelaxResult,
        phase: PhaseIdentification | None,
        model_prov: dict,
        settings: dict,
        settings_hash: str,
        check: PerovskiteCheck | None = None,
    ) -> RelaxationDoc:
        """Document from a structure document, its relaxation result, its phase and its perovskite check."""
        return cls(
            relaxation_id=relaxation_id(struct_doc["structure_id"], model_prov["model_sha256"], settings_hash),
            structure_id=struct_doc["structure_id"],
            composition_id=struct_doc["composition_id"],
            formula=struct_doc["formula"],
            ordering=struct_doc["ordering"],
            start_tilt=struct_doc["tilt"],
            method=struct_doc["method"],
            structure_settings_hash=struct_doc.get("settings_hash"),
            model_sha256=model_prov["model_sha256"],
            model_name=model_prov["model_name"],
            settings_hash=settings_hash,
            energy=result.energy,
            energy_per_atom=result.energy_per_atom,
            n_atoms=len(result.structure),
            max_force=result.max_force,
            max_stress_gpa=result.max_stress_gpa,
            stress_gpa=result.stress_gpa,
            n_steps=result.n_steps,
            converged=result.converged,
            failed=result.failed,
            reason=result.reason,
            wall_time_s=result.wall_time_s,
            volume_per_fu=result.structure.volume / (len(result.structure) / 10),
            volume_change=result.summary()["volume_change"],
            phase=phase.as_dict() if phase else None,
            final_space_group=phase.space_group if phase else None,
            phase_tilt=phase.phase if phase else None,
            left_start_tilt=None if phase is None else not phase.stayed_in_start_tilt,
            not_perovskite=check is not None and not check.ok,
            not_perovskite_reason=check.reason if check else None,
            perovskite_check=check.as_dict() if check else None,
            excluded=exclusion(result.failed, result.converged, None if check is None else check.ok),
            structure=result.structure.as_dict(),
            provenance=Provenance(model_sha256=model_prov["model_sha256"], settings={**settings, **model_prov}),
        )


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
