"""Active learning: candidates from relaxation paths, selection by committee spread, oracles, held-out metrics.

One round (driven by :mod:`dp_screen.jobs.active_learning`): relax a pool of compositions x tilt systems with the
current model, collect the relaxed structures and frames of their paths (:class:`Candidate`), score them by the
committee's spread (:mod:`dp_screen.mlip.committee`), pick the most uncertain with at most ``per_composition`` per
composition (:func:`select_uncertain`; :func:`select_random` is the control), label them with an :class:`Oracle`,
fine-tune the committee on every label so far and measure it on a fixed held-out set (:func:`held_out_metrics`).

Oracles share one interface: ``label(structures)`` returns, per structure, a
:class:`~dp_screen.mlip.training.LabelledStructure` or the reason it failed (a string: SCF not converged, CP2K
error, non-finite teacher output), so one failure is recorded and the round goes on. ``chgnet`` is the packaged
model's teacher (offline: the chgnet wheel ships its weights); ``cp2k`` runs local DFT with the models' Hamiltonian
(:mod:`dp_screen.dft.hamiltonian`); ``vasp`` is atomate2's static job, queued by the flow (it cannot run in-process).
"""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from monty.json import MSONable

from dp_screen.errors import InputError
from dp_screen.mlip.relax import RelaxSettings
from dp_screen.mlip.training import LabelledStructure, TrainSettings

if TYPE_CHECKING:
    from pymatgen.core import Structure

ORACLES = ("chgnet", "cp2k", "vasp")
SELECTIONS = ("uncertainty", "random")


# ------------------------------------------------------------------------------------------------- candidates
def structure_key(structure: Structure, decimals: int = 3) -> str:
    """A stable id of a structure (species, lattice and fractional coordinates rounded to ``decimals``)."""
    h = hashlib.sha256()
    h.update(" ".join(sp.symbol if hasattr(sp, "symbol") else str(sp) for sp in structure.species).encode())
    h.update(np.round(structure.lattice.matrix, decimals).tobytes())
    h.update(np.round(np.mod(structure.frac_coords, 1.0), decimals + 1).tobytes())
    return h.hexdigest()[:20]


@dataclass
class Candidate:
    """A structure that may be labelled: a relaxed structure or a frame of a relaxation path."""

    structure: Structure
    composition_id: str
    tilt: str
    origin: str  # "relaxed" or "path"
    step: int = 0

    @property
    def key(self) -> str:
        return structure_key(self.structure)

    def meta(self) -> dict:
        return {"composition_id": self.composition_id, "tilt": self.tilt, "origin": self.origin, "step": self.step}


def candidates_from_results(results, metas: list[dict]) -> list[Candidate]:
    """Candidates of relaxation results (``relax_structures(..., frames_every=N)``): each path's frames and its end
    (failed relaxations give only their path frames before the blow-up is flagged)."""
    out = []
    for res, meta in zip(results, metas, strict=True):
        frames = res.extra.get("frames", [])
        # structures keep their oxidation states: a DFT oracle reads its Hamiltonian off them (dft.hamiltonian)
        for k, frame in enumerate(frames):
            out.append(Candidate(frame, meta["composition_id"], meta["tilt"], "path", step=k + 1))
        if not res.failed and np.isfinite(res.energy):
            out.append(Candidate(res.structure, meta["composition_id"], meta["tilt"], "relaxed", step=res.n_steps))
    return out


# -------------------------------------------------------------------------------------------------- selection
def select_uncertain(
    candidates: list[Candidate], spreads: list[float], n: int, per_composition: int, skip: set[str] | None = None
) -> list[int]:
    """Indices of the ``n`` most uncertain candidates (largest spread first), at most ``per_composition`` from any
    one composition, none whose key is in ``skip`` (already labelled) and no key twice. NaN spreads are never picked."""
    if per_composition < 1 or n < 0:
        raise InputError(f"per_composition {per_composition} must be >= 1 and n {n} >= 0")
    order = sorted((i for i, s in enumerate(spreads) if np.isfinite(s)), key=lambda i: -spreads[i])
    return _take(candidates, order, n, per_composition, skip)


def select_random(
    candidates: list[Candidate], n: int, per_composition: int, skip: set[str] | None = None, seed: int = 0
) -> list[int]:
    """``n`` random candidates under the same diversity cap (the control for :func:`select_uncertain`)."""
    order = list(range(len(candidates)))
    random.Random(seed).shuffle(order)
    return _take(candidates, order, n, per_composition, skip)


def _take(candidates, order, n, cap, skip) -> list[int]:
    skip = set(skip or ())
    per: dict[str, int] = defaultdict(int)
    picked = []
    for i in order:
        if len(picked) >= n:
            break
        c = candidates[i]
        if per[c.composition_id] >= cap or c.key in skip:
            continue
        picked.append(i)
        per[c.composition_id] += 1
        skip.add(c.key)
    return picked


# ---------------------------------------------------------------------------------------------------- oracles
class Oracle:
    """Labels structures: energy (eV), forces (eV/A), stress (GPa) or the reason it could not."""

    name = "oracle"

    def label(self, structures: list[Structure]) -> list[LabelledStructure | str]:
        raise NotImplementedError

    def provenance(self) -> dict:
        return {"oracle": self.name}


class ChgnetOracle(Oracle):
    """CHGNet (the packaged model's teacher; its wheel ships the weights, so it runs offline)."""

    name = "chgnet"

    def __init__(self, model_name: str = "0.3.0", batch_size: int = 16) -> None:
        self.model_name = model_name
        self.batch_size = batch_size
        self._model = None

    def _load(self):
        if self._model is None:
            try:
                from chgnet.model import CHGNet
            except ImportError:
                raise InputError("the chgnet oracle needs the chgnet package: pip install chgnet") from None
            self._model = CHGNet.load(model_name=self.model_name, verbose=False)
        return self._model

    def label(self, structures: list[Structure]) -> list[LabelledStructure | str]:
        if not structures:
            return []
        preds = self._load().predict_structure(list(structures), task="efs", batch_size=self.batch_size)
        preds = [preds] if isinstance(preds, dict) else preds
        out: list[LabelledStructure | str] = []
        for s, p in zip(structures, preds, strict=True):
            e, f, st = float(p["e"]) * len(s), np.asarray(p["f"], dtype=float), np.asarray(p["s"], dtype=float)
            if not (np.isfinite(e) and np.isfinite(f).all() and np.isfinite(st).all()):
                out.append("CHGNet returned non-finite energy, forces or stress")
            else:  # CHGNet's stress is in GPa with ASE's sign (its ASE calculator only rescales it)
                out.append(LabelledStructure(s, e, f, st, source="chgnet"))
        return out

    def provenance(self) -> dict:
        import chgnet

        return {"oracle": self.name, "method": f"chgnet-{self.model_name}", "chgnet_version": chgnet.__version__}


class Cp2kOracle(Oracle):
    """CP2K single points with the models' Hamiltonian (UKS, moments and +U where the Materials Project uses them)."""

    name = "cp2k"

    def __init__(self, settings=None, work_dir: str | Path | None = None) -> None:
        from dp_screen.dft.cp2k import CP2KSettings

        self.settings = settings or CP2KSettings()
        self.work_dir = Path(work_dir) if work_dir else None

    def label(self, structures: list[Structure]) -> list[LabelledStructure | str]:
        import tempfile

        from dp_screen.dft.cp2k import CP2KError, run_cp2k
        from dp_screen.dft.labels import dft_label

        out: list[LabelledStructure | str] = []
        for s in structures:
            folder = (self.work_dir / structure_key(s)) if self.work_dir else Path(tempfile.mkdtemp(prefix="dp_al_"))
            try:
                res = run_cp2k(s, self.settings, folder)
            except (CP2KError, InputError) as exc:
                out.append(f"CP2K: {exc}")
                continue
            lab = dft_label(
                {
                    "energy": res["energy"],
                    "forces": res["forces"].tolist(),
                    "method": res["method"],
                    "stress_gpa": None if res["stress_gpa"] is None else res["stress_gpa"].tolist(),
                    "scf_converged": res["scf_converged"],
                }
            )
            if not lab["scf_converged"]:
                steps = ", ".join(str(a.get("scf_steps")) for a in res.get("scf_attempts", []))
                out.append(
                    f"CP2K SCF not converged ({len(res.get('scf_attempts', []))} attempt(s) of {steps} steps; "
                    f"{res['output_file']})"
                )
                continue
            stress = np.zeros((3, 3)) if lab.get("stress_gpa") is None else np.asarray(lab["stress_gpa"])
            out.append(
                LabelledStructure(
                    s,
                    lab["energy"],
                    np.asarray(lab["forces"]),
                    stress,
                    source=lab["method"],
                    meta={
                        "wall_time_s": res["wall_time_s"],
                        "output_file": res["output_file"],
                        "nproc": self.settings.nproc,
                        "scf_steps": res.get("scf_steps"),
                        "scf_attempts": len(res.get("scf_attempts", [])),
                        "scf_converged_by": res.get("scf_converged_by"),
                    },
                )
            )
        return out

    def provenance(self) -> dict:
        return {"oracle": self.name, "method": "cp2k", "cp2k": self.settings.settings_dict()}


def make_oracle(name: str, **kwargs) -> Oracle:
    """An in-process oracle by name (``vasp`` is queued by the flow instead: it cannot run here)."""
    if name == "chgnet":
        return ChgnetOracle(**kwargs)
    if name == "cp2k":
        return Cp2kOracle(**kwargs)
    if name == "vasp":
        raise InputError(
            "the vasp oracle runs atomate2 jobs on cluster workers: submit the loop to FireWorks "
            "(dp-screen learn --submit); in-process oracles: chgnet, cp2k"
        )
    raise InputError(f"unknown oracle {name!r}; allowed: {', '.join(ORACLES)}")


# ---------------------------------------------------------------------------------------------------- settings
@dataclass
class LoopSettings(MSONable):
    """Settings of an active-learning loop.

    Parameters
    ----------
    loop_id
        Name of the loop in the store (rounds and labels are kept under it; the same id resumes).
    oracle
        chgnet, cp2k or vasp.
    selection
        "uncertainty" (largest committee force spread first) or "random" (the control). Round 1 is always random:
        the committee does not exist before its first fine-tune.
    rounds, per_round, per_composition
        Rounds, labels per round, and the diversity cap (labels per composition per round).
    committee_size
        K members, fine-tuned from the start model (round 1) or from their own previous round, each with its own seed
        (so its own data order).
    start_model
        The model the committee starts from (None: the packaged default).
    frames_every
        Steps between the relaxation-path frames that become candidates.
    relax
        Pool relaxations (the current committee's first member).
    train
        Fine-tuning settings of each member (``foundation`` and ``seed`` are set per member).
    seed
        Random seed (random selection; member k trains with seed + k).
    score
        What the spread is taken from: "force" (eV/A, default) or "energy" (meV/atom).
    """

    loop_id: str = "default"
    oracle: str = "chgnet"
    selection: str = "uncertainty"
    rounds: int = 3
    per_round: int = 24
    per_composition: int = 3
    committee_size: int = 3
    start_model: str | None = None
    frames_every: int = 10
    relax: RelaxSettings = field(default_factory=lambda: RelaxSettings(max_steps=200))
    train: TrainSettings = field(
        default_factory=lambda: TrainSettings(epochs=6, lr=0.005, batch_size=4, dtype="float64", stress_weight=10.0)
    )
    seed: int = 0
    score: str = "force"

    def __post_init__(self) -> None:
        if self.oracle not in ORACLES:
            raise InputError(f"unknown oracle {self.oracle!r}; allowed: {', '.join(ORACLES)}")
        if self.selection not in SELECTIONS:
            raise InputError(f"unknown selection {self.selection!r}; allowed: {', '.join(SELECTIONS)}")
        if self.score not in ("force", "energy"):
            raise InputError(f"unknown score {self.score!r}; allowed: force, energy")
        if self.committee_size < 2:
            raise InputError(f"committee_size {self.committee_size} must be >= 2 (3 or more advised)")
        if self.rounds < 1 or self.per_round < 1 or self.per_composition < 1:
            raise InputError(
                f"rounds {self.rounds}, per_round {self.per_round} and per_composition "
                f"{self.per_composition} must be >= 1"
            )

    def settings_dict(self) -> dict:
        d = asdict(self)
        d["relax"] = self.relax.settings_dict()
        d["train"] = self.train.settings_dict()
        return d


# -------------------------------------------------------------------------------------------------- held-out
def held_out_metrics(predicted: list[dict], labels: list[dict]) -> dict:
    """Errors of predictions against oracle labels on the held-out set.

    ``predicted[i]``: ``energy_per_atom`` (eV/atom), ``forces``; ``labels[i]``: ``energy_per_atom``, ``forces``,
    ``composition_id``, ``tilt``. Besides energy and force MAE: per composition, the phase energy differences
    E(tilt) - E(a0a0a0) at the same geometries (MAE, meV/atom) and whether the lowest tilt agrees.
    """
    de = np.array([p["energy_per_atom"] - lab["energy_per_atom"] for p, lab in zip(predicted, labels, strict=True)])
    df = (
        np.concatenate(
            [
                np.ravel(np.asarray(p["forces"]) - np.asarray(lab["forces"]))
                for p, lab in zip(predicted, labels, strict=True)
            ]
        )
        if labels
        else np.array([])
    )
    by_comp: dict[str, dict[str, tuple[float, float]]] = defaultdict(dict)
    for p, lab in zip(predicted, labels, strict=True):
        by_comp[lab["composition_id"]][lab["tilt"]] = (p["energy_per_atom"], lab["energy_per_atom"])
    diffs, agree = [], []
    for tilts in by_comp.values():
        if "a0a0a0" not in tilts or len(tilts) < 2:
            continue
        pm0, lo0 = tilts["a0a0a0"]
        diffs += [1e3 * ((pm - pm0) - (lo - lo0)) for t, (pm, lo) in tilts.items() if t != "a0a0a0"]
        agree.append(min(tilts, key=lambda t: tilts[t][0]) == min(tilts, key=lambda t: tilts[t][1]))
    return {
        "n": len(labels),
        "energy_mae_mev_atom": float(1e3 * np.abs(de).mean()) if len(de) else None,
        "forces_mae_ev_a": float(np.abs(df).mean()) if len(df) else None,
        "phase_de_mae_mev_atom": float(np.abs(diffs).mean()) if diffs else None,
        "n_differences": len(diffs),
        "lowest_phase_agreement": float(np.mean(agree)) if agree else None,
        "n_compositions": len(agree),
    }
