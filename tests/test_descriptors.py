"""Descriptors against published values, and the user-composition path (oxidation-state inference)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from dp_screen.chemistry.descriptors import bartel_tau, goldschmidt_tolerance, octahedral_factor
from dp_screen.chemistry.site_tables import load_site_table
from dp_screen.chemistry.user_compositions import descriptors_for_table, resolve_composition
from dp_screen.errors import InputError


def _rows(*rows, states=None):
    df = pd.DataFrame(rows, columns=["A", "A2", "B", "B2", "X"])
    if states:
        for k, v in states.items():
            df[k] = v
    return descriptors_for_table(df, load_site_table())


@pytest.mark.parametrize(
    ("row", "tau", "t"),
    [
        # Bartel et al., Sci. Adv. 5, eaav0693 (2019), data of the paper
        (("La", "La", "Fe", "Ni", "O"), 1.636, 0.965),
        (("La", "La", "Mg", "Mn", "O"), 1.636, 0.964),
    ],
)
def test_published_bartel_values(row, tau, t):
    out = _rows(row).iloc[0]
    assert out.tau == pytest.approx(tau, abs=0.0015)
    assert out.goldschmidt_t == pytest.approx(t, abs=0.0015)
    assert out.tau_perovskite and out.goldschmidt_ok


def test_formulas_by_hand():
    # Cs2AgBiCl6: rA 1.88, rB (1.15 + 1.03)/2 = 1.09, rX 1.81
    assert goldschmidt_tolerance(1.88, 1.09, 1.81) == pytest.approx((1.88 + 1.81) / (math.sqrt(2) * 2.90))
    expected = 1.81 / 1.09 - 1 * (1 - (1.88 / 1.09) / math.log(1.88 / 1.09))
    assert bartel_tau(1.88, 1.09, 1.81, 1.0) == pytest.approx(expected)
    assert octahedral_factor(1.09, 1.81) == pytest.approx(1.09 / 1.81)
    # undefined when rA <= rB
    assert np.isnan(bartel_tau(0.9, 1.0, 1.4, 2.0))


def test_undefined_tau_is_not_a_perovskite():
    # Na+ (XII 1.39) and Sm3+ (XII 1.24) on A, Cs+ (VI 1.67) on B: A smaller than B
    out = _rows(("Na", "Sm", "Cs", "Cs", "Cl")).iloc[0]
    assert out.rA_mean <= out.rB_mean
    assert pd.isna(out.tau) and not out.tau_perovskite


def test_expected_ordering():
    out = _rows(
        ("Na", "La", "Fe", "W", "O"),  # Fe2+/W6+ rock-salt B, A charges differ by 2: layered
        ("Cs", "Cs", "Ag", "Bi", "Cl"),  # dqB = 2: rock-salt B
        ("La", "La", "Fe", "Ni", "O"),  # Fe3+/Ni3+: B disorder expected
        ("K", "La", "Mg", "W", "O"),  # K+/La3+ differ by 2 and Mg2+/W6+ is rock-salt: layered
        ("Ba", "Sr", "Mg", "W", "O"),  # dqA 0: rock-salt A model cell
    ).set_index("formula")
    assert out.loc["NaLaFeWO6"].expected_ordering == "layered"
    assert out.loc["Cs2AgBiCl6"].expected_ordering == "rocksalt" and out.loc["Cs2AgBiCl6"].rocksalt_b_likely
    assert not out.loc["La2FeNiO6"].rocksalt_b_likely and out.loc["La2FeNiO6"].dqB == 0
    assert out.loc["KLaMgWO6"].layered_a_plausible
    assert out.loc["BaSrMgWO6"].expected_ordering == "rocksalt-A"
    assert out.loc["BaSrMgWO6"].drA == pytest.approx(abs(1.61 - 1.44))


def test_oxidation_state_inference_prefers_frequent_states():
    res = resolve_composition(("La", "La", "Fe", "Ni", "O"), (None,) * 5, load_site_table())
    assert res.states == (3, 3, 3, 3, -2)
    assert (3, 3, 2, 4, -2) in res.alternatives
    given = resolve_composition(("Sr", "Sr", "Fe", "Mo", "O"), (None, None, 3, None, None), load_site_table())
    assert given.states == (2, 2, 3, 5, -2) and given.alternatives == ()


def test_bad_user_rows_are_reported_not_dropped():
    out = _rows(
        ("Cs", "Cs", "Ag", "Bi", "Cl"),
        ("Cs", "Cs", "Bi", "Bi", "Cl"),
        ("Xx", "Cs", "Ag", "Bi", "Cl"),
        ("Ba", "Ba", "Ca", "Mo", "O"),
        states={"nB": ["", "", "", "3"]},
    )
    assert list(out.row) == [1, 2, 3, 4]
    assert out.error[0] == ""
    assert "no charge-balanced assignment" in out.error[1] and "Bi +3, +5" in out.error[1]
    assert "unknown element 'Xx' in column A" in out.error[2]
    assert "impossible for Ca" in out.error[3] and "allowed: +2" in out.error[3]


def test_explicit_unbalanced_states():
    with pytest.raises(InputError, match=r"not charge balanced: cations 1\+1\+3\+3 = \+8, but 6 Cl- need \+6"):
        resolve_composition(("Cs", "Cs", "Bi", "Bi", "Cl"), (1, 1, 3, 3, -1), load_site_table())
    with pytest.raises(InputError, match="O2- cannot sit on site B"):
        resolve_composition(("Cs", "Cs", "O", "Bi", "Cl"), (1, 1, -2, 3, -1), load_site_table())


def test_missing_columns():
    with pytest.raises(InputError, match="missing column.*B2"):
        descriptors_for_table(pd.DataFrame({"A": ["Cs"], "A2": ["Cs"], "B": ["Ag"], "X": ["Cl"]}), load_site_table())
