"""Bond valence: parameters, bond-valence sums and the global instability index (GII).

Parameters come from the IUCr "Accumulated table of bond valence parameters" (I. D. Brown, bvparm2020, shipped
unchanged with its copyright notice as ``dp_screen/data/bvparm2020.cif``). A lookup for a cation-anion pair tries,
in order:

1. ``exact``: rows with the cation's exact oxidation state (and the anion's);
2. ``unspecified``: rows whose cation valence is 9 (valence not specified in the source paper);
3. ``brese-okeeffe``: the Brese & O'Keeffe (Acta Cryst. B47, 192 (1991)) element parameters (pymatgen's
   bvparam_1991.yaml), R0 = r_c + r_a - r_c r_a (sqrt(c_c) - sqrt(c_a))^2 / (c_c r_c + c_a r_a), b = 0.37.

Within 1 and 2 the row is chosen by the parameter set (``BV_PARAMETER_SETS``), then the table's order (decreasing
reliability); rows marked "unchecked" come last:

- ``adams2001`` (default): Adams (Acta Cryst. B57, 278 (2001), ref "c"), the bond-softness parameters of the alkali
  cations (Li-Cs with O, S, Se, Te, F, Cl, Br, I), fitted with every neighbour (second shells included) rather than
  with b = 0.37; then Brown & Altermatt (1985, ref "a"), then Brese & O'Keeffe (1991, ref "b"). Only alkali pairs
  differ from the other set. Measured against experiment it describes the alkali double perovskites far better:
  the observed structures' GII falls from 0.11 to 0.06 (Na3AlF6) and 0.22 to 0.08 (Rb2NaAlF6), and the built
  volumes come within 3% where b = 0.37 misses by +6% and +8% (``benchmarks/bench_structures.py``).
- ``brown-altermatt``: Brown & Altermatt, then Brese & O'Keeffe (b = 0.37 throughout, the sets the GII criteria
  were calibrated on); dp_screen's default until 0.2.0.

s_ij = exp((R0 - R_ij) / b); V_i = sum_j s_ij; GII = sqrt(mean_i (V_i - |v_i|)^2) (Salinas-Sanchez et al. 1992).
"""

from __future__ import annotations

import hashlib
import math
import shlex
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dp_screen.errors import InputError

if TYPE_CHECKING:
    from pymatgen.core import Structure

BV_TABLE_FILE = "bvparm2020.cif"
# parameter set -> bvparm2020 reference ids preferred, in order
BV_PARAMETER_SETS: dict[str, tuple[str, ...]] = {"adams2001": ("c", "a", "b"), "brown-altermatt": ("a", "b")}
DEFAULT_BV_SET = "adams2001"


def check_bv_set(name: str) -> str:
    """The parameter set's name if it is known; InputError naming the allowed ones otherwise."""
    if name not in BV_PARAMETER_SETS:
        raise InputError(f"unknown bond-valence parameter set {name!r}; allowed: {', '.join(BV_PARAMETER_SETS)}")
    return name


@dataclass(frozen=True)
class BondValenceParameter:
    """R0 and b for one cation-anion pair, with where they came from."""

    cation: str
    cation_valence: int
    anion: str
    anion_valence: int
    r0: float
    b: float
    source: str  # "exact", "unspecified" or "brese-okeeffe"
    ref_id: str  # reference id in bvparm2020 ("a", "bs", ...) or "B&OK1991"
    reference: str
    parameter_set: str = DEFAULT_BV_SET

    def ideal_bond_length(self, n_bonds: int = 6) -> float:
        """Length of each of n equal bonds that sum to the cation's valence: R0 - b ln(v / n)."""
        return self.r0 - self.b * math.log(self.cation_valence / n_bonds)

    def as_dict(self) -> dict:
        """Plain dict for documents."""
        return {
            "pair": f"{self.cation}{self.cation_valence:+d}-{self.anion}{self.anion_valence:+d}",
            "r0": self.r0,
            "b": self.b,
            "source": self.source,
            "ref_id": self.ref_id,
            "reference": self.reference,
            "parameter_set": self.parameter_set,
        }


@dataclass(frozen=True)
class _Row:
    r0: float
    b: float
    ref: str
    unchecked: bool
    order: int


class BondValenceTable:
    """The parsed bvparm2020 table plus the Brese & O'Keeffe fallback, read with one parameter set."""

    def __init__(self, text: str, name: str = BV_TABLE_FILE, parameter_set: str = DEFAULT_BV_SET) -> None:
        self.name = name
        self.parameter_set = check_bv_set(parameter_set)
        self.preferred = BV_PARAMETER_SETS[parameter_set]
        self.sha256 = hashlib.sha256(text.encode()).hexdigest()
        self.references: dict[str, str] = {}
        self.rows: dict[tuple[str, int, str, int], list[_Row]] = {}
        self._parse(text)

    def _parse(self, text: str) -> None:
        lines = text.replace("\r\n", "\n").split("\n")
        section = None
        for line in lines:
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            if stripped == "loop_":
                section = "loop"
                continue
            if stripped.startswith("_valence_ref_"):
                section = "refs"
                continue
            if stripped.startswith("_valence_param_"):
                section = "params"
                continue
            if stripped.startswith("_") or stripped.startswith(";"):
                section = None if stripped.startswith("_") else section
                continue
            if section == "refs":
                parts = shlex.split(stripped.replace("'s ", "\u2019s ").replace("O'K", "O\u2019K"), posix=True)
                if len(parts) >= 2:
                    self.references[parts[0]] = " ".join(parts[1:]).replace("\u2019", "'")
            elif section == "params":
                parts = stripped.split()
                if len(parts) < 7:
                    continue
                try:
                    key = (parts[0], int(parts[1]), parts[2], int(parts[3]))
                    row = _Row(float(parts[4]), float(parts[5]), parts[6], "unchecked" in stripped.lower(), 0)
                except ValueError:
                    continue
                bucket = self.rows.setdefault(key, [])
                bucket.append(_Row(row.r0, row.b, row.ref, row.unchecked, len(bucket)))

    def _best(self, rows: list[_Row]) -> _Row:
        pref = self.preferred

        def rank(r: _Row) -> tuple:
            return (r.unchecked, r.ref not in pref, pref.index(r.ref) if r.ref in pref else 0, r.order)

        return min(rows, key=rank)

    def lookup(self, cation: str, cation_valence: int, anion: str, anion_valence: int) -> BondValenceParameter:
        """Parameters for a pair, falling back as the module docstring says; InputError if there are none."""
        for valence, source in ((cation_valence, "exact"), (9, "unspecified")):
            rows = self.rows.get((cation, valence, anion, anion_valence))
            if rows:
                best = self._best(rows)
                return BondValenceParameter(
                    cation,
                    cation_valence,
                    anion,
                    anion_valence,
                    best.r0,
                    best.b,
                    source,
                    best.ref,
                    self.references.get(best.ref, ""),
                    self.parameter_set,
                )
        okeeffe = _brese_okeeffe()
        if cation in okeeffe and anion in okeeffe:
            rc, cc = okeeffe[cation]["r"], okeeffe[cation]["c"]
            ra, ca = okeeffe[anion]["r"], okeeffe[anion]["c"]
            r0 = rc + ra - rc * ra * (math.sqrt(cc) - math.sqrt(ca)) ** 2 / (cc * rc + ca * ra)
            return BondValenceParameter(
                cation,
                cation_valence,
                anion,
                anion_valence,
                round(r0, 4),
                0.37,
                "brese-okeeffe",
                "B&OK1991",
                "Brese and O'Keeffe, (1991), Acta Cryst. B47, 192-197 (element parameters, pymatgen bvparam_1991)",
                self.parameter_set,
            )
        raise InputError(
            f"no bond-valence parameters for {cation}{cation_valence:+d}-{anion}{anion_valence:+d}: not in "
            f"{self.name} (exact or unspecified valence) nor in the Brese & O'Keeffe element table"
        )

    def has_exact(self, cation: str, cation_valence: int, anion: str, anion_valence: int) -> bool:
        """Whether the table has an exact-valence row for the pair."""
        return (cation, cation_valence, anion, anion_valence) in self.rows


@cache
def _brese_okeeffe() -> dict:
    import pymatgen.core
    from monty.serialization import loadfn

    # pymatgen moved its analysis.bond_valence module to core; the data file sits beside it
    for folder in (Path(pymatgen.core.__file__).parent, Path(pymatgen.core.__file__).parent.parent / "analysis"):
        if (folder / "bvparam_1991.yaml").exists():
            return loadfn(folder / "bvparam_1991.yaml")
    return {}


def bond_valence_table(parameter_set: str = DEFAULT_BV_SET) -> BondValenceTable:
    """The packaged bvparm2020 table read with a parameter set (``BV_PARAMETER_SETS``), parsed once per set."""
    return _packaged_table(check_bv_set(parameter_set))


@cache
def _packaged_table(parameter_set: str) -> BondValenceTable:
    text = resources.files("dp_screen.data").joinpath(BV_TABLE_FILE).read_text()
    return BondValenceTable(text, parameter_set=parameter_set)


def _site_species(structure: Structure) -> list[tuple[str, int]]:
    out = []
    for i, site in enumerate(structure):
        sp = site.specie
        q = getattr(sp, "oxi_state", None)
        if q is None:
            raise InputError(f"site {i} ({sp}) has no oxidation state; decorate the structure with oxidation states")
        out.append((sp.symbol, int(round(q))))
    return out


def bond_valence_sums(structure: Structure, cutoff: float = 6.0, table: BondValenceTable | None = None) -> np.ndarray:
    """Bond-valence sum of every site of a periodic structure with oxidation states (cation-anion bonds only)."""
    table = table or bond_valence_table()
    species = _site_species(structure)
    i_idx, j_idx, _, dist = structure.get_neighbor_list(cutoff)
    sums = np.zeros(len(structure))
    cache_: dict = {}
    for i, j, d in zip(i_idx, j_idx, dist, strict=True):
        (ei, qi), (ej, qj) = species[i], species[j]
        if qi > 0 > qj:
            key = (ei, qi, ej, qj)
        elif qj > 0 > qi:
            key = (ej, qj, ei, qi)
        else:
            continue
        if key not in cache_:
            cache_[key] = table.lookup(*key)
        p = cache_[key]
        sums[i] += math.exp((p.r0 - d) / p.b)
    return sums


def global_instability_index(structure: Structure, cutoff: float = 6.0, table: BondValenceTable | None = None) -> float:
    """GII (valence units) of a periodic structure with oxidation states."""
    sums = bond_valence_sums(structure, cutoff, table)
    formal = np.array([abs(q) for _, q in _site_species(structure)], dtype=float)
    return float(np.sqrt(np.mean((sums - formal) ** 2)))


def bond_valence_coverage(df, mode: str = "exact") -> np.ndarray:
    """Mask of compositions (rows with A, nA, A2, nA2, B, nB, B2, nB2, X, nX) whose every cation-anion pair has
    bond-valence parameters: ``exact`` = an exact-valence row of the table; ``any`` = any lookup succeeds
    (unspecified valence or Brese & O'Keeffe)."""
    if mode not in ("exact", "any"):
        raise InputError(f"unknown bond-valence filter {mode!r}; allowed: exact, any")
    table = bond_valence_table()
    known: dict[tuple, bool] = {}

    def covered(el: str, q: int, x: str, qx: int) -> bool:
        key = (el, q, x, qx)
        if key not in known:
            if mode == "exact":
                known[key] = table.has_exact(*key)
            else:
                try:
                    table.lookup(*key)
                    known[key] = True
                except InputError:
                    known[key] = False
        return known[key]

    mask = np.ones(len(df), dtype=bool)
    x, qx = df["X"].tolist(), df["nX"].tolist()
    for el_col, q_col in (("A", "nA"), ("A2", "nA2"), ("B", "nB"), ("B2", "nB2")):
        mask &= np.fromiter(
            (
                covered(e, q, xe, xq)
                for e, q, xe, xq in zip(df[el_col].tolist(), df[q_col].tolist(), x, qx, strict=True)
            ),
            dtype=bool,
            count=len(df),
        )
    return mask
