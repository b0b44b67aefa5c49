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
    """Check that a structure is still a corner-sharing perovskite (module docstring: checks and thresholds)."""
    roles = _roles(structure)
    b_idx = [i for i, r in enumerate(roles) if r == "B"]
    a_idx = [i for i, r in enumerate(roles) if r == "A"]
    centres, points, images, dists = structure.get_neighbor_list(NEIGHBOUR_RADIUS)
    x_of: dict[int, list[tuple[float, int, tuple]]] = {i: [] for i in b_idx}
    b_near_a: dict[int, list[tuple[float, np.ndarray]]] = {i: [] for i in a_idx}
    bb: dict[int, float] = {}
    cart = structure.cart_coords
    lattice = structure.lattice.matrix
    for c, p, img, d in zip(centres, points, images, dists, strict=True):
        if roles[c] == "B" and roles[p] == "X":
            x_of[c].append((d, p, tuple(int(v) for v in img)))
        elif roles[c] == "A" and roles[p] == "B":
            b_near_a[c].append((d, cart[p] + img @ lattice))
        elif roles[c] == "B" and roles[p] == "B":
            bb[c] = min(d, bb.get(c, np.inf))
    measures: dict = {}
    # 1. octahedra
    worst_ratio, worst_gap = 0.0, np.inf
    members: dict[tuple[int, tuple], list[int]] = {}  # (anion, image relative to the B's cell) -> B sites
    octahedra: dict[int, list[tuple[int, tuple]]] = {}
    for i in b_idx:
        shell = sorted(x_of[i])
        if len(shell) < 6:
            return PerovskiteCheck(False, f"B site {i} ({structure[i].species_string}) has only {len(shell)} anions "
                                          f"within {NEIGHBOUR_RADIUS} A", measures)  # fmt: skip
        ratio = shell[5][0] / shell[0][0]
        gap = shell[6][0] / shell[5][0] if len(shell) > 6 else np.inf
        worst_ratio, worst_gap = max(worst_ratio, ratio), min(worst_gap, gap)
        octahedra[i] = [(p, img) for _, p, img in shell[:6]]
    measures.update(max_bond_ratio=round(float(worst_ratio), 4), min_shell_gap=round(float(worst_gap), 4))
    if worst_ratio > MAX_BOND_RATIO:
        return PerovskiteCheck(False, f"octahedron torn: longest/shortest B-X bond {worst_ratio:.2f} > "
                                      f"{MAX_BOND_RATIO} (MAX_BOND_RATIO)", measures)  # fmt: skip
    if worst_gap < MIN_SHELL_GAP:
        return PerovskiteCheck(False, f"B not six-coordinate: 7th/6th nearest anion distance {worst_gap:.2f} < "
                                      f"{MIN_SHELL_GAP} (MIN_SHELL_GAP)", measures)  # fmt: skip
    # 2. corner sharing: count, per anion (in its home cell), the octahedra (B site, image of B) it belongs to
    for i, octa in octahedra.items():
        for p, img in octa:
            members.setdefault(p, []).append((i, tuple(-v for v in img)))
    n_x = sum(1 for r in roles if r == "X")
    counts = [len(members.get(p, [])) for p in range(len(structure)) if roles[p] == "X"]
    measures["anions_per_octahedra"] = sorted(set(counts)) if counts else []
    if len(members) != n_x or any(c != 2 for c in counts):
        bad = sorted(set(counts) - {2}) or [0]
        return PerovskiteCheck(False, f"not corner-sharing: an anion belongs to {bad[0]} octahedra (2 expected)",
                               measures)  # fmt: skip
    shared: dict[tuple, int] = {}
    min_angle = 180.0
    for p, owners in members.items():
        (i, im1), (k, im2) = owners
        rel = tuple(b - a for a, b in zip(im1, im2, strict=True))
        key = (i, k, rel) if (i, rel) <= (k, tuple(-v for v in rel)) else (k, i, tuple(-v for v in rel))
        shared[key] = shared.get(key, 0) + 1
        v1 = cart[i] + np.array(im1) @ lattice - cart[p]
        v2 = cart[k] + np.array(im2) @ lattice - cart[p]
        cos = np.dot(v1, v2) / (np.linalg.norm(v1) * np.linalg.norm(v2))
        min_angle = min(min_angle, float(np.degrees(np.arccos(np.clip(cos, -1, 1)))))
    measures["min_bxb_angle"] = round(min_angle, 2)
    if max(shared.values()) > 1:
        return PerovskiteCheck(False, f"octahedra share {max(shared.values())} anions (edge or face sharing)", measures)
    if min_angle < MIN_BXB_ANGLE:
        return PerovskiteCheck(False, f"B-X-B' angle {min_angle:.0f} deg < {MIN_BXB_ANGLE:.0f} (MIN_BXB_ANGLE)",
                               measures)  # fmt: skip
    # 3. A in the cavity of its eight nearest B-site cations
    a_b = float(np.mean(list(bb.values()))) if bb else np.nan  # mean nearest B-B' distance
    worst = 0.0
    for i in a_idx:
        near = sorted(b_near_a[i], key=lambda t: t[0])[:8]
        if len(near) < 8:
            return PerovskiteCheck(False, f"A site {i} has fewer than 8 B-site neighbours within {NEIGHBOUR_RADIUS} A",
                                   measures)  # fmt: skip
        centre = np.mean([c for _, c in near], axis=0)
        worst = max(worst, float(np.linalg.norm(cart[i] - centre)) / a_b)
    measures["max_a_offcentre"] = round(worst, 4)
    if worst > MAX_A_OFFCENTRE:
        return PerovskiteCheck(False, f"A cation out of its cavity: {worst:.2f} of the B-B' distance from its centre "
                                      f"> {MAX_A_OFFCENTRE} (MAX_A_OFFCENTRE)", measures)  # fmt: skip
    return PerovskiteCheck(True, None, measures)
