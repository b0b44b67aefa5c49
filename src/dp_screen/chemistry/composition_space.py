"""The AA'BB'X6 composition space: every charge-balanced composition of a site table.

{A, A'} and {B, B'} are unordered pairs of species (an element in one oxidation state); one composition per
oxidation-state assignment; charge balance qA + qA' + qB + qB' = 6 |qX|. Within a pair the species are ordered by
(oxidation state, element), so a composition's id never depends on the order of the input table:
``Cs+_Cs+_Ag+_Bi3+_Cl-`` (A_A'_B_B'_X in pymatgen species notation).

Oxidation-state twins: compositions that differ only in their oxidation states (Sr2Fe2+Mo6+O6 and Sr2Fe3+Mo5+O6,
Cs2Tl+Au3+Cl6 and Cs2Au+Tl3+Cl6) have the same elements on the same sites, which is all an MLIP sees. They share
one :func:`chemistry_id` (the elements, each pair in element order: ``Sr_Sr_Fe_Mo_O``); the relax jobs relax one
start per chemistry, ordering, tilt and method and give each twin its copy (:mod:`dp_screen.jobs.relax`).
"""

from __future__ import annotations

from collections import defaultdict
from functools import cache

import numpy as np
import pandas as pd

from dp_screen.chemistry.descriptors import add_descriptors
from dp_screen.chemistry.site_tables import SiteSpecies, SiteTable, species_label

SPECIES_COLUMNS = ("A", "nA", "rA", "A2", "nA2", "rA2", "B", "nB", "rB", "B2", "nB2", "rB2", "X", "nX", "rX")

_label = cache(species_label)


def composition_id(a: str, na: int, a2: str, na2: int, b: str, nb: int, b2: str, nb2: int, x: str, nx: int) -> str:
    """The canonical id of a composition; pairs are put in (oxidation state, element) order first."""
    (na, a), (na2, a2) = sorted([(na, a), (na2, a2)])
    (nb, b), (nb2, b2) = sorted([(nb, b), (nb2, b2)])
    return "_".join(_label(el, q) for el, q in ((a, na), (a2, na2), (b, nb), (b2, nb2), (x, nx)))


SITE_ROLES = ("A", "A2", "B", "B2", "X")


def parse_composition_id(cid: str) -> list[tuple[str, int]]:
    """(element, oxidation state) of each site of a composition id, in the order A, A', B, B', X
    (``Cs+_Cs+_Ag+_Bi3+_Cl-`` -> [("Cs", 1), ("Cs", 1), ("Ag", 1), ("Bi", 3), ("Cl", -1)])."""
    import re

    labels = cid.split("_")
    found = [re.fullmatch(r"([A-Z][a-z]?)(\d*)([+-])", label) for label in labels]
    if len(labels) != len(SITE_ROLES) or not all(found):
        raise ValueError(f"not a composition id: {cid!r}; expected A_A'_B_B'_X in species notation")
    return [(m.group(1), int(m.group(2) or 1) * (1 if m.group(3) == "+" else -1)) for m in found]


def composition_assignment(cid: str) -> dict[str, int] | None:
    """element -> oxidation state of a composition id (``Sr2+_Sr2+_Fe3+_Mo5+_O2-``); None when an element holds two
    states (Fe2+/Fe4+ say: a per-element assignment cannot say which site is which) or the id is not one."""
    try:
        sites = parse_composition_id(cid)
    except ValueError:
        return None
    out: dict[str, int] = {}
    for element, q in sites:
        if out.setdefault(element, q) != q:
            return None
    return out


def chemistry_id(cid: str) -> str:
    """The elements of a composition id, each site pair in element order: ``Sr2+_Sr2+_Fe3+_Mo5+_O2-`` and
    ``Sr2+_Sr2+_Fe2+_Mo6+_O2-`` both give ``Sr_Sr_Fe_Mo_O`` (oxidation-state twins share it)."""
    els = [element for element, _ in parse_composition_id(cid)]
    return "_".join([*sorted(els[:2]), *sorted(els[2:4]), els[4]])


def twin_counts(df: pd.DataFrame, by: str | None = "expected_ordering") -> dict:
    """How many compositions of an enumeration table and how many distinct chemistries (:func:`chemistry_id`, and
    ``by`` too: twins relax together only in the same ordering) they hold, and the twins beyond the first of each."""
    keys = df["composition_id"].map(chemistry_id)
    if by:
        keys = keys + "|" + df[by].astype(str)
    distinct = int(keys.nunique())
    return {"compositions": len(df), "chemistries": distinct, "twins": len(df) - distinct}


def formula(a: str, a2: str, b: str, b2: str, x: str) -> str:
    """Reduced formula text with the site order kept, e.g. Cs2AgBiCl6, NaLaFeWO6, Ba2CaMoO6."""
    a_part = f"{a}2" if a == a2 else f"{a}{a2}"
    b_part = f"{b}2" if b == b2 else f"{b}{b2}"
    return f"{a_part}{b_part}{x}6"


def _pairs(species: list[SiteSpecies], allow_same: bool) -> tuple[np.ndarray, np.ndarray]:
    i, j = np.triu_indices(len(species), k=0 if allow_same else 1)
    return i, j


def enumerate_compositions(
    table: SiteTable,
    allow_same_a: bool = True,
    allow_same_b: bool = True,
    descriptors: bool = True,
) -> pd.DataFrame:
    """Every charge-balanced AA'BB'X6 composition of ``table`` as a DataFrame, one row per composition.

    Columns: composition_id, formula, the species columns A, nA, rA, A2, nA2, rA2, B, nB, rB, B2, nB2, rB2, X, nX,
    rX, and (unless ``descriptors`` is False) those of :func:`dp_screen.chemistry.descriptors.add_descriptors`.
    Rows are sorted by composition_id. ``allow_same_a`` / ``allow_same_b`` allow A = A' / B = B' (same species).
    """
    a_sp, b_sp, x_sp = table.on_site("A"), table.on_site("B"), table.on_site("X")
    ai, aj = _pairs(a_sp, allow_same_a)
    bi, bj = _pairs(b_sp, allow_same_b)
    a_q = np.array([s.oxidation_state for s in a_sp])
    b_q = np.array([s.oxidation_state for s in b_sp])
    a_sum, b_sum = a_q[ai] + a_q[aj], b_q[bi] + b_q[bj]

    b_by_sum: dict[int, np.ndarray] = defaultdict(lambda: np.empty(0, dtype=int))
    for s in np.unique(b_sum):
        b_by_sum[int(s)] = np.flatnonzero(b_sum == s)

    a_idx, b_idx, x_idx = [], [], []
    for k, x in enumerate(x_sp):
        needed = -6 * x.oxidation_state
        for ap in range(len(ai)):
            matches = b_by_sum[needed - int(a_sum[ap])]
            if matches.size:
                a_idx.append(np.full(matches.size, ap))
                b_idx.append(matches)
                x_idx.append(np.full(matches.size, k))
    if a_idx:
        a_idx, b_idx, x_idx = np.concatenate(a_idx), np.concatenate(b_idx), np.concatenate(x_idx)
    else:
        a_idx = b_idx = x_idx = np.empty(0, dtype=int)

    def column(species: list[SiteSpecies], idx: np.ndarray, attr: str) -> np.ndarray:
        values = np.array([getattr(s, attr) for s in species])
        return values[idx] if len(values) else np.empty(0)

    df = pd.DataFrame(
        {
            "A": column(a_sp, ai[a_idx], "element"),
            "nA": column(a_sp, ai[a_idx], "oxidation_state"),
            "rA": column(a_sp, ai[a_idx], "radius"),
            "A2": column(a_sp, aj[a_idx], "element"),
            "nA2": column(a_sp, aj[a_idx], "oxidation_state"),
            "rA2": column(a_sp, aj[a_idx], "radius"),
            "B": column(b_sp, bi[b_idx], "element"),
            "nB": column(b_sp, bi[b_idx], "oxidation_state"),
            "rB": column(b_sp, bi[b_idx], "radius"),
            "B2": column(b_sp, bj[b_idx], "element"),
            "nB2": column(b_sp, bj[b_idx], "oxidation_state"),
            "rB2": column(b_sp, bj[b_idx], "radius"),
            "X": column(x_sp, x_idx, "element"),
            "nX": column(x_sp, x_idx, "oxidation_state"),
            "rX": column(x_sp, x_idx, "radius"),
        }
    )
    return finish_table(df, descriptors=descriptors)


def _canonicalise_pairs(df: pd.DataFrame) -> None:
    """Put each of the {A, A'} and {B, B'} pairs in (oxidation state, element) order, in place."""
    for first, second in (("A", "A2"), ("B", "B2")):
        q1, q2 = df[f"n{first}"].to_numpy(), df[f"n{second}"].to_numpy()
        e1, e2 = df[first].to_numpy(dtype=str), df[second].to_numpy(dtype=str)
        swap = (q2 < q1) | ((q2 == q1) & (e2 < e1))
        if swap.any():
            for c1, c2 in ((first, second), (f"n{first}", f"n{second}"), (f"r{first}", f"r{second}")):
                v1, v2 = df.loc[swap, c1].copy(), df.loc[swap, c2].copy()
                df.loc[swap, c1], df.loc[swap, c2] = v2.to_numpy(), v1.to_numpy()


def finish_table(df: pd.DataFrame, descriptors: bool = True) -> pd.DataFrame:
    """Canonicalise the site pairs, add composition_id and formula (and descriptors); sort by id."""
    for c in ("nA", "nA2", "nB", "nB2", "nX"):
        df[c] = df[c].astype(int)
    _canonicalise_pairs(df)
    cols = [df[c].tolist() for c in ("A", "nA", "A2", "nA2", "B", "nB", "B2", "nB2", "X", "nX")]
    ids, formulas = [], []
    for a, na, a2, na2, b, nb, b2, nb2, x, nx in zip(*cols, strict=True):
        ids.append(f"{_label(a, na)}_{_label(a2, na2)}_{_label(b, nb)}_{_label(b2, nb2)}_{_label(x, nx)}")
        formulas.append(formula(a, a2, b, b2, x))
    df.insert(0, "composition_id", ids)
    df.insert(1, "formula", formulas)
    if descriptors:
        add_descriptors(df)
    return df.sort_values("composition_id", kind="stable").reset_index(drop=True)


def summarize(df: pd.DataFrame) -> dict:
    """The counts printed by ``dp-screen enumerate --dry-run --json``."""
    with_cs = int(((df["A"] == "Cs") | (df["A2"] == "Cs")).sum()) if len(df) else 0
    by_anion = {str(k): int(v) for k, v in df["X"].value_counts().sort_index().items()} if len(df) else {}
    twins = twin_counts(df, "expected_ordering" if "expected_ordering" in df else None)
    return {
        "total": int(len(df)),
        "with_Cs": with_cs,
        "by_anion": by_anion,
        "chemistries": twins["chemistries"],
        "oxidation_state_twins": twins["twins"],
    }
