"""Is a (relaxed) structure still a perovskite? The gate that keeps broken relaxations out of phase rankings.

A relaxation can end somewhere that is no longer the corner-sharing octahedral network the ranking is about (an
octahedron torn open, octahedra sharing edges, an A cation squeezed out of its cavity); its energy then says
nothing about the phases of the composition. Three checks, each with a named threshold:

1. **B and B' six-coordinate.** The six nearest anions of each B-site cation form its octahedron: the longest of
   the six bonds is at most ``MAX_BOND_RATIO`` times the shortest (Jahn-Teller Cu2+ octahedra reach ~1.2, lone-pair
   and d0 off-centring ~1.25), and the seventh-nearest anion is at least ``MIN_SHELL_GAP`` times farther than the
   sixth (in a perovskite it is ~2.2 times farther; a seventh anion at bonding distance means another polyhedron).
2. **Corner-sharing octahedra.** Every anion belongs to exactly two octahedra, two octahedra share at most one
   anion (no edge or face sharing), and every B-X-B' angle is at least ``MIN_BXB_ANGLE`` (Glazer tilts of up to
   ~25 degrees, the largest observed, give ~130 degrees; edge sharing gives ~100).
3. **A in the cavity.** Each A-site cation sits within ``MAX_A_OFFCENTRE`` (a fraction of the mean B-B' distance,
   i.e. of the pseudo-cubic lattice parameter) of the centre of its eight nearest B-site cations (tilted
   perovskites displace A by up to ~0.1 of it).

Site roles come from the site property ``site`` (A, A2, B, B2, X; set by the builder and kept through
relaxation); without it they are inferred from species and coordination (:mod:`dp_screen.structures.roles`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pymatgen.core import Structure

MAX_BOND_RATIO = 1.4
MIN_SHELL_GAP = 1.15
MIN_BXB_ANGLE = 120.0  # degrees
MAX_A_OFFCENTRE = 0.25  # fraction of the mean B-B' distance
NEIGHBOUR_RADIUS = 8.0  # Angstrom: covers the 8 B neighbours of A in the largest (iodide) cells


@dataclass
class PerovskiteCheck:
    """Outcome of :func:`check_perovskite`: ``ok``, the first failed check's ``reason``, and the measures."""

    ok: bool
    reason: str | None = None
    measures: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        """Plain dict for documents."""
        return {"ok": self.ok, "reason": self.reason, **self.measures}


def _roles(structure: Structure) -> list[str]:
    """A, B or X per site: the builder's site roles, else inferred (:mod:`dp_screen.structures.roles`, which
    raises one clear error for a structure that is not an AA'BB'X6 double perovskite)."""
    from dp_screen.structures.roles import has_site_roles, infer_site_roles

    if not has_site_roles(structure):
        structure = infer_site_roles(structure)[0]
    roles = structure.site_properties["site"]
    return ["B" if r in ("B", "B2") else "A" if r in ("A", "A2") else "X" for r in roles]


def check_perovskite(structure: Structure) -> PerovskiteCheck:
    """Check that a structure is still a corner-sharing perovskite (module docstring: checks and thresholds).

    One neighbour search; the checks run on its arrays (numpy), a few small loops over the B sites only. The
    first check that fails gives the reason; the measures of the checks that ran are returned either way."""
    gate = _Gate.of(structure)
    measures: dict = {}
    for check in (_octahedra, _corner_sharing, _a_in_cavity):
        reason = check(gate, measures)
        if reason:
            return PerovskiteCheck(False, reason, measures)
    return PerovskiteCheck(True, None, measures)


@dataclass
class _Gate:
    """The structure's roles and its one neighbour search (centres, points, images, distances within
    ``NEIGHBOUR_RADIUS``); the octahedra (each B site's anions by distance) once the first check has found them."""

    structure: Structure
    is_b: np.ndarray
    is_a: np.ndarray
    is_x: np.ndarray
    centres: np.ndarray
    points: np.ndarray
    images: np.ndarray
    dists: np.ndarray
    octahedra: tuple = ()

    @classmethod
    def of(cls, structure: Structure) -> _Gate:
        roles = np.array(_roles(structure))
        return cls(structure, roles == "B", roles == "A", roles == "X", *structure.get_neighbor_list(NEIGHBOUR_RADIUS))

    @property
    def b_idx(self) -> np.ndarray:
        return np.flatnonzero(self.is_b)


def _octahedra(g: _Gate, measures: dict) -> str | None:
    """1. Each B site six-coordinate: its six nearest anions, the bond ratio and the gap to the seventh."""
    b_idx = g.b_idx
    bx = g.is_b[g.centres] & g.is_x[g.points]
    bx_c, bx_p, bx_img, bx_d = g.centres[bx], g.points[bx], g.images[bx].astype(int), g.dists[bx]
    order = np.lexsort((bx_d, bx_c))
    bx_c, bx_p, bx_img, bx_d = bx_c[order], bx_p[order], bx_img[order], bx_d[order]
    starts = np.searchsorted(bx_c, b_idx)
    ends = np.searchsorted(bx_c, b_idx, side="right")
    short = np.flatnonzero(ends - starts < 6)
    if short.size:
        i = int(b_idx[short[0]])
        n = int(ends[short[0]] - starts[short[0]])
        return f"B site {i} ({g.structure[i].species_string}) has only {n} anions within {NEIGHBOUR_RADIUS} A"
    six = starts[:, None] + np.arange(6)  # (n_B, 6) rows of each octahedron's bonds
    ratio = bx_d[six[:, 5]] / bx_d[six[:, 0]]
    has7 = ends - starts > 6
    gap = np.where(has7, bx_d[np.minimum(starts + 6, len(bx_d) - 1)] / bx_d[six[:, 5]], np.inf)
    worst_ratio, worst_gap = float(ratio.max()), float(gap.min())
    measures.update(max_bond_ratio=round(worst_ratio, 4), min_shell_gap=round(worst_gap, 4))
    g.octahedra = (bx_p[six].ravel(), -bx_img[six].reshape(-1, 3))  # each octahedron's anions and their images
    if worst_ratio > MAX_BOND_RATIO:
        return f"octahedron torn: longest/shortest B-X bond {worst_ratio:.2f} > {MAX_BOND_RATIO} (MAX_BOND_RATIO)"
    if worst_gap < MIN_SHELL_GAP:
        return f"B not six-coordinate: 7th/6th nearest anion distance {worst_gap:.2f} < {MIN_SHELL_GAP} (MIN_SHELL_GAP)"
    return None


def _corner_sharing(g: _Gate, measures: dict) -> str | None:
    """2. Each anion (in its home cell) in two octahedra (B site, image of B seen from X), no two octahedra
    sharing more than one anion, and every B-X-B' angle open enough."""
    cart, lattice = g.structure.cart_coords, g.structure.lattice.matrix
    anion, owner_img = g.octahedra
    owner = np.repeat(g.b_idx, 6)
    counts = np.bincount(anion, minlength=len(g.structure))[g.is_x]
    measures["anions_per_octahedra"] = sorted({int(c) for c in counts})
    if (counts != 2).any():
        bad = sorted(set(counts.tolist()) - {2}) or [0]
        return f"not corner-sharing: an anion belongs to {bad[0]} octahedra (2 expected)"
    by_anion = np.argsort(anion, kind="stable").reshape(-1, 2)  # the two octahedra of each anion
    i, k = owner[by_anion[:, 0]], owner[by_anion[:, 1]]
    im1, im2 = owner_img[by_anion[:, 0]], owner_img[by_anion[:, 1]]
    x = anion[by_anion[:, 0]]
    v1 = cart[i] + im1 @ lattice - cart[x]
    v2 = cart[k] + im2 @ lattice - cart[x]
    cos = np.einsum("ij,ij->i", v1, v2) / (np.linalg.norm(v1, axis=1) * np.linalg.norm(v2, axis=1))
    min_angle = float(np.degrees(np.arccos(np.clip(cos, -1, 1))).min())
    # two octahedra sharing more than one anion: the same (B, B', relative image) pair, counted in one orientation
    _, n_shared = np.unique(_canonical_pairs(i, k, im2 - im1), axis=0, return_counts=True)
    measures["min_bxb_angle"] = round(min_angle, 2)
    if n_shared.max() > 1:
        return f"octahedra share {int(n_shared.max())} anions (edge or face sharing)"
    if min_angle < MIN_BXB_ANGLE:
        return f"B-X-B' angle {min_angle:.0f} deg < {MIN_BXB_ANGLE:.0f} (MIN_BXB_ANGLE)"
    return None


def _a_in_cavity(g: _Gate, measures: dict) -> str | None:
    """3. Each A site near the centre of its eight nearest B-site cations (relative to the mean B-B' distance)."""
    cart, lattice, b_idx = g.structure.cart_coords, g.structure.lattice.matrix, g.b_idx
    bb = g.is_b[g.centres] & g.is_b[g.points]
    nearest_bb = np.full(len(g.structure), np.inf)
    np.minimum.at(nearest_bb, g.centres[bb], g.dists[bb])
    a_b = float(np.mean(nearest_bb[b_idx][np.isfinite(nearest_bb[b_idx])])) if bb.any() else np.nan
    ab = g.is_a[g.centres] & g.is_b[g.points]
    ab_c, ab_d = g.centres[ab], g.dists[ab]
    ab_pos = cart[g.points[ab]] + g.images[ab] @ lattice
    order = np.lexsort((ab_d, ab_c))
    ab_c, ab_pos = ab_c[order], ab_pos[order]
    worst = 0.0
    for a in np.flatnonzero(g.is_a):
        lo, hi = np.searchsorted(ab_c, a), np.searchsorted(ab_c, a, side="right")
        if hi - lo < 8:
            return f"A site {a} has fewer than 8 B-site neighbours within {NEIGHBOUR_RADIUS} A"
        worst = max(worst, float(np.linalg.norm(cart[a] - ab_pos[lo : lo + 8].mean(axis=0))) / a_b)
    measures["max_a_offcentre"] = round(worst, 4)
    if worst > MAX_A_OFFCENTRE:
        return (
            f"A cation out of its cavity: {worst:.2f} of the B-B' distance from its centre > {MAX_A_OFFCENTRE} "
            "(MAX_A_OFFCENTRE)"
        )
    return None


def _canonical_pairs(i: np.ndarray, k: np.ndarray, rel: np.ndarray) -> np.ndarray:
    """Rows (B, B', relative image) with each unordered pair written one way: (i, k, r) and (k, i, -r) alike (the
    lower site first; for a site with its own image, the image whose first non-zero component is positive)."""
    first = rel[np.arange(len(rel)), np.argmax(rel != 0, axis=1)]
    swap = (i > k) | ((i == k) & (first < 0))
    return np.column_stack([np.where(swap, k, i), np.where(swap, i, k), np.where(swap[:, None], -rel, rel)])
