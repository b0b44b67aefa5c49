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
