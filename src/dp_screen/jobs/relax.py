"""Relax the stored starting structures with a MACE model (a function and its jobflow Maker), and fine-tune.

Resumable: relaxations are keyed by structure, model hash and settings; a re-run skips those already stored,
unless the starting structure has been rebuilt since with other build settings (then it is relaxed again and
the stale relaxation replaced).
After relaxing, every composition of the query whose phase summary is missing or stale gets one (see
:func:`write_phase_summaries`) under ``phases.<model sha[:12]>_<relaxation settings hash>`` in the compositions
collection, with the calls' sigma of the model (:func:`dp_screen.mlip.uncertainty.model_phase_error`). The
settings hash covers every setting that changes a result (the relaxation settings and the model's dtype), so
runs with other settings are kept side by side.

Oxidation-state twins (:mod:`dp_screen.structures.twins`) share one relaxation per chemistry, ordering, tilt,
method and build settings (:func:`dp_screen.schemas.relaxation.share_key`): of the twins a job relaxes together the
start of the one first in composition-id order is relaxed (a campaign's chunks never split a chemistry, so in a
campaign: the first of its twins), and every other twin gets a copy re-decorated with its own oxidation states
(:func:`dp_screen.schemas.relaxation.twin_copy`, ``relaxed_as`` names the start that was relaxed); a twin met by a
later job copies the stored relaxation. Each composition keeps its own documents, descriptors and phase summary.
``share_twins=False`` relaxes every composition's own start.

``relax_store(committee=...)``: model files of a committee (:mod:`dp_screen.mlip.committee`) that scores every relaxed
structure, new and already stored, as it is written: ``energy_spread_mev_atom``, ``force_spread_ev_a`` and
``uncertainty`` (member hashes, per-member energies) in the relaxation documents, and the largest spread of each
ordering's ranked variants in the phase summaries (the report shows them and can filter on them).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from jobflow import Maker, job

from dp_screen.errors import InputError
from dp_screen.mlip.models import load_model
from dp_screen.mlip.relax import RelaxSettings, relax_structures
from dp_screen.schemas.common import Provenance
from dp_screen.schemas.relaxation import ModelDoc, RelaxationDoc, relaxation_id, share_key, summary_key, twin_copy
from dp_screen.schemas.structure import settings_hash
from dp_screen.settings import DPScreenSettings
from dp_screen.structures.dicts import structure_from_dict
from dp_screen.structures.phases import phase_summary

__all__ = ["RelaxMaker", "phase_summary", "relax_store", "relaxation_config", "summary_key"]

if TYPE_CHECKING:
    from collections.abc import Callable

    from dp_screen.mlip.training import TrainSettings
    from dp_screen.mlip.uncertainty import PhaseError


def relax_store(
    model_name: str | None = None,
    relax_settings: RelaxSettings | None = None,
    db_settings: DPScreenSettings | None = None,
    query: dict | None = None,
    limit: int | None = None,
    chunk_size: int = 4096,
    device: str | None = None,
    dtype: str | None = None,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    write_every: int = 64,
    identify_workers: int | None = None,
    committee: list[str] | None = None,
    share_twins: bool = True,
) -> dict:
    """Relax every built structure (``query`` filters) not yet relaxed with this model and these settings.

    Work is proportional to what ``query`` selects: the structures of a chunk's compositions and their
    relaxations are read by indexed ids only (:class:`~dp_screen.campaign_store.CampaignStore`). The structures
    stream through the device in one in-flight batch per ``chunk_size`` structures read (the device batch itself is
    sized by memory); phase identification and the perovskite gate of finished structures run in
    ``identify_workers`` worker processes while this process feeds the device (None: every other core when the
    device is a GPU and the job runs alone, none on the CPU, where the model itself uses the cores, or in one of
    ``dp-screen run --workers``' processes; 0: in this process), and finished
    relaxations are written every ``write_every`` (so a killed job loses at most those in flight). ``dtype`` None:
    float32 on CUDA, float64 on the CPU.

    Resumable, with phase summaries, shared relaxations of oxidation-state twins (``share_twins``) and a
    committee's scores written as the module docstring says.
    """
    from dp_screen.campaign_store import CampaignStore
    from dp_screen.mlip.models import resolve_device
    from dp_screen.mlip.uncertainty import model_phase_error
    from dp_screen.progress import stage

    t0 = time.perf_counter()
    if progress is None and on_total is None:  # inside dp-screen run: the shared "relaxing" bar
        on_total, progress = stage("relaxing")
    settings = relax_settings or RelaxSettings()
    if dtype is None:
        dtype = "float32" if resolve_device(device).startswith("cuda") else "float64"
    model = load_model(model_name, device=device, dtype=dtype)
    prov = model.provenance()
    config = relaxation_config(settings, model.dtype)
    config_hash = settings_hash(config)
    store = CampaignStore(db_settings)
    phase_error = model_phase_error(model.sha256, model.path, (store.model(model.sha256) or {}).get("errors"))
    todo_meta = store.built_structure_meta(query, limit)
    if not todo_meta:
        raise InputError(f"no built structures match {query or {}}; run 'dp-screen build-all' first")
    rids = {m["structure_id"]: relaxation_id(m["structure_id"], model.sha256, config_hash) for m in todo_meta}
    states = store.relaxation_states(list(rids.values()))
    done = {sid: states[rid] for sid, rid in rids.items() if rid in states}
    todo = [m for m in todo_meta if not _relaxed_from(done, m)]
    scorer = _CommitteeScorer(committee, device, model.dtype) if committee else None
    counts = {"structures": len(todo_meta), "skipped": len(todo_meta) - len(todo)}
    counts |= dict.fromkeys(("relaxed", "converged", "failed", "not_perovskite", "left_start_tilt", "shared"), 0)
    if on_total:
        on_total(len(todo_meta))
    if progress and counts["skipped"]:
        progress(counts["skipped"])
    if identify_workers is None:
        identify_workers = _default_identify_workers(device)
    writer = _Writer(store, scorer, counts, write_every, progress)
    twins = _Twins(store, todo, model.sha256, config_hash, share_twins)
    writer.copy_stored(twins.of_stored)
    todo = twins.relax
    document = partial(_document, prov=prov, config=config, config_hash=config_hash)
    with _identification_pool(identify_workers) as pool:
        for start in range(0, len(todo), chunk_size):
            chunk = todo[start : start + chunk_size]
            full = store.structures_by_id([m["structure_id"] for m in chunk])
            docs = [full[m["structure_id"]] for m in chunk]

            def finished(i: int, res, docs=docs) -> None:
                writer.add(pool.submit(document, docs[i], res), twins.followers[docs[i]["structure_id"]])

            structures = [structure_from_dict(d["structure"]) for d in docs]
            relax_structures(structures, model, settings, progress=progress, on_result=finished)
            writer.flush(force=True)
    if scorer:  # stored relaxations of the query that this committee has not scored yet
        counts["scored_by_committee"] = scorer.score_stored(store, [rid for sid, rid in rids.items() if sid in done])
    counts["phase_summaries"] = write_phase_summaries(
        store, sorted({m["composition_id"] for m in todo_meta}), model.sha256, config_hash, phase_error
    )
    store.register_phase_set(
        summary_key(model.sha256, config_hash), model.sha256, config_hash, model.name, counts["relaxed"]
    )
    counts.update({"model": prov, "settings_hash": config_hash, "seconds": round(time.perf_counter() - t0, 2)})
    return counts


def _default_identify_workers(device: str | None) -> int:
    """The cores this process does not use when it feeds a GPU alone; none on the CPU (the model uses the cores)
    or in one of several worker processes (they use the cores)."""
    from dp_screen.flows.local import WORKER_ENV, default_workers
    from dp_screen.mlip.models import resolve_device

    alone = not os.environ.get(WORKER_ENV) and resolve_device(device).startswith("cuda")
    return default_workers() - 1 if alone else 0


def _document(doc: dict, res, prov, config: dict, config_hash: str) -> tuple[dict, dict[str, int]]:
    """A finished relaxation's document and its counts: identification and the perovskite gate (the API's
    assessment, one code path). Runs in the identification workers."""
    from dp_screen.api import assess

    phase, check = assess(res, doc["ordering"], doc["tilt"])
    out = RelaxationDoc.from_result(doc, res, phase, prov, config, config_hash, check).model_dump()
    out["share_key"] = share_key(doc, prov["model_sha256"], config_hash)
    flags = {
        "relaxed": 1,
        "converged": int(res.converged),
        "failed": int(res.failed),
        "not_perovskite": int(check is not None and not check.ok),
        "left_start_tilt": int(phase is not None and not phase.stayed_in_start_tilt),
    }
    return out, flags


class _InProcess:
    """An executor that runs each task at once in this process (no identification workers)."""

    def submit(self, fn, *args):
        future: Future = Future()
        future.set_result(fn(*args))
        return future

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None


def _identification_pool(workers: int):
    """``workers`` processes (forkserver: never a fork of a process holding the model's threads), or in-process."""
    if workers < 1:
        return _InProcess()
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("forkserver"))


def write_phase_summaries(
    store, ids: list[str], model_sha256: str, config_hash: str, phase_error: PhaseError | None = None, attempts: int = 3
) -> int:
    """(Re)compute the phase summaries (and the digest) of those of ``ids`` whose summary is missing or stale; return
    how many were written.

    Stale: the composition's phase version (bumped by every write of its relaxations) differs from the one its
    summary was computed at, or the model's error (``phase_error``: its card, say) differs from the one its calls
    were made with. Each summary is recomputed from the relaxations stored now and written by
    compare-and-set on that version (:meth:`~dp_screen.campaign_store.CampaignStore.write_phase_summaries`); one
    that lost the race to a concurrent job is recomputed (up to ``attempts`` times: the job that moved the
    version on writes its own summary after its relaxations anyway)."""
    from dp_screen.campaign_store import DIGEST_FIELDS
    from dp_screen.mlip.uncertainty import NO_ERROR

    key = summary_key(model_sha256, config_hash)
    model_error = (phase_error or NO_ERROR).as_dict()  # a card added since makes the stored calls stale too
    versions = store.stale_phase_summaries(key, ids, model_error)
    left = sorted(versions)
    written_total = 0
    for attempt in range(attempts):
        if not left:
            break
        if attempt:
            versions = store.phase_versions(key, left)
        variants: dict[str, list[dict]] = {cid: [] for cid in left}
        for d in store.relaxations_for_summary(left, model_sha256, config_hash):
            variants[d["composition_id"]].append(d)
        summaries = {
            cid: {**phase_summary(v, phase_error), "version": versions.get(cid, 0), "model_phase_error": model_error}
            for cid, v in variants.items()
            if v
        }
        written = sorted(store.write_phase_summaries(key, summaries, versions))
        if written:
            comps = store.compositions({"composition_id": {"$in": written}}, ["composition_id", *DIGEST_FIELDS])
            store.write_phase_digest(
                key, {c: summaries[c] for c in written}, comps, [v for c in written for v in variants[c]], versions
            )
        written_total += len(written)
        left = sorted(set(summaries) - set(written))
    return written_total


class _Twins:
    """Which of the structures to relax are relaxed (``relax``), which twins get a copy of each (``followers``: by
    the structure id relaxed) and which copy a stored relaxation (``of_stored``: (document, twins) pairs); see the
    module docstring. Without ``share``, every structure is relaxed."""

    def __init__(self, store, todo: list[dict], model_sha256: str, config_hash: str, share: bool = True) -> None:
        from collections import defaultdict

        self.followers: dict[str, list[dict]] = defaultdict(list)
        self.of_stored: list[tuple[dict, list[dict]]] = []
        if not share:
            self.relax = todo
            return
        groups: dict[str, list[dict]] = defaultdict(list)
        for m in todo:
            groups[share_key(m, model_sha256, config_hash)].append(m)
        stored = store.shared_relaxations(list(groups)) if groups else {}
        self.relax = []
        for key, members in groups.items():
            if key in stored:
                self.of_stored.append((stored[key], members))
                continue
            first, *rest = sorted(members, key=lambda m: m["composition_id"])
            self.relax.append(first)
            self.followers[first["structure_id"]] = rest
        self.relax.sort(key=lambda m: m["structure_id"])


class _Writer:
    """Collects the identification workers' finished documents (and their twins' copies) and writes them every
    ``write_every`` (all of them with ``force``), counting them in ``counts`` and scoring them with the committee
    first, if any."""

    def __init__(self, store, scorer, counts: dict, write_every: int, progress=None) -> None:
        self.store, self.scorer, self.counts, self.write_every = store, scorer, counts, write_every
        self.progress = progress
        self.pending: list[tuple[Future, list[dict]]] = []

    def add(self, future: Future, twins: list[dict] = ()) -> None:
        self.pending.append((future, list(twins)))
        self.flush()

    def flush(self, force: bool = False) -> None:
        ready = list(self.pending) if force else [p for p in self.pending if p[0].done()]
        if not ready or (not force and len(ready) < self.write_every):
            return
        docs, copies = [], []
        for f, twins in ready:
            doc, flags = f.result()
            docs.append(doc)
            for key, hit in flags.items():
                self.counts[key] += hit
            copies += [(doc, t) for t in twins]
        if self.scorer:
            self.scorer.score(docs)
        self.store.write_relaxations(docs + self._copies(copies))
        for p in ready:
            self.pending.remove(p)

    def copy_stored(self, of_stored: list[tuple[dict, list[dict]]]) -> None:
        """Write the copies of stored relaxations for twins that have one (a committee scores each stored one it
        has not scored yet, once, and the copies take its scores)."""
        if self.scorer:
            unscored = [
                d for d, _ in of_stored if (d.get("uncertainty") or {}).get("committee_sha256") != self.scorer.shas
            ]
            if unscored:
                self.scorer.score(unscored)
                self.store.write_relaxations(unscored)
        copies = self._copies([(doc, t) for doc, twins in of_stored for t in twins])
        if copies:
            self.store.write_relaxations(copies)

    def _copies(self, pairs: list[tuple[dict, dict]]) -> list[dict]:
        self.counts["shared"] += len(pairs)
        if self.progress and pairs:
            self.progress(len(pairs))
        return [twin_copy(doc, t) for doc, t in pairs]


class _CommitteeScorer:
    """Scores relaxation documents with a committee (one batched evaluation per write)."""

    def __init__(self, paths: list[str], device: str | None, dtype: str) -> None:
        from dp_screen.mlip.committee import Committee

        self.committee = Committee.load(paths, device=device, dtype=dtype)
        self.shas = self.committee.shas
        self.n_scored = 0

    def score(self, docs: list[dict]) -> None:
        from dp_screen.mlip.committee import committee_predictions

        live = [d for d in docs if not d.get("failed")]
        preds = committee_predictions([structure_from_dict(d["structure"]) for d in live], self.committee)
        for d, p in zip(live, preds, strict=True):
            summ = p.summary()
            d["energy_spread_mev_atom"] = None if p.failed else summ["energy_spread_mev_atom"]
            d["force_spread_ev_a"] = None if p.failed else summ["force_spread_ev_a"]
            d["uncertainty"] = {**summ, "committee_sha256": self.shas}
        self.n_scored += len(live)

    def score_stored(self, store, relaxation_ids: list[str], chunk_size: int = 4096) -> int:
        """Score the stored relaxations among ``relaxation_ids`` that this committee has not scored yet; return how
        many relaxations it has scored in all."""
        for start in range(0, len(relaxation_ids), chunk_size):
            docs = [
                d
                for d in store.relaxations({"relaxation_id": {"$in": relaxation_ids[start : start + chunk_size]}})
                if (d.get("uncertainty") or {}).get("committee_sha256") != self.shas
            ]
            if docs:
                self.score(docs)
                store.write_relaxations(docs)
        return self.n_scored


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
        Where and how to evaluate the model (dtype None: float32 on CUDA, float64 on the CPU).
    chunk_size
        Structures read from the database and streamed through the device together (the device batch is sized by
        memory, independently of this).
    committee
        Model files of a committee that scores each relaxed structure (see :func:`relax_store`).
    share_twins
        Oxidation-state twins share one relaxation (see :func:`relax_store`).
    """

    name: str = "relax structures"
    model: str | None = None
    settings: RelaxSettings = field(default_factory=RelaxSettings)
    device: str | None = None
    dtype: str | None = None
    chunk_size: int = 4096
    committee: list[str] | None = None
    share_twins: bool = True

    @job
    def make(self, query: dict | None = None, limit: int | None = None, db_settings: dict | None = None) -> dict:
        """Relax the structures matching ``query``; the output is counts (no structures)."""
        db = DPScreenSettings(**db_settings) if db_settings else DPScreenSettings()
        return relax_store(
            self.model,
            self.settings,
            db,
            query=query,
            limit=limit,
            chunk_size=self.chunk_size,
            device=self.device,
            dtype=self.dtype,
            committee=self.committee,
            share_twins=self.share_twins,
        )


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
        model_id=result.sha256,
        sha256=result.sha256,
        name=name,
        version=result.version,
        path=str(result.model_path),
        foundation=settings.foundation,
        errors=result.errors,
        settings=result.settings,
        n_train=n_train,
        provenance=Provenance(model_sha256=result.sha256, settings=result.settings),
    )
    from dp_screen.campaign_store import CampaignStore

    CampaignStore(db).write_model(doc.model_dump())
    return doc.model_dump(mode="json")
