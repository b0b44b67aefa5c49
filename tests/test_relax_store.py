"""Relaxing the store's structures: documents with provenance, resume, phase summaries; the relax CLI."""

from __future__ import annotations

import json

import pytest
from jobflow import run_locally

from dp_screen.cli import main
from dp_screen.jobs.build import BuildSettings, build_structures_to_store
from dp_screen.jobs.enumerate import EnumerationSettings, write_compositions
from dp_screen.jobs.relax import RelaxMaker, relax_store
from dp_screen.mlip.relax import RelaxSettings
from dp_screen.stores import get_job_store, open_store

TABLE = "site,element,oxidation_state\nA,Cs,1\nA,Ba,2\nB,Ag,1\nB,Bi,3\nB,Ca,2\nB,Mo,6\nX,Cl,-1\nX,O,-2\n"


@pytest.fixture
def built_store(db_settings, tmp_path):
    table = tmp_path / "t.csv"
    table.write_text(TABLE)
    write_compositions(EnumerationSettings(table=str(table), allow_same_b=False), db_settings)
    build_structures_to_store(BuildSettings(tilts=["a0a0a0", "a0a0c-"]), db_settings)
    return db_settings


def test_relax_store_documents_resume_and_phases(built_store, tiny_model_path):
    settings = RelaxSettings(fmax=0.05, max_steps=60)
    first = relax_store(str(tiny_model_path), settings, built_store, chunk_size=3, device="cpu")
    assert first["relaxed"] > 0 and first["relaxed"] == first["structures"]
    with open_store("relaxations", built_store) as store:
        docs = list(store._collection.find({}))
        assert len(docs) == first["relaxed"]
        for d in docs:
            assert d["model_sha256"] == first["model"]["model_sha256"]
            assert d["provenance"]["code_version"] and d["provenance"]["settings"]["fmax"] == 0.05
            assert d["converged"] == (d["max_force"] < 0.05 and d["max_cell_force"] < 0.05 and not d["failed"])
            assert d["phase"]["space_groups"] and d["n_steps"] <= 60
    again = relax_store(str(tiny_model_path), settings, built_store, device="cpu")
    assert again["relaxed"] == 0 and again["skipped"] == first["relaxed"]
    other = relax_store(str(tiny_model_path), RelaxSettings(fmax=0.1, max_steps=60), built_store, device="cpu", limit=2)
    assert other["relaxed"] == 2  # other settings: new relaxations, the old ones stay
    with open_store("relaxations", built_store) as store:
        assert store._collection.count_documents({"structure_settings_hash": None}) == 0
    # rebuilding the untilted structures with other build settings makes their relaxations stale: relaxed again
    rebuilt = build_structures_to_store(BuildSettings(tilts=["a0a0a0"], bv_set="brown-altermatt"), built_store)
    redo = relax_store(str(tiny_model_path), settings, built_store, device="cpu")
    assert redo["relaxed"] == rebuilt["built"] > 0 and redo["skipped"] == first["relaxed"] - rebuilt["built"]
    with open_store("relaxations", built_store) as store:
        untilted = list(store._collection.find({"start_tilt": "a0a0a0", "settings_hash": first["settings_hash"]}))
        assert {d["structure_settings_hash"] for d in untilted} == {rebuilt["settings_hash"]}
        assert store._collection.count_documents({}) == first["relaxed"] + 2  # replaced, not added
    with open_store("compositions", built_store) as comps:
        doc = comps.query_one({"formula": "Cs2AgBiCl6"})
        summary = doc["phases"][first["model"]["model_sha256"][:12]]
        assert summary["lowest"] in {"a0a0a0", "a0a0c-"} and summary["n_variants"] == 2
        assert summary["dE_untilted_mev_atom"] >= 0


def test_relax_maker_in_jobflow(built_store, tiny_model_path):
    maker = RelaxMaker(model=str(tiny_model_path), settings=RelaxSettings(max_steps=20), device="cpu")
    job = maker.make(query={"tilt": "a0a0a0"}, db_settings=built_store.model_dump(mode="json"))
    out = run_locally(job, store=get_job_store(built_store), create_folders=False, ensure_success=True)
    counts = out[job.uuid][1].output
    assert counts["relaxed"] == counts["structures"] > 0


def test_relax_one_structure_cli(tmp_path, tiny_model_path, capsys):
    cif = tmp_path / "s.cif"
    try:
        main(["build", "--formula", "Cs2AgBiCl6", "--out", str(cif), "--cell", "primitive"])
    except SystemExit:
        pass
    capsys.readouterr()
    code = 0
    try:
        main(["relax", "--structure", str(cif), "--model", str(tiny_model_path), "--device", "cpu", "--json",
              "--max-steps", "30", "--out", str(tmp_path / "r.cif")])  # fmt: skip
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    assert code == 0, out.err
    result = json.loads(out.out)
    assert result["model"]["model_sha256"] and result["n_atoms"] == 10 and "converged" in result
    assert (tmp_path / "r.cif").exists()


def test_relax_errors(capsys, tmp_path):
    for args, message in [
        (["relax", "--structure", str(tmp_path / "none.cif")], "error: structure file"),
        (["relax", "--structure", str(tmp_path / "none.cif"), "--model", str(tmp_path / "m.model")], "error: "),
        (["relax", "--fmax", "-1", "--structure", "x.cif"], "error: fmax -1.0 must be > 0"),
    ]:
        try:
            main(args)
        except SystemExit as exc:
            assert exc.code == 1
        err = capsys.readouterr().err
        assert err.startswith(message), err


def test_relaxations_from_before_0_2_count_while_their_structure_does():
    from dp_screen.jobs.relax import _relaxed_from

    old_build = {"structure_id": "s", "settings_hash": "h1", "provenance": {"settings": {"tilts": None}}}
    new_build = {"structure_id": "s", "settings_hash": "h2", "provenance": {"settings": {"bv_set": "adams2001"}}}
    assert _relaxed_from({"s": None}, old_build) and not _relaxed_from({"s": None}, new_build)
    assert _relaxed_from({"s": "h2"}, new_build) and not _relaxed_from({"s": "h1"}, new_build)
    assert not _relaxed_from({}, old_build)
