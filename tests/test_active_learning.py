"""Active learning: committee spread, selection, oracles, and a real two-round loop with the CHGNet oracle.

The loop runs real MACE fine-tunes (mace_run_train) of a tiny random-weight start model, real CHGNet labels and
the embedded SecantusDB server. It is first stopped in the middle of labelling (an oracle that raises after its
first batch, standing in for a killed process) and then resumed with ``dp-screen learn``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TINY_ELEMENTS, make_tiny_mace, run_cli
from pymatgen.core import Structure

from dp_screen.cli import cli
from dp_screen.errors import InputError
from dp_screen.jobs import active_learning as al
from dp_screen.mlip.active_learning import (
    Candidate,
    ChgnetOracle,
    LoopSettings,
    held_out_metrics,
    select_random,
    select_uncertain,
    structure_key,
)
from dp_screen.mlip.committee import Committee, committee_predictions
from dp_screen.mlip.models import load_model
from dp_screen.mlip.relax import RelaxSettings
from dp_screen.mlip.training import TrainSettings
from dp_screen.settings import DPScreenSettings

pytest.importorskip("chgnet")

POOL = ["Ba2CaMoO6", "Sr2CaMoO6", "Cs2AgBiCl6", "Cs2NaBiCl6"]
HELD_OUT = ["Ba2CoMoO6", "Cs2NaAlF6"]  # F is in no pool composition: the committee must keep the start's elements
TILTS = ["a0a0a0", "a0a0c-"]


def _cand(cid: str, shift: float) -> Candidate:
    s = Structure([[4, 0, 0], [0, 4, 0], [0, 0, 4]], ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5 + shift]])
    return Candidate(s, cid, "a0a0a0", "path")


def test_selection_takes_the_largest_spreads_under_the_cap_and_skips_labelled():
    cands = [_cand("A", 0.01 * i) for i in range(5)] + [_cand("B", 0.2 + 0.01 * i) for i in range(3)]
    spreads = [0.9, 0.8, 0.7, 0.6, float("nan"), 0.1, 0.5, 0.05]
    picked = select_uncertain(cands, spreads, n=4, per_composition=2, skip={cands[0].key})
    assert picked == [1, 2, 6, 5]  # A capped at 2 (0 already labelled, 4 is NaN), then B by spread
    rnd = select_random(cands, n=10, per_composition=2, seed=3)
    assert len(rnd) == 4 and sum(cands[i].composition_id == "A" for i in rnd) == 2
    assert structure_key(cands[1].structure) != structure_key(cands[2].structure)
    with pytest.raises(InputError, match="per_composition"):
        select_uncertain(cands, spreads, n=2, per_composition=0)


def test_held_out_metrics_match_a_hand_computation():
    labels = [
        {"composition_id": "X", "tilt": t, "energy_per_atom": e, "forces": np.zeros((2, 3))}
        for t, e in (("a0a0a0", -5.000), ("a0a0c-", -5.010), ("a-a-a-", -4.990))
    ]
    preds = [{"energy_per_atom": e, "forces": np.full((2, 3), 0.1)} for e in (-5.100, -5.104, -5.105)]
    m = held_out_metrics(preds, labels)
    # differences: model -4, -5 meV/atom; oracle -10, +10 -> errors 6, 15
    assert m["phase_de_mae_mev_atom"] == pytest.approx(10.5)
    assert m["lowest_phase_agreement"] == 0.0  # model: a-a-a-, oracle: a0a0c-
    assert m["energy_mae_mev_atom"] == pytest.approx((100 + 94 + 115) / 3)
    assert m["forces_mae_ev_a"] == pytest.approx(0.1)


def test_loop_settings_refuse_bad_values():
    with pytest.raises(InputError, match="unknown oracle 'gpaw'"):
        LoopSettings(oracle="gpaw")
    with pytest.raises(InputError, match="committee_size 1"):
        LoopSettings(committee_size=1)


class StopAfter(ChgnetOracle):
    """CHGNet that fails one chosen structure (as an SCF failure would) and raises after ``calls`` batches
    (standing in for a killed process)."""

    def __init__(self, calls: int, fail_first: bool = True) -> None:
        super().__init__()
        self.calls, self.fail_first, self.seen = calls, fail_first, []

    def label(self, structures):
        if self.calls == 0:
            raise KeyboardInterrupt("killed")
        self.calls -= 1
        out = super().label(structures)
        if self.fail_first:
            out[0], self.fail_first = "SCF not converged (test oracle)", False
        self.seen += [structure_key(s) for s in structures]
        return out


@pytest.fixture(scope="module")
def loop_run(tmp_path_factory, db_server):
    home = tmp_path_factory.mktemp("al")
    start = make_tiny_mace(home / "start.model", TINY_ELEMENTS, seed=0, scale=1.0, e0=-5.5)
    db = DPScreenSettings(db_uri=db_server["uri"], database="t_active_learning_loop", home=home)
    loop = LoopSettings(
        loop_id="t",
        rounds=2,
        per_round=6,
        per_composition=2,
        committee_size=3,
        start_model=str(start),
        frames_every=10,
        relax=RelaxSettings(max_steps=30),
        train=TrainSettings(epochs=12, lr=0.01, batch_size=4, dtype="float64", stress_weight=10.0),
    )
    pool = al.pool_rows(0, 0, formulas=POOL)
    held = al.pool_rows(0, 0, formulas=HELD_OUT)
    killer = StopAfter(calls=1)
    with pytest.raises(KeyboardInterrupt):
        al.run_loop(loop, pool, held, db, oracle=killer, tilts=TILTS)
    first = {d["label_id"]: d for d in al.LoopStore(db).labels("t") if d["status"] != "pending"}
    args = [
        "--db-uri",
        db_server["uri"],
        "--home",
        str(home),
        "learn",
        "--loop",
        "t",
        "--rounds",
        "2",
        "--per-round",
        "6",
        "--cap",
        "2",
        "--committee",
        "3",
        "--formulas",
        ",".join(POOL),
        "--held-out-formulas",
        ",".join(HELD_OUT),
        "--tilts",
        ",".join(TILTS),
        "--start-model",
        str(start),
        "--epochs",
        "12",
        "--lr",
        "0.01",
        "--max-steps",
        "30",
        "--frames-every",
        "10",
        "--json",
    ]
    runner = CliRunner()
    env = {"DP_SCREEN_DATABASE": db.database}
    other = runner.invoke(cli, [*args[:-1], "--cap", "3", "--json"], env=env)  # a resume with other settings
    resumed = runner.invoke(cli, args, env=env)  # the same settings: the CLI builds the same LoopSettings
    yield {
        "home": home,
        "db": db,
        "loop": loop,
        "start": start,
        "first": first,
        "killer": killer,
        "other": other,
        "resumed": resumed,
    }
    import pymongo

    pymongo.MongoClient(db_server["uri"]).drop_database(db.database)


def test_a_killed_loop_resumes_with_dp_screen_learn_without_relabelling(loop_run):
    db, first = loop_run["db"], loop_run["first"]
    assert 0 < len(first) == 8  # one batch was answered before the kill
    assert all(d["round"] in (0, 1) for d in first.values())
    other = loop_run["other"]  # resuming with other settings is refused, naming what differs
    assert other.exit_code != 0 and "per_composition" in other.output
    resumed = loop_run["resumed"]
    assert resumed.exit_code == 0, resumed.output
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])
    store = al.LoopStore(db)
    after = {d["label_id"]: d for d in store.labels("t")}
    for lid, d in first.items():  # what was answered before the kill is untouched
        assert after[lid]["status"] == d["status"] and after[lid].get("labelled_at") == d.get("labelled_at")
    failed = [d for d in after.values() if d["status"] == "failed"]
    assert len(failed) == 1 and "SCF not converged" in failed[0]["reason"]  # recorded, and the loop went on
    assert not [d for d in after.values() if d["status"] == "pending"]
    rounds = store.rounds("t")
    assert [r["stage"] for r in rounds] == ["done", "done"]
    assert [r["selection"] for r in rounds] == ["random", "uncertainty"]
    # diversity cap: at most 2 labels per composition per round
    for r in (1, 2):
        per = {}
        for d in after.values():
            if d["split"] == "train" and d["round"] == r:
                per[d["composition_id"]] = per.get(d["composition_id"], 0) + 1
        assert per and max(per.values()) <= 2
    # provenance: member hashes stored, files exist, held-out includes F (absent from the pool) and is covered
    for r in rounds:
        assert len(r["model_sha256"]) == 3 and len(set(r["model_sha256"])) == 3
        assert all(Path(m["path"]).exists() for m in r["members"].values())
        member = load_model(r["members"]["0"]["path"], device="cpu")  # every element of the start model is kept
        assert sorted(int(z) for z in member.model.atomic_numbers) == sorted(TINY_ELEMENTS)
        n_held = len([d for d in after.values() if d["split"] == "held_out" and d["status"] == "labelled"])
        assert r["metrics"]["n_uncovered"] == 0 and r["metrics"]["n"] == n_held == 2 * len(TILTS) - 1
    # the held-out error falls round by round
    e = [rounds[0]["metrics_start"]["energy_mae_mev_atom"], *[r["metrics"]["energy_mae_mev_atom"] for r in rounds]]
    f = [rounds[0]["metrics_start"]["forces_mae_ev_a"], *[r["metrics"]["forces_mae_ev_a"] for r in rounds]]
    assert e[0] > e[1] > e[2] and f[0] > f[2]
    assert summary["rounds"][-1]["energy_mae_mev_atom"] == pytest.approx(e[2])
    # the report shows the rounds (start, 1, 2) with their held-out errors
    from dp_screen.analysis.data import active_learning_rounds
    from dp_screen.analysis.report import write_report

    table = active_learning_rounds(db)
    assert list(table["round"]) == [0, 1, 2] and table["energy_mae_mev_atom"].tolist() == pytest.approx(e)
    rep = write_report(loop_run["home"] / "report", db)
    assert "active_learning" in rep.figures and "active_learning" in rep.tables


def test_committee_spread_is_zero_for_identical_members_and_grows_off_distribution(loop_run, tmp_path):
    store = al.LoopStore(loop_run["db"])
    rd = store.round("t", 2)
    assert rd is not None and rd["stage"] == "done", "runs after the loop test"
    paths = [rd["members"][str(k)]["path"] for k in range(3)]
    labelled = [Structure.from_dict(d["structure"]) for d in store.labels("t", split="train", status="labelled")]
    same = committee_predictions(labelled[:3], Committee.load([paths[0], paths[0], paths[0]], device="cpu"))
    assert all(p.energy_spread_mev_atom == 0 and p.force_spread_ev_a == 0 for p in same)
    rng = np.random.default_rng(0)
    pushed = []
    for s in labelled[:6]:
        t = s.copy()
        t.scale_lattice(t.volume * 0.8)
        pushed.append(
            Structure(t.lattice, t.species, t.cart_coords + rng.normal(0, 0.25, (len(t), 3)), coords_are_cartesian=True)
        )
    committee = Committee.load(paths, device="cpu")
    near = np.median([p.force_spread_ev_a for p in committee_predictions(labelled[:6], committee)])
    far = np.median([p.force_spread_ev_a for p in committee_predictions(pushed, committee)])
    assert far > 2 * near > 0


def test_vasp_oracle_queues_atomate2_statics_and_reads_their_taskdocs(db_settings):
    """VASP cannot run here: the label job's replacement is inspected, and the TaskDoc that emmet builds from the
    VASP outputs in tests/data/vasp_static (a real vasprun.xml) is read into a label."""
    from emmet.core.tasks import TaskDoc
    from jobflow import Response

    from dp_screen.flows.active_learning import ActiveLearningFlowMaker, label_job, store_vasp_labels

    db = db_settings
    loop = LoopSettings(loop_id="v", oracle="vasp", rounds=1, committee_size=2)
    store = al.LoopStore(db)
    s = Structure.from_file(Path(__file__).parent / "data" / "vasp_static" / "CONTCAR")
    store.write_labels([al._label_doc(loop, "train", 1, Candidate(s, "c", "a0a0a0", "relaxed"))])
    flow = ActiveLearningFlowMaker(loop=loop).make([], [], db.model_dump(mode="json"))
    assert [j.name for j in flow.jobs] == [
        "al held-out set",
        "al round 1 select",
        "al round 1 label",
        "al round 1 train",
    ]
    assert flow.jobs[-1].config.manager_config == {"_category": "gpu"}
    resp = label_job.original(loop, db.model_dump(mode="json"))
    assert isinstance(resp, Response)
    names = [j.name for j in resp.replace.jobs]
    assert len(names) == 2 and names[0].startswith("al vasp") and names[1] == "store_vasp_labels"
    task = TaskDoc.from_directory(Path(__file__).parent / "data" / "vasp_static")
    (lid,) = [d["label_id"] for d in store.labels("v")]
    out = store_vasp_labels.original(loop, [lid], [task.model_dump()], db.model_dump(mode="json"))
    doc = store.labels("v")[0]
    assert out == {"labelled": 1, "failed": 0} and doc["status"] == "labelled"
    assert doc["method"].startswith("vasp-pbe") and np.abs(doc["stress_gpa"]).max() > 10  # 166 kbar = 16.6 GPa


def test_vasp_oracle_in_process_is_refused_with_the_way_out(capsys):
    code, _, err = run_cli(
        ["learn", "--oracle", "vasp", "--formulas", "Ba2CaMoO6", "--held-out-formulas", "Ba2CoMoO6"], capsys
    )
    assert code != 0 and "--submit" in err


def test_learn_submit_puts_the_loop_on_the_launchpad(db_settings, capsys, monkeypatch, tmp_path):
    """With --submit (here with the vasp oracle, which only cluster workers can run) the loop becomes a FireWorks
    workflow: held-out set, then select, label, train per round, the training Fireworks in the gpu category."""
    from fireworks import LaunchPad

    monkeypatch.setenv("DP_SCREEN_DATABASE", db_settings.database)
    home = tmp_path / "proj"
    code, out, err = run_cli(
        [
            "--db-uri",
            db_settings.db_uri,
            "--home",
            str(home),
            "learn",
            "--submit",
            "--oracle",
            "vasp",
            "--formulas",
            "Ba2CaMoO6",
            "--held-out-formulas",
            "Cs2AgBiCl6",
            "--rounds",
            "2",
        ],
        capsys,
    )
    assert code == 0, err
    assert "submitted active-learning loop 'default' (7 fireworks)" in out and "rlaunch -l" in out
    lpad = LaunchPad(host=db_settings.db_uri, uri_mode=True, name=f"{db_settings.database}_fw")
    fws = {fw["name"]: fw for fw in lpad.fireworks.find({}, {"name": 1, "spec._category": 1})}
    assert set(fws) == {"al held-out set", *(f"al round {r} {s}" for r in (1, 2) for s in ("select", "label", "train"))}
    assert fws["al round 2 train"]["spec"].get("_category") == "gpu"


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--tilts", "a0a0z-"], "a0a0z-"),
        (["--start-model", "/nonexistent.model"], "/nonexistent.model"),
        (["--held-out-formulas", "Ba2CaMoO6"], "also in the pool"),
    ],
)
def test_learn_refuses_bad_input_before_any_work(extra, named, capsys, tmp_path):
    args = ["--home", str(tmp_path), "learn", "--formulas", "Ba2CaMoO6"]
    if "--held-out-formulas" not in extra:
        args += ["--held-out-formulas", "Cs2AgBiCl6"]
    code, _, err = run_cli([*args, *extra], capsys)
    assert code != 0 and named in err
