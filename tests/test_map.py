"""The shipped phase map (src/dp_screen/data/maps, made by scripts/make_map.py): its shape, provenance and calls,
and the script that makes it, run on two compositions."""

from __future__ import annotations

import html
import importlib
import json
import math
import sys
from pathlib import Path

import pandas as pd
import pytest

import dp_screen as dps
from dp_screen.analysis import maps
from dp_screen.errors import InputError
from dp_screen.mlip.models import packaged_model_card
from dp_screen.structures.phases import phase_call

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = [
    "composition_id",
    "formula",
    "ordering",
    "call",
    "B",
    "B2",
    "X",
    "goldschmidt_t",
    "tau_perovskite",
    "hexagonal_candidate",
    "n_variants",
    "n_ranked",
    "variants",
    "model_sha256",
    "build_settings_hash",
    "relax_settings_hash",
    "dp_screen_version",
    "n_family",
]


def _script(monkeypatch):
    """scripts/make_map.py as the module ``make_map``, importable by its worker processes (they unpickle its
    functions by module name; multiprocessing hands them this sys.path)."""
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    monkeypatch.delitem(sys.modules, "make_map", raising=False)
    return importlib.import_module("make_map")


def check_map(table: pd.DataFrame) -> None:
    """What every map must satisfy: provenance of the packaged model, values where they must exist, and calls that
    follow from the stored energies and error bar (the rule of dp_screen.structures.phases.phase_call)."""
    assert not table.empty and set(REQUIRED) <= set(table.columns)
    assert not table[REQUIRED].isna().any().any(), table[REQUIRED].isna().sum()
    assert table["composition_id"].is_unique  # one ordering per composition in the default tilt systems
    assert set(table["model_sha256"]) == {packaged_model_card()["sha256"]}
    assert table["call"].isin(["tilted", "untilted", "undetermined"]).all()
    assert (table["hexagonal_candidate"] == (table["goldschmidt_t"] >= 1.05)).all()
    assert (table["n_family"] >= len(table)).all()
    for r in table.itertuples():
        assert len(r.variants) == r.n_variants and sum(v["excluded"] is None for v in r.variants) == r.n_ranked
        again = phase_call(r.energies_mev_atom, r.phase_error_mev)
        assert again["call"] == r.call, r.composition_id
        if r.call == "tilted":
            assert r.dE_tilt_mev_atom > 2 * r.phase_error_mev
        if r.n_ranked:
            ranked = [v["energy_per_atom"] for v in r.variants if v["excluded"] is None]
            lowest = min(v for v in ranked)
            assert min(r.energies_mev_atom.values()) == pytest.approx(0.0, abs=1e-9)
            assert all(1e3 * (e - lowest) >= -1e-6 for e in ranked)


def test_the_shipped_cs2bbx6_map_loads_with_its_provenance_and_consistent_calls():
    assert "cs2bbx6" in dps.maps()
    table = dps.load_map("cs2bbx6")
    check_map(table)
    assert set(table["X"]) <= {"O", "F", "Cl", "Br", "I"} and (table["formula"].str.startswith("Cs2")).all()
    assert set(table["n_family"]) == {3359}


def test_an_unknown_map_is_named_with_the_shipped_ones():
    with pytest.raises(InputError, match="no shipped map 'cs3'.*cs2bbx6"):
        dps.load_map("cs3")


def test_make_map_appends_and_resumes(tmp_path, monkeypatch):
    """Two compositions, then the same command again: nothing is repeated; the rows pass the map's checks."""
    module = _script(monkeypatch)
    out = tmp_path / "m.csv"
    monkeypatch.setattr(
        sys, "argv", ["make_map.py", "cs2bbx6", "--limit", "2", "--chunk", "1", "--workers", "1", "--out", str(out)]
    )
    module.main()
    first = pd.read_csv(out)
    assert first["composition_id"].nunique() == 2
    module.main()
    assert pd.read_csv(out).equals(first)
    table = first.copy()
    from dp_screen.api import MAP_JSON_COLUMNS

    for column in MAP_JSON_COLUMNS:
        table[column] = [json.loads(v) for v in table[column]]
    check_map(table)
    assert all(not math.isnan(t) for t in table["goldschmidt_t"])


def test_dp_screen_report_writes_the_map_report(tmp_path, capsys):
    """`dp-screen report --map cs2bbx6`: the map's page (tables, trend figures, B x B' per halide) from the shipped
    data, with the counts of the map itself."""
    from conftest import run_cli

    code, out, err = run_cli(["report", "--map", "cs2bbx6", "--out", str(tmp_path / "rep"), "--json"], capsys)
    assert code == 0, err
    written = json.loads(out)
    page = html.unescape(Path(written["html"]).read_text())
    table = dps.load_map("cs2bbx6")
    assert f"cs2bbx6 ({len(table)} of its family's 3359 compositions)" in page
    assert f"The {int(table['hexagonal_candidate'].sum())} hexagonal candidates" in page
    assert {"trends_t", "trends_tau"} <= set(written["figures"])
    assert all(Path(p).exists() for p in written["figures"].values())
    calls = pd.read_csv(tmp_path / "rep" / "calls_by_anion.csv")
    corner = table[~table["hexagonal_candidate"]]
    assert calls["chemistries"].sum() == len(maps.one_per_chemistry(corner)) < len(corner)  # twins counted once
    code, out, err = run_cli(["report", "--map", "cs3", "--out", str(tmp_path / "r2")], capsys)
    assert code != 0 and "no shipped map 'cs3'" in err


@pytest.mark.parametrize("name", dps.maps())
def test_every_shipped_map_passes_the_map_checks(name):
    """Each map in the package (the Cs2BB'X6 family, the space-wide sample): provenance, values and calls."""
    table = dps.load_map(name)
    check_map(table)
    assert int(table["n_family"].iloc[0]) >= len(table)
