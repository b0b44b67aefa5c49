"""The shipped DFT reference set loads, and the benchmark's metrics on a two-composition slice match a hand
computation."""

from __future__ import annotations

import numpy as np
import pytest

from dp_screen.analysis.reference import reference_metrics
from dp_screen.dft.reference import card, load_reference, read_points


def test_reference_set_loads_with_units_and_provenance():
    points = load_reference()
    assert len(points) >= 8, "the packaged reference set (scripts/make_dft_reference.py) is missing"
    meta = card()
    assert meta["n_points"] >= len(points) and meta["cost"]["cp2k_core_hours"] > 0
    for p in points:
        n = len(p["structure"])
        assert n == p["n_atoms"] == 10 and p["forces"].shape == (n, 3) and p["stress_gpa"].shape == (3, 3)
        assert p["method"] in ("cp2k-pbe", "cp2k-pbe+u") and p["cp2k_version"] and p["scf_converged"]
        assert -2000 < p["energy"] / n < -10  # eV/atom of a GTH total energy (valence electrons only)
        assert np.abs(p["forces"]).max() < 5 and np.abs(p["stress_gpa"]).max() < 50
        assert p["structure"].sites[0].specie.oxi_state != 0  # oxidation states kept (they set the Hamiltonian)
    assert {p["key"] for p in read_points()} >= {p["key"] for p in points}


def _point(formula, tilt, e_per_atom, f=0.0, s=0.0):
    return {
        "formula": formula,
        "tilt": tilt,
        "n_atoms": 10,
        "energy": 10 * e_per_atom,
        "forces": np.full((10, 3), f),
        "stress_gpa": np.full((3, 3), s),
    }


def test_metrics_on_a_two_composition_slice_match_a_hand_computation():
    dft = [
        _point("A", "a0a0a0", -5.000),
        _point("A", "a0a0c-", -5.010),
        _point("A", "a-a-a-", -5.004),
        _point("B", "a0a0a0", -4.000),
        _point("B", "a0b-b-", -3.995),
    ]
    model = [
        _point("A", "a0a0a0", -6.000, f=0.1, s=1.0),
        _point("A", "a0a0c-", -6.002, f=0.1, s=1.0),
        _point("A", "a-a-a-", -6.006, f=0.1, s=1.0),
        _point("B", "a0a0a0", -3.000, f=0.1, s=1.0),
        _point("B", "a0b-b-", -3.001, f=0.1, s=1.0),
    ]
    m = reference_metrics(dft, model)
    # dE (meV/atom): A a0a0c- DFT -10, model -2 -> 8; A a-a-a- DFT -4, model -6 -> 2; B a0b-b- DFT +5, model -1 -> 6
    assert m["phase_de_mae_mev"] == pytest.approx((8 + 2 + 6) / 3)
    assert m["dft_de_mean_abs_mev"] == pytest.approx((10 + 4 + 5) / 3)
    # lowest: A DFT a0a0c-, model a-a-a- (disagree); B DFT a0a0a0, model a0b-b- (disagree)
    assert m["lowest_phase_agreement"] == 0.0 and m["n_lowest_compared"] == 2
    assert m["force_mae"] == pytest.approx(0.1) and m["stress_mae_gpa"] == pytest.approx(1.0)
    model[2]["energy"] = 10 * -6.0001  # now the model's lowest for A is a0a0c-, as DFT's
    assert reference_metrics(dft, model)["lowest_phase_agreement"] == 0.5
    # phases are the ones the cells ended in: B's tilted start relaxed back to the cubic cell (same space group), so
    # the model's a0b-b- minimum is DFT's cubic one; with different groups it is not
    for p, sg in zip(dft, (225, 87, 148, 225, 225), strict=True):
        p["space_group"] = sg
    assert reference_metrics(dft, model)["lowest_phase_agreement"] == 1.0
    dft[4]["space_group"] = 12
    assert reference_metrics(dft, model)["lowest_phase_agreement"] == 0.5
    # the slice of the real set: metrics of DFT against itself vanish
    real = [p for p in load_reference() if p["formula"] in sorted({q["formula"] for q in load_reference()})[:2]]
    self_m = reference_metrics(
        real, [{"energy": p["energy"], "forces": p["forces"], "stress_gpa": p["stress_gpa"]} for p in real]
    )
    assert self_m["n_compositions"] == 2 and self_m["phase_de_mae_mev"] == 0 and self_m["lowest_phase_agreement"] == 1


def test_reference_set_covers_closed_and_open_shell_compositions_in_every_reference_tilt():
    """The set the benchmark reads: closed-shell compositions across O, F, Cl, Br, I restricted, in all four
    reference tilt systems; open-shell ones spin-polarised with their high-spin multiplicity (the complete ones in
    all four tilt systems; one still being computed may have fewer, but always its untilted cell first); a
    composition's phases share one Hamiltonian (phase differences compare like with like)."""
    from collections import defaultdict

    from dp_screen.dft.hamiltonian import hamiltonian_for
    from dp_screen.dft.reference import REFERENCE_TILTS

    by = defaultdict(list)
    for p in load_reference():
        by[p["formula"]].append(p)
    closed = {f for f, ps in by.items() if not ps[0]["hamiltonian"]["spin_polarised"]}
    open_ = set(by) - closed
    complete = {f for f, ps in by.items() if sorted(p["tilt"] for p in ps) == sorted(REFERENCE_TILTS)}
    assert len(closed & complete) >= 12 and closed <= complete, sorted(closed - complete)
    assert len(open_ & complete) >= 4, (sorted(open_), sorted(complete))
    assert {p["species"]["X"][0] for f in closed for p in by[f]} >= {"O", "F", "Cl", "Br", "I"}
    for formula, ps in by.items():
        assert "a0a0a0" in {p["tilt"] for p in ps}, formula
        assert len({(p["method"], p["hamiltonian"]["multiplicity"]) for p in ps}) == 1, formula
        ham = hamiltonian_for(ps[0]["structure"])  # the rules, re-applied to the stored structure
        assert ps[0]["hamiltonian"]["multiplicity"] == ham.multiplicity and ps[0]["method"] == ham.label
        assert (formula in open_) == (ham.multiplicity > 1 and bool(ps[0]["hamiltonian"]["moments"]))


def test_points_accepted_on_the_energy_say_so_and_met_it():
    """A point accepted on the energy criterion (CP2KSettings.ediff_per_atom) records it, met no EPS_SCF in any
    attempt and met the energy criterion in one; the card lists exactly these points."""
    points = load_reference()
    by_energy = [p for p in points if p.get("scf_converged_by") == "energy"]
    for p in by_energy:
        assert not any(a["scf_converged"] for a in p["scf_attempts"]), p["key"]
        assert any(a.get("energy_converged") for a in p["scf_attempts"]), p["key"]
    assert sorted(p["key"] for p in by_energy) == card().get("scf_energy_accepted_points", [])
