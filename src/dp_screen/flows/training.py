"""The training flow: training set -> DFT labels -> fine-tuned MACE, whose model file feeds the screening flow.

As in the seed's work: N random compositions, each built (BVM, a tilt system of its default set) and turned into
perturbed 80-atom supercells; each cell labelled by a DFT single point (CP2K here, VASP on clusters); MACE
fine-tuned from a foundation model on the labels. The structures travel through jobflow's "data" store.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field

from jobflow import Flow, Maker, Response, job

from dp_screen.jobs.dft import DFTStaticMaker
from dp_screen.jobs.enumerate import EnumerationSettings
from dp_screen.jobs.training import FineTuneMaker, TrainingSetMaker
from dp_screen.mlip.training import TrainSettings


@job
def label_with_dft(selection: dict, dft: DFTStaticMaker) -> Response:
    """Fan out: one DFT single point per training cell."""
    jobs = []
    for n, structure in enumerate(selection["structures"]):
        j = dft.make(structure, work_dir=tempfile.mkdtemp(prefix=f"dp_screen_label_{n}_"))
        j.name = f"dft label {n}"
        jobs.append(j)
    return Response(replace=Flow(jobs, output=[j.output for j in jobs], name="dft labels"))


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
        cells = TrainingSetMaker(n_compositions=self.n_compositions, cells_per_composition=self.cells_per_composition,
                                 cell_atoms=self.cell_atoms, displacement=self.displacement, strain=self.strain,
                                 seed=self.seed, enumeration=self.enumeration).make()  # fmt: skip
        labels = label_with_dft(cells.output, self.dft)
        labels.name = "dft labels (fan-out)"
        tuned = FineTuneMaker(settings=self.train, model_name=self.model_name).make(cells.output, labels.output,
                                                                                    db_settings)  # fmt: skip
        return Flow([cells, labels, tuned], output=tuned.output, name=self.name)
