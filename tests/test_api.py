"""dp_screen from Python (dp_screen.api): build -> relax -> rank in memory on real (tiny) MACE models, structures from
elsewhere, the same answers as the CLI, no database, the hand-off to atomate2, and the README's quick start."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from pymatgen.core import Structure
from pymatgen.io.cif import CifWriter

import dp_screen as dps
from dp_screen.errors import InputError
from dp_screen.mlip.relax import RelaxSettings

ROOT = Path(__file__).resolve().parents[1]
FAST = RelaxSettings(fmax=0.1, max_stress_gpa=0.5, max_steps=40)
TILTS = ["a0a0a0", "a0a0c-", "a-a-a-"]


@pytest.fixture(scope="module")
def two_formulas(tiny_model_path):
    cells = dps.build(["Cs2AgBiCl6", "Ba2CaMoO6"], tilts=TILTS, progress=False)
    return cells, dps.relax(cells, model=str(tiny_model_path), settings=FAST, progress=False)


def test_build_relax_rank_two_formulas(two_formulas):
    cells, results = two_formulas
    assert [(c.formula, c.tilt) for c in cells] == [(f, t) for f in ("Cs2AgBiCl6", "Ba2CaMoO6") for t in TILTS]
    assert all(c.ordering == "rocksalt" and c.method == "bvm" for c in cells)
    assert cells[0].composition_id == "Cs+_Cs+_Ag+_Bi3+_Cl-" and cells[0].species["B2"] == ("Bi", 3)
    table = dps.rank(results)
    assert list(table["formula"]) == ["Cs2AgBiCl6", "Ba2CaMoO6"] and len(table) == 2
    for row in table.itertuples():
        mine = [r for r in results if r.start.formula == row.formula and r.excluded is None]
        assert row.n_ranked == len(mine) > 0
        lowest = min(mine, key=lambda r: r.energy_per_atom)
        assert row.lowest == lowest.phase.phase  # the lowest ranked relaxation, under the phase it ended in
        assert row.ground_state_cell.structure == lowest.cell.structure
        assert row.call in ("tilted", "untilted", "undetermined")
        assert row.ground_state == {"tilted": row.lowest, "untilted": "a0a0a0", "undetermined": None}[row.call]
        assert row.phase_error_source == "none"  # the tiny model has no measured error: unqualified calls
    # each relaxed cell keeps its identity, with the model in its provenance
    r = results[1]
    assert r.cell.roles == r.start.roles and r.cell.tilt == "a0a0c-" and r.phase.start_tilt == "a0a0c-"
    assert r.cell.provenance["model_sha256"] == r.model["model_sha256"] and r.gate.ok
    assert r.forces.shape == (len(r.cell.structure), 3)
    assert np.linalg.norm(r.forces, axis=1).max() == pytest.approx(r.max_force)
    ground = dps.ground_states(table)
    assert [c.formula for c in ground] == ["Cs2AgBiCl6", "Ba2CaMoO6"]
    assert all(c.provenance["relax_settings"] == FAST.settings_dict() and "call" in c.provenance for c in ground)
    # a sigma given by the user is the error bar of every call
    assert set(dps.rank(results, phase_error=1e4)["call"]) <= {"undetermined", "untilted"}


def test_a_cif_from_elsewhere_relaxes_and_ranks(two_formulas, tiny_model_path, tmp_path):
    _, results = two_formulas
    relaxed = results[2].cell.structure  # Cs2AgBiCl6 a-a-a-, written as any other program would
    CifWriter(relaxed).write_file(tmp_path / "mine.cif")
    plain = Structure.from_file(tmp_path / "mine.cif")
    plain.remove_oxidation_states()
    (r,) = dps.relax(plain, model=str(tiny_model_path), settings=FAST, progress=False)
    assert r.start.method == "external" and r.start.ordering == "rocksalt" and r.start.tilt is None
    assert r.phase.phase == "a-a-a-" and r.gate.ok
    table = dps.rank([r])
    assert len(table) == 1 and table.loc[0, "lowest"] == "a-a-a-" and table.loc[0, "formula"] == "Cs2AgBiCl6"
    with pytest.raises(InputError, match="structure 0 .*cannot infer"):
        dps.relax(
            Structure.from_spacegroup(
                "Fm-3m", [[5.6, 0, 0], [0, 5.6, 0], [0, 0, 5.6]], ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
            ),
            model=str(tiny_model_path),
        )


def test_the_cli_and_the_api_give_the_same_structures_and_energies(tiny_model_path, tmp_path, capsys):
    cif = tmp_path / "sfmo.cif"
    code, out, err = run_cli(
        ["build", "--formula", "Cs2AgBiCl6", "--tilt", "a-a-a-", "--cell", "primitive", "--out", str(cif), "--json"],
        capsys,
    )
    assert code == 0, err
    (cell,) = dps.build("Cs2AgBiCl6", tilts=["a-a-a-"], progress=False)
    from_cli = Structure.from_file(cif)  # (a CIF keeps the cell's parameters, not its orientation)
    assert np.allclose(from_cli.lattice.parameters, cell.structure.lattice.parameters, atol=1e-5)
    assert [s.symbol for s in from_cli.species] == [s.symbol for s in cell.structure.species]
    assert np.allclose(from_cli.frac_coords, cell.structure.frac_coords, atol=1e-5)
    code, out, err = run_cli(
        [
            "relax",
            "--structure",
            str(cif),
            "--model",
            str(tiny_model_path),
            "--max-steps",
            "40",
            "--fmax",
            "0.1",
            "--max-stress",
            "0.5",
            "--device",
            "cpu",
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    cli = json.loads(out)
    (api,) = dps.relax(
        Structure.from_file(cif), model=str(tiny_model_path), settings=FAST, device="cpu", progress=False
    )
    assert cli["energy"] == pytest.approx(api.energy, abs=1e-9) and cli["n_steps"] == api.n_steps
    (built,) = dps.relax(cell, model=str(tiny_model_path), settings=FAST, device="cpu", progress=False)
    assert built.energy == pytest.approx(api.energy, abs=1e-6)  # the API's own cell: the same answer
    assert cli["phase"] == api.phase.phase == "a-a-a-" and cli["converged"] == api.converged


def test_the_api_starts_no_database(tiny_model_path, monkeypatch):
    import dp_screen.stores as stores

    def refuse(*args, **kwargs):
        raise AssertionError("the in-memory API reached for a database")

    monkeypatch.setattr(stores, "database_uri", refuse)
    monkeypatch.setattr(stores.EmbeddedServer, "start", refuse)
    table = dps.screen(
        "Cs2AgBiCl6", tilts=["a0a0a0", "a-a-a-"], model=str(tiny_model_path), settings=FAST, progress=False
    )
    assert len(table) == 1 and table.loc[0, "n_ranked"] == 2


def test_bad_input_names_the_value_and_what_is_allowed(tiny_model_path):
    with pytest.raises(InputError, match="tilt system 'a9b9' not available; allowed: a0a0a0"):
        dps.build("Cs2AgBiCl6", tilts=["a9b9"])
    with pytest.raises(InputError, match="ordering 'layered' not available; allowed: rocksalt"):
        dps.build("Cs2AgBiCl6", orderings=["layered"])
    with pytest.raises(InputError, match="unknown method 'spuds'; allowed: bvm, dls"):
        dps.build("Cs2AgBiCl6", method="spuds")
    with pytest.raises(InputError, match="Xx"):
        dps.build("Cs2XxBiCl6")
    with pytest.raises(InputError, match="item 0 is a int"):
        dps.relax([42], model=str(tiny_model_path))
    with pytest.raises(InputError, match="a_site 'Zz'"):
        dps.compositions(anions=["Cl"], a_site="Zz")


def test_a_cell_goes_to_dft_input_with_its_oxidation_states():
    from dp_screen.dft.cp2k import CP2KSettings, write_cp2k_input

    (cell,) = dps.build("Sr2Fe3+Mo5+O6", tilts=["a0a0a0"], progress=False)
    text = write_cp2k_input(cell, CP2KSettings())
    assert text == write_cp2k_input(cell.structure, CP2KSettings())
    assert "UKS" in text and "U_MINUS_J [eV] 5.3" in text and "MAGNETIZATION 5" in text


def test_cells_convert_to_and_from_ase_and_json():
    from monty.json import MontyDecoder, MontyEncoder

    (cell,) = dps.build("NaLaMgWO6", orderings=["layered"], tilts=["a-a-c+"], progress=False)
    assert cell.ordering == "layered" and cell.species["A2"] == ("La", 3)
    back = dps.PerovskiteCell.from_ase(cell.to_ase())
    assert back.ordering == "layered" and back.composition_id == cell.composition_id
    again = json.loads(json.dumps(cell, cls=MontyEncoder), cls=MontyDecoder)
    assert isinstance(again, dps.PerovskiteCell) and again.structure == cell.structure and again.tilt == "a-a-c+"
    orderings = {c.ordering for c in dps.build("NaLaMgWO6", orderings="all", tilts=["a0a0a0"], progress=False)}
    assert orderings == {"layered", "rocksalt-A"}
    space = dps.compositions(anions=["Cl"], a_site="Cs")
    assert len(space) == 725 and (space["A2"] == "Cs").all() and (space["X"] == "Cl").all()


def test_ground_states_go_to_atomate2(tiny_model_path):
    sys.path.insert(0, str(ROOT / "workflows"))
    try:
        import atomate2_handoff
    finally:
        sys.path.pop(0)
    docs = atomate2_handoff.run(["Cs2AgBiCl6"], model=str(tiny_model_path), tilts=["a0a0a0", "a-a-a-"])
    doc = docs["Cs2AgBiCl6"]
    assert np.isfinite(doc.output.energy) and doc.output.structure.composition.reduced_formula == "Cs2AgBiCl6"
    # atomate2 ran the same MACE file: its final energy is that model's energy of its final structure
    from dp_screen.mlip.models import load_model
    from dp_screen.mlip.relax import single_points

    (again,) = single_points([doc.output.structure], load_model(str(tiny_model_path), device="cpu"))
    assert again["energy"] == pytest.approx(doc.output.energy, abs=1e-5)


QUICK_START = """import dp_screen as dps

table = dps.screen(["Ba2CaWO6", "Cs2AgBiCl6"])   # build -> relax (packaged MACE model) -> rank
print(table[["formula", "call", "lowest", "phases_within_error", "phase_error_mev"]])
cells = dps.build("Sr2FeMoO6")                    # or step by step: bond-valence starts, 5 tilt systems
results = dps.relax(cells, model="default")       # a MACE file or foundation name; CUDA when present
ground = dps.ground_states(dps.rank(results))     # relaxed cells with provenance, e.g. for atomate2
"""


def test_the_readme_quick_start_runs_as_written():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Python quick start\n.*?```python\n(.*?)```", readme, re.S)
    assert block and block.group(1) == QUICK_START and len(QUICK_START.strip().splitlines()) <= 10
    scope: dict = {}
    exec(compile(QUICK_START, "README quick start", "exec"), scope)  # noqa: S102 - the README's own code
    table, ground = scope["table"], scope["ground"]
    assert list(table["formula"]) == ["Ba2CaWO6", "Cs2AgBiCl6"] and table["n_ranked"].ge(3).all()
    assert set(table["phase_error_source"]) == {"card"} and len(ground) == 1
    assert ground[0].formula == "Sr2FeMoO6" and ground[0].provenance["model_sha256"]


def test_the_api_docstring_examples_run():
    import doctest

    import dp_screen.api

    failed, attempted = doctest.testmod(dp_screen.api, optionflags=doctest.ELLIPSIS)
    assert attempted >= 5 and failed == 0
