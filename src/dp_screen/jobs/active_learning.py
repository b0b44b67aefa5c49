"""The stages of an active-learning round, each resumable from the store (collections ``al_rounds``, ``al_labels``).

A loop (:class:`~dp_screen.mlip.active_learning.LoopSettings`, id ``loop_id``) keeps

- one ``al_labels`` document per structure to label (``label_id`` = loop | split | structure key): its structure,
  where it came from (composition, tilt, relaxed or path frame, round, committee spread) and, once the oracle has
  answered, its energy (eV), forces (eV/A) and stress (GPa), or ``status`` "failed" with the reason;
- one ``al_rounds`` document per round (``round_id`` = loop | round): its stage (selected, labelled, done), what was
  selected and why, each committee member's model file and hash as it is trained, and the held-out metrics.

Every stage first reads what is stored: :func:`prepare_held_out` and :func:`prepare_round` do nothing for what is
already selected, :func:`label_pending` labels only documents still ``pending`` and writes each as the oracle
answers, :func:`train_round` trains only the members not yet stored. So a loop killed anywhere and run again with the
same settings repeats nothing that finished. Model files go to ``<home>/active_learning/<loop_id>/``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pymatgen.core import Structure

from dp_screen import __version__
from dp_screen.campaign_store import CampaignStore
from dp_screen.errors import DPScreenError, InputError
from dp_screen.mlip.active_learning import (
    Candidate,
    LoopSettings,
    Oracle,
    candidates_from_results,
    held_out_metrics,
    make_oracle,
    select_random,
    select_uncertain,
)
from dp_screen.mlip.training import LabelledStructure, train_mace, write_extxyz
from dp_screen.settings import DPScreenSettings

if TYPE_CHECKING:
    from collections.abc import Callable

STAGES = ("selected", "labelled", "done")


def _say(progress, msg: str) -> None:
    if progress:
        progress(msg)


def loop_dir(db: DPScreenSettings, loop_id: str) -> Path:
    return db.home.resolve() / "active_learning" / loop_id


def _start_model(loop: LoopSettings) -> str:
    from dp_screen.mlip.models import default_model_path

    return str(Path(loop.start_model).resolve()) if loop.start_model else str(default_model_path())


def build_items(rows: list[dict], tilts: list[str] | None = None) -> list[tuple[Structure, dict]]:
    """BVM starting structures of every row x tilt system (None: the default set of its ordering)."""
    from dp_screen.structures.perovskite import SiteSpeciesSet, build_bvm_structure
    from dp_screen.structures.tilts import DEFAULT_TILTS

    items = []
    for row in rows:
        ordering = row["expected_ordering"]
        for tilt in tilts or DEFAULT_TILTS[ordering]:
            built = build_bvm_structure(SiteSpeciesSet.from_row(row), ordering, tilt)
            items.append(
                (
                    built.structure,
                    {
                        "composition_id": row["composition_id"],
                        "formula": row["formula"],
                        "tilt": tilt,
                        "ordering": ordering,
                    },
                )
            )
    return items


def pool_rows(n: int, seed: int, exclude: set[str] | None = None, formulas: list[str] | None = None) -> list[dict]:
    """Composition rows for a pool or held-out set: the given formulas, else ``n`` random compositions of the default
    space with a perovskite tau (Bartel et al., Sci. Adv. 5, eaav0693 (2019)) and rock-salt B order."""
    from dp_screen.chemistry.user_compositions import formula_row
    from dp_screen.jobs.enumerate import EnumerationSettings, enumerate_table

    if formulas:
        return [dict(formula_row(f)) for f in formulas]
    _, df = enumerate_table(EnumerationSettings(bv_filter="any"))
    df = df[df["tau_perovskite"].astype(bool) & (df["expected_ordering"] == "rocksalt")]
    df = df[~df["composition_id"].isin(exclude or set())]
    return df.sample(n=min(n, len(df)), random_state=seed).to_dict("records")


# ------------------------------------------------------------------------------------------------------ store
class LoopStore:
    """The active-learning collections of one database."""

    def __init__(self, db: DPScreenSettings) -> None:
        self.store = CampaignStore(db)

    def labels(self, loop_id: str, fields: list[str] | None = None, **equal) -> list[dict]:
        """The loop's label documents whose fields equal ``equal`` (``fields``: only these, e.g. ["key"])."""
        proj = {f: 1 for f in [*fields, "label_id", "round"]} if fields else {}
        docs = self.store._by_keys("al_labels", "loop_id", [loop_id], proj, equal)
        return sorted(docs, key=lambda d: (d.get("round", 0), d["label_id"]))

    def write_labels(self, docs: list[dict]) -> None:
        for d in docs:
            self.store["al_labels"].replace_one({"label_id": d["label_id"]}, d, upsert=True)

    def update_label(self, label_id: str, fields: dict) -> None:
        self.store["al_labels"].update_one({"label_id": label_id}, {"$set": fields})

    def round(self, loop_id: str, r: int) -> dict | None:
        return self.store["al_rounds"].find_one({"round_id": f"{loop_id}|{r}"}, {"_id": 0})

    def rounds(self, loop_id: str) -> list[dict]:
        return sorted(self.store._by_keys("al_rounds", "loop_id", [loop_id], {}), key=lambda d: d["round"])

    def set_round(self, loop_id: str, r: int, fields: dict) -> dict:
        self.store["al_rounds"].update_one(
            {"round_id": f"{loop_id}|{r}"},
            {"$set": fields, "$setOnInsert": {"loop_id": loop_id, "round": r, "created_at": time.time()}},
            upsert=True,
        )
        return self.round(loop_id, r)


def _structure(doc: dict) -> Structure:
    """The structure of a label document, with oxidation states (a DFT oracle reads its Hamiltonian off them;
    labels stored without them get their composition's)."""
    from dp_screen.chemistry.composition_space import composition_assignment
    from dp_screen.structures.roles import with_oxidation_states

    s = Structure.from_dict(doc["structure"])
    return with_oxidation_states(s, composition_assignment(doc.get("composition_id", "")), name=doc.get("label_id"))


def _label_doc(loop: LoopSettings, split: str, r: int, cand: Candidate, extra: dict | None = None) -> dict:
    return {
        "label_id": f"{loop.loop_id}|{split}|{cand.key}",
        "loop_id": loop.loop_id,
        "split": split,
        "round": r,
        "status": "pending",
        "key": cand.key,
        **cand.meta(),
        "structure": cand.structure.as_dict(),
        "n_atoms": len(cand.structure),
        **(extra or {}),
    }


def committee_paths(store: LoopStore, loop: LoopSettings, r: int) -> list[str]:
    """The committee that round ``r`` starts from: the members round r-1 trained, else K copies of the start model."""
    if r > 1:
        prev = store.round(loop.loop_id, r - 1)
        if not prev or prev.get("stage") != "done":
            raise DPScreenError(
                f"loop {loop.loop_id!r}: round {r - 1} is not finished; run the loop again to finish it"
            )
        return [prev["members"][str(k)]["path"] for k in range(loop.committee_size)]
    return [_start_model(loop)] * loop.committee_size


def check_settings(store: LoopStore, loop: LoopSettings) -> None:
    """A stored loop resumes only with the settings it was started with (others would mix two experiments); only
    ``rounds`` may grow, to extend a finished loop."""
    new = {k: v for k, v in json.loads(json.dumps(loop.settings_dict(), default=str)).items() if k != "rounds"}
    for rd in store.rounds(loop.loop_id):
        old = {k: v for k, v in (rd.get("settings") or {}).items() if k != "rounds"} or None
        if old is not None and old != new:
            keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise InputError(
                f"loop {loop.loop_id!r} was started with other settings ({', '.join(keys)} differ: "
                f"{', '.join(f'{k}={old.get(k)!r}' for k in keys)}); resume it with those, or start a "
                f"new loop with another loop id"
            )


# ----------------------------------------------------------------------------------------------------- stages
def prepare_held_out(
    loop: LoopSettings,
    rows: list[dict],
    db: DPScreenSettings,
    tilts: list[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """The fixed held-out set: each row x tilt relaxed once with the start model and queued for the oracle."""
    from dp_screen.mlip.models import load_model
    from dp_screen.mlip.relax import relax_structures

    store = LoopStore(db)
    existing = store.labels(loop.loop_id, split="held_out")
    if existing:
        return {"n": len(existing), "new": 0}
    items = build_items(rows, tilts)
    _say(progress, f"held-out set: relaxing {len(items)} structures with the start model")
    model = load_model(_start_model(loop), device="cpu", dtype=loop.train.dtype)
    results = relax_structures([s for s, _ in items], model, loop.relax)
    docs = []
    for (_, meta), res in zip(items, results, strict=True):
        if res.failed:
            continue
        s = res.structure  # with its oxidation states: a DFT oracle needs them (dft.hamiltonian)
        docs.append(
            _label_doc(
                loop,
                "held_out",
                0,
                Candidate(s, meta["composition_id"], meta["tilt"], "relaxed", res.n_steps),
                {"converged": res.converged},
            )
        )
    store.write_labels(docs)
    return {"n": len(docs), "new": len(docs), "failed_relaxations": sum(r.failed for r in results)}


def prepare_round(
    loop: LoopSettings,
    r: int,
    rows: list[dict],
    db: DPScreenSettings,
    tilts: list[str] | None = None,
    progress: Callable[[str], None] | None = None,
    device: str | None = None,
) -> dict:
    """Relax the pool with the current committee's first member, collect relaxed structures and path frames, select
    ``per_round`` of them (round 1 and ``selection`` "random": at random; else the largest committee spread), at most
    ``per_composition`` per composition, none already labelled, and queue them for the oracle."""
    from dp_screen.mlip.committee import Committee, committee_predictions
    from dp_screen.mlip.models import load_model
    from dp_screen.mlip.relax import relax_structures

    store = LoopStore(db)
    check_settings(store, loop)
    rd = store.round(loop.loop_id, r)
    if rd and rd.get("stage") in STAGES:
        return rd
    queued = store.labels(loop.loop_id, split="train", round=r)
    if queued:  # stopped after queueing, before the round was marked: keep that selection
        return store.set_round(loop.loop_id, r, {"stage": "selected", "n_selected": len(queued)})
    t0 = time.perf_counter()
    paths = committee_paths(store, loop, r)
    items = build_items(rows, tilts)
    _say(progress, f"round {r}: relaxing the pool ({len(items)} structures) with the current model")
    model = load_model(paths[0], device=device, dtype=loop.train.dtype)
    results = relax_structures([s for s, _ in items], model, loop.relax, frames_every=loop.frames_every)
    cands = candidates_from_results(results, [m for _, m in items])
    skip = {d["key"] for d in store.labels(loop.loop_id, fields=["key"])}
    by_spread = r > 1 and loop.selection == "uncertainty"
    spreads = None
    if r > 1:  # the spread is computed for random rounds too, to compare what each selection picks
        _say(progress, f"round {r}: committee of {len(paths)} on {len(cands)} candidates")
        preds = committee_predictions(
            [c.structure for c in cands], Committee.load(paths, device=device, dtype=loop.train.dtype)
        )
        spreads = [p.force_spread_ev_a if loop.score == "force" else p.energy_spread_mev_atom for p in preds]
    if by_spread:
        picked = select_uncertain(cands, spreads, loop.per_round, loop.per_composition, skip)
    else:
        picked = select_random(cands, loop.per_round, loop.per_composition, skip, seed=loop.seed * 1000 + r)
    docs = [
        _label_doc(
            loop,
            "train",
            r,
            cands[i],
            {
                "spread": None if spreads is None else float(spreads[i]),
                "selected_by": "uncertainty" if by_spread else "random",
            },
        )
        for i in picked
    ]
    store.write_labels(docs)
    finite = [s for s in (spreads or []) if np.isfinite(s)]
    return store.set_round(
        loop.loop_id,
        r,
        {
            "stage": "selected",
            "selection": "uncertainty" if by_spread else "random",
            "committee_in": paths,
            "n_pool": len(items),
            "n_candidates": len(cands),
            "n_selected": len(docs),
            "pool_converged": sum(x.converged for x in results),
            "pool_failed": sum(x.failed for x in results),
            "spread_median": float(np.median(finite)) if finite else None,
            "spread_selected_median": float(np.median([d["spread"] for d in docs])) if docs and spreads else None,
            "score": loop.score,
            "settings": json.loads(json.dumps(loop.settings_dict(), default=str)),
            "dp_screen_version": __version__,
            "seconds_prepare": round(time.perf_counter() - t0, 2),
        },
    )


def label_pending(
    loop: LoopSettings,
    db: DPScreenSettings,
    oracle: Oracle | None = None,
    batch: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Label every ``pending`` document of the loop with the oracle, writing each as it is answered (labelled, or
    failed with the oracle's reason). What is labelled is never labelled again, in this loop or another: a structure
    that any loop had labelled by the same oracle with the same settings takes that answer (``reused_from``).
    ``batch``: structures per oracle call (None: 1 for DFT, whose every answer is worth storing at once, 8
    otherwise)."""
    store = LoopStore(db)
    oracle = oracle or make_oracle(loop.oracle)
    batch = batch or (1 if oracle.name == "cp2k" else 8)
    pending = store.labels(loop.loop_id, status="pending")
    counts = {"labelled": 0, "failed": 0, "reused": 0, "pending_before": len(pending)}
    prov = json.loads(json.dumps(oracle.provenance(), default=str))
    known = {
        d["key"]: d
        for d in store.store._by_keys("al_labels", "key", [d["key"] for d in pending], {})
        if d.get("status") == "labelled" and d.get("oracle") == prov
    }
    still = []
    for d in pending:
        if d["key"] in known:
            src = known[d["key"]]
            store.update_label(
                d["label_id"],
                {
                    **{
                        k: src[k]
                        for k in ("status", "energy", "energy_per_atom", "forces", "stress_gpa", "method", "oracle")
                    },
                    "reused_from": src["label_id"],
                    "labelled_at": time.time(),
                },
            )
            counts["reused"] += 1
        else:
            still.append(d)
    if counts["reused"]:
        _say(progress, f"{counts['reused']} structures already labelled by {oracle.name} (another loop): reused")
    pending = still
    t0 = time.perf_counter()
    for start in range(0, len(pending), batch):
        part = pending[start : start + batch]
        answers = oracle.label([_structure(d) for d in part])
        for d, ans in zip(part, answers, strict=True):
            if isinstance(ans, LabelledStructure):
                n = len(ans.structure)
                store.update_label(
                    d["label_id"],
                    {
                        "status": "labelled",
                        "energy": float(ans.energy),
                        "energy_per_atom": float(ans.energy) / n,
                        "forces": np.asarray(ans.forces).tolist(),
                        "stress_gpa": np.asarray(ans.stress_gpa).tolist(),
                        "method": ans.source,
                        "oracle": prov,
                        "labelled_at": time.time(),
                        **ans.meta,
                    },
                )
                counts["labelled"] += 1
            else:
                store.update_label(d["label_id"], {"status": "failed", "reason": str(ans), "oracle": prov})
                counts["failed"] += 1
        _say(
            progress,
            f"labelled {counts['labelled'] + counts['failed']}/{len(pending)} with {oracle.name} "
            f"({counts['failed']} failed, {time.perf_counter() - t0:.0f} s)",
        )
    counts["seconds"] = round(time.perf_counter() - t0, 2)
    return counts


def check_disjoint(pool: list[dict], held_out: list[dict]) -> None:
    """A held-out composition may not be in the pool (its errors would not be held-out errors)."""
    overlap = {r["composition_id"] for r in pool} & {r["composition_id"] for r in held_out}
    if overlap:
        raise InputError(f"held-out compositions are also in the pool: {', '.join(sorted(overlap))}")


def as_labelled(doc: dict) -> LabelledStructure:
    """The labelled structure of a labelled ``al_labels`` document."""
    return LabelledStructure(
        _structure(doc),
        doc["energy"],
        np.asarray(doc["forces"]),
        np.asarray(doc["stress_gpa"]),
        source=doc["composition_id"],
    )


def train_round(
    loop: LoopSettings, r: int, db: DPScreenSettings, progress: Callable[[str], None] | None = None
) -> dict:
    """Fine-tune each committee member on every label of rounds <= r (member k from its own previous round, seed
    seed + k), store each as it finishes, then measure the committee on the held-out set."""
    store = LoopStore(db)
    rd = store.round(loop.loop_id, r)
    if rd is None or rd.get("stage") not in STAGES:
        raise DPScreenError(f"loop {loop.loop_id!r} round {r}: nothing selected yet (prepare_round first)")
    if rd["stage"] == "done":
        return rd
    if store.labels(loop.loop_id, status="pending", round=r):
        raise DPScreenError(f"loop {loop.loop_id!r} round {r}: labels still pending (label_pending first)")
    train = [as_labelled(d) for d in store.labels(loop.loop_id, split="train", status="labelled") if d["round"] <= r]
    if not train:
        raise DPScreenError(f"loop {loop.loop_id!r} round {r}: no labelled training structures (every label failed?)")
    folder = loop_dir(db, loop.loop_id) / f"round{r}"
    data = write_extxyz(train, folder / "train.xyz")
    start = committee_paths(store, loop, r)
    members = dict(rd.get("members") or {})
    t0 = time.perf_counter()
    for k in range(loop.committee_size):
        if str(k) in members:
            continue
        _say(progress, f"round {r}: fine-tuning member {k + 1}/{loop.committee_size} on {len(train)} labels")
        settings = dataclasses.replace(loop.train, foundation=start[k], seed=loop.seed + k)
        res = train_mace(
            data, settings, folder / f"member{k}", name=f"{loop.loop_id}-r{r}-m{k}", models_dir=folder / "models"
        )
        members[str(k)] = {
            "path": str(res.model_path),
            "sha256": res.sha256,
            "foundation": start[k],
            "train_errors": res.errors.get("train"),
            "energy_shifts": res.settings.get("energy_shifts"),
        }
        store.set_round(loop.loop_id, r, {f"members.{k}": members[str(k)]})
    metrics = evaluate_held_out(
        loop,
        db,
        [members[str(k)]["path"] for k in range(loop.committee_size)],
        shifts=members["0"].get("energy_shifts"),
    )
    fields = {
        "stage": "done",
        "metrics": metrics,
        "n_train": len(train),
        "seconds_train": round(time.perf_counter() - t0, 2),
        "model_sha256": [members[str(k)]["sha256"] for k in range(loop.committee_size)],
    }
    if r == 1:
        fields["metrics_start"] = evaluate_held_out(loop, db, [start[0]], shifts=members["0"].get("energy_shifts"))
    return store.set_round(loop.loop_id, r, fields)


def evaluate_held_out(loop: LoopSettings, db: DPScreenSettings, paths: list[str], shifts: dict | None = None) -> dict:
    """Held-out metrics of the committee's mean prediction (one model: of that model), plus its spread there.
    ``shifts``: the per-element energies the members' labels were moved by (``e0s`` "refit"), applied to the
    held-out labels too (phase differences and forces do not depend on them)."""
    from dp_screen.mlip.committee import Committee, committee_predictions
    from dp_screen.mlip.models import load_model
    from dp_screen.mlip.relax import single_points

    docs = LoopStore(db).labels(loop.loop_id, split="held_out", status="labelled")
    if not docs:
        return {"n": 0}
    structures = [_structure(d) for d in docs]
    if len(set(paths)) > 1:
        preds = committee_predictions(structures, Committee.load(paths, device="cpu", dtype=loop.train.dtype))
        ok = [i for i, p in enumerate(preds) if p.failed is None]
        predicted = [{"energy_per_atom": preds[i].energy_per_atom, "forces": preds[i].forces.mean(axis=0)} for i in ok]
        spread = {
            "force_spread_median_ev_a": float(np.median([preds[i].force_spread_ev_a for i in ok])) if ok else None,
            "energy_spread_median_mev_atom": float(np.median([preds[i].energy_spread_mev_atom for i in ok]))
            if ok
            else None,
        }
    else:
        from dp_screen.mlip.relax import uncovered_elements

        model = load_model(paths[0], device="cpu", dtype=loop.train.dtype)
        ok = [i for i, s in enumerate(structures) if not uncovered_elements(s, model)]
        sp = single_points([structures[i] for i in ok], model)
        predicted = [
            {"energy_per_atom": p["energy"] / len(structures[i]), "forces": p["forces"]}
            for i, p in zip(ok, sp, strict=True)
        ]
        spread = {}
    labels = [docs[i] for i in ok]
    if shifts:
        labels = [
            {
                **d,
                "energy_per_atom": d["energy_per_atom"]
                - sum(shifts.get(str(site.specie.Z), 0.0) for site in structures[i]) / len(structures[i]),
            }
            for d, i in zip(labels, ok, strict=True)
        ]
    metrics = held_out_metrics(predicted, labels)
    return {**metrics, **spread, "n_uncovered": len(docs) - len(ok)}


# ------------------------------------------------------------------------------------------------------ a loop
def run_loop(
    loop: LoopSettings,
    pool: list[dict],
    held_out: list[dict],
    db: DPScreenSettings,
    oracle: Oracle | None = None,
    tilts: list[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[dict]:
    """Every round of the loop in this process (an in-process oracle: chgnet or cp2k); resumes where it stopped."""
    if loop.oracle == "vasp" and oracle is None:
        make_oracle("vasp")  # raises: VASP runs through the flow on cluster workers
    check_disjoint(pool, held_out)
    oracle = oracle or make_oracle(loop.oracle)
    prepare_held_out(loop, held_out, db, tilts, progress)
    for r in range(1, loop.rounds + 1):
        prepare_round(loop, r, pool, db, tilts, progress)
        label_pending(loop, db, oracle, progress=progress)
        train_round(loop, r, db, progress)
    return LoopStore(db).rounds(loop.loop_id)
