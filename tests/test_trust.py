"""An answer that states its uncertainty, and no silent holes.

- Where the sigma of a phase call comes from (the packaged model's card, a fine-tune's held-out errors, a
  committee, the user), and that relax jobs store the calls with it.
- Labels keep the models' Hamiltonian: an open-shell oxide through the training-set maker and through the
  active-learning label step reaches CP2K's input spin-polarised with +U, stripped of its oxidation states or not.
- Phase summaries survive a job killed before its summary step and two jobs racing over one composition; digests
  are ordered by the server; enumerating again keeps what later steps derived.
- Structures from elsewhere (a CIF without site roles or oxidation states) are identified, gated and ranked.
- check_every is part of the settings hash; a space group shared by several tilt systems gets a documented label.
"""

from __future__ import annotations

import math

import pytest
from conftest import make_tiny_mace, run_cli
from pymatgen.core import Structure
from pymatgen.io.cif import CifWriter

from dp_screen.campaign_store import CampaignStore, latest_rows
from dp_screen.errors import InputError
from dp_screen.jobs.build import BuildSettings, build_structures_to_store
from dp_screen.jobs.enumerate import EnumerationSettings, write_compositions
from dp_screen.jobs.relax import relax_store, summary_key
from dp_screen.mlip.relax import RelaxSettings
from dp_screen.structures.perovskite import SiteSpeciesSet, build_bvm_structure

SR2FEMOO6_TABLE = "site,element,oxidation_state\nA,Sr,2\nB,Fe,3\nB,Mo,5\nX,O,-2\n"
SR2FEMOO6 = SiteSpeciesSet(("Sr", 2), ("Sr", 2), ("Fe", 3), ("Mo", 5), ("O", -2))
TABLE = "site,element,oxidation_state\nA,Cs,1\nA,Ba,2\nB,Ag,1\nB,Bi,3\nB,Ca,2\nB,Mo,6\nX,Cl,-1\nX,O,-2\n"
FAST = RelaxSettings(fmax=0.1, max_stress_gpa=0.5, max_steps=30)


# ---------------------------------------------------------------------------------------------- 1. error bars
def test_sigma_comes_from_the_card_the_fine_tune_the_committee_or_the_user(tmp_path):
    import json

    from dp_screen.mlip.models import default_model_path, file_sha256, packaged_model_card
    from dp_screen.mlip.uncertainty import model_phase_error, ordering_phase_error, user_phase_error
    from dp_screen.structures.phases import phase_summary

    card = packaged_model_card()
    packaged = model_phase_error(file_sha256(default_model_path()))
    assert packaged.source == "card" and packaged.sigma_mev == card["phases_vs_teacher"]["phase_de_rmse_mev_atom"]
    assert "bench_teacher" in packaged.detail
    # a model of one's own with a card next to it (same sha256), and one without
    mine = make_tiny_mace(tmp_path / "mine.model", [8, 38], seed=3)
    assert model_phase_error(file_sha256(mine), mine).source == "none"
    (tmp_path / "mine.json").write_text(json.dumps({"sha256": file_sha256(mine), "phase_error_mev": 12.5}))
    assert model_phase_error(file_sha256(mine), mine).sigma_mev == 12.5
    (tmp_path / "mine.json").write_text(json.dumps({"sha256": "0" * 64, "phase_error_mev": 12.5}))  # another file's
    assert model_phase_error(file_sha256(mine), mine).sigma_mev is None
    # a fine-tune's held-out within-composition error: sqrt(2) x the RMSE of one structure's error
    tuned = model_phase_error("f" * 64, None, {"test": {"n": 40, "energy_rmse_within_composition_mev_atom": 10.0}})
    assert tuned.source == "fine-tune" and tuned.sigma_mev == pytest.approx(10 * math.sqrt(2))
    # a committee's spread replaces the model's; the user's replaces both
    assert ordering_phase_error(packaged, 4.0).sigma_mev == pytest.approx(4 * math.sqrt(2))
    assert ordering_phase_error(user_phase_error(7.0), 4.0).sigma_mev == 7.0
    variants = [
        {
            "ordering": "rocksalt",
            "start_tilt": t,
            "phase_tilt": t,
            "energy_per_atom": e,
            "structure_id": t,
            "final_space_group": 1,
            "excluded": None,
        }
        for t, e in (("a0a0a0", -5.0), ("a0a0c-", -5.06))
    ]
    summ = phase_summary(variants, packaged)  # dE_tilt 60 < 2 x 44.9
    assert summ["call"] == "undetermined" and summ["phase_error_mev"] == packaged.sigma_mev
    assert summ["phases_within_error"] == "a0a0c- | a0a0a0" and summ["ground_state_phase"] is None
    assert phase_summary(variants, user_phase_error(10.0))["call"] == "tilted"
    scored = [{**v, "energy_spread_mev_atom": 5.0} for v in variants]
    assert phase_summary(scored, packaged)["phase_error_source"] == "committee"
    assert phase_summary(scored, packaged)["call"] == "tilted"  # 60 > 2 x 7.1


def test_relax_jobs_store_calls_with_the_models_error(db_settings, tmp_path, tiny_model_path, capsys, monkeypatch):
    table = tmp_path / "t.csv"
    table.write_text(TABLE)
    write_compositions(EnumerationSettings(table=str(table), allow_same_b=False, anions=["Cl"]), db_settings)
    build_structures_to_store(BuildSettings(tilts=["a0a0a0", "a-a-a-"]), db_settings)
    # the tiny test model has no card: the stored calls say they are unqualified
    out = relax_store(str(tiny_model_path), FAST, db_settings, device="cpu")
    key = summary_key(out["model"]["model_sha256"], out["settings_hash"])
    docs = CampaignStore(db_settings).phase_summaries(["Cs+_Cs+_Ag+_Bi3+_Cl-"], key, ["composition_id"])
    summ = docs[0]["phases"][key]
    assert summ["call"] in ("tilted", "untilted", "undetermined") and summ["phase_error_source"] == "none"
    assert summ["orderings"]["rocksalt"]["phase_error_mev"] is None
    # with a card next to the model file, new relaxations are called with its sigma
    import json
    import shutil

    from dp_screen.mlip.models import file_sha256

    carded = shutil.copy(tiny_model_path, tmp_path / "carded.model")
    (tmp_path / "carded.json").write_text(json.dumps({"sha256": file_sha256(carded), "phase_error_mev": 1e4}))
    out = relax_store(str(carded), FAST, db_settings, device="cpu")
    key = summary_key(out["model"]["model_sha256"], out["settings_hash"])
    summ = CampaignStore(db_settings).phase_summaries(["Cs+_Cs+_Ag+_Bi3+_Cl-"], key, ["composition_id"])[0]
    summ = summ["phases"][key]
    assert summ["phase_error_source"] == "card" and summ["phase_error_mev"] == 1e4
    assert summ["call"] in ("undetermined", "untilted")  # 2 x 10 eV/atom: no energy difference decides
    # the report and the CLI table say which sigma the calls used
    monkeypatch.setenv("DP_SCREEN_DATABASE", db_settings.database)
    code, text, err = run_cli(
        [
            "--db-uri",
            db_settings.db_uri,
            "report",
            "--out",
            str(tmp_path / "rep"),
            "--model",
            out["model"]["model_sha256"][:12],
        ],
        capsys,
    )
    assert code == 0, err
    assert "sigma 10000.0 meV/atom from the card" in text


# --------------------------------------------------------------------------- 2. labels keep the Hamiltonian
def _input_of(structure) -> str:
    from dp_screen.dft.cp2k import CP2KSettings, write_cp2k_input

    return write_cp2k_input(structure, CP2KSettings())


def _open_shell_with_u(text: str) -> None:
    assert "UKS" in text and "MULTIPLICITY" in text and "PLUS_U_METHOD" in text
    assert "U_MINUS_J [eV] 5.3" in text and "U_MINUS_J [eV] 4.38" in text  # MP's U of Fe and Mo on oxides
    assert "MAGNETIZATION 5" in text  # high-spin Fe3+ (d5)


def test_training_set_cells_reach_cp2k_spin_polarised_with_u(tmp_path):
    from jobflow import run_locally

    from dp_screen.jobs.training import TrainingSetMaker

    table = tmp_path / "sfmo.csv"
    table.write_text(SR2FEMOO6_TABLE)
    maker = TrainingSetMaker(
        n_compositions=1,
        cells_per_composition=2,
        cell_atoms=20,
        seed=1,
        enumeration=EnumerationSettings(table=str(table), bv_filter="exact"),
    )
    job = maker.make()
    out = run_locally(job, create_folders=False, ensure_success=True)[job.uuid][1].output
    assert out["n"] == 2 and {lab["composition_id"] for lab in out["labels"]} == {"Sr2+_Sr2+_Fe3+_Mo5+_O2-"}
    for cell in out["structures"]:
        cell = cell if isinstance(cell, Structure) else Structure.from_dict(cell)
        text = _input_of(cell)
        _open_shell_with_u(text)
        stripped = cell.copy()
        stripped.remove_oxidation_states()
        assert _input_of(stripped) == text  # inferred states give the same input, never a closed-shell run


def test_active_learning_labels_reach_cp2k_spin_polarised_with_u(db_settings, tmp_path):
    from dp_screen.jobs.active_learning import LoopStore, label_pending, prepare_held_out
    from dp_screen.mlip.active_learning import LoopSettings, Oracle

    model = make_tiny_mace(tmp_path / "sfmo.model", [8, 26, 38, 42], seed=2)
    row = {
        "composition_id": "Sr2+_Sr2+_Fe3+_Mo5+_O2-",
        "formula": "Sr2FeMoO6",
        "A": "Sr",
        "nA": 2,
        "A2": "Sr",
        "nA2": 2,
        "B": "Fe",
        "nB": 3,
        "B2": "Mo",
        "nB2": 5,
        "X": "O",
        "nX": -2,
        "expected_ordering": "rocksalt",
    }
    loop = LoopSettings(loop_id="sfmo", oracle="cp2k", start_model=str(model), relax=RelaxSettings(max_steps=10))
    assert prepare_held_out(loop, [row], db_settings, tilts=["a0a0a0", "a0a0c-"])["n"] == 2

    class InputOnly(Oracle):  # records the CP2K input the cp2k oracle would run (no CP2K run needed)
        name = "cp2k"
        inputs: list[str] = []

        def label(self, structures):
            self.inputs += [_input_of(s) for s in structures]
            return ["input recorded only"] * len(structures)

    oracle = InputOnly()
    label_pending(loop, db_settings, oracle=oracle)
    assert len(oracle.inputs) == 2
    for text in oracle.inputs:
        _open_shell_with_u(text)
    # a label stored without oxidation states (as dp_screen < 0.4 stored them) gets its composition's
    store = LoopStore(db_settings)
    doc = store.labels("sfmo", split="held_out")[0]
    plain = Structure.from_dict(doc["structure"])
    plain.remove_oxidation_states()
    store.update_label(doc["label_id"], {"structure": plain.as_dict(), "status": "pending"})
    oracle.inputs.clear()
    label_pending(loop, db_settings, oracle=oracle)
    assert len(oracle.inputs) == 1
    _open_shell_with_u(oracle.inputs[0])


def test_a_structure_without_states_is_inferred_or_refused_by_name():
    from dp_screen.dft.hamiltonian import hamiltonian_for
    from dp_screen.structures.roles import with_oxidation_states

    s = build_bvm_structure(SR2FEMOO6).structure
    plain = s.copy()
    plain.remove_oxidation_states()
    assert hamiltonian_for(plain).as_dict() == hamiltonian_for(s).as_dict()
    assert hamiltonian_for(plain).spin_polarised
    # the composition's assignment wins over guesses (Fe2+/Mo6+ is charge-balanced too)
    other = with_oxidation_states(plain, {"Sr": 2, "Fe": 2, "Mo": 6, "O": -2})
    assert hamiltonian_for(other).moments == {"Fe": 4.0}
    with pytest.raises(InputError, match="structure mine.*no state for Mo"):
        with_oxidation_states(plain, {"Sr": 2, "Fe": 3, "O": -2}, name="mine")
    odd = Structure(plain.lattice, ["Na", "Cl", "Cl"], plain.frac_coords[:3])  # nothing charge-balanced: refused
    with pytest.raises(InputError, match="structure NaCl2 has no oxidation states and none could be inferred"):
        hamiltonian_for(odd)


# ------------------------------------------------------------------------------------ 3. summaries survive
@pytest.fixture
def chloride_store(db_settings, tmp_path):
    table = tmp_path / "t.csv"
    table.write_text(TABLE)
    write_compositions(EnumerationSettings(table=str(table), allow_same_b=False, anions=["Cl"]), db_settings)
    build_structures_to_store(BuildSettings(tilts=["a0a0a0", "a0a0c-", "a-a-a-"]), db_settings)
    return db_settings


def _summaries(db, key):
    ids = [d["composition_id"] for d in CampaignStore(db).compositions(None, ["composition_id"])]
    return {
        d["composition_id"]: (d.get("phases") or {}).get(key)
        for d in CampaignStore(db).phase_summaries(ids, key, ["composition_id"])
    }


def test_a_job_killed_before_its_summaries_leaves_none_missing_after_a_rerun(
    chloride_store, tiny_model_path, monkeypatch
):
    import dp_screen.jobs.relax as relax_job

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed between the last relaxation write and the summary step")

    monkeypatch.setattr(relax_job, "write_phase_summaries", killed)
    with pytest.raises(KeyboardInterrupt):
        relax_store(str(tiny_model_path), FAST, chloride_store, device="cpu")
    monkeypatch.undo()
    again = relax_store(str(tiny_model_path), FAST, chloride_store, device="cpu")
    assert again["relaxed"] == 0 and again["skipped"] == again["structures"] > 0  # nothing relaxed twice
    key = summary_key(again["model"]["model_sha256"], again["settings_hash"])
    summaries = _summaries(chloride_store, key)
    assert summaries and all(s is not None and s["n_variants"] == 3 for s in summaries.values())
    assert again["phase_summaries"] == len(summaries)
    # a third run finds them current: nothing is recomputed
    assert relax_store(str(tiny_model_path), FAST, chloride_store, device="cpu")["phase_summaries"] == 0


def test_two_jobs_over_one_composition_cannot_lose_a_summary(chloride_store, tiny_model_path, monkeypatch):
    from dp_screen.analysis import data

    cid = "Cs+_Cs+_Ag+_Bi3+_Cl-"
    job_a = {"composition_id": {"$in": [cid, "Cs+_Cs+_Ag+_Ca2+_Cl-"]}, "tilt": {"$in": ["a0a0a0"]}}
    job_b = {"composition_id": {"$in": [cid]}, "tilt": {"$in": ["a0a0c-", "a-a-a-"]}}
    original = CampaignStore.write_phase_summaries
    raced = []

    def racing(self, key, summaries, versions=None):
        # job A has read its relaxations and computed its summaries; job B runs to the end before A writes them
        if not raced:
            raced.append(True)
            relax_store(str(tiny_model_path), FAST, chloride_store, query=job_b, device="cpu")
        return original(self, key, summaries, versions)

    monkeypatch.setattr(CampaignStore, "write_phase_summaries", racing)
    out = relax_store(str(tiny_model_path), FAST, chloride_store, query=job_a, device="cpu")
    assert raced
    key = summary_key(out["model"]["model_sha256"], out["settings_hash"])
    summ = _summaries(chloride_store, key)[cid]
    assert summ["n_variants"] == 3  # A's stale one-variant summary did not replace B's
    # the digests agree: the phase table (read from them) has all three variants of the composition
    row = data.phase_table(chloride_store).set_index("composition_id").loc[cid]
    assert row["n_variants"] == 3
    orders = [d["order"] for d in CampaignStore(chloride_store).phase_digests(key)]
    assert orders == sorted(orders) and len(set(orders)) == len(orders)  # numbered by the server's counter


def test_the_highest_phase_version_wins_whatever_the_digest_order():
    older_but_newer_version = {"composition_ids": ["c1", "c2"], "versions": [3, 1]}
    newer_but_stale = {"composition_ids": ["c1"], "versions": [2]}
    legacy = {"composition_ids": ["c2"]}  # before versions: ranks below any versioned row
    rows = latest_rows([legacy, older_but_newer_version, newer_but_stale])
    assert rows == [(1, 0), (1, 1)]


def test_enumerating_again_keeps_the_phase_summaries(chloride_store, tiny_model_path, tmp_path):
    out = relax_store(str(tiny_model_path), FAST, chloride_store, device="cpu", limit=3)
    key = summary_key(out["model"]["model_sha256"], out["settings_hash"])
    before = {c: s for c, s in _summaries(chloride_store, key).items() if s}
    assert before
    other = tmp_path / "other.csv"  # another table that still holds those compositions
    other.write_text(TABLE + "B,In,3\n")
    write_compositions(EnumerationSettings(table=str(other), allow_same_b=False, anions=["Cl"]), chloride_store)
    after = _summaries(chloride_store, key)
    assert {c: after[c] for c in before} == before


# ------------------------------------------------------------------------- 4. structures from elsewhere
def test_a_cif_without_site_roles_is_identified_gated_and_ranked(tmp_path, tiny_model_path, capsys):
    from dp_screen.mlip.models import load_model
    from dp_screen.mlip.relax import relax_structures
    from dp_screen.structures.perovskite_check import check_perovskite
    from dp_screen.structures.phases import compare_phases, identify_phase

    cs2agbicl6 = SiteSpeciesSet(("Cs", 1), ("Cs", 1), ("Ag", 1), ("Bi", 3), ("Cl", -1))
    model = load_model(str(tiny_model_path), device="cpu")
    plain, expected = {}, {}
    for tilt in ("a0a0a0", "a-a-a-"):
        (res,) = relax_structures([build_bvm_structure(cs2agbicl6, "rocksalt", tilt).structure], model, FAST)
        expected[tilt] = identify_phase(res.structure, "rocksalt", tilt)
        path = tmp_path / f"{tilt}.cif"
        CifWriter(res.structure).write_file(path)  # pymatgen's CIF: no site roles; the states we strip
        s = Structure.from_file(path)
        s.remove_oxidation_states()
        assert "site" not in s.site_properties
        plain[tilt] = s
    energies = []
    for tilt, s in plain.items():
        phase = identify_phase(s)  # roles and ordering inferred
        assert phase.space_group == expected[tilt].space_group and phase.phase == tilt
        assert check_perovskite(s).ok
        (res,) = relax_structures([s], model, FAST)
        energies.append({"tilt": identify_phase(res.structure).phase, "energy_per_atom": res.energy_per_atom})
    assert compare_phases(energies, 1.0)["call"] in ("tilted", "untilted", "undetermined")
    assert set(compare_phases(energies, 1.0)["energies_mev_atom"]) <= {"a0a0a0", "a-a-a-"}
    # SrTiO3 as a plain structure: a0a0a0 (Pm-3m), not "SG221"
    srtio3 = build_bvm_structure(SiteSpeciesSet(("Sr", 2), ("Sr", 2), ("Ti", 4), ("Ti", 4), ("O", -2))).structure
    CifWriter(srtio3).write_file(tmp_path / "srtio3.cif")
    assert identify_phase(Structure.from_file(tmp_path / "srtio3.cif")).phase == "a0a0a0"
    # the CLI relaxes a CIF from elsewhere and names its phase
    code, out, err = run_cli(
        [
            "relax",
            "--structure",
            str(tmp_path / "a-a-a-.cif"),
            "--model",
            str(tiny_model_path),
            "--max-steps",
            "20",
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    import json

    got = json.loads(out)
    assert got["ordering"] == "rocksalt" and got["phase"] == "a-a-a-" and got["perovskite_check"]["ok"]


def test_each_ordering_is_recovered_and_a_non_perovskite_refused_by_name(tmp_path):
    from dp_screen.structures.roles import infer_site_roles

    nalamgwo6 = SiteSpeciesSet(("Na", 1), ("La", 3), ("Mg", 2), ("W", 6), ("O", -2))
    for ordering, tilt in (("layered", "a-a-c+"), ("rocksalt-A", "a0a0c-")):
        built = build_bvm_structure(nalamgwo6, ordering, tilt).structure
        plain = Structure(built.lattice, [sp.symbol for sp in built.species], built.frac_coords)
        s, found = infer_site_roles(plain)
        assert found == ordering
        roles = {(r, sp.symbol) for r, sp in zip(s.site_properties["site"], s.species, strict=True)}
        assert roles == {("A", "Na"), ("A2", "La"), ("B", "Mg"), ("B2", "W"), ("X", "O")}
    rocksalt_nacl = Structure.from_spacegroup(
        "Fm-3m", [[5.64, 0, 0], [0, 5.64, 0], [0, 0, 5.64]], ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )
    with pytest.raises(InputError, match="structure halite: cannot infer .* 4 anions and 4 cations of 8 sites"):
        infer_site_roles(rocksalt_nacl, name="halite")


# -------------------------------------------------------------------------------------- 5. smaller holes
def test_check_every_is_in_the_settings_hash_and_labels_follow_a_rule():
    from dp_screen.jobs.relax import relaxation_config
    from dp_screen.schemas.structure import settings_hash
    from dp_screen.structures.phases import phase_label

    def h(s):
        return settings_hash(relaxation_config(s, "float64"))

    assert h(RelaxSettings(check_every=5)) != h(RelaxSettings(check_every=10))
    assert h(RelaxSettings()) == h(RelaxSettings())
    # I-1 (2): a0b-c-, a-b-b- and a-b-c- all give it; the least distorted wins, in any order of the table
    for order in (["a-b-c-", "a0b-c-", "a-b-b-"], ["a-b-b-", "a-b-c-", "a0b-c-"]):
        assert phase_label(2, order, None) == "a0b-c-"
        assert phase_label(2, order, "a-b-b-") == "a-b-b-"  # the start tilt, where the group still allows it
    assert phase_label(2, ["a-b-c-", "a-b-b-"], None) == "a-b-b-"  # fewer independent amplitudes
