"""The dp-screen command: summaries, store writes and one-line errors with non-zero exits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_cli


def run(args, capsys):
    return run_cli(args, capsys)


def test_dry_run_json_counts(capsys):
    code, out, _ = run(["enumerate", "--dry-run", "--json"], capsys)
    assert code == 0
    assert json.loads(out) == {
        "total": 220570,
        "with_Cs": 33520,
        "by_anion": {"Br": 19050, "Cl": 19050, "F": 19050, "I": 19050, "O": 144370},
        "chemistries": 179400,
        "oxidation_state_twins": 41170,
    }


def test_dry_run_custom_table_and_knobs(capsys, small_table_path):
    code, out, _ = run(["enumerate", "--dry-run", "--json", "--table", str(small_table_path)], capsys)
    assert code == 0 and json.loads(out)["total"] == 35
    code, out, _ = run(
        ["enumerate", "--dry-run", "--json", "--table", str(small_table_path), "--anions", "Cl", "--no-same-b"], capsys
    )
    summary = json.loads(out)
    assert summary["by_anion"] == {"Cl": summary["total"]} and summary["total"] < 15


def test_enumerate_into_store_twice(capsys, db_settings, small_table_path, monkeypatch):
    args = ["--db-uri", db_settings.db_uri, "enumerate", "--table", str(small_table_path), "--json"]
    monkeypatch.setenv("DP_SCREEN_DATABASE", db_settings.database)
    code, out, err = run(args, capsys)
    assert code == 0, err
    first = json.loads(out)
    assert first["inserted"] == 35 and "writing compositions" in err  # the progress bar went to stderr
    code, out, _ = run(args, capsys)
    second = json.loads(out)
    assert second["inserted"] == 0 and second["skipped"] == 35 and second["stored_total"] == 35


def test_descriptors_command(capsys, tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("A,A2,B,B2,X,nA,nA2,nB,nB2\nLa,La,Fe,Ni,O,,,,\nCs,Cs,Ag,Bi,Cl,1,1,1,3\nCs,Cs,Bi,Bi,Cl,,,,\n")
    dst = tmp_path / "out" / "desc.csv"
    code, out, err = run(["descriptors", "--input", str(src), "--output", str(dst)], capsys)
    assert code == 1  # one row could not be balanced
    assert "error: row 3 (Cs, Cs, Bi, Bi, Cl): no charge-balanced assignment" in err
    table = pd.read_csv(dst, keep_default_na=False)
    assert list(table["row"]) == [1, 2, 3]
    assert table.loc[0, "composition_id"] == "La3+_La3+_Fe3+_Ni3+_O2-"
    assert abs(float(table.loc[0, "tau"]) - 1.636) < 0.0015
    assert table.loc[1, "formula"] == "Cs2AgBiCl6" and table.loc[2, "error"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["enumerate", "--dry-run", "--anions", "O,S"],
            "error: unknown anion 'S'; this site table allows X = Br, Cl, F, I, O",
        ),
        (["enumerate", "--dry-run", "--table", "{bad_table}"], "error: bad.csv line 3: unknown element 'Qq'"),
        (["enumerate", "--dry-run", "--table", "{no_radius}"], "error: nr.csv line 2: no Shannon radius for Fe5+"),
        (["enumerate", "--dry-run", "--table", "/nonexistent.csv"], "error: cannot read site table '/nonexistent.csv'"),
        (
            ["--db-uri", "mongodb://127.0.0.1:1", "enumerate"],
            "error: cannot reach the database at mongodb://127.0.0.1:1",
        ),
        (
            ["--db-uri", "mongodb://127.0.0.1:1", "db", "status"],
            "error: cannot reach the database at mongodb://127.0.0.1:1",
        ),
        (
            ["descriptors", "--input", "/nonexistent.csv", "--output", "x.csv"],
            "error: input file '/nonexistent.csv' does not exist",
        ),
        (["descriptors", "--input", "{no_b2}", "--output", "{out}"], "error: input is missing column(s) B2"),
        (
            ["finetune", "--data", "{out}", "--energy-reference", "per_composition"],
            "error: energy_reference 'per_composition' needs a foundation model",
        ),
    ],
)
def test_bad_input_one_line_error(args, message, capsys, tmp_path, monkeypatch):
    bad = tmp_path / "bad.csv"
    bad.write_text("site,element,oxidation_state\nA,Cs,1\nB,Qq,3\nX,Cl,-1\n")
    nr = tmp_path / "nr.csv"
    nr.write_text("site,element,oxidation_state,coordination,radius\nB,Fe,5,6,\n")
    no_b2 = tmp_path / "nob2.csv"
    no_b2.write_text("A,A2,B,X\nCs,Cs,Ag,Cl\n")
    fill = {"bad_table": str(bad), "no_radius": str(nr), "no_b2": str(no_b2), "out": str(tmp_path / "o.csv")}
    args = [a.format(**fill) for a in args]
    monkeypatch.setenv("DP_SCREEN_DB_TIMEOUT_S", "1")
    code, out, err = run(args, capsys)
    assert code == 1
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith(message), err
    assert "Traceback" not in err


def test_malformed_setting_is_reported(capsys, monkeypatch):
    monkeypatch.setenv("DP_SCREEN_DB_TIMEOUT_S", "soon")
    code, _, err = run(["enumerate", "--dry-run"], capsys)
    assert code == 1 and err.startswith("error: malformed dp_screen settings") and "db_timeout_s" in err


def test_installed_command_and_db_lifecycle(tmp_path):
    """The console script itself: db start (reused on a second call), status, stop."""
    exe = Path(sys.executable).parent / "dp-screen"
    home = ["--home", str(tmp_path / "proj")]

    def sh(*args):
        return subprocess.run([str(exe), *home, *args], capture_output=True, text=True, timeout=120)

    first = sh("db", "start")
    assert first.returncode == 0, first.stderr
    again = sh("db", "start")
    assert again.stdout == first.stdout  # same uri and pid: reused
    status = json.loads(sh("db", "status", "--json").stdout)
    assert status["running"] and status["counts"]["compositions"] == 0
    assert sh("db", "stop").stdout.strip() == "embedded database stopped"
    assert json.loads(sh("db", "status", "--json").stdout)["running"] is False
