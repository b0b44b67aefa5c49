"""Phase identification in each structure's own tilt table, the perovskite gate, and rankings that exclude.

Expected space groups come from the literature tables (Howard & Stokes, Acta Cryst. B54, 782 (1998) for ABX3;
Howard, Kennedy & Woodward, Acta Cryst. B59, 463 (2003) for rock-salt B order), transcribed in
``dp_screen.structures.tilts``, and from known compounds (SrTiO3: Pm-3m, and I4/mcm below 105 K).
"""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Structure

from dp_screen.jobs.relax import phase_summary
from dp_screen.mlip.relax import RelaxResult
from dp_screen.schemas.relaxation import RelaxationDoc
from dp_screen.structures.perovskite import SiteSpeciesSet, build_bvm_structure
from dp_screen.structures.perovskite_check import MAX_A_OFFCENTRE, check_perovskite
from dp_screen.structures.phases import identify_phase, tilt_table
from dp_screen.structures.tilts import SIMPLE_PEROVSKITE, SPACE_GROUPS

SRTIO3 = SiteSpeciesSet(("Sr", 2), ("Sr", 2), ("Ti", 4), ("Ti", 4), ("O", -2))
NALATI2O6 = SiteSpeciesSet(("Na", 1), ("La", 3), ("Ti", 4), ("Ti", 4), ("O", -2))
BA2MGWO6 = SiteSpeciesSet(("Ba", 2), ("Ba", 2), ("Mg", 2), ("W", 6), ("O", -2))
SR2COMOO6 = SiteSpeciesSet(("Sr", 2), ("Sr", 2), ("Co", 2), ("Mo", 6), ("O", -2))


def test_computed_tilt_tables_equal_the_published_ones():
    assert tilt_table("rocksalt", True, True) == SIMPLE_PEROVSKITE  # Howard & Stokes 1998
    assert tilt_table("rocksalt", True, False) == SPACE_GROUPS["rocksalt"]  # Howard, Kennedy & Woodward 2003
    assert tilt_table("layered", False, False) == SPACE_GROUPS["layered"]
    assert tilt_table("rocksalt-A", False, False) == SPACE_GROUPS["rocksalt-A"]
    # A = A' in a layered or rock-salt-A cell is plain rock-salt B order
    assert tilt_table("layered", True, False)["a0a0a0"] == tilt_table("rocksalt-A", True, False)["a0a0a0"] == 225


@pytest.mark.parametrize(("tilt", "number"), [("a0a0a0", 221), ("a0a0c-", 140), ("a+b-b-", 62)])
def test_b_equals_b_prime_is_identified_in_the_abx3_table(tilt, number):
    """SrTiO3 written as Sr2TiTiO6: Pm-3m untilted, I4/mcm a0a0c- (its 105 K phase), Pnma a+b-b- (GdFeO3 type)."""
    built = build_bvm_structure(SRTIO3, "rocksalt", tilt)
    phase = identify_phase(built.structure, "rocksalt", tilt)  # no pattern passed: read off the structure
    assert phase.space_group == number and phase.same_b and phase.same_a
    assert phase.tilt_candidates == [tilt] and phase.stayed_in_start_tilt and phase.phase == tilt


def test_a_equals_a_prime_and_layered_b_equals_b_prime_get_their_own_tables():
    # Ba2MgWO6 built with the layered A ordering: A = A', so the cell is the rock-salt-B Fm-3m one
    built = build_bvm_structure(BA2MGWO6, "layered", "a0a0a0")
    phase = identify_phase(built.structure, "layered", "a0a0a0")
    assert (
        phase.space_group == 225 and phase.same_a and phase.tilt_candidates == ["a0a0a0"] and phase.stayed_in_start_tilt
    )
    # NaLaTi2O6: layered A with B = B' is P4/mmm untilted (not the P4/nmm of layered A + rock-salt B)
    built = build_bvm_structure(NALATI2O6, "layered", "a0a0a0")
    phase = identify_phase(built.structure, "layered", "a0a0a0")
    assert phase.space_group == 123 and phase.same_b and not phase.same_a and phase.phase == "a0a0a0"


def test_a_structure_that_gained_symmetry_is_ranked_under_the_phase_it_ended_in():
    untilted = build_bvm_structure(SR2COMOO6, "rocksalt", "a0a0a0").structure
    phase = identify_phase(untilted, "rocksalt", start_tilt="a0a0c-")  # as if an a0a0c- start had untilted
    assert phase.space_group == 225 and not phase.stayed_in_start_tilt and phase.phase == "a0a0a0"
    p1 = Structure(
        untilted.lattice,
        untilted.species,
        untilted.frac_coords + np.random.default_rng(0).normal(0, 0.01, (10, 3)),
        site_properties=untilted.site_properties,
    )
    assert identify_phase(p1, "rocksalt", start_tilt="a0a0a0").phase == "SG1"  # in no tilt system of the table


def test_built_perovskites_pass_the_gate():
    for species, ordering in (
        (SR2COMOO6, "rocksalt"),
        (NALATI2O6, "layered"),
        (SiteSpeciesSet(("Cs", 1), ("Cs", 1), ("Ag", 1), ("Bi", 3), ("I", -1)), "rocksalt"),
    ):
        for tilt in SPACE_GROUPS[ordering]:
            check = check_perovskite(build_bvm_structure(species, ordering, tilt).structure)
            assert check.ok, (species.formula, tilt, check.reason)


def _roles(structure, role):
    return [i for i, r in enumerate(structure.site_properties["site"]) if r == role]


def torn_octahedron():
    """Sr2CoMoO6 with one Co-O bond pulled from 2.1 to 3.2 A: Co is left five-coordinate."""
    s = build_bvm_structure(SR2COMOO6, "rocksalt", "a0a0a0").structure
    b = _roles(s, "B")[0]
    x = min(_roles(s, "X"), key=lambda i: s.get_distance(b, i))
    cart = s.cart_coords.copy()
    _, image = s[x].distance_and_image(s[b])
    bond = s[x].coords - (s.lattice.get_cartesian_coords(s[b].frac_coords + image))
    cart[x] = cart[x] + bond / np.linalg.norm(bond) * 1.1
    return Structure(s.lattice, s.species, cart, coords_are_cartesian=True, site_properties=s.site_properties)


def test_gate_catches_a_torn_octahedron_and_an_a_cation_out_of_its_cavity():
    check = check_perovskite(torn_octahedron())
    assert not check.ok and "octahedron torn" in check.reason
    s = build_bvm_structure(SR2COMOO6, "rocksalt", "a0a0a0").structure
    a = _roles(s, "A")[0]
    cart = s.cart_coords.copy()
    cart[a] += [1.6, 0.0, 0.0]  # 0.4 of the 4 A B-B' distance
    moved = Structure(s.lattice, s.species, cart, coords_are_cartesian=True, site_properties=s.site_properties)
    check = check_perovskite(moved)
    assert not check.ok and "out of its cavity" in check.reason and check.measures["max_a_offcentre"] > MAX_A_OFFCENTRE
    # without site roles the gate infers them and reaches the same verdicts
    bare = Structure(moved.lattice, moved.species, moved.frac_coords)
    assert not check_perovskite(bare).ok and check_perovskite(Structure(s.lattice, s.species, s.frac_coords)).ok


def _doc(structure, tilt, energy, converged=True, failed=False):
    """A relaxation document built the way relax_store builds one, from a constructed result."""
    sid = f"Sr2+_Sr2+_Co2+_Mo6+_O2-:rocksalt:{tilt}:bvm"
    result = RelaxResult(
        structure=structure,
        energy=energy * len(structure),
        energy_per_atom=energy,
        max_force=0.01,
        max_stress_gpa=0.05,
        stress_gpa=[[0.0] * 3] * 3,
        n_steps=50,
        converged=converged,
        failed=failed,
        initial_volume=structure.volume,
    )
    phase = identify_phase(structure, "rocksalt", tilt)
    check = check_perovskite(structure)
    struct_doc = {
        "structure_id": sid,
        "composition_id": sid.split(":")[0],
        "formula": "Sr2CoMoO6",
        "ordering": "rocksalt",
        "tilt": tilt,
        "method": "bvm",
        "settings_hash": "b",
    }
    prov = {"model_sha256": "m" * 64, "model_name": "test"}
    return RelaxationDoc.from_result(struct_doc, result, phase, prov, {}, "s", check).model_dump()


def test_unconverged_and_not_perovskite_results_are_kept_out_of_the_ranking_with_their_reasons():
    build = {t: build_bvm_structure(SR2COMOO6, "rocksalt", t).structure for t in ("a0a0a0", "a0a0c-", "a-a-a-")}
    docs = [
        _doc(build["a0a0a0"], "a0a0a0", -7.00),
        _doc(build["a0a0c-"], "a0a0c-", -7.01),
        _doc(build["a-a-a-"], "a-a-a-", -7.30, converged=False),  # lowest energy, but not converged
        _doc(torn_octahedron(), "a0a0a0", -7.50),  # lowest of all, but no longer a perovskite
    ]
    assert docs[3]["not_perovskite"] and "octahedron torn" in docs[3]["not_perovskite_reason"]
    assert [d["excluded"] for d in docs] == [None, None, "not_converged", "not_perovskite"]
    summary = phase_summary(docs)
    assert summary["excluded"] == {"not_converged": 1, "not_perovskite": 1}
    assert summary["n_variants"] == 4 and summary["n_ranked"] == 2
    assert summary["lowest"] == "a0a0c-" and summary["dE_untilted_mev_atom"] == pytest.approx(10.0)
    assert summary["ground_state"]["ordering"] == "rocksalt"


def test_rankings_are_per_ordering_with_the_overall_ground_state_across_orderings():
    def v(ordering, tilt, e):
        return {
            "ordering": ordering,
            "start_tilt": tilt,
            "phase_tilt": tilt,
            "energy_per_atom": e,
            "structure_id": f"c:{ordering}:{tilt}:bvm",
            "excluded": None,
        }

    summary = phase_summary(
        [
            v("layered", "a0a0a0", -6.000),
            v("layered", "a-a-c+", -6.030),
            v("rocksalt-A", "a0a0a0", -6.010),
            v("rocksalt-A", "a+b-b-", -6.020),
        ]
    )
    assert summary["orderings"]["layered"]["dE_untilted_mev_atom"] == pytest.approx(30.0)
    assert summary["orderings"]["rocksalt-A"]["dE_untilted_mev_atom"] == pytest.approx(10.0)
    ground = summary["ground_state"]
    assert (ground["ordering"], ground["phase"], ground["dE_untilted_mev_atom"]) == (
        "layered",
        "a-a-c+",
        pytest.approx(30.0),
    )
