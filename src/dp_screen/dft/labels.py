"""One conversion of DFT results into training and validation labels, whichever code made them.

A label is ``{"method", "energy" (eV), "forces" (eV/A, N x 3), "stress_gpa" (GPa, 3 x 3, ASE's sign: negative
when the cell is compressed), "scf_converged", "settings"}``. CP2K results (``dp_screen.jobs.dft.dft_single_point``)
already are one; a VASP result is an atomate2 / emmet ``TaskDoc`` (or the dict a jobflow store keeps of one), whose
``output.stress`` is in kbar with VASP's sign (positive when compressed): stress_gpa = -0.1 x stress_kbar, as in
ASE's VASP reader. The method names the Hamiltonian: ``vasp-pbe+u`` when the run had +U (the Materials Project
set that atomate2's static maker uses), else ``vasp-pbe``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dp_screen.errors import InputError

VASP_KBAR_TO_GPA = -0.1
LABEL_KEYS = ("energy", "forces")


def _get(obj: Any, name: str):
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def is_task_doc(result: Any) -> bool:
    """An atomate2 / emmet VASP task document (object or dict)."""
    if type(result).__name__ == "TaskDoc":
        return True
    return _get(result, "output") is not None and _get(result, "calcs_reversed") is not None


def dft_label(result: Any) -> dict:
    """The label of one DFT result (module docstring); raises InputError naming what is missing."""
    if is_task_doc(result):
        out = _get(result, "output")
        energy, forces, stress = _get(out, "energy"), _get(out, "forces"), _get(out, "stress")
        if energy is None or forces is None:
            raise InputError(
                f"VASP task {(_get(result, 'task_id') or '?')!r} has no output energy or forces; "
                "allowed: a finished static or relaxation TaskDoc"
            )
        inp = _get(result, "input")
        hubbard = bool(_get(inp, "is_hubbard")) if inp is not None else False
        state = _get(result, "state")
        state = getattr(state, "value", state)
        return {
            "method": "vasp-pbe+u" if hubbard else "vasp-pbe",
            "energy": float(energy),
            "forces": np.asarray(forces, dtype=float).tolist(),
            "stress_gpa": None if stress is None else (np.asarray(stress, dtype=float) * VASP_KBAR_TO_GPA).tolist(),
            "scf_converged": state in (None, "successful"),
            "settings": {
                "code": "vasp",
                "task_type": str(getattr(_get(result, "task_type"), "value", _get(result, "task_type"))),
            },
        }
    if isinstance(result, dict) and all(k in result for k in LABEL_KEYS):
        return {
            "method": result.get("method", "cp2k"),
            "energy": float(result["energy"]),
            "forces": np.asarray(result["forces"], dtype=float).tolist(),
            "stress_gpa": None
            if result.get("stress_gpa") is None
            else np.asarray(result["stress_gpa"], dtype=float).tolist(),
            "scf_converged": bool(result.get("scf_converged", True)),
            "settings": result.get("settings"),
            **{k: result[k] for k in ("hamiltonian", "output_file", "kpoints", "wall_time_s") if k in result},
        }
    raise InputError(
        f"cannot read a DFT label from a {type(result).__name__}; allowed: a CP2K result dict with "
        f"{', '.join(LABEL_KEYS)} or an atomate2 VASP TaskDoc"
    )
