"""CP2K single points (PBE, GTH pseudopotentials, MOLOPT basis) for any machine with Debian's cp2k.

Writes a CP2K input with the models' Hamiltonian (:mod:`dp_screen.dft.hamiltonian`: spin-polarised with
high-spin initial moments for open-shell cations, Materials Project +U on oxides and fluorides), runs
``cp2k.psmp`` (under mpirun when more than one process is asked for) and parses the total energy, the forces and
the analytical stress tensor. Before a run, every element is checked to have the basis set and pseudopotential
asked for in the installed CP2K data (:func:`coverage`); an uncovered element fails before CP2K starts. Energies are CP2K's (GTH reference), not comparable in
absolute value with an MLIP trained on other references: compare forces, stresses and energy differences.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from monty.json import MSONable

from dp_screen.errors import DPScreenError

if TYPE_CHECKING:
    from pymatgen.core import Structure

    from dp_screen.dft.hamiltonian import Hamiltonian

HARTREE_EV = 27.211386245988
BOHR_A = 0.529177210903
DATA_DIRS = ("/usr/share/cp2k", "/usr/share/cp2k/data")


class CP2KError(DPScreenError):
    """CP2K is missing, failed, or its output cannot be read."""


# SCF steps over which ``CP2KSettings.ediff_per_atom`` must hold for the energy acceptance
ENERGY_WINDOW = 10
# CP2K's &SCF/&MIXING METHOD keywords
MIXING_METHODS = ("BROYDEN_MIXING", "PULAY_MIXING", "KERKER_MIXING", "DIRECT_P_MIXING", "MULTISECANT_MIXING", "NONE")


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
    mixing, mixing_alpha, mixing_history
        Density mixing of the diagonalisation SCF (CP2K's ``&MIXING``: BROYDEN_MIXING, PULAY_MIXING,
        KERKER_MIXING, ...; ALPHA; NBROYDEN / NPULAY, 0 for CP2K's default). Used with smearing.
    scf_fallbacks
        What to try, in order, when the SCF does not converge: each entry overrides some of the fields above
        (e.g. ``{"mixing": "KERKER_MIXING", "mixing_alpha": 0.05, "max_scf": 250}``), and each attempt restarts
        from the previous attempt's wavefunction. The default is one slow but steady Kerker (linear) mixing
        attempt: Broyden mixing oscillates without converging on some spin-polarised cells (e.g. high-spin Fe3+
        in chlorides, whose minority d states sit near the top of the anion p band), where small-step Kerker
        mixing descends steadily. Every attempt is recorded in the result (``scf_attempts``).
    ediff_per_atom
        Energy acceptance (eV/atom; 0 to turn it off), the criterion of the Materials Project's VASP runs that the
        models learned from (pymatgen's MPRelaxSet / MPStaticSet: EDIFF_PER_ATOM 5e-5 eV, an energy change per SCF
        step): when no attempt meets CP2K's density-matrix criterion (``eps_scf``), the last attempt whose total
        energy changed by less than this per atom on each of its last ``ENERGY_WINDOW`` steps is accepted, and
        the result says so (``scf_converged_by: "energy"``). Orbitally degenerate open-shell ions (Ti3+ d1, V3+ d2)
        and high-spin Fe3+ in tilted chlorides need it: there the density keeps moving among nearly degenerate d
        states while the energy stays put (1e-9 Ha per step on Cs2NaTiCl6 a-a-a-), so the density matrix never
        settles below ``eps_scf``.
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
    mixing: str = "BROYDEN_MIXING"
    mixing_alpha: float = 0.2
    mixing_history: int = 0
    ediff_per_atom: float = 5e-5
    scf_fallbacks: tuple = field(
        default_factory=lambda: ({"mixing": "KERKER_MIXING", "mixing_alpha": 0.05, "max_scf": 250},)
    )
    nproc: int = 2
    omp_threads: int = 1
    timeout_s: float = 3600.0

    def __post_init__(self) -> None:
        for mixing in (
            self.mixing,
            *(e.get("mixing", "NONE") for e in self.scf_fallbacks or () if isinstance(e, dict)),
        ):
            if str(mixing).upper() not in MIXING_METHODS:
                raise CP2KError(f"unknown mixing {mixing!r}; allowed: {', '.join(MIXING_METHODS)}")
        allowed = {f for f in self.__dataclass_fields__ if f != "scf_fallbacks"}
        fallbacks = []
        for entry in self.scf_fallbacks or ():
            unknown = sorted(set(entry) - allowed) if isinstance(entry, dict) else ["(not a dict)"]
            if unknown:
                raise CP2KError(
                    f"scf_fallbacks entry {entry!r}: unknown {', '.join(unknown)}; each entry is a dict of "
                    f"CP2KSettings fields: {', '.join(sorted(allowed))}"
                )
            fallbacks.append(dict(entry))
        self.scf_fallbacks = tuple(fallbacks)

    def settings_dict(self) -> dict:
        """Settings for documents."""
        out = asdict(self)
        out["scf_fallbacks"] = [dict(e) for e in self.scf_fallbacks]
        return out

    def attempts(self) -> list[CP2KSettings]:
        """The settings of the first attempt, then of each fallback (the fallbacks' own ``scf_fallbacks`` empty)."""
        first = replace(self, scf_fallbacks=())
        return [first] + [replace(first, **entry) for entry in self.scf_fallbacks]


def cp2k_executable() -> str | None:
    """Path of cp2k.psmp (or cp2k), None when CP2K is not installed."""
    return shutil.which("cp2k.psmp") or shutil.which("cp2k")


BASIS_FILES = ("BASIS_MOLOPT", "BASIS_MOLOPT_UCL", "BASIS_MOLOPT_LnPP1")
POTENTIAL_FILES = ("GTH_POTENTIALS", "LnPP1_POTENTIALS")


def data_dir() -> Path | None:
    """CP2K's data folder (CP2K_DATA_DIR, or Debian's /usr/share/cp2k), None when there is none."""
    for d in (os.environ.get("CP2K_DATA_DIR"), *DATA_DIRS):
        if d and Path(d, "BASIS_MOLOPT").exists():
            return Path(d)
    return None


@cache
def _names(path: str) -> dict[str, list[tuple[set[str], str]]]:
    """element -> [(names of an entry, file name)] of a CP2K basis or potential file (header lines 'El NAME...')."""
    out: dict[str, list[tuple[set[str], str]]] = {}
    for line in Path(path).read_text(errors="replace").splitlines():
        parts = line.split()
        if (
            len(parts) >= 2
            and parts[0][:1].isupper()
            and parts[0].isalpha()
            and len(parts[0]) <= 2
            and not parts[1].lstrip("-").replace(".", "").isdigit()
        ):
            out.setdefault(parts[0], []).append((set(parts[1:]), Path(path).name))
    return out


def coverage(elements, settings: CP2KSettings | None = None) -> dict[str, dict]:
    """For each element: whether the installed CP2K data has ``settings.basis`` and ``settings.potential`` for it,
    and the files that hold them ({"basis": file or None, "potential": file or None, "covered": bool})."""
    settings = settings or CP2KSettings()
    root = data_dir()
    out = {}
    for el in sorted(set(elements)):
        found = {"basis": None, "potential": None}
        if root is not None:
            for kind, files, name in (
                ("basis", BASIS_FILES, settings.basis),
                ("potential", POTENTIAL_FILES, settings.potential),
            ):
                for f in files:
                    if (root / f).exists() and any(name in names for names, _ in _names(str(root / f)).get(el, [])):
                        found[kind] = f
                        break
        out[el] = {**found, "covered": found["basis"] is not None and found["potential"] is not None}
    return out


def check_coverage(structure: Structure, settings: CP2KSettings) -> dict[str, dict]:
    """:func:`coverage` of a structure's elements; CP2KError naming the uncovered ones (before anything runs)."""
    cov = coverage({site.specie.symbol for site in structure}, settings)
    missing = [el for el, c in cov.items() if not c["covered"]]
    if missing:
        what = "; ".join(
            f"{el}: {'no ' + settings.basis if not cov[el]['basis'] else ''}"
            f"{' and ' if not cov[el]['basis'] and not cov[el]['potential'] else ''}"
            f"{'no ' + settings.potential if not cov[el]['potential'] else ''}"
            for el in missing
        )
        raise CP2KError(
            f"the installed CP2K data does not cover element(s) {', '.join(missing)} ({what}); see "
            f"'dp-screen dft check', or choose another basis / potential"
        )
    return cov


def gamma_supercell(structure: Structure, grid: tuple[int, int, int]) -> tuple[Structure, list[int]]:
    """The supercell whose Gamma point samples the Monkhorst-Pack ``grid`` of ``structure`` (for Gamma-only
    methods), and for each original atom the index of its image at the same position (its force is the original
    atom's; the supercell's energy divided by the number of cells is the original cell's)."""
    supercell = structure * grid
    home = [int(np.argmin(np.linalg.norm(supercell.cart_coords - xyz, axis=1))) for xyz in structure.cart_coords]
    return supercell, home


def kpoint_grid(structure: Structure, length: float) -> tuple[int, int, int]:
    """Monkhorst-Pack grid n_i = ceil(length / a_i) (``length`` in Angstrom; <= 0: Gamma only)."""
    if length <= 0:
        return (1, 1, 1)
    return tuple(max(1, math.ceil(length / a - 1e-9)) for a in structure.lattice.abc)  # type: ignore[return-value]


def _structure_of(item) -> Structure:
    """The pymatgen structure of a Structure or a PerovskiteCell (its ``structure``)."""
    from dp_screen.cell import PerovskiteCell

    return item.structure if isinstance(item, PerovskiteCell) else item


# The single point's input; write_cp2k_input fills the fields (str.format)
CP2K_INPUT = """&GLOBAL
  PROJECT {project}
  RUN_TYPE ENERGY_FORCE
  PRINT_LEVEL MEDIUM
&END GLOBAL
&FORCE_EVAL
  METHOD QS
  STRESS_TENSOR ANALYTICAL
  &DFT
{files_text}
{restart}{spin}{plus_u}    &MGRID
      CUTOFF {settings.cutoff}
      REL_CUTOFF {settings.rel_cutoff}
    &END MGRID
    &QS
      EPS_DEFAULT 1.0E-10
    &END QS
{kpoints}    &SCF
      SCF_GUESS {guess}
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


def write_cp2k_input(
    structure: Structure,
    settings: CP2KSettings,
    project: str = "dp_screen",
    hamiltonian: Hamiltonian | None = None,
    files: dict[str, dict] | None = None,
    restart_file: str | None = None,
) -> str:
    """The CP2K input text of a PBE single point with forces and stress, with the models' Hamiltonian (spin, moments,
    +U; :func:`dp_screen.dft.hamiltonian.hamiltonian_for` unless given); ``restart_file``: start the SCF from that
    wavefunction file instead of the atomic guess. ``structure`` may be a :class:`~dp_screen.cell.PerovskiteCell`.
    The text is :data:`CP2K_INPUT` filled in."""
    from dp_screen.dft.hamiltonian import hamiltonian_for

    structure = _structure_of(structure)
    ham = hamiltonian or hamiltonian_for(structure)
    files = files or {}
    basis_files = sorted({c["basis"] for c in files.values() if c.get("basis")} | {"BASIS_MOLOPT"})
    potential_files = sorted({c["potential"] for c in files.values() if c.get("potential")} | {"GTH_POTENTIALS"})
    files_text = "\n".join(
        [f"    BASIS_SET_FILE_NAME {f}" for f in basis_files]
        + [f"    POTENTIAL_FILE_NAME {f}" for f in potential_files]
    )
    coords = "\n".join(
        f"      {site.specie.symbol} {x:.10f} {y:.10f} {z:.10f}"
        for site, (x, y, z) in zip(structure, structure.cart_coords, strict=True)
    )
    return CP2K_INPUT.format(
        project=project,
        settings=settings,
        files_text=files_text,
        restart=f"    WFN_RESTART_FILE_NAME {restart_file}\n" if restart_file else "",
        spin=f"    UKS\n    MULTIPLICITY {ham.multiplicity}\n" if ham.spin_polarised else "",
        plus_u="    PLUS_U_METHOD MULLIKEN\n" if ham.u_values else "",
        kpoints=_kpoints_section(kpoint_grid(structure, settings.kpoint_length)),
        guess="RESTART" if restart_file else "ATOMIC",
        smear=_smearing_section(settings),
        lat=structure.lattice.matrix,
        coords=coords,
        kinds="\n".join(_kind_section(el, settings, ham) for el in sorted({site.specie.symbol for site in structure})),
    )


def _kind_section(el: str, settings: CP2KSettings, ham: Hamiltonian) -> str:
    """One element's &KIND: basis, potential, initial moment, +U."""
    extra = ""
    if el in ham.moments:
        extra += f"\n      MAGNETIZATION {ham.moments[el]:g}"
    if el in ham.u_values:
        extra += f"\n      &DFT_PLUS_U\n        L 2\n        U_MINUS_J [eV] {ham.u_values[el]:g}\n      &END DFT_PLUS_U"
    return (
        f"    &KIND {el}\n      BASIS_SET {settings.basis}\n      POTENTIAL {settings.potential}{extra}\n    &END KIND"
    )


def _kpoints_section(grid: tuple[int, int, int]) -> str:
    """The k-point mesh (none at Gamma only). No point-group reduction (CP2K's has been unreliable for forces and
    stress), but k and -k are paired (time reversal, exact for collinear spins): 14 instead of 27 points for 3x3x3."""
    if grid == (1, 1, 1):
        return ""
    return (
        f"    &KPOINTS\n      SCHEME MONKHORST-PACK {grid[0]} {grid[1]} {grid[2]}\n      SYMMETRY OFF\n"
        f"      FULL_GRID OFF\n    &END KPOINTS\n"
    )


def _smearing_section(settings: CP2KSettings) -> str:
    """Fermi-Dirac smearing with added MOs and the density mixing (none when ``smearing_k`` is 0)."""
    if settings.smearing_k <= 0:
        return ""
    history = ""
    if settings.mixing_history > 0 and settings.mixing.upper() in ("BROYDEN_MIXING", "PULAY_MIXING"):
        key = "NBROYDEN" if settings.mixing.upper() == "BROYDEN_MIXING" else "NPULAY"
        history = f"        {key} {settings.mixing_history}\n"
    return (
        f"      ADDED_MOS 40\n      &SMEAR ON\n        METHOD FERMI_DIRAC\n        ELECTRONIC_TEMPERATURE [K] "
        f"{settings.smearing_k}\n      &END SMEAR\n      &MIXING\n        METHOD {settings.mixing.upper()}\n"
        f"        ALPHA {settings.mixing_alpha:g}\n{history}      &END MIXING\n"
    )


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


def scf_steps(text: str) -> int | None:
    """Number of SCF steps of the (last) SCF in a CP2K output, None when it printed none."""
    steps = re.findall(r"SCF run converged in\s+(\d+) steps|Leaving inner SCF loop after reaching\s+(\d+) steps", text)
    if not steps:
        return None
    a, b = steps[-1]
    return int(a or b)


def scf_energy_changes(text: str) -> list[float]:
    """Total-energy change (Ha) of each step of the last SCF in a CP2K output (the step table's last column)."""
    last = text.rsplit("SCF WAVEFUNCTION OPTIMIZATION", 1)[-1]
    rows = re.findall(r"^\s*\d+\s+\S.*?\s-?\d+\.\d{6,}\s+([-+]?\d\.\d+E[-+]\d+)\s*$", last, flags=re.MULTILINE)
    return [float(v) for v in rows]


def energy_converged(text: str, n_atoms: int, ediff_per_atom: float, window: int = ENERGY_WINDOW) -> bool:
    """Whether the last SCF of a CP2K output changed its energy by less than ``ediff_per_atom`` (eV/atom) on each of
    its last ``window`` steps (see ``CP2KSettings.ediff_per_atom``)."""
    changes = scf_energy_changes(text)
    if ediff_per_atom <= 0 or len(changes) < window:
        return False
    return max(abs(c) for c in changes[-window:]) * HARTREE_EV / n_atoms < ediff_per_atom


def _run_once(exe: str, inp: Path, out: Path, settings: CP2KSettings, env: dict, work: Path) -> str:
    """Run CP2K once on ``inp``; the output text (CP2KError when it failed without an energy)."""
    cmd = [exe, "-i", inp.name, "-o", out.name]
    if settings.nproc > 1 and shutil.which("mpirun"):
        cmd = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", str(settings.nproc), *cmd]
    try:
        proc = subprocess.run(
            cmd, cwd=work, env=env, capture_output=True, text=True, timeout=settings.timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        raise CP2KError(f"CP2K did not finish within {settings.timeout_s} s; see {out}") from None
    text = out.read_text(errors="replace") if out.exists() else ""
    if proc.returncode != 0 and "ENERGY| Total FORCE_EVAL" not in text:
        tail = (proc.stderr or text).strip().splitlines()[-3:]
        raise CP2KError(f"CP2K failed (exit {proc.returncode}): {' | '.join(tail)}; see {out}")
    return text


def run_cp2k(structure: Structure, settings: CP2KSettings | None = None, work_dir: str | Path = ".") -> dict:
    """Run one CP2K single point in ``work_dir``; returns energy, forces, stress, paths, wall time, and the SCF
    attempts (``settings.scf_fallbacks`` are tried in turn while the SCF does not converge). ``structure`` may be a
    :class:`~dp_screen.cell.PerovskiteCell` (its oxidation states set the Hamiltonian)."""
    structure = _structure_of(structure)
    settings = settings or CP2KSettings()
    exe = cp2k_executable()
    if exe is None:
        raise CP2KError("CP2K is not installed (no cp2k.psmp on PATH); on Debian: apt-get install -y cp2k")
    if data_dir() is None:
        raise CP2KError(
            "CP2K's data (BASIS_MOLOPT, GTH_POTENTIALS) is not installed; on Debian: apt-get install -y cp2k-data"
        )
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    from dp_screen.dft.hamiltonian import hamiltonian_for

    files = check_coverage(structure, settings)  # an uncovered element fails here, before CP2K starts
    ham = hamiltonian_for(structure)
    grid = kpoint_grid(structure, settings.kpoint_length)
    run_structure, run_settings, images, home = structure, settings, 1, None
    if ham.u_values and grid != (1, 1, 1):
        # CP2K (2023.1) has DFT+U only at the Gamma point ("Method not implemented for k-points")
        run_structure, home = gamma_supercell(structure, grid)
        run_settings = replace(settings, kpoint_length=0.0)
        images = grid[0] * grid[1] * grid[2]
    env = dict(os.environ, OMP_NUM_THREADS=str(settings.omp_threads))
    env.setdefault("CP2K_DATA_DIR", str(data_dir()))
    t0 = time.perf_counter()
    attempts: list[dict] = []
    outputs: list[tuple[Path, Path, str]] = []
    restart_file = None
    for n, attempt in enumerate(run_settings.attempts()):
        stem = "cp2k" if n == 0 else f"cp2k-retry{n}"
        inp, out = work / f"{stem}.inp", work / f"{stem}.out"
        inp.write_text(
            write_cp2k_input(run_structure, attempt, hamiltonian=ham, files=files, restart_file=restart_file)
        )
        text = _run_once(exe, inp, out, attempt, env, work)
        converged = "SCF run NOT converged" not in text
        attempts.append(
            {
                "overrides": {} if n == 0 else run_settings.scf_fallbacks[n - 1],
                "scf_converged": converged,
                "energy_converged": converged or energy_converged(text, len(run_structure), attempt.ediff_per_atom),
                "scf_steps": scf_steps(text),
                "output_file": str(out),
            }
        )
        outputs.append((inp, out, text))
        if converged:
            break
        # the next attempt starts from this one's last wavefunction (k-points: .kp, Gamma: .wfn)
        for suffix in ("kp", "wfn"):
            last = work / f"dp_screen-RESTART.{suffix}"
            if last.exists():
                restart_file = f"attempt{n}-RESTART.{suffix}"
                shutil.copyfile(last, work / restart_file)
                break
    converged_by = "density" if attempts[-1]["scf_converged"] else None
    # no attempt met EPS_SCF: take the last one that met the energy criterion, if any
    by_energy = [n for n, a in enumerate(attempts) if a["energy_converged"]] if converged_by is None else []
    if by_energy:
        inp, out, text = outputs[by_energy[-1]]
        converged_by = "energy"
    result = parse_cp2k_output(text, len(run_structure))
    result["scf_converged"] = converged_by is not None
    result["scf_converged_by"] = converged_by
    if images > 1:
        result["energy"] /= images
        result["forces"] = result["forces"][home]
    result.update(
        {
            "wall_time_s": time.perf_counter() - t0,
            "input_file": str(inp),
            "output_file": str(out),
            "scf_attempts": attempts,
            "scf_steps": sum(a["scf_steps"] or 0 for a in attempts),
            "hamiltonian": {**ham.as_dict(), "gamma_supercell": list(grid) if images > 1 else None},
            "method": ham.label,
            "kpoints": list(grid),
        }
    )
    return result
