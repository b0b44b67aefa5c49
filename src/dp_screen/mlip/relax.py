"""Relaxation and single points with a MACE model: batched on TorchSim, and one at a time through ASE.

The batched engine runs FIRE with a Frechet cell filter on many structures at once (TorchSim's in-flight batching:
converged or failed structures leave the batch and waiting ones take their place). By default each structure keeps
the space group it starts in (TorchSim's ``FixSymmetry`` constraint: forces and stress symmetrised with the
structure's own operations, found by moyopy), so the energy of a tilted variant is the energy of that tilt system's
phase; ``fix_symmetry=False`` relaxes freely. Symmetry can still rise (a tilt that relaxes to zero gives the
untilted cell); the phase identification records where each structure ended.

Convergence is checked here, per structure, in the units users set: max atomic force below ``fmax`` (eV/A) and,
with the cell relaxed, max |stress component| below ``max_stress_gpa`` (GPa). A structure that blows up
(non-finite energy or forces, volume change beyond a bound, atoms closer than a bound) leaves the batch flagged as
failed with its reason; the others go on. The ASE path (FIRE(FrechetCellFilter(atoms)), what atomate2's
ForceFieldRelaxMaker does, with ASE's FixSymmetry) relaxes one structure at a time, for comparison and debugging.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from monty.json import MSONable
from dp_screen.errors import InputError

if TYPE_CHECKING:
    from pymatgen.core import Structure

    from dp_screen.mlip.models import LoadedModel

EV_A3_TO_GPA = 160.21766208


@dataclass
class RelaxSettings(MSONable):
    """Settings of a relaxation.

    Parameters
    ----------
    fmax
        Convergence: max atomic force (eV/A).
    max_stress_gpa
        Convergence of the cell: max |stress component| (GPa). The default, 0.2 GPa, leaves a residual strain
        energy sigma^2 V / (2 B) below 0.2 meV/atom even for a soft iodide (B = 20 GPa, 30 A^3/atom), so it resolves
        1 meV/atom phase differences; it is what FIRE reaches in the same steps as ``fmax`` = 0.05 eV/A.
    fix_symmetry
        Hold each structure's starting space group (default); False: relax freely.
    symprec
        Tolerance (A) for finding the symmetry to hold.
    max_steps
        Steps after which a structure is returned unconverged.
    check_every
        Steps between convergence / blow-up checks (and batch swaps).
    max_volume_change
        Fractional volume change that counts as a blow-up.
    min_distance
        Interatomic distance (A) below which a structure counts as collapsed.
    max_atoms_per_batch
        Batch size limit in atoms; None: TorchSim estimates it from GPU memory (CPU: 2000).
    relax_cell
        Relax the cell with the Frechet filter (False: positions only).
    """

    fmax: float = 0.05
    max_stress_gpa: float = 0.2
    fix_symmetry: bool = True
    symprec: float = 1e-2
    max_steps: int = 500
    check_every: int = 5
    max_volume_change: float = 0.5
    min_distance: float = 0.6
    max_atoms_per_batch: int | None = None
    relax_cell: bool = True

    def __post_init__(self) -> None:
        if self.fmax <= 0:
            raise InputError(f"fmax {self.fmax} must be > 0 eV/A")
        if self.max_stress_gpa <= 0:
            raise InputError(f"max_stress_gpa {self.max_stress_gpa} must be > 0 GPa")
        if self.symprec <= 0:
            raise InputError(f"symprec {self.symprec} must be > 0 A")
        if self.max_steps < 1 or self.check_every < 1:
            raise InputError(f"max_steps {self.max_steps} and check_every {self.check_every} must be >= 1")

    def settings_dict(self) -> dict:
        """Settings that change results (for the settings hash)."""
        return {"fmax": self.fmax, "max_stress_gpa": self.max_stress_gpa if self.relax_cell else None,
                "fix_symmetry": self.fix_symmetry, "symprec": self.symprec if self.fix_symmetry else None,
                "max_steps": self.max_steps, "max_volume_change": self.max_volume_change,
                "min_distance": self.min_distance, "relax_cell": self.relax_cell, "optimizer": "FIRE",
                "cell_filter": "frechet" if self.relax_cell else None}  # fmt: skip

    def is_converged(self, max_force: float, max_stress_gpa: float) -> bool:
        """Both criteria met (the stress one only when the cell is relaxed)."""
        return max_force < self.fmax and (not self.relax_cell or max_stress_gpa < self.max_stress_gpa)


@dataclass
class RelaxResult:
    """Outcome of one relaxation."""

    structure: Structure
    energy: float
    energy_per_atom: float
    max_force: float
    max_stress_gpa: float
    stress_gpa: list[list[float]]
    n_steps: int
    converged: bool
    failed: bool = False
    reason: str | None = None
    wall_time_s: float = 0.0
    initial_volume: float = 0.0
    extra: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """JSON-friendly summary (no structure)."""
        return {
            "energy": self.energy, "energy_per_atom": self.energy_per_atom, "max_force": self.max_force,
            "max_stress_gpa": self.max_stress_gpa, "stress_gpa": self.stress_gpa, "n_steps": self.n_steps,
            "converged": self.converged, "failed": self.failed, "reason": self.reason,
            "wall_time_s": round(self.wall_time_s, 4), "volume": self.structure.volume,
            "volume_change": self.structure.volume / self.initial_volume - 1 if self.initial_volume else None,
            "n_atoms": len(self.structure),
        }  # fmt: skip


def uncovered_elements(structure: Structure, model: LoadedModel) -> list[str]:
    """Elements of a structure that the model has no embedding for."""
    z_model = getattr(model.model, "atomic_numbers", None)
    if z_model is None:
        return []
    known = {int(z) for z in z_model.tolist()}
    return sorted({site.specie.symbol for site in structure if site.specie.Z not in known})


def _uncovered_result(structure: Structure, missing: list[str]) -> RelaxResult:
    nan = float("nan")
    return RelaxResult(structure=structure, energy=nan, energy_per_atom=nan, max_force=nan, max_stress_gpa=nan,
                       stress_gpa=[[nan] * 3] * 3, n_steps=0, converged=False, failed=True,
                       reason=f"the model does not cover element(s) {', '.join(missing)}",
                       initial_volume=structure.volume)  # fmt: skip


def _torchsim_model(loaded: LoadedModel, compute_stress: bool = True):
    import torch
    from torch_sim.models.mace import MaceModel

    dtype = torch.float64 if loaded.dtype == "float64" else torch.float32
    return MaceModel(model=loaded.model, device=torch.device(loaded.device), dtype=dtype, compute_forces=True,
                     compute_stress=compute_stress)  # fmt: skip


def _min_distance(positions: np.ndarray, cell: np.ndarray) -> float:
    """Shortest interatomic distance in a periodic cell (27 images; the cells here are >= 5 A)."""
    frac = positions @ np.linalg.inv(cell)
    diff = frac[:, None, :] - frac[None, :, :]
    diff -= np.round(diff)
    best = np.inf
    for shift in np.array(np.meshgrid([-1, 0, 1], [-1, 0, 1], [-1, 0, 1])).T.reshape(-1, 3):
        d = np.linalg.norm((diff + shift) @ cell, axis=2)
        if not shift.any():
            d[np.diag_indices_from(d)] = np.inf
        best = min(best, float(d.min()))
    return best


def _blow_up(energy: float, forces: np.ndarray, positions: np.ndarray, cell: np.ndarray, v0: float,
             settings: RelaxSettings) -> str | None:  # fmt: skip
    if not math.isfinite(energy) or not np.isfinite(forces).all() or not np.isfinite(positions).all():
        return "non-finite energy, forces or positions"
    volume = abs(float(np.linalg.det(cell)))
    if not math.isfinite(volume) or abs(volume / v0 - 1) > settings.max_volume_change:
        return f"volume changed by {100 * (volume / v0 - 1):+.0f}% (bound {100 * settings.max_volume_change:.0f}%)"
    d = _min_distance(positions, cell)
    if d < settings.min_distance:
        return f"atoms too close: {d:.2f} A (bound {settings.min_distance} A)"
    return None


def relax_structures(
    structures: list[Structure],
    model: LoadedModel,
    settings: RelaxSettings | None = None,
    progress=None,
) -> list[RelaxResult]:
    """Relax many structures at once on the model's device (TorchSim FIRE + Frechet cell filter, in-flight batching).

    ``progress(n)`` is called as structures finish. Results come back in input order.
    """
    import torch
    import torch_sim as ts

    settings = settings or RelaxSettings()
    missing = [uncovered_elements(s, model) for s in structures]
    if any(missing):  # relax the covered ones; the others fail with the reason
        keep = [i for i, m in enumerate(missing) if not m]
        done = iter(relax_structures([structures[i] for i in keep], model, settings, progress) if keep else [])
        return [next(done) if not m else _uncovered_result(s, m) for s, m in zip(structures, missing, strict=True)]
    if not structures:
        return []
    ts_model = _torchsim_model(model)
    v0 = np.array([s.volume for s in structures])
    state = ts.initialize_state(list(structures), ts_model.device, ts_model.dtype)
    if settings.fix_symmetry:
        state.constraints = [symmetry_constraint(state, settings.symprec)]
    init_fn, step_fn = ts.OPTIM_REGISTRY[ts.Optimizer.fire]
    init_kwargs = {"cell_filter": ts.CellFilter.frechet} if settings.relax_cell else {}
    max_scaler = settings.max_atoms_per_batch or (None if model.device.startswith("cuda") else 2000)
    batcher = ts.InFlightAutoBatcher(
        model=ts_model, memory_scales_with="n_atoms", max_memory_scaler=max_scaler,
        max_iterations=settings.max_steps // settings.check_every + 2,
    )  # fmt: skip
    singles = state.split()
    opt_states = [init_fn(s, ts_model, **init_kwargs) for s in singles]  # one model call each, to seed FIRE
    batcher.load_states(opt_states)
    n = len(structures)
    steps = np.zeros(n, dtype=int)
    wall = np.zeros(n)
    reasons: dict[int, str] = {}
    completed = []
    batch, _ = batcher.next_batch(None, None)
    while batch is not None:
        # check every structure of the batch before stepping it: converged, out of steps, or blown up
        idx = list(batcher.current_idx)
        owner = batch.system_idx.detach().cpu().numpy()
        flags = _converged_flags(batch, settings).detach().cpu().numpy().copy()
        energies = batch.energy.detach().cpu().numpy()
        forces = batch.forces.detach().cpu().numpy()
        positions = batch.positions.detach().cpu().numpy()
        cells = batch.row_vector_cell.detach().cpu().numpy()
        for k, og in enumerate(idx):
            mask = owner == k
            reason = _blow_up(float(energies[k]), forces[mask], positions[mask], cells[k], v0[og], settings)
            if reason:
                reasons[og] = reason
                flags[k] = True
            elif steps[og] >= settings.max_steps:
                flags[k] = True
        batch, done = batcher.next_batch(batch, torch.as_tensor(flags, device=batch.device))
        completed.extend(done)
        if progress and done:
            progress(len(done))
        if batch is None:
            break
        idx = list(batcher.current_idx)
        t0 = time.perf_counter()
        for _ in range(settings.check_every):
            batch = step_fn(state=batch, model=ts_model)
        steps[idx] += settings.check_every
        n_atoms = np.bincount(batch.system_idx.detach().cpu().numpy(), minlength=len(idx))
        wall[idx] += (time.perf_counter() - t0) * n_atoms / n_atoms.sum()
    finals = batcher.restore_original_order(completed)
    results = []
    for og, st in enumerate(finals):
        structure = ts.io.state_to_structures(st)[0]
        structure = _with_species(structure, structures[og])
        forces = st.forces.detach().cpu().numpy()
        energy = float(st.energy.detach().cpu().numpy().reshape(-1)[0])
        max_force = float(np.linalg.norm(forces, axis=1).max()) if np.isfinite(forces).all() else float("nan")
        stress = st.stress.detach().cpu().numpy().reshape(3, 3) * EV_A3_TO_GPA if st.stress is not None else np.zeros((3, 3))
        max_stress = float(np.abs(stress).max())
        failed = og in reasons
        results.append(RelaxResult(
            structure=structure, energy=energy, energy_per_atom=energy / len(structure), max_force=max_force,
            max_stress_gpa=max_stress, stress_gpa=stress.tolist(), n_steps=int(steps[og]),
            converged=(not failed) and settings.is_converged(max_force, max_stress), failed=failed,
            reason=reasons.get(og), wall_time_s=float(wall[og]), initial_volume=float(v0[og]),
        ))  # fmt: skip
    return results


def symmetry_constraint(state, symprec: float):
    """TorchSim's FixSymmetry for every system of a state (each with its own operations, found by moyopy); the
    positions and cells are first refined to the exact symmetry found, as ASE's FixSymmetry does."""
    from torch_sim.constraints import FixSymmetry

    return FixSymmetry.from_state(state, symprec=symprec)


def _converged_flags(batch, settings: RelaxSettings):
    """Per system of a batch: max force below fmax and (cell relaxed) max |stress| below max_stress_gpa."""
    import torch_sim as ts

    ok = ts.system_wise_max_force(batch) < settings.fmax
    if settings.relax_cell:
        stress = batch.stress.reshape(-1, 3, 3) * EV_A3_TO_GPA
        ok &= stress.abs().amax(dim=(1, 2)) < settings.max_stress_gpa
    return ok


def _with_species(relaxed: Structure, original: Structure) -> Structure:
    """Relaxed geometry with the original species and site properties (oxidation states, site roles)."""
    from pymatgen.core import Structure

    return Structure(relaxed.lattice, original.species, relaxed.frac_coords, site_properties=original.site_properties)


def single_points(structures: list[Structure], model: LoadedModel) -> list[dict]:
    """Energy (eV), forces (eV/A) and stress (GPa) of each structure, batched with TorchSim."""
    import torch_sim as ts

    ts_model = _torchsim_model(model)
    out = []
    chunk = 64
    for start in range(0, len(structures), chunk):
        state = ts.initialize_state(list(structures[start : start + chunk]), ts_model.device, ts_model.dtype)
        res = ts_model(state)
        owner = state.system_idx.cpu().numpy()
        energy = res["energy"].detach().cpu().numpy()
        forces = res["forces"].detach().cpu().numpy()
        stress = res["stress"].detach().cpu().numpy() * EV_A3_TO_GPA
        for k in range(state.n_systems):
            out.append({"energy": float(energy[k]), "forces": forces[owner == k], "stress_gpa": stress[k]})
    return out


def _ase_calculator(model: LoadedModel):
    from mace.calculators import MACECalculator

    return MACECalculator(models=model.model, device=model.device, default_dtype=model.dtype)


def relax_structures_ase(structures: list[Structure], model: LoadedModel, settings: RelaxSettings | None = None) -> list[RelaxResult]:
    """One structure at a time: ASE FIRE on FrechetCellFilter(atoms) with the MACE calculator (and ASE's FixSymmetry
    unless ``settings.fix_symmetry`` is False)."""
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE
    from pymatgen.io.ase import AseAtomsAdaptor

    settings = settings or RelaxSettings()
    calc = _ase_calculator(model)
    results = []
    for structure in structures:
        missing = uncovered_elements(structure, model)
        if missing:
            results.append(_uncovered_result(structure, missing))
            continue
        t0 = time.perf_counter()
        atoms = AseAtomsAdaptor.get_atoms(structure)
        if settings.fix_symmetry:
            from ase.constraints import FixSymmetry

            atoms.set_constraint(FixSymmetry(atoms, symprec=settings.symprec))
        atoms.calc = calc
        target = FrechetCellFilter(atoms) if settings.relax_cell else atoms
        opt = FIRE(target, logfile=None)
        reason = None
        try:
            for _ in opt.irun(fmax=0.0, steps=settings.max_steps):  # our own criteria, in eV/A and GPa
                f_now = float(np.linalg.norm(atoms.get_forces(), axis=1).max())
                s_now = float(np.abs(atoms.get_stress(voigt=False)).max()) * EV_A3_TO_GPA
                if settings.is_converged(f_now, s_now):
                    break
        except Exception as exc:  # noqa: BLE001 - a blown-up structure can raise anything inside ASE
            reason = f"{type(exc).__name__}: {exc}"
        energy = float(atoms.get_potential_energy())
        forces = atoms.get_forces()
        max_force = float(np.linalg.norm(forces, axis=1).max())
        stress = atoms.get_stress(voigt=False) * EV_A3_TO_GPA
        max_stress = float(np.abs(stress).max())
        reason = reason or _blow_up(energy, forces, atoms.positions, np.array(atoms.cell), structure.volume, settings)
        atoms.set_constraint()
        relaxed = AseAtomsAdaptor.get_structure(atoms)
        results.append(RelaxResult(
            structure=_with_species(relaxed, structure), energy=energy, energy_per_atom=energy / len(atoms),
            max_force=max_force, max_stress_gpa=max_stress, stress_gpa=stress.tolist(), n_steps=int(opt.nsteps),
            converged=reason is None and settings.is_converged(max_force, max_stress), failed=reason is not None,
            reason=reason, wall_time_s=time.perf_counter() - t0, initial_volume=structure.volume,
        ))  # fmt: skip
    return results
