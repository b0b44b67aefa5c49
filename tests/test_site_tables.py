"""Site tables: the packaged R1 default, custom files and their errors."""

from __future__ import annotations

from importlib import resources

import pytest

from dp_screen.chemistry.site_tables import (
    load_site_table,
    parse_site_table,
    r1_table_text,
    shannon_radius,
)
from dp_screen.errors import InputError

HEADER = "site,element,oxidation_state,coordination,radius\n"


def test_default_table_is_rule_r1():
    table = load_site_table()
    a, b, x = table.on_site("A"), table.on_site("B"), table.on_site("X")
    assert len(a) == 15
    assert {s.label for s in a} == {
        "Na+",
        "K+",
        "Rb+",
        "Cs+",
        "Tl+",
        "Ca2+",
        "Sr2+",
        "Ba2+",
        "Pb2+",
        "Cd2+",
        "La3+",
        "Ce3+",
        "Nd3+",
        "Sm3+",
        "Ce4+",
    }
    assert len(b) == 130 and len({s.element for s in b}) == 65
    assert {s.label for s in x} == {"O2-", "F-", "Cl-", "Br-", "I-"}
    assert all(s.coordination == 12 for s in a) and all(s.coordination == 6 for s in b)
    assert "Tc" not in {s.element for s in b} and "Se" in {s.element for s in b}


def test_packaged_file_is_reproducible_from_pymatgen():
    shipped = resources.files("dp_screen.data").joinpath("site_table_r1.csv").read_text()
    assert shipped == r1_table_text()


def test_radii_follow_bartel_choices():
    # Bartel et al.: La2FeNiO6 uses rA 1.36 (XII), rB 0.645 (Fe3+ high spin) and 0.60 (Ni3+ high spin); rX(O) 1.40
    table = load_site_table()
    assert table.get("A", "La", 3).radius == pytest.approx(1.36)
    assert table.get("B", "Fe", 3).radius == pytest.approx(0.645)
    assert table.get("B", "Ni", 3).radius == pytest.approx(0.60)
    assert {s.element: s.radius for s in table.on_site("X")} == pytest.approx(
        {"O": 1.40, "F": 1.33, "Cl": 1.81, "Br": 1.96, "I": 2.20}
    )
    # closest coordination when the requested one is missing: Li+ has IV, VI and VIII, so 12 falls back to VIII
    assert shannon_radius("Li", 1, 12) == (pytest.approx(0.92), 8)


def test_custom_table_radius_lookup_and_override(small_table_path):
    table = load_site_table(small_table_path)
    assert table.get("A", "Cs", 1).radius == pytest.approx(1.88)
    text = HEADER + "A,Cs,1,12,1.90\nB,Ag,1,6,\nB,Bi,3,,\nX,Cl,-1,,\n"
    custom = parse_site_table(text)
    assert custom.get("A", "Cs", 1).radius == 1.90
    assert custom.get("B", "Bi", 3).coordination == 6


def test_table_hash_does_not_depend_on_row_order():
    rows = load_site_table().to_csv().splitlines()
    shuffled = "\n".join([rows[0], *reversed(rows[1:])])
    assert parse_site_table(shuffled).sha256 == load_site_table().sha256


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("site,element\nA,Cs\n", "missing oxidation_state"),
        ("site,element,oxidation_state,colour\nA,Cs,1,red\n", "unknown colour"),
        (HEADER + "A,Qq,1,12,\n", "unknown element 'Qq'"),
        (HEADER + "Q,Cs,1,12,\n", "site 'Q' is not one of A, B, X"),
        (HEADER + "A,Na,3,12,\n", "oxidation state +3 is impossible for Na; allowed: -1, +1"),
        (HEADER + "A,Cs,one,12,\n", "oxidation_state 'one' is not an integer"),
        (HEADER + "X,Cs,1,6,\n", "Cs+ cannot sit on site X"),
        (HEADER + "A,Cs,1,12,big\n", "radius 'big' is not a number"),
        (HEADER + "A,Cs,1,12,\nA,Cs,1,12,\n", "listed twice"),
        (HEADER + "A,Cs,1,12,\nB,Ag,1,6,\n", "no species on site X"),
        (HEADER + "A,Cs,1,12\n", "4 fields, expected 5"),
        (HEADER + "A,Cs,1,12,\nB,Ag,1,6,\nX,Au,-1,6,\n", "no Shannon radius for Au-"),
        ("# only a comment\n", "empty"),
    ],
)
def test_malformed_tables_name_the_bad_value(text, message):
    with pytest.raises(InputError, match=message.replace("+", r"\+").replace("(", r"\(")) as err:
        parse_site_table(text, name="bad.csv")
    assert "\n" not in str(err.value)


def test_missing_table_file(tmp_path):
    with pytest.raises(InputError, match="cannot read site table"):
        load_site_table(tmp_path / "nope.csv")


def test_restrict_anions():
    table = load_site_table().restrict_anions(["O", "F"])
    assert {s.element for s in table.on_site("X")} == {"O", "F"}
    with pytest.raises(InputError, match="unknown anion 'S'; this site table allows X = Br, Cl, F, I, O"):
        load_site_table().restrict_anions(["S"])
