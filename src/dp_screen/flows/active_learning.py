"""The active-learning flow: a held-out set, then per round select -> label -> fine-tune the committee.

Every job calls a resumable stage of :mod:`dp_screen.jobs.active_learning` (what is stored is not done again), so
re-running the flow, or a FireWorks rerun of one Firework, picks up where it stopped. Labelling with ``chgnet`` or
``cp2k`` runs inside the job; with ``vasp`` the labelling job is replaced by one atomate2 static job per structure
(the Materials Project's PBE(+U) input set, see :func:`dp_screen.jobs.dft.vasp_static_maker`) and a job that reads
their TaskDocs through :func:`dp_screen.dft.labels.dft_label` into the loop's labels. Fine-tuning jobs carry the
``gpu`` category for FireWorks workers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from jobflow import Flow, Maker, Response, job

from dp_screen.flows.screening import GPU_CATEGORY
from dp_screen.jobs import active_learning as al
from dp_screen.mlip.active_learning import LoopSettings
from dp_screen.settings import DPScreenSettings

logger = logging.getLogger("dp_screen.active_learning")  # progress of each stage (dp-screen learn shows it)


def _db(db_settings: dict | None) -> DPScreenSettings:
    return DPScreenSettings(**db_settings) if db_settings else DPScreenSettings()


@job
def held_out_job(loop: LoopSettings, rows: list[dict], tilts: list[str] | None, db_settings: dict | None) -> dict:
    """Relax and queue the fixed held-out set (once per loop)."""
    return al.prepare_held_out(loop, rows, _db(db_settings), tilts, progress=logger.info)


@job
def select_job(
    loop: LoopSettings, r: int, rows: list[dict], tilts: list[str] | None, db_settings: dict | None, previous=None
) -> dict:
    """Relax the pool with the current committee and queue the selected structures (``previous``: the round before,
    for the dependency)."""
    rd = al.prepare_round(loop, r, rows, _db(db_settings), tilts, progress=logger.info)
    return {"round": r, "stage": rd["stage"], "n_selected": rd.get("n_selected")}


@job
def label_job(loop: LoopSettings, db_settings: dict | None, selected=None):
    """Label what is pending: in this job (chgnet, cp2k), or replaced by atomate2 VASP static jobs (vasp)."""
    db = _db(db_settings)
    if loop.oracle != "vasp":
        return al.label_pending(loop, db, progress=logger.info)
    from dp_screen.jobs.dft import vasp_static_maker

    pending = al.LoopStore(db).labels(loop.loop_id, status="pending")
    statics = []
    for d in pending:
        j = vasp_static_maker().make(al._structure(d))
        j.name = f"al vasp {d['label_id'].split('|')[-1]}"
        statics.append(j)
    collect = store_vasp_labels(loop, [d["label_id"] for d in pending], [j.output for j in statics], db_settings)
    return Response(replace=Flow([*statics, collect], output=collect.output, name="vasp labels"))


@job
def store_vasp_labels(loop: LoopSettings, label_ids: list[str], task_docs: list, db_settings: dict | None) -> dict:
    """Write atomate2 VASP TaskDocs into the loop's labels (a run that did not converge is recorded as failed)."""
    from dp_screen.dft.labels import dft_label

    store = al.LoopStore(_db(db_settings))
    counts = {"labelled": 0, "failed": 0}
    for label_id, doc in zip(label_ids, task_docs, strict=True):
        try:
            lab = dft_label(doc)
        except Exception as exc:  # noqa: BLE001 - a missing or malformed TaskDoc is a failed label, not a failed loop
            store.update_label(label_id, {"status": "failed", "reason": f"VASP TaskDoc unreadable: {exc}"})
            counts["failed"] += 1
            continue
        if not lab["scf_converged"] or lab.get("stress_gpa") is None:
            store.update_label(
                label_id,
                {
                    "status": "failed",
                    "reason": "VASP: electronic SCF not converged"
                    if not lab["scf_converged"]
                    else "VASP: no stress in the TaskDoc",
                },
            )
            counts["failed"] += 1
            continue
        n = len(lab["forces"])
        store.update_label(
            label_id,
            {
                "status": "labelled",
                "energy": lab["energy"],
                "energy_per_atom": lab["energy"] / n,
                "forces": lab["forces"],
                "stress_gpa": lab["stress_gpa"],
                "method": lab["method"],
                "oracle": {"oracle": "vasp", "method": lab["method"]},
            },
        )
        counts["labelled"] += 1
    return counts


@job
def train_job(loop: LoopSettings, r: int, db_settings: dict | None, labelled=None) -> dict:
    """Fine-tune the committee on every label so far and measure it on the held-out set."""
    rd = al.train_round(loop, r, _db(db_settings), progress=logger.info)
    return {
        "round": r,
        "metrics": rd.get("metrics"),
        "model_sha256": rd.get("model_sha256"),
        "members": [rd["members"][str(k)]["path"] for k in range(loop.committee_size)],
    }


@dataclass
class ActiveLearningFlowMaker(Maker):
    """Active learning with a committee of MACE models and an oracle (chgnet, cp2k, vasp).

    Parameters
    ----------
    name
        Flow name.
    loop
        The loop's settings (its id, oracle, rounds, labels per round, diversity cap, committee size, ...).
    tilts
        Tilt systems of every pool and held-out composition (None: the default set of its ordering).
    """

    name: str = "dp_screen active learning"
    loop: LoopSettings = field(default_factory=LoopSettings)
    tilts: list[str] | None = None

    def make(self, pool: list[dict], held_out: list[dict], db_settings: dict | None = None) -> Flow:
        """``pool``, ``held_out``: composition rows (``jobs.active_learning.pool_rows``). The output is the last
        round's metrics and committee."""
        al.check_disjoint(pool, held_out)
        jobs = []
        held = held_out_job(self.loop, held_out, self.tilts, db_settings)
        held.name = "al held-out set"
        jobs.append(held)
        previous = held.output
        for r in range(1, self.loop.rounds + 1):
            sel = select_job(self.loop, r, pool, self.tilts, db_settings, previous)
            lab = label_job(self.loop, db_settings, sel.output)
            tr = train_job(self.loop, r, db_settings, lab.output)
            sel.name, lab.name, tr.name = f"al round {r} select", f"al round {r} label", f"al round {r} train"
            tr.update_config({"manager_config": {"_category": GPU_CATEGORY}})
            jobs += [sel, lab, tr]
            previous = tr.output
        return Flow(jobs, output=previous, name=self.name)
