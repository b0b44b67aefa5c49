"""Site roles of a double perovskite from elsewhere: which sites are A, A', B, B', X, and the cation ordering.

dp_screen's builders label every site (site property ``site``: A, A2, B, B2, X) and decorate it with its oxidation
state; identification, the perovskite gate and ranking read those labels. A structure read from a CIF, the Materials
Project or ASE has neither. :func:`infer_site_roles` recovers them from species and coordination:

1. **Oxidation states** (:func:`with_oxidation_states`): kept where present, else inferred (a known assignment,
   bond valence, pymatgen's composition guesses).
2. **X**: the anions; an AA'BB'X6 cell has 6 of every 10 sites on them.
3. **B and B'**: of the cations, the third as many as there are anions with the shortest mean distance to their
   six nearest anions (the octahedral ones; A cations sit in the larger 12-fold cavities). Each anion bridges
   its two nearest B-site cations; the bridges split the B sites into two interpenetrating sublattices (rock-salt
   order, the only B order dp_screen builds). Two species that fill one sublattice each are B and B' (B the one
   first in (oxidation state, element) order, as in composition ids); one species on all B sites is B = B'.
4. **A and A'** and the ordering: one A species is A = A' (ordering ``rocksalt``); with two, each A cation's six
   nearest A neighbours tell the order: all six of the other species is rock-salt A order (``rocksalt-A``), two of
   six is layered order (``layered``, layers normal to the axis of those two).

What does not fit (the wrong number of anions, B sites that are not six-coordinate or not rock-salt ordered, A
species mixed in another pattern, more than two species on a site type) is one :class:`~dp_screen.errors.InputError`
naming the structure and what failed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from dp_screen.errors import InputError

if TYPE_CHECKING:
    from pymatgen.core import Structure

ROLES = ("A", "A2", "B", "B2", "X")


def has_oxidation_states(structure: Structure) -> bool:
    """Whether every site carries an oxidation state."""
    return all(getattr(sp, "oxi_state", None) is not None for sp in structure.species)


def with_oxidation_states(
    structure: Structure, assignment: dict[str, float] | None = None, name: str | None = None
) -> Structure:
    """``structure`` itself when every site has an oxidation state, else a copy with inferred ones.

    Inferred, first that works: ``assignment`` (element -> oxidation state, e.g. the composition document's);
    pymatgen's bond-valence analysis (``BVAnalyzer``, per site); the most probable charge-balanced guess for the
    composition (``Composition.oxi_state_guesses``). None works: InputError naming the structure (``name``, else
    its formula).
    """
    if has_oxidation_states(structure):
        return structure
    plain = structure.copy()
    plain.remove_oxidation_states()
    label = name or plain.composition.reduced_formula
    if assignment:
        missing = sorted({el.symbol for el in plain.composition.elements} - set(assignment))
        if missing:
            raise InputError(
                f"structure {label}: the oxidation-state assignment {assignment} has no state for {', '.join(missing)}"
            )
        plain.add_oxidation_state_by_element(dict(assignment))
        return plain
    from pymatgen.analysis.bond_valence import BVAnalyzer

    try:
        plain.add_oxidation_state_by_site(BVAnalyzer().get_valences(plain))
        return plain
    except (ValueError, KeyError):  # BVAnalyzer's "Valences cannot be assigned!", or an element it has no data for
        plain.remove_oxidation_states()
    guesses = plain.composition.oxi_state_guesses(max_sites=-1)
    if guesses:
        plain.add_oxidation_state_by_element(guesses[0])
        return plain
    raise InputError(
        f"structure {label} has no oxidation states and none could be inferred (no bond-valence or "
        f"charge-balanced assignment of {plain.composition.reduced_formula}); decorate it first, e.g. "
        f"structure.add_oxidation_state_by_element({{'Sr': 2, 'Fe': 3, 'Mo': 5, 'O': -2}})"
    )


def has_site_roles(structure: Structure) -> bool:
    """Whether every site has a role (site property ``site`` in :data:`ROLES`)."""
    roles = structure.site_properties.get("site")
    return bool(roles) and all(r in ROLES for r in roles)


def _key(species) -> tuple[float, str]:
    return (float(species.oxi_state), species.symbol)


def _two_colouring(n: int, edges: list[tuple[int, int]]) -> list[int] | None:
    """Colour ``n`` nodes 0/1 so that every edge joins two colours; None when impossible."""
    colour = [-1] * n
    adjacency: list[list[int]] = [[] for _ in range(n)]
    for i, j in edges:
        adjacency[i].append(j)
        adjacency[j].append(i)
    for start in range(n):
        if colour[start] >= 0:
            continue
        colour[start], todo = 0, [start]
        while todo:
            i = todo.pop()
            for j in adjacency[i]:
                if colour[j] < 0:
                    colour[j] = 1 - colour[i]
                    todo.append(j)
                elif colour[j] == colour[i]:
                    return None
    return colour


def _pair_roles(
    sites: list[int], species: list, colour: list[int] | None, first: str, second: str, fail
) -> dict[int, str]:
    """Roles of one site type (B or A) from its species and, for B, its sublattice colouring."""
    kinds = sorted({_key(species[i]) for i in sites})
    if len(kinds) > 2:
        fail(
            f"{len(kinds)} species on the {first} sites ({', '.join(f'{el}{q:+g}' for q, el in kinds)}); an "
            f"AA'BB'X6 double perovskite has at most two"
        )
    if len(kinds) == 1:
        if colour is None:
            return {i: first for i in sites}
        return {i: first if c == 0 else second for i, c in zip(sites, colour, strict=True)}
    if colour is None:
        fail(f"two {first}-site species but no sublattices to put them on")
    by_colour = [{_key(species[i]) for i, c in zip(sites, colour, strict=True) if c == k} for k in (0, 1)]
    if any(len(b) != 1 for b in by_colour) or by_colour[0] == by_colour[1]:
        fail(f"the {first}-site species are not ordered on two rock-salt sublattices")
    first_colour = 0 if min(by_colour[0]) < min(by_colour[1]) else 1
    return {i: first if c == first_colour else second for i, c in zip(sites, colour, strict=True)}


def infer_site_roles(structure: Structure, name: str | None = None) -> tuple[Structure, str]:
    """(a copy of ``structure`` with oxidation states and site property ``site``, its ordering) (module docstring).

    ``name`` names the structure in errors (default: its formula)."""
    label = name or structure.composition.reduced_formula

    def fail(why: str):
        raise InputError(f"structure {label}: cannot infer the A/A'/B/B'/X sites of a double perovskite: {why}")

    s = with_oxidation_states(structure, name=label).copy()
    species = s.species
    charge = np.array([float(sp.oxi_state) for sp in species])
    anions = np.flatnonzero(charge < 0)
    cations = np.flatnonzero(charge > 0)
    n = len(s)
    if len(anions) * 10 != n * 6 or len(cations) * 10 != n * 4:
        fail(f"{len(anions)} anions and {len(cations)} cations of {n} sites (AA'BB'X6: 6 and 4 of every 10)")
    n_b = len(anions) // 3
    dists = s.distance_matrix
    mean6 = np.sort(dists[np.ix_(cations, anions)], axis=1)[:, :6].mean(axis=1)
    order = np.argsort(mean6, kind="stable")
    b_sites, a_sites = sorted(cations[order[:n_b]].tolist()), sorted(cations[order[n_b:]].tolist())
    # each anion bridges its two nearest B cations: the bridges colour the B sites into rock-salt sublattices
    pos = {b: k for k, b in enumerate(b_sites)}
    centres, points, _, d = s.get_neighbor_list(4.0, sites=[s[i] for i in anions])
    edges = []
    for k, x in enumerate(anions):
        mine = [(dd, p) for c, p, dd in zip(centres, points, d, strict=True) if c == k and p in pos]
        if len(mine) < 2:
            fail(f"anion site {x} ({species[x]}) bridges fewer than two B-site cations")
        (_, p1), (_, p2) = sorted(mine)[:2]
        if p1 != p2:
            edges.append((pos[p1], pos[p2]))
    colour = _two_colouring(len(b_sites), edges) if len(b_sites) > 1 else None
    roles = {i: "X" for i in anions.tolist()}
    roles |= _pair_roles(b_sites, species, colour, "B", "B2", fail)
    a_kinds = sorted({_key(species[i]) for i in a_sites})
    if len(a_kinds) > 2:
        fail(f"{len(a_kinds)} species on the A sites; an AA'BB'X6 double perovskite has at most two")
    if len(a_kinds) == 1:
        roles |= {i: "A" for i in a_sites}
        ordering = "rocksalt"
    else:
        ordering = _a_ordering(s, a_sites, species, fail)
        roles |= {i: "A" if _key(species[i]) == a_kinds[0] else "A2" for i in a_sites}
    s.add_site_property("site", [roles[i] for i in range(n)])
    return s, ordering


def _a_ordering(s: Structure, a_sites: list[int], species, fail) -> str:
    """``rocksalt-A`` or ``layered`` from how many of each A cation's six nearest A neighbours are the other one."""
    a_set = set(a_sites)
    centres, points, _, d = s.get_neighbor_list(9.0, sites=[s[i] for i in a_sites])
    unlike = set()
    for k, i in enumerate(a_sites):
        near = sorted((dd, p) for c, p, dd in zip(centres, points, d, strict=True) if c == k and p in a_set)[:6]
        if len(near) < 6:
            fail(f"A site {i} has fewer than six A-site neighbours within 9 A")
        unlike.add(sum(_key(species[p]) != _key(species[i]) for _, p in near))
    if unlike == {6}:
        return "rocksalt-A"
    if unlike == {2}:
        return "layered"
    fail(f"the two A-site species are neither rock-salt nor layer ordered (unlike neighbours: {sorted(unlike)} of 6)")
    raise AssertionError  # fail() raises


def ordering_of(structure: Structure, name: str | None = None) -> str:
    """The cation ordering of a structure with site roles: ``rocksalt`` when one species fills the A sites, else
    ``rocksalt-A`` or ``layered`` from the A-site pattern."""
    label = name or structure.composition.reduced_formula
    decorated = with_oxidation_states(structure, name=label)
    a_sites = [i for i, r in enumerate(structure.site_properties["site"]) if r in ("A", "A2")]
    if len({_key(decorated.species[i]) for i in a_sites}) < 2:
        return "rocksalt"

    def fail(why: str):
        raise InputError(f"structure {label}: cannot tell its A-site ordering: {why}")

    return _a_ordering(decorated, a_sites, decorated.species, fail)


def ensure_site_roles(structure: Structure, name: str | None = None) -> tuple[Structure, str]:
    """(``structure`` with site roles, its ordering): itself with the ordering its roles imply when it has roles,
    else :func:`infer_site_roles`."""
    if has_site_roles(structure):
        return structure, ordering_of(structure, name)
    return infer_site_roles(structure, name)
