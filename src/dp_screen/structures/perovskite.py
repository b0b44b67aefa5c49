"""Bond-valence (SPuDS-like) and DLS starting structures of AA'BB'X6 double perovskites.

Construction (science reference section 5): a 2x2x2 pseudo-cubic supercell, B and B' on the integer sites in
rock-salt order, A on the cube centres (all A, layered along c, or rock-salt), X on the B-B' bonds. Each BX6 and
B'X6 octahedron is rigid and regular, with bond lengths d_B and d_B'. A Glazer tilt system rotates the octahedra by
w = (alpha s_x, beta s_y, gamma s_z) with s = (-1)^(j+k) for an in-phase (+) tilt about x and (-1)^(i+j+k) for an
anti-phase (-) one (likewise for y, z); an X on a bond along e moves perpendicular to it, towards w x e, so that
its distance from B stays d_B, and the B-B' spacing along e becomes d_B cos(theta) + sqrt(d_B'^2 - d_B^2 sin^2
theta), theta = |w x e|.

The free parameters (d_B, d_B' and one amplitude per distinct tilt letter) minimise the global instability index,
as SPuDS does; for the untilted cell this is the lattice constant and anion position optimisation (the fixed
midpoint model, d_B = d_B', is available for comparison). The A cations stay on the sites that symmetry gives them.
Every structure is checked with spglib against the tilt tables; the stored cell is the primitive one.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from functools import cache

import numpy as np
from pymatgen.core import Lattice, Species, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer
from scipy.optimize import minimize

from dp_screen.errors import DPScreenError, InputError
from dp_screen.structures.bond_valence import BondValenceTable, bond_valence_table
from dp_screen.structures.tilts import SPACE_GROUPS, expected_space_group, parse_tilt

SYMPREC = 1e-3
MAX_TILT_DEG = 25.0
START_TILT_DEG = 9.0
MIN_LETTER_SPLIT_DEG = 1.0
ORDERINGS = tuple(SPACE_GROUPS)


class SymmetryError(DPScreenError):
    """A built structure does not have the space group its tilt table gives."""


@dataclass(frozen=True)
class SiteSpeciesSet:
    """The five species of AA'BB'X6: (element, oxidation state) for A, A', B, B', X."""

    A: tuple[str, int]
    A2: tuple[str, int]
    B: tuple[str, int]
    B2: tuple[str, int]
    X: tuple[str, int]

    @property
    def same_a(self) -> bool:
        """A and A' are the same species."""
        return self.A == self.A2

    @property
    def same_b(self) -> bool:
        """B and B' are the same species."""
        return self.B == self.B2

    def check_balance(self) -> None:
        """InputError unless the charges balance."""
        total = self.A[1] + self.A2[1] + self.B[1] + self.B2[1] + 6 * self.X[1]
        if total != 0:
            raise InputError(
                f"{self.formula}: not charge balanced (cations {self.A[1]}+{self.A2[1]}+{self.B[1]}+{self.B2[1]}, "
                f"anions 6 x {self.X[1]}); allowed: qA + qA' + qB + qB' = 6|qX|"
            )

    @property
    def formula(self) -> str:
        """Formula with the site order kept."""
        a = f"{self.A[0]}2" if self.A[0] == self.A2[0] else f"{self.A[0]}{self.A2[0]}"
        b = f"{self.B[0]}2" if self.B[0] == self.B2[0] else f"{self.B[0]}{self.B2[0]}"
        return f"{a}{b}{self.X[0]}6"

    @classmethod
    def from_row(cls, row) -> SiteSpeciesSet:
        """From a composition document or table row (A, nA, A2, nA2, B, nB, B2, nB2, X, nX)."""
        return cls(
            (row["A"], int(row["nA"])), (row["A2"], int(row["nA2"])), (row["B"], int(row["nB"])),
            (row["B2"], int(row["nB2"])), (row["X"], int(row["nX"])),
        )  # fmt: skip


@dataclass
class BuiltStructure:
    """A starting structure with what it was built from and how good it is."""

    structure: Structure
    species: SiteSpeciesSet
    ordering: str
    tilt: str
    method: str
    space_group: int
    space_group_expected: int | None
    gii: float
    tilt_angles: list[float]
    bond_lengths: dict[str, float]
    bv_parameters: list[dict] = field(default_factory=list)
    supercell_40: Structure | None = None

    @property
    def volume_per_fu(self) -> float:
        """Volume per AA'BB'X6 formula unit (Angstrom^3)."""
        return self.structure.volume / (len(self.structure) / 10)

    def conventional(self) -> Structure:
        """The conventional standard cell (e.g. a = 10.8 A for Fm-3m Cs2AgBiCl6)."""
        return SpacegroupAnalyzer(self.structure, symprec=SYMPREC).get_conventional_standard_structure()

    def summary(self) -> dict:
        """The JSON printed by ``dp-screen build --json``: conventional lattice, per-f.u. volume, GII, tilts."""
        lat = self.conventional().lattice
        return {
            "formula": self.species.formula,
            "ordering": self.ordering,
            "tilt": self.tilt,
            "method": self.method,
            "space_group": self.space_group,
            "lattice": {k: round(v, 4) for k, v in zip(("a", "b", "c", "alpha", "beta", "gamma"),
                                                        (*lat.abc, *lat.angles), strict=True)},
            "volume_per_fu": round(self.volume_per_fu, 3),
            "gii": round(self.gii, 4),
            "tilt_angles": [round(t, 3) for t in self.tilt_angles],
            "n_atoms": len(self.structure),
        }  # fmt: skip


def _sign(sense: str, axis: int, i: int, j: int, k: int) -> int:
    if sense == "0":
        return 0
    if sense == "-":
        return (-1) ** (i + j + k)
    other = [v for a, v in enumerate((i, j, k)) if a != axis]
    return (-1) ** sum(other)


@dataclass(frozen=True)
class _Template:
    """Everything of the 40-atom construction that does not depend on the free parameters."""

    ordering: str
    tilt: str
    species_roles: tuple[str, ...]  # "A", "A2", "B", "B2", "X" per site
    b_sites: np.ndarray  # (8, 3) integer site indices of B/B'
    a_sites: np.ndarray  # (8, 3)
    x_owner: np.ndarray  # (24,) index into the four B-species sites
    x_axis: np.ndarray  # (24,)
    x_sigma: np.ndarray  # (24,)
    signs: np.ndarray  # (4, 3) tilt sign per B-species site and axis
    groups: tuple[int, int, int]


@cache
def _template(ordering: str, tilt: str) -> _Template:
    ts = parse_tilt(tilt)
    sites = list(itertools.product(range(2), repeat=3))
    b_species = [s for s in sites if sum(s) % 2 == 0]
    b_prime = [s for s in sites if sum(s) % 2 == 1]
    roles: list[str] = []
    if ordering == "rocksalt":
        a_roles = ["A" for _ in sites]
    elif ordering == "layered":
        a_roles = ["A" if s[2] % 2 == 0 else "A2" for s in sites]
    elif ordering == "rocksalt-A":
        a_roles = ["A" if sum(s) % 2 == 0 else "A2" for s in sites]
    else:
        raise InputError(f"unknown ordering {ordering!r}; allowed: {', '.join(ORDERINGS)}")
    roles += a_roles + ["B"] * 4 + ["B2"] * 4
    owner, axis, sigma = [], [], []
    for n, _ in enumerate(b_species):
        for ax in range(3):
            for sg in (1, -1):
                owner.append(n)
                axis.append(ax)
                sigma.append(sg)
    roles += ["X"] * len(owner)
    signs = np.array([[_sign(ts.senses[ax], ax, *s) for ax in range(3)] for s in b_species], dtype=float)
    return _Template(
        ordering, tilt, tuple(roles), np.array(b_species + b_prime, dtype=float), np.array(sites, dtype=float),
        np.array(owner), np.array(axis), np.array(sigma, dtype=float), signs, ts.groups,
    )  # fmt: skip


def _geometry(t: _Template, d_b: float, d_b2: float, amps_rad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cartesian positions (40, 3) and the diagonal of the 2x2x2 cell for given parameters."""
    w_axis = np.array([amps_rad[g] if g >= 0 else 0.0 for g in t.groups])
    w = t.signs * w_axis  # (4, 3) rotation vector per B-species octahedron
    theta = np.array([math.hypot(*[w_axis[b] for b in range(3) if b != a]) for a in range(3)])
    sin_t, cos_t = np.sin(theta), np.cos(theta)
    spacing = d_b * cos_t + np.sqrt(np.maximum(d_b2**2 - (d_b * sin_t) ** 2, 1e-6))
    a_pos = (t.a_sites + 0.5) * spacing
    b_pos = t.b_sites * spacing
    e = np.eye(3)[t.x_axis] * t.x_sigma[:, None]  # (24, 3) bond directions
    perp = np.cross(w[t.x_owner], e)
    norm = np.linalg.norm(perp, axis=1)
    safe = np.where(norm > 1e-12, norm, 1.0)
    perp_unit = perp / safe[:, None]
    th = theta[t.x_axis]
    x_pos = b_pos[t.x_owner] + d_b * (np.cos(th)[:, None] * e + np.sin(th)[:, None] * perp_unit)
    return np.vstack([a_pos, b_pos, x_pos]), 2.0 * spacing


class _GIIModel:
    """Fast GII of the construction: a fixed list of cation-anion pairs and their bond-valence parameters."""

    def __init__(self, t: _Template, species: SiteSpeciesSet, table: BondValenceTable, d0: tuple[float, float]):
        self.t = t
        role_species = {"A": species.A, "A2": species.A2, "B": species.B, "B2": species.B2, "X": species.X}
        self.formal = np.array([abs(role_species[r][1]) for r in t.species_roles], dtype=float)
        pos, cell = _geometry(t, *d0, np.zeros(3))
        cations = np.array([i for i, r in enumerate(t.species_roles) if r != "X"])
        anions = np.array([i for i, r in enumerate(t.species_roles) if r == "X"])
        images = np.array(list(itertools.product((-1, 0, 1), repeat=3)), dtype=float)
        cutoff = 1.3 * float(cell.mean()) / 2
        ci, ai, img = [], [], []
        for c in cations:
            for n in images:
                d = np.linalg.norm(pos[anions] + n * cell - pos[c], axis=1)
                for a in anions[d < cutoff]:
                    ci.append(c)
                    ai.append(a)
                    img.append(n)
        self.ci, self.ai, self.img = np.array(ci), np.array(ai), np.array(img)
        self.params = {}
        r0, b = [], []
        for c in self.ci:
            el, q = role_species[t.species_roles[c]]
            key = (el, q, species.X[0], species.X[1])
            if key not in self.params:
                self.params[key] = table.lookup(*key)
            r0.append(self.params[key].r0)
            b.append(self.params[key].b)
        self.r0, self.b = np.array(r0), np.array(b)
        self.n = len(t.species_roles)

    def gii(self, d_b: float, d_b2: float, amps_rad: np.ndarray) -> float:
        pos, cell = _geometry(self.t, d_b, d_b2, amps_rad)
        vec = pos[self.ai] + self.img * cell - pos[self.ci]
        s = np.exp((self.r0 - np.sqrt(np.einsum("ij,ij->i", vec, vec))) / self.b)
        v = np.bincount(self.ci, s, self.n) + np.bincount(self.ai, s, self.n)
        return float(np.sqrt(np.mean((v - self.formal) ** 2)))


def _ideal_lengths(species: SiteSpeciesSet, table: BondValenceTable) -> tuple[float, float]:
    return (
        table.lookup(*species.B, *species.X).ideal_bond_length(6),
        table.lookup(*species.B2, *species.X).ideal_bond_length(6),
    )


def _check_ordering(species: SiteSpeciesSet, ordering: str) -> None:
    if ordering not in ORDERINGS:
        raise InputError(f"unknown ordering {ordering!r}; allowed: {', '.join(ORDERINGS)}")
    if ordering == "rocksalt" and not species.same_a:
        raise InputError(
            f"{species.formula}: ordering 'rocksalt' puts one species on every A site, but A != A' "
            f"({species.A[0]}{species.A[1]:+d}, {species.A2[0]}{species.A2[1]:+d}); use 'layered' or 'rocksalt-A'"
        )


def _structure(t: _Template, species: SiteSpeciesSet, pos: np.ndarray, cell: np.ndarray) -> Structure:
    role_species = {"A": species.A, "A2": species.A2, "B": species.B, "B2": species.B2, "X": species.X}
    sp = [Species(*role_species[r]) for r in t.species_roles]
    return Structure(Lattice(np.diag(cell)), sp, pos, coords_are_cartesian=True)


def _verify(structure: Structure, species: SiteSpeciesSet, ordering: str, tilt: str) -> tuple[int, int | None, Structure]:
    expected = expected_space_group(ordering, tilt, species.same_a, species.same_b)
    sga = SpacegroupAnalyzer(structure, symprec=SYMPREC, angle_tolerance=0.5)
    number = sga.get_space_group_number()
    if expected is not None and number != expected:
        raise SymmetryError(
            f"{species.formula} {ordering} {tilt}: spglib finds space group {number}, the tilt table gives {expected}"
        )
    primitive = sga.find_primitive()
    return number, expected, primitive


def build_bvm_structure(
    species: SiteSpeciesSet,
    ordering: str = "rocksalt",
    tilt: str = "a0a0a0",
    fixed_midpoint: bool = False,
    table: BondValenceTable | None = None,
) -> BuiltStructure:
    """Build the bond-valence starting structure of one composition, ordering and tilt system.

    The octahedron sizes (and, for tilted systems, the tilt amplitudes) minimise the GII. ``fixed_midpoint``
    forces d_B = d_B' (X midway between B and B', the Sutton group's original cubic model).
    """
    species.check_balance()
    _check_ordering(species, ordering)
    expected_space_group(ordering, tilt, species.same_a, species.same_b)  # validates the tilt for the ordering
    table = table or bond_valence_table()
    t = _template(ordering, tilt)
    d0 = _ideal_lengths(species, table)
    model = _GIIModel(t, species, table, d0)
    n_amp = len({g for g in t.groups if g >= 0})
    start_amps = [START_TILT_DEG - 2.0 * n for n in range(n_amp)]  # distinct letters start apart

    def unpack(x: np.ndarray) -> tuple[float, float, np.ndarray]:
        d_b = x[0]
        d_b2 = x[0] if fixed_midpoint else x[1]
        amps = np.radians(np.concatenate([x[1 if fixed_midpoint else 2 :], np.zeros(3)]))
        return d_b, d_b2, amps

    if fixed_midpoint:
        x0 = [0.5 * (d0[0] + d0[1])] + start_amps
        bounds = [(0.7 * min(d0), 1.3 * max(d0))] + [(0.0, MAX_TILT_DEG)] * n_amp
    else:
        x0 = [d0[0], d0[1]] + start_amps
        bounds = [(0.7 * d0[0], 1.3 * d0[0]), (0.7 * d0[1], 1.3 * d0[1])] + [(0.0, MAX_TILT_DEG)] * n_amp
    result = minimize(lambda x: model.gii(*unpack(x)), np.array(x0), method="L-BFGS-B", bounds=bounds,
                      options={"maxiter": 200})  # fmt: skip
    x = result.x.copy()
    amp_slice = slice(1 if fixed_midpoint else 2, None)
    amps_deg = x[amp_slice]
    if n_amp:
        # a tilt system is defined by its non-zero tilts; GII can drive an amplitude to zero (or two distinct
        # letters to equal values), which would be another tilt system: keep the minimum of the system asked for
        amps_deg = np.maximum(amps_deg, 0.5)
        if n_amp > 1:
            order = np.argsort(-amps_deg)
            for hi, lo in itertools.pairwise(order):
                if amps_deg[hi] - amps_deg[lo] < MIN_LETTER_SPLIT_DEG:
                    amps_deg[lo] = max(amps_deg[hi] - MIN_LETTER_SPLIT_DEG, 0.5)
        x[amp_slice] = amps_deg
    d_b, d_b2, amps = unpack(x)
    gii = model.gii(d_b, d_b2, amps)
    pos, cell = _geometry(t, d_b, d_b2, amps)
    big = _structure(t, species, pos, cell)
    number, expected, primitive = _verify(big, species, ordering, tilt)
    tilt_angles = [float(np.degrees(amps[g])) if g >= 0 else 0.0 for g in t.groups]
    return BuiltStructure(
        structure=primitive, species=species, ordering=ordering, tilt=tilt,
        method="bvm-fixed-midpoint" if fixed_midpoint else "bvm", space_group=number, space_group_expected=expected,
        gii=gii, tilt_angles=tilt_angles, bond_lengths={"B-X": float(d_b), "B'-X": float(d_b2)},
        bv_parameters=[p.as_dict() for p in model.params.values()], supercell_40=big,
    )  # fmt: skip


def sutton_cell(built: BuiltStructure) -> Structure:
    """The 10-atom fcc primitive cell (a = b = c, 60 degree angles) of an untilted rock-salt structure."""
    if built.tilt != "a0a0a0" or built.ordering == "layered":
        raise InputError("the 10-atom Sutton cell exists for untilted rock-salt orderings only (tilt a0a0a0)")
    return SpacegroupAnalyzer(built.structure, symprec=SYMPREC).get_primitive_standard_structure()


def build_dls_structure(
    species: SiteSpeciesSet, ordering: str = "rocksalt", tilt: str = "a0a0a0", prototype_tilt_deg: float = 8.0
) -> BuiltStructure:
    """DLS starting structure: a prototype of the ordering and tilt with the composition's ions substituted,
    rescaled isotropically with pymatgen's DLSVolumePredictor (Chu et al. 2018).

    The prototype has equal B-X and B'-X lengths (2.0 A) and tilts of ``prototype_tilt_deg`` (distinct letters
    2 degrees apart), built with the same construction as the bond-valence cells.
    """
    from pymatgen.analysis.structure_prediction.volume_predictor import DLSVolumePredictor

    species.check_balance()
    _check_ordering(species, ordering)
    expected_space_group(ordering, tilt, species.same_a, species.same_b)
    t = _template(ordering, tilt)
    n_amp = len({g for g in t.groups if g >= 0})
    amps = np.radians(np.array([prototype_tilt_deg - 2.0 * n for n in range(n_amp)] + [0.0] * 3))
    pos, cell = _geometry(t, 2.0, 2.0, amps)
    prototype = _structure(t, species, pos, cell)
    scaled = DLSVolumePredictor().get_predicted_structure(prototype)
    number, expected, primitive = _verify(scaled, species, ordering, tilt)
    try:
        from dp_screen.structures.bond_valence import global_instability_index

        gii = global_instability_index(primitive)
    except InputError:
        gii = float("nan")
    scale = (scaled.volume / prototype.volume) ** (1 / 3)
    return BuiltStructure(
        structure=primitive, species=species, ordering=ordering, tilt=tilt, method="dls", space_group=number,
        space_group_expected=expected, gii=gii, tilt_angles=[float(np.degrees(amps[g])) if g >= 0 else 0.0 for g in t.groups],
        bond_lengths={"B-X": 2.0 * scale, "B'-X": 2.0 * scale}, supercell_40=scaled,
    )  # fmt: skip
