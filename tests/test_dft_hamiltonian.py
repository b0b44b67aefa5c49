"""DFT checks with the models' Hamiltonian: spin polarisation, moments and Materials Project +U where MP applies
them, basis / pseudopotential coverage checked against the installed CP2K data before anything runs.

Expected values come from outside the code: MP's U values as pymatgen's MPRelaxSet carries them (Fe 5.3, Mo 4.38,
W 6.2 eV on oxides) and the high-spin d counts of the ions (Fe3+ d5, Mo5+ d1, Co2+ d7 -> 3)."""

from __future__ import annotations

import numpy as np
import pytest

from dp_screen.dft.cp2k import (
    CP2KError,
    CP2KSettings,
    coverage,
    cp2k_executable,
    data_dir,
    gamma_supercell,
    run_cp2k,
    write_cp2k_input,
)
from dp_screen.dft.hamiltonian import hamiltonian_for
from dp_screen.structures.perovskite import SiteSpeciesSet, build_bvm_structure

SR2FEMOO6 = SiteSpeciesSet(("Sr", 2), ("Sr", 2), ("Fe", 3), ("Mo", 5), ("O", -2))
BA2MGWO6 = SiteSpeciesSet(("Ba", 2), ("Ba", 2), ("Mg", 2), ("W", 6), ("O", -2))
CS2AGBICL6 = SiteSpeciesSet(("Cs", 1), ("Cs", 1), ("Ag", 1), ("Bi", 3), ("Cl", -1))


def test_open_shell_oxide_gets_uks_moments_and_u():
    s = build_bvm_structure(SR2FEMOO6).structure
    ham = hamiltonian_for(s)
    assert ham.spin_polarised and ham.moments == {"Fe": 5.0, "Mo": 1.0} and ham.multiplicity == 5 + 1 + 1
    assert ham.u_values == {"Fe": 5.3, "Mo": 4.38} and ham.label == "cp2k-pbe+u"
    text = write_cp2k_input(s, CP2KSettings(), hamiltonian=ham)
    assert "UKS" in text and "MULTIPLICITY 7" in text and "PLUS_U_METHOD" in text
    assert "MAGNETIZATION 5" in text and "U_MINUS_J [eV] 5.3" in text and "U_MINUS_J [eV] 4.38" in text


def test_unpaired_electrons_of_ions():
    from dp_screen.dft.hamiltonian import unpaired_electrons

    known = {
        ("Fe", 3): 5,
        ("Fe", 2): 4,
        ("Co", 2): 3,
        ("Ni", 2): 2,
        ("Cu", 2): 1,
        ("Mn", 4): 3,
        ("Cr", 3): 3,
        ("V", 5): 0,
        ("W", 6): 0,
        ("W", 5): 1,
        ("Ag", 1): 0,
        ("Zn", 2): 0,
        ("Mg", 2): 0,
        ("Ce", 3): 1,
        ("Ce", 4): 0,
        ("Nd", 3): 3,
        ("Sm", 3): 5,
        ("La", 3): 0,
        ("Bi", 3): 0,
    }
    assert {k: unpaired_electrons(*k) for k in known} == known


def test_closed_shell_compositions_stay_restricted():
    ham = hamiltonian_for(build_bvm_structure(BA2MGWO6).structure)  # Mg2+ and W6+ (d0): closed shell
    assert not ham.spin_polarised and ham.moments == {}
    assert ham.u_values == {"W": 6.2}  # MP gives W in oxides its U even as d0 W6+
    text = write_cp2k_input(build_bvm_structure(BA2MGWO6).structure, CP2KSettings(), hamiltonian=ham)
    assert "UKS" not in text and "MAGNETIZATION" not in text
    plain = hamiltonian_for(build_bvm_structure(CS2AGBICL6).structure)  # a chloride: MP applies no U
    assert not plain.spin_polarised and plain.u_values == {} and plain.label == "cp2k-pbe"


@pytest.mark.skipif(data_dir() is None, reason="CP2K's data is not installed (apt-get install -y cp2k)")
def test_coverage_of_the_installed_data_and_refusal_before_cp2k_runs(tmp_path):
    cov = coverage(["O", "Fe", "Cs", "Bi"])
    assert all(c["covered"] for c in cov.values()) and cov["O"]["basis"] == "BASIS_MOLOPT"
    missing = coverage(["O", "Fe"], CP2KSettings(basis="NO-SUCH-BASIS"))
    assert not any(c["covered"] for c in missing.values())
    with pytest.raises(CP2KError, match=r"does not cover element\(s\) Fe, Mo, O, Sr.*NO-SUCH-BASIS"):
        run_cp2k(build_bvm_structure(SR2FEMOO6).structure, CP2KSettings(basis="NO-SUCH-BASIS"), tmp_path)
    assert not (tmp_path / "cp2k.inp").exists()  # refused before writing or running anything


def test_gamma_supercell_maps_every_atom_to_an_image_at_its_own_position():
    s = build_bvm_structure(SR2FEMOO6).structure
    supercell, home = gamma_supercell(s, (2, 2, 1))
    assert len(supercell) == 4 * len(s) and len(set(home)) == len(s)
    assert np.allclose(supercell.cart_coords[home], s.cart_coords, atol=1e-8)
    assert [supercell[i].species_string for i in home] == [site.species_string for site in s]


@pytest.mark.skipif(data_dir() is None, reason="CP2K's data is not installed (apt-get install -y cp2k)")
def test_dft_check_command_lists_coverage(capsys, small_table_path):
    import json

    from conftest import run_cli

    code, out, err = run_cli(["dft", "check", "--table", str(small_table_path), "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert set(report["elements"]) == {"Cs", "Ba", "La", "Ag", "Na", "Bi", "In", "Fe", "Ti", "W", "Mg", "Cl", "O"}
    assert report["elements"]["O"]["covered"]
    code, out, err = run_cli(["dft", "check", "--table", str(small_table_path), "--basis", "NO-SUCH-BASIS"], capsys)
    assert code == 0 and "0 of 13 elements covered" in out and " NO " in out


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.skipif(cp2k_executable() is None, reason="cp2k is not installed (apt-get install -y cp2k)")
def test_real_spin_polarised_single_point_forces_and_stress_match_finite_differences(tmp_path):
    """A real CP2K UKS single point of a small open-shell cell (cubic KMnCl3, high-spin Mn2+ d5: five unpaired
    electrons, an insulator; no +U on Mn in chlorides) with Mn pushed off-centre: it converges, and its force
    equals the finite difference of its own energy (two runs, at x and at x + dx: the mean of the analytic forces
    at both ends is compared with the one-sided difference, which is exact to second order); a third run with the
    cell strained isotropically by eps checks the stress the same way: (E(eps) - E(0)) / (V eps) equals the mean,
    at both ends, of the trace of the parsed stress (GPa, ASE's sign: negative under compression). Gamma only: the
    test checks units, signs and consistency, not physics."""
    from pymatgen.core import Lattice, Species, Structure

    def cell(a=5.00, dx=0.0, strain=0.0):
        lat = Lattice.cubic(a * (1 + strain))
        return Structure(
            lat,
            [Species("K", 1), Species("Mn", 2), *[Species("Cl", -1)] * 3],
            [[0, 0, 0], [0.5 + (0.08 + dx) / a, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
        )

    # the production cutoffs: at 200 Ry the grid's egg-box error alone puts the difference 18% off the force
    settings = CP2KSettings(
        cutoff=400, rel_cutoff=60, kpoint_length=0.0, eps_scf=1e-7, smearing_k=300, max_scf=200, nproc=2
    )
    dx = 0.02
    r0 = run_cp2k(cell(), settings, tmp_path / "r0")
    assert r0["scf_converged"] and r0["method"] == "cp2k-pbe" and r0["hamiltonian"]["spin_polarised"]
    assert r0["hamiltonian"]["multiplicity"] == 6 and "UKS" in (tmp_path / "r0" / "cp2k.inp").read_text()
    r1 = run_cp2k(cell(dx=dx), settings, tmp_path / "r1")
    fd_force = -(r1["energy"] - r0["energy"]) / dx  # eV/A on Mn along x
    mean_force = 0.5 * (r0["forces"][1, 0] + r1["forces"][1, 0])
    assert abs(mean_force) > 0.1 and fd_force == pytest.approx(mean_force, abs=0.02 + 0.03 * abs(mean_force))
    stress = r0["stress_gpa"]
    assert stress.shape == (3, 3) and np.allclose(stress, stress.T, atol=1e-3) and np.abs(stress).max() < 50  # GPa
    eps = -0.01  # compress: dE/d(eps) = V tr(sigma) for an isotropic strain of the lattice vectors
    r2 = run_cp2k(cell(strain=eps), settings, tmp_path / "r2")
    assert r2["scf_converged"]
    v0 = cell().volume
    fd_trace = (r2["energy"] - r0["energy"]) / (v0 * (1 + eps / 2) ** 3 * eps) * 160.21766208  # GPa
    mean_trace = 0.5 * (np.trace(r0["stress_gpa"]) + np.trace(r2["stress_gpa"]))
    assert abs(mean_trace) > 0.5 and np.sign(fd_trace) == np.sign(mean_trace)
    assert fd_trace == pytest.approx(mean_trace, abs=0.5 + 0.1 * abs(mean_trace))
    assert np.trace(r2["stress_gpa"]) < np.trace(r0["stress_gpa"])  # compressed: more negative (ASE's sign)


@pytest.mark.skipif(cp2k_executable() is None, reason="cp2k is not installed (apt-get install -y cp2k)")
def test_unconverged_scf_falls_back_and_restarts_from_its_wavefunction(tmp_path):
    """A real CP2K run whose first SCF is cut off after 3 steps: the fallback attempt runs, starts from the first
    attempt's wavefunction (SCF_GUESS RESTART), converges, and both attempts are recorded; the restarted SCF needs
    fewer steps than a fresh one with the fallback's settings. A small closed-shell cell (cubic KMgF3), Gamma only,
    low cutoff: this checks the mechanism, not the physics."""
    from pymatgen.core import Lattice, Species, Structure

    kmgf3 = Structure(
        Lattice.cubic(4.0),
        [Species("K", 1), Species("Mg", 2), *[Species("F", -1)] * 3],
        [[0, 0, 0], [0.52, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
    )
    base = dict(cutoff=250, rel_cutoff=40, kpoint_length=0.0, eps_scf=1e-6, nproc=2)
    res = run_cp2k(kmgf3, CP2KSettings(**base, max_scf=3, scf_fallbacks=({"max_scf": 60},)), tmp_path / "ladder")
    first, second = res["scf_attempts"]
    assert (first["scf_converged"], first["scf_steps"], first["overrides"]) == (False, 3, {})
    assert second["scf_converged"] and second["overrides"] == {"max_scf": 60} and res["scf_converged"]
    retry_input = (tmp_path / "ladder" / "cp2k-retry1.inp").read_text()
    assert "SCF_GUESS RESTART" in retry_input and (tmp_path / "ladder" / "attempt0-RESTART.wfn").exists()
    assert res["output_file"].endswith("cp2k-retry1.out") and res["scf_steps"] == 3 + second["scf_steps"]
    fresh = run_cp2k(kmgf3, CP2KSettings(**base, max_scf=60, scf_fallbacks=()), tmp_path / "fresh")
    assert fresh["scf_converged"] and len(fresh["scf_attempts"]) == 1 and fresh["scf_converged_by"] == "density"
    assert second["scf_steps"] < fresh["scf_steps"]
    assert res["energy"] == pytest.approx(fresh["energy"], abs=2e-4 * len(kmgf3))
    assert np.allclose(res["forces"], fresh["forces"], atol=5e-3)
    # an EPS_SCF no SCF reaches: accepted on the energy (CP2KSettings.ediff_per_atom), saying so, with the energy and
    # forces of the density-converged run
    tight = run_cp2k(
        kmgf3, CP2KSettings(**{**base, "eps_scf": 1e-14}, max_scf=30, scf_fallbacks=()), tmp_path / "tight"
    )
    only = tight["scf_attempts"][0]
    assert (only["scf_converged"], only["energy_converged"], only["scf_steps"]) == (False, True, 30)
    assert tight["scf_converged"] and tight["scf_converged_by"] == "energy"
    assert tight["energy"] == pytest.approx(fresh["energy"], abs=1e-4 * len(kmgf3))
    assert np.allclose(tight["forces"], fresh["forces"], atol=5e-3)
