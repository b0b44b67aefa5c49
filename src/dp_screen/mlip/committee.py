"""A committee of MACE models and its spread: the uncertainty that active learning selects by.

K models (fine-tuned from one start with different seeds and data orders, see :mod:`dp_screen.mlip.active_learning`)
are evaluated on the same batched TorchSim state. Per structure the committee gives

- ``energy_spread_mev_atom``: the standard deviation over members of the energy per atom (meV/atom);
- ``force_spread_ev_a``: the largest, over atoms, root-mean-square deviation of the members' force vectors from
  their mean (eV/A), the force disagreement used by committee-based active learning (e.g. Schran et al.,
  J. Chem. Phys. 153, 104105 (2020); Imbalzano et al., J. Chem. Phys. 154, 074102 (2021)).

Both are zero for identical members. The members' mean energy, forces and stress are returned too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dp_screen.errors import InputError
from dp_screen.mlip.models import LoadedModel, load_model
from dp_screen.mlip.relax import EV_A3_TO_GPA, _torchsim_model, uncovered_elements

if TYPE_CHECKING:
    from pymatgen.core import Structure


@dataclass
class Committee:
    """K loaded MACE models evaluated together."""

    members: list[LoadedModel]

    def __post_init__(self) -> None:
        if len(self.members) < 2:
            raise InputError(f"a committee needs at least 2 models (got {len(self.members)}); K >= 3 is advised")

    @classmethod
    def load(cls, paths: list[str | Path], device: str | None = None, dtype: str = "float64") -> Committee:
        """Load each member file (or foundation name)."""
        return cls([load_model(str(p), device=device, dtype=dtype) for p in paths])

    @property
    def shas(self) -> list[str]:
        return [m.sha256 for m in self.members]

    def provenance(self) -> dict:
        """What results record about the committee: its members' hashes and files."""
        return {
            "committee_sha256": self.shas,
            "committee_paths": [m.path for m in self.members],
            "dtype": self.members[0].dtype,
        }


@dataclass
class CommitteePrediction:
    """The committee on one structure."""

    energies_per_atom: np.ndarray  # (K,) eV/atom
    forces: np.ndarray  # (K, N, 3) eV/A
    stresses_gpa: np.ndarray  # (K, 3, 3)
    failed: str | None = None

    @property
    def energy_spread_mev_atom(self) -> float:
        if self.failed is not None:
            return float("nan")
        e = self.energies_per_atom  # the population standard deviation, in pairwise form (exactly zero when equal)
        return float(1e3 * np.sqrt(((e[:, None] - e[None, :]) ** 2).sum() / (2 * len(e) ** 2)))

    @property
    def force_spread_ev_a(self) -> float:
        if self.failed is not None:
            return float("nan")
        # mean_k |F_k - F_mean|^2 = sum_ij |F_i - F_j|^2 / (2 K^2): exactly zero for identical members
        k = len(self.forces)
        pair = self.forces[:, None] - self.forces[None, :]  # (K, K, N, 3)
        return float(np.sqrt((pair**2).sum(axis=(0, 1, 3)) / (2 * k * k)).max())

    @property
    def energy_per_atom(self) -> float:
        return float(self.energies_per_atom.mean())

    def summary(self) -> dict:
        """What a relaxation document stores (``uncertainty``)."""
        return {
            "energy_spread_mev_atom": self.energy_spread_mev_atom,
            "force_spread_ev_a": self.force_spread_ev_a,
            "energy_per_atom_mean": self.energy_per_atom if self.failed is None else float("nan"),
            "energies_per_atom": [float(e) for e in self.energies_per_atom],
            "failed": self.failed,
        }


def committee_predictions(
    structures: list[Structure], committee: Committee, chunk: int = 64
) -> list[CommitteePrediction]:
    """Every member's energy, forces and stress on every structure (one TorchSim state per chunk, shared by the
    members). A structure with an element some member does not cover gets ``failed`` with the reason."""
    import torch_sim as ts

    out: list[CommitteePrediction | None] = [None] * len(structures)
    ok = []
    for i, s in enumerate(structures):
        missing = sorted({e for m in committee.members for e in uncovered_elements(s, m)})
        if missing:
            nan = np.full((len(committee.members),), np.nan)
            out[i] = CommitteePrediction(
                nan,
                np.full((len(committee.members), len(s), 3), np.nan),
                np.full((len(committee.members), 3, 3), np.nan),
                failed=f"the committee does not cover element(s) {', '.join(missing)}",
            )
        else:
            ok.append(i)
    models = [_torchsim_model(m) for m in committee.members]
    for start in range(0, len(ok), chunk):
        idx = ok[start : start + chunk]
        state = ts.initialize_state([structures[i] for i in idx], models[0].device, models[0].dtype)
        owner = state.system_idx.cpu().numpy()
        n_atoms = np.bincount(owner, minlength=len(idx))
        energies, forces, stresses = [], [], []
        for model in models:
            res = model(state)
            energies.append(res["energy"].detach().cpu().numpy() / n_atoms)
            forces.append(res["forces"].detach().cpu().numpy())
            stresses.append(res["stress"].detach().cpu().numpy() * EV_A3_TO_GPA)
        e, f, st = np.array(energies), np.array(forces), np.array(stresses)
        for k, i in enumerate(idx):
            out[i] = CommitteePrediction(e[:, k], f[:, owner == k], st[:, k])
    return out  # type: ignore[return-value]
