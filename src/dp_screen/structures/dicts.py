"""Structures from stored documents without pymatgen's per-site decoding.

``Structure.from_dict`` decodes every site's properties through monty's JSON decoder (a ``json.loads`` round trip
per site: ~7 ms for a 10-atom cell, more than identifying its phase). The documents dp_screen stores hold ordered
cells with one species per site and plain properties, so :func:`structure_from_dict` builds the same Structure from
the arrays at once, and hands anything else (partial occupancies, spins, non-scalar properties) to pymatgen.
"""

from __future__ import annotations

from functools import cache

from pymatgen.core import Element, Lattice, Species, Structure

_PLAIN = (str, int, float, bool, type(None))


@cache
def _species(element: str, q: float | None) -> Element | Species:
    return Element(element) if q is None else Species(element, q)


def structure_from_dict(d: dict) -> Structure:
    """The Structure of ``Structure.as_dict()``'s output ``d``: equal to ``Structure.from_dict(d)`` (the same sites,
    species, labels and site properties)."""
    sites = d["sites"]
    species, coords, labels, keys = [], [], [], set()
    for site in sites:
        sp = site["species"]
        props = site.get("properties") or {}
        if len(sp) != 1 or sp[0].get("occu", 1) != 1 or sp[0].get("spin") is not None:
            return Structure.from_dict(d)
        if not all(isinstance(v, _PLAIN) for v in props.values()):
            return Structure.from_dict(d)
        species.append(_species(sp[0]["element"], sp[0].get("oxidation_state")))
        coords.append(site["abc"])
        labels.append(site.get("label"))
        keys.update(props)
    if d.get("properties"):
        return Structure.from_dict(d)
    properties = {k: [(s.get("properties") or {}).get(k) for s in sites] for k in sorted(keys)}
    return Structure(
        Lattice(d["lattice"]["matrix"], pbc=tuple(d["lattice"].get("pbc", (True, True, True)))),
        species,
        coords,
        charge=d.get("charge"),
        site_properties=properties or None,
        labels=labels,
    )
