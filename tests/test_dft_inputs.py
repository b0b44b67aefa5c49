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
    settings = CP2KSettings(max_scf=30, scf_fallbacks=({"mixing": "KERKER_MIXING", "max_scf": 200}, {"mixing_alpha": 0.1}))
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
