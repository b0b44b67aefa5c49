"""The notebooks and the report against a small real campaign: enumerated, built and relaxed with the packaged model.

Validation documents need DFT labels; CP2K runs ~1 min per cell here (it is exercised for real in test_campaign), so
this store's validations use a second, tiny MACE model as the reference instead, stored under the method name
``reference-mlip (test)``. Everything else is the real pipeline.
"""

from __future__ import annotations

from pathlib import Path

import pymongo
import pytest
from conftest import make_tiny_mace
from pymatgen.core import Structure

from dp_screen.settings import DPScreenSettings

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
TABLES = {
    "oxides": "site,element,oxidation_state\nA,Ba,2\nB,Mg,2\nB,Ca,2\nB,W,6\nB,Mo,6\nX,O,-2\n",
    "halides": "site,element,oxidation_state\nA,Cs,1\nB,Ag,1\nB,Na,1\nB,Bi,3\nB,In,3\nX,Cl,-1\n",
}
TILTS = ["a0a0a0", "a0a0c-", "a-a-a-"]
REFERENCE = "reference-mlip (test)"


@pytest.fixture(scope="module")
def campaign_store(db_server, tmp_path_factory):
    """8 compositions x 3 tilt systems relaxed with the packaged model; 2 compositions validated."""
    from dp_screen.jobs.build import BuildSettings, build_structures_to_store
    from dp_screen.jobs.enumerate import EnumerationSettings, write_compositions
    from dp_screen.jobs.relax import relax_store
    from dp_screen.jobs.validate import stratified_sample, validation_doc
    from dp_screen.mlip.models import load_model
    from dp_screen.mlip.relax import RelaxSettings, single_points
    from dp_screen.stores import open_store, upsert_documents

    tmp = tmp_path_factory.mktemp("campaign")
    settings = DPScreenSettings(db_uri=db_server["uri"], database="t_notebooks_campaign", home=db_server["home"])
    for name, text in TABLES.items():
        (tmp / f"{name}.csv").write_text(text)
        write_compositions(EnumerationSettings(table=str(tmp / f"{name}.csv"), allow_same_b=False), settings)
    build_structures_to_store(BuildSettings(tilts=TILTS), settings)
    relaxed = relax_store(None, RelaxSettings(fmax=0.05, max_steps=150), settings, device="cpu")
    assert relaxed["relaxed"] == 8 * len(TILTS)
    reference = load_model(
        str(make_tiny_mace(tmp / "ref.model", [8, 11, 12, 17, 20, 42, 47, 49, 55, 56, 74, 83])),
        device="cpu",
        dtype="float64",
    )
    with open_store("relaxations", settings) as store:
        docs = list(store._collection.find({"failed": False}, {"_id": 0}))
    picked = [d for d in docs if d["formula"] in ("Ba2CaWO6", "Cs2AgBiCl6")] + stratified_sample(docs, 2, seed=1)
    vals = []
    for rel in {d["relaxation_id"]: d for d in picked}.values():
        structure = Structure.from_dict(rel["structure"])
        ref = single_points([structure], reference)[0]
        dft = {
            "method": REFERENCE,
            "energy": ref["energy"],
            "forces": ref["forces"],
            "stress_gpa": ref["stress_gpa"],
            "settings": {"model": "tiny random MACE standing in for DFT"},
        }
        vals.append(validation_doc(rel, dft, structure))
    with open_store("validations", settings) as store:
        upsert_documents(store, vals)
    yield settings
    pymongo.MongoClient(db_server["uri"]).drop_database(settings.database)


def test_report_of_a_real_campaign(campaign_store, tmp_path):
    from dp_screen.analysis import data, trends
    from dp_screen.analysis.report import write_report

    phases = data.phase_table(campaign_store)
    assert len(phases) == 8 and phases["n_variants"].eq(3).all()
    # every dE is the untilted energy minus the lowest of the stored relaxations, recomputed here from the documents
    rel = data.load_collection(
        "relaxations", {"failed": False}, ["composition_id", "start_tilt", "energy_per_atom"], campaign_store
    )
    for cid, g in rel.groupby("composition_id"):
        e = g.set_index("start_tilt")["energy_per_atom"]
        row = phases.set_index("composition_id").loc[cid]
        assert row["dE_untilted_mev_atom"] == pytest.approx(1e3 * (e["a0a0a0"] - e.min()))
    rep = write_report(tmp_path / "report", campaign_store)
    assert rep.missing == []
    assert {"composition_space", "phase_fractions", "de_histogram", "de_vs_tolerance", "parity", "convergence"} <= set(
        rep.figures
    )
    assert any(k.startswith("heatmap_") for k in rep.figures)
    page = rep.html.read_text()
    assert all(f"figures/{p.name}" in page for p in rep.figures.values())
    stats = trends.parity_stats(data.validation_table(campaign_store))
    assert stats.loc[REFERENCE, "n_compositions"] >= 2


def _execute(path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def test_screen_your_own_notebook_builds_relaxes_and_ranks():
    """notebooks/00: three formulas built, relaxed with the packaged model and ranked through dp_screen's API (no
    store); its last cell prints the table, which must hold one called row per formula with the card's sigma."""
    import json

    from dp_screen.mlip.models import packaged_model_card

    outputs = _execute(NOTEBOOKS[0])
    assert NOTEBOOKS[0].name == "00_screen_your_own.ipynb"
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert [o for o in outputs if "image/png" in o.get("data", {})], "no figure"
    lines = [line for o in outputs if o.get("output_type") == "stream" for line in o["text"].splitlines()]
    table = json.loads([line for line in lines if line.startswith("[{")][-1])
    assert [r["formula"] for r in table] == ["Ba2CaWO6", "Cs2AgBiCl6", "Sr2CoMoO6"]
    sigma = packaged_model_card()["phases_vs_teacher"]["phase_de_rmse_mev_atom"]
    for r in table:
        assert r["call"] in ("tilted", "untilted", "undetermined") and r["n_ranked"] >= 3 and r["lowest"]
        assert r["phase_error_mev"] == pytest.approx(sigma)


@pytest.mark.parametrize("path", NOTEBOOKS[1:], ids=lambda p: p.name)
def test_notebook_runs(path, campaign_store, monkeypatch):
    assert len(NOTEBOOKS) == 5
    monkeypatch.setenv("DP_SCREEN_DB_URI", campaign_store.db_uri)
    monkeypatch.setenv("DP_SCREEN_DATABASE", campaign_store.database)
    monkeypatch.setenv("DP_SCREEN_HOME", str(campaign_store.home))
    outputs = _execute(path)
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert images, f"{path.name} drew no figure"


def test_notebooks_match_their_generator(tmp_path):
    """notebooks/ is what scripts/make_notebooks.py writes (edit the script, then run it)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_notebooks", NOTEBOOKS[0].parents[1] / "scripts" / "make_notebooks.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(tmp_path)
    for path in NOTEBOOKS:
        assert (tmp_path / path.name).read_text() == path.read_text(), f"{path.name} differs from the generator"
