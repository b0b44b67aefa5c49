"""The training flow: training set -> DFT labels -> fine-tuned MACE, whose model file feeds the screening flow.

As in the seed's work: N random compositions, each built (BVM, a tilt system of its default set) and turned into
perturbed 80-atom supercells; each cell labelled by a DFT single point (CP2K here, VASP on clusters); MACE
fine-tuned from a foundation model on the labels. The structures travel through jobflow's "data" store.
"""

from __future__ import annotations

import random
import tempfile
from dataclasses import dataclass, field

from jobflow import Flow, Maker, Response, job
from pymatgen.core import Structure

from dp_screen.jobs.dft import DFTStaticMaker
from dp_screen.jobs.enumerate import EnumerationSettings, enumerate_table
from dp_screen.jobs.relax import finetune_to_store
from dp_screen.mlip.training import LabelledStructure, TrainSettings, write_extxyz
from dp_screen.settings import DPScreenSettings
from dp_screen.structures.perovskite import SiteSpeciesSet, build_bvm_structure
from dp_screen.structures.tilts import DEFAULT_TILTS
from dp_screen.structures.training import perturbed_cells


@job(data=Structure)
def training_set(
    n_compositions: int, cells_per_composition: int, cell_atoms: int, displacement: float, strain: float, seed: int,
    enumeration: EnumerationSettings,
) -> dict:  # fmt: skip
    """Perturbed supercells of N random compositions (the structures go to the "data" store)."""
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
        cells = perturbed_cells(built.structure.remove_oxidation_states(), cells_per_composition, displacement, strain,
                                seed=rng.randrange(1 << 30), n_atoms=cell_atoms)  # fmt: skip
        for k, cell in enumerate(cells):
            structures.append(cell)
            labels.append({"composition_id": row["composition_id"], "tilt": tilt, "cell": k})
    return {"structures": structures, "labels": labels, "n": len(structures)}


@job
def label_with_dft(selection: dict, dft: DFTStaticMaker) -> Response:
    """Fan out: one DFT single point per training cell."""
    jobs = []
    for n, structure in enumerate(selection["structures"]):
        j = dft.make(structure, work_dir=tempfile.mkdtemp(prefix=f"dp_screen_label_{n}_"))
        j.name = f"dft label {n}"
        jobs.append(j)
    return Response(replace=Flow(jobs, output=[j.output for j in jobs], name="dft labels"))


@job
def finetune_on_labels(selection: dict, labels: list, settings: TrainSettings, name: str,
                       db_settings: dict | None = None) -> dict:  # fmt: skip
    """Fine-tune on the labelled cells; the model file and its errors go to the models collection."""
    import numpy as np

    labelled = [
        LabelledStructure(s, lab["energy"], np.asarray(lab["forces"]), np.asarray(lab["stress_gpa"] or np.zeros((3, 3))),
                          source=meta["composition_id"])  # fmt: skip
        for s, lab, meta in zip(selection["structures"], labels, selection["labels"], strict=True)
        if lab.get("scf_converged", True)
    ]
    db = DPScreenSettings(**db_settings) if db_settings else DPScreenSettings()
    path = write_extxyz(labelled, db.home.resolve() / "training" / f"{name}.xyz")
    doc = finetune_to_store(path, settings, db, name=name)
    return {"model_path": doc["path"], "sha256": doc["sha256"], "errors": doc["errors"], "n_train": doc["n_train"]}


@dataclass
class TrainingFlowMaker(Maker):
    """Training set -> DFT labels -> fine-tuned model.

    Parameters
    ----------
    name
        Flow name.
    n_compositions, cells_per_composition, cell_atoms
        Size of the training set (the seed: 340 compositions, 80-atom cells, 2,770 samples).
    displacement, strain
        Perturbation amplitudes (A, fractional).
    seed
        Random seed.
    dft
        The DFT Maker (CP2K or VASP backend).
    train
        Fine-tuning settings (foundation model name or file, epochs, ...).
    model_name
        Name of the fine-tuned model file.
    """

    name: str = "dp_screen training"
    n_compositions: int = 340
    cells_per_composition: int = 8
    cell_atoms: int = 80
    displacement: float = 0.1
    strain: float = 0.03
    seed: int = 0
    enumeration: EnumerationSettings = field(default_factory=lambda: EnumerationSettings(bv_filter="exact"))
    dft: DFTStaticMaker = field(default_factory=DFTStaticMaker)
    train: TrainSettings = field(default_factory=lambda: TrainSettings(foundation="medium"))
    model_name: str = "dp_screen_ft"

    def make(self, db_settings: dict | None = None) -> Flow:
        """The training flow; its output holds ``model_path`` for the screening flow."""
        cells = training_set(self.n_compositions, self.cells_per_composition, self.cell_atoms, self.displacement,
                             self.strain, self.seed, self.enumeration)  # fmt: skip
        cells.name = "training set"
        labels = label_with_dft(cells.output, self.dft)
        labels.name = "dft labels (fan-out)"
        tuned = finetune_on_labels(cells.output, labels.output, self.train, self.model_name, db_settings)
        tuned.name = "fine-tune"
        return Flow([cells, labels, tuned], output=tuned.output, name=self.name)
