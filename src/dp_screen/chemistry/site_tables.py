"""Site tables: the species allowed on the A, B and X sites of AA'BB'X6, with their Shannon radii.

A site table is a human-editable CSV file (``#`` starts a comment line) with the columns

``site, element, oxidation_state, coordination, radius``

``site`` is A, B or X; ``coordination`` (optional, default 12 for A and 6 for B and X) is the coordination number
whose Shannon ionic radius is used; ``radius`` (optional, Angstrom) overrides the value from pymatgen's Shannon table.
When the radius is left empty the Shannon radius at the coordination closest to the requested one is looked up, as
Bartel et al. (2019) do. The packaged default is rule "R1" (15 A, 130 B, 5 X species; defined in ``r1_species`` below).
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

from pymatgen.core.periodic_table import Element

from dp_screen.errors import InputError

SITES = ("A", "B", "X")
NOMINAL_COORDINATION = {"A": 12, "B": 6, "X": 6}
REQUIRED_COLUMNS = ("site", "element", "oxidation_state")
OPTIONAL_COLUMNS = ("coordination", "radius")
DEFAULT_TABLE_NAME = "site_table_r1.csv"

_ROMAN = {
    1: "I",
    2: "II",
    3: "III",
    4: "IV",
    5: "V",
    6: "VI",
    7: "VII",
    8: "VIII",
    9: "IX",
    10: "X",
    11: "XI",
    12: "XII",
    14: "XIV",
}
_FROM_ROMAN = {v: k for k, v in _ROMAN.items()}


def species_label(element: str, oxidation_state: int) -> str:
    """Return the pymatgen-style label of a species, e.g. ``Bi3+``, ``Cs+``, ``O2-``."""
    sign = "+" if oxidation_state > 0 else "-"
    magnitude = abs(oxidation_state)
    return f"{element}{'' if magnitude == 1 else magnitude}{sign}"


@dataclass(frozen=True)
class SiteSpecies:
    """One species allowed on one site, with the radius used for the descriptors."""

    site: str
    element: str
    oxidation_state: int
    coordination: int
    radius: float

    @property
    def label(self) -> str:
        """Species label such as ``Bi3+``."""
        return species_label(self.element, self.oxidation_state)


@dataclass(frozen=True)
class SiteTable:
    """The species of the A, B and X sites; ``sha256`` identifies the table's content for provenance."""

    species: tuple[SiteSpecies, ...]
    name: str = "custom"
    sha256: str = ""
    _index: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for sp in self.species:
            self._index[(sp.site, sp.element, sp.oxidation_state)] = sp

    def on_site(self, site: str) -> list[SiteSpecies]:
        """The species of one site, sorted by (oxidation state, element) so that order in the file never matters."""
        return sorted((sp for sp in self.species if sp.site == site), key=lambda s: (s.oxidation_state, s.element))

    def get(self, site: str, element: str, oxidation_state: int) -> SiteSpecies | None:
        """The table's entry for a species on a site, or None."""
        return self._index.get((site, element, oxidation_state))

    def restrict_anions(self, anions: list[str] | None) -> SiteTable:
        """A copy keeping only the X species whose element is in ``anions`` (None keeps all)."""
        if anions is None:
            return self
        known = sorted({sp.element for sp in self.on_site("X")})
        for el in anions:
            if el not in known:
                raise InputError(f"unknown anion {el!r}; this site table allows X = {', '.join(known)}")
        kept = tuple(sp for sp in self.species if sp.site != "X" or sp.element in anions)
        return SiteTable(species=kept, name=f"{self.name}[X={','.join(anions)}]", sha256=self.sha256)

    def to_csv(self) -> str:
        """The table as CSV text in the file format this module reads."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["site", "element", "oxidation_state", "coordination", "radius"])
        for site in SITES:
            for sp in self.on_site(site):
                writer.writerow([sp.site, sp.element, sp.oxidation_state, sp.coordination, f"{sp.radius:.3f}"])
        return buf.getvalue()


def _check_element(symbol: str, where: str) -> Element:
    if not Element.is_valid_symbol(symbol):
        raise InputError(f"{where}: unknown element {symbol!r}; allowed: a chemical element symbol such as Cs, Bi, Cl")
    return Element(symbol)


def allowed_oxidation_states(element: Element) -> list[int]:
    """Oxidation states pymatgen knows for an element (its list plus those with a Shannon radius)."""
    states = set(element.oxidation_states)
    states.update(_shannon_table(element))
    return sorted(states)


def _shannon_table(element: Element) -> dict[int, dict]:
    """pymatgen's Shannon radii of an element keyed by integer oxidation state (skips its malformed keys)."""
    raw = element.data.get("Shannon radii") or {}
    return {int(q): v for q, v in raw.items() if q.lstrip("-").isdigit()}


def check_oxidation_state(element: str, oxidation_state: int, where: str) -> None:
    """Raise InputError naming the allowed states when ``oxidation_state`` is impossible for ``element``."""
    el = _check_element(element, where)
    allowed = allowed_oxidation_states(el)
    if oxidation_state not in allowed:
        raise InputError(
            f"{where}: oxidation state {oxidation_state:+d} is impossible for {element}; "
            f"allowed: {', '.join(f'{q:+d}' for q in allowed) or 'none'}"
        )


def shannon_radius(element: str, oxidation_state: int, coordination: int) -> tuple[float, int]:
    """Shannon ionic radius (Angstrom) at the coordination number closest to ``coordination``.

    Ties go to the higher coordination. Where a species has several spin states the high-spin radius is used (as
    Bartel et al. 2019 do: Fe3+ 0.645, Ni3+ 0.60). Returns (radius, coordination used); raises InputError if
    pymatgen's Shannon table has no radius for the species.
    """
    el = _check_element(element, species_label(element, oxidation_state))
    table = _shannon_table(el).get(oxidation_state, {})
    numeric = {_FROM_ROMAN[cn]: data for cn, data in table.items() if cn in _FROM_ROMAN}
    if not numeric:
        have = sorted(_shannon_table(el))
        raise InputError(
            f"no Shannon radius for {species_label(element, oxidation_state)}; pymatgen has radii for {element} in "
            f"oxidation states {', '.join(f'{q:+d}' for q in have) or 'none'}; give one in the table's radius column"
        )
    cn = min(numeric, key=lambda c: (abs(c - coordination), -c))
    spins = numeric[cn]
    for spin in ("High Spin", "", "Low Spin"):
        if spin in spins:
            return float(spins[spin]["ionic_radius"]), cn
    return float(next(iter(spins.values()))["ionic_radius"]), cn


def _parse_int(value: str, column: str, where: str) -> int:
    try:
        return int(value.strip().lstrip("+"))
    except ValueError:
        raise InputError(f"{where}: {column} {value!r} is not an integer") from None


def parse_site_table(text: str, name: str = "custom") -> SiteTable:
    """Parse site-table CSV text; every malformed line raises InputError naming the line and what is allowed."""
    lines = [
        (i + 1, line) for i, line in enumerate(text.splitlines()) if line.strip() and not line.lstrip().startswith("#")
    ]
    if not lines:
        raise InputError(
            f"{name}: the site table is empty; expected a CSV header {','.join(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)}"
        )
    header = [h.strip().lower() for h in next(csv.reader([lines[0][1]]))]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    unknown = [c for c in header if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if missing or unknown:
        raise InputError(
            f"{name} line {lines[0][0]}: malformed header {','.join(header)!r}"
            f"{' (missing ' + ', '.join(missing) + ')' if missing else ''}"
            f"{' (unknown ' + ', '.join(unknown) + ')' if unknown else ''}; "
            f"expected columns {', '.join(REQUIRED_COLUMNS)} and optionally {', '.join(OPTIONAL_COLUMNS)}"
        )
    species: list[SiteSpecies] = []
    seen: set[tuple[str, str, int]] = set()
    for lineno, line in lines[1:]:
        where = f"{name} line {lineno}"
        values = next(csv.reader([line]))
        if len(values) != len(header):
            raise InputError(f"{where}: {len(values)} fields, expected {len(header)} ({','.join(header)})")
        row = {k: v.strip() for k, v in zip(header, values, strict=True)}
        site = row["site"].upper()
        if site not in SITES:
            raise InputError(f"{where}: site {row['site']!r} is not one of {', '.join(SITES)}")
        element = row["element"]
        q = _parse_int(row["oxidation_state"], "oxidation_state", where)
        check_oxidation_state(element, q, where)
        if (site == "X") != (q < 0):
            raise InputError(
                f"{where}: {species_label(element, q)} cannot sit on site {site}; "
                f"{'X needs an anion (negative oxidation state)' if site == 'X' else site + ' needs a cation (positive oxidation state)'}"
            )
        cn_text = row.get("coordination", "")
        coordination = _parse_int(cn_text, "coordination", where) if cn_text else NOMINAL_COORDINATION[site]
        radius_text = row.get("radius", "")
        if radius_text:
            try:
                radius = float(radius_text)
            except ValueError:
                raise InputError(f"{where}: radius {radius_text!r} is not a number (Angstrom)") from None
            if not 0.0 < radius < 5.0:
                raise InputError(f"{where}: radius {radius} is outside the allowed range 0-5 Angstrom")
        else:
            try:
                radius, coordination = shannon_radius(element, q, coordination)
            except InputError as exc:
                raise InputError(f"{where}: {exc}") from None
        key = (site, element, q)
        if key in seen:
            raise InputError(f"{where}: {species_label(element, q)} is listed twice on site {site}")
        seen.add(key)
        species.append(SiteSpecies(site, element, q, coordination, radius))
    for site in SITES:
        if not any(sp.site == site for sp in species):
            raise InputError(f"{name}: no species on site {site}; a site table needs at least one A, B and X species")
    digest = hashlib.sha256(SiteTable(tuple(species)).to_csv().encode()).hexdigest()
    return SiteTable(species=tuple(species), name=name, sha256=digest)


def load_site_table(path: str | Path | None = None) -> SiteTable:
    """Load a site table file, or the packaged default (rule R1) when ``path`` is None."""
    if path is None:
        return _default_site_table()
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(f"cannot read site table {str(path)!r}: {exc.strerror}") from None
    return parse_site_table(text, name=path.name)


@cache
def _default_site_table() -> SiteTable:
    text = resources.files("dp_screen.data").joinpath(DEFAULT_TABLE_NAME).read_text()
    return parse_site_table(text, name="R1")


# --- rule R1, generated from pymatgen's Shannon table (scripts/make_site_table.py writes the packaged file) ---

R1_A_SPECIES = [
    ("Na", 1),
    ("K", 1),
    ("Rb", 1),
    ("Cs", 1),
    ("Tl", 1),
    ("Ca", 2),
    ("Sr", 2),
    ("Ba", 2),
    ("Pb", 2),
    ("Cd", 2),
    ("La", 3),
    ("Ce", 3),
    ("Nd", 3),
    ("Sm", 3),
    ("Ce", 4),
]
R1_X_SPECIES = [("O", -2), ("F", -1), ("Cl", -1), ("Br", -1), ("I", -1)]
R1_B_EXCLUDED = {
    "H",
    "B",
    "C",
    "N",
    "P",
    "S",
    "O",
    "F",
    "Cl",
    "Br",
    "I",
    "He",
    "Ne",
    "Ar",
    "Kr",
    "Xe",
    "Rn",
    "Tc",
    "Pm",
    "Po",
    "At",
    "Fr",
    "Ra",
    "Ac",
    "Th",
    "Pa",
    "U",
    "Np",
    "Pu",
}


def r1_species() -> list[SiteSpecies]:
    """The species of rule R1 (A: the 15 non-radioactive species with a 12-coordinate Shannon radius), with radii from pymatgen's Shannon table."""
    out = []
    for el, q in R1_A_SPECIES:
        r, cn = shannon_radius(el, q, 12)
        if cn != 12:
            raise RuntimeError(f"R1 A-site species {el}{q:+d} has no 12-coordinate radius")
        out.append(SiteSpecies("A", el, q, cn, r))
    for z in range(1, Element("Pu").Z + 1):
        el = Element.from_Z(z)
        if el.symbol in R1_B_EXCLUDED:
            continue
        for q, by_cn in sorted(_shannon_table(el).items()):
            if q > 0 and "VI" in by_cn:
                r, cn = shannon_radius(el.symbol, q, 6)
                out.append(SiteSpecies("B", el.symbol, q, cn, r))
    for el, q in R1_X_SPECIES:
        r, cn = shannon_radius(el, q, 6)
        out.append(SiteSpecies("X", el, q, cn, r))
    return out


def r1_table_text() -> str:
    """The packaged default table's text, regenerated from pymatgen (used by scripts/make_site_table.py)."""
    header = (
        "# dp_screen site table, rule R1 (dp_screen.chemistry.site_tables.r1_species).\n"
        "# A: the 15 non-radioactive species with a 12-coordinate Shannon radius. B: every positive species with a\n"
        "# 6-coordinate Shannon radius, elements up to Pu except H, B, C, N, P, S, O, halogens, noble gases and the\n"
        "# radioactive Tc, Pm, Po, At, Fr, Ra, Ac, Th, Pa, U, Np, Pu. X: O2-, F-, Cl-, Br-, I- (6-coordinate radii).\n"
        "# Radii: Shannon ionic radii from pymatgen (high spin where there is a choice), Angstrom.\n"
        "# Edit freely: add or delete rows; leave radius empty to look it up at the given coordination.\n"
        "# Regenerate with: python scripts/make_site_table.py\n"
    )
    return header + SiteTable(tuple(r1_species())).to_csv()
