"""DFT single points behind one Maker: CP2K (local, runs inside the job) or VASP (atomate2, a queued job).

VASP cannot run here: the VASP backend returns atomate2's static job (MPStaticSet-like inputs: PBE, the Materials
Project's U values and pseudopotential choices, ISPIN 2, with stress) as a replacement job for the cluster's
workers; its inputs can be written without POTCARs (``potcar_spec``) for inspection.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from jobflow import Maker, Response, job
from pymatgen.core import Structure

from dp_screen.dft.cp2k import CP2KSettings, run_cp2k
from dp_screen.errors import InputError

BACKENDS = ("cp2k", "vasp")


def vasp_static_maker(user_incar_settings: dict | None = None):
    """atomate2's VASP static maker with dp_screen's input set (MP-compatible PBE(+U), stress, spin-polarised)."""
    from atomate2.vasp.jobs.core import StaticMaker
    from atomate2.vasp.sets.core import StaticSetGenerator

    incar = {"ISPIN": 2, "ISIF": 3, "LWAVE": False, "LCHARG": False, "EDIFF": 1e-6, **(user_incar_settings or {})}
    return StaticMaker(name="dp_screen vasp static", input_set_generator=StaticSetGenerator(user_incar_settings=incar))


def write_vasp_inputs(structure: Structure, directory: str | Path, user_incar_settings: dict | None = None) -> Path:
    """Write the VASP inputs the VASP backend would run (POTCAR.spec instead of POTCAR: no licence needed)."""
    maker = vasp_static_maker(user_incar_settings)
    vis = maker.input_set_generator.get_input_set(structure, potcar_spec=True)
    vis.write_input(directory)
    return Path(directory)


@dataclass
class DFTStaticMaker(Maker):
    """A DFT single point (energy, forces, stress) of a structure.

    Parameters
    ----------
    name
        Job name.
    backend
        "cp2k" (runs here, Debian's cp2k) or "vasp" (atomate2's StaticMaker, for cluster workers).
    cp2k
        CP2K settings.
    vasp_incar
        Extra INCAR settings for VASP.
    """

    name: str = "dft static"
    backend: str = "cp2k"
    cp2k: CP2KSettings = field(default_factory=CP2KSettings)
    vasp_incar: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise InputError(f"unknown DFT backend {self.backend!r}; allowed: {', '.join(BACKENDS)}")

    @job
    def make(self, structure: Structure, work_dir: str | None = None):
        """CP2K: run and return energy (eV), forces (eV/A), stress (GPa). VASP: replaced by atomate2's static job."""
        if self.backend == "vasp":
            return Response(replace=vasp_static_maker(self.vasp_incar).make(structure))
        folder = work_dir or tempfile.mkdtemp(prefix="dp_screen_cp2k_")
        return dft_single_point(structure, self.cp2k, folder)


def dft_single_point(structure: Structure, settings: CP2KSettings, work_dir: str | Path) -> dict:
    """CP2K single point as a plain dict (lists, for documents)."""
    res = run_cp2k(structure, settings, work_dir)
    return {
        "method": res["method"],
        "hamiltonian": res["hamiltonian"],
        "energy": res["energy"],
        "energy_per_atom": res["energy"] / len(structure),
        "forces": res["forces"].tolist(),
        "stress_gpa": None if res["stress_gpa"] is None else res["stress_gpa"].tolist(),
        "scf_converged": res["scf_converged"],
        "scf_converged_by": res.get("scf_converged_by"),
        "wall_time_s": res["wall_time_s"],
        "kpoints": res["kpoints"],
        "scf_steps": res.get("scf_steps"),
        "scf_attempts": res.get("scf_attempts"),
        "output_file": res["output_file"],
        "settings": settings.settings_dict(),
    }
