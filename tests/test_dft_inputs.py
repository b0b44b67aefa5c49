"""CP2K inputs (no CP2K run: that is test_campaign's slow test)."""

from __future__ import annotations

from dp_screen.dft.cp2k import CP2KSettings, kpoint_grid, write_cp2k_input
from dp_screen.structures.perovskite import SiteSpeciesSet, build_bvm_structure

BA2CAWO6 = SiteSpeciesSet(("Ba", 2), ("Ba", 2), ("Ca", 2), ("W", 6), ("O", -2))


def test_default_kpoints_sample_a_double_perovskite_cell():
    """A Gamma-only 10-atom cell is far from converged: the default is 3x3x3 for the fcc primitive cell."""
    cubic = build_bvm_structure(BA2CAWO6).structure  # 10 atoms, a_i ~ 5.9 A
    assert len(cubic) == 10 and kpoint_grid(cubic, CP2KSettings().kpoint_length) == (3, 3, 3)
    text = write_cp2k_input(cubic, CP2KSettings())
    assert "SCHEME MONKHORST-PACK 3 3 3" in text and "STRESS_TENSOR ANALYTICAL" in text
    assert "&KPOINTS" not in write_cp2k_input(cubic, CP2KSettings(kpoint_length=0.0))
    tilted = build_bvm_structure(BA2CAWO6, tilt="a+b-b-").structure  # 20 atoms
    grid = kpoint_grid(tilted, 15.0)
    assert all(n == -(-15.0 // a) for n, a in zip(grid, tilted.lattice.abc, strict=True))
    assert kpoint_grid(tilted, 15.0) != (1, 1, 1) and kpoint_grid(cubic, 30.0) == (6, 6, 6)


def test_scf_mixing_restart_and_fallback_settings():
    """The mixing fields reach the input; a restart file replaces the atomic guess; the fallbacks are the first
    attempt's settings with each entry's overrides; an entry naming no CP2KSettings field is refused by name."""
    import pytest

    from dp_screen.dft.cp2k import CP2KError, scf_steps

    cubic = build_bvm_structure(BA2CAWO6).structure
    text = write_cp2k_input(cubic, CP2KSettings(mixing="pulay_mixing", mixing_alpha=0.3, mixing_history=7))
    assert "METHOD PULAY_MIXING" in text and "ALPHA 0.3" in text and "NPULAY 7" in text
    assert "SCF_GUESS ATOMIC" in text and "WFN_RESTART_FILE_NAME" not in text
    text = write_cp2k_input(cubic, CP2KSettings(mixing_history=8), restart_file="attempt0-RESTART.kp")
    assert "SCF_GUESS RESTART" in text and "WFN_RESTART_FILE_NAME attempt0-RESTART.kp" in text and "NBROYDEN 8" in text
    settings = CP2KSettings(
        max_scf=30, scf_fallbacks=({"mixing": "KERKER_MIXING", "max_scf": 200}, {"mixing_alpha": 0.1})
    )
    first, second, third = settings.attempts()
    assert (first.max_scf, first.mixing, first.scf_fallbacks) == (30, "BROYDEN_MIXING", ())
    assert (second.max_scf, second.mixing, third.max_scf, third.mixing_alpha) == (200, "KERKER_MIXING", 30, 0.1)
    assert CP2KSettings.from_dict(settings.as_dict()).attempts() == settings.attempts()
    with pytest.raises(CP2KError, match="mixng"):
        CP2KSettings(scf_fallbacks=({"mixng": "KERKER_MIXING"},))
    with pytest.raises(CP2KError, match="BROYDN_MIXING"):
        CP2KSettings(scf_fallbacks=({"mixing": "BROYDN_MIXING"},))
    assert scf_steps(" *** SCF run converged in    31 steps ***") == 31
    assert scf_steps("  Leaving inner SCF loop after reaching    80 steps.") == 80 and scf_steps("") is None


def test_energy_acceptance_reads_the_last_scf_table():
    """``energy_converged``: the energy change of each of the last ENERGY_WINDOW steps of the last SCF, per atom,
    below ``ediff_per_atom`` (eV/atom); an earlier SCF in the same output, a short SCF or ``ediff_per_atom = 0`` do
    not count. The rows are in CP2K 2023.1's step-table format (copied from a Cs2NaTiCl6 run)."""
    from dp_screen.dft.cp2k import ENERGY_WINDOW, HARTREE_EV, energy_converged, scf_energy_changes

    def table(changes):
        rows = [
            f"  {n:4d} Kerker/Diag.0.50E-01    4.8     0.00000579      -236.1671193783 {c: .2E}"
            for n, c in enumerate(changes, start=1)
        ]
        return (
            " SCF WAVEFUNCTION OPTIMIZATION\n\n  Step     Update method      Time    Convergence         Total energy    Change\n"
            + "\n".join(rows)
            + "\n"
        )

    noisy = table([-236.0, 1.6e-3, *[3e-4] * 20])
    quiet = table([-236.0, -2.11e-3, *[2e-6] * ENERGY_WINDOW])
    assert scf_energy_changes(quiet) == [-236.0, -2.11e-3, *[2e-6] * ENERGY_WINDOW]
    assert scf_energy_changes(noisy + quiet)[-1] == 2e-6 and len(scf_energy_changes(quiet + noisy)) == 22
    per_atom = 2e-6 * HARTREE_EV / 10  # 5.4e-6 eV/atom for a 10-atom cell
    assert energy_converged(quiet, 10, 5e-5) and energy_converged(noisy + quiet, 10, 5e-5)
    assert not energy_converged(quiet + noisy, 10, 5e-5)  # the last SCF is the noisy one
    assert not energy_converged(quiet, 10, per_atom * 0.9) and energy_converged(quiet, 10, per_atom * 1.1)
    assert not energy_converged(quiet, 10, 0.0)
    assert not energy_converged(table([-236.0, *[1e-9] * (ENERGY_WINDOW - 2)]), 10, 5e-5)  # too few steps
    assert CP2KSettings().ediff_per_atom == 5e-5
