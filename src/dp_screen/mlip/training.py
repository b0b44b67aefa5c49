"""Training and fine-tuning MACE with mace's own CLI (``mace_run_train``), and measuring a model's errors.

Labelled structures are written as extended XYZ with the keys mace expects (REF_energy, REF_forces, REF_stress in
eV, eV/A and eV/A^3). :func:`train_mace` runs ``mace_run_train`` from a foundation model (a name or a local file,
``multiheads_finetuning`` on or off) or from scratch, and returns the model file with its train/valid/test errors
measured by dp_screen itself (so they do not depend on mace's log format).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from monty.json import MSONable

from dp_screen.errors import DPScreenError, InputError
from dp_screen.mlip.models import file_sha256, load_model

if TYPE_CHECKING:
    from pymatgen.core import Structure

GPA_TO_EV_A3 = 1 / 160.21766208
ENERGY_REFERENCES = ("absolute", "per_composition")


class TrainingError(DPScreenError):
    """mace_run_train failed."""


@dataclass
class LabelledStructure:
    """A structure with reference energy (eV), forces (eV/A) and stress (GPa, compressive negative as in ASE)."""

    structure: Structure
    energy: float
    forces: np.ndarray
    stress_gpa: np.ndarray
    source: str = "reference"
    meta: dict = field(default_factory=dict)  # e.g. the oracle's cost (wall_time_s) and output file


def write_extxyz(labelled: list[LabelledStructure], path: str | Path) -> Path:
    """Write labelled structures as mace-ready extended XYZ (REF_energy, REF_forces, REF_stress)."""
    from ase.io import write
    from pymatgen.io.ase import AseAtomsAdaptor

    frames = []
    for item in labelled:
        atoms = AseAtomsAdaptor.get_atoms(
            item.structure.remove_oxidation_states() if _has_ox(item.structure) else item.structure
        )
        atoms.info["REF_energy"] = float(item.energy)
        atoms.arrays["REF_forces"] = np.asarray(item.forces, dtype=float)
        stress = np.asarray(item.stress_gpa, dtype=float).reshape(3, 3) * GPA_TO_EV_A3
        atoms.info["REF_stress"] = stress.reshape(-1)
        atoms.info["config_type"] = item.source
        frames.append(atoms)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write(path, frames, format="extxyz")
    return path


def _has_ox(structure: Structure) -> bool:
    return any(getattr(sp, "oxi_state", None) for sp in structure.species)


def read_extxyz(path: str | Path) -> list[LabelledStructure]:
    """Read structures written by :func:`write_extxyz` (or any extxyz with REF_* keys)."""
    from ase.io import read
    from pymatgen.io.ase import AseAtomsAdaptor

    try:
        frames = read(path, index=":", format="extxyz")
    except FileNotFoundError:
        raise InputError(f"training data {str(path)!r} does not exist") from None
    except Exception as exc:  # noqa: BLE001 - ase raises many kinds for a malformed file
        raise InputError(f"training data {str(path)!r} is not readable extended XYZ: {exc}") from None
    out = []
    for i, atoms in enumerate(frames):
        if "REF_energy" not in atoms.info or "REF_forces" not in atoms.arrays:
            raise InputError(f"{path} frame {i}: needs REF_energy (info) and REF_forces (arrays); REF_stress optional")
        stress = np.asarray(atoms.info.get("REF_stress", np.zeros(9)), dtype=float).reshape(3, 3) / GPA_TO_EV_A3
        out.append(
            LabelledStructure(
                AseAtomsAdaptor.get_structure(atoms),
                float(atoms.info["REF_energy"]),
                np.asarray(atoms.arrays["REF_forces"]),
                stress,
                source=str(atoms.info.get("config_type", "reference")),
            )
        )
    return out


@dataclass
class TrainSettings(MSONable):
    """Settings of a MACE training or fine-tuning run (mace_run_train options).

    Parameters
    ----------
    foundation
        Foundation model to fine-tune (a name such as "small" or a local file); None trains from scratch.
    multihead
        Multihead replay fine-tuning (needs the foundation's pretraining data: network) or plain fine-tuning.
    epochs, lr, batch_size
        Optimisation.
    e0s
        Isolated-atom energies: "average" (least squares from the data), "foundation" (the foundation model's),
        "refit" (for DFT labels, whose absolute energies differ from the foundation's training data by an
        element-dependent constant: the labels are moved to the foundation's energy reference by per-element shifts,
        :func:`energy_shifts`, and the foundation's E0s kept; mace_run_train's fine-tuning keeps the foundation's
        E0s whatever ``--E0s`` says, so the shift is applied to the labels), or
        "auto": "foundation" when fine-tuning with ``keep_elements`` (an average would give every element the data
        lack an E0 of zero), else "average".
    keep_elements
        Fine-tuning keeps every element of the foundation model (mace's ``--foundation_model_elements``), so a model
        refined on a few compositions still covers the whole space; False: only the training data's elements.
    device
        "cpu" or "cuda".
    dtype
        "float32" or "float64".
    energy_reference
        "absolute" (the labels as they are) or "per_composition" (fine-tuning only: each composition's labels are
        moved by one energy per atom so that their mean equals the foundation's, :func:`composition_offsets`; the
        loss then sees only energies relative within a composition, which is what phase ranking needs, while each
        composition's absolute level stays the foundation's; forces and stresses are unchanged).
    energy_weight, forces_weight, stress_weight
        Loss weights.
    num_channels, max_l, r_max, num_interactions, correlation
        Architecture when training from scratch (ignored when fine-tuning: the foundation's is kept).
    valid_fraction
        Fraction of the training data held out for validation when no validation file is given.
    seed
        Random seed.
    extra
        Further mace_run_train options, e.g. {"--ema": None, "--ema_decay": "0.99"}.
    """

    foundation: str | None = None
    multihead: bool = False
    epochs: int = 10
    lr: float = 0.01
    batch_size: int = 4
    e0s: str = "auto"
    keep_elements: bool = True
    device: str = "cpu"
    dtype: str = "float64"
    energy_reference: str = "absolute"
    energy_weight: float = 1.0
    forces_weight: float = 10.0
    stress_weight: float = 1.0
    num_channels: int = 32
    max_l: int = 0
    r_max: float = 5.0
    num_interactions: int = 2
    correlation: int = 2
    valid_fraction: float = 0.1
    seed: int = 1
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.e0s not in ("auto", "average", "foundation", "refit") and not self.e0s.startswith("{"):
            raise InputError(
                f"unknown e0s {self.e0s!r}; allowed: auto, average, foundation, refit, or a dict {{Z: eV}}"
            )
        if self.energy_reference not in ENERGY_REFERENCES:
            raise InputError(
                f"unknown energy_reference {self.energy_reference!r}; allowed: {', '.join(ENERGY_REFERENCES)}"
            )
        if self.energy_reference == "per_composition" and not self.foundation:
            raise InputError(
                "energy_reference 'per_composition' needs a foundation model (its energies are the "
                "reference each composition keeps); training from scratch uses 'absolute'"
            )

    def resolved_e0s(self) -> str:
        """The --E0s passed to mace_run_train."""
        if self.e0s != "auto":
            return self.e0s
        return "foundation" if self.foundation and self.keep_elements else "average"

    def settings_dict(self) -> dict:
        """Settings for the model document."""
        return {**asdict(self), "e0s_used": self.resolved_e0s()}


@dataclass
class TrainResult:
    """A trained model file and its errors."""

    model_path: Path
    sha256: str
    name: str
    version: int
    errors: dict
    settings: dict
    command: list[str]


def _foundation_file(foundation: str) -> str:
    if Path(foundation).exists():
        return str(Path(foundation).resolve())
    loaded = load_model(foundation, device="cpu")  # downloads by name where the network allows
    return loaded.path


def train_mace(
    train: list[LabelledStructure] | str | Path,
    settings: TrainSettings,
    work_dir: str | Path,
    name: str = "dp_screen",
    valid: list[LabelledStructure] | str | Path | None = None,
    test: list[LabelledStructure] | str | Path | None = None,
    models_dir: str | Path | None = None,
    log=None,
) -> TrainResult:
    """Run ``mace_run_train``; copy the model to ``models_dir`` as ``{name}-v{N}-{sha[:8]}.model``; measure errors."""
    work = Path(work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    files = _input_files(work, {"train": train, "valid": valid, "test": test})
    e0s = settings.resolved_e0s()
    if e0s in ("foundation", "refit") and not settings.foundation:
        raise InputError(f"e0s {e0s!r} needs a foundation model; training from scratch uses 'average'")
    shifts, offsets = _moved_labels(files, settings, work, e0s)
    cmd = _mace_command(name, work, files, settings, "foundation" if e0s == "refit" else e0s)
    produced = _run_mace(cmd, work, name)
    out_dir = Path(models_dir) if models_dir else work
    out_dir.mkdir(parents=True, exist_ok=True)
    version = 1 + len(list(out_dir.glob(f"{name}-v*.model")))
    sha = file_sha256(produced)
    final = out_dir / f"{name}-v{version}-{sha[:8]}.model"
    shutil.copy2(produced, final)
    errors = {key: model_errors(final, read_extxyz(path), dtype=settings.dtype) for key, path in files.items()}
    recorded = {
        **settings.settings_dict(),
        **({"energy_shifts": {str(z): v for z, v in shifts.items()}} if shifts else {}),
        **({"n_composition_offsets": len(offsets)} if offsets else {}),
    }
    result = TrainResult(final, sha, name, version, errors, recorded, cmd)
    card = {"model": final.name, "sha256": sha, "errors": errors, "settings": result.settings}
    (out_dir / f"{final.stem}.json").write_text(json.dumps(card, indent=2))
    return result


def _input_files(work: Path, data: dict[str, list[LabelledStructure] | str | Path | None]) -> dict[str, Path]:
    """The train / valid / test sets as extxyz files: given paths (which must exist), or written into ``work``."""
    files = {}
    for key, value in data.items():
        if value is None:
            continue
        if isinstance(value, (str, Path)):
            files[key] = Path(value).resolve()
            if not files[key].exists():
                raise InputError(f"{key} data {str(value)!r} does not exist")
        else:
            files[key] = write_extxyz(value, work / f"{key}.xyz")
    return files


def _moved_labels(
    files: dict[str, Path], settings: TrainSettings, work: Path, e0s: str
) -> tuple[dict | None, dict | None]:
    """Move the labels to the energy reference the settings ask for (``files`` is updated to the moved files):
    ``e0s="refit"``: every set to the foundation's per-element reference (the foundation's E0s kept);
    ``energy_reference="per_composition"``: train and valid by per-composition offsets (the test set keeps its
    absolute labels, so its errors stay honest). Returns (shifts, offsets), None where not applied."""
    shifts = offsets = None
    if e0s == "refit":
        shifts = energy_shifts(_foundation_file(settings.foundation), read_extxyz(files["train"]), dtype=settings.dtype)
        (work / "energy_shifts.json").write_text(json.dumps({str(z): v for z, v in shifts.items()}))
        for key in list(files):
            files[key] = write_extxyz(shift_labels(read_extxyz(files[key]), shifts), work / f"{key}_shifted.xyz")
    if settings.energy_reference == "per_composition":
        train = read_extxyz(files["train"])
        offsets = composition_offsets(_foundation_file(settings.foundation), train, dtype=settings.dtype)
        (work / "composition_offsets.json").write_text(json.dumps(offsets, indent=1))
        for key in [k for k in files if k != "test"]:
            files[key] = write_extxyz(offset_labels(read_extxyz(files[key]), offsets), work / f"{key}_relative.xyz")
    return shifts, offsets


def _mace_command(name: str, work: Path, files: dict[str, Path], settings: TrainSettings, e0s: str) -> list[str]:
    """The ``mace_run_train`` command line. The test set is not given to it: dp_screen measures it itself, also
    when it holds elements the model does not cover (mace_run_train fails on those: "np.int64(19) is not in list")."""
    exe = shutil.which("mace_run_train") or str(Path(sys.executable).parent / "mace_run_train")
    flags: dict[str, object] = {
        "--name": name,
        "--work_dir": work,
        "--train_file": files["train"],
        "--energy_key": "REF_energy",
        "--forces_key": "REF_forces",
        "--stress_key": "REF_stress",
        "--compute_stress": "True",
        "--loss": "stress" if settings.stress_weight > 0 else "weighted",
        "--energy_weight": settings.energy_weight,
        "--forces_weight": settings.forces_weight,
        "--stress_weight": settings.stress_weight,
        "--max_num_epochs": settings.epochs,
        "--lr": settings.lr,
        "--batch_size": settings.batch_size,
        "--valid_batch_size": settings.batch_size,
        "--device": settings.device,
        "--default_dtype": settings.dtype,
        "--seed": settings.seed,
        "--E0s": e0s,
        "--save_cpu": None,
        "--eval_interval": 1,
        "--error_table": "PerAtomRMSEstressvirials",
    }
    if "valid" in files:
        flags["--valid_file"] = files["valid"]
    else:
        flags["--valid_fraction"] = settings.valid_fraction
    if settings.foundation:
        flags |= {
            "--foundation_model": _foundation_file(settings.foundation),
            "--multiheads_finetuning": settings.multihead,
        }
        if settings.keep_elements:
            flags["--foundation_model_elements"] = "True"
    else:
        flags |= {
            "--model": "MACE",
            "--num_channels": settings.num_channels,
            "--max_L": settings.max_l,
            "--r_max": settings.r_max,
            "--num_interactions": settings.num_interactions,
            "--correlation": settings.correlation,
        }
    flags |= settings.extra
    return [exe, *(arg for k, v in flags.items() for arg in ([k] if v is None else [k, str(v)]))]


def _run_mace(cmd: list[str], work: Path, name: str) -> Path:
    """Run the command in ``work`` (its log in mace_run_train.log); return the model file it wrote."""
    env = dict(os.environ, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1")
    with open(work / "mace_run_train.log", "w") as logfile:
        proc = subprocess.run(cmd, stdout=logfile, stderr=subprocess.STDOUT, env=env, cwd=work, check=False)
    if proc.returncode != 0:
        tail = (work / "mace_run_train.log").read_text(errors="replace").strip().splitlines()[-3:]
        raise TrainingError(
            f"mace_run_train failed (exit {proc.returncode}): {' | '.join(tail)}; see {work}/mace_run_train.log"
        )
    produced = work / f"{name}.model"
    if not produced.exists():
        raise TrainingError(f"mace_run_train finished but wrote no {produced}")
    return produced


def _residuals(model, labelled: list[LabelledStructure]) -> np.ndarray:
    """Label minus model energy (eV) of each labelled structure."""
    from dp_screen.mlip.relax import single_points

    preds = single_points([item.structure for item in labelled], model)
    return np.array([item.energy - p["energy"] for item, p in zip(labelled, preds, strict=True)])


def energy_shifts(
    foundation: str | Path, labelled: list[LabelledStructure], dtype: str = "float64"
) -> dict[int, float]:
    """Per-element energies d_Z (eV) that move labels to a foundation model's energy reference: E - sum_Z n_Z d_Z.

    The residual r_s = E_label(s) - E_foundation(s) of each labelled structure is fitted as sum_Z n_Z(s) d_Z with
    d_Z = c + e_Z: c is the mean residual per atom, e_Z the minimum-norm least-squares rest (a few compositions
    cannot fix every element's constant; the minimum-norm solution spreads what they do fix). Elements absent from
    the labels get c. Energy differences within a composition (phase energies), forces and stresses are unchanged.
    """
    model = load_model(foundation, device="cpu", dtype=dtype)
    zs = [int(z) for z in model.model.atomic_numbers]
    counts = np.array([[sum(site.specie.Z == z for site in item.structure) for z in zs] for item in labelled], float)
    resid = _residuals(model, labelled)
    c = float(resid.sum() / counts.sum())
    rest, *_ = np.linalg.lstsq(counts, resid - c * counts.sum(axis=1), rcond=None)
    seen = counts.sum(axis=0) > 0
    return {z: float(c + (rest[k] if seen[k] else 0.0)) for k, z in enumerate(zs)}


def shift_labels(labelled: list[LabelledStructure], shifts: dict[int, float]) -> list[LabelledStructure]:
    """The labels with E - sum_Z n_Z d_Z (see :func:`energy_shifts`); forces and stress unchanged."""
    return [
        LabelledStructure(
            item.structure,
            item.energy - sum(shifts.get(site.specie.Z, 0.0) for site in item.structure),
            item.forces,
            item.stress_gpa,
            item.source,
        )
        for item in labelled
    ]


def composition_key(structure: Structure) -> str:
    """The composition a labelled structure belongs to (reduced formula, oxidation states ignored)."""
    return structure.composition.element_composition.reduced_formula


def composition_offsets(
    foundation: str | Path, labelled: list[LabelledStructure], dtype: str = "float64"
) -> dict[str, float]:
    """Per composition (:func:`composition_key`), the mean over its labelled structures of (label - foundation)
    energy per atom, eV/atom: subtracted from the labels (:func:`offset_labels`), it leaves the foundation's
    absolute level for every composition and the labels' energy differences within it."""
    per_atom = _residuals(load_model(foundation, device="cpu", dtype=dtype), labelled)
    per_atom /= np.array([len(item.structure) for item in labelled])
    return {key: float(per_atom[ix].mean()) for key, ix in _by_composition(labelled).items()}


def _by_composition(labelled: list[LabelledStructure]) -> dict[str, list[int]]:
    """Indices of the labelled structures of each composition (:func:`composition_key`)."""
    groups: dict[str, list[int]] = {}
    for k, item in enumerate(labelled):
        groups.setdefault(composition_key(item.structure), []).append(k)
    return groups


def offset_labels(labelled: list[LabelledStructure], offsets: dict[str, float]) -> list[LabelledStructure]:
    """The labels less their composition's offset per atom (see :func:`composition_offsets`); forces and stress
    unchanged; a composition without an offset is left as it is."""
    return [
        LabelledStructure(
            item.structure,
            item.energy - offsets.get(composition_key(item.structure), 0.0) * len(item.structure),
            item.forces,
            item.stress_gpa,
            item.source,
            item.meta,
        )
        for item in labelled
    ]


def model_errors(model_path: str | Path, labelled: list[LabelledStructure], dtype: str = "float64") -> dict:
    """MAE and RMSE of a model against labelled structures: energy (meV/atom), forces (meV/A), stress (GPa).

    Structures with an element the model does not cover are left out and counted (``n_uncovered``, with the
    elements in ``uncovered_elements``)."""
    from dp_screen.mlip.relax import single_points, uncovered_elements

    model = load_model(model_path, device="cpu", dtype=dtype)
    missing = [uncovered_elements(item.structure, model) for item in labelled]
    n_uncovered = sum(bool(m) for m in missing)
    labelled = [item for item, m in zip(labelled, missing, strict=True) if not m]
    if not labelled:
        return {"n": 0, "n_uncovered": n_uncovered, "uncovered_elements": sorted({e for m in missing for e in m})}
    preds = single_points([item.structure for item in labelled], model)
    de = np.array([(p["energy"] - item.energy) / len(item.structure) for p, item in zip(preds, labelled, strict=True)])
    df = np.concatenate([(p["forces"] - item.forces).ravel() for p, item in zip(preds, labelled, strict=True)])
    ds = np.concatenate(
        [(np.asarray(p["stress_gpa"]) - item.stress_gpa).ravel() for p, item in zip(preds, labelled, strict=True)]
    )
    # energy errors relative to each composition's mean error: what ranking phases within a composition sees
    rel = np.concatenate(
        [de[ix] - de[ix].mean() for ix in _by_composition(labelled).values() if len(ix) > 1] or [np.zeros(0)]
    )
    return {
        **(
            {
                "energy_mae_within_composition_mev_atom": float(1e3 * np.abs(rel).mean()),
                "energy_rmse_within_composition_mev_atom": float(1e3 * np.sqrt((rel**2).mean())),
            }
            if len(rel)
            else {}
        ),
        "n": len(labelled),
        **(
            {"n_uncovered": n_uncovered, "uncovered_elements": sorted({e for m in missing for e in m})}
            if n_uncovered
            else {}
        ),
        "energy_mae_mev_atom": float(1e3 * np.abs(de).mean()),
        "energy_rmse_mev_atom": float(1e3 * np.sqrt((de**2).mean())),
        "forces_mae_mev_a": float(1e3 * np.abs(df).mean()),
        "forces_rmse_mev_a": float(1e3 * np.sqrt((df**2).mean())),
        "stress_mae_gpa": float(np.abs(ds).mean()),
        "stress_rmse_gpa": float(np.sqrt((ds**2).mean())),
    }
