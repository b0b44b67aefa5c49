"""Which Hamiltonian a DFT check of a structure must use to describe the same physics as the models.

The models (CHGNet, MACE-MP-0 and the packaged model distilled from CHGNet) learned Materials Project energies:
spin-polarised PBE, with +U on the d states of Co, Cr, Fe, Mn, Mo, Ni, V and W in oxides and fluorides. This module
decides, per structure:

- **spin**: spin-polarised (UKS) when any cation is open-shell, with a ferromagnetic start; the initial moment of
  a transition-metal cation is its **high-spin** count of unpaired d electrons from the oxidation state
  (d^n with n = group - oxidation state; n <= 5 gives n, else 10 - n), the choice MP's own ferromagnetic starts
  approximate; a lanthanide's is its count of unpaired 4f electrons (f^n, n = Z - 54 - oxidation state), since the
  GTH-PBE pseudopotentials of Debian's CP2K data keep the 4f shell in the valence (Ce q12, Nd q14, Sm q16).
  Closed-shell structures stay restricted (RKS).
- **+U**: the U values of pymatgen's MPRelaxSet (``LDAUU``) for the anion, on the d shell (L = 2), where MP applies
  them: only oxides and fluorides. W6+ and Mo6+ (d0) get U as MP gives it to them; it barely changes a d0 ion.
- **label**: ``cp2k-pbe`` or ``cp2k-pbe+u``, stored with every result.

All of it is read off the structure's oxidation states, so whatever path a structure takes to DFT (training set,
active learning, held-out set, validation, the reference set) it keeps the states it was built with. A structure
without them (read from a file, or stripped on the way) gets them inferred (an
assignment the caller knows, e.g. the composition's; else bond valence; else pymatgen's guesses from the
composition; :func:`dp_screen.structures.roles.with_oxidation_states`), or fails naming the structure: never a
silent closed-shell run.

What still differs from MP: GTH pseudopotentials and MOLOPT Gaussian basis sets instead of PAW and plane waves,
CP2K's Mulliken-projector +U instead of VASP's Dudarev scheme on PAW projectors (same U, different projector), and
no MP energy corrections (anion and +U mixing corrections), so absolute energies differ; phase energy differences
of one composition share all of these and are what dp_screen compares.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pymatgen.core import Structure


@cache
def mp_u_values() -> dict[str, dict[str, float]]:
    """MP's U values (eV) by anion then element, from pymatgen's MPRelaxSet."""
    from pymatgen.io.vasp.sets import MPRelaxSet

    return {anion: dict(values) for anion, values in MPRelaxSet.CONFIG["INCAR"]["LDAUU"].items()}


def unpaired_electrons(element: str, oxidation_state: int) -> int:
    """High-spin unpaired d electrons of a transition-metal cation, unpaired 4f electrons of a lanthanide (0 for every
    other ion)."""
    from pymatgen.core import Element

    el = Element(element)
    if oxidation_state <= 0:
        return 0
    if 57 <= el.Z <= 71:  # lanthanides: 4f^n
        n = el.Z - 54 - oxidation_state
        return max(0, n if n <= 7 else 14 - n)
    if not el.is_transition_metal or el.group is None or not 3 <= el.group <= 12:
        return 0
    n = el.group - oxidation_state
    if n <= 0 or n >= 10:
        return 0
    return n if n <= 5 else 10 - n


@dataclass
class Hamiltonian:
    """The electronic Hamiltonian of a DFT check: spin polarisation, initial moments, +U, and its label."""

    spin_polarised: bool
    moments: dict[str, float] = field(default_factory=dict)  # element -> initial moment (Bohr magnetons)
    u_values: dict[str, float] = field(default_factory=dict)  # element -> U - J (eV) on its d shell
    multiplicity: int = 1

    @property
    def label(self) -> str:
        """``cp2k-pbe`` or ``cp2k-pbe+u`` (the functional is the models': PBE)."""
        return "cp2k-pbe+u" if self.u_values else "cp2k-pbe"

    def as_dict(self) -> dict:
        return {
            "spin_polarised": self.spin_polarised,
            "moments": self.moments,
            "u_values": self.u_values,
            "multiplicity": self.multiplicity,
            "label": self.label,
        }


def hamiltonian_for(structure: Structure) -> Hamiltonian:
    """The models' Hamiltonian for a structure (module docstring: the rules); oxidation states inferred where the
    structure has none (:func:`with_oxidation_states`)."""
    from dp_screen.structures.roles import with_oxidation_states

    structure = with_oxidation_states(structure)
    anions = {s.specie.symbol for s in structure if getattr(s.specie, "oxi_state", 0) < 0}
    u_table = mp_u_values()
    u: dict[str, float] = {}
    for anion in anions:
        for el, value in u_table.get(anion, {}).items():
            if any(site.specie.symbol == el for site in structure):
                u[el] = max(value, u.get(el, 0.0))
    moments: dict[str, float] = {}
    total = 0
    for site in structure:
        oxi = getattr(site.specie, "oxi_state", 0) or 0
        n = unpaired_electrons(site.specie.symbol, int(round(oxi)))
        if n:
            moments[site.specie.symbol] = max(float(n), moments.get(site.specie.symbol, 0.0))
            total += n
    return Hamiltonian(spin_polarised=bool(moments), moments=moments, u_values=u, multiplicity=total + 1)
