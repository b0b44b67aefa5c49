"""Hand dp_screen's ground states to atomate2: screen a few formulas, then relax each ground state freely (no
symmetry held) with atomate2's force-field relax maker and the same MACE model, as the first step of a phonon or
elastic study.

    python workflows/atomate2_handoff.py Ba2CaWO6 Cs2AgBiCl6 [--model FILE] [--top 2] [--then elastic]

The screening runs in memory (:mod:`dp_screen.api`); the atomate2 jobs run with jobflow's ``run_locally`` on an
in-memory JobStore (swap in your JobStore / FireWorks launchpad to run them on a cluster). Each atomate2 job carries
the dp_screen provenance of its structure (model sha256, relaxation settings, the call) in its metadata.
"""

from __future__ import annotations

import argparse


def handoff_flow(cells, model_path: str, then: str | None = None, device: str = "cpu"):
    """A jobflow Flow: atomate2's ``ForceFieldRelaxMaker`` (MACE, the same model file) on each cell, followed by
    atomate2's elastic flow (``then="elastic"``) or nothing."""
    from atomate2.forcefields.jobs import ForceFieldRelaxMaker
    from jobflow import Flow

    calc = {"model": str(model_path), "default_dtype": "float64", "device": device}
    relax = ForceFieldRelaxMaker(force_field_name="MACE-MP-0", calculator_kwargs=calc, relax_cell=True, steps=500)
    jobs = []
    for cell in cells:
        job = relax.make(cell.to_structure())
        job.name = f"atomate2 relax {cell.formula} ({cell.provenance.get('phase')})"
        job.metadata = {
            **(job.metadata or {}),
            "dp_screen": {"formula": cell.formula, "ordering": cell.ordering, **cell.provenance},
        }
        jobs.append(job)
        if then == "elastic":
            from atomate2.forcefields.flows.elastic import ElasticMaker

            elastic = ElasticMaker.from_force_field_name("MACE-MP-0", mlff_kwargs=calc)
            jobs.append(elastic.make(job.output.structure))
    return Flow(jobs, name="dp_screen ground states -> atomate2")


def run(
    formulas: list[str], model: str | None = None, top: int | None = None, then: str | None = None, tilts="default"
) -> dict:
    """Screen ``formulas`` with dp_screen, then run the atomate2 hand-off on the ``top`` ground states locally;
    returns {formula: atomate2 output document of its relaxation}."""
    from jobflow import JobStore, run_locally
    from maggma.stores import MemoryStore

    import dp_screen as dps
    from dp_screen.mlip.models import default_model_path

    model_path = model or str(default_model_path())
    table = dps.screen(formulas, tilts=tilts, model=model_path, progress=False)
    cells = dps.ground_states(table, top=top)
    flow = handoff_flow(cells, model_path, then)
    store = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})  # atomate2 jobs need a "data" store
    import tempfile

    # atomate2's jobs write files (the final structure) in their working folder: one folder each, not the cwd
    responses = run_locally(
        flow, store=store, create_folders=True, root_dir=tempfile.mkdtemp(prefix="dp_atomate2_"), ensure_success=True
    )
    return {
        job.metadata["dp_screen"]["formula"]: responses[job.uuid][1].output
        for job in flow.jobs
        if job.name.startswith("atomate2 relax")
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("formulas", nargs="+")
    parser.add_argument("--model", default=None, help="MACE model file (default: the packaged model)")
    parser.add_argument("--top", type=int, default=None, help="only the first N ground states")
    parser.add_argument("--then", choices=["elastic"], default=None, help="an atomate2 flow after each relaxation")
    args = parser.parse_args(argv)
    for formula, doc in run(args.formulas, args.model, args.top, args.then).items():
        out = doc.output
        print(
            f"{formula}: atomate2 {type(doc).__name__}, energy {out.energy:.4f} eV, "
            f"{out.structure.get_space_group_info()[0]}, volume {out.structure.volume:.2f} A^3"
        )


if __name__ == "__main__":
    main()
