"""Trend analysis on a small store whose answers are known by construction.

The compositions are enumerated for real; the relaxation and validation documents are written with chosen energies
and space groups (test input, not results), so every trend below has an answer worked out by hand.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pymongo
import pytest

from dp_screen.analysis import data, trends
from dp_screen.errors import InputError
from dp_screen.jobs.enumerate import EnumerationSettings, write_compositions

TABLE = """site,element,oxidation_state
A,Ba,2
A,Cs,1
B,Mg,2
B,Ca,2
B,Ni,2
B,Ag,1
B,Na,1
B,W,6
B,Mo,6
B,Te,6
B,Bi,3
B,In,3
X,O,-2
X,Cl,-1
"""
MODEL, OTHER, SH = "a" * 64, "b" * 64, "s1"
BS, BPS = ["Mg", "Ca", "Ni"], ["W", "Mo", "Te"]
SG = {"a0a0a0": 225, "a0a0c-": 87, "a-a-a-": 148}
TILT_OF = {g: t for t, g in SG.items()}


def _relaxation(cid, tilt, e, sg, model=MODEL, method="bvm", converged=True, failed=False, n_steps=20, reason=None):
    sid = f"{cid}:rocksalt:{tilt}:{method}"
    return {
        "relaxation_id": f"{sid}|{model[:12]}|{SH}",
        "structure_id": sid,
        "composition_id": cid,
        "formula": cid,
        "ordering": "rocksalt",
        "start_tilt": tilt,
        "method": method,
        "model_sha256": model,
        "model_name": "test",
        "settings_hash": SH,
        "energy_per_atom": e,
        "converged": converged,
        "failed": failed,
        "reason": reason,
        "n_steps": n_steps,
        "wall_time_s": 0.5,
        "phase": {"space_group": sg, "stayed_in_start_tilt": sg == SG[tilt]},
        # the phase it ended in (a tilted start that came back to Fm-3m is ranked as untilted), and why it is out
        "final_space_group": sg,
        "phase_tilt": TILT_OF.get(sg, f"SG{sg}"),
        "excluded": "failed" if failed else None if converged else "not_converged",
        "created_at": datetime.now(UTC),
    }


def _ba(b, bp):
    return f"Ba2+_Ba2+_{b}2+_{bp}6+_O2-"


def ba_de(i, j):
    """The designed dE (meV/atom) of Ba2 B_i B'_j O6."""
    return 6.0 * i + 3.0 * j


@pytest.fixture
def known_store(db_settings, tmp_path):
    table = tmp_path / "t.csv"
    table.write_text(TABLE)
    write_compositions(EnumerationSettings(table=str(table), allow_same_b=False), db_settings)
    docs = []
    for i, b in enumerate(BS):
        for j, bp in enumerate(BPS):
            cid, e0, de = _ba(b, bp), -7.0 - 0.1 * i, ba_de(i, j)
            low = "a-a-a-" if j == 2 else "a0a0c-"
            other = "a0a0c-" if low == "a-a-a-" else "a-a-a-"
            docs.append(_relaxation(cid, "a0a0a0", e0, 225, n_steps=10 + i))
            if de == 0:  # both tilted starts relaxed back to the cubic cell, 0.5 meV/atom higher
                docs += [_relaxation(cid, t, e0 + 5e-4, 225, n_steps=30) for t in ("a0a0c-", "a-a-a-")]
            else:
                docs.append(_relaxation(cid, low, e0 - de / 1000, SG[low], n_steps=40 + j))
                docs.append(_relaxation(cid, other, e0 - de / 2000, SG[other], n_steps=50, converged=j != 1))
    cl = "Cs+_Cs+_{}_{}_Cl-".format
    docs += [
        # a tilted start that relaxed back, 0.4 meV/atom below the untilted one: noise, not a tilted ground state
        _relaxation(cl("Ag+", "Bi3+"), "a0a0a0", -3.0, 225),
        _relaxation(cl("Ag+", "Bi3+"), "a0a0c-", -3.0004, 225),
        _relaxation(cl("Ag+", "In3+"), "a0a0a0", -3.0, 225),
        _relaxation(cl("Ag+", "In3+"), "a-a-a-", -3.020, 148),
        # no untilted variant
        _relaxation(cl("Na+", "Bi3+"), "a0a0c-", -3.0, 87),
        _relaxation(cl("Na+", "Bi3+"), "a-a-a-", -2.99, 148),
        # a failed relaxation with an absurd energy is ignored; two methods share the untilted tilt
        _relaxation(cl("Na+", "In3+"), "a0a0a0", -100.0, 1, failed=True, converged=False, reason="blew up"),
        _relaxation(cl("Na+", "In3+"), "a0a0a0", -3.0, 225, method="dls"),
        _relaxation(cl("Na+", "In3+"), "a0a0c-", -3.005, 87),
        # another model, fewer relaxations: not picked by default
        _relaxation(_ba("Mg", "W"), "a0a0a0", -9.0, 225, model=OTHER),
        _relaxation(_ba("Mg", "W"), "a0a0c-", -9.1, 12, model=OTHER),
    ]
    client = pymongo.MongoClient(db_settings.db_uri)
    client[db_settings.database]["relaxations"].insert_many(docs)
    client.close()
    return db_settings


def test_phase_table_picks_lowest_variant_with_tolerance(known_store):
    phases = trends_phases = data.phase_table(known_store)
    assert trends_phases.attrs["model_sha256"] == MODEL
    assert len(phases) == 13
    row = phases.set_index("composition_id")
    for i, b in enumerate(BS):
        for j, bp in enumerate(BPS):
            r = row.loc[_ba(b, bp)]
            assert r["dE_untilted_mev_atom"] == pytest.approx(ba_de(i, j), abs=1e-6)
            assert r["ground_state_tilted"] == (ba_de(i, j) > 1.0)
            assert r["winning_space_group"] == (225 if ba_de(i, j) == 0 else SG["a-a-a-" if j == 2 else "a0a0c-"])
            assert r["n_variants"] == 3 and r["B_sp"] == f"{b}2+" and r["B2_sp"] == f"{bp}6+" and r["X_sp"] == "O2-"
    # j == 1: the second tilted variant did not converge: kept out, and counted
    assert row.loc[_ba("Ca", "Mo"), "n_ranked"] == 2 and row.loc[_ba("Ca", "Mo"), "excluded"] == {"not_converged": 1}
    assert set(row.loc[_ba("Ca", "Mo"), "energies_mev_atom"]) == {"a0a0a0", "a0a0c-"}
    # a0a0c- start that relaxed back to Fm-3m, 0.4 meV/atom lower: ranked as the untilted phase it ended in
    agbi = row.loc["Cs+_Cs+_Ag+_Bi3+_Cl-"]
    assert agbi["lowest_tilt"] == "a0a0a0" and agbi["dE_untilted_mev_atom"] == pytest.approx(0.0, abs=1e-9)
    assert not agbi["ground_state_tilted"] and agbi["winning_space_group"] == 225
    nabi = row.loc["Cs+_Cs+_Na+_Bi3+_Cl-"]
    assert np.isnan(nabi["dE_untilted_mev_atom"]) and nabi["ground_state_tilted"] is None
    # no untilted variant to compare with: undetermined, and no winning group claimed
    assert nabi["call"] == "undetermined" and pd.isna(nabi["winning_space_group"])
    assert nabi["phases_within_error"] == "a0a0c-" and nabi["lowest_tilt"] == "a0a0c-"
    # no model card for this model: the calls are unqualified (1 meV/atom noise band)
    assert phases["phase_error_mev"].isna().all() and set(phases["phase_error_source"]) == {"none"}
    assert agbi["call"] == "untilted" and row.loc["Cs+_Cs+_Ag+_In3+_Cl-", "call"] == "tilted"
    nain = row.loc["Cs+_Cs+_Na+_In3+_Cl-"]
    assert nain["dE_untilted_mev_atom"] == pytest.approx(5.0, abs=1e-6) and nain["n_variants"] == 3
    assert nain["n_ranked"] == 2 and nain["excluded"] == {"failed": 1}
    assert nain["energies_mev_atom"] == pytest.approx({"a0a0a0": 5.0, "a0a0c-": 0.0}, abs=1e-6)
    # a sigma given by the user: a small one does not make a start that came back to the untilted cell tilted
    strict = data.phase_table(known_store, phase_error_mev=0.1).set_index("composition_id")
    assert strict.loc["Cs+_Cs+_Ag+_Bi3+_Cl-", "call"] == "untilted"
    assert strict.loc["Cs+_Cs+_Na+_In3+_Cl-", "call"] == "tilted"
    assert (strict["phase_error_mev"] == 0.1).all() and set(strict["phase_error_source"]) == {"user"}
    # a large one leaves every dE_tilt within 2 sigma undetermined: 2 x 3.2 = 6.4 meV/atom
    wide = data.phase_table(known_store, phase_error_mev=3.2).set_index("composition_id")
    for i, b in enumerate(BS):
        for j, bp in enumerate(BPS):
            de = ba_de(i, j)
            assert wide.loc[_ba(b, bp), "call"] == ("untilted" if de == 0 else "tilted" if de > 6.4 else "undetermined")
    assert wide.loc["Cs+_Cs+_Na+_In3+_Cl-", "call"] == "undetermined"  # 5 < 6.4
    assert wide.loc["Cs+_Cs+_Na+_In3+_Cl-", "phases_within_error"] == "a0a0c- | a0a0a0"
    # the other model on request (by prefix)
    other = data.phase_table(known_store, model_sha256="bbbb")
    assert len(other) == 1 and other.iloc[0]["dE_untilted_mev_atom"] == pytest.approx(100.0)
    assert other.iloc[0]["winning_space_group"] == 12
    # server-side filter on the relaxations
    oxides = data.phase_table(known_store, query={"composition_id": {"$regex": "O2-$"}})
    assert len(oxides) == 9


def test_trends_by_site_tolerance_and_fractions(known_store):
    phases = data.phase_table(known_store)
    # the undetermined call (Na/Bi: no untilted variant) is counted apart, not folded into either side
    assert trends.tilted_fraction(phases) == {
        "n": 12,
        "n_tilted": 10,
        "n_untilted": 2,
        "n_undetermined": 1,
        "fraction": pytest.approx(10 / 12),
    }
    oxides = phases[phases["X_sp"] == "O2-"]
    by_bp = trends.trend_by(oxides, "B2_sp")
    for j, bp in enumerate(BPS):
        des = [ba_de(i, j) for i in range(3)]
        r = by_bp.loc[f"{bp}6+"]
        assert r["n"] == 3 and r["dE_mean"] == pytest.approx(np.mean(des)) and r["dE_max"] == pytest.approx(max(des))
        assert r["tilted_fraction"] == pytest.approx(np.mean([d > 1 for d in des]))
    assert by_bp.loc["W6+", "top_space_group"] == 87 and by_bp.loc["W6+", "top_space_group_fraction"] == pytest.approx(
        2 / 3
    )
    assert by_bp.loc["Te6+", "top_space_group"] == 148 and by_bp.loc["Te6+", "top_space_group_fraction"] == 1.0
    by_b = trends.trend_by(oxides, "B_sp")
    assert by_b.loc["Ni2+", "dE_median"] == pytest.approx(ba_de(2, 1))
    by_x = trends.trend_by(phases, ["A2_sp", "X_sp"])
    assert by_x.loc[("Ba2+", "O2-"), "n"] == 9 and by_x.loc[("Cs+", "Cl-"), "n"] == 4
    assert by_x.loc[("Cs+", "Cl-"), "n_with_dE"] == 3
    fractions = trends.phase_fractions(phases, "X_sp")
    assert fractions.loc["O2-"].to_dict() == pytest.approx({87: 5 / 9, 148: 3 / 9, 225: 1 / 9, "undetermined": 0})
    # Na/Bi (no untilted variant) is undetermined: a column of its own, not counted as its lowest group (87)
    assert fractions.loc["Cl-"].to_dict() == pytest.approx({87: 0.25, 148: 0.25, 225: 0.25, "undetermined": 0.25})
    by_t = trends.trend_by_tolerance(phases)
    assert by_t["n"].sum() == 13
    for interval, r in by_t.iterrows():
        inside = phases[(phases["goldschmidt_t"] > interval.left) & (phases["goldschmidt_t"] <= interval.right)]
        assert r["n"] == len(inside)
        assert r["dE_mean"] == pytest.approx(inside["dE_untilted_mev_atom"].mean(), nan_ok=True)
    top = trends.ranked(phases, 3)
    assert top["dE_untilted_mev_atom"].tolist() == pytest.approx([20.0, 18.0, 15.0])  # AgIn, Ni/Te, Ni/Mo
    assert top["formula"].iloc[0] == "Cs2AgInCl6" and len(trends.ranked(phases, 100)) == 12
    with pytest.raises(InputError, match="no column.*'Bprime'"):
        trends.trend_by(phases, "Bprime")


def test_convergence_stats(known_store):
    conv = trends.convergence_stats(known_store)
    assert conv["model_sha256"] == MODEL
    overall = conv["overall"]
    assert overall["n"] == 27 + 9 and overall["failed"] == 1
    assert overall["converged"] == 36 - 1 - 3  # the failed one and the three j == 1 second tilted variants
    t = conv["by_tilt"]
    assert t.loc["a0a0a0", "n"] == 9 + 4 and t.loc["a0a0a0", "failed_fraction"] == pytest.approx(1 / 13)
    assert t.loc["a0a0a0", "steps_mean"] == pytest.approx((3 * (10 + 11 + 12) + 4 * 20) / 13)
    assert t.loc["a0a0a0", "steps_max"] == 20
    assert conv["reasons"] == {"blew up": 1}
    assert overall["steps_max"] == 50


def _validation(cid, tilt, e_dft, e_mlip, method="cp2k-pbe", force_mae=0.1, scf=True):
    rid = f"{cid}:rocksalt:{tilt}:bvm|{MODEL[:12]}|{SH}"
    return {
        "validation_id": f"{rid}|{method}",
        "relaxation_id": rid,
        "structure_id": rid.split("|")[0],
        "composition_id": cid,
        "formula": cid,
        "X": cid.rsplit("_", 1)[-1].rstrip("+-0123456789"),
        "start_tilt": tilt,
        "space_group": SG[tilt],
        "method": method,
        "n_atoms": 10,
        "dft_energy_per_atom": e_dft,
        "mlip_energy_per_atom": e_mlip,
        "force_mae": force_mae,
        "stress_mae_gpa": 0.5,
        "model_sha256": MODEL,
        "scf_converged": scf,
    }


def test_parity_stats(known_store):
    """Phase energy differences relative to each composition's untilted variant, worked by hand."""
    cawo, agin, agbi = _ba("Ca", "W"), "Cs+_Cs+_Ag+_In3+_Cl-", "Cs+_Cs+_Ag+_Bi3+_Cl-"
    docs = [
        _validation(cawo, "a0a0a0", -8.000, -7.000),
        _validation(cawo, "a0a0c-", -8.010, -7.012),
        _validation(cawo, "a-a-a-", -8.004, -7.003),
        _validation(agin, "a0a0a0", -3.00, -2.51, force_mae=0.3),
        _validation(agin, "a-a-a-", -3.02, -2.50),
        _validation(agbi, "a0a0a0", -3.1, -3.0),
        # its SCF did not converge: left out (it would add a -400 meV/atom difference) and counted
        _validation(agbi, "a0a0c-", -3.5, -3.0, scf=False),
        _validation(cawo, "a0a0a0", -5.0, -7.0, method="vasp-pbesol"),
    ]
    client = pymongo.MongoClient(known_store.db_uri)
    client[known_store.database]["validations"].insert_many(docs)
    client.close()
    vals = data.validation_table(known_store)
    assert len(vals) == 8 and set(vals["B2"]) == {"W", "In", "Bi"}
    rel = trends.parity_table(vals)
    assert len(rel) == 3  # CaWO: two tilted variants; AgIn: one; AgBi's only tilted one had no SCF; VASP: untilted only
    # E(tilt) - E(untilted) in meV/atom: CaWO dft [-10, -4], mlip [-12, -3]; AgIn dft [-20], mlip [+10]
    err = np.array([-2.0, 1.0, 30.0])
    assert sorted(rel["error_mev"]) == pytest.approx(sorted(err))
    stats = trends.parity_stats(vals, absolute_methods=("cp2k-pbe",))
    cp2k = stats.loc["cp2k-pbe"]
    assert cp2k["n_structures"] == 6 and cp2k["n_scf_unconverged"] == 1 and cp2k["n_compositions"] == 2
    assert cp2k["n_differences"] == 3
    assert cp2k["energy_mae_mev"] == pytest.approx(11.0)
    assert cp2k["energy_rmse_mev"] == pytest.approx(np.sqrt((4 + 1 + 900) / 3))
    # ranks [a0a0c-, a-a-a-, a0a0a0]: CaWO the same order (1); AgIn reversed (-1)
    assert cp2k["rank_correlation"] == pytest.approx(0.0)
    assert cp2k["ground_state_agreement"] == pytest.approx(0.5)  # CaWO both a0a0c-; AgIn DFT a-a-a-, MLIP untilted
    assert cp2k["abs_energy_mae_mev"] == pytest.approx((1000 + 998 + 1001 + 490 + 520 + 100) / 6)
    assert cp2k["force_mae"] == pytest.approx((5 * 0.1 + 0.3) / 6)
    vasp = stats.loc["vasp-pbesol"]
    assert vasp["n_structures"] == 1 and np.isnan(vasp["energy_mae_mev"]) and np.isnan(vasp["abs_energy_mae_mev"])


def test_loading_and_bad_input(known_store):
    df = data.load_collection("relaxations", {"failed": True}, ["composition_id", "phase.space_group"], known_store)
    assert df.to_dict("records") == [{"composition_id": "Cs+_Cs+_Na+_In3+_Cl-", "phase.space_group": 1}]
    sets = data.relaxation_sets(known_store)
    assert sets["model_sha256"].tolist() == [MODEL, OTHER] and sets["n"].tolist() == [36, 2]
    grouped = data.aggregate("compositions", [{"$group": {"_id": "$X", "n": {"$sum": 1}}}], known_store)
    every_x = data.load_collection("compositions", projection=["X"], db=known_store)["X"]
    assert (
        dict(zip(grouped["_id"], grouped["n"], strict=True)) == every_x.value_counts().to_dict() and len(every_x) == 29
    )
    assert data.describe_store(known_store)["counts"]["relaxations"] == 38
    with pytest.raises(InputError, match="unknown collection 'relax'.*relaxations"):
        data.load_collection("relax", db=known_store)
    with pytest.raises(InputError, match="no relaxations with model 'cccc'.*aaaaaaaaaaaa"):
        data.phase_table(known_store, model_sha256="cccc")
    with pytest.raises(InputError, match=r"model 'a\(' is not a sha256.*hexadecimal"):
        trends.convergence_stats(known_store, model_sha256="a(")
    empty = data.phase_table(known_store, query={"composition_id": "nothing"})
    assert empty.empty and "dE_untilted_mev_atom" in empty.columns
    assert trends.tilted_fraction(empty)["fraction"] is None
    assert isinstance(trends.trend_by(empty, "X_sp"), pd.DataFrame)


def _add_validations(settings):
    cawo, agin = _ba("Ca", "W"), "Cs+_Cs+_Ag+_In3+_Cl-"
    docs = [
        _validation(cawo, "a0a0a0", -8.000, -7.000),
        _validation(cawo, "a0a0c-", -8.010, -7.012),
        _validation(agin, "a0a0a0", -3.00, -2.51),
        _validation(agin, "a-a-a-", -3.02, -2.50),
    ]
    client = pymongo.MongoClient(settings.db_uri)
    client[settings.database]["validations"].insert_many(docs)
    client.close()


def test_heatmap_holds_the_designed_grid(known_store):
    from dp_screen.analysis import plots

    phases = data.phase_table(known_store)
    fig = plots.plot_de_heatmap(phases, "Ba", "Ba2+", "O")
    ax = fig.axes[0]
    grid = np.asarray(ax.images[0].get_array())
    rows = [t.get_text() for t in ax.get_yticklabels()]
    cols = [t.get_text() for t in ax.get_xticklabels()]
    for r, b in enumerate(rows):
        for c, bp in enumerate(cols):
            assert grid[r, c] == pytest.approx(ba_de(BS.index(b[:-2]), BPS.index(bp[:-2])))
    assert "meV/atom" in fig.axes[1].get_ylabel() and ax.get_xlabel() == "B' cation"
    with pytest.raises(InputError, match="no relaxed compositions with A=Sr.*Ba/Ba/O"):
        plots.plot_de_heatmap(phases, "Sr", "Sr", "O")


def test_report_renders_every_figure(known_store, tmp_path, capsys, monkeypatch):
    from conftest import run_cli

    _add_validations(known_store)
    monkeypatch.setenv("DP_SCREEN_DATABASE", known_store.database)
    args = ["--db-uri", known_store.db_uri]
    code, out, err = run_cli([*args, "report", "--out", str(tmp_path / "rep"), "--json"], capsys)
    assert code == 0, err
    rep = json.loads(out)
    page = (tmp_path / "rep" / "index.html").read_text()
    expected = {
        "composition_space",
        "phase_fractions",
        "de_histogram",
        "de_vs_tolerance",
        "heatmap_Ba2p_Ba2p_O2m",
        "heatmap_Csp_Csp_Clm",
        "parity",
        "convergence",
    }
    assert set(rep["figures"]) == expected and rep["missing"] == []
    for name, path in rep["figures"].items():
        png = open(path, "rb").read()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000, name
        assert f'src="figures/{name}.png"' in page
    assert "10 called tilted, 2 untilted (83.3% tilted of the 12 determined calls) and 1 undetermined" in page
    assert MODEL in page and "unqualified" in page
    assert "report: grouping 38 relaxations by composition ..." in err
    largest = pd.read_csv(rep["tables"]["largest_dE"])
    assert largest["dE_untilted_mev_atom"].iloc[0] == pytest.approx(20.0)
    stats = pd.read_csv(rep["tables"]["parity_stats"], index_col=0)
    assert stats.loc["cp2k-pbe", "n_compositions"] == 2
    by_bp = pd.read_csv(rep["tables"]["trend_by_B2"], index_col=0)
    assert by_bp.loc["Te6+", "dE_mean"] == pytest.approx(np.mean([ba_de(i, 2) for i in range(3)]))
    # chosen heatmaps, a sigma given by the user; bad options name the value
    code, out, err = run_cli(
        [*args, "report", "--out", str(tmp_path / "r2"), "--heatmap", "Cs,Cs,Cl", "--phase-error", "3.2"], capsys
    )
    assert code == 0 and "wrote" in out
    assert "calls: 6 tilted, 2 untilted, 5 undetermined" in out and "sigma 3.2 meV/atom from the user" in out
    code, out, err = run_cli([*args, "report", "--out", str(tmp_path / "r4"), "--phase-error", "-1"], capsys)
    assert code != 0 and "-1" in err
    assert sorted(p.name for p in (tmp_path / "r2" / "figures").glob("heatmap_*")) == ["heatmap_Cs_Cs_Cl.png"]
    code, out, err = run_cli([*args, "report", "--out", str(tmp_path / "r3"), "--heatmap", "Cs,Cl"], capsys)
    assert code == 1 and "--heatmap 'Cs,Cl' is not A,A',X" in err
    code, out, err = run_cli([*args, "report", "--out", str(tmp_path / "r3"), "--model", "ffff"], capsys)
    assert code == 1 and "no relaxations with model 'ffff'" in err


def test_report_of_an_empty_store_says_what_is_missing(db_settings, tmp_path):
    from dp_screen.analysis.report import write_report

    rep = write_report(tmp_path / "empty", db_settings)
    page = rep.html.read_text()
    assert rep.figures == {} and set(rep.missing) == {"composition_space", "phases", "validation", "convergence"}
    assert "No relaxations in the store yet" in page and "dp-screen enumerate" in page
