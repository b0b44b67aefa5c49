"""The campaign: fan-out, run_locally, FireWorks with two worker processes, a killed worker, DFT backends."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pymongo
import pytest
from jobflow import Flow, Job, run_locally

from dp_screen.dft.cp2k import CP2KSettings, cp2k_executable
from dp_screen.flows.screening import ScreeningFlowMaker
from dp_screen.jobs.build import BuildMaker, BuildSettings, build_structures_to_store
from dp_screen.jobs.dft import DFTStaticMaker, write_vasp_inputs
from dp_screen.jobs.enumerate import EnumerationSettings, write_compositions
from dp_screen.jobs.relax import RelaxMaker, relax_store
from dp_screen.jobs.validate import stratified_sample, validate_sample
from dp_screen.mlip.relax import RelaxSettings
from dp_screen.stores import get_job_store, open_store
from dp_screen.structures.perovskite import SiteSpeciesSet, build_bvm_structure

TABLE = "site,element,oxidation_state\nA,Cs,1\nA,Ba,2\nB,Ag,1\nB,Bi,3\nB,Ca,2\nB,Mo,6\nX,Cl,-1\nX,O,-2\n"
BIN = Path(sys.executable).parent


@pytest.fixture
def table(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(TABLE)
    return str(path)


def screening(table, tiny_model_path, limit=4, chunk_size=2, **kw):
    return ScreeningFlowMaker(
        campaign="test",
        limit=limit,
        seed=1,
        chunk_size=chunk_size,
        enumeration=EnumerationSettings(table=table),
        build=BuildMaker(settings=BuildSettings(tilts=["a0a0a0", "a0a0c-"])),
        relax=RelaxMaker(model=str(tiny_model_path), settings=RelaxSettings(max_steps=40), device="cpu"),
        **kw,
    )


def test_fan_out_and_run_locally_and_resume(db_settings, table, tiny_model_path):
    flow = screening(table, tiny_model_path, limit=5, chunk_size=2).make(db_settings.model_dump(mode="json"))
    store = get_job_store(db_settings)
    responses = run_locally(flow, store=store, create_folders=False, ensure_success=True)
    store.connect()
    names = [d["name"] for d in store.docs_store._collection.find({}, {"name": 1})]
    assert sum(n.startswith("build chunk") for n in names) == 3  # 5 compositions in chunks of 2
    assert sum(n.startswith("relax chunk") for n in names) == 3
    summary = next(
        r[1].output
        for r in responses.values()
        if 1 in r and isinstance(r[1].output, dict) and "lowest_phase_counts" in r[1].output
    )
    assert summary["compositions"] == 5 and summary["relaxations"] == 10
    from dp_screen.campaign_store import CampaignStore

    stored = CampaignStore(db_settings).campaign_table(summary["table_id"])  # the job's output carries counts only
    assert len(stored) == 5 == summary["table_rows"] and "table" not in summary
    with open_store("relaxations", db_settings) as relax:  # the lowest ranked relaxation, read back from the store
        docs = list(
            relax._collection.find({"excluded": None}, {"composition_id": 1, "energy_per_atom": 1, "phase_tilt": 1})
        )
    for r in stored:
        mine = [d for d in docs if d["composition_id"] == r["composition_id"]]
        assert r["lowest"] == (min(mine, key=lambda d: d["energy_per_atom"])["phase_tilt"] if mine else None)
    # the same campaign again: nothing is rebuilt or relaxed twice
    again = run_locally(
        screening(table, tiny_model_path, limit=5).make(db_settings.model_dump(mode="json")),
        store=store,
        create_folders=False,
        ensure_success=True,
    )
    counts = [
        r[1].output for r in again.values() if 1 in r and isinstance(r[1].output, dict) and "relaxed" in r[1].output
    ]
    assert counts and all(c["relaxed"] == 0 for c in counts)
    with open_store("relaxations", db_settings) as relax:
        assert relax.count() == 10


def test_fireworks_two_workers(db_settings, table, tiny_model_path, tmp_path):
    from fireworks import LaunchPad
    from jobflow.managers.fireworks import flow_to_workflow

    lpad = LaunchPad(host=db_settings.db_uri, uri_mode=True, name=f"{db_settings.database}_fw")
    lpad.reset("", require_password=False)
    flow = screening(table, tiny_model_path, limit=4, chunk_size=2).make(db_settings.model_dump(mode="json"))
    lpad.add_wf(flow_to_workflow(flow, store=get_job_store(db_settings)))
    (tmp_path / "lp.yaml").write_text(
        f"host: {db_settings.db_uri}/{db_settings.database}_fw\nuri_mode: true\nname: {db_settings.database}_fw\n"
    )
    (tmp_path / "cpu.yaml").write_text("name: cpu\ncategory: __none__\nquery: '{}'\n")
    (tmp_path / "gpu.yaml").write_text("name: gpu-like\ncategory: gpu\nquery: '{}'\n")
    workers = []
    for n, fworker in enumerate(("cpu.yaml", "gpu.yaml")):
        folder = tmp_path / f"w{n}"
        folder.mkdir()
        workers.append(
            subprocess.Popen(
                [
                    str(BIN / "rlaunch"),
                    "-l",
                    str(tmp_path / "lp.yaml"),
                    "-w",
                    str(tmp_path / fworker),
                    "rapidfire",
                    "--nlaunches",
                    "infinite",
                    "--sleep",
                    "1",
                ],
                cwd=folder,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=dict(os.environ, OMP_NUM_THREADS="1"),
            )
        )
    try:
        deadline = time.time() + 400
        while time.time() < deadline:
            states = {fw["state"] for fw in lpad.fireworks.find({}, {"state": 1})}
            if states and states <= {"COMPLETED"} or "FIZZLED" in states:
                break
            time.sleep(2)
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(30)
    fws = list(lpad.fireworks.find({}, {"state": 1, "name": 1, "spec._category": 1}))
    assert {fw["state"] for fw in fws} == {"COMPLETED"}, [(f["name"], f["state"]) for f in fws]
    relax_fws = [fw for fw in fws if fw["name"].startswith("relax chunk")]
    assert len(relax_fws) == 2 and all(fw["spec"].get("_category") == "gpu" for fw in relax_fws)
    hosts = {lpad.launches.find_one({"fw_id": fw["fw_id"]})["fworker"]["name"] for fw in lpad.fireworks.find({})}
    assert hosts == {"cpu", "gpu-like"}  # both workers did work
    with open_store("relaxations", db_settings) as relax:
        ids = [d["structure_id"] for d in relax._collection.find({}, {"structure_id": 1})]
    assert len(ids) == len(set(ids)) == 8  # every result stored once


def test_killed_worker_loses_only_its_chunk(db_settings, table, tiny_model_path):
    write_compositions(EnumerationSettings(table=table), db_settings)
    build_structures_to_store(BuildSettings(tilts=["a0a0a0", "a0a0c-"]), db_settings)
    with open_store("structures", db_settings) as s:
        total = s._collection.count_documents({"status": "built"})
    env = dict(os.environ, DP_SCREEN_DATABASE=db_settings.database, OMP_NUM_THREADS="1")
    cmd = [
        str(BIN / "dp-screen"),
        "--db-uri",
        db_settings.db_uri,
        "relax",
        "--model",
        str(tiny_model_path),
        "--device",
        "cpu",
        "--fmax",
        "0.0005",
        "--max-steps",
        "150",
        "--chunk-size",
        "2",
    ]
    worker = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = pymongo.MongoClient(db_settings.db_uri)
    coll = client[db_settings.database]["relaxations"]
    deadline = time.time() + 300
    while coll.count_documents({}) < 4 and time.time() < deadline and worker.poll() is None:
        time.sleep(0.2)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    before = coll.count_documents({})
    assert 0 < before < total, "the worker should have been killed part-way"
    done = subprocess.run([*cmd, "--json"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["skipped"] == before and result["relaxed"] == total - before
    ids = [d["structure_id"] for d in coll.find({}, {"structure_id": 1})]
    assert len(ids) == len(set(ids)) == total
    client.close()


def test_stratified_sample_covers_strata():
    docs = [
        {"composition_id": f"c{i}_{x}", "phase": {"space_group": sg}}
        for i, (x, sg) in enumerate([("O2-", 225)] * 6 + [("Cl-", 225)] * 3 + [("Cl-", 87)] * 2)
    ]
    picked = stratified_sample(docs, 3, seed=0)
    assert {(d["composition_id"].rsplit("_", 1)[1], d["phase"]["space_group"]) for d in picked} == {
        ("O2-", 225),
        ("Cl-", 225),
        ("Cl-", 87),
    }


def test_sample_by_composition_takes_whole_compositions():
    def doc(cid, tilt, e, sg):
        return {"composition_id": cid, "start_tilt": tilt, "energy_per_atom": e, "phase": {"space_group": sg}}

    docs = [
        doc("a_O2-", "a0a0c-", -1.0, 87),
        doc("a_O2-", "a0a0a0", -0.9, 225),
        doc("a_O2-", "a-a-a-", -0.95, 148),
        doc("b_Cl-", "a0a0a0", -2.0, 225),
        doc("b_Cl-", "a0a0c-", -1.9, 87),
        doc("c_Cl-", "a0a0a0", -3.0, 225),
    ]
    picked = stratified_sample(docs, 5, seed=0, by_composition=True)
    assert sorted(d["composition_id"] for d in picked) == ["a_O2-"] * 3 + ["b_Cl-"] * 2  # single-variant c last
    for cid in ("a_O2-", "b_Cl-"):
        tilts = [d["start_tilt"] for d in picked if d["composition_id"] == cid]
        assert tilts[0] == "a0a0a0"
    for seed in range(4):  # a cut composition keeps its untilted and its lowest variant
        assert [d["start_tilt"] for d in stratified_sample(docs, 2, seed=seed, by_composition=True)] == [
            "a0a0a0",
            "a0a0c-",
        ]
    assert len(stratified_sample(docs, 6, by_composition=True)) == 6


@pytest.mark.slow
@pytest.mark.skipif(cp2k_executable() is None, reason="cp2k is not installed (apt-get install -y cp2k)")
def test_cp2k_validation_lands_next_to_the_mlip(db_settings, tiny_model_path, tmp_path):
    """A real CP2K PBE single point of a relaxed structure, stored with the MLIP's energy and forces."""
    table = tmp_path / "cs.csv"
    table.write_text("site,element,oxidation_state\nA,Cs,1\nB,Ag,1\nB,Bi,3\nX,Cl,-1\n")
    write_compositions(EnumerationSettings(table=str(table), allow_same_b=False), db_settings)
    build_structures_to_store(BuildSettings(tilts=["a0a0a0"]), db_settings)
    relax_store(str(tiny_model_path), RelaxSettings(max_steps=50), db_settings, device="cpu")
    cp2k = CP2KSettings(cutoff=250, rel_cutoff=40, kpoint_length=0.0, nproc=2, max_scf=60, eps_scf=1e-5)
    summary = validate_sample(None, 1, cp2k, db_settings, work_dir=tmp_path / "cp2k")
    assert summary["validated"] == 1, summary
    with open_store("validations", db_settings) as vals:
        doc = vals.query_one({})
    assert doc["method"] == "cp2k-pbe" and doc["composition_id"] == "Cs+_Cs+_Ag+_Bi3+_Cl-"
    assert doc["dft_energy"] < -1000 and len(doc["dft_forces"]) == 10 and len(doc["mlip_forces"]) == 10
    assert doc["dft_stress_gpa"] is not None and doc["scf_converged"]
    assert doc["mlip_energy_per_atom"] == pytest.approx(doc["dft_energy_per_atom"] + doc["energy_diff_per_atom_raw"])
    again = validate_sample(None, 1, cp2k, db_settings, work_dir=tmp_path / "cp2k2")
    assert again["validated"] == 0 and again["skipped"] == 1  # resumable: not run twice


def test_vasp_backend_writes_inputs_and_queues_a_job(tmp_path):
    """VASP cannot run here: checked up to the written inputs and the queued atomate2 job."""
    from jobflow.managers.fireworks import flow_to_workflow

    structure = build_bvm_structure(SiteSpeciesSet(("Sr", 2), ("Sr", 2), ("Co", 2), ("Mo", 6), ("O", -2))).structure
    folder = write_vasp_inputs(structure, tmp_path / "vasp")
    incar = (folder / "INCAR").read_text()
    assert "ISPIN = 2" in incar and "ISIF = 3" in incar
    assert (folder / "POSCAR").exists() and (folder / "KPOINTS").exists() and (folder / "POTCAR.spec").exists()
    from jobflow import JobStore
    from maggma.stores import MemoryStore

    job = DFTStaticMaker(backend="vasp").make(structure)
    store = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
    store.connect()
    response = job.run(store)  # what a worker does: the job replaces itself with atomate2's static job
    assert isinstance(response.replace, (Job, Flow))
    queued = response.replace if isinstance(response.replace, Job) else response.replace.jobs[0]
    assert "vasp static" in queued.name
    wf = flow_to_workflow(Flow([job]), store=None)
    assert len(wf.fws) == 1
    with pytest.raises(ValueError, match="unknown DFT backend 'abinit'"):
        DFTStaticMaker(backend="abinit")


def test_submit_cli_puts_the_campaign_on_the_launchpad(
    db_settings, table, tiny_model_path, capsys, monkeypatch, tmp_path
):
    from conftest import run_cli
    from fireworks import LaunchPad

    monkeypatch.setenv("DP_SCREEN_DATABASE", db_settings.database)
    home = tmp_path / "proj"
    args = [
        "--db-uri",
        db_settings.db_uri,
        "--home",
        str(home),
        "submit",
        "--limit",
        "3",
        "--model",
        str(tiny_model_path),
        "--validate",
        "1",
    ]
    code, out, err = run_cli(args, capsys)  # a launchpad never used: initialised, no --reset needed
    assert code == 0, err[-4000:]
    assert "submitted workflow" in out and f"rlaunch -l {home / 'launchpad.yaml'} -w {home / 'fworker.yaml'}" in out
    assert LaunchPad.from_file(str(home / "launchpad.yaml")).name == f"{db_settings.database}_fw"
    code, out, err = run_cli(args, capsys)  # submitting again adds a workflow and wipes nothing
    assert code == 0, err[-4000:]
    lpad = LaunchPad(host=db_settings.db_uri, uri_mode=True, name=f"{db_settings.database}_fw")
    names = {fw["name"] for fw in lpad.fireworks.find({}, {"name": 1})}
    assert {"select compositions", "build (fan-out)", "relax (fan-out)", "summary"} <= names
    from dp_screen.dft.cp2k import cp2k_executable

    # --validate queues CP2K single points; without cp2k the CLI says so and queues none
    assert any("validate" in n for n in names) == (cp2k_executable() is not None)
    assert lpad.workflows.count_documents({}) == 2


def test_documented_submit_and_rlaunch_in_a_fresh_folder(tmp_path):
    """The documentation's cluster path on the embedded default (docs/guide/campaign.md), exactly as written, in a
    fresh folder: the campaign lands in that folder's database; rockets run in their own launcher folders yet start
    no server of their own."""
    import re

    from dp_screen.settings import DPScreenSettings
    from dp_screen.stores import EmbeddedServer

    readme = (Path(__file__).parents[1] / "docs" / "guide" / "campaign.md").read_text()
    submit = re.search(r"^\s*(dp-screen submit --limit 3.*)$", readme, re.M).group(1)
    rlaunch = re.search(r"^\s*(rlaunch -l \.dp_screen/launchpad\.yaml.*)$", readme, re.M).group(1)
    env = dict(os.environ, OMP_NUM_THREADS="1", PATH=f"{BIN}:{os.environ['PATH']}")
    env.pop("DP_SCREEN_DATABASE", None)
    try:
        done = subprocess.run(submit, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert rlaunch.split(" rapidfire")[0] in done.stdout  # it prints the command the README gives
        done = subprocess.run(rlaunch, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-2000:]
        settings = DPScreenSettings(home=tmp_path / ".dp_screen")
        from dp_screen.campaign_store import CampaignStore

        store = CampaignStore(settings)
        assert store["compositions"].count_documents({"campaigns": "default"}) == 3
        assert store["relaxations"].count_documents({}) == store["structures"].count_documents({"status": "built"}) > 0
        fws = list(store.db.client[f"{settings.database}_fw"]["fireworks"].find({}, {"state": 1}))
        assert fws and {fw["state"] for fw in fws} == {"COMPLETED"}
        servers = [p for p in tmp_path.rglob("server.json")]
        assert servers == [tmp_path / ".dp_screen" / "db" / "server.json"]  # no server in any launcher folder
    finally:
        EmbeddedServer(DPScreenSettings(home=tmp_path / ".dp_screen")).stop()


def test_an_implicitly_started_server_stops_itself_when_idle(tmp_path):
    from dp_screen.settings import DPScreenSettings
    from dp_screen.stores import EmbeddedServer, database_uri

    settings = DPScreenSettings(home=tmp_path / "h", db_idle_stop_s=2)
    database_uri(settings)  # starts it implicitly, with its watchdog
    server = EmbeddedServer(settings)
    state = server.running_state()
    assert state is not None and state.get("watchdog_pid")
    deadline = time.time() + 60
    while time.time() < deadline and server.running_state() is not None:
        time.sleep(0.5)
    try:
        assert server.running_state() is None
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.skipif(cp2k_executable() is None, reason="cp2k is not installed (apt-get install -y cp2k)")
def test_training_flow_hands_its_model_to_the_screening_flow(db_settings, tmp_path):
    """Training set -> real CP2K labels -> MACE training -> screening relaxes with that model (all run_locally)."""
    from dp_screen.flows.training import TrainingFlowMaker
    from dp_screen.jobs.training import FineTuneMaker, TrainingSetMaker
    from dp_screen.mlip.training import TrainSettings

    table = tmp_path / "cs.csv"
    table.write_text("site,element,oxidation_state\nA,Cs,1\nB,Ag,1\nB,Bi,3\nX,Cl,-1\n")
    enumeration = EnumerationSettings(table=str(table), allow_same_b=False)
    cp2k = CP2KSettings(cutoff=250, rel_cutoff=40, kpoint_length=0.0, nproc=2, max_scf=60, eps_scf=1e-5)
    db = db_settings.model_dump(mode="json")
    training = TrainingFlowMaker(
        training_set=TrainingSetMaker(
            n_compositions=1,
            cells_per_composition=2,
            cell_atoms=10,
            displacement=0.05,
            strain=0.02,
            enumeration=enumeration,
        ),
        dft=DFTStaticMaker(cp2k=cp2k),
        fine_tune=FineTuneMaker(
            model_name="flow_model",
            settings=TrainSettings(
                foundation=None,
                epochs=2,
                batch_size=1,
                num_channels=8,
                num_interactions=1,
                correlation=1,
                stress_weight=0.0,
                valid_fraction=0.5,
            ),
        ),
    ).make(db)
    screening = ScreeningFlowMaker(
        campaign="t",
        limit=1,
        enumeration=enumeration,
        build=BuildMaker(settings=BuildSettings(tilts=["a0a0a0"])),
        relax=RelaxMaker(settings=RelaxSettings(max_steps=20), device="cpu"),
    )
    flow = Flow([training, screening.make(db, model=training.output["model_path"])])
    run_locally(flow, store=get_job_store(db_settings), create_folders=False, ensure_success=True)
    with open_store("models", db_settings) as models:
        model = models.query_one({"name": "flow_model"})
    assert model is not None and model["n_train"] == 2 and Path(model["path"]).exists()
    with open_store("relaxations", db_settings) as relax:
        docs = list(relax._collection.find({}, {"model_sha256": 1}))
    assert docs and {d["model_sha256"] for d in docs} == {model["sha256"]}


def test_run_command_json_and_resume(db_settings, capsys, monkeypatch, tmp_path):
    """The README's main command (default model), twice: the second run repeats nothing. The report job runs last."""
    from conftest import run_cli

    monkeypatch.setenv("DP_SCREEN_DATABASE", db_settings.database)
    args = [
        "--db-uri",
        db_settings.db_uri,
        "--home",
        str(tmp_path),
        "run",
        "--limit",
        "2",
        "--max-steps",
        "40",
        "--device",
        "cpu",
        "--report",
        "rep",
        "--json",
    ]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err[-4000:]
    first = json.loads(out)
    assert first["compositions"] == 2 and first["relaxations"] == 10 and len(first["table"]) == 2
    assert first["report"] == str(tmp_path.resolve() / "rep" / "index.html")
    assert (tmp_path / "rep" / "figures" / "phase_fractions.png").exists()
    code, out, err = run_cli(args, capsys)
    again = json.loads(out)
    assert again["relaxations"] == 0 and again["lowest_phase_counts"] == first["lowest_phase_counts"]
    # the packaged model's measured accuracy (its card, not this code) is printed next to the phase table
    from dp_screen.mlip.models import packaged_model_card

    card = packaged_model_card()
    mae = f"energy MAE {card['errors_vs_teacher']['test']['energy_mae_mev_atom']:.0f} meV/atom"
    assert any(mae in line for line in first["model_accuracy"])
    # every row is called with the packaged model's measured sigma (its card), and says so
    sigma = card["phases_vs_teacher"]["phase_de_rmse_mev_atom"]
    for r in first["table"]:
        assert r["call"] in ("tilted", "untilted", "undetermined") and r["phases_within_error"]
        assert r["phase_error_mev"] == pytest.approx(sigma) and r["phase_error_source"] == "card"
        if r["dE_tilt_mev_atom"] is not None and r["call"] != "untilted":
            assert r["call"] == ("tilted" if r["dE_tilt_mev_atom"] > 2 * sigma else "undetermined")
    assert sum(first["calls"].values()) == 2
    code, out, err = run_cli(args[:-1], capsys)  # the human-readable table
    assert code == 0 and "model accuracy: packaged demonstration model" in out and mae in out
    assert "kept out:" in out and f"sigma {sigma:.1f} meV/atom (card)" in out and "phases within 2 sigma" in out
    # a sigma given by the user: the same relaxations, called again (nothing relaxed)
    code, out, err = run_cli([*args, "--phase-error", "0.001"], capsys)
    tight = json.loads(out)
    assert tight["relaxations"] == 0 and {r["phase_error_source"] for r in tight["table"]} == {"user"}
    for r in tight["table"]:
        if r["call"] == "undetermined":
            assert r["dE_tilt_mev_atom"] is None or abs(r["dE_tilt_mev_atom"]) <= 0.002
    code, out, err = run_cli(["--db-uri", db_settings.db_uri, "report", "--out", str(tmp_path / "r2")], capsys)
    assert code == 0 and mae in out and "kept out of the ranking" in out


def test_cli_and_workflows_campaign_build_the_same_flow(db_settings, tmp_path, capsys, monkeypatch):
    """`dp-screen submit` and workflows/campaign.py, given the same campaign, put the same workflow on the launchpad."""
    import importlib.util

    from conftest import run_cli
    from fireworks import LaunchPad

    from dp_screen.flows.campaign import flow_fingerprint

    added = []
    monkeypatch.setattr(LaunchPad, "add_wf", lambda self, wf, *a, **k: added.append(wf) or {1: 1})
    monkeypatch.setenv("DP_SCREEN_DATABASE", db_settings.database)
    monkeypatch.chdir(tmp_path)
    lp = tmp_path / "lp.yaml"
    lp.write_text(
        f"host: {db_settings.db_uri}/{db_settings.database}_fw\nuri_mode: true\nname: {db_settings.database}_fw\n"
    )
    code, out, err = run_cli(
        [
            "--db-uri",
            db_settings.db_uri,
            "submit",
            "--launchpad",
            str(lp),
            "--all",
            "--campaign",
            "full",
            "--with-training",
            "340",
            "--dft",
            "vasp",
            "--validate",
            "500",
            "--report",
            "report_full",
            "--train-epochs",
            "50",
            "--train-device",
            "cuda",
        ],
        capsys,
    )
    assert code == 0, err[-4000:]
    spec = importlib.util.spec_from_file_location(
        "wf_campaign", Path(__file__).parents[1] / "workflows" / "campaign.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--launchpad", str(lp), "--db-uri", db_settings.db_uri])
    assert len(added) == 2

    fingerprint = flow_fingerprint
    assert fingerprint(added[0]) == fingerprint(added[1])
    other = run_cli(
        [
            "--db-uri",
            db_settings.db_uri,
            "submit",
            "--launchpad",
            str(lp),
            "--all",
            "--campaign",
            "full",
            "--with-training",
            "340",
            "--dft",
            "vasp",
            "--validate",
            "400",
            "--report",
            "report_full",
            "--train-epochs",
            "50",
            "--train-device",
            "cuda",
        ],
        capsys,
    )
    assert other[0] == 0 and fingerprint(added[2]) != fingerprint(added[0])  # the fingerprint sees a difference


def test_run_shows_progress_bars_and_job_lines_only_when_verbose(
    db_settings, capsys, monkeypatch, tmp_path, tiny_model_path
):
    from conftest import run_cli

    monkeypatch.setenv("DP_SCREEN_DATABASE", db_settings.database)
    args = [
        "--db-uri",
        db_settings.db_uri,
        "--home",
        str(tmp_path),
        "run",
        "--limit",
        "2",
        "--max-steps",
        "20",
        "--device",
        "cpu",
        "--model",
        str(tiny_model_path),
        "--tilts",
        "a0a0a0,a0a0c-",
        "--chunk-size",
        "1",
        "--workers",
        "1",
    ]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err[-4000:]
    # one bar per stage across both chunk jobs: structures done / total
    assert re.search(r"building: 100%.* 4/4 ", err) and re.search(r"relaxing: 100%.* 4/4 ", err)
    assert "Starting job" not in err and "calls:" in out
    code, out, err = run_cli([*args, "--verbose"], capsys)
    assert code == 0 and "Starting job - relax chunk 0" in err and "relaxing:" not in err


def test_run_with_worker_processes_gives_the_one_process_results(
    db_settings, capsys, monkeypatch, tmp_path, tiny_model_path
):
    """`dp-screen run --workers 2`: the chunk jobs run in two worker processes (FireWorks, a private launchpad that
    is dropped afterwards) and the campaign's table is the one of `--workers 1` in another database; a re-run repeats
    nothing."""
    from conftest import run_cli
    from pymongo import MongoClient

    def run(database: str, workers: int) -> dict:
        monkeypatch.setenv("DP_SCREEN_DATABASE", database)
        args = [
            "--db-uri",
            db_settings.db_uri,
            "--home",
            str(tmp_path),
            "run",
            "--limit",
            "3",
            "--max-steps",
            "20",
            "--device",
            "cpu",
            "--model",
            str(tiny_model_path),
            "--tilts",
            "a0a0a0,a-a-a-",
            "--chunk-size",
            "1",
            "--workers",
            str(workers),
            "--json",
        ]
        code, out, err = run_cli(args, capsys)
        assert code == 0, err[-4000:]
        last_err[:] = [err]
        return json.loads(out)

    last_err = [""]
    one = run(f"{db_settings.database}_w1", 1)
    two = run(f"{db_settings.database}_w2", 2)
    assert two["relaxations"] == one["relaxations"] == 6
    keys = ("composition_id", "lowest", "call", "dE_tilt_mev_atom", "ground_state")
    assert [{k: r[k] for k in keys} for r in two["table"]] == [{k: r[k] for k in keys} for r in one["table"]]
    # workers that stop before the flow is done (here the first two started, at once) are started again
    (tmp_path / "worker.py").write_text(
        "import os, sys\n"
        "from pathlib import Path\n"
        "for k in range(99):\n"
        "    try:\n"
        "        os.close(os.open(Path(sys.argv[1]).parent / f'start_{k}', os.O_CREAT | os.O_EXCL))\n"
        "        break\n"
        "    except FileExistsError:\n"
        "        pass\n"
        "if k >= 2:\n"
        "    from dp_screen.flows.local import work\n"
        "    work(sys.argv[1])\n"
    )
    monkeypatch.setattr("dp_screen.flows.local.WORKER_COMMAND", [sys.executable, str(tmp_path / "worker.py")])
    again = run(f"{db_settings.database}_w2", 2)
    assert "starting them again (1 of" in last_err[0]
    assert again["relaxations"] == 0 and again["calls"] == two["calls"]
    left = [n for n in MongoClient(db_settings.db_uri).list_database_names() if "dp_screen_run_" in n]
    assert left == []  # the private launchpads are gone


def test_the_campaign_summary_stays_small_at_the_size_of_the_whole_space(db_settings):
    """220,570 compositions (the default space's count) in a campaign: the summary job's output stays a few kB and
    its table goes to the store in parts below MongoDB's 16 MB document limit. The compositions are the bench's
    filler (ids and species only: what the summary reads)."""
    import bson

    from dp_screen.campaign_store import CampaignStore
    from dp_screen.flows.screening import summarize_campaign

    n = 220_570
    ids = [f"C{k:06d}+_C{k:06d}+_B+_B2+_X-" for k in range(n)]
    store = CampaignStore(db_settings)
    store["compositions"].insert_many(
        [{"composition_id": c, "formula": f"F{k}", "X": "X", "tau_perovskite": True} for k, c in enumerate(ids)]
    )
    relaxed = [{"model": {"model_sha256": "f" * 64}, "settings_hash": "s", "relaxed": 0, "converged": 0, "failed": 0}]
    out = summarize_campaign.original(
        {"campaign": "whole", "composition_ids": ids}, relaxed, None, db_settings.model_dump(mode="json")
    )
    assert len(bson.encode(out)) < 20_000 and out["table_rows"] == n and out["calls"]["undetermined"] == n
    parts = list(store["campaign_tables"].find({"table_id": out["table_id"]}))
    assert len(parts) == -(-n // 20_000) and max(len(bson.encode(p)) for p in parts) < 16 * 2**20
    table = store.campaign_table(out["table_id"])
    assert len(table) == n and table[0]["composition_id"] == ids[0] and table[-1]["composition_id"] == ids[-1]
