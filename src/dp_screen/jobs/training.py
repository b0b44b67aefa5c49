"""Training-set and fine-tuning Makers: perturbed supercells of random compositions, and MACE fine-tuned on labels."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
from jobflow import Maker, job
from pymatgen.core import Structure

from dp_screen.jobs.enumerate import EnumerationSettings, enumerate_table
from dp_screen.jobs.relax import finetune_to_store
from dp_screen.mlip.training import LabelledStructure, TrainSettings, write_extxyz
from dp_screen.settings import DPScreenSettings
from dp_screen.structures.perovskite import SiteSpeciesSet, build_bvm_structure
from dp_screen.structures.tilts import DEFAULT_TILTS
from dp_screen.structures.training import perturbed_cells


def make_training_set(
    n_compositions: int,
    cells_per_composition: int,
    cell_atoms: int,
    displacement: float,
    strain: float,
    seed: int,
    enumeration: EnumerationSettings,
) -> dict:
    """Perturbed supercells of N random compositions (each built with a tilt system of its default set)."""
    _, df = enumerate_table(enumeration)
    rng = random.Random(seed)
    rows = df.sample(frac=1.0, random_state=seed).to_dict("records")
    structures, labels = [], []
    for row in rows:
        if len({r["composition_id"] for r in labels}) >= n_compositions:
            break
        ordering = row["expected_ordering"]
        tilt = rng.choice(DEFAULT_TILTS[ordering])
        try:
            built = build_bvm_structure(SiteSpeciesSet.from_row(row), ordering, tilt)
        except Exception:  # noqa: BLE001 - skip compositions that cannot be built
            continue
        cells = perturbed_cells(
            built.structure,
            cells_per_composition,
            displacement,
            strain,
            seed=rng.randrange(1 << 30),
            n_atoms=cell_atoms,
        )
        for k, cell in enumerate(cells):
            structures.append(cell)
            labels.append({"composition_id": row["composition_id"], "tilt": tilt, "cell": k})
    return {"structures": structures, "labels": labels, "n": len(structures)}


@dataclass
class TrainingSetMaker(Maker):
    """Perturbed supercells of N random compositions (the seed: 340 compositions, 80-atom cells).

    Parameters
    ----------
    name
        Job name.
    n_compositions, cells_per_composition, cell_atoms
        Size of the training set.
    displacement, strain
        Perturbation amplitudes (A, fractional).
    seed
        Random seed.
    enumeration
        Which composition space to draw from.
    """

    name: str = "training set"
    n_compositions: int = 340
    cells_per_composition: int = 8
    cell_atoms: int = 80
    displacement: float = 0.1
    strain: float = 0.03
    seed: int = 0
    enumeration: EnumerationSettings = field(default_factory=lambda: EnumerationSettings(bv_filter="exact"))

    @job(data=Structure)
    def make(self) -> dict:
        """The cells (to the "data" store) and their compositions."""
        return make_training_set(
            self.n_compositions,
            self.cells_per_composition,
            self.cell_atoms,
            self.displacement,
            self.strain,
            self.seed,
            self.enumeration,
        )


@dataclass
class FineTuneMaker(Maker):
    """Fine-tune MACE on DFT-labelled cells; the versioned model file and its errors go to the models collection.

    Parameters
    ----------
    name
        Job name.
    settings
        Training settings (foundation model, epochs, ...).
    model_name
        Name of the model file.
    """

    name: str = "fine-tune"
    settings: TrainSettings = field(default_factory=lambda: TrainSettings(foundation="medium"))
    model_name: str = "dp_screen_ft"

    @job
    def make(self, selection: dict, labels: list, db_settings: dict | None = None) -> dict:
        """Fine-tune on the labels of ``selection``'s structures (cells whose SCF failed are left out)."""
        from dp_screen.dft.labels import dft_label

        converted = [dft_label(lab) for lab in labels]  # CP2K dicts and VASP TaskDocs alike, stress in GPa
        labelled = [
            LabelledStructure(
                s,
                lab["energy"],
                np.asarray(lab["forces"]),
                np.asarray(lab["stress_gpa"] if lab.get("stress_gpa") is not None else np.zeros((3, 3))),
                source=meta["composition_id"],
            )
            for s, lab, meta in zip(selection["structures"], converted, selection["labels"], strict=True)
            if lab["scf_converged"]
        ]
        db = DPScreenSettings(**db_settings) if db_settings else DPScreenSettings()
        path = write_extxyz(labelled, db.home.resolve() / "training" / f"{self.model_name}.xyz")
        doc = finetune_to_store(path, self.settings, db, name=self.model_name)
        return {"model_path": doc["path"], "sha256": doc["sha256"], "errors": doc["errors"], "n_train": doc["n_train"]}
