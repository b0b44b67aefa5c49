"""The DFT reference set shipped with dp_screen: CP2K single points at the packaged model's relaxed geometries.

``scripts/make_dft_reference.py`` makes it (resumable: every finished point is appended as one JSON line to
``data/dft_reference/points.jsonl``; ``data/dft_reference/card.json`` says how it was made and what it cost).
Each point is one composition (rock-salt B ordering, 10-atom primitive cell) in one tilt system: its structure
(with oxidation states), the Hamiltonian it was computed with (``cp2k-pbe`` or ``cp2k-pbe+u``, spin polarised or
not, see :mod:`dp_screen.dft.hamiltonian`), energy (eV), forces (eV/A), stress (GPa, ASE sign: negative when
compressed), whether the SCF converged, the CP2K version and settings, and the model and settings that relaxed it.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
from pymatgen.core import Structure

from dp_screen.errors import InputError

REFERENCE_TILTS = ("a0a0a0", "a0a0c-", "a-a-a-", "a0b-b-")


def reference_dir() -> Path:
    """The packaged folder of the reference set."""
    return Path(str(resources.files("dp_screen") / "data" / "dft_reference"))


def point_key(formula: str, tilt: str) -> str:
    """The key of one reference point."""
    return f"{formula}|{tilt}"


def read_points(path: str | Path | None = None) -> list[dict]:
    """Every line of a points file (finished points and recorded failures), in the order written."""
    path = Path(path) if path else reference_dir() / "points.jsonl"
    if not path.exists():
        return []
    out = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as exc:  # a line cut short by a kill: the point is redone
            if n == len(path.read_text().splitlines()):
                continue
            raise InputError(f"{path}: line {n} is not JSON ({exc}); allowed: one JSON object per line") from None
    return out


def load_reference(path: str | Path | None = None, usable_only: bool = True) -> list[dict]:
    """The reference points, each with ``structure`` as a pymatgen Structure and arrays for forces and stress.

    ``usable_only`` keeps the points whose CP2K run finished with a converged SCF (the others are recorded in the
    file, with their reason, so that a rerun of the script does not repeat them).
    """
    points = []
    for p in read_points(path):
        if usable_only and (p.get("error") or not p.get("scf_converged")):
            continue
        p = dict(p)
        p["structure"] = Structure.from_dict(p["structure"])
        if p.get("forces") is not None:
            p["forces"] = np.asarray(p["forces"], dtype=float)
        if p.get("stress_gpa") is not None:
            p["stress_gpa"] = np.asarray(p["stress_gpa"], dtype=float)
        points.append(p)
    return points


def card(path: str | Path | None = None) -> dict:
    """The reference set's card (how it was made, what it cost)."""
    path = Path(path) if path else reference_dir() / "card.json"
    return json.loads(path.read_text()) if path.exists() else {}
