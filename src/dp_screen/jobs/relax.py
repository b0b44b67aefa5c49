"""Relax the stored starting structures with a MACE model (a function and its jobflow Maker), and fine-tune."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from jobflow import Maker, job
from pymatgen.core import Structure

from dp_screen.errors import InputError
from dp_screen.mlip.models import load_model
from dp_screen.mlip.relax import RelaxSettings, relax_structures
from dp_screen.schemas.common import Provenance
from dp_screen.schemas.relaxation import ModelDoc, RelaxationDoc
from dp_screen.schemas.structure import settings_hash
from dp_screen.settings import DPScreenSettings
from dp_screen.stores import open_store, upsert_documents
from dp_screen.structures.perovskite_check import check_perovskite
from dp_screen.structures.phases import compare_phases, identify_phase

if TYPE_CHECKING:
    from collections.abc import Callable

    from dp_screen.mlip.training import TrainSettings


def relax_store(
    model_name: str | None = None,
    relax_settings: RelaxSettings | None = None,
    db_settings: DPScreenSettings | None = None,
    query: dict | None = None,
    limit: int | None = None,
    chunk_size: int = 256,
    device: str | None = None,
    dtype: str = "float64",
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> dict:
    """Relax every built structure (``query`` filters) not yet relaxed with this model and these settings.

    Resumable: relaxations are keyed by structure, model hash and settings; a re-run skips those already stored,
    unless the starting structure has been rebuilt since with other build settings (then it is relaxed again and
    the stale relaxation replaced).
    After relaxing, each touched composition gets its phase summary (see :func:`phase_summary`) under
    ``phases.<model sha[:12]>_<relaxation settings hash>`` in the compositions collection. The settings hash covers
    every setting that changes a result (the relaxation settings and the model's dtype), so runs with other
    settings are kept side by side.
    """
    t0 = time.perf_counter()
    settings = relax_settings or RelaxSettings()
    model = load_model(model_name, device=device, dtype=dtype)
    prov = model.provenance()
    config = relaxation_config(settings, model.dtype)
    config_hash = settings_hash(config)
    with open_store("structures", db_settings) as structures:
        cursor = structures._collection.find(
            {**(query or {}), "status": "built"}, {"structure": 0, "bv_parameters": 0, "_id": 0}
        ).sort("structure_id", 1)
        if limit:
            cursor = cursor.limit(limit)
        todo_meta = list(cursor)
        if not todo_meta:
            raise InputError(f"no built structures match {query or {}}; run 'dp-screen build-all' first")
        with open_store("relaxations", db_settings, bulk_load=True) as relax_store_:
            done = {
                d["structure_id"]: d.get("structure_settings_hash")
                for d in relax_store_._collection.find(
                    {"model_sha256": model.sha256, "settings_hash": config_hash},
                    {"structure_id": 1, "structure_settings_hash": 1, "_id": 0},
                )
            }
            todo = [m for m in todo_meta if not _relaxed_from(done, m)]
            counts = {"structures": len(todo_meta), "skipped": len(todo_meta) - len(todo), "relaxed": 0,
                      "converged": 0, "failed": 0, "not_perovskite": 0, "left_start_tilt": 0}  # fmt: skip
            if on_total:
                on_total(len(todo_meta))
            if progress and counts["skipped"]:
                progress(counts["skipped"])
            touched: set[str] = set()
            for start in range(0, len(todo), chunk_size):
                chunk = todo[start : start + chunk_size]
                full = {d["structure_id"]: d for d in structures._collection.find(
                    {"structure_id": {"$in": [m["structure_id"] for m in chunk]}}, {"_id": 0})}  # fmt: skip
                docs = [full[m["structure_id"]] for m in chunk]
                inputs = [Structure.from_dict(d["structure"]) for d in docs]
                results = relax_structures(inputs, model, settings, progress=progress)
                out = []
                for doc, res in zip(docs, results, strict=True):
                    phase = None if res.failed else identify_phase(res.structure, doc["ordering"], doc["tilt"])
                    check = None if res.failed else check_perovskite(res.structure)
                    out.append(RelaxationDoc.from_result(doc, res, phase, prov, config, config_hash, check).model_dump())
                    counts["relaxed"] += 1
                    counts["converged"] += res.converged
                    counts["failed"] += res.failed
                    counts["not_perovskite"] += check is not None and not check.ok
                    counts["left_start_tilt"] += phase is not None and not phase.stayed_in_start_tilt
                    touched.add(doc["composition_id"])
                upsert_documents(relax_store_, out)
            counts["phase_summaries"] = summarize_phases(relax_store_, db_settings, touched, model.sha256, config_hash)
    counts.update({"model": prov, "settings_hash": config_hash, "seconds": round(time.perf_counter() - t0, 2)})
    return counts


def _relaxed_from(done: dict[str, str | None], structure: dict) -> bool:
    """Whether a current relaxation of this structure document exists: one made from the same build settings.
    A relaxation made before 0.2.0 does not record them; it counts as current while its structure is from before
    0.2.0 too (no ``bv_set`` in its build settings)."""
    if structure["structure_id"] not in done:
        return False
    made_from = done[structure["structure_id"]]
    if made_from is None:
        return "bv_set" not in structure.get("provenance", {}).get("settings", {})
    return made_from == structure["settings_hash"]


def relaxation_config(settings: RelaxSettings, dtype: str) -> dict:
    """Everything that changes a relaxation's result, for its settings hash: the relaxation settings and the dtype
    the model is evaluated in (a float32 run does not count float64 results as done)."""
    return {**settings.settings_dict(), "dtype": dtype}


def summary_key(model_sha256: str, config_hash: str) -> str:
    """Field of a composition's phase summary for one model and relaxation settings: ``<sha[:12]>_<hash>``."""
    return f"{model_sha256[:12]}_{config_hash}"


def phase_summary(variants: list[dict]) -> dict:
    """Phase summary of one composition from its relaxation documents (one model and settings).

    Only ranked variants (converged, not failed, still a perovskite: field ``excluded`` None) enter, each under the
    phase it ended in (``phase_tilt``). Per ordering: :func:`compare_phases` (lowest phase, dE untilted - lowest);
    ``ground_state``: the lowest (ordering, phase) over all orderings with that ordering's dE; ``excluded``: how
    many variants were kept out and why.
    """
    excluded: dict[str, int] = {}
    by_ordering: dict[str, list[dict]] = defaultdict(list)
    for d in variants:
        why = d.get("excluded")
        if why:
            excluded[why] = excluded.get(why, 0) + 1
            continue
        by_ordering[d["ordering"]].append({"tilt": d.get("phase_tilt") or d["start_tilt"],
                                           "energy_per_atom": d["energy_per_atom"],
                                           "structure_id": d["structure_id"]})  # fmt: skip
    orderings = {o: {**compare_phases(v), "n_ranked": len(v)} for o, v in sorted(by_ordering.items())}
    ground = None
    for o, v in by_ordering.items():
        best = min(v, key=lambda x: x["energy_per_atom"])
        if ground is None or best["energy_per_atom"] < ground["energy_per_atom"]:
            ground = {"ordering": o, "energy_per_atom": best["energy_per_atom"]}
    if ground is not None:
        summ = orderings[ground["ordering"]]
        ground.update(phase=summ["ground_state_phase"], lowest=summ["lowest"], structure_id=summ["lowest_structure_id"],
                      dE_untilted_mev_atom=summ["dE_untilted_mev_atom"], ground_state_tilted=summ["ground_state_tilted"])
    return {
        "ground_state": ground, "orderings": orderings, "excluded": excluded, "n_variants": len(variants),
        "n_ranked": sum(len(v) for v in by_ordering.values()),
        # the fields of the ground state's ordering at the top level, as read by the campaign summary
        "lowest": ground["lowest"] if ground else None,
        "ground_state_phase": ground["phase"] if ground else None,
        "dE_untilted_mev_atom": ground["dE_untilted_mev_atom"] if ground else None,
        "ground_state_tilted": ground["ground_state_tilted"] if ground else None,
    }  # fmt: skip


def summarize_phases(relaxations, db_settings, composition_ids, model_sha256: str, config_hash: str) -> int:
    """Write each composition's phase summary (from its stored relaxations) into the compositions collection."""
    by_comp: dict[str, list[dict]] = defaultdict(list)
    fields = {"composition_id": 1, "ordering": 1, "start_tilt": 1, "phase_tilt": 1, "energy_per_atom": 1,
              "structure_id": 1, "excluded": 1, "_id": 0}  # fmt: skip
    for d in relaxations._collection.find(
        {"composition_id": {"$in": sorted(composition_ids)}, "model_sha256": model_sha256,
         "settings_hash": config_hash}, fields,
    ):  # fmt: skip
        by_comp[d["composition_id"]].append(d)
    from pymongo import UpdateOne

    key = summary_key(model_sha256, config_hash)
    ops = [UpdateOne({"composition_id": cid}, {"$set": {f"phases.{key}": phase_summary(v)}})
           for cid, v in by_comp.items()]  # fmt: skip
    if ops:
        with open_store("compositions", db_settings) as comps:
            comps._collection.bulk_write(ops, ordered=False)
    return len(ops)


@dataclass
class RelaxMaker(Maker):
    """Relax stored structures with a MACE model (runs on the GPU worker category in FireWorks).

    Parameters
    ----------
    name
        Job name.
    model
        Model file or foundation name; None: the default model.
    settings
        Relaxation settings (fmax, max steps, ...).
    device, dtype
        Where and how to evaluate the model.
    chunk_size
        Structures relaxed (and written) together.
    """

    name: str = "relax structures"
    model: str | None = None
    settings: RelaxSettings = field(default_factory=RelaxSettings)
    device: str | None = None
    dtype: str = "float64"
    chunk_size: int = 256

    @job
    def make(self, query: dict | None = None, limit: int | None = None, db_settings: dict | None = None) -> dict:
        """Relax the structures matching ``query``; the output is counts (no structures)."""
        db = DPScreenSettings(**db_settings) if db_settings else DPScreenSettings()
        return relax_store(self.model, self.settings, db, query=query, limit=limit, chunk_size=self.chunk_size,
                           device=self.device, dtype=self.dtype)  # fmt: skip


def finetune_to_store(
    data: str | Path,
    settings: TrainSettings,
    db_settings: DPScreenSettings | None = None,
    name: str = "dp_screen_ft",
    test: str | Path | None = None,
) -> dict:
    """Fine-tune (or train) MACE on an extxyz file; store the versioned model file and its errors in ``models``."""
    from dp_screen.mlip.training import read_extxyz, train_mace

    db = db_settings or DPScreenSettings()
    models_dir = db.home.resolve() / "models"
    work = models_dir / "runs" / f"{name}-{int(time.time())}"
    n_train = len(read_extxyz(data))
    result = train_mace(data, settings, work, name=name, test=test, models_dir=models_dir)
    doc = ModelDoc(
        model_id=result.sha256, sha256=result.sha256, name=name, version=result.version, path=str(result.model_path),
        foundation=settings.foundation, errors=result.errors, settings=result.settings, n_train=n_train,
        provenance=Provenance(model_sha256=result.sha256, settings=result.settings),
    )  # fmt: skip
    with open_store("models", db) as store:
        upsert_documents(store, [doc.model_dump()])
    return doc.model_dump(mode="json")
