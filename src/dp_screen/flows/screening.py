"""The screening campaign as a jobflow Flow: select compositions -> build -> relax -> validate -> summary.

Build and relax fan out dynamically into chunk jobs (``chunk_size`` compositions each: a few hundred jobs for the
full space, never one per structure); relax chunks carry the FireWorks category "gpu". Each chunk job writes its
documents to the collections and returns counts only. Every step is resumable (keyed by composition, variant,
settings and model hash), so running the same campaign again repeats nothing that is stored.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

from jobflow import Flow, Maker, Response, job

from dp_screen.campaign_store import CampaignStore
from dp_screen.jobs.build import BuildMaker
from dp_screen.jobs.enumerate import EnumerationSettings, enumerate_table
from dp_screen.jobs.relax import RelaxMaker
from dp_screen.jobs.report import ReportMaker
from dp_screen.jobs.validate import ValidateMaker
from dp_screen.schemas.common import Provenance
from dp_screen.schemas.composition import CompositionDoc
from dp_screen.settings import DPScreenSettings

GPU_CATEGORY = "gpu"


def _db(db_settings: dict | None) -> DPScreenSettings:
    return DPScreenSettings(**db_settings) if db_settings else DPScreenSettings()


@job
def select_compositions(
    campaign: str, limit: int | None, seed: int, enumeration: EnumerationSettings, db_settings: dict | None = None
) -> dict:
    """Enumerate, pick ``limit`` random compositions (all when None), store them tagged with the campaign.

    Returns the campaign's composition ids in chunks' order (sorted) and counts.
    """
    db = _db(db_settings)
    table, df = enumerate_table(enumeration)
    ids = sorted(df["composition_id"])
    if limit is not None and limit < len(ids):
        ids = sorted(random.Random(seed).sample(ids, limit))
    chosen = df.set_index("composition_id").loc[ids].reset_index()
    provenance = Provenance(site_table=table.name, site_table_sha256=table.sha256, settings=enumeration.settings_dict())
    store = CampaignStore(db)
    stored = store.stored_compositions(ids, table.sha256)
    new = chosen[~chosen["composition_id"].isin(stored)]
    for start in range(0, len(new), 5000):
        store.write_compositions(CompositionDoc.from_table(new.iloc[start : start + 5000], provenance))
    store.tag_campaign(ids, campaign)
    return {"campaign": campaign, "composition_ids": ids, "n": len(ids), "written": len(new)}


def _chunks(ids: list[str], chunk_size: int) -> list[list[str]]:
    """Chunks of about ``chunk_size`` ids that never split a chemistry: oxidation-state twins are relaxed in one
    job, which relaxes one start for all of them (:mod:`dp_screen.jobs.relax`)."""
    from dp_screen.chemistry.composition_space import chemistry_id

    keyed = sorted((chemistry_id(c), c) for c in ids)
    chunks: list[list[str]] = []
    last = None
    for chem, cid in keyed:
        if not chunks or (len(chunks[-1]) >= chunk_size and chem != last):
            chunks.append([])
        chunks[-1].append(cid)
        last = chem
    return chunks


@job
def build_chunks(selection: dict, chunk_size: int, maker: BuildMaker, db_settings: dict | None = None) -> Response:
    """Fan out: one build job per chunk of compositions."""
    jobs = []
    for n, chunk in enumerate(_chunks(selection["composition_ids"], chunk_size)):
        j = maker.make(query={"composition_id": {"$in": chunk}}, db_settings=db_settings)
        j.name = f"build chunk {n}"
        jobs.append(j)
    return Response(replace=Flow(jobs, output=[j.output for j in jobs], name="build chunks"))


@job
def relax_chunks(
    selection: dict,
    built: list,
    chunk_size: int,
    maker: RelaxMaker,
    model: str | None = None,
    db_settings: dict | None = None,
) -> Response:
    """Fan out: one relaxation job per chunk of compositions (all their built structures), on GPU workers.

    ``model`` (a file, possibly the training flow's output) overrides the maker's model.
    """
    if model is not None:
        maker = replace(maker, model=model)
    jobs = []
    for n, chunk in enumerate(_chunks(selection["composition_ids"], chunk_size)):
        j = maker.make(query={"composition_id": {"$in": chunk}}, db_settings=db_settings)
        j.name = f"relax chunk {n}"
        j.update_config({"manager_config": {"_category": GPU_CATEGORY}})
        jobs.append(j)
    return Response(replace=Flow(jobs, output=[j.output for j in jobs], name="relax chunks"))


def _model_accuracy(db, model_sha256: str) -> list[str]:
    from dp_screen.mlip.models import accuracy_summary

    doc = CampaignStore(db).model(model_sha256)
    return accuracy_summary(model_sha256, (doc or {}).get("errors"))


@job
def summarize_campaign(
    selection: dict,
    relaxed: list,
    validation: dict | None,
    db_settings: dict | None = None,
    phase_error_mev: float | None = None,
) -> dict:
    """Phase counts of the campaign's compositions; its phase table (one row per composition: the call, the lowest
    phase, dE, exclusions) goes to the store (``CampaignStore.campaign_table(output["table_id"])``), so the output
    stays a few kB whatever the campaign's size.

    Each composition's call is made again from its stored summary (:func:`dp_screen.structures.phases.recall`),
    with ``phase_error_mev`` as sigma where given, else the sigma it was summarised with."""
    from dp_screen.jobs.relax import summary_key
    from dp_screen.mlip.uncertainty import NO_ERROR, user_phase_error
    from dp_screen.structures.phases import recall

    db = _db(db_settings)
    ids = selection["composition_ids"]
    model = relaxed[0]["model"]["model_sha256"][:12] if relaxed else None
    key = summary_key(relaxed[0]["model"]["model_sha256"], relaxed[0]["settings_hash"]) if relaxed else None
    override = user_phase_error(phase_error_mev) if phase_error_mev is not None else None
    rows = []
    for d in CampaignStore(db).phase_summaries(ids, key, ["composition_id", "formula", "X", "tau_perovskite"]):
        phase = (d.get("phases") or {}).get(key) or {}
        ground = phase.get("ground_state") or {}
        call = recall((phase.get("orderings") or {}).get(ground.get("ordering"), {}), override or NO_ERROR)
        rows.append(
            {
                "composition_id": d["composition_id"],
                "formula": d["formula"],
                "X": d["X"],
                "tau_perovskite": d["tau_perovskite"],
                "lowest": phase.get("lowest"),
                "ground_state": call["ground_state_phase"],
                "call": call["call"],
                "phases_within_error": call["phases_within_error"],
                "phase_error_mev": call["phase_error_mev"],
                "phase_error_source": call["phase_error_source"],
                "dE_tilt_mev_atom": call["dE_tilt_mev_atom"],
                "dE_untilted_mev_atom": phase.get("dE_untilted_mev_atom"),
                "ground_state_tilted": call["ground_state_tilted"],
                "ordering": ground.get("ordering"),
                "excluded": phase.get("excluded") or {},
                "n_variants": phase.get("n_variants", 0),
            }
        )
    calls = {c: sum(1 for r in rows if r["call"] == c) for c in ("tilted", "untilted", "undetermined")}
    by_phase: dict[str, int] = {}
    for r in rows:
        label = str(r["ground_state"]) if r["call"] != "undetermined" else "undetermined"
        by_phase[label] = by_phase.get(label, 0) + 1
    des = [r["dE_untilted_mev_atom"] for r in rows if r["dE_untilted_mev_atom"] is not None]
    sigmas = sorted(
        {(r["phase_error_mev"], r["phase_error_source"]) for r in rows if r["call"] is not None},
        key=lambda x: (x[0] is None, x[0] or 0),
    )
    determined = calls["tilted"] + calls["untilted"]
    # the table goes to the store (a job's output must not grow with the campaign: 10^5 rows would pass 16 MB)
    table_id = f"{selection['campaign']}|{key}"
    CampaignStore(db).write_campaign_table(table_id, sorted(rows, key=lambda r: r["composition_id"]))
    return {
        "campaign": selection["campaign"],
        "compositions": len(ids),
        "model_sha256_12": model,
        "model_accuracy": _model_accuracy(db, relaxed[0]["model"]["model_sha256"]) if relaxed else [],
        "relaxations": sum(r["relaxed"] for r in relaxed),
        "converged": sum(r["converged"] for r in relaxed),
        "failed": sum(r["failed"] for r in relaxed),
        "lowest_phase_counts": by_phase,
        "calls": calls,
        "phase_errors": [{"phase_error_mev": s, "source": src} for s, src in sigmas],
        "excluded": {
            why: sum(r["excluded"].get(why, 0) for r in rows)
            for why in sorted({w for r in rows for w in r["excluded"]})
        },
        "settings_hash": relaxed[0]["settings_hash"] if relaxed else None,
        # tilted calls among the determined ones; the undetermined are counted apart ("calls")
        "tilted_ground_state_fraction": calls["tilted"] / determined if determined else None,
        "mean_dE_untilted_mev_atom": sum(des) / len(des) if des else None,
        "table_id": table_id,
        "table_rows": len(rows),
        "validation": validation,
    }


@dataclass
class ScreeningFlowMaker(Maker):
    """The screening campaign: select -> build (fan-out) -> relax (fan-out, GPU) -> validate -> summary.

    Parameters
    ----------
    name
        Flow name.
    campaign
        Tag put on the campaign's compositions.
    limit
        Number of random compositions (None: the whole space of the enumeration settings).
    seed
        Seed of the random selection (the same seed picks the same compositions: re-runs resume).
    chunk_size
        Compositions per build / relax job.
    enumeration, build, relax
        Settings / Makers of the steps.
    validate
        A ValidateMaker (DFT single points on a sample), or None to skip validation.
    report
        A ReportMaker (HTML report of the store after the summary), or None.
    phase_error_mev
        sigma (meV/atom) of the summary's calls instead of the model's measured one (None: the model's).
    """

    name: str = "dp_screen screening"
    campaign: str = "default"
    limit: int | None = None
    seed: int = 0
    chunk_size: int = 500
    enumeration: EnumerationSettings = field(default_factory=EnumerationSettings)
    build: BuildMaker = field(default_factory=BuildMaker)
    relax: RelaxMaker = field(default_factory=RelaxMaker)
    validate: ValidateMaker | None = None
    report: ReportMaker | None = None
    phase_error_mev: float | None = None

    def make(self, db_settings: dict | None = None, model: str | None = None) -> Flow:
        """The campaign flow. ``model``: a model file (or a reference to one, e.g. the training flow's output)."""
        select = select_compositions(self.campaign, self.limit, self.seed, self.enumeration, db_settings)
        select.name = "select compositions"
        built = build_chunks(select.output, self.chunk_size, self.build, db_settings)
        built.name = "build (fan-out)"
        relaxed = relax_chunks(select.output, built.output, self.chunk_size, self.relax, model, db_settings)
        relaxed.name = "relax (fan-out)"
        jobs = [select, built, relaxed]
        validation = None
        if self.validate is not None:
            val = self.validate.make(select.output, relaxed.output, db_settings)
            jobs.append(val)
            validation = val.output
        summary = summarize_campaign(select.output, relaxed.output, validation, db_settings, self.phase_error_mev)
        summary.name = "summary"
        jobs.append(summary)
        if self.report is not None:
            # the summary's model (a 12-character prefix) picks the same relaxations; it also orders the jobs
            jobs.append(self.report.make(summary.output["model_sha256_12"], db_settings))
        return Flow(jobs, output=summary.output, name=self.name)
