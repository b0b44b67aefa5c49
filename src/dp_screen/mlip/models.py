"""Loading MACE models: the packaged default, a local file, or a foundation model by name.

Every loaded model carries its provenance (name, file, sha256, dtype, device) so that every result can record it.
A foundation model by name (``small``, ``medium``, ``medium-mpa-0``, ...) is downloaded by mace where the network
allows; without network pass a local file.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from dp_screen.errors import DPScreenError, InputError

# e3nn 0.4.4 cannot be imported before mace on torch >= 2.6 (UnpicklingError ... GLOBAL slice)
os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

DEFAULT_MODEL_FILE = "dp_screen_default.model"
FOUNDATION_NAMES = (
    "small",
    "medium",
    "large",
    "medium-mpa-0",
    "medium-omat-0",
    "small-0b",
    "medium-0b",
    "small-0b2",
    "medium-0b2",
    "large-0b2",
    "medium-0b3",
)
DTYPES = ("float32", "float64")


class ModelError(DPScreenError):
    """A model cannot be found, downloaded or loaded."""


@dataclass
class LoadedModel:
    """A MACE model ready to evaluate, with what identifies it."""

    model: object  # torch.nn.Module
    name: str
    path: str | None
    sha256: str
    dtype: str
    device: str

    def provenance(self) -> dict:
        """What results record about the model."""
        return {
            "model_name": self.name,
            "model_path": self.path,
            "model_sha256": self.sha256,
            "dtype": self.dtype,
            "device": self.device,
        }


def file_sha256(path: str | Path) -> str:
    """sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_model_path() -> Path:
    """The packaged default model (made by scripts/make_default_model.py)."""
    return Path(str(resources.files("dp_screen.data").joinpath("models", DEFAULT_MODEL_FILE)))


def resolve_device(device: str | None) -> str:
    """'cuda' when available (or asked for), else 'cpu'."""
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise InputError(f"unknown device {device!r}; allowed: cpu, cuda, cuda:N, auto")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {device!r} asked for, but torch sees no CUDA device here; use --device cpu")
    return device


def import_mace() -> None:
    """Import mace (before e3nn) and its TorchSim and ASE interfaces, keeping their import-time notices off stdout
    (mace prints one about cuequivariance, which would corrupt ``--json`` output)."""
    import contextlib
    import sys

    with contextlib.redirect_stdout(sys.stderr):
        import mace  # noqa: F401
        import mace.calculators  # noqa: F401
        import mace.modules  # noqa: F401
        import torch_sim.models.mace  # noqa: F401


def load_model(
    name_or_path: str | Path | None = None, device: str | None = None, dtype: str = "float64"
) -> LoadedModel:
    """Load a MACE model: None = the packaged default; an existing file; or a foundation model name."""
    import_mace()
    import torch

    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; allowed: {', '.join(DTYPES)}")
    device = resolve_device(device)
    if name_or_path is None:
        path = default_model_path()
        if not path.exists():
            raise ModelError(f"the default model {path} is missing; make it with: python scripts/make_default_model.py")
        name = "dp_screen-default"
    else:
        path = Path(name_or_path)
        name = path.stem
    if path.exists():
        try:
            model = torch.load(path, map_location=device, weights_only=False)
        except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a bad file
            raise ModelError(f"cannot load model file {str(path)!r}: {type(exc).__name__}: {exc}") from None
        if not isinstance(model, torch.nn.Module):
            raise ModelError(f"{str(path)!r} does not hold a MACE model (found {type(model).__name__})")
        sha = file_sha256(path)
        source = str(path.resolve())
    elif str(name_or_path) in FOUNDATION_NAMES:
        from mace.calculators.foundations_models import download_mace_mp_checkpoint

        try:
            local = download_mace_mp_checkpoint(str(name_or_path))
        except Exception as exc:  # noqa: BLE001 - urllib/network errors
            raise ModelError(
                f"cannot download foundation model {str(name_or_path)!r} ({type(exc).__name__}: {exc}); "
                "without network pass a local model file instead (--model PATH / --foundation PATH)"
            ) from None
        model = torch.load(local, map_location=device, weights_only=False)
        sha = file_sha256(local)
        source = str(local)
        name = f"mace-mp-{name_or_path}"
    else:
        raise InputError(
            f"model {str(name_or_path)!r} is neither an existing file nor a foundation model name; "
            f"allowed names: {', '.join(FOUNDATION_NAMES)}"
        )
    model = model.to(device=device, dtype=torch.float64 if dtype == "float64" else torch.float32)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return LoadedModel(model=model, name=name, path=source, sha256=sha, dtype=dtype, device=device)


def packaged_model_card() -> dict:
    """The packaged default model's card (``data/models/dp_screen_default.json``: how it was made, its errors)."""
    import json

    return json.loads(default_model_path().with_suffix(".json").read_text())


def update_packaged_model_card(key: str, entry: dict) -> None:
    """Set one entry of the packaged model's card (what a benchmark measured of it) and write the card back."""
    import json

    card = packaged_model_card()
    card[key] = entry
    default_model_path().with_suffix(".json").write_text(json.dumps(card, indent=2, default=str) + "\n")


def accuracy_summary(model_sha256: str, errors: dict | None = None) -> list[str]:
    """What is measured about a model's accuracy, as lines to print next to a phase table.

    The packaged model: its card (errors against its teacher on held-out cells, against DFT and against
    experimentally known phases where measured). Another model: ``errors`` (e.g. the ``errors`` of its
    ``models`` document from fine-tuning), else a line saying that nothing is measured.
    """
    card = packaged_model_card()
    if model_sha256 == card.get("sha256"):
        lines = []
        test = card.get("errors_vs_teacher", {}).get("test")
        if test:
            lines.append(
                f"packaged demonstration model, vs its teacher {card.get('teacher')} on {test['n']} held-out cells: "
                f"energy MAE {test['energy_mae_mev_atom']:.0f} meV/atom, forces MAE {test['forces_mae_mev_a']:.0f} "
                f"meV/A, stress MAE {test['stress_mae_gpa']:.2f} GPa"
            )
        for key in ("phases_vs_teacher", "errors_vs_dft", "known_phases"):
            if card.get(key, {}).get("summary"):
                lines.append(f"{card[key]['summary']} ({card[key].get('made_by', 'see the card')})")
        lines.append(
            "energies this far from the teacher do not resolve phase differences of a few meV/atom: "
            "rank phases with a fine-tuned model (dp-screen finetune)"
        )
        return lines
    if errors:
        parts = [
            f"{split}: energy MAE {e.get('energy_mae_mev_atom', float('nan')):.1f} meV/atom, forces MAE "
            f"{e.get('forces_mae_mev_a', float('nan')):.0f} meV/A (n = {e.get('n')})"
            for split, e in errors.items()
            if isinstance(e, dict)
        ]
        return [f"model {model_sha256[:12]}, errors from its training: " + "; ".join(parts)]
    return [
        f"model {model_sha256[:12]}: no accuracy on record (no card, not fine-tuned here); measure it with "
        "benchmarks/bench_validation.py or benchmarks/bench_known_phases.py before trusting the ranking"
    ]
