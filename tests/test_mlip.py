"""The MLIP engine: model loading, batched (TorchSim) and ASE relaxation, blow-ups, phases."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from dp_screen.errors import InputError
from dp_screen.mlip.models import ModelError, load_model
from dp_screen.mlip.relax import RelaxSettings, relax_structures, relax_structures_ase, single_points
from dp_screen.structures.perovskite import SiteSpeciesSet, build_bvm_structure
from dp_screen.structures.phases import compare_phases, identify_phase
from dp_screen.structures.tilts import DEFAULT_TILTS

CS2AGBICL6 = SiteSpeciesSet(("Cs", 1), ("Cs", 1), ("Ag", 1), ("Bi", 3), ("Cl", -1))
SR2COMOO6 = SiteSpeciesSet(("Sr", 2), ("Sr", 2), ("Co", 2), ("Mo", 6), ("O", -2))


def rattled(structure, amplitude=0.05, seed=0):
    from pymatgen.core import Structure

    rng = np.random.default_rng(seed)
    cart = structure.cart_coords + rng.normal(0, amplitude, (len(structure), 3))
    return Structure(structure.lattice, structure.species, cart, coords_are_cartesian=True,
                     site_properties=structure.site_properties)


@pytest.fixture(scope="module")
def tiny(tiny_model_path):
    return load_model(tiny_model_path, device="cpu", dtype="float64")


def test_load_by_path_records_hash(tiny_model_path, tiny):
    expected = hashlib.sha256(open(tiny_model_path, "rb").read()).hexdigest()
    prov = tiny.provenance()
    assert prov["model_sha256"] == expected and prov["dtype"] == "float64" and prov["device"] == "cpu"
    assert prov["model_path"].endswith("tiny.model")
    f32 = load_model(tiny_model_path, device="cpu", dtype="float32")
    assert next(f32.model.parameters()).dtype.is_floating_point and f32.dtype == "float32"


def test_model_errors(tmp_path):
    with pytest.raises(InputError, match="neither an existing file nor a foundation model name"):
        load_model(tmp_path / "missing.model")
    bad = tmp_path / "bad.model"
    bad.write_text("not a model")
    with pytest.raises(ModelError, match="cannot load model file"):
        load_model(bad)
    with pytest.raises(InputError, match="unknown dtype"):
        load_model(bad, dtype="float16")


def test_foundation_download_without_network_is_a_clear_error(monkeypatch):
    """No network here: mace's download fails, and the error says to pass a local file.
    (The download function is replaced by one that fails the way urllib does offline, so the test never
    depends on whether this machine happens to reach GitHub.)"""
    import mace.calculators.foundations_models as fm

    def offline(model=None):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(fm, "download_mace_mp_checkpoint", offline)
    with pytest.raises(ModelError, match="cannot download foundation model 'small'.*local model file"):
        load_model("small")


def test_batched_and_ase_single_points_agree(tiny):
    from pymatgen.io.ase import AseAtomsAdaptor

    from dp_screen.mlip.relax import _ase_calculator

    structures = [rattled(build_bvm_structure(CS2AGBICL6).structure, seed=i) for i in range(3)]
    structures.append(rattled(build_bvm_structure(SR2COMOO6, "rocksalt", "a0a0c-").structure))
    batched = single_points(structures, tiny)
    calc = _ase_calculator(tiny)
    for s, b in zip(structures, batched, strict=True):
        atoms = AseAtomsAdaptor.get_atoms(s)
        atoms.calc = calc
        assert abs(atoms.get_potential_energy() - b["energy"]) / len(s) < 1e-3  # 1 meV/atom
        assert np.allclose(atoms.get_forces(), b["forces"], atol=1e-5)


def test_batched_and_ase_relaxations_reach_the_same_energy(tiny):
    structures = [rattled(build_bvm_structure(CS2AGBICL6).structure, 0.03, seed=i) for i in range(2)]
    settings = RelaxSettings(fmax=0.01, max_steps=400)
    batched = relax_structures(structures, tiny, settings)
    one_by_one = relax_structures_ase(structures, tiny, settings)
    for b, a in zip(batched, one_by_one, strict=True):
        assert b.converged and a.converged
        assert abs(b.energy_per_atom - a.energy_per_atom) < 1e-3


def test_convergence_flags_are_honest(tiny):
    start = rattled(build_bvm_structure(SR2COMOO6, "rocksalt", "a0a0c-").structure, 0.1)
    (capped,) = relax_structures([start], tiny, RelaxSettings(fmax=1e-5, max_steps=10, check_every=5))
    assert not capped.converged and not capped.failed
    assert capped.n_steps == 10 and capped.max_force > 1e-5
    (done,) = relax_structures([start], tiny, RelaxSettings(fmax=0.05, max_steps=1000))
    assert done.converged == (done.max_force < 0.05 and done.max_cell_force < 0.05)


def test_broken_structure_is_flagged_and_the_batch_goes_on(tiny):
    good = [rattled(build_bvm_structure(CS2AGBICL6).structure, 0.03, seed=i) for i in range(2)]
    from pymatgen.core import Structure

    cart = good[0].cart_coords.copy()
    cart[1] = cart[0] + [0.2, 0.0, 0.0]  # two atoms 0.2 A apart
    broken = Structure(good[0].lattice, good[0].species, cart, coords_are_cartesian=True)
    results = relax_structures([good[0], broken, good[1]], tiny, RelaxSettings(fmax=1e-3, max_steps=300))
    assert results[1].failed and "too close" in results[1].reason and not results[1].converged
    assert not results[0].failed and not results[2].failed
    assert results[0].n_steps > 0 and results[2].n_steps > 0


@pytest.mark.parametrize("tilt", DEFAULT_TILTS["rocksalt"])
def test_phase_identification_returns_the_built_tilt(tilt):
    built = build_bvm_structure(SR2COMOO6, "rocksalt", tilt)
    phase = identify_phase(built.structure, "rocksalt", tilt)
    assert tilt in phase.tilt_candidates and phase.stayed_in_start_tilt
    assert phase.space_groups["0.001"] == built.space_group
    if tilt == "a0a0a0":
        assert phase.mean_bxb_angle == pytest.approx(180.0, abs=0.01)
    else:
        assert phase.mean_bxb_angle < 178


def test_compare_phases():
    summary = compare_phases([
        {"tilt": "a0a0a0", "energy_per_atom": -5.000}, {"tilt": "a0a0c-", "energy_per_atom": -5.012},
        {"tilt": "a+b-b-", "energy_per_atom": -5.020}, {"tilt": "a-a-a-", "energy_per_atom": float("nan")},
    ])  # fmt: skip
    assert summary["lowest"] == "a+b-b-" and summary["ground_state_tilted"]
    assert summary["dE_untilted_mev_atom"] == pytest.approx(20.0)
    assert summary["energies_mev_atom"]["a0a0c-"] == pytest.approx(8.0)
    # a tilted start that relaxed back, 0.3 meV/atom lower: not a tilted ground state; no untilted variant: unknown
    back = compare_phases([{"tilt": "a0a0a0", "energy_per_atom": -5.0}, {"tilt": "a0a0c-", "energy_per_atom": -5.0003}])
    assert back["lowest"] == "a0a0c-" and back["ground_state_tilted"] is False
    assert compare_phases([{"tilt": "a0a0c-", "energy_per_atom": -5.0}])["ground_state_tilted"] is None
