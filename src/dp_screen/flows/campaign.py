"""The one place a campaign flow is assembled: ``dp-screen run`` / ``dp-screen submit`` and ``workflows/campaign.py``
all call :func:`campaign_flow`, so the same options give the same flow whichever way it is started."""

from __future__ import annotations

from dataclasses import dataclass, field

from jobflow import Flow

from dp_screen.mlip.relax import RelaxSettings


@dataclass
class CampaignOptions:
    """What a campaign screens and how (the options of ``dp-screen run`` / ``submit``).

    Parameters
    ----------
    limit, whole_space, seed, campaign
        ``limit`` random compositions (the same seed picks the same ones) or the whole space; the campaign tag.
    anions, tilts
        Only these X; these tilt systems (None: the default set of each ordering; ["all"]: every one).
    chunk_size
        Compositions per build / relax job.
    model, device, relax
        The model (None: the packaged one), the device (None: cuda when present) and the relaxation settings.
    n_validate, dft_backend
        DFT-validate this many relaxed structures with "cp2k" or "vasp" (0: none).
    report_dir
        Write the report at the end (relative: inside the project folder).
    training_compositions, foundation, train_epochs, train_device
        Prepend the training flow (N compositions -> DFT labels -> fine-tune ``foundation``) and screen with its
        model (None: no training).
    phase_error_mev
        sigma (meV/atom) of the phase calls instead of the model's measured error (None: the model's; see
        :mod:`dp_screen.mlip.uncertainty`).
    """

    limit: int | None = 20
    whole_space: bool = False
    seed: int = 0
    campaign: str = "default"
    anions: list[str] | None = None
    tilts: list[str] | None = None
    chunk_size: int = 500
    model: str | None = None
    device: str | None = None
    relax: RelaxSettings = field(default_factory=RelaxSettings)
    n_validate: int = 0
    dft_backend: str = "cp2k"
    report_dir: str | None = None
    training_compositions: int | None = None
    foundation: str = "medium"
    train_epochs: int | None = None
    train_device: str | None = None
    phase_error_mev: float | None = None


def screening_maker(opts: CampaignOptions):
    """The ScreeningFlowMaker of a campaign."""
    from dp_screen.flows.screening import ScreeningFlowMaker
    from dp_screen.jobs.build import BuildMaker, BuildSettings
    from dp_screen.jobs.enumerate import EnumerationSettings
    from dp_screen.jobs.relax import RelaxMaker
    from dp_screen.jobs.report import ReportMaker
    from dp_screen.jobs.validate import ValidateMaker

    validate = (
        ValidateMaker(n_samples=opts.n_validate, seed=opts.seed, backend=opts.dft_backend) if opts.n_validate else None
    )
    return ScreeningFlowMaker(
        campaign=opts.campaign,
        limit=None if opts.whole_space else opts.limit,
        seed=opts.seed,
        chunk_size=opts.chunk_size,
        enumeration=EnumerationSettings(anions=opts.anions, bv_filter="any"),
        build=BuildMaker(settings=BuildSettings(tilts=opts.tilts)),
        relax=RelaxMaker(model=opts.model, settings=opts.relax, device=opts.device),
        validate=validate,
        phase_error_mev=opts.phase_error_mev,
        report=ReportMaker(out_dir=opts.report_dir, phase_error_mev=opts.phase_error_mev) if opts.report_dir else None,
    )


def campaign_flow(opts: CampaignOptions, db_settings: dict) -> Flow:
    """The campaign's flow: (training ->) select -> build -> relax -> (validate) -> summary (-> report)."""
    maker = screening_maker(opts)
    if not opts.training_compositions:
        return maker.make(db_settings=db_settings)
    from dp_screen.flows.training import TrainingFlowMaker
    from dp_screen.jobs.dft import DFTStaticMaker
    from dp_screen.jobs.training import FineTuneMaker, TrainingSetMaker
    from dp_screen.mlip.training import TrainSettings

    train = {"foundation": opts.foundation}
    if opts.train_epochs:
        train["epochs"] = opts.train_epochs
    if opts.train_device:
        train["device"] = opts.train_device
    training = TrainingFlowMaker(
        training_set=TrainingSetMaker(n_compositions=opts.training_compositions, seed=opts.seed),
        dft=DFTStaticMaker(backend=opts.dft_backend),
        fine_tune=FineTuneMaker(settings=TrainSettings(**train)),
    ).make(db_settings)
    screening = maker.make(db_settings, model=training.output["model_path"])
    return Flow([training, screening], name="dp_screen campaign")


def flow_fingerprint(flow) -> str:
    """A Flow (or a FireWorks Workflow) as JSON with its uuids replaced by their order of first appearance and its
    timestamps and FireWorks ids dropped: equal for equal campaigns, however they were submitted."""
    import json
    import re

    if hasattr(flow, "fws"):  # a FireWorks Workflow: its fireworks' names and specs
        data = [{"name": fw.name, "spec": fw.to_dict()["spec"]} for fw in flow.fws]
    else:
        data = flow.as_dict()
    text = json.dumps(data, sort_keys=True, default=str)
    text = re.sub(r'"(created_on|updated_on)": "[^"]*"', "", text)
    seen: dict[str, str] = {}
    pattern = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    return re.sub(pattern, lambda m: seen.setdefault(m.group(0), f"uuid{len(seen)}"), text)
