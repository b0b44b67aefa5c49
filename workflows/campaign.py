"""The whole dp_screen campaign on a cluster: training flow (DFT labels -> fine-tuned MACE) then screening of the
whole composition space with the fine-tuned model, submitted to the FireWorks launchpad.

    python workflows/campaign.py --launchpad workflows/launchpad.yaml --db-uri mongodb://... [--dft vasp]
Then start workers: CPU nodes with fworker_cpu.yaml, GPU nodes with fworker_gpu.yaml (or qlaunch with
qadapter_slurm.yaml). Re-submitting after a failure is safe: every step skips what is already stored.
The flow is built by dp_screen.flows.campaign.campaign_flow, the function `dp-screen submit` uses.
"""

from __future__ import annotations

import argparse


def options(argv: list[str] | None = None):
    """The campaign's options and database settings from the command line."""
    from dp_screen.flows.campaign import CampaignOptions
    from dp_screen.jobs.validate import BACKENDS
    from dp_screen.settings import DPScreenSettings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--launchpad", required=True)
    parser.add_argument("--db-uri", required=True)
    parser.add_argument("--dft", choices=list(BACKENDS), default="vasp")
    parser.add_argument("--foundation", default="medium", help="MACE foundation model (name or file)")
    parser.add_argument("--training-compositions", type=int, default=340)
    parser.add_argument("--validate", type=int, default=500, help="DFT-validated structures")
    parser.add_argument("--chunk-size", type=int, default=500)
    args = parser.parse_args(argv)
    opts = CampaignOptions(
        campaign="full",
        whole_space=True,
        limit=None,
        chunk_size=args.chunk_size,
        n_validate=args.validate,
        dft_backend=args.dft,
        report_dir="report_full",
        training_compositions=args.training_compositions,
        foundation=args.foundation,
        train_epochs=50,
        train_device="cuda",
    )
    settings = DPScreenSettings(db_uri=args.db_uri)
    return args, opts, settings.model_copy(update={"home": settings.home.resolve()})


def main(argv: list[str] | None = None) -> None:
    from fireworks import LaunchPad
    from jobflow.managers.fireworks import flow_to_workflow

    from dp_screen.flows.campaign import campaign_flow
    from dp_screen.stores import get_job_store

    args, opts, settings = options(argv)
    flow = campaign_flow(opts, settings.model_dump(mode="json"))
    wf = flow_to_workflow(flow, store=get_job_store(settings))
    LaunchPad.from_file(args.launchpad).add_wf(wf)
    print(f"submitted {wf.name}: {len(wf.fws)} fireworks")


if __name__ == "__main__":
    main()
