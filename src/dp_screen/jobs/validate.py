"""Validation: DFT single points of a random, stratified sample of relaxed structures, stored next to the MLIP's.

The sample is drawn at random (seeded) in strata of (anion, final space group), round robin, so every anion and
phase present is covered before any is sampled twice; by default whole compositions are drawn (all their relaxed
variants), so that DFT can rank each composition's phases against the MLIP. Each validation document holds the DFT
energy, forces and stress, the MLIP's for the same structure, and the per-structure errors. Absolute energies of
DFT codes and MLIPs differ by element references; the energy error stored is the raw difference (analysis compares
energy differences within a composition), forces and stresses are compared directly.
"""

from __future__ import annotations

import random
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
from jobflow import Flow, Maker, Response, job
from pymatgen.core import Structure

from dp_screen.campaign_store import CampaignStore
from dp_screen.chemistry.composition_space import composition_assignment
from dp_screen.dft.cp2k import CP2KSettings
from dp_screen.dft.labels import dft_label
from dp_screen.errors import InputError
from dp_screen.jobs.dft import BACKENDS, dft_single_point, vasp_static_maker
from dp_screen.schemas.common import Provenance
from dp_screen.settings import DPScreenSettings
from dp_screen.structures.roles import with_oxidation_states

CP2K_METHODS = ["cp2k-pbe", "cp2k-pbe+u"]


def _stratum(doc: dict) -> tuple:
    return doc["composition_id"].rsplit("_", 1)[-1], (doc.get("phase") or {}).get("space_group")


def stratified_sample(docs: list[dict], n: int, seed: int = 0, by_composition: bool = False) -> list[dict]:
    """Pick ``n`` documents at random, round robin over (anion, space group) strata.

    ``by_composition``: pick whole compositions instead (stratified by anion and the space group of their lowest
    variant) and take all of each one's variants, the untilted one and the lowest first, so that DFT can rank the
    phases of a composition against the MLIP; compositions with a single variant only when no other is left.
    """
    rng = random.Random(seed)
    if not by_composition:
        strata: dict[tuple, list[dict]] = defaultdict(list)
        for d in docs:
            strata[_stratum(d)].append(d)
        for members in strata.values():
            rng.shuffle(members)
        keys = sorted(strata, key=str)
        rng.shuffle(keys)
        picked: list[dict] = []
        while len(picked) < n and any(strata[k] for k in keys):
            for k in keys:
                if strata[k] and len(picked) < n:
                    picked.append(strata[k].pop())
        return picked
    comps: dict[str, list[dict]] = defaultdict(list)
    for d in docs:
        comps[d["composition_id"]].append(d)
    groups: dict[tuple, list[list[dict]]] = defaultdict(list)
    for cid in sorted(comps):
        variants = sorted(comps[cid], key=lambda d: d.get("energy_per_atom", 0.0))
        lowest = variants[0]
        first = [d for d in variants if d.get("start_tilt") == "a0a0a0"][:1]  # untilted, lowest, rest by energy
        if all(lowest is not f for f in first):
            first.append(lowest)
        ordered = first + [d for d in variants if all(d is not f for f in first)]
        groups[(len(ordered) > 1, *_stratum(lowest))].append(ordered)
    for members in groups.values():
        rng.shuffle(members)
    picked = []
    for multi in (True, False):
        keys = sorted((k for k in groups if k[0] == multi), key=str)
        rng.shuffle(keys)
        while len(picked) < n and any(groups[k] for k in keys):
            for k in keys:
                if groups[k] and len(picked) < n:
                    picked += groups[k].pop()[: n - len(picked)]
    return picked


@cache
def _validation_model(path: str | None):
    """The MLIP of a relaxation, loaded once per model file (None when it cannot be loaded here)."""
    from dp_screen.mlip.models import load_model

    try:
        return load_model(path, device="cpu", dtype="float64")
    except Exception:  # noqa: BLE001 - the model file may live on another machine
        return None


def _mlip_forces(relaxation: dict, structure: Structure) -> np.ndarray | None:
    from dp_screen.mlip.relax import single_points

    model = _validation_model(relaxation["provenance"]["settings"].get("model_path"))
    return None if model is None else single_points([structure], model)[0]["forces"]


def validation_doc(relaxation: dict, dft: dict, structure: Structure) -> dict:
    """A validations document: DFT and MLIP side by side, with the per-structure errors."""
    n = len(structure)
    f_dft = np.asarray(dft["forces"])
    f_mlip = _mlip_forces(relaxation, structure)
    s_dft = None if dft.get("stress_gpa") is None else np.asarray(dft["stress_gpa"])
    s_mlip = np.asarray(relaxation["stress_gpa"])
    return {
        "validation_id": f"{relaxation['relaxation_id']}|{dft['method']}",
        "relaxation_id": relaxation["relaxation_id"],
        "structure_id": relaxation["structure_id"],
        "composition_id": relaxation["composition_id"],
        "formula": relaxation["formula"],
        "X": relaxation["composition_id"].rsplit("_", 1)[-1].rstrip("+-0123456789"),
        "start_tilt": relaxation["start_tilt"],
        "space_group": (relaxation.get("phase") or {}).get("space_group"),
        "ordering": relaxation.get("ordering"),
        "phase_tilt": relaxation.get("phase_tilt"),
        "method": dft["method"],
        "n_atoms": n,
        "dft_energy": dft["energy"],
        "dft_energy_per_atom": dft["energy"] / n,
        "dft_forces": f_dft.tolist(),
        "dft_stress_gpa": None if s_dft is None else s_dft.tolist(),
        "scf_converged": dft.get("scf_converged"),
        "mlip_energy": relaxation["energy"],
        "mlip_energy_per_atom": relaxation["energy_per_atom"],
        "mlip_forces": None if f_mlip is None else f_mlip.tolist(),
        "mlip_stress_gpa": s_mlip.tolist(),
        "model_sha256": relaxation["model_sha256"],
        "energy_diff_per_atom_raw": relaxation["energy_per_atom"] - dft["energy"] / n,
        "force_mae": None if f_mlip is None else float(np.abs(f_mlip - f_dft).mean()),
        "force_max_dft": float(np.linalg.norm(f_dft, axis=1).max()),
        "stress_mae_gpa": None if s_dft is None else float(np.abs(s_mlip - s_dft).mean()),
        "dft_settings": dft.get("settings"),
        "dft_output": dft.get("output_file"),
        "provenance": Provenance(
            model_sha256=relaxation["model_sha256"], settings={"dft": dft.get("settings")}
        ).model_dump(),
    }


def validate_sample(
    composition_ids: list[str] | None,
    n_samples: int,
    cp2k: CP2KSettings,
    db_settings: DPScreenSettings | None = None,
    seed: int = 0,
    work_dir: str | Path | None = None,
    model_sha256: str | None = None,
    by_composition: bool = True,
) -> dict:
    """Run CP2K on a stratified random sample of converged relaxations; store validation documents (resumable)."""
    store = CampaignStore(db_settings)
    sample = draw_sample(store, composition_ids, model_sha256, n_samples, seed, by_composition)
    if not sample:
        return {"validated": 0, "skipped": 0, "reason": "no ranked (converged, perovskite) relaxations to validate"}
    method = "cp2k"  # cp2k-pbe or cp2k-pbe+u per structure (dp_screen.dft.hamiltonian)
    done = store.validated([d["relaxation_id"] for d in sample], CP2K_METHODS)
    base = Path(work_dir or tempfile.mkdtemp(prefix="dp_screen_validate_"))
    written, errors = [], []
    for rel in sample:
        if rel["relaxation_id"] in done:
            continue
        # DFT reads its Hamiltonian off the oxidation states: a stored structure without them gets its composition's
        structure = with_oxidation_states(
            Structure.from_dict(rel["structure"]),
            composition_assignment(rel["composition_id"]),
            name=rel["relaxation_id"],
        )
        folder = base / rel["relaxation_id"].replace("|", "_").replace(":", "_").replace("+", "p")
        try:
            dft = dft_single_point(structure, cp2k, folder)
        except Exception as exc:  # noqa: BLE001 - one failed DFT run must not lose the others
            errors.append(f"{rel['relaxation_id']}: {exc}")
            continue
        doc = validation_doc(rel, dft, structure)
        store.write_validations([doc])
        written.append(doc)
    maes = [d["force_mae"] for d in written if d["force_mae"] is not None]
    return {
        "validated": len(written),
        "skipped": len(sample) - len(written) - len(errors),
        "errors": errors,
        "method": method,
        "force_mae_mean": float(np.mean(maes)) if maes else None,
        "validation_ids": [d["validation_id"] for d in written],
    }


#: what drawing the sample needs of a relaxation (not its structure, forces or provenance)
SAMPLE_FIELDS = ("relaxation_id", "composition_id", "start_tilt", "energy_per_atom", "phase.space_group")


def _ranked_relaxations(
    store: CampaignStore, composition_ids: list[str] | None, model_sha256: str | None
) -> list[dict]:
    """The ranked relaxations (converged, still perovskites) of the compositions, with :data:`SAMPLE_FIELDS` only."""
    query: dict = {"failed": False, "converged": True, "excluded": None}
    if model_sha256:
        query["model_sha256"] = model_sha256
    projection = {f: 1 for f in SAMPLE_FIELDS}
    if composition_ids is None:
        return store.relaxations(query, projection)
    return store.relaxations_of_compositions(composition_ids, query, projection)


def draw_sample(
    store: CampaignStore,
    composition_ids: list[str] | None,
    model_sha256: str | None,
    n: int,
    seed: int,
    by_composition: bool,
) -> list[dict]:
    """The stratified sample (:func:`stratified_sample`) of the ranked relaxations, drawn from their light fields
    and then read whole by indexed id, in the sample's order: no structure is read that is not validated."""
    light = stratified_sample(_ranked_relaxations(store, composition_ids, model_sha256), n, seed, by_composition)
    ids = [d["relaxation_id"] for d in light]
    full = {d["relaxation_id"]: d for d in store.relaxations({"relaxation_id": {"$in": ids}})}
    return [full[i] for i in ids]


@job
def collect_vasp_validations(relaxation_ids: list[str], task_docs: list, db_settings: dict | None = None) -> dict:
    """Store the VASP static results next to the MLIP's (runs after the queued VASP jobs)."""
    db = DPScreenSettings(**db_settings) if db_settings else DPScreenSettings()
    store = CampaignStore(db)
    rels = {d["relaxation_id"]: d for d in store.relaxations({"relaxation_id": {"$in": relaxation_ids}})}
    docs = []
    for rid, task in zip(relaxation_ids, task_docs, strict=True):
        structure = (
            task.output.structure if hasattr(task, "output") else Structure.from_dict(task["output"]["structure"])
        )
        docs.append(validation_doc(rels[rid], dft_label(task), structure))
    store.write_validations(docs)
    return {"validated": len(docs), "methods": sorted({d["method"] for d in docs})}


@dataclass
class ValidateMaker(Maker):
    """DFT validation of a stratified random sample of a campaign's relaxed structures.

    Parameters
    ----------
    name
        Job name.
    n_samples
        Structures to validate.
    by_composition
        Validate whole compositions (all their relaxed variants, see ``stratified_sample``) so the report can
        compare phase energies and rankings; False: single structures from as many strata as possible.
    seed
        Sampling seed.
    backend
        "cp2k" (runs in the job) or "vasp" (queues atomate2 static jobs, then a collector job).
    cp2k
        CP2K settings.
    """

    name: str = "validate"
    n_samples: int = 4
    by_composition: bool = True
    seed: int = 0
    backend: str = "cp2k"
    cp2k: CP2KSettings = field(default_factory=CP2KSettings)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise InputError(f"unknown DFT backend {self.backend!r}; allowed: {', '.join(BACKENDS)}")

    @job
    def make(self, selection: dict | None = None, relaxed: list | None = None, db_settings: dict | None = None):
        """Validate the sample; the output is a summary (ids, counts, mean errors)."""
        db = DPScreenSettings(**db_settings) if db_settings else DPScreenSettings()
        ids = selection["composition_ids"] if selection else None
        model = relaxed[0]["model"]["model_sha256"] if relaxed else None
        if self.backend == "cp2k":
            return validate_sample(
                ids,
                self.n_samples,
                self.cp2k,
                db,
                seed=self.seed,
                model_sha256=model,
                by_composition=self.by_composition,
            )
        sample = draw_sample(CampaignStore(db), ids, model, self.n_samples, self.seed, self.by_composition)
        statics = [vasp_static_maker().make(Structure.from_dict(d["structure"])) for d in sample]
        collect = collect_vasp_validations(
            [d["relaxation_id"] for d in sample], [s.output for s in statics], db_settings
        )
        return Response(replace=Flow([*statics, collect], output=collect.output, name="vasp validation"))
