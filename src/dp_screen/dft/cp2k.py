"""CP2K single points (PBE, GTH pseudopotentials, MOLOPT basis) for any machine with Debian's cp2k.

Writes a CP2K input, runs ``cp2k.psmp`` (under mpirun when more than one process is asked for) and parses the total
energy, the forces and the analytical stress tensor. Energies are CP2K's (GTH reference), not comparable in
absolute value with an MLIP trained on other references: compare forces, stresses and energy differences.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from monty.json import MSONable
from dp_screen.errors import DPScreenError

if TYPE_CHECKING:
    from pymatgen.core import Structure

HARTREE_EV = 27.211386245988
BOHR_A = 0.529177210903
DATA_DIRS = ("/usr/share/cp2k", "/usr/share/cp2k/data")


class CP2KError(DPScreenError):
    """CP2K is missing, failed, or its output cannot be read."""


@dataclass
class CP2KSettings(MSONable):
    """Settings of a CP2K single point.

    Parameters
    ----------
    xc
        Functional (PBE).
    basis, potential
        Basis-set and pseudopotential names (aliases valid for every element of the default space).
    cutoff, rel_cutoff
        Plane-wave cutoffs (Ry).
    kpoint_length
        k-point length (Angstrom): Monkhorst-Pack n_i = ceil(kpoint_length / a_i), so 15 gives 3x3x3 for the
        10-atom fcc cell of a double perovskite (a_i ~ 5.6 A); 0 for Gamma only (only for large supercells: a
        Gamma-only 10-atom cell is off by ~0.1 eV/atom and ranks phases wrongly).
    smearing_k
        Fermi-Dirac electronic temperature (K); 0 for none.
    max_scf, eps_scf
        SCF limits.
    nproc, omp_threads
        MPI processes and OpenMP threads.
    timeout_s
        Wall-clock limit of one run.
    """

    xc: str = "PBE"
    basis: str = "DZVP-MOLOPT-SR-GTH"
    potential: str = "GTH-PBE"
    cutoff: float = 400.0
    rel_cutoff: float = 50.0
    kpoint_length: float = 15.0
    smearing_k: float = 500.0
    max_scf: int = 80
    eps_scf: float = 1e-6
    nproc: int = 2
    omp_threads: int = 1
    timeout_s: float = 3600.0

    def settings_dict(self) -> dict:
        """Settings for documents."""
        return asdict(self)


def cp2k_executable() -> str | None:
    """Path of cp2k.psmp (or cp2k), None when CP2K is not installed."""
    return shutil.which("cp2k.psmp") or shutil.which("cp2k")


def kpoint_grid(structure: Structure, length: float) -> tuple[int, int, int]:
    """Monkhorst-Pack grid n_i = ceil(length / a_i) (``length`` in Angstrom; <= 0: Gamma only)."""
    if length <= 0:
        return (1, 1, 1)
    return tuple(max(1, math.ceil(length / a - 1e-9)) for a in structure.lattice.abc)  # type: ignore[return-value]


def write_cp2k_input(structure: Structure, settings: CP2KSettings, project: str = "dp_screen") -> str:
    """The CP2K input text of a PBE single point with forces and stress."""
    elements = sorted({site.specie.symbol for site in structure})
    grid = kpoint_grid(structure, settings.kpoint_length)
    lat = structure.lattice.matrix
    kinds = "\n".join(
        f"    &KIND {el}\n      BASIS_SET {settings.basis}\n      POTENTIAL {settings.potential}\n    &END KIND"
        for el in elements
    )
    coords = "\n".join(f"      {site.specie.symbol} {x:.10f} {y:.10f} {z:.10f}"
                       for site, (x, y, z) in zip(structure, structure.cart_coords, strict=True))  # fmt: skip
    kpoints = (
        f"    &KPOINTS\n      SCHEME MONKHORST-PACK {grid[0]} {grid[1]} {grid[2]}\n      SYMMETRY OFF\n"
        f"      FULL_GRID ON\n    &END KPOINTS\n"
        if grid != (1, 1, 1)
        else ""
    )
    smear = (
        f"      ADDED_MOS 40\n      &SMEAR ON\n        METHOD FERMI_DIRAC\n        ELECTRONIC_TEMPERATURE [K] "
        f"{settings.smearing_k}\n      &END SMEAR\n      &MIXING\n        METHOD BROYDEN_MIXING\n        ALPHA 0.2\n"
        f"      &END MIXING\n"
        if settings.smearing_k > 0
        else ""
    )
    return f"""&GLOBAL
  PROJECT {project}
  RUN_TYPE ENERGY_FORCE
  PRINT_LEVEL MEDIUM
&END GLOBAL
&FORCE_EVAL
  METHOD QS
  STRESS_TENSOR ANALYTICAL
  &DFT
    BASIS_SET_FILE_NAME BASIS_MOLOPT
    POTENTIAL_FILE_NAME GTH_POTENTIALS
    &MGRID
      CUTOFF {settings.cutoff}
      REL_CUTOFF {settings.rel_cutoff}
    &END MGRID
    &QS
      EPS_DEFAULT 1.0E-10
    &END QS
{kpoints}    &SCF
      SCF_GUESS ATOMIC
      MAX_SCF {settings.max_scf}
      EPS_SCF {settings.eps_scf}
{smear}    &END SCF
    &XC
      &XC_FUNCTIONAL {settings.xc}
      &END XC_FUNCTIONAL
    &END XC
  &END DFT
  &SUBSYS
    &CELL
      A {lat[0][0]:.10f} {lat[0][1]:.10f} {lat[0][2]:.10f}
      B {lat[1][0]:.10f} {lat[1][1]:.10f} {lat[1][2]:.10f}
      C {lat[2][0]:.10f} {lat[2][1]:.10f} {lat[2][2]:.10f}
      PERIODIC XYZ
    &END CELL
    &COORD
{coords}
    &END COORD
{kinds}
  &END SUBSYS
  &PRINT
    &FORCES ON
    &END FORCES
    &STRESS_TENSOR ON
    &END STRESS_TENSOR
  &END PRINT
&END FORCE_EVAL
"""


def parse_cp2k_output(text: str, n_atoms: int) -> dict:
    """Energy (eV), forces (eV/A), stress (GPa, ASE sign convention) and SCF status from a CP2K output."""
    energies = re.findall(r"ENERGY\| Total FORCE_EVAL \( QS \) energy.*?:\s+(-?\d+\.\d+(?:[Ee][-+]?\d+)?)", text)
    if not energies:
        raise CP2KError("no total energy in the CP2K output")
    energy = float(energies[-1]) * HARTREE_EV
    forces = []
    block = text.rsplit("ATOMIC FORCES in [a.u.]", 1)
    if len(block) == 2:
        for line in block[1].splitlines():
            parts = line.split()
            if len(parts) >= 6 and parts[0].isdigit() and len(forces) < n_atoms:
                forces.append([float(v) for v in parts[-3:]])
    if len(forces) != n_atoms:
        raise CP2KError(f"found forces for {len(forces)} of {n_atoms} atoms in the CP2K output")
    stress = None
    parts = text.rsplit("STRESS| Analytical stress tensor [GPa]", 1)
    if len(parts) == 2:
        rows = re.findall(r"STRESS\|\s+[xyz]\s+(-?\d\S*)\s+(-?\d\S*)\s+(-?\d\S*)", parts[1])[:3]
        if len(rows) == 3:
            stress = np.array([[float(v) for v in r] for r in rows])
    scf_failed = "SCF run NOT converged" in text
    return {
        "energy": energy,
        "forces": np.array(forces) * HARTREE_EV / BOHR_A,
        # CP2K prints the pressure-like tensor (positive when compressed); ASE's stress has the opposite sign
        "stress_gpa": None if stress is None else -stress,
        "scf_converged": not scf_failed,
    }


def run_cp2k(structure: Structure, settings: CP2KSettings | None = None, work_dir: str | Path = ".") -> dict:
    """Run one CP2K single point in ``work_dir``; returns energy, forces, stress, paths, wall time."""
    settings = settings or CP2KSettings()
    exe = cp2k_executable()
    if exe is None:
        raise CP2KError("CP2K is not installed (no cp2k.psmp on PATH); on Debian: apt-get install -y cp2k")
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    inp = work / "cp2k.inp"
    out = work / "cp2k.out"
    inp.write_text(write_cp2k_input(structure, settings))
    env = dict(os.environ, OMP_NUM_THREADS=str(settings.omp_threads))
    data_dir = next((d for d in DATA_DIRS if Path(d, "BASIS_MOLOPT").exists()), None)
    if data_dir:
        env.setdefault("CP2K_DATA_DIR", data_dir)
    cmd = [exe, "-i", inp.name, "-o", out.name]
    if settings.nproc > 1 and shutil.which("mpirun"):
        cmd = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", str(settings.nproc), *cmd]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=settings.timeout_s,
                              check=False)  # fmt: skip
    except subprocess.TimeoutExpired:
        raise CP2KError(f"CP2K did not finish within {settings.timeout_s} s; see {out}") from None
    text = out.read_text(errors="replace") if out.exists() else ""
    if proc.returncode != 0 and "ENERGY| Total FORCE_EVAL" not in text:
        tail = (proc.stderr or text).strip().splitlines()[-3:]
        raise CP2KError(f"CP2K failed (exit {proc.returncode}): {' | '.join(tail)}; see {out}")
    result = parse_cp2k_output(text, len(structure))
    result.update({"wall_time_s": time.perf_counter() - t0, "input_file": str(inp), "output_file": str(out),
                   "kpoints": list(kpoint_grid(structure, settings.kpoint_length))})  # fmt: skip
    return result
