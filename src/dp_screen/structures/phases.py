"""Which phase a (relaxed) double perovskite is in, and which variant of a composition is lowest in energy.

- Space group at several tolerances (spglib).
- B-X-B' angles (180 degrees in an untilted cell; 180 - 2 theta for a tilt theta about an axis perpendicular to the
  bond) and the tilt amplitude they imply.
- The Glazer tilt system(s) consistent with the space group, for the structure's cation ordering (the tilt tables
  of :mod:`dp_screen.structures.tilts`), and whether that includes the tilt system it started in.
- For a composition: the lowest-energy variant and dE = E(untilted) - E(lowest) per atom (variants of one
  composition compared per atom, i.e. as cells of equal size).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pymatgen.core import Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from dp_screen.structures.tilts import SIMPLE_PEROVSKITE, SPACE_GROUPS

SYMPRECS = (1e-3, 1e-2, 1e-1)
TILT_TOL_MEV = 1.0  # a tilted variant must be this far (meV/atom) below the untilted one to be a tilted ground state
IDENTIFY_SYMPREC = 1e-2


def space_groups(structure: Structure, symprecs=SYMPRECS) -> dict[str, int]:
    """Space-group number at each tolerance (Angstrom)."""
    out = {}
    for tol in symprecs:
        try:
            out[f"{tol:g}"] = SpacegroupAnalyzer(structure, symprec=tol).get_space_group_number()
        except Exception:  # noqa: BLE001 - spglib gives up on badly distorted cells
            out[f"{tol:g}"] = 1
    return out


def b_x_b_angles(structure: Structure, cutoff: float = 3.6) -> np.ndarray:
    """B-X-B' angle (degrees) at every anion, from its two nearest B-site cations.

    B sites are those with site property ``site`` in {"B", "B2"} (set by the builder and kept by the relaxation);
    without it, the two nearest cations of each anion are used.
    """
    roles = structure.site_properties.get("site")
    angles = []
    for i, site in enumerate(structure):
        if (roles and roles[i] != "X") or (not roles and getattr(site.specie, "oxi_state", -1) > 0):
            continue
        neighbours = structure.get_neighbors(site, cutoff)
        if roles:
            neighbours = [n for n in neighbours if roles[n.index] in ("B", "B2")]
        else:
            neighbours = [n for n in neighbours if getattr(n.specie, "oxi_state", 1) > 0]
        neighbours.sort(key=lambda n: n.nn_distance)
        if len(neighbours) < 2:
            continue
        v1 = neighbours[0].coords - site.coords
        v2 = neighbours[1].coords - site.coords
        cos = np.dot(v1, v2) / (np.linalg.norm(v1) * np.linalg.norm(v2))
        angles.append(float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))))
    return np.array(angles)


def tilts_for_space_group(number: int, ordering: str, same_a: bool = False, same_b: bool = False) -> list[str]:
    """Tilt systems of an ordering that give space group ``number``."""
    if same_a and same_b:
        return [t for t, g in SIMPLE_PEROVSKITE.items() if g == number]
    return [t for t, g in SPACE_GROUPS.get(ordering, {}).items() if g == number]


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

    def as_dict(self) -> dict:
        """Plain dict for documents."""
        return dict(self.__dict__)


def identify_phase(
    structure: Structure,
    ordering: str,
    start_tilt: str | None = None,
    same_a: bool = False,
    same_b: bool = False,
) -> PhaseIdentification:
    """Space groups, B-X-B' angles and the Glazer tilt system(s) of a structure with a known cation ordering."""
    groups = space_groups(structure)
    number = groups[f"{IDENTIFY_SYMPREC:g}"]
    candidates = tilts_for_space_group(number, ordering, same_a, same_b)
    angles = b_x_b_angles(structure)
    mean = float(angles.mean()) if angles.size else None
    stayed = None if start_tilt is None else start_tilt in candidates
    return PhaseIdentification(
        space_groups=groups, space_group=number, tilt_candidates=candidates, mean_bxb_angle=mean,
        min_bxb_angle=float(angles.min()) if angles.size else None,
        tilt_estimate_deg=None if mean is None else (180.0 - mean) / 2.0, start_tilt=start_tilt,
        stayed_in_start_tilt=stayed,
    )  # fmt: skip


def compare_phases(variants: list[dict], tilt_tol_mev: float = TILT_TOL_MEV) -> dict:
    """Lowest-energy variant of one composition and dE(untilted - lowest).

    ``variants``: dicts with ``tilt``, ``energy_per_atom`` (eV) and optionally ``structure_id``, ``converged``.
    Returns {"lowest": tilt, "lowest_structure_id", "dE_untilted_mev_atom" (None without an untilted variant),
    "energies_mev_atom": {tilt: E - E_lowest}, "ground_state_tilted"}. The ground state counts as tilted when dE
    exceeds ``tilt_tol_mev``: a tilted start that relaxed back to the untilted cell differs from it by noise only
    (None without an untilted variant to compare).
    """
    usable = [v for v in variants if v.get("energy_per_atom") is not None and np.isfinite(v["energy_per_atom"])]
    if not usable:
        return {"lowest": None, "lowest_structure_id": None, "dE_untilted_mev_atom": None, "energies_mev_atom": {},
                "ground_state_tilted": None}  # fmt: skip
    best = min(usable, key=lambda v: v["energy_per_atom"])
    untilted = [v for v in usable if v["tilt"] == "a0a0a0"]
    de = 1e3 * (min(v["energy_per_atom"] for v in untilted) - best["energy_per_atom"]) if untilted else None
    energies: dict[str, float] = {}
    for v in usable:
        rel = 1e3 * (v["energy_per_atom"] - best["energy_per_atom"])
        energies[v["tilt"]] = min(rel, energies.get(v["tilt"], np.inf))
    return {
        "lowest": best["tilt"],
        "lowest_structure_id": best.get("structure_id"),
        "dE_untilted_mev_atom": de,
        "energies_mev_atom": energies,
        "ground_state_tilted": None if de is None else bool(de > tilt_tol_mev),
    }
