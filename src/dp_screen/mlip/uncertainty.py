"""The uncertainty of a phase energy difference: the sigma behind every tilted / untilted call.

A call compares dE_tilt = E(untilted) - E(lowest tilted phase) per atom with 2 sigma
(:func:`dp_screen.structures.phases.phase_call`). Where sigma comes from, first that applies:

1. **Given by the user** (``dp-screen report --phase-error MEV``, ``phase_error_mev=`` in the analysis): taken as
   it is, for every composition.
2. **A committee's spread**, where a committee scored the ranked variants (``dp-screen relax --committee``): each
   variant's ``energy_spread_mev_atom`` is the members' standard deviation of its energy per atom; a difference of
   two variants gets sqrt(2) x the ordering's largest spread (two independent errors of that size).
3. **The model's measured error** (:func:`model_phase_error`):

   - a model card next to the model file (``<model>.json`` with the model's sha256, as the packaged model's
     ``data/models/dp_screen_default.json``): the RMSE of its phase energy differences E(tilt) - E(untilted)
     against its teacher on held-out compositions (``phases_vs_teacher.phase_de_rmse_mev_atom``, measured by
     ``benchmarks/bench_teacher.py``), or a ``phase_error_mev`` entry written there by hand;
   - a model fine-tuned by ``dp-screen finetune`` with a test set: its held-out energy error *within*
     compositions (each composition's mean error removed, :func:`dp_screen.mlip.training.model_errors`), per
     structure, so a difference of two structures gets sqrt(2) x its RMSE (or sqrt(pi) x its MAE, the same for a
     normal error, where only the MAE is on record).

   The RMSE, not the MAE, is the standard deviation of a normal error; for the packaged model it is 45 meV/atom
   against an MAE of 25 (a few compositions are far off), so 2 sigma is 90 meV/atom.
4. **None**: the calls are unqualified (``phase_error_mev`` None); they fall back on a noise band of
   :data:`dp_screen.structures.phases.TILT_TOL_MEV` and every display says so.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from dp_screen.errors import InputError

SOURCES = ("user", "committee", "card", "fine-tune", "none")


@dataclass(frozen=True)
class PhaseError:
    """sigma (meV/atom) of a phase energy difference and where it comes from (``source`` one of :data:`SOURCES`)."""

    sigma_mev: float | None
    source: str = "none"
    detail: str = ""

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise InputError(f"unknown phase-error source {self.source!r}; allowed: {', '.join(SOURCES)}")
        if self.sigma_mev is not None and not (math.isfinite(self.sigma_mev) and self.sigma_mev >= 0):
            raise InputError(f"phase error {self.sigma_mev!r} meV/atom must be a finite number >= 0")

    def as_dict(self) -> dict:
        return {"sigma_mev": self.sigma_mev, "source": self.source, "detail": self.detail}


NO_ERROR = PhaseError(None, "none", "no measured phase-energy error")


def user_phase_error(sigma_mev: float) -> PhaseError:
    """A sigma the user gives (meV/atom)."""
    return PhaseError(float(sigma_mev), "user", "given by the user")


def card_phase_error(card: dict) -> PhaseError | None:
    """The sigma a model card records (module docstring, item 3), or None."""
    if card.get("phase_error_mev") is not None:
        return PhaseError(float(card["phase_error_mev"]), "card", "phase_error_mev of the model card")
    teacher = card.get("phases_vs_teacher") or {}
    if teacher.get("phase_de_rmse_mev_atom") is not None:
        return PhaseError(
            float(teacher["phase_de_rmse_mev_atom"]),
            "card",
            f"RMSE of phase energy differences vs its teacher on {teacher.get('n_compositions', '?')} held-out "
            f"compositions, {teacher.get('made_by', 'benchmarks/bench_teacher.py')}",
        )
    return None


def errors_phase_error(errors: dict | None) -> PhaseError | None:
    """The sigma of a fine-tuned model's held-out errors (the ``errors`` of its models document), or None."""
    test = (errors or {}).get("test") or {}
    if test.get("energy_rmse_within_composition_mev_atom") is not None:
        rmse = float(test["energy_rmse_within_composition_mev_atom"])
        return PhaseError(
            math.sqrt(2) * rmse,
            "fine-tune",
            f"sqrt(2) x held-out within-composition energy RMSE {rmse:.1f} meV/atom (n = {test.get('n')})",
        )
    if test.get("energy_mae_within_composition_mev_atom") is not None:
        mae = float(test["energy_mae_within_composition_mev_atom"])
        return PhaseError(
            math.sqrt(math.pi) * mae,
            "fine-tune",
            f"sqrt(pi) x held-out within-composition energy MAE {mae:.1f} meV/atom (n = {test.get('n')})",
        )
    return None


def model_card(model_path: str | Path | None, model_sha256: str) -> dict | None:
    """The card next to a model file (``<model>.json``) when it describes this very file (same sha256)."""
    if not model_path:
        return None
    path = Path(model_path).with_suffix(".json")
    try:
        card = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return card if isinstance(card, dict) and card.get("sha256") == model_sha256 else None


def model_phase_error(
    model_sha256: str, model_path: str | Path | None = None, errors: dict | None = None
) -> PhaseError:
    """A model's measured phase-energy sigma: its card (next to ``model_path``, or the packaged model's card when
    the hashes match), else its fine-tuning errors (``errors``), else :data:`NO_ERROR`."""
    from dp_screen.mlip.models import default_model_path

    for path in (model_path, default_model_path()):
        card = model_card(path, model_sha256)
        found = card_phase_error(card) if card else None
        if found:
            return found
    return errors_phase_error(errors) or NO_ERROR


def ordering_phase_error(model_error: PhaseError | None, committee_spread_mev: float | None) -> PhaseError:
    """The sigma of one ordering's call: the user's, else the committee's (sqrt(2) x its largest energy spread over
    the ranked variants), else the model's (module docstring)."""
    model_error = model_error or NO_ERROR
    if model_error.source == "user":
        return model_error
    if committee_spread_mev is not None and math.isfinite(committee_spread_mev):
        return PhaseError(
            math.sqrt(2) * float(committee_spread_mev),
            "committee",
            "sqrt(2) x the committee's largest energy spread over the ranked variants",
        )
    return model_error
