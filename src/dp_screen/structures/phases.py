"""Which phase a (relaxed) double perovskite is in, and which variant of a composition is lowest in energy.

- Space group at several tolerances (spglib).
- B-X-B' angles (180 degrees in an untilted cell; 180 - 2 theta for a tilt theta about an axis perpendicular to the
  bond) and the tilt amplitude they imply.
- The Glazer tilt system(s) consistent with the space group, for the structure's cation ordering *and its own
  species pattern* (A = A' and / or B = B' change the space group a tilt system gives: Sr2TiTiO6 untilted is
  Pm-3m, not Fm-3m), whether that includes the tilt system it started in, and the phase it ended in.
- For a composition and ordering: the lowest-energy phase and dE = E(untilted) - E(lowest) per atom (variants of
  one composition compared per atom, i.e. as cells of equal size), each variant ranked under the phase it ended in.
- The **call** with its error bar (:func:`phase_call`): with sigma the uncertainty of a phase energy difference of
  the model that ranked the variants (:mod:`dp_screen.mlip.uncertainty` says where it comes from) and
  dE_tilt = E(untilted) - E(lowest distinct tilted phase) per atom, the ground state is ``tilted`` when
  dE_tilt > 2 sigma; ``untilted`` when dE_tilt < -2 sigma, or when every tilted start relaxed back to the untilted
  cell (no distinct tilted phase: a structural answer, not an energy one); ``undetermined`` otherwise (also when
  no untilted variant was ranked). The phases within 2 sigma of the lowest are listed with it, so a call of *which*
  tilt system carries its own uncertainty. A model with no measured error is called with sigma = 0 and a noise
  band of ``TILT_TOL_MEV``, and its calls are marked unqualified (``phase_error_mev`` None).

The tilt table of each (ordering, species pattern) is computed from the builder's own construction
(:mod:`dp_screen.structures.perovskite`) with spglib, so every pattern has one; for the patterns the literature
tabulates (Howard & Stokes, Acta Cryst. B54, 782 (1998) for ABX3; Howard, Kennedy & Woodward, Acta Cryst. B59,
463 (2003) for rock-salt B order) the computed tables equal the published ones (tests/test_phases.py).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

import numpy as np
from pymatgen.core import Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from dp_screen.errors import InputError
from dp_screen.structures.tilts import SPACE_GROUPS

if TYPE_CHECKING:
    from dp_screen.mlip.uncertainty import PhaseError

SYMPRECS = (1e-3, 1e-2, 1e-1)
#: noise band (meV/atom) of a call made without a measured model error: a tilted start that relaxed back to (almost)
#: the untilted cell differs from it by this much at most
TILT_TOL_MEV = 1.0
IDENTIFY_SYMPREC = 1e-2
UNTILTED = "a0a0a0"
#: a call is determined when |dE_tilt| exceeds this many sigma
CALL_SIGMAS = 2.0
#: the fields of a call that a summary carries up from the ground state's ordering
CALL_KEYS = ("call", "dE_tilt_mev_atom", "phases_within_error", "phase_error_mev", "phase_error_source")


#: how exactly (Angstrom; Angstrom^2 for the metric) the loosest search's operations must hold for its group to stand
#: for every tolerance: far below the tightest tolerance, as a symmetry-held relaxation keeps them (to ~1e-8 A)
EXACT_OPERATIONS = 1e-4


def space_groups(structure: Structure, symprecs=SYMPRECS, maximal: int | None = None) -> dict[str, int]:
    """Space-group number at each tolerance (Angstrom): spglib on the cell's arrays (species told apart as pymatgen's
    SpacegroupAnalyzer does, oxidation states included), without building an analyzer per tolerance.

    A looser tolerance finds the same operations and maybe more. So the loosest search comes first, and when every
    operation it found holds exactly (:data:`EXACT_OPERATIONS`: atoms onto atoms of their species, the metric kept),
    the tighter tolerances find those operations too and no more: its group is every tolerance's (one spglib
    search per structure in the common case, a symmetry-held relaxation). Otherwise the tightest is searched, and
    the one between only when those two differ (tests/test_scale_machinery.py checks the answers against a search
    at every tolerance).

    ``maximal``: the highest group a structure of this ordering and species pattern can have (its untilted
    aristotype, e.g. Fm-3m for rock-salt B order). moyopy checks it first: when moyopy finds it at the loosest
    tolerance and its operations hold exactly, no tolerance can find more or less, and spglib is not asked (its
    search of an untilted start takes 10 times longer than of a tilted one on average: benchmarks/bench_symmetry.py).
    """
    import spglib

    codes: dict[str, int] = {}
    numbers = [codes.setdefault(site.species_string, len(codes) + 1) for site in structure]
    cell = (structure.lattice.matrix, structure.frac_coords, numbers)
    if maximal is not None and _is_exactly(maximal, cell, max(symprecs)):
        return {f"{tol:g}": maximal for tol in symprecs}

    def search(tol: float):
        try:
            return spglib.get_symmetry_dataset(cell, symprec=tol)
        except Exception:  # noqa: BLE001 - spglib gives up on badly distorted cells
            return None

    def number(data) -> int:
        return int(data.number) if data is not None else 1

    tols = sorted(symprecs)
    loose = search(tols[-1])
    if loose is not None and operations_hold(loose.rotations, loose.translations, *cell, EXACT_OPERATIONS):
        return {f"{tol:g}": number(loose) for tol in symprecs}
    found = {tols[-1]: number(loose)}
    if len(tols) > 1:
        found[tols[0]] = number(search(tols[0]))
    same = found[tols[0]] == found[tols[-1]]
    for tol in tols[1:-1]:
        found[tol] = found[tols[0]] if same else number(search(tol))
    return {f"{tol:g}": found[tol] for tol in symprecs}


def _is_exactly(number: int, cell, symprec: float) -> bool:
    """Whether moyopy finds space group ``number`` at ``symprec`` and all its operations hold exactly."""
    import moyopy

    lattice, frac, numbers = cell
    try:
        data = moyopy.MoyoDataset(moyopy.Cell(lattice.tolist(), frac.tolist(), list(numbers)), symprec=symprec)
    except Exception:  # noqa: BLE001 - moyopy gives up on badly distorted cells: the spglib path decides
        return False
    if data.number != number:
        return False
    ops = data.operations
    return operations_hold(np.array(ops.rotations), np.array(ops.translations), *cell, EXACT_OPERATIONS)


def operations_hold(
    rotations: np.ndarray, translations: np.ndarray, lattice: np.ndarray, frac: np.ndarray, numbers, tol: float
) -> bool:
    """Whether every operation (fractional rotations and translations, as spglib gives them) keeps the metric to
    ``tol`` A^2 and maps every atom onto an atom of its species within ``tol`` A."""
    lattice, frac = np.asarray(lattice, dtype=float), np.asarray(frac, dtype=float)
    numbers = np.asarray(numbers)
    metric = lattice @ lattice.T
    rot = np.asarray(rotations, dtype=float)
    if np.abs(np.einsum("nji,jk,nkl->nil", rot, metric, rot) - metric).max() > tol:
        return False
    moved = np.einsum("nij,aj->nai", rot, frac) + np.asarray(translations)[:, None, :]
    diff = moved[:, :, None, :] - frac[None, None, :, :]
    diff -= np.round(diff)
    dist = np.linalg.norm(diff @ lattice, axis=-1)
    dist[:, numbers[:, None] != numbers[None, :]] = np.inf
    return bool((dist.min(axis=2) <= tol).all())


def space_groups_pymatgen(structure: Structure, symprecs=SYMPRECS) -> dict[str, int]:
    """The same through pymatgen's SpacegroupAnalyzer (the reference :func:`space_groups` is checked against)."""
    out = {}
    for tol in symprecs:
        try:
            out[f"{tol:g}"] = SpacegroupAnalyzer(structure, symprec=tol).get_space_group_number()
        except Exception:  # noqa: BLE001 - spglib gives up on badly distorted cells
            out[f"{tol:g}"] = 1
    return out


def b_x_b_angles(structure: Structure, cutoff: float = 3.6) -> np.ndarray:
    """B-X-B' angle (degrees) at every anion, from its two nearest B-site cations (one neighbour-list call).

    B sites are those with site property ``site`` in {"B", "B2"} (set by the builder and kept by the relaxation);
    without it, the two nearest cations of each anion are used.
    """
    roles = structure.site_properties.get("site")
    if roles:
        anion = np.array([r == "X" for r in roles])
        b_site = np.array([r in ("B", "B2") for r in roles])
    else:
        charge = np.array([getattr(site.specie, "oxi_state", 0) for site in structure])
        anion, b_site = charge < 0, charge > 0
    centres, points, images, dists = structure.get_neighbor_list(cutoff)
    keep = anion[centres] & b_site[points]
    centres, points, images, dists = centres[keep], points[keep], images[keep], dists[keep]
    cart, lattice = structure.cart_coords, structure.lattice.matrix
    angles = []
    for x in np.flatnonzero(anion):
        mine = np.flatnonzero(centres == x)
        if mine.size < 2:
            continue
        two = mine[np.argsort(dists[mine], kind="stable")[:2]]
        v1, v2 = (cart[points[two]] + images[two] @ lattice) - cart[x]
        cos = np.dot(v1, v2) / (np.linalg.norm(v1) * np.linalg.norm(v2))
        angles.append(float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))))
    return np.array(angles)


@cache
def tilt_table(ordering: str, same_a: bool = False, same_b: bool = False) -> dict[str, int]:
    """Space group of every tilt system of an ordering, for a species pattern (A = A', B = B').

    Computed once per pattern from the construction of :mod:`dp_screen.structures.perovskite` (a generic member
    with distinct bond lengths and tilt amplitudes, analysed by spglib); the tilt systems are those of the
    ordering's table in :mod:`dp_screen.structures.tilts`.
    """
    from dp_screen.structures.perovskite import pattern_space_group

    if ordering not in SPACE_GROUPS:
        return {}
    return {t: pattern_space_group(ordering, t, same_a, same_b) for t in SPACE_GROUPS[ordering]}


def tilts_for_space_group(number: int, ordering: str, same_a: bool = False, same_b: bool = False) -> list[str]:
    """Tilt systems of an ordering (with this species pattern) that give space group ``number``."""
    return [t for t, g in tilt_table(ordering, same_a, same_b).items() if g == number]


def species_pattern(structure: Structure) -> tuple[bool, bool]:
    """(A = A', B = B') read off the structure itself: the species on its A/A2 and B/B2 sites (site property
    ``site``, set by the builder); a structure without site roles counts as A != A', B != B'."""
    roles = structure.site_properties.get("site")
    if not roles:
        return False, False
    by_role: dict[str, set] = {}
    for role, site in zip(roles, structure, strict=True):
        by_role.setdefault(role, set()).add(site.species_string)
    same_a = not by_role.get("A2") or by_role.get("A2") == by_role.get("A")
    same_b = not by_role.get("B2") or by_role.get("B2") == by_role.get("B")
    return bool(same_a), bool(same_b)


def tilt_rank(symbol: str) -> tuple[int, int, str]:
    """Sort key of tilt systems from the least to the most distorted: tilted axes, then independent amplitudes,
    then the Glazer symbol (a0b-c- before a-b-b- before a-b-c-)."""
    from dp_screen.structures.tilts import parse_tilt

    t = parse_tilt(symbol)
    return sum(g >= 0 for g in t.groups), t.n_amplitudes, symbol


def phase_label(number: int, candidates: list[str], start_tilt: str | None) -> str:
    """The phase a structure is ranked under: its starting tilt system if its space group still allows it; else,
    of the tilt systems of its table that give this space group, the least distorted (:func:`tilt_rank`: fewest
    tilted axes, then fewest independent amplitudes, then the symbol), since the group does not tell them apart and
    the simplest tilt pattern that explains it is the conventional reading; else ``SG<number>`` (no tilt system of
    the table gives this group)."""
    if start_tilt is not None and start_tilt in candidates:
        return start_tilt
    return min(candidates, key=tilt_rank) if candidates else f"SG{number}"


def phase_call(energies_mev_atom: dict[str, float], phase_error_mev: float | None) -> dict:
    """The call of one (composition, ordering) from its phase energies (module docstring: the rule).

    ``energies_mev_atom``: {phase: E - E_lowest} (meV/atom, the lowest variant per phase, as
    :func:`compare_phases` gives them); ``phase_error_mev``: sigma of a phase energy difference (None: no measured
    error). Returns ``call`` (tilted, untilted, undetermined), ``dE_tilt_mev_atom`` (E(untilted) - E(lowest
    tilted phase); None without both), ``lowest_tilted`` (that phase), ``phases_within_error`` (phases within
    2 sigma of the lowest, lowest first, joined by " | "), ``phase_error_mev`` and ``call_band_mev`` (the
    half-width of the undetermined band: 2 sigma, or ``TILT_TOL_MEV`` without sigma).
    """
    if phase_error_mev is not None and not (np.isfinite(phase_error_mev) and phase_error_mev >= 0):
        raise InputError(f"phase error {phase_error_mev!r} meV/atom must be a finite number >= 0")
    band = CALL_SIGMAS * phase_error_mev if phase_error_mev is not None else TILT_TOL_MEV
    energies = {p: float(e) for p, e in energies_mev_atom.items() if e is not None and np.isfinite(e)}
    tilted = {p: e for p, e in energies.items() if p != UNTILTED}
    lowest_tilted = min(tilted, key=lambda p: (tilted[p], p)) if tilted else None
    de = energies[UNTILTED] - tilted[lowest_tilted] if UNTILTED in energies and tilted else None
    if not energies:
        call = "undetermined"
    elif not tilted:  # every start relaxed back to the untilted cell: no distinct tilted phase exists
        call = "untilted"
    elif de is None:  # no ranked untilted variant to compare with
        call = "undetermined"
    else:
        call = "tilted" if de > band else "untilted" if de < -band else "undetermined"
    order = sorted(energies, key=lambda p: (energies[p], p))
    within = [p for p in order if energies[p] - energies[order[0]] <= band] if order else []
    return {
        "call": call,
        "dE_tilt_mev_atom": de,
        "lowest_tilted": lowest_tilted,
        "phases_within_error": " | ".join(within),
        "phase_error_mev": phase_error_mev,
        "call_band_mev": band,
    }


@dataclass
class PhaseIdentification:
    """What phase a structure is in."""

    space_groups: dict[str, int]
    space_group: int
    tilt_candidates: list[str]
    mean_bxb_angle: float | None
    min_bxb_angle: float | None
    tilt_estimate_deg: float | None
    start_tilt: str | None
    stayed_in_start_tilt: bool | None
    phase: str = ""
    same_a: bool = False
    same_b: bool = False

    def as_dict(self) -> dict:
        """Plain dict for documents."""
        return dict(self.__dict__)


def identify_phase(
    structure: Structure,
    ordering: str | None = None,
    start_tilt: str | None = None,
    same_a: bool | None = None,
    same_b: bool | None = None,
) -> PhaseIdentification:
    """Space groups, B-X-B' angles, the Glazer tilt system(s) and the phase of a double perovskite.

    A structure without dp_screen's site roles (read from a CIF, say) gets them, and its ordering, inferred
    (:func:`dp_screen.structures.roles.infer_site_roles`); ``ordering`` None takes the inferred one.
    ``same_a`` / ``same_b``: None (default) reads the species pattern off the structure (:func:`species_pattern`),
    so the tilt table is the right one for A = A' or B = B' compositions.
    """
    from dp_screen.structures.roles import has_site_roles, infer_site_roles, ordering_of

    if not has_site_roles(structure):
        structure, inferred = infer_site_roles(structure)
        ordering = ordering or inferred
    elif ordering is None:
        ordering = ordering_of(structure)
    own_a, own_b = species_pattern(structure)
    same_a = own_a if same_a is None else same_a
    same_b = own_b if same_b is None else same_b
    aristotype = tilt_table(ordering, same_a, same_b).get(UNTILTED) if start_tilt == UNTILTED else None
    groups = space_groups(structure, maximal=aristotype)
    number = groups[f"{IDENTIFY_SYMPREC:g}"]
    candidates = tilts_for_space_group(number, ordering, same_a, same_b)
    angles = b_x_b_angles(structure)
    mean = float(angles.mean()) if angles.size else None
    stayed = None if start_tilt is None else start_tilt in candidates
    return PhaseIdentification(
        space_groups=groups,
        space_group=number,
        tilt_candidates=candidates,
        mean_bxb_angle=mean,
        min_bxb_angle=float(angles.min()) if angles.size else None,
        tilt_estimate_deg=None if mean is None else (180.0 - mean) / 2.0,
        start_tilt=start_tilt,
        stayed_in_start_tilt=stayed,
        phase=phase_label(number, candidates, start_tilt),
        same_a=same_a,
        same_b=same_b,
    )


def compare_phases(variants: list[dict], phase_error_mev: float | None = None) -> dict:
    """Lowest-energy variant of one composition, dE(untilted - lowest) and the call with its error bar.

    ``variants``: dicts with ``tilt``, ``energy_per_atom`` (eV) and optionally ``structure_id``, ``converged``.
    Returns {"lowest": tilt, "lowest_structure_id", "dE_untilted_mev_atom" (None without an untilted variant),
    "energies_mev_atom": {tilt: E - E_lowest}, "ground_state_tilted", "ground_state_phase"} and the fields of
    :func:`phase_call` (``call``, ``dE_tilt_mev_atom``, ``phases_within_error``, ...) for ``phase_error_mev``.
    ``ground_state_tilted`` is True / False for a ``tilted`` / ``untilted`` call and None when undetermined;
    ``ground_state_phase`` is the lowest phase for a tilted call, the untilted one for an untilted call, and
    None when undetermined (``phases_within_error`` lists the candidates then).
    """
    usable = [v for v in variants if v.get("energy_per_atom") is not None and np.isfinite(v["energy_per_atom"])]
    if not usable:
        return {
            "lowest": None,
            "lowest_structure_id": None,
            "dE_untilted_mev_atom": None,
            "energies_mev_atom": {},
            "ground_state_tilted": None,
            "ground_state_phase": None,
            **phase_call({}, phase_error_mev),
        }
    best = min(usable, key=lambda v: v["energy_per_atom"])
    untilted = [v for v in usable if v["tilt"] == "a0a0a0"]
    de = 1e3 * (min(v["energy_per_atom"] for v in untilted) - best["energy_per_atom"]) if untilted else None
    energies: dict[str, float] = {}
    for v in usable:
        rel = 1e3 * (v["energy_per_atom"] - best["energy_per_atom"])
        energies[v["tilt"]] = min(rel, energies.get(v["tilt"], np.inf))
    call = phase_call(energies, phase_error_mev)
    return {
        "lowest": best["tilt"],
        "lowest_structure_id": best.get("structure_id"),
        "dE_untilted_mev_atom": de,
        "energies_mev_atom": energies,
        **call,
        **call_fields(call["call"], best["tilt"]),
    }


def call_fields(call: str, lowest: str | None) -> dict:
    """``ground_state_tilted`` and ``ground_state_phase`` of a call (see :func:`compare_phases`)."""
    if call == "tilted":
        return {"ground_state_tilted": True, "ground_state_phase": lowest}
    if call == "untilted":
        return {"ground_state_tilted": False, "ground_state_phase": UNTILTED}
    return {"ground_state_tilted": None, "ground_state_phase": None}


def recall(ordering_summary: dict, phase_error: PhaseError | None = None) -> dict:
    """The call of one ordering's stored summary (:func:`phase_summary`), made again from its phase energies.

    With the sigma it was summarised with, unless ``phase_error`` is the user's (which replaces it) or the summary
    predates error bars (then ``phase_error``, the model's, with the committee's spread where one scored it).
    Returns the fields of :func:`phase_call`, ``phase_error_source`` and those of :func:`call_fields`."""
    from dp_screen.mlip.uncertainty import ordering_phase_error

    o = ordering_summary
    if o.get("phase_error_source") and (phase_error is None or phase_error.source != "user"):
        sigma, source = o.get("phase_error_mev"), o["phase_error_source"]
    else:
        picked = ordering_phase_error(phase_error, o.get("energy_spread_mev_atom"))
        sigma, source = picked.sigma_mev, picked.source
    call = phase_call(o.get("energies_mev_atom") or {}, sigma)
    return {**call, "phase_error_source": source, **call_fields(call["call"], o.get("lowest"))}


def _max_or_none(values) -> float | None:
    vals = [float(x) for x in values if x is not None and x == x]
    return max(vals) if vals else None


def phase_summary(variants: list[dict], phase_error: PhaseError | None = None) -> dict:
    """Phase summary of one composition from its relaxation documents (one model and settings).

    Only ranked variants (converged, not failed, still a perovskite: field ``excluded`` None) enter, each under the
    phase it ended in (``phase_tilt``). Variants scored by a committee (``energy_spread_mev_atom``,
    ``force_spread_ev_a``) give each ordering the largest spread of its ranked variants. Per ordering:
    :func:`compare_phases` (lowest phase, dE untilted - lowest, the call) with the sigma of
    :func:`dp_screen.mlip.uncertainty.ordering_phase_error` (``phase_error``: the model's, or one given by the user;
    a committee's spread where one scored the variants and the user gave none), recorded as ``phase_error_mev``
    and ``phase_error_source``; ``ground_state``: the lowest (ordering, phase) over all orderings with that
    ordering's dE and call; ``excluded``: how many variants were kept out and why.
    """
    from dp_screen.mlip.uncertainty import ordering_phase_error

    excluded: dict[str, int] = {}
    by_ordering: dict[str, list[dict]] = defaultdict(list)
    seen: dict[str, dict] = defaultdict(lambda: {"n_variants": 0, "excluded": {}})
    for d in variants:
        why = d.get("excluded")
        tally = seen[d["ordering"]]
        tally["n_variants"] += 1
        if why:
            excluded[why] = excluded.get(why, 0) + 1
            tally["excluded"][why] = tally["excluded"].get(why, 0) + 1
            continue
        by_ordering[d["ordering"]].append(
            {
                "tilt": d.get("phase_tilt") or d["start_tilt"],
                "energy_per_atom": d["energy_per_atom"],
                "structure_id": d["structure_id"],
                "space_group": d.get("final_space_group"),
                "u": d.get("energy_spread_mev_atom"),
                "uf": d.get("force_spread_ev_a"),
            }
        )
    orderings = {}
    for o in sorted(seen):
        v = by_ordering.get(o, [])
        best = min(v, key=lambda x: x["energy_per_atom"]) if v else None
        untilted = [x for x in v if x["tilt"] == "a0a0a0"]
        spread = _max_or_none(x["u"] for x in v)
        sigma = ordering_phase_error(phase_error, spread)
        orderings[o] = {
            **compare_phases(v, sigma.sigma_mev),
            "phase_error_source": sigma.source,
            "n_ranked": len(v),
            **seen[o],
            "e_lowest": best["energy_per_atom"] if best else None,
            "lowest_space_group": best["space_group"] if best else None,
            "untilted_space_group": min(untilted, key=lambda x: x["energy_per_atom"])["space_group"]
            if untilted
            else None,
            # the committee's largest spread over the ranked variants (None: no committee scored them)
            "energy_spread_mev_atom": spread,
            "force_spread_ev_a": _max_or_none(x["uf"] for x in v),
        }
    ground = None
    for o, v in by_ordering.items():
        if not v:
            continue
        best = min(v, key=lambda x: x["energy_per_atom"])
        if ground is None or best["energy_per_atom"] < ground["energy_per_atom"]:
            ground = {"ordering": o, "energy_per_atom": best["energy_per_atom"]}
    if ground is not None:
        summ = orderings[ground["ordering"]]
        ground.update(
            phase=summ["ground_state_phase"],
            lowest=summ["lowest"],
            structure_id=summ["lowest_structure_id"],
            dE_untilted_mev_atom=summ["dE_untilted_mev_atom"],
            ground_state_tilted=summ["ground_state_tilted"],
            **{k: summ[k] for k in CALL_KEYS},
        )
    return {
        "ground_state": ground,
        "orderings": orderings,
        "excluded": excluded,
        "n_variants": len(variants),
        "n_ranked": sum(len(v) for v in by_ordering.values()),
        # the fields of the ground state's ordering at the top level, as read by the campaign summary
        "lowest": ground["lowest"] if ground else None,
        "ground_state_phase": ground["phase"] if ground else None,
        "dE_untilted_mev_atom": ground["dE_untilted_mev_atom"] if ground else None,
        "ground_state_tilted": ground["ground_state_tilted"] if ground else None,
        **{k: ground[k] if ground else None for k in CALL_KEYS},
    }
