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
        Steps between convergence / blow-up checks (and batch swaps); it changes where a relaxation stops, so it
        is part of the settings hash.
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
        return {
            "fmax": self.fmax,
            "max_stress_gpa": self.max_stress_gpa if self.relax_cell else None,
            "fix_symmetry": self.fix_symmetry,
            "symprec": self.symprec if self.fix_symmetry else None,
            "max_steps": self.max_steps,
            "check_every": self.check_every,
            "max_volume_change": self.max_volume_change,
            "min_distance": self.min_distance,
            "relax_cell": self.relax_cell,
            "optimizer": "FIRE",
            "cell_filter": "frechet" if self.relax_cell else None,
        }

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
    forces: np.ndarray | None = None  # final forces (eV/A, N x 3) where the engine returns them

    def summary(self) -> dict:
        """JSON-friendly summary (no structure)."""
        return {
            "energy": self.energy,
            "energy_per_atom": self.energy_per_atom,
            "max_force": self.max_force,
            "max_stress_gpa": self.max_stress_gpa,
            "stress_gpa": self.stress_gpa,
            "n_steps": self.n_steps,
            "converged": self.converged,
            "failed": self.failed,
            "reason": self.reason,
            "wall_time_s": round(self.wall_time_s, 4),
            "volume": self.structure.volume,
            "volume_change": self.structure.volume / self.initial_volume - 1 if self.initial_volume else None,
            "n_atoms": len(self.structure),
        }


def uncovered_elements(structure: Structure, model: LoadedModel) -> list[str]:
    """Elements of a structure that the model has no embedding for."""
    z_model = getattr(model.model, "atomic_numbers", None)
    if z_model is None:
        return []
    known = {int(z) for z in z_model.tolist()}
    return sorted({site.specie.symbol for site in structure if site.specie.Z not in known})


def _uncovered_result(structure: Structure, missing: list[str]) -> RelaxResult:
    nan = float("nan")
    return RelaxResult(
        structure=structure,
        energy=nan,
        energy_per_atom=nan,
        max_force=nan,
        max_stress_gpa=nan,
        stress_gpa=[[nan] * 3] * 3,
        n_steps=0,
        converged=False,
        failed=True,
        reason=f"the model does not cover element(s) {', '.join(missing)}",
        initial_volume=structure.volume,
    )


def _torchsim_model(loaded: LoadedModel, compute_stress: bool = True):
    import torch
    from torch_sim.models.mace import MaceModel

    dtype = torch.float64 if loaded.dtype == "float64" else torch.float32
    return MaceModel(
        model=loaded.model,
        device=torch.device(loaded.device),
        dtype=dtype,
        compute_forces=True,
        compute_stress=compute_stress,
    )


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


def _blow_up(
    energy: float, forces: np.ndarray, positions: np.ndarray, cell: np.ndarray, v0: float, settings: RelaxSettings
) -> str | None:
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
    on_result=None,
    frames_every: int | None = None,
) -> list[RelaxResult]:
    """Relax many structures at once on the model's device (TorchSim FIRE + Frechet cell filter, in-flight batching).

    The structures stream through one in-flight batcher whatever their number: the device batch is sized by memory
    (TorchSim's estimate on a GPU; ``settings.max_atoms_per_batch`` overrides it; 2,000 atoms on a CPU), FIRE is
    initialised in batches of that size as structures are pulled in, and the convergence and blow-up checks are
    tensor operations on the device with one small host transfer per check. ``on_result(i, result)`` is called as
    each structure finishes (``i``: its input index), so callers can store results as they come; ``progress(n)``
    as ``n`` more finish. Results also come back in input order. ``frames_every`` N: every result's
    ``extra["frames"]`` holds the structures of its path every N steps (rounded up to ``check_every``), the
    candidates of active learning.
    """
    settings = settings or RelaxSettings()
    missing = [uncovered_elements(s, model) for s in structures]
    if any(missing):  # relax the covered ones; the others fail with the reason
        return _relax_covered(structures, missing, model, settings, progress, on_result, frames_every)
    if not structures:
        return []
    import torch

    ts_model = _torchsim_model(model)
    batcher, step_fn = _batcher(structures, ts_model, settings)
    run = _Run(structures, settings, frames_every, on_result, progress)
    v0_all = torch.tensor([s.volume for s in structures], device=ts_model.device, dtype=ts_model.dtype)
    batch, _ = batcher.next_batch(None, None)
    while batch is not None:
        # check every structure of the batch before stepping it: converged, out of steps, or blown up
        flags = run.check(batch, list(batcher.current_idx), v0_all)
        batch, finished = batcher.next_batch(batch, flags)
        if finished:
            run.finish(batcher.completed_idx_og_order[-len(finished) :], finished)
        if batch is None:
            break
        batch = run.step(batch, list(batcher.current_idx), step_fn, ts_model)
    return [run.results[i] for i in range(len(structures))]


def _relax_covered(structures, missing, model, settings, progress, on_result, frames_every) -> list[RelaxResult]:
    """Relax the structures whose elements the model covers; the others fail with the elements it lacks (reported
    first; counted as finished after the others, whose results come as they end)."""
    keep = [i for i, m in enumerate(missing) if not m]
    sub_on_result = None if on_result is None else (lambda k, r: on_result(keep[k], r))
    for i, m in enumerate(missing):
        if m and on_result is not None:
            on_result(i, _uncovered_result(structures[i], m))
    relaxed = relax_structures([structures[i] for i in keep], model, settings, progress, sub_on_result, frames_every)
    done = iter(relaxed if keep else [])
    if progress:
        progress(len(structures) - len(keep))
    return [next(done) if not m else _uncovered_result(s, m) for s, m in zip(structures, missing, strict=True)]


def _batcher(structures: list[Structure], ts_model, settings: RelaxSettings):
    """TorchSim's in-flight batcher loaded with the FIRE states of the structures, and FIRE's step function.

    The device batch is sized by memory (TorchSim's estimate on a GPU; ``settings.max_atoms_per_batch`` overrides
    it; 2,000 atoms on a CPU); FIRE is seeded that many atoms at a time (one model call per group) as the batcher
    pulls the states in."""
    import torch_sim as ts

    device = ts_model.device
    init_fn, step_fn = ts.OPTIM_REGISTRY[ts.Optimizer.fire]
    init_kwargs = {"cell_filter": ts.CellFilter.frechet} if settings.relax_cell else {}
    max_scaler = settings.max_atoms_per_batch or (None if str(device).startswith("cuda") else 2000)
    batcher = ts.InFlightAutoBatcher(
        model=ts_model,
        memory_scales_with="n_atoms",
        max_memory_scaler=max_scaler,
        max_iterations=settings.max_steps // settings.check_every + 2,
    )
    init_atoms = settings.max_atoms_per_batch or 2000

    def initialised():
        group: list[Structure] = []
        for k, s in enumerate(structures):
            group.append(s)
            if sum(len(g) for g in group) >= init_atoms or k == len(structures) - 1:
                state = ts.initialize_state(group, device, ts_model.dtype)
                if settings.fix_symmetry:
                    state.constraints = [symmetry_constraint(state, settings.symprec)]
                yield from init_fn(state, ts_model, **init_kwargs).split()
                group = []

    batcher.load_states(initialised())
    return batcher, step_fn


class _Run:
    """The book-keeping of one batched relaxation: steps, wall time and failure reason per structure, the results
    as they finish (handed to ``on_result`` and counted by ``progress``) and, with ``frames_every``, the frames."""

    def __init__(self, structures, settings: RelaxSettings, frames_every, on_result, progress) -> None:
        n = len(structures)
        self.structures, self.settings, self.frames_every = structures, settings, frames_every
        self.on_result, self.progress = on_result, progress
        self.steps = np.zeros(n, dtype=int)
        self.wall = np.zeros(n)
        self.reasons: dict[int, str] = {}
        self.results: dict[int, RelaxResult] = {}
        self.frames: dict[int, list] = {i: [] for i in range(n)} if frames_every else {}

    def check(self, batch, idx: list[int], v0_all):
        """The device's verdict on each structure of the batch (one host transfer): done when converged, blown up
        (with its reason) or out of steps; returned as the batcher's flags."""
        import torch

        codes, done_now = device_checks(batch, v0_all[idx], self.settings)
        for k, og in enumerate(idx):
            if codes[k, 0] > 0:
                self.reasons[og] = _reason(codes[k], self.settings)
            elif self.steps[og] >= self.settings.max_steps:
                done_now[k] = True
        return torch.as_tensor(done_now | (codes[:, 0] > 0), device=batch.device)

    def finish(self, order: list[int], finished) -> None:
        for og, st in zip(order, finished, strict=True):
            result = _result(st, self.structures[og], og, self.steps, self.wall, self.reasons, self.settings)
            if self.frames_every:
                result.extra["frames"] = self.frames.pop(og)
            self.results[og] = result
            if self.on_result is not None:
                self.on_result(og, result)
        if self.progress:
            self.progress(len(finished))

    def step(self, batch, idx: list[int], step_fn, ts_model):
        """``check_every`` FIRE steps of the batch; the wall time shared out by atoms; frames where due."""
        import torch_sim as ts

        t0 = time.perf_counter()
        for _ in range(self.settings.check_every):
            batch = step_fn(state=batch, model=ts_model)
        self.steps[idx] += self.settings.check_every
        if self.frames_every:
            due = [k for k, og in enumerate(idx) if self.steps[og] % self.frames_every < self.settings.check_every]
            if due:
                snap = ts.io.state_to_structures(batch)
                for k in due:
                    self.frames[idx[k]].append(_with_species(snap[k], self.structures[idx[k]]))
        n_atoms = batch.n_atoms_per_system.detach().cpu().numpy()
        self.wall[idx] += (time.perf_counter() - t0) * n_atoms / n_atoms.sum()
        return batch


def _result(st, original: Structure, og: int, steps, wall, reasons, settings: RelaxSettings) -> RelaxResult:
    import torch_sim as ts

    structure = _with_species(ts.io.state_to_structures(st)[0], original)
    forces = st.forces.detach().cpu().numpy()
    energy = float(st.energy.detach().cpu().numpy().reshape(-1)[0])
    max_force = float(np.linalg.norm(forces, axis=1).max()) if np.isfinite(forces).all() else float("nan")
    stress = (
        st.stress.detach().cpu().numpy().reshape(3, 3) * EV_A3_TO_GPA if st.stress is not None else np.zeros((3, 3))
    )
    max_stress = float(np.abs(stress).max())
    failed = og in reasons
    return RelaxResult(
        structure=structure,
        energy=energy,
        energy_per_atom=energy / len(structure),
        max_force=max_force,
        max_stress_gpa=max_stress,
        stress_gpa=stress.tolist(),
        n_steps=int(steps[og]),
        converged=(not failed) and settings.is_converged(max_force, max_stress),
        failed=failed,
        reason=reasons.get(og),
        wall_time_s=float(wall[og]),
        initial_volume=original.volume,
        forces=forces,
    )


#: blow-up codes of :func:`device_checks`
NON_FINITE, VOLUME, TOO_CLOSE = 1, 2, 3


def _reason(row: np.ndarray, settings: RelaxSettings) -> str:
    code, dv, dmin = int(row[0]), float(row[1]), float(row[2])
    if code == NON_FINITE:
        return "non-finite energy, forces or positions"
    if code == VOLUME:
        return f"volume changed by {100 * dv:+.0f}% (bound {100 * settings.max_volume_change:.0f}%)"
    return f"atoms too close: {dmin:.2f} A (bound {settings.min_distance} A)"


def min_distances(batch):
    """Shortest interatomic distance of every system of a batch (27 periodic images), on the batch's device."""
    import torch

    n_sys = batch.n_systems
    counts = batch.n_atoms_per_system
    m = int(counts.max())
    start = torch.cumsum(counts, 0) - counts
    local = torch.arange(batch.positions.shape[0], device=batch.device) - start[batch.system_idx]
    pos = torch.zeros((n_sys, m, 3), device=batch.device, dtype=batch.positions.dtype)
    mask = torch.zeros((n_sys, m), device=batch.device, dtype=torch.bool)
    pos[batch.system_idx, local] = batch.positions
    mask[batch.system_idx, local] = True
    cell = batch.row_vector_cell  # (S, 3, 3), rows are lattice vectors
    frac = torch.linalg.solve(cell.transpose(1, 2), pos.transpose(1, 2)).transpose(1, 2)
    diff = frac[:, :, None, :] - frac[:, None, :, :]
    diff = diff - torch.round(diff)
    shifts = torch.tensor(
        [[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)], device=batch.device, dtype=pos.dtype
    )
    cart = torch.einsum("sabki,sij->sabkj", diff[:, :, :, None, :] + shifts, cell)
    dist = cart.norm(dim=-1)  # (S, m, m, 27)
    pair = mask[:, :, None] & mask[:, None, :]
    eye = torch.eye(m, device=batch.device, dtype=torch.bool)[None, :, :, None]
    zero_shift = (shifts == 0).all(dim=1)[None, None, None, :]
    dist = dist.masked_fill(~pair[..., None] | (eye & zero_shift), float("inf"))
    return dist.flatten(1).min(dim=1).values


def device_checks(batch, v0, settings: RelaxSettings) -> tuple[np.ndarray, np.ndarray]:
    """Blow-up and convergence checks of a whole batch as tensor operations on its device, with one host transfer.

    Returns (codes, converged): ``codes[k]`` = (blow-up code: 0 none, NON_FINITE, VOLUME, TOO_CLOSE; the volume
    change; the shortest distance) for system k, and the convergence flags (``_converged_flags``).
    """
    import torch

    sys_idx = batch.system_idx
    n_sys = batch.n_systems
    atom_ok = torch.isfinite(batch.forces).all(dim=1) & torch.isfinite(batch.positions).all(dim=1)
    bad_atoms = torch.zeros(n_sys, device=batch.device, dtype=batch.positions.dtype)
    bad_atoms = bad_atoms.index_add(0, sys_idx, (~atom_ok).to(bad_atoms.dtype))
    finite = (bad_atoms == 0) & torch.isfinite(batch.energy)
    dv = torch.linalg.det(batch.row_vector_cell).abs() / v0 - 1
    dmin = min_distances(batch)
    code = torch.zeros(n_sys, device=batch.device, dtype=batch.positions.dtype)
    code = torch.where(dmin < settings.min_distance, TOO_CLOSE, code)
    code = torch.where(~torch.isfinite(dv) | (dv.abs() > settings.max_volume_change), VOLUME, code)
    code = torch.where(~finite, NON_FINITE, code)
    conv = _converged_flags(batch, settings).to(code.dtype)
    host = torch.stack([code, dv, dmin, conv], dim=1).detach().cpu().numpy()
    return host[:, :3], host[:, 3] > 0


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


def relax_structures_ase(
    structures: list[Structure], model: LoadedModel | None, settings: RelaxSettings | None = None, calculator=None
) -> list[RelaxResult]:
    """One structure at a time: ASE FIRE on FrechetCellFilter(atoms) with the MACE calculator (and ASE's FixSymmetry
    unless ``settings.fix_symmetry`` is False). ``calculator``: another ASE calculator (e.g. CHGNet's, for a
    teacher's relaxations with the same optimiser and criteria); then ``model`` may be None."""
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE
    from pymatgen.io.ase import AseAtomsAdaptor

    settings = settings or RelaxSettings()
    calc = calculator or _ase_calculator(model)
    results = []
    for structure in structures:
        missing = uncovered_elements(structure, model) if model is not None else []
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
        results.append(
            RelaxResult(
                structure=_with_species(relaxed, structure),
                energy=energy,
                energy_per_atom=energy / len(atoms),
                max_force=max_force,
                max_stress_gpa=max_stress,
                stress_gpa=stress.tolist(),
                n_steps=int(opt.nsteps),
                converged=reason is None and settings.is_converged(max_force, max_stress),
                failed=reason is not None,
                reason=reason,
                wall_time_s=time.perf_counter() - t0,
                initial_volume=structure.volume,
            )
        )
    return results
