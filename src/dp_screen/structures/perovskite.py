"""Bond-valence (SPuDS-like) and DLS starting structures of AA'BB'X6 double perovskites.

Construction (Glazer 1972; Howard & Stokes, Acta Cryst. B54, 782 (1998); Howard, Kennedy & Woodward, Acta Cryst. B59, 463 (2003)): a 2x2x2 pseudo-cubic supercell, B and B' on the integer sites in
rock-salt order, A on the cube centres (all A, layered along c, or rock-salt), X on the B-B' bonds. Each BX6 and
B'X6 octahedron is rigid and regular, with bond lengths d_B and d_B'. A Glazer tilt system rotates the octahedra by
w = (alpha s_x, beta s_y, gamma s_z) with s = (-1)^(j+k) for an in-phase (+) tilt about x and (-1)^(i+j+k) for an
anti-phase (-) one (likewise for y, z); an X on a bond along e moves perpendicular to it, towards w x e, so that
its distance from B stays d_B, and the B-B' spacing along e becomes d_B cos(theta) + sqrt(d_B'^2 - d_B^2 sin^2
theta), theta = |w x e|.

The free parameters (d_B, d_B' and one amplitude per distinct tilt letter) minimise the global instability index,
as SPuDS does; for the untilted cell this is the lattice constant and anion position optimisation (the fixed
midpoint model, d_B = d_B', is available for comparison). The A cations stay at the cavity centres, or, with
``move_a``, are displaced along the symmetry-allowed modes that minimise the GII too (SPuDS moves A as well).
Every structure is checked with spglib against the tilt tables; the stored cell is the primitive one.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from functools import cache

import numpy as np
from pymatgen.core import Lattice, Species, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from dp_screen.errors import DPScreenError, InputError
from dp_screen.structures.bond_valence import DEFAULT_BV_SET, BondValenceTable, bond_valence_table
from dp_screen.structures.tilts import SPACE_GROUPS, expected_space_group, parse_tilt

SYMPREC = 1e-3
MAX_TILT_DEG = 25.0
START_TILT_DEG = 9.0
MIN_LETTER_SPLIT_DEG = 1.0
MAX_A_SHIFT = 0.6  # Angstrom: bound on each A-displacement mode coefficient
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
            (row["A"], int(row["nA"])),
            (row["A2"], int(row["nA2"])),
            (row["B"], int(row["nB"])),
            (row["B2"], int(row["nB2"])),
            (row["X"], int(row["nX"])),
        )


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
    cell40: tuple[np.ndarray, np.ndarray, list] | None = None  # positions, cell diagonal, species of the 2x2x2 cell
    a_displacement: float = 0.0  # largest A-cation displacement from its cavity centre (Angstrom)

    @property
    def supercell_40(self) -> Structure:
        """The 40-atom 2x2x2 pseudo-cubic construction cell."""
        pos, cell, species = self.cell40
        return Structure(Lattice(np.diag(cell)), species, pos, coords_are_cartesian=True)

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
            "lattice": {
                k: round(v, 4)
                for k, v in zip(("a", "b", "c", "alpha", "beta", "gamma"), (*lat.abc, *lat.angles), strict=True)
            },
            "volume_per_fu": round(self.volume_per_fu, 3),
            "gii": round(self.gii, 4),
            "tilt_angles": [round(t, 3) for t in self.tilt_angles],
            "a_displacement": round(self.a_displacement, 4),
            "n_atoms": len(self.structure),
        }


def _sign(sense: str, axis: int, i: int, j: int, k: int) -> int:
    if sense == "0":
        return 0
    if sense == "-":
        return (-1) ** (i + j + k)
    other = [v for a, v in enumerate((i, j, k)) if a != axis]
    return (-1) ** sum(other)


@dataclass(frozen=True, eq=False)  # hashed by identity: one cached instance per (ordering, tilt)
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
        ordering,
        tilt,
        tuple(roles),
        np.array(b_species + b_prime, dtype=float),
        np.array(sites, dtype=float),
        np.array(owner),
        np.array(axis),
        np.array(sigma, dtype=float),
        signs,
        ts.groups,
    )


def _geometry(
    t: _Template, d_b: np.ndarray, d_b2: np.ndarray, amps_deg: np.ndarray, a_shift: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Cartesian positions (S, 40, 3) and the diagonal of the 2x2x2 cell (S, 3) for S parameter sets.

    ``d_b``, ``d_b2``: (S,) bond lengths; ``amps_deg``: (S, n_amplitudes) tilt amplitudes in degrees;
    ``a_shift``: (S, 8, 3) displacements of the A cations from the cavity centres (Angstrom).
    """
    d_b, d_b2 = np.asarray(d_b, dtype=float), np.asarray(d_b2, dtype=float)
    n_set = d_b.shape[0]
    amps = np.radians(np.asarray(amps_deg, dtype=float).reshape(n_set, -1))
    w_axis = np.zeros((n_set, 3))
    for axis, g in enumerate(t.groups):
        if g >= 0:
            w_axis[:, axis] = amps[:, g]
    sq = w_axis**2
    theta = np.sqrt(np.maximum(sq.sum(axis=1, keepdims=True) - sq, 0.0))  # (S, 3): |w x e| along x, y, z
    sin_t, cos_t = np.sin(theta), np.cos(theta)
    spacing = d_b[:, None] * cos_t + np.sqrt(np.maximum(d_b2[:, None] ** 2 - (d_b[:, None] * sin_t) ** 2, 1e-6))
    a_pos = (t.a_sites + 0.5)[None] * spacing[:, None, :]
    if a_shift is not None:
        a_pos = a_pos + a_shift
    b_pos = t.b_sites[None] * spacing[:, None, :]
    e = np.eye(3)[t.x_axis] * t.x_sigma[:, None]  # (24, 3) bond directions
    w = t.signs[None] * w_axis[:, None, :]  # (S, 4, 3) rotation vector of each B octahedron
    perp = np.cross(w[:, t.x_owner], e[None])  # (S, 24, 3)
    norm = np.linalg.norm(perp, axis=2, keepdims=True)
    perp_unit = perp / np.where(norm > 1e-12, norm, 1.0)
    th = theta[:, t.x_axis][..., None]
    x_pos = b_pos[:, t.x_owner] + d_b[:, None, None] * (np.cos(th) * e[None] + np.sin(th) * perp_unit)
    return np.concatenate([a_pos, b_pos, x_pos], axis=1), 2.0 * spacing


@cache
def _pairs(t: _Template) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bonded cation-anion pairs (cation, anion, image) of the construction, and the (P, 40)
    incidence matrix that turns bond valences into site sums. The same for every composition of a template."""
    pos, cell = _geometry(t, np.array([1.0]), np.array([1.0]), np.zeros((1, 3)))
    pos, cell = pos[0], cell[0]
    roles = t.species_roles
    cations = [i for i, r in enumerate(roles) if r != "X"]
    anions = np.array([i for i, r in enumerate(roles) if r == "X"])
    ci, ai, img = [], [], []
    for c in cations:
        for n in itertools.product((-1, 0, 1), repeat=3):
            d = np.linalg.norm(pos[anions] + np.array(n) * cell - pos[c], axis=1)
            # first coordination shells only (A-X12, B-X6): second-shell bonds (2.24 and 2.45 units away) carry
            # < 0.01 v.u. even at the largest tilts, as in SPuDS
            for a in anions[d < 1.75]:  # the B-B spacing is 2.0 for unit bond lengths
                ci.append(c)
                ai.append(a)
                img.append(n)
    ci, ai = np.array(ci), np.array(ai)
    incidence = np.zeros((len(ci), len(roles)))
    incidence[np.arange(len(ci)), ci] = 1.0
    incidence[np.arange(len(ci)), ai] = 1.0
    return ci, ai, np.array(img, dtype=float), incidence


def _n_amplitudes(t: _Template) -> int:
    """Number of distinct tilt amplitudes (letters) of the tilt system."""
    return len({g for g in t.groups if g >= 0})


def _unpack(t: _Template, x: np.ndarray, fixed: bool, modes: np.ndarray | None):
    """Parameter rows [d_B, (d_B'), tilt amplitudes..., A-displacement mode coefficients...] -> geometry inputs."""
    k0 = 1 if fixed else 2
    n_amp = _n_amplitudes(t)
    d_b = x[:, 0]
    d_b2 = x[:, 0] if fixed else x[:, 1]
    amps = x[:, k0 : k0 + n_amp]
    shift = None
    if modes is not None and len(modes):
        shift = np.einsum("sk,kai->sai", x[:, k0 + n_amp :], modes)
    return d_b, d_b2, amps, shift


def _residuals(
    t: _Template,
    x: np.ndarray,
    r0: np.ndarray,
    b: np.ndarray,
    formal: np.ndarray,
    fixed: bool,
    modes: np.ndarray | None = None,
) -> np.ndarray:
    """Bond-valence-sum residuals V_i - |v_i| (S, 40) for parameter rows x (S, m)."""
    ci, ai, img, incidence = _pairs(t)
    pos, cell = _geometry(t, *_unpack(t, x, fixed, modes))
    vec = pos[:, ai] + img[None] * cell[:, None, :] - pos[:, ci]
    dist = np.sqrt(np.einsum("spk,spk->sp", vec, vec))
    return np.exp((r0 - dist) / b) @ incidence - formal


def _least_squares_batch(t, x0, lo, hi, r0, b, formal, fixed, modes=None, max_iter=80) -> np.ndarray:
    """Bounded Levenberg-Marquardt on many compositions at once (the GII is the rms of the residuals)."""
    x = x0.copy()
    n, m = x.shape
    lam = np.full(n, 1e-3)
    k0 = 1 if fixed else 2
    n_amp = _n_amplitudes(t)
    # finite-difference steps: Angstrom for lengths and A displacements, degrees for tilts
    steps = np.where((np.arange(m) < k0) | (np.arange(m) >= k0 + n_amp), 1e-5, 1e-3)
    f = (_residuals(t, x, r0, b, formal, fixed, modes) ** 2).sum(axis=1)
    active = np.ones(n, dtype=bool)
    eye = np.eye(m)
    for _ in range(max_iter):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        xa = x[idx]
        probes = np.concatenate([xa[:, None, :], xa[:, None, :] + np.diag(steps)[None]], axis=1)  # (k, m+1, m)

        def rep(arr, idx=idx):
            return np.repeat(arr[idx], m + 1, axis=0)

        res = _residuals(t, probes.reshape(-1, m), rep(r0), rep(b), rep(formal), fixed, modes).reshape(
            idx.size, m + 1, -1
        )
        r = res[:, 0]
        jac = (res[:, 1:] - r[:, None]) / steps[None, :, None]  # (k, m, 40)
        grad = np.einsum("kmi,ki->km", jac, r)
        hess = np.einsum("kmi,kni->kmn", jac, jac)
        diag = np.diagonal(hess, axis1=1, axis2=2)
        # the absolute floor keeps the system solvable when a parameter has no effect (e.g. an A-displacement mode
        # that no bond feels at this geometry)
        floor = 1e-9 * (1.0 + diag.max(axis=1))[:, None, None]
        damped = hess + lam[idx, None, None] * eye[None] * (diag[:, :, None] + 1e-9) + floor * eye[None]
        step = -np.linalg.solve(damped, grad[..., None])[..., 0]
        trial = np.clip(xa + step, lo[idx], hi[idx])
        f_trial = (_residuals(t, trial, r0[idx], b[idx], formal[idx], fixed, modes) ** 2).sum(axis=1)
        better = f_trial < f[idx]
        moved = np.abs(trial - xa).max(axis=1)
        x[idx[better]] = trial[better]
        f[idx[better]] = f_trial[better]
        lam[idx] = np.where(better, lam[idx] / 3.0, lam[idx] * 5.0)
        done = (better & (moved < 1e-6)) | (lam[idx] > 1e8)
        active[idx[done]] = False
    return x


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


def _role_species(species: SiteSpeciesSet) -> dict[str, tuple[str, int]]:
    return {"A": species.A, "A2": species.A2, "B": species.B, "B2": species.B2, "X": species.X}


def _structure(t: _Template, species: SiteSpeciesSet, pos: np.ndarray, cell: np.ndarray) -> Structure:
    roles = _role_species(species)
    return Structure(
        Lattice(np.diag(cell)), [Species(*roles[r]) for r in t.species_roles], pos, coords_are_cartesian=True
    )


@dataclass(frozen=True, eq=False)
class _SymmetryReference:
    """spglib's analysis of one (ordering, tilt, species pattern), reused for every composition of that pattern."""

    number: int
    rotations: np.ndarray  # (n_ops, 3, 3) in fractions of the 2x2x2 cell
    translations: np.ndarray  # (n_ops, 3)
    permutations: np.ndarray  # (n_ops, 40): where each op sends each atom
    to_primitive: np.ndarray  # (3, 3): primitive lattice = to_primitive @ diag(cell)
    primitive_atoms: np.ndarray  # indices of the 40-atom cell that make up the primitive cell


def _codes(t: _Template, species: SiteSpeciesSet) -> tuple[int, ...]:
    roles = _role_species(species)
    codes_of: dict[tuple[str, int], int] = {}
    return tuple(codes_of.setdefault(roles[r], len(codes_of) + 1) for r in t.species_roles)


@cache
def _symmetry_reference(t: _Template, codes: tuple[int, ...]) -> _SymmetryReference:
    """Run spglib on a generic member of the family (distinct bond lengths where species differ, distinct tilts)."""
    import spglib

    n_amp = _n_amplitudes(t)
    same_b = codes[8] == codes[12]  # first B and first B' site
    d_b, d_b2 = 2.0, 2.0 if same_b else 2.13
    amps = np.array([[9.0, 6.5, 4.0][:n_amp]])
    pos, cell = _geometry(t, np.array([d_b]), np.array([d_b2]), amps)
    pos, cell = pos[0], cell[0]
    frac = pos / cell
    spg_cell = (np.diag(cell), frac, list(codes))
    data = spglib.get_symmetry_dataset(spg_cell, symprec=SYMPREC)
    rot, trans = np.array(data.rotations, dtype=float), np.array(data.translations)
    moved = np.einsum("oij,nj->oni", rot, frac) + trans[:, None, :]
    diff = moved[:, :, None, :] - frac[None, None, :, :]
    diff -= np.round(diff)
    perm = np.argmin(np.linalg.norm(diff * cell, axis=3), axis=2)
    p_lat, _, _ = spglib.standardize_cell(spg_cell, to_primitive=True, no_idealize=True, symprec=SYMPREC)
    to_prim = np.asarray(p_lat) @ np.diag(1.0 / cell)
    # the 40-atom cell's atoms that are distinct modulo the primitive lattice
    prim_frac = pos @ np.linalg.inv(to_prim @ np.diag(cell))
    keep: list[int] = []
    for i, f in enumerate(prim_frac):
        if not any(np.allclose(((f - prim_frac[j]) + 0.5) % 1.0 - 0.5, 0.0, atol=1e-4) for j in keep):
            keep.append(i)
    return _SymmetryReference(int(data.number), rot, trans, perm, to_prim, np.array(keep))


@cache
def _a_modes(t: _Template, codes: tuple[int, ...]) -> np.ndarray:
    """Displacements of the 8 A cations that keep every symmetry operation of the family: (k, 8, 3), orthonormal.

    The invariant subspace of the representation of the space group on A displacements (the group average of
    the operations, a projector, has eigenvalue 1 there). Untilted cells and tilt systems whose A sites are fixed
    by symmetry have none; a+b-b- (P21/n) has the displacements of its 4e sites.
    """
    ref = _symmetry_reference(t, codes)
    n_a = len(t.a_sites)
    avg = np.zeros((3 * n_a, 3 * n_a))
    for rot, perm in zip(ref.rotations, ref.permutations, strict=True):
        # in the 2x2x2 cell the cartesian axes are the lattice axes, so the operation acts on vectors through rot
        # scaled by the cell lengths; the family's operations keep the diagonal metric, so this is a signed
        # permutation (an orthogonal matrix)
        op = np.zeros((3 * n_a, 3 * n_a))
        for i in range(n_a):
            j = perm[i]
            op[3 * j : 3 * j + 3, 3 * i : 3 * i + 3] = rot
        avg += op
    avg /= len(ref.rotations)
    vals, vecs = np.linalg.eigh((avg + avg.T) / 2)
    basis = vecs[:, vals > 0.5].T
    return basis.reshape(-1, n_a, 3)


def _verify_and_reduce(t, species, pos, cell, ordering, tilt, full_check=False):
    """Space group of a structure, checked against the tilt table, and its primitive cell.

    spglib analyses each (ordering, tilt, species pattern) once (its symmetry costs ~35 ms for a cubic metric);
    every structure is then checked to carry every one of those operations (the bounds on bond lengths and tilt
    amplitudes keep it from gaining more). ``full_check`` also runs spglib on the structure itself.
    Returns (space group number, expected number, primitive Structure, (positions, cell, species) of the 40 atoms).
    """
    codes = _codes(t, species)
    ref = _symmetry_reference(t, codes)
    expected = expected_space_group(ordering, tilt, species.same_a, species.same_b)
    frac = pos / cell
    moved = np.einsum("oij,nj->oni", ref.rotations, frac) + ref.translations[:, None, :]
    diff = moved - frac[ref.permutations]
    diff -= np.round(diff)
    worst = float(np.abs(diff * cell).max()) if len(diff) else 0.0
    number = ref.number
    if full_check or worst > 10 * SYMPREC:
        import spglib

        number = int(spglib.get_symmetry_dataset((np.diag(cell), frac, list(codes)), symprec=SYMPREC).number)
    if expected is not None and number != expected:
        raise SymmetryError(
            f"{species.formula} {ordering} {tilt}: spglib finds space group {number}, the tilt table gives {expected}"
        )
    roles = _role_species(species)
    sp = [Species(*roles[r]) for r in t.species_roles]
    prim_lat = ref.to_primitive @ np.diag(cell)
    prim_frac = pos[ref.primitive_atoms] @ np.linalg.inv(prim_lat)
    site_roles = [t.species_roles[i] for i in ref.primitive_atoms]
    primitive = Structure(
        Lattice(prim_lat), [sp[i] for i in ref.primitive_atoms], prim_frac % 1.0, site_properties={"site": site_roles}
    )  # A, A2, B, B2 or X: kept through relaxation
    return number, expected, primitive, (pos, cell, sp)


def build_bvm_structures(
    species_list: list[SiteSpeciesSet],
    ordering: str = "rocksalt",
    tilt: str = "a0a0a0",
    fixed_midpoint: bool = False,
    table: BondValenceTable | None = None,
    move_a: bool = False,
    bv_set: str = DEFAULT_BV_SET,
) -> list[BuiltStructure | DPScreenError]:
    """Build the bond-valence structures of many compositions with one ordering and tilt system, all at once.

    The optimisation runs vectorised over the whole list (the cost per structure falls with the batch size). A
    composition that cannot be built (no bond-valence parameters, wrong ordering, symmetry mismatch) gets its
    error in its place in the returned list; the others are built.

    ``move_a``: also optimise the A-cation displacements that the space group allows (none for a0a0a0 and
    a0a0c-; one for a-a-a-, two for a0b-b-, three for a+b-b-), with the other parameters. Off by default: it
    lowers the GII (Na3AlF6 P21/n: 0.02 -> 0.00) but does not bring volumes closer to experiment
    (``benchmarks/bench_structures.py``) and costs ~20% of the speed on those tilt systems.

    ``bv_set``: the bond-valence parameter set (``bond_valence.BV_PARAMETER_SETS``); ``table``, if given, wins.
    """
    if move_a and fixed_midpoint:
        raise InputError(
            "move_a and fixed_midpoint do not combine: the fixed-midpoint model is the untilted "
            "comparison cell; choose one"
        )
    table = table or bond_valence_table(bv_set)
    expected_space_group(ordering, tilt, False, False)  # validates ordering and tilt once for everyone
    t = _template(ordering, tilt)
    out: list[BuiltStructure | DPScreenError | None] = [None] * len(species_list)
    inputs = _bv_inputs(t, species_list, table, ordering, out)
    if not inputs.rows:
        return out  # type: ignore[return-value]
    # compositions with the same species pattern share the symmetry, hence the allowed A displacements
    # (without A displacements one batch holds everyone: larger batches are cheaper per structure)
    patterns: dict[tuple[int, ...] | None, list[int]] = {}
    for j, n in enumerate(inputs.rows):
        patterns.setdefault(_codes(t, species_list[n]) if move_a else None, []).append(j)
    for codes, members in patterns.items():
        sel = np.array(members)
        modes = None if codes is None else _a_modes(t, codes)
        x, gii = _optimise(t, inputs, sel, modes, fixed_midpoint, species_list)
        d_b, d_b2, amps_all, shift = _unpack(t, x, fixed_midpoint, modes)
        pos, cell = _geometry(t, d_b, d_b2, amps_all, shift)
        for i, j in enumerate(sel):
            n = inputs.rows[j]
            try:
                number, expected, primitive, big = _verify_and_reduce(
                    t, species_list[n], pos[i], cell[i], ordering, tilt
                )
            except DPScreenError as exc:
                out[n] = exc
                continue
            out[n] = BuiltStructure(
                structure=primitive,
                species=species_list[n],
                ordering=ordering,
                tilt=tilt,
                method="bvm-fixed-midpoint" if fixed_midpoint else "bvm",
                space_group=number,
                space_group_expected=expected,
                gii=float(gii[i]),
                tilt_angles=[float(amps_all[i][g]) if g >= 0 else 0.0 for g in t.groups],
                bond_lengths={"B-X": float(d_b[i]), "B'-X": float(d_b2[i])},
                bv_parameters=inputs.bv_used[j],
                cell40=big,
                a_displacement=0.0 if shift is None else float(np.linalg.norm(shift[i], axis=1).max()),
            )
    return out  # type: ignore[return-value]


@dataclass
class _BVInputs:
    """Per buildable composition (``rows``: its index in the input list): the bond-valence parameters of the
    template's bonds (r0, b), the formal valences of its sites, the ideal B-X and B'-X lengths, the parameters used."""

    rows: list[int]
    r0: np.ndarray
    b: np.ndarray
    formal: np.ndarray
    d0: np.ndarray
    bv_used: list[list[dict]]


def _bv_inputs(t, species_list: list[SiteSpeciesSet], table: BondValenceTable, ordering: str, out: list) -> _BVInputs:
    """The optimisation's inputs of every composition that can be built; the others get their error in ``out``."""
    ci = _pairs(t)[0]
    rows, r0s, bs, formals, d0s, bv_used = [], [], [], [], [], []
    for n, species in enumerate(species_list):
        try:
            species.check_balance()
            _check_ordering(species, ordering)
            roles = _role_species(species)
            params = {}
            for role in ("A", "A2", "B", "B2"):
                key = (*roles[role], *species.X)
                if key not in params:
                    params[key] = table.lookup(*key)
            keys = [(*roles[t.species_roles[c]], *species.X) for c in ci]
            r0s.append([params[k].r0 for k in keys])
            bs.append([params[k].b for k in keys])
            formals.append([abs(roles[r][1]) for r in t.species_roles])
            d0s.append(_ideal_lengths(species, table))
            bv_used.append([p.as_dict() for p in params.values()])
            rows.append(n)
        except DPScreenError as exc:
            out[n] = exc
    arrays = (np.array(v, dtype=float) for v in (r0s, bs, formals, d0s))
    return _BVInputs(rows, *arrays, bv_used) if rows else _BVInputs([], *(np.empty(0),) * 4, [])


def _optimise(t, inputs: _BVInputs, sel: np.ndarray, modes, fixed_midpoint: bool, species_list) -> tuple:
    """The GII minimisation of the compositions ``sel`` (one Levenberg-Marquardt batch): the parameters x (bond
    lengths, tilt amplitudes, A shifts) and each composition's GII."""
    r0, b, formal, d0 = inputs.r0[sel], inputs.b[sel], inputs.formal[sel], inputs.d0[sel]
    n_amp = _n_amplitudes(t)
    n_modes = 0 if modes is None else len(modes)
    n_rows = len(sel)
    start = np.tile([START_TILT_DEG - 2.0 * k for k in range(n_amp)], (n_rows, 1))
    amp_lo, amp_hi = np.full((n_rows, n_amp), 0.5), np.full((n_rows, n_amp), MAX_TILT_DEG)
    shift0, shift_lim = np.zeros((n_rows, n_modes)), np.full((n_rows, n_modes), MAX_A_SHIFT)
    # bond-length columns: d_B and d_B', or their common value for the fixed-midpoint model
    d_start, d_lo, d_hi = (d0.mean(axis=1), d0.min(axis=1), d0.max(axis=1)) if fixed_midpoint else (d0, d0, d0)
    x0 = np.column_stack([d_start, start, shift0])
    lo = np.column_stack([0.7 * d_lo, amp_lo, -shift_lim])
    hi = np.column_stack([1.3 * d_hi, amp_hi, shift_lim])
    x = _least_squares_batch(t, x0, lo, hi, r0, b, formal, fixed_midpoint, modes)
    k0 = 1 if fixed_midpoint else 2
    if n_amp > 1:
        # GII may drive two distinct letters (b != c) to equal amplitudes, which is another tilt system:
        # keep them at least MIN_LETTER_SPLIT_DEG apart
        for row in x:
            amps = row[k0 : k0 + n_amp]
            order = np.argsort(-amps)
            for hi_i, lo_i in itertools.pairwise(order):
                if amps[hi_i] - amps[lo_i] < MIN_LETTER_SPLIT_DEG:
                    amps[lo_i] = max(amps[hi_i] - MIN_LETTER_SPLIT_DEG, 0.5)
    if not fixed_midpoint:
        # B = B': the optimum is symmetric; remove the finite-difference asymmetry so the symmetry is exact
        same_b = np.array([species_list[inputs.rows[j]].same_b for j in sel])
        x[same_b, 0] = x[same_b, 1] = x[same_b, :2].mean(axis=1)
    gii = np.sqrt((_residuals(t, x, r0, b, formal, fixed_midpoint, modes) ** 2).mean(axis=1))
    return x, gii


def build_bvm_structure(
    species: SiteSpeciesSet,
    ordering: str = "rocksalt",
    tilt: str = "a0a0a0",
    fixed_midpoint: bool = False,
    table: BondValenceTable | None = None,
    move_a: bool = False,
    bv_set: str = DEFAULT_BV_SET,
) -> BuiltStructure:
    """Build the bond-valence starting structure of one composition, ordering and tilt system.

    The octahedron sizes (and, for tilted systems, the tilt amplitudes) minimise the GII. ``fixed_midpoint``
    forces d_B = d_B' (X midway between B and B', the Sutton group's original cubic model). Raises the
    composition's error (InputError, SymmetryError) if it cannot be built.
    """
    (result,) = build_bvm_structures([species], ordering, tilt, fixed_midpoint, table, move_a, bv_set)
    if isinstance(result, DPScreenError):
        raise result
    return result


def sutton_cell(built: BuiltStructure) -> Structure:
    """The 10-atom fcc primitive cell (a = b = c, 60 degree angles) of an untilted rock-salt structure."""
    if built.tilt != "a0a0a0" or built.ordering == "layered":
        raise InputError("the 10-atom Sutton cell exists for untilted rock-salt orderings only (tilt a0a0a0)")
    return SpacegroupAnalyzer(built.structure, symprec=SYMPREC).get_primitive_standard_structure()


def build_dls_structure(
    species: SiteSpeciesSet, ordering: str = "rocksalt", tilt: str = "a0a0a0", prototype_tilt_deg: float = 8.0
) -> BuiltStructure:
    """DLS starting structure: a double-perovskite prototype of the ordering and tilt with the composition's ions
    substituted, rescaled isotropically with pymatgen's DLSVolumePredictor (Chu et al. 2018).

    The prototype's B-X and B'-X lengths are sums of Shannon radii (so B and B' keep their size ratio) and its tilts
    are ``prototype_tilt_deg`` (distinct letters 2 degrees apart); DLS then sets the overall scale.
    """
    from pymatgen.analysis.structure_prediction.volume_predictor import DLSVolumePredictor

    from dp_screen.chemistry.site_tables import shannon_radius
    from dp_screen.structures.bond_valence import global_instability_index

    species.check_balance()
    _check_ordering(species, ordering)
    expected_space_group(ordering, tilt, species.same_a, species.same_b)
    t = _template(ordering, tilt)
    n_amp = _n_amplitudes(t)
    r_x = shannon_radius(*species.X, 6)[0]
    d_b = shannon_radius(*species.B, 6)[0] + r_x
    d_b2 = shannon_radius(*species.B2, 6)[0] + r_x
    amps = np.array([[prototype_tilt_deg - 2.0 * n for n in range(n_amp)]])
    pos, cell = _geometry(t, np.array([d_b]), np.array([d_b2]), amps)
    prototype = _structure(t, species, pos[0], cell[0])
    scaled = DLSVolumePredictor().get_predicted_structure(prototype)
    scale = (scaled.volume / prototype.volume) ** (1 / 3)
    number, expected, primitive, big = _verify_and_reduce(t, species, pos[0] * scale, cell[0] * scale, ordering, tilt)
    try:
        gii = global_instability_index(primitive)
    except InputError:  # no bond-valence parameters: DLS does not need them
        gii = float("nan")
    return BuiltStructure(
        structure=primitive,
        species=species,
        ordering=ordering,
        tilt=tilt,
        method="dls",
        space_group=number,
        space_group_expected=expected,
        gii=gii,
        tilt_angles=[float(amps[0, g]) if g >= 0 else 0.0 for g in t.groups],
        bond_lengths={"B-X": d_b * scale, "B'-X": d_b2 * scale},
        cell40=big,
    )


def pattern_space_group(ordering: str, tilt: str, same_a: bool, same_b: bool) -> int:
    """Space group that a tilt system gives for an ordering and species pattern (A = A', B = B'), from spglib on a
    generic member of the construction (see ``_symmetry_reference``)."""
    t = _template(ordering, tilt)
    code = {"A": 1, "A2": 1 if same_a else 2, "B": 3, "B2": 3 if same_b else 4, "X": 5}
    return _symmetry_reference(t, tuple(code[r] for r in t.species_roles)).number
