"""Compositions given by a user (A, A', B, B', X and optionally oxidation states): checking and charge balance.

Missing oxidation states are inferred by charge balance over the states that pymatgen knows for each element and
that have a Shannon radius. Where several assignments balance, the one whose states are on the site table's site,
then the most frequent in the ICSD (pymatgen's occurrence data, as in Composition.oxi_state_guesses),
wins; the others are reported as alternatives.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pandas as pd
from monty.serialization import loadfn
from pymatgen.core.periodic_table import Element

from dp_screen.chemistry.composition_space import SPECIES_COLUMNS, composition_id, finish_table
from dp_screen.chemistry.site_tables import (
    NOMINAL_COORDINATION,
    SiteTable,
    _shannon_table,
    check_oxidation_state,
    shannon_radius,
    species_label,
)
from dp_screen.errors import InputError

POSITIONS = (("A", "A"), ("A2", "A"), ("B", "B"), ("B2", "B"), ("X", "X"))  # (column, site)
STATE_COLUMNS = {"A": "nA", "A2": "nA2", "B": "nB", "B2": "nB2", "X": "nX"}


@dataclass(frozen=True)
class ResolvedComposition:
    """Species of the five positions with states and radii, plus the other balancing assignments."""

    elements: tuple[str, str, str, str, str]
    states: tuple[int, int, int, int, int]
    radii: tuple[float, float, float, float, float]
    alternatives: tuple[tuple[int, ...], ...]


def _candidates(element: str, site: str, table: SiteTable) -> list[int]:
    el = Element(element)
    from_table = {sp.oxidation_state for sp in table.species if sp.site == site and sp.element == element}
    with_radius = set(_shannon_table(el))
    states = from_table | with_radius
    return sorted(q for q in states if (q < 0) == (site == "X") and q != 0)


@cache
def _icsd_occurrence() -> dict[str, int]:
    """How often each species occurs in the ICSD (pymatgen's data, as used by Composition.oxi_state_guesses)."""
    import pymatgen.core.composition

    path = Path(pymatgen.core.composition.__file__).parent / "icsd_bv.yaml"
    return loadfn(path)["occurrence"]


def _score(elements, states, table: SiteTable) -> tuple:
    occurrence = _icsd_occurrence()
    on_table = sum(
        table.get(site, el, q) is not None for (_, site), el, q in zip(POSITIONS, elements, states, strict=True)
    )
    frequency = sum(occurrence.get(species_label(el, q), 0) for el, q in zip(elements, states, strict=True))
    return (-on_table, -frequency, states)


def resolve_composition(
    elements: tuple[str, str, str, str, str],
    states: tuple[int | None, int | None, int | None, int | None, int | None],
    table: SiteTable,
    where: str = "composition",
) -> ResolvedComposition:
    """Check elements and given states, infer missing states by charge balance, and look up radii."""
    options = []
    for (col, site), el, q in zip(POSITIONS, elements, states, strict=True):
        if not el or not Element.is_valid_symbol(el):
            raise InputError(f"{where}: unknown element {el!r} in column {col}; allowed: a chemical element symbol")
        if q is None:
            cands = _candidates(el, site, table)
            if not cands:
                raise InputError(
                    f"{where}: {el} has no {'anion' if site == 'X' else 'cation'} state with a Shannon radius for site {site}"
                )
            options.append(cands)
        else:
            check_oxidation_state(el, q, f"{where}, column {STATE_COLUMNS[col]}")
            if (q < 0) != (site == "X"):
                raise InputError(
                    f"{where}: {species_label(el, q)} cannot sit on site {site}; "
                    f"{'X needs an anion' if site == 'X' else site + ' needs a cation'}"
                )
            options.append([q])
    balanced = [s for s in itertools.product(*options) if sum(s[:4]) + 6 * s[4] == 0]
    if not balanced:
        if all(len(o) == 1 for o in options):
            q = [o[0] for o in options]
            raise InputError(
                f"{where}: not charge balanced: cations {'+'.join(str(v) for v in q[:4])} = {sum(q[:4]):+d}, but 6 "
                f"{species_label(elements[4], q[4])} need {-6 * q[4]:+d}; allowed: qA + qA' + qB + qB' = 6|qX|"
            )
        listed = "; ".join(
            f"{el} {', '.join(f'{q:+d}' for q in opts)}" for el, opts in zip(elements, options, strict=True)
        )
        raise InputError(f"{where}: no charge-balanced assignment of oxidation states ({listed})")
    balanced.sort(key=lambda s: _score(elements, s, table))
    best = balanced[0]
    radii = []
    for (_, site), el, q in zip(POSITIONS, elements, best, strict=True):
        entry = table.get(site, el, q)
        if entry is not None:
            radii.append(entry.radius)
        else:
            try:
                radii.append(shannon_radius(el, q, NOMINAL_COORDINATION[site])[0])
            except InputError as exc:
                raise InputError(f"{where}: {exc}") from None
    return ResolvedComposition(tuple(elements), tuple(best), tuple(radii), tuple(balanced[1:]))


def _state(value, column: str, where: str) -> int | None:
    if value is None or (isinstance(value, float) and pd.isna(value)) or str(value).strip() == "":
        return None
    try:
        number = float(str(value).strip().lstrip("+"))
    except ValueError:
        raise InputError(f"{where}: {column} {value!r} is not an integer oxidation state") from None
    if number != int(number):
        raise InputError(f"{where}: {column} {value!r} is not an integer oxidation state")
    return int(number)


def descriptors_for_table(rows: pd.DataFrame, table: SiteTable) -> pd.DataFrame:
    """Descriptors for a user's table (columns A, A2, B, B2, X and optionally nA, nA2, nB, nB2, nX).

    Returns one output row per input row, in input order, with the input ``row`` number (1-based, as in the file,
    header = row 0), the resolved species and descriptor columns, ``alternatives``
    (ids of the other balancing assignments)
    and ``error`` (empty when the row is fine). Bad rows are kept, with the reason in ``error``.
    """
    missing = [c for c in ("A", "A2", "B", "B2", "X") if c not in rows.columns]
    if missing:
        raise InputError(
            f"input is missing column(s) {', '.join(missing)}; required columns: A, A2, B, B2, X; "
            "optional: nA, nA2, nB, nB2, nX"
        )
    good, errors = [], {}
    for i, rec in enumerate(rows.to_dict("records")):
        where = f"row {i + 1} ({', '.join(str(rec[c]) for c in ('A', 'A2', 'B', 'B2', 'X'))})"
        try:
            elements = tuple(str(rec[c]).strip() if not pd.isna(rec[c]) else "" for c in ("A", "A2", "B", "B2", "X"))
            states = tuple(_state(rec.get(STATE_COLUMNS[c]), STATE_COLUMNS[c], where) for c, _ in POSITIONS)
            res = resolve_composition(elements, states, table, where)
        except InputError as exc:
            errors[i] = str(exc)
            continue
        values = {}
        for (col, _), el, q, r in zip(POSITIONS, res.elements, res.states, res.radii, strict=True):
            values[col], values[STATE_COLUMNS[col]], values[f"r{col}"] = el, q, r
        values["alternatives"] = ";".join(
            composition_id(*itertools.chain.from_iterable(zip(res.elements, alt, strict=True)))
            for alt in res.alternatives
        )
        values["row"] = i + 1
        good.append(values)
    out = pd.DataFrame(good, columns=[*SPECIES_COLUMNS, "alternatives", "row"])
    out = finish_table(out) if len(out) else out
    bad = pd.DataFrame({"row": [i + 1 for i in errors], "error": list(errors.values())})
    merged = pd.concat([out, bad], ignore_index=True)
    merged["error"] = merged["error"].astype(object).fillna("") if "error" in merged else ""
    for c in ("nA", "nA2", "nB", "nB2", "nX", "dqA", "dqB"):
        if c in merged:
            merged[c] = merged[c].astype("Int64")  # stays integer next to the empty cells of rejected rows
    cols = ["row", *[c for c in merged.columns if c not in ("row", "error")], "error"]
    return merged.sort_values("row").reset_index(drop=True)[cols]


_TOKEN = re.compile(r"([A-Z][a-z]?)(\d*[+-])?(\d*)")


def parse_formula(text: str) -> tuple[tuple[str, str, str, str, str], tuple[int | None, ...]]:
    """Split an AA'BB'X6 formula written in site order into the five positions, with optional oxidation states.

    Accepted shapes: ``Cs2AgBiCl6`` (A2 B B' X6), ``NaLaFeWO6`` (A A' B B' X6), ``KLaMg2O6``-like (A A' B2 X6),
    ``Ba2Mg2O6`` (A2 B2 X6); each element may carry a charge before its count: ``Sr2Fe3+Mo5+O6``, ``Cs+2Ag+Bi3+Cl-6``.
    Write Na3AlF6 as ``Na2NaAlF6``. Returns (elements, states) with None for a state not given.
    """
    compact = text.replace(" ", "")
    tokens, pos = [], 0
    while pos < len(compact):
        m = _TOKEN.match(compact, pos)
        if not m or m.end() == pos:
            raise InputError(
                f"cannot read formula {text!r} at {compact[pos:]!r}; expected e.g. Cs2AgBiCl6 or Sr2Fe3+Mo5+O6"
            )
        el, charge, count = m.groups()
        if not Element.is_valid_symbol(el):
            raise InputError(f"formula {text!r}: unknown element {el!r}; allowed: a chemical element symbol")
        q = None
        if charge:
            magnitude = int(charge[:-1]) if charge[:-1] else 1
            q = magnitude if charge[-1] == "+" else -magnitude
        tokens.append((el, q, int(count) if count else 1))
        pos = m.end()
    counts = [c for _, _, c in tokens]
    expand = {
        (2, 1, 1, 6): (0, 0, 1, 2, 3),
        (1, 1, 1, 1, 6): (0, 1, 2, 3, 4),
        (1, 1, 2, 6): (0, 1, 2, 2, 3),
        (2, 2, 6): (0, 0, 1, 1, 2),
    }
    if tuple(counts) not in expand:
        raise InputError(
            f"formula {text!r} is not an AA'BB'X6 formula in site order; allowed shapes: A2BB'X6 (Cs2AgBiCl6), "
            f"AA'BB'X6 (NaLaFeWO6), AA'B2X6, A2B2X6"
        )
    picks = expand[tuple(counts)]
    elements = tuple(tokens[i][0] for i in picks)
    states = tuple(tokens[i][1] for i in picks)
    return elements, states  # type: ignore[return-value]


def formula_row(formula: str, table: SiteTable | None = None) -> pd.Series:
    """The descriptor row (composition_id, species, oxidation states, descriptors, expected ordering) of a formula
    such as Cs2AgBiCl6 or Sr2Fe3+Mo5+O6; a bad formula raises InputError naming it."""
    from dp_screen.chemistry.site_tables import load_site_table

    elements, states = parse_formula(formula)
    row = {c: e for c, e in zip(("A", "A2", "B", "B2", "X"), elements, strict=True)}
    row |= {c: ("" if q is None else str(q)) for c, q in zip(("nA", "nA2", "nB", "nB2", "nX"), states, strict=True)}
    out = descriptors_for_table(pd.DataFrame([row]), table or load_site_table()).iloc[0]
    if out["error"]:
        raise InputError(out["error"].replace("row 1", f"formula {formula!r}", 1))
    return out
