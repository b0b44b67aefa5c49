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


def _independent_forces_and_stress(doc, model_path):
    """Max force (eV/A) and max |stress| (GPa) of a stored relaxed structure, evaluated again with mace's own ASE
    calculator (not the code that relaxed it)."""
    import numpy as np
    from mace.calculators import MACECalculator
    from pymatgen.core import Structure
    from pymatgen.io.ase import AseAtomsAdaptor

    atoms = AseAtomsAdaptor.get_atoms(Structure.from_dict(doc["structure"]))
    atoms.calc = MACECalculator(model_paths=str(model_path), device="cpu", default_dtype="float64")
    return float(np.linalg.norm(atoms.get_forces(), axis=1).max()), float(np.abs(atoms.get_stress()).max()) * 160.21766


def test_relax_store_documents_resume_and_phases(built_store, tiny_model_path):
    from dp_screen.jobs.relax import summary_key

    settings = RelaxSettings(fmax=0.05, max_stress_gpa=0.2, max_steps=60)
    first = relax_store(str(tiny_model_path), settings, built_store, chunk_size=3, device="cpu")
    assert first["relaxed"] > 0 and first["relaxed"] == first["structures"]
    with open_store("relaxations", built_store) as store:
        docs = list(store._collection.find({}))
        assert len(docs) == first["relaxed"]
        for d in docs:
            assert d["model_sha256"] == first["model"]["model_sha256"]
            prov = d["provenance"]["settings"]
            assert d["provenance"]["code_version"] and prov["fmax"] == 0.05 and prov["dtype"] == "float64"
            assert prov["max_stress_gpa"] == 0.2 and prov["fix_symmetry"] is True
            if d["converged"]:  # the criteria hold when the stored structure is evaluated again, independently
                f, sigma = _independent_forces_and_stress(d, tiny_model_path)
                assert f < 0.05 + 1e-4 and sigma < 0.2 + 1e-3
            assert (d["excluded"] is None) == (d["converged"] and not d["not_perovskite"])
            assert d["phase"]["space_groups"] and d["n_steps"] <= 60
        # symmetry held: every structure ends in the space group it was built in (or a higher one)
        built = {s["structure_id"]: s["space_group"] for s in open_store_docs(built_store)}
        for d in docs:
            assert d["final_space_group"] == built[d["structure_id"]] or d["final_space_group"] == 225
    again = relax_store(str(tiny_model_path), settings, built_store, device="cpu")
    assert again["relaxed"] == 0 and again["skipped"] == first["relaxed"]
    other = relax_store(str(tiny_model_path), RelaxSettings(fmax=0.1, max_steps=60), built_store, device="cpu", limit=2)
    assert other["relaxed"] == 2  # other settings: new relaxations, the old ones stay
    f32 = relax_store(str(tiny_model_path), settings, built_store, device="cpu", dtype="float32", limit=2)
    assert f32["relaxed"] == 2 and f32["settings_hash"] not in (first["settings_hash"], other["settings_hash"])
    with open_store("relaxations", built_store) as store:
        assert store._collection.count_documents({"structure_settings_hash": None}) == 0
        assert store._collection.count_documents({}) == first["relaxed"] + 4  # float32 and float64 both kept
    # rebuilding the untilted structures with other build settings makes their relaxations stale: relaxed again
    rebuilt = build_structures_to_store(BuildSettings(tilts=["a0a0a0"], bv_set="brown-altermatt"), built_store)
    redo = relax_store(str(tiny_model_path), settings, built_store, device="cpu")
    assert redo["relaxed"] == rebuilt["built"] > 0 and redo["skipped"] == first["relaxed"] - rebuilt["built"]
    with open_store("relaxations", built_store) as store:
        untilted = list(store._collection.find({"start_tilt": "a0a0a0", "settings_hash": first["settings_hash"]}))
        assert {d["structure_settings_hash"] for d in untilted} == {rebuilt["settings_hash"]}
        assert store._collection.count_documents({}) == first["relaxed"] + 4  # replaced, not added
        mine = list(store._collection.find({"formula": "Cs2AgBiCl6", "settings_hash": first["settings_hash"]}))
    with open_store("compositions", built_store) as comps:
        doc = comps.query_one({"formula": "Cs2AgBiCl6"})
    # one summary per (model, relaxation settings): the float32 and fmax 0.1 runs have their own
    assert summary_key(first["model"]["model_sha256"], first["settings_hash"]) in doc["phases"]
    summary = doc["phases"][summary_key(first["model"]["model_sha256"], first["settings_hash"])]
    ranked = [d for d in mine if d["excluded"] is None]
    assert summary["n_variants"] == len(mine) == 2 and summary["n_ranked"] == len(ranked)
    assert sum(summary["excluded"].values()) == len(mine) - len(ranked)
    if ranked:  # the lowest ranked variant, under the phase it ended in
        best = min(ranked, key=lambda d: d["energy_per_atom"])
        assert summary["ground_state"]["structure_id"] == best["structure_id"]
        assert summary["lowest"] == best["phase_tilt"] and summary["ground_state"]["ordering"] == "rocksalt"


def open_store_docs(settings):
    with open_store("structures", settings) as store:
        return list(store._collection.find({}, {"structure_id": 1, "space_group": 1}))


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
        main(
            [
                "relax",
                "--structure",
                str(cif),
                "--model",
                str(tiny_model_path),
                "--device",
                "cpu",
                "--json",
                "--max-steps",
                "30",
                "--out",
                str(tmp_path / "r.cif"),
            ]
        )
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


def test_phase_table_from_the_summaries_equals_the_one_grouped_from_the_relaxations(built_store, tiny_model_path):
    """The report reads the per-composition summaries the relax job wrote; grouping the relaxations themselves (the
    path for stores without summaries, forced here by a query) gives the same table."""
    from dp_screen.analysis import data

    relax_store(str(tiny_model_path), RelaxSettings(max_steps=40), built_store, device="cpu")
    fast = data.phase_table(built_store)
    slow = data.phase_table(built_store, query={"composition_id": {"$exists": True}})
    cols = [
        "composition_id",
        "ordering",
        "lowest_tilt",
        "dE_untilted_mev_atom",
        "ground_state_tilted",
        "winning_space_group",
        "n_variants",
        "n_ranked",
        "excluded",
        "composition_ground_state",
        "B_sp",
        "call",
        "phases_within_error",
        "phase_error_source",
    ]
    assert len(fast) == len(slow) > 0 and fast.attrs["settings_hash"] == slow.attrs["settings_hash"]
    assert fast[cols].astype(str).to_dict("records") == slow[cols].astype(str).to_dict("records")
    strict = data.phase_table(built_store, phase_error_mev=0.0)  # a user's sigma is applied when reading
    compared = strict.dropna(subset=["dE_tilt_mev_atom"])
    assert len(compared) and ((compared["call"] == "tilted") == (compared["dE_tilt_mev_atom"] > 0)).all()
    assert (strict[strict["dE_tilt_mev_atom"].isna() & (strict["n_ranked"] > 0)]["call"] != "tilted").all()


def test_digests_give_the_same_report_tables_as_the_summaries_and_the_relaxations(built_store, tiny_model_path):
    """The analysis of a large store reads one digest per relax chunk (and per batch of compositions) instead of
    one document per composition: its phase table, convergence statistics and composition histogram equal those of
    the per-composition summaries (the path of stores from before digests) and of the server-side aggregations."""
    from dp_screen.analysis import data, trends
    from dp_screen.campaign_store import CampaignStore

    relax_store(str(tiny_model_path), RelaxSettings(max_steps=40), built_store, device="cpu")
    store = CampaignStore(built_store)
    (reg,) = list(store["phase_sets"].find({}, {"_id": 0}))
    assert reg["digests"] and store["phase_digests"].count_documents({}) >= 1
    digest = data.read_phase_digest(built_store, reg["model_sha256"], reg["settings_hash"])
    from_digests = data.phase_table(built_store, digest=digest)
    grouped = data.phase_table(built_store, query={"composition_id": {"$exists": True}})
    store["phase_sets"].update_many({}, {"$unset": {"digests": ""}})  # as a store from before digests
    assert data.read_phase_digest(built_store, reg["model_sha256"], reg["settings_hash"]) is None
    from_summaries = data.phase_table(built_store)
    cols = [
        "composition_id",
        "ordering",
        "lowest_tilt",
        "dE_untilted_mev_atom",
        "ground_state_tilted",
        "winning_space_group",
        "n_variants",
        "n_ranked",
        "excluded",
        "B_sp",
        "goldschmidt_t",
        "tau_perovskite",
    ]
    assert len(from_digests) == len(grouped) > 0
    for other in (grouped, from_summaries):
        assert from_digests[cols].astype(str).to_dict("records") == other[cols].astype(str).to_dict("records")

    fast = trends.convergence_stats(built_store, reg["model_sha256"], reg["settings_hash"], variants=digest.variants)
    slow = trends.convergence_stats(built_store, reg["model_sha256"], reg["settings_hash"])
    assert fast["overall"] == slow["overall"] and fast["overall"]["n"] == len(digest.variants) > 0
    assert fast["reasons"] == slow["reasons"] and sorted(fast["steps"]) == sorted(slow["steps"])
    assert fast["by_tilt"].sort_index().round(9).equals(slow["by_tilt"].sort_index().round(9))

    hist = data.composition_space(built_store)
    assert data._composition_space_from_digests(built_store, "goldschmidt_t", 0.025) is not None
    store["composition_digests"].delete_many({})  # digests missing: binned by the server, the same histogram
    assert data._composition_space_from_digests(built_store, "goldschmidt_t", 0.025) is None
    assert hist.to_dict("records") == data.composition_space(built_store).to_dict("records")


def test_a_composition_in_two_digests_is_read_from_the_latest(db_settings):
    from dp_screen.analysis import data
    from dp_screen.campaign_store import CampaignStore
    from dp_screen.schemas.relaxation import summary_key

    store = CampaignStore(db_settings)
    key = summary_key("m" * 64, "h")
    store.register_phase_set(key, "m" * 64, "h", "x", 2)
    summary = {"orderings": {"rocksalt": {"n_variants": 1, "n_ranked": 0, "excluded": {"failed": 1}}}}
    better = {"orderings": {"rocksalt": {"n_variants": 2, "n_ranked": 0, "excluded": {"failed": 2}}}}
    store.write_phase_digest(key, {"c1": summary, "c2": summary}, [], [])  # one chunking, then another
    store.write_phase_digest(key, {"c2": better, "c3": summary}, [], [])
    digest = data.read_phase_digest(db_settings, "m" * 64, "h")
    assert digest.summaries == {"c1": summary, "c2": better, "c3": summary}
    store.write_phase_digest(key, {"c1": summary, "c2": summary}, [], [])  # the first chunk re-run: it wins again
    assert data.read_phase_digest(db_settings, "m" * 64, "h").summaries["c2"] == summary


def test_document_counters_are_exact_from_an_empty_collection_and_ignored_otherwise(db_settings):
    """The report counts documents by the write counters (a count is a pass over 10^6 documents on SecantusDB);
    a collection that held documents before its counter began is counted by the server instead."""
    from dp_screen.analysis import data
    from dp_screen.campaign_store import CampaignStore

    store = CampaignStore(db_settings)
    store["validations"].insert_one({"validation_id": "written-elsewhere"})
    store.write_validations([{"validation_id": f"v{i}"} for i in range(3)])
    store.write_validations([{"validation_id": "v0"}, {"validation_id": "v3"}])  # one replaced, one new
    store.write_model({"model_id": "m1"})
    store.write_model({"model_id": "m2"})
    assert store.counters() == {"models": 2}  # validations held a document before: not exact
    counts = data.describe_store(db_settings)["counts"]
    assert counts["models"] == 2 and counts["validations"] == 5 and "counters" not in counts
    store["models"].insert_one({"model_id": "bypassed"})  # a write that bypasses the store is not seen
    assert data.describe_store(db_settings)["counts"]["models"] == 2


def test_committee_scores_stored_relaxations_and_the_report_filters_on_it(built_store, tiny_model_path, tmp_path):
    """A committee (three random-weight tiny MACE models: they disagree) scores relaxations already stored; the
    spreads reach the documents, the phase summaries (largest over each ordering's ranked variants) and the report,
    whose bound leaves out the rows above it."""
    import numpy as np
    from conftest import TINY_ELEMENTS, make_tiny_mace
    from pymatgen.core import Structure

    from dp_screen.analysis import data
    from dp_screen.mlip.committee import Committee, committee_predictions

    settings = RelaxSettings(max_steps=40)
    relax_store(str(tiny_model_path), settings, built_store, device="cpu")
    members = [str(tiny_model_path)] + [
        str(make_tiny_mace(tmp_path / f"m{k}.model", TINY_ELEMENTS, seed=k)) for k in (1, 2)
    ]
    out = relax_store(str(tiny_model_path), settings, built_store, device="cpu", committee=members)
    assert out["relaxed"] == 0 and out["scored_by_committee"] > 0  # nothing relaxed again, all scored
    with open_store("relaxations", built_store) as store:
        docs = [d for d in store._collection.find({}) if not d["failed"]]
    assert len(docs) == out["scored_by_committee"]
    again = committee_predictions(
        [Structure.from_dict(d["structure"]) for d in docs], Committee.load(members, device="cpu")
    )
    for d, p in zip(docs, again, strict=True):
        assert d["force_spread_ev_a"] == pytest.approx(p.force_spread_ev_a, rel=1e-6) and d["force_spread_ev_a"] > 0
        assert d["energy_spread_mev_atom"] == pytest.approx(p.energy_spread_mev_atom, rel=1e-6)
        assert d["uncertainty"]["committee_sha256"] == Committee.load(members, device="cpu").shas
    table = data.phase_table(built_store)
    ranked = [d for d in docs if d["excluded"] is None]
    for _, row in table[table["n_ranked"] > 0].iterrows():
        mine = [
            d["force_spread_ev_a"]
            for d in ranked
            if d["composition_id"] == row["composition_id"] and d["ordering"] == row["ordering"]
        ]
        assert row["force_spread_ev_a"] == pytest.approx(max(mine))
    bound = float(np.nanmedian(table["force_spread_ev_a"]))
    kept = data.uncertainty_filter(table, max_force_spread=bound)
    assert 0 < len(kept) < len(table) and (kept["force_spread_ev_a"] <= bound).all()
    assert kept.attrs["uncertainty_filter"]["above"] == int((table["force_spread_ev_a"] > bound).sum())
    from dp_screen.analysis.report import write_report

    rep = write_report(tmp_path / "rep", built_store, max_force_spread=bound)
    assert rep.summary["uncertainty"]["filter"]["kept"] == len(kept)
    assert "committee_spread" in rep.figures and "most_uncertain" in rep.tables
    html = (tmp_path / "rep" / "index.html").read_text()
    assert "Committee uncertainty" in html and "above a bound" in html
