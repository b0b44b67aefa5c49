"""The whole dp_screen campaign on a cluster: training flow (DFT labels -> fine-tuned MACE) then screening of the
whole composition space with the fine-tuned model, submitted to the FireWorks launchpad.

    python workflows/campaign.py --launchpad workflows/launchpad.yaml --db-uri mongodb://... [--dft vasp]
Then start workers: CPU nodes with fworker_cpu.yaml, GPU nodes with fworker_gpu.yaml (or qlaunch with
qadapter_slurm.yaml). Re-submitting after a failure is safe: every step skips what is already stored.
"""

import argparse

from fireworks import LaunchPad
from jobflow import Flow
from jobflow.managers.fireworks import flow_to_workflow

from dp_screen.flows.screening import ScreeningFlowMaker
from dp_screen.flows.training import TrainingFlowMaker
from dp_screen.jobs.dft import DFTStaticMaker
from dp_screen.jobs.report import ReportMaker
from dp_screen.jobs.training import FineTuneMaker, TrainingSetMaker
from dp_screen.jobs.validate import ValidateMaker
from dp_screen.mlip.training import TrainSettings
from dp_screen.settings import DPScreenSettings
from dp_screen.stores import get_job_store

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--launchpad", required=True)
parser.add_argument("--db-uri", required=True)
parser.add_argument("--dft", choices=["vasp", "cp2k"], default="vasp")
parser.add_argument("--foundation", default="medium", help="MACE foundation model (name or file)")
parser.add_argument("--training-compositions", type=int, default=340)
parser.add_argument("--validate", type=int, default=500, help="DFT-validated structures")
parser.add_argument("--chunk-size", type=int, default=500)
args = parser.parse_args()

settings = DPScreenSettings(db_uri=args.db_uri)
db = settings.model_dump(mode="json")
training = TrainingFlowMaker(
    training_set=TrainingSetMaker(n_compositions=args.training_compositions),
    dft=DFTStaticMaker(backend=args.dft),
    fine_tune=FineTuneMaker(settings=TrainSettings(foundation=args.foundation, device="cuda", epochs=50)),
).make(db)
screening = ScreeningFlowMaker(campaign="full", limit=None, chunk_size=args.chunk_size,
                               validate=ValidateMaker(n_samples=args.validate, backend=args.dft),
                               report=ReportMaker(out_dir="report_full"))  # in DP_SCREEN_HOME
flow = Flow([training, screening.make(db, model=training.output["model_path"])], name="dp_screen campaign")
wf = flow_to_workflow(flow, store=get_job_store(settings))
LaunchPad.from_file(args.launchpad).add_wf(wf)
print(f"submitted {wf.name}: {len(wf.fws)} fireworks")
