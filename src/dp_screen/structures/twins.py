"""Oxidation-state twins: one relaxed structure given to every composition with the same elements on the same sites.

An MLIP sees elements and positions, never oxidation states, so Sr2Fe2+Mo6+O6 and Sr2Fe3+Mo5+O6 relaxed from the
same start give the same structure and energy (:func:`dp_screen.chemistry.composition_space.chemistry_id`). A
twin's copy is the relaxed structure re-decorated with the twin's own oxidation states and site roles
(:func:`redecorate`). Within a pair the canonical order puts the lower oxidation state first, so the twins
Cs2Tl+Au3+Cl6 and Cs2Au+Tl3+Cl6 have Tl on the B site in one and on the B' site in the other: the copy keeps every
atom where it is and renames the roles (in the rock-salt and layered orderings the two B sites, and the two A sites,
are related by a lattice translation of the aristotype, so either naming describes the same structure).
"""

from __future__ import annotations

from dp_screen.chemistry.composition_space import SITE_ROLES, parse_composition_id
from dp_screen.chemistry.site_tables import species_label


def composition_species(composition_id: str) -> dict[str, tuple[str, int]]:
    """Site role -> (element, oxidation state) of a composition id (``Cs+_Cs+_Ag+_Bi3+_Cl-``)."""
    return dict(zip(SITE_ROLES, parse_composition_id(composition_id), strict=True))


def _role_of(element: str, role: str, species: dict[str, tuple[str, int]]) -> str:
    """The twin's role of a site holding ``element`` in role ``role``: the pair member with that element (its own
    role when both members are the same element)."""
    if role == "X":
        return role
    pair = ("A", "A2") if role in ("A", "A2") else ("B", "B2")
    first, second = species[pair[0]][0], species[pair[1]][0]
    if first == second:
        return role
    if element == first:
        return pair[0]
    if element == second:
        return pair[1]
    raise ValueError(f"element {element} on site {role} is not in the twin's pair {first}/{second}")


def redecorate(structure: dict, composition_id: str) -> dict:
    """A structure dict (``Structure.as_dict()`` with the builder's ``site`` roles) with the oxidation states and
    site roles of ``composition_id``, a twin of the composition it was made for; positions and lattice unchanged."""
    species = composition_species(composition_id)
    sites = []
    for site in structure["sites"]:
        (sp,) = site["species"]
        role = _role_of(sp["element"], site["properties"]["site"], species)
        element, q = species[role]
        if element != sp["element"]:
            raise ValueError(f"site {role} holds {sp['element']}, the twin {composition_id} puts {element} there")
        sites.append(
            {
                **site,
                "species": [{**sp, "oxidation_state": q}],
                "properties": {**site["properties"], "site": role},
                "label": species_label(element, q),
            }
        )
    return {**structure, "sites": sites}
