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
from dp_screen.jobs.training import FineTuneMaker, TrainingSetMaker


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
    training_set
        Which cells to make (the seed: 340 compositions, 80-atom cells, 2,770 samples).
    dft
        The DFT Maker (CP2K or VASP backend).
    fine_tune
        Fine-tuning settings (foundation model name or file, epochs, ...) and the model's name.
    """

    name: str = "dp_screen training"
    training_set: TrainingSetMaker = field(default_factory=TrainingSetMaker)
    dft: DFTStaticMaker = field(default_factory=DFTStaticMaker)
    fine_tune: FineTuneMaker = field(default_factory=FineTuneMaker)

    def make(self, db_settings: dict | None = None) -> Flow:
        """The training flow; its output holds ``model_path`` for the screening flow."""
        cells = self.training_set.make()
        labels = label_with_dft(cells.output, self.dft)
        labels.name = "dft labels (fan-out)"
        tuned = self.fine_tune.make(cells.output, labels.output, db_settings)
        return Flow([cells, labels, tuned], output=tuned.output, name=self.name)
