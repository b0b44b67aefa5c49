"""The ``dp-screen`` command.

Every bad input or unreachable database ends with one line ``error: ...`` on stderr and exit status 1 (usage
mistakes caught by click exit with 2).
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import click

from dp_screen import __version__
from dp_screen.errors import DPScreenError, InputError
from dp_screen.flows.launchpad import initialise_launchpad, launchpad, write_worker_files
from dp_screen.progress import StageBar, progress_bars
from dp_screen.settings import DPScreenSettings
from dp_screen.stores import redact
from dp_screen.structures.bond_valence import BV_PARAMETER_SETS, DEFAULT_BV_SET


def _settings(ctx: click.Context) -> DPScreenSettings:
    return ctx.obj["settings"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dp-screen")
@click.option("--db-uri", envvar="DP_SCREEN_DB_URI", default=None, help="MongoDB URI; unset: the embedded server.")
@click.option(
    "--home",
    envvar="DP_SCREEN_HOME",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="Project folder for the embedded database and outputs (default ./.dp_screen).",
)
@click.pass_context
def cli(ctx: click.Context, db_uri: str | None, home: Path | None) -> None:
    """dp_screen: high-throughput screening of AA'BB'X6 double perovskites."""
    overrides = {k: v for k, v in {"db_uri": db_uri, "home": home}.items() if v is not None}
    try:
        ctx.obj = {"settings": DPScreenSettings(**overrides)}
    except Exception as exc:  # pydantic ValidationError from a malformed DP_SCREEN_* variable
        raise DPScreenError(f"malformed dp_screen settings: {exc}".replace("\n", " ")) from None


@cli.group()
def db() -> None:
    """Start, stop or inspect the embedded database server (or check a MongoDB URI)."""


@db.command("start")
@click.pass_context
def db_start(ctx: click.Context) -> None:
    """Start the embedded SecantusDB server (reused if already running)."""
    from dp_screen.stores import EmbeddedServer, ping

    settings = _settings(ctx)
    if settings.db_uri:
        ping(settings.db_uri, settings.db_timeout_s)
        click.echo(f"using MongoDB at {settings.db_uri}; nothing to start")
        return
    state = EmbeddedServer(settings).start(idle_stop_s=0)  # started on purpose: runs until `db stop`
    click.echo(f"embedded database running at {state['uri']} (pid {state['pid']}, data in {state['storage_path']})")


@db.command("stop")
@click.pass_context
def db_stop(ctx: click.Context) -> None:
    """Stop the embedded server."""
    from dp_screen.stores import EmbeddedServer

    stopped = EmbeddedServer(_settings(ctx)).stop()
    click.echo("embedded database stopped" if stopped else "embedded database was not running")


@db.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def db_status(ctx: click.Context, as_json: bool) -> None:
    """Where the database is, whether it answers, and how many documents each collection holds."""
    from dp_screen.stores import EmbeddedServer, database_uri

    settings = _settings(ctx)
    if settings.db_uri:
        info = {"running": True, "uri": settings.db_uri, "embedded": False}
    else:
        info = {**EmbeddedServer(settings).status(), "embedded": True}
    if info["running"]:
        from dp_screen.campaign_store import CampaignStore

        info["counts"] = CampaignStore(settings, database_uri(settings, start=False)).counts()
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    for k, v in info.items():
        click.echo(f"{k:13s} {v}")


# --------------------------------------------------------------------------------------------------------- enumerate
def _split(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@cli.command("enumerate")
@click.option(
    "--table",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Site-table CSV (default: the packaged rule R1).",
)
@click.option("--anions", default=None, help="Comma-separated X elements to keep, e.g. O,F (default: all).")
@click.option("--same-a/--no-same-a", default=True, show_default=True, help="Allow A = A'.")
@click.option("--same-b/--no-same-b", default=True, show_default=True, help="Allow B = B'.")
@click.option(
    "--bv-filter",
    type=click.Choice(["exact", "any"]),
    default=None,
    help="Keep only compositions whose every cation-anion pair has bond-valence parameters: 'exact' "
    "(an exact-valence row of bvparm2020) or 'any' (with the unspecified-valence and Brese & "
    "O'Keeffe fallbacks). Default: no filter.",
)
@click.option("--dry-run", is_flag=True, help="Count only; do not touch the store.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option(
    "--chunk-size", default=5000, show_default=True, type=click.IntRange(min=1), help="Documents per bulk write."
)
@click.pass_context
def enumerate_cmd(ctx, table, anions, same_a, same_b, bv_filter, dry_run, as_json, chunk_size) -> None:  # noqa: PLR0913
    """Enumerate every charge-balanced AA'BB'X6 composition (with descriptors) into the store."""
    from dp_screen.chemistry.composition_space import summarize
    from dp_screen.jobs.enumerate import EnumerationSettings, enumerate_table, write_compositions

    settings = EnumerationSettings(
        table=str(table) if table else None,
        anions=_split(anions),
        allow_same_a=same_a,
        allow_same_b=same_b,
        bv_filter=bv_filter,
    )
    if dry_run:
        from dp_screen.jobs.build import relaxation_counts

        _, df = enumerate_table(settings)
        summary = summarize(df)
        if as_json:
            click.echo(json.dumps(summary))
            return
        counts = relaxation_counts(df)
        _print_summary(summary)
        click.echo(
            f"default tilt systems: {counts['structures']} starting structures, {counts['relaxations']} "
            f"relaxations (oxidation-state twins share theirs: {counts['saved']} saved)"
        )
        return

    with StageBar("writing compositions", "comp") as bar:
        summary = write_compositions(
            settings, _settings(ctx), chunk_size=chunk_size, progress=bar.update, on_total=bar.start
        )
    if as_json:
        click.echo(json.dumps(summary))
    else:
        _print_summary(summary)
        click.echo(
            f"written: {summary['inserted']} new, {summary['replaced']} replaced, {summary['skipped']} already stored; "
            f"collection 'compositions' now holds {summary['stored_total']} documents ({summary['seconds']} s)"
        )


def _print_summary(summary: dict) -> None:
    click.echo(
        f"compositions: {summary['total']}  (with Cs: {summary['with_Cs']}; {summary['chemistries']} distinct "
        f"chemistries x orderings, {summary['oxidation_state_twins']} oxidation-state twins)"
    )
    for anion, n in summary["by_anion"].items():
        click.echo(f"  X = {anion:2s} {n:>8d}")


# ------------------------------------------------------------------------------------------------------- descriptors
@cli.command("descriptors")
@click.option(
    "--input",
    "input_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="CSV with columns A, A2, B, B2, X and optionally nA, nA2, nB, nB2, nX.",
)
@click.option(
    "--output",
    "output_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="CSV to write (one row per input row; bad rows carry an 'error').",
)
@click.option(
    "--table",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Site table whose radii take precedence (default: rule R1).",
)
def descriptors_cmd(input_path: Path, output_path: Path, table: Path | None) -> None:
    """Compute descriptors for a user's list of compositions."""
    import pandas as pd

    from dp_screen.chemistry.site_tables import load_site_table
    from dp_screen.chemistry.user_compositions import descriptors_for_table

    try:
        rows = pd.read_csv(input_path, dtype=str, keep_default_na=False, comment="#", skipinitialspace=True)
    except FileNotFoundError:
        raise InputError(f"input file {str(input_path)!r} does not exist") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"input file {str(input_path)!r} is not a readable CSV: {exc}".replace("\n", " ")) from None
    rows.columns = [c.strip() for c in rows.columns]
    out = descriptors_for_table(rows, load_site_table(table))
    output_path.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(output_path, index=False)
    bad = out[out["error"] != ""]
    for msg in bad["error"]:
        click.echo(f"error: {msg}", err=True)
    click.echo(f"wrote {output_path}: {len(out) - len(bad)} compositions with descriptors, {len(bad)} rejected")
    if len(bad):
        sys.exit(1)


# ------------------------------------------------------------------------------------------------------------ build
@cli.command("build")
@click.option("--formula", required=True, help="AA'BB'X6 formula in site order, e.g. Cs2AgBiCl6 or Sr2Fe3+Mo5+O6.")
@click.option(
    "--ordering",
    type=click.Choice(["rocksalt", "layered", "rocksalt-A"]),
    default=None,
    help="Cation ordering (default: expected from the descriptors).",
)
@click.option("--tilt", default="a0a0a0", show_default=True, help="Glazer tilt system, e.g. a0a0c-, a+b-b-.")
@click.option("--method", type=click.Choice(["bvm", "dls"]), default="bvm", show_default=True)
@click.option("--fixed-midpoint", is_flag=True, help="BVM with X fixed midway between B and B' (for comparison).")
@click.option("--move-a", is_flag=True, help="BVM: also optimise the symmetry-allowed A-cation displacements.")
@click.option(
    "--bv-set",
    type=click.Choice(list(BV_PARAMETER_SETS)),
    default=DEFAULT_BV_SET,
    show_default=True,
    help="BVM: bond-valence parameter set (adams2001: Adams' softness parameters for alkali cations).",
)
@click.option(
    "--cell",
    type=click.Choice(["conventional", "primitive", "sutton"]),
    default="conventional",
    show_default=True,
    help="Cell written to --out (sutton: the 10-atom fcc cell, untilted only).",
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="CIF file to write.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def build_cmd(formula, ordering, tilt, method, fixed_midpoint, move_a, bv_set, cell, out, as_json) -> None:  # noqa: PLR0913
    """Build one starting structure and print its space group, lattice, volume, GII and tilt angles."""
    from pymatgen.io.cif import CifWriter

    from dp_screen.api import build_cell, resolve_formula
    from dp_screen.structures.perovskite import sutton_cell

    species, row = resolve_formula(formula)
    ordering = ordering or row["expected_ordering"]
    _, built = build_cell(species, ordering, tilt, method, bv_set, fixed_midpoint=fixed_midpoint, move_a=move_a)
    summary = built.summary()
    summary["composition_id"] = row["composition_id"]
    if out:
        structure = {
            "conventional": built.conventional,
            "primitive": lambda: built.structure,
            "sutton": lambda: sutton_cell(built),
        }[cell]()
        out.parent.mkdir(parents=True, exist_ok=True)
        # the conventional cell is written with its symmetry; the others exactly as they are
        CifWriter(structure, symprec=1e-3 if cell == "conventional" else None).write_file(out)
        summary["structure_file"] = str(out)
    if as_json:
        click.echo(json.dumps(summary))
        return
    lat = summary["lattice"]
    click.echo(f"{summary['formula']} ({summary['composition_id']}), {ordering}, {tilt}, {summary['method']}")
    click.echo(
        f"  space group {summary['space_group']}; a b c = {lat['a']} {lat['b']} {lat['c']} A; "
        f"alpha beta gamma = {lat['alpha']} {lat['beta']} {lat['gamma']}"
    )
    click.echo(
        f"  volume/f.u. {summary['volume_per_fu']} A^3; GII {summary['gii']} v.u.; tilts {summary['tilt_angles']} deg"
    )
    if out:
        click.echo(f"  wrote {out}")


@cli.command("build-all")
@click.option("--tilts", default=None, help="Comma-separated tilt systems, or 'all' (default: the default set).")
@click.option(
    "--method",
    "methods",
    multiple=True,
    type=click.Choice(["bvm", "dls"]),
    default=("bvm",),
    show_default=True,
    help="Repeat for both.",
)
@click.option(
    "--ordering",
    type=click.Choice(["rocksalt", "layered", "rocksalt-A"]),
    default=None,
    help="Force one ordering (default: each composition's expected ordering).",
)
@click.option("--move-a", is_flag=True, help="BVM: also optimise the symmetry-allowed A-cation displacements.")
@click.option(
    "--bv-set",
    type=click.Choice(list(BV_PARAMETER_SETS)),
    default=DEFAULT_BV_SET,
    show_default=True,
    help="BVM: bond-valence parameter set (adams2001: Adams' softness parameters for alkali cations).",
)
@click.option("--anions", default=None, help="Only compositions with these X (comma-separated).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N compositions (by id).")
@click.option("--chunk-size", type=click.IntRange(min=1), default=2000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_context
def build_all_cmd(ctx, tilts, methods, ordering, move_a, bv_set, anions, limit, chunk_size, as_json) -> None:  # noqa: PLR0913
    """Build the starting structures of every composition in the store (chunked, resumable, with progress)."""
    from dp_screen.jobs.build import BuildSettings, build_structures_to_store

    settings = BuildSettings(
        tilts=_split(tilts), methods=list(methods), ordering=ordering, move_a=move_a, bv_set=bv_set
    )
    query = {"X": {"$in": _split(anions)}} if anions else None
    with StageBar("building structures", "struct") as bar:
        summary = build_structures_to_store(
            settings,
            _settings(ctx),
            query=query,
            limit=limit,
            chunk_size=chunk_size,
            progress=bar.update,
            on_total=bar.start,
        )
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo(
            f"{summary['compositions']} compositions: {summary['built']} structures built, {summary['failed']} "
            f"failed (reasons stored), {summary['skipped']} already stored ({summary['seconds']} s)"
        )


# ------------------------------------------------------------------------------------------------------------ relax
def _relax_options(f):
    for opt in reversed(
        [
            click.option("--model", default=None, help="Model file or foundation name (default: the packaged model)."),
            click.option("--device", default="auto", show_default=True, help="cpu, cuda or auto."),
            click.option(
                "--dtype",
                type=click.Choice(["auto", "float64", "float32"]),
                default="auto",
                show_default=True,
                help="auto: float32 on CUDA, float64 on the CPU.",
            ),
            *_criteria_options(),
        ]
    ):
        f = opt(f)
    return f


def _criteria_options():
    """Convergence criteria and symmetry of a relaxation (shared by relax, run and submit)."""
    return [
        click.option(
            "--fmax",
            type=float,
            default=0.05,
            show_default=True,
            help="Converged when the max atomic force is below this (eV/A).",
        ),
        click.option(
            "--max-stress",
            type=float,
            default=0.2,
            show_default=True,
            help="... and the max |stress component| is below this (GPa); 0.2 GPa resolves 1 meV/atom "
            "phase differences even in soft iodides.",
        ),
        click.option(
            "--free",
            is_flag=True,
            help="Relax without holding the starting space group (default: each "
            "variant keeps its space group, so its energy is that tilt system's).",
        ),
        click.option("--max-steps", type=click.IntRange(min=1), default=500, show_default=True),
    ]


def _relax_settings(fmax, max_stress, free, max_steps):
    from dp_screen.mlip.relax import RelaxSettings

    return RelaxSettings(fmax=fmax, max_stress_gpa=max_stress, fix_symmetry=not free, max_steps=max_steps)


@cli.command("relax")
@_relax_options
@click.option(
    "--structure",
    "structure_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Relax this one file (CIF, POSCAR, ...) and print the result instead of the store's structures.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="With --structure: write the relaxed structure here (CIF).",
)
@click.option("--anions", default=None, help="Only structures of compositions with these X (comma-separated).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N structures (by id).")
@click.option(
    "--chunk-size",
    type=click.IntRange(min=1),
    default=4096,
    show_default=True,
    help="Structures read and streamed through the device together (the device batch is sized by memory).",
)
@click.option(
    "--committee",
    default=None,
    help="Committee model files (comma-separated, >= 2; e.g. a 'dp-screen learn' round's members): score "
    "every relaxed structure with the committee's energy and force spread.",
)
@click.option(
    "--share-twins/--no-share-twins",
    default=True,
    show_default=True,
    help="Oxidation-state twins (the same elements on the same sites) share one relaxation; --no-share-twins "
    "relaxes each composition's own start.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def relax_cmd(
    ctx,
    model,
    device,
    dtype,
    fmax,
    max_stress,
    free,
    max_steps,
    structure_file,
    out,
    anions,
    limit,
    chunk_size,
    committee,
    share_twins,
    as_json,
):  # noqa: PLR0913
    """Relax the stored starting structures (chunked, resumable) or one structure file.

    Each structure keeps its starting space group unless --free; converged means max force < --fmax (eV/A) and
    max |stress| < --max-stress (GPa). Unconverged and no-longer-perovskite results are stored but not ranked.
    """
    settings = _relax_settings(fmax, max_stress, free, max_steps)
    if structure_file is not None:
        _relax_one(structure_file, out, model, device, dtype, settings, as_json)
        return
    from dp_screen.jobs.relax import relax_store

    query = {"formula": {"$regex": "(" + "|".join(f"{x}6$" for x in _split(anions)) + ")"}} if anions else None
    with StageBar("relaxing", "struct") as bar:
        summary = relax_store(
            model,
            settings,
            _settings(ctx),
            query=query,
            limit=limit,
            chunk_size=chunk_size,
            device=None if device == "auto" else device,
            dtype=None if dtype == "auto" else dtype,
            progress=bar.update,
            on_total=bar.start,
            committee=_split(committee),
            share_twins=share_twins,
        )
    if as_json:
        click.echo(json.dumps(summary))
        return
    click.echo(
        f"{summary['structures']} structures: {summary['relaxed']} relaxed ({summary['converged']} converged, "
        f"{summary['failed']} failed, {summary['not_perovskite']} no longer perovskites, {summary['left_start_tilt']} "
        f"left their tilt system), {summary['shared']} copied from an oxidation-state twin's relaxation, "
        f"{summary['skipped']} already relaxed with this model and settings; phase summaries of "
        f"{summary['phase_summaries']} compositions updated; model {summary['model']['model_name']} "
        f"({summary['model']['model_sha256'][:12]}) on {summary['model']['device']} ({summary['seconds']} s)"
        + (f"; {summary['scored_by_committee']} scored by the committee" if committee else "")
    )


def _relax_one(path: Path, out: Path | None, model, device, dtype, settings, as_json: bool) -> None:
    from pymatgen.core import Structure

    from dp_screen import api
    from dp_screen.structures.phases import space_groups

    try:
        structure = Structure.from_file(path)
    except FileNotFoundError:
        raise InputError(f"structure file {str(path)!r} does not exist") from None
    except Exception as exc:  # noqa: BLE001 - pymatgen raises many kinds for unreadable files
        raise InputError(f"cannot read structure file {str(path)!r}: {exc}") from None
    # a structure from elsewhere: its A/A'/B/B'/X sites and ordering inferred (one clear error if it is no AA'BB'X6)
    cell = api.PerovskiteCell.from_structure(structure, name=str(path))
    (r,) = api.relax(
        cell,
        model=model,
        device=None if device == "auto" else device,
        dtype=None if dtype == "auto" else dtype,
        settings=settings,
        progress=False,
    )
    result, check, phase = r.cell, r.gate, r.phase
    volume_change = result.structure.volume / cell.structure.volume - 1
    summary = {
        "energy": r.energy,
        "energy_per_atom": r.energy_per_atom,
        "max_force": r.max_force,
        "max_stress_gpa": r.max_stress_gpa,
        "stress_gpa": r.stress_gpa,
        "n_steps": r.n_steps,
        "converged": r.converged,
        "failed": r.failed,
        "reason": r.reason,
        "volume": result.structure.volume,
        "volume_change": volume_change,
        "n_atoms": len(result.structure),
        "formula": structure.composition.reduced_formula,
        "space_groups": space_groups(result.structure),
        "ordering": cell.ordering,
        "phase": phase.phase if phase else None,
        "model": r.model,
        "settings": r.settings,
        "perovskite_check": check.as_dict() if check else None,
    }
    if out:
        from pymatgen.io.cif import CifWriter

        out.parent.mkdir(parents=True, exist_ok=True)
        CifWriter(result.structure).write_file(out)
        summary["structure_file"] = str(out)
    if as_json:
        click.echo(json.dumps(summary, default=float))
        return
    state = "failed: " + r.reason if r.failed else ("converged" if r.converged else "NOT converged")
    click.echo(
        f"{summary['formula']}: {state} after {r.n_steps} steps; E = {r.energy_per_atom:.4f} eV/atom; "
        f"max force {r.max_force:.3f} eV/A; max |stress| {r.max_stress_gpa:.3f} GPa; volume change "
        f"{100 * summary['volume_change']:+.2f}%; space group {summary['space_groups']}; phase {summary['phase']}"
        + (f"; NOT a perovskite any more: {check.reason}" if check and not check.ok else "")
    )


@cli.command("finetune")
@click.option(
    "--data",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Labelled structures, extended XYZ with REF_energy, REF_forces (and REF_stress).",
)
@click.option(
    "--foundation", default=None, help="Foundation model: name (network) or local file; omit to train from scratch."
)
@click.option(
    "--test", "test_file", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Test set (extxyz)."
)
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--lr", type=float, default=0.01, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True)
@click.option(
    "--e0s",
    default="auto",
    show_default=True,
    help="auto (the foundation's E0s when fine-tuning, else a least-squares average), average or foundation.",
)
@click.option(
    "--only-data-elements",
    is_flag=True,
    help="Keep only the training data's elements (default: every element of the foundation model).",
)
@click.option(
    "--energy-reference",
    type=click.Choice(["absolute", "per_composition"]),
    default="absolute",
    show_default=True,
    help="per_composition: fit energies relative within each composition (phase differences), keeping the "
    "foundation's absolute level per composition (needs --foundation).",
)
@click.option(
    "--multihead/--no-multihead",
    default=False,
    show_default=True,
    help="Multihead replay fine-tuning (needs the foundation's training data: network).",
)
@click.option("--device", default="cpu", show_default=True)
@click.option("--name", default="dp_screen_ft", show_default=True, help="Model name (files are name-vN-sha.model).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def finetune_cmd(
    ctx,
    data,
    foundation,
    test_file,
    epochs,
    lr,
    batch_size,
    e0s,
    only_data_elements,
    energy_reference,
    multihead,
    device,
    name,
    as_json,
):  # noqa: PLR0913
    """Fine-tune a MACE foundation model on labelled data; the model and its errors go to the models collection."""
    from dp_screen.jobs.relax import finetune_to_store
    from dp_screen.mlip.training import TrainSettings

    settings = TrainSettings(
        foundation=foundation,
        multihead=multihead,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        e0s=e0s,
        keep_elements=not only_data_elements,
        device=device,
        energy_reference=energy_reference,
    )
    doc = finetune_to_store(data, settings, _settings(ctx), name=name, test=test_file)
    if as_json:
        click.echo(json.dumps(doc))
        return
    click.echo(f"model {doc['path']} (sha256 {doc['sha256'][:12]}, version {doc['version']})")
    for split, err in doc["errors"].items():
        if err.get("n_uncovered"):
            click.echo(
                f"  {split:5s} {err['n_uncovered']} structures left out: the model does not cover "
                f"{', '.join(err['uncovered_elements'])}"
            )
        if not err.get("n"):
            continue
        click.echo(
            f"  {split:5s} E MAE {err['energy_mae_mev_atom']:.1f} meV/atom, F MAE {err['forces_mae_mev_a']:.0f} "
            f"meV/A, stress MAE {err['stress_mae_gpa']:.2f} GPa (n = {err['n']})"
        )


# ------------------------------------------------------------------------------------------------- campaign: run
def _phase_error_option():
    return click.option(
        "--phase-error",
        "phase_error",
        type=click.FloatRange(min=0),
        default=None,
        metavar="MEV",
        help="sigma (meV/atom) of a phase energy difference for the tilted / untilted calls (called "
        "when |dE| > 2 sigma); default: the model's measured error (its card or its "
        "fine-tuning test set), or its committee's spread.",
    )


def _campaign_options(f):
    for opt in reversed(
        [
            click.option(
                "--limit",
                type=click.IntRange(min=1),
                default=20,
                show_default=True,
                help="Random compositions to screen (the same --seed picks the same ones).",
            ),
            click.option("--all", "whole_space", is_flag=True, help="Screen the whole space (ignores --limit)."),
            click.option("--seed", type=int, default=0, show_default=True),
            click.option(
                "--campaign", default="default", show_default=True, help="Tag of the campaign's compositions."
            ),
            click.option("--anions", default=None, help="Only these X (comma-separated)."),
            click.option(
                "--tilts", default=None, help="Comma-separated tilt systems, or 'all' (default: default set)."
            ),
            click.option(
                "--chunk-size",
                type=click.IntRange(min=1),
                default=500,
                show_default=True,
                help="Compositions per build / relax job.",
            ),
            click.option("--model", default=None, help="Model file or foundation name (default: the packaged model)."),
            click.option("--device", default=None, help="cpu or cuda (default: cuda when present)."),
            *_criteria_options(),
            click.option(
                "--validate",
                "n_validate",
                type=click.IntRange(min=0),
                default=0,
                show_default=True,
                help="DFT-validate this many relaxed structures (CP2K, when installed).",
            ),
            click.option(
                "--report",
                "report_dir",
                default=None,
                metavar="DIR",
                help="Write the HTML report (dp-screen report) at the end; relative: inside --home.",
            ),
            _phase_error_option(),
        ]
    ):
        f = opt(f)
    return f


def _campaign_opts(
    limit,
    whole_space,
    seed,
    campaign,
    anions,
    tilts,
    chunk_size,
    model,
    device,
    relax_settings,
    n_validate,
    report_dir=None,
    dft_backend="cp2k",
    phase_error=None,
    **training,
):
    from dp_screen.flows.campaign import CampaignOptions

    if n_validate and dft_backend == "cp2k":
        from dp_screen.dft.cp2k import cp2k_executable

        if cp2k_executable() is None:
            click.echo("note: cp2k is not installed; skipping DFT validation (apt-get install -y cp2k)", err=True)
            n_validate = 0
    return CampaignOptions(
        limit=limit,
        whole_space=whole_space,
        seed=seed,
        campaign=campaign,
        anions=_split(anions),
        tilts=_split(tilts),
        chunk_size=chunk_size,
        model=model,
        device=device,
        relax=relax_settings,
        n_validate=n_validate,
        dft_backend=dft_backend,
        report_dir=report_dir,
        phase_error_mev=phase_error,
        **training,
    )


@cli.command("run")
@_campaign_options
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes running independent chunk jobs concurrently [default: all cores, at most one per "
    "chunk]; 1 runs everything in this process.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--verbose", is_flag=True, help="Print jobflow's log line of every job (instead of progress bars).")
@click.pass_context
def run_cmd(
    ctx,
    limit,
    whole_space,
    seed,
    campaign,
    anions,
    tilts,
    chunk_size,
    model,
    device,
    fmax,
    max_stress,
    free,
    max_steps,
    n_validate,
    report_dir,
    phase_error,
    workers,
    as_json,
    verbose,
):  # noqa: PLR0913
    """Run the whole pipeline on this machine: N random compositions -> build -> relax -> (validate) -> summary.

    With several workers, the build and relax chunk jobs run concurrently in worker processes (a private FireWorks
    launchpad in the database, dropped afterwards); one worker runs every job in this process."""
    from dp_screen.flows.local import default_workers, run_flow
    from dp_screen.mlip.models import load_model
    from dp_screen.stores import database_uri

    settings = _settings(ctx)
    settings = settings.model_copy(update={"home": settings.home.resolve()})  # workers run in their own folders
    uri = database_uri(settings)  # starts the embedded server, or checks the URI, before any work
    load_model(model, device=device)  # a missing or unloadable model fails now, not in the middle
    from dp_screen.flows.campaign import campaign_flow

    opts = _campaign_opts(
        limit,
        whole_space,
        seed,
        campaign,
        anions,
        tilts,
        chunk_size,
        model,
        device,
        _relax_settings(fmax, max_stress, free, max_steps),
        n_validate,
        report_dir,
        phase_error=phase_error,
    )
    flow = campaign_flow(opts, settings.model_dump(mode="json"))
    if workers is None:  # every core, but no more processes than there are chunks to run at once
        workers = default_workers() if whole_space else min(default_workers(), -(-limit // chunk_size))
    click.echo(
        f"dp-screen run: campaign '{campaign}', {'all' if whole_space else limit} compositions, database "
        f"{uri}/{settings.database}, {workers} worker{'s' * (workers > 1)}",
        err=True,
    )
    summary_uuid = flow.output.uuid
    report_uuids = [j.uuid for j in flow.jobs if j.name == "report"] if report_dir else []
    with _job_log(verbose):
        outputs = run_flow(flow, settings, workers, [summary_uuid, *report_uuids], progress=not verbose)
    summary = outputs.get(summary_uuid)
    report = next((outputs[u] for u in report_uuids if u in outputs), None)
    if summary is None:
        raise DPScreenError("the campaign did not finish: see the messages above; run the same command again to resume")
    if report_dir and report is None:
        raise DPScreenError("the report was not written: see the messages above; run the same command again")
    if report:
        summary["report"] = report["html"]
    from dp_screen.campaign_store import CampaignStore

    summary["table"] = CampaignStore(settings).campaign_table(summary["table_id"])  # the summary job stored it
    if as_json:
        click.echo(json.dumps(summary, default=str))
        return
    _print_campaign(summary, settings)


@contextlib.contextmanager
def _job_log(verbose: bool, also: tuple = (), bars: bool = True):
    """jobflow's per-job log lines with ``verbose``; otherwise one progress bar per stage (building, relaxing) and
    only the failures (a failed job's traceback, jobflow's warnings); ``bars=False`` leaves the bars as they are.
    Stdout goes to stderr meanwhile: stdout is the result. ``also``: more loggers whose lines go to stderr. The
    handlers are removed afterwards, so none outlives the stream it writes to (an in-process caller's, e.g. a
    notebook's or a test's)."""
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    if not verbose:
        handler.addFilter(lambda r: r.levelno >= logging.WARNING or "failed with exception" in r.getMessage())
    jobflow_log = logging.getLogger("jobflow")
    jobflow_log.setLevel(logging.INFO)
    loggers = (jobflow_log, *also)
    for log in loggers:
        log.addHandler(handler)
    try:
        bar_setting = progress_bars(enabled=not verbose) if bars else contextlib.nullcontext()
        with contextlib.redirect_stdout(sys.stderr), bar_setting:
            yield
    finally:
        for log in loggers:
            log.removeHandler(handler)


def _print_campaign(summary: dict, settings) -> None:
    click.echo(
        f"\ncampaign '{summary['campaign']}': {summary['compositions']} compositions, "
        f"{summary['relaxations']} relaxations ({summary['converged']} converged, {summary['failed']} failed), "
        f"model {summary['model_sha256_12']}"
    )
    click.echo(
        f"{'composition':32s} {'formula':14s} {'tau':>4s} {'call':>12s} {'dE tilt':>14s} {'+-2 sigma':>9s}  "
        f"{'phases within 2 sigma':28s} excluded of variants"
    )
    for r in summary["table"]:
        de = "" if r.get("dE_tilt_mev_atom") is None else f"{r['dE_tilt_mev_atom']:8.1f} meV/at"
        band = "" if r.get("phase_error_mev") is None else f"{2 * r['phase_error_mev']:5.0f}"
        tau = "yes" if r["tau_perovskite"] else "no"
        ex = r.get("excluded") or {}
        why = f"{sum(ex.values())} of {r.get('n_variants', 0)}" + (
            f" ({', '.join(f'{n} {w}' for w, n in ex.items())})" if ex else ""
        )
        call = r.get("call") or "-"
        if call == "tilted":
            call = str(r.get("ground_state"))
        click.echo(
            f"{r['composition_id']:32s} {r['formula']:14s} {tau:>4s} {call:>12s} {de:>14s} {band:>9s}  "
            f"{(r.get('phases_within_error') or '-'):28s} {why}"
        )
    calls = summary.get("calls") or {}
    frac = summary.get("tilted_ground_state_fraction")
    click.echo(
        f"calls: {calls.get('tilted', 0)} tilted, {calls.get('untilted', 0)} untilted, "
        f"{calls.get('undetermined', 0)} undetermined"
        + (f" ({100 * frac:.0f}% tilted of the determined)" if frac is not None else "")
        + f"; ground states: {summary['lowest_phase_counts']}"
    )
    click.echo(
        "call: tilted when dE tilt = E(untilted) - E(lowest tilted phase) > 2 sigma, untilted when < -2 sigma "
        "or no tilted start stayed tilted, else undetermined; " + _sigma_line(summary.get("phase_errors"))
    )
    excluded = summary.get("excluded") or {}
    click.echo(
        "ranked: converged relaxations that are still perovskites, each under the phase it ended in; kept out: "
        + (", ".join(f"{n} {why}" for why, n in excluded.items()) or "none")
    )
    for line in summary.get("model_accuracy") or []:
        click.echo(f"model accuracy: {line}")
    if summary.get("validation"):
        click.echo(f"validation: {summary['validation']}")
    if summary.get("report"):
        click.echo(f"report: {summary['report']}")
    click.echo(
        f"results: database '{settings.database}', collections compositions, structures, relaxations, "
        f"validations (dp-screen db status); project folder {settings.home.resolve()}"
    )


def _sigma_line(errors: list[dict] | None) -> str:
    """Which sigma(s) the calls used."""
    parts = []
    for e in errors or []:
        if e["phase_error_mev"] is None:
            parts.append("unqualified calls (the model has no measured phase-energy error: pass --phase-error MEV)")
        else:
            parts.append(f"sigma {e['phase_error_mev']:.1f} meV/atom ({e['source']})")
    return ", ".join(parts) or "no calls"


@cli.command("submit")
@_campaign_options
@click.option(
    "--launchpad",
    "launchpad_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="FireWorks launchpad YAML (default: a launchpad in the dp_screen database).",
)
@click.option("--dft", "dft_backend", type=click.Choice(["cp2k", "vasp"]), default="cp2k", show_default=True)
@click.option(
    "--with-training",
    "training_compositions",
    type=click.IntRange(min=1),
    default=None,
    help="Prepend the training flow (N compositions -> DFT -> fine-tune) and screen with its model.",
)
@click.option("--foundation", default="medium", show_default=True, help="Foundation model of the training flow.")
@click.option(
    "--train-epochs", type=click.IntRange(min=1), default=None, help="Fine-tuning epochs of the training flow."
)
@click.option("--train-device", default=None, help="Device of the training flow's fine-tuning (e.g. cuda).")
@click.option("--reset", is_flag=True, help="Reset the launchpad first (deletes its workflows).")
@click.pass_context
def submit_cmd(
    ctx,
    limit,
    whole_space,
    seed,
    campaign,
    anions,
    tilts,
    chunk_size,
    model,
    device,
    fmax,
    max_stress,
    free,
    max_steps,
    n_validate,
    report_dir,
    phase_error,
    launchpad_file,
    dft_backend,
    training_compositions,
    foundation,
    train_epochs,
    train_device,
    reset,
):  # noqa: PLR0913
    """Submit the campaign to a FireWorks launchpad (relax chunks carry the worker category 'gpu').

    Workers reach the database from settings fixed here (the MongoDB URI, or the absolute project folder of the
    embedded server), never from their own working folder. A launchpad that has never been used is initialised (one
    that has is never wiped, unless --reset). The launchpad and worker files to use are written into the project
    folder, and the command printed runs as printed.
    """
    from jobflow.managers.fireworks import flow_to_workflow

    from dp_screen.flows.campaign import campaign_flow
    from dp_screen.stores import database_uri, get_job_store

    settings = _settings(ctx)
    home = settings.home.resolve()
    worker_settings = settings.model_copy(update={"home": home})  # absolute: rockets run in their own folders
    uri = database_uri(worker_settings)
    opts = _campaign_opts(
        limit,
        whole_space,
        seed,
        campaign,
        anions,
        tilts,
        chunk_size,
        model,
        device,
        _relax_settings(fmax, max_stress, free, max_steps),
        n_validate,
        report_dir,
        dft_backend,
        phase_error=phase_error,
        training_compositions=training_compositions,
        foundation=foundation,
        train_epochs=train_epochs,
        train_device=train_device,
    )
    flow = campaign_flow(opts, worker_settings.model_dump(mode="json"))
    lpad = launchpad(worker_settings, launchpad_file)
    if reset:
        lpad.reset("", require_password=False)
    else:
        initialise_launchpad(lpad)
    wf = flow_to_workflow(flow, store=get_job_store(worker_settings, uri))
    mapping = lpad.add_wf(wf)
    lp_file = launchpad_file or write_worker_files(lpad, home)
    here = Path.cwd()

    def shown(path: Path) -> str:
        path = Path(path).resolve()
        return str(path.relative_to(here)) if path.is_relative_to(here) else str(path)

    click.echo(
        f"submitted workflow '{wf.name}' with {len(wf.fws)} fireworks (ids {min(mapping.values())}-"
        f"{max(mapping.values())}) to {redact(lpad.host)}/{lpad.name}"
    )
    click.echo(f"run it on this machine with: rlaunch -l {shown(lp_file)} -w {shown(home / 'fworker.yaml')} rapidfire")
    click.echo(
        f"or CPU and GPU workers apart: -w {shown(home / 'fworker_cpu.yaml')} / -w {shown(home / 'fworker_gpu.yaml')}"
    )


@cli.command("learn")
@click.option(
    "--loop",
    "loop_id",
    default="default",
    show_default=True,
    help="Loop id: its rounds and labels are stored under it; the same id resumes.",
)
@click.option(
    "--oracle",
    type=click.Choice(["chgnet", "cp2k", "vasp"]),
    default="chgnet",
    show_default=True,
    help="Who labels: CHGNet (the packaged model's teacher), CP2K (local DFT) or VASP (atomate2; needs --submit).",
)
@click.option("--selection", type=click.Choice(["uncertainty", "random"]), default="uncertainty", show_default=True)
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--per-round", type=click.IntRange(min=1), default=24, show_default=True, help="Labels per round.")
@click.option(
    "--cap",
    "per_composition",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Diversity: at most this many labels per composition per round.",
)
@click.option("--committee", "committee_size", type=click.IntRange(min=2), default=3, show_default=True)
@click.option(
    "--pool",
    "n_pool",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Random tau-perovskite rock-salt compositions in the pool (or --formulas).",
)
@click.option(
    "--held-out",
    "n_held_out",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Random compositions of the held-out set, disjoint from the pool (or --held-out-formulas).",
)
@click.option(
    "--formulas", default=None, help="Pool compositions, comma-separated formulas (e.g. Ba2CaMoO6,Cs2AgBiCl6)."
)
@click.option("--held-out-formulas", default=None, help="Held-out compositions, comma-separated formulas.")
@click.option("--tilts", default=None, help="Tilt systems, comma-separated (default: the ordering's default set).")
@click.option("--start-model", default=None, help="Model the committee starts from (default: the packaged model).")
@click.option(
    "--epochs", type=click.IntRange(min=1), default=6, show_default=True, help="Fine-tuning epochs per round."
)
@click.option("--lr", type=float, default=0.005, show_default=True)
@click.option(
    "--e0s",
    type=click.Choice(["auto", "refit", "foundation", "average"]),
    default=None,
    help="Isolated-atom energies of the fine-tunes (default: refit for DFT oracles, whose energy reference "
    "differs from the start model's by an element-dependent constant; auto for chgnet).",
)
@click.option(
    "--max-steps",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="Pool relaxation steps (their path frames are candidates).",
)
@click.option("--frames-every", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--submit", is_flag=True, help="Submit the loop to the FireWorks launchpad instead of running it here.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def learn_cmd(ctx, **opts):
    """Active learning: relax a pool with the current committee, label its most uncertain structures with the
    oracle, fine-tune the committee, measure it on a held-out set; per round, resumable."""
    from dp_screen.flows.active_learning import ActiveLearningFlowMaker
    from dp_screen.jobs.active_learning import LoopStore, check_disjoint, pool_rows
    from dp_screen.stores import database_uri, get_job_store

    settings = _settings(ctx)
    loop_id, oracle, tilts, seed = opts["loop_id"], opts["oracle"], _split(opts["tilts"]), opts["seed"]
    if opts["submit"]:
        settings = settings.model_copy(update={"home": settings.home.resolve()})
    elif oracle == "vasp":
        raise InputError(
            "the vasp oracle runs atomate2 jobs on cluster workers: add --submit (in-process oracles: chgnet, cp2k)"
        )
    loop = _loop_settings(opts)
    held = pool_rows(opts["n_held_out"], seed + 1, formulas=_split(opts["held_out_formulas"]))
    exclude = {r["composition_id"] for r in held}
    pool = pool_rows(opts["n_pool"], seed, exclude=exclude, formulas=_split(opts["formulas"]))
    check_disjoint(pool, held)
    uri = database_uri(settings)  # (after the input is checked: bad input starts no server)
    flow = ActiveLearningFlowMaker(loop=loop, tilts=tilts).make(pool, held, settings.model_dump(mode="json"))
    if opts["submit"]:
        _submit_learning(flow, settings, uri, loop_id)
        return
    import logging

    from jobflow import run_locally

    click.echo(
        f"dp-screen learn: loop '{loop_id}', {len(pool)} pool and {len(held)} held-out compositions, oracle "
        f"{oracle}, {loop.rounds} rounds of {loop.per_round} labels, committee of {loop.committee_size}",
        err=True,
    )
    progress = logging.getLogger("dp_screen.active_learning")
    progress.setLevel(logging.INFO)
    with _job_log(verbose=True, also=(progress,), bars=False):  # handlers removed afterwards: no stale streams
        store = get_job_store(settings, uri)
        run_locally(flow, store=store, create_folders=False, log=False, ensure_success=False)
    done = LoopStore(settings).rounds(loop_id)
    if len([d for d in done if d.get("stage") == "done"]) < loop.rounds:
        raise DPScreenError(
            f"loop '{loop_id}' did not finish: see the messages above; run the same command again to "
            "resume (nothing finished is repeated)"
        )
    start = (done[0].get("metrics_start") or {}) if done else {}
    rows = [_round_row(d) for d in done]
    if opts["as_json"]:
        click.echo(json.dumps({"loop_id": loop_id, "start": start, "rounds": rows}, default=str))
        return
    _print_rounds(start, rows)
    click.echo(
        "held-out errors (meV/atom, eV/A) of the committee's mean against the oracle; committee files in "
        f"{settings.home.resolve() / 'active_learning' / loop_id}"
    )


def _loop_settings(opts: dict):
    """The loop's settings from ``dp-screen learn``'s options (tilt systems and the start model checked first)."""
    from dp_screen.mlip.active_learning import LoopSettings
    from dp_screen.mlip.models import load_model
    from dp_screen.mlip.relax import RelaxSettings
    from dp_screen.mlip.training import TrainSettings
    from dp_screen.structures.tilts import parse_tilt

    for t in _split(opts["tilts"]) or []:
        parse_tilt(t)  # a bad tilt system or start model fails here, naming it, not inside a job
    start_model = opts["start_model"]
    load_model(start_model, device="cpu")
    e0s = opts["e0s"] or ("refit" if opts["oracle"] in ("cp2k", "vasp") else "auto")
    train = TrainSettings(
        epochs=opts["epochs"], lr=opts["lr"], batch_size=4, dtype="float64", stress_weight=10.0, e0s=e0s
    )
    return LoopSettings(
        loop_id=opts["loop_id"],
        oracle=opts["oracle"],
        selection=opts["selection"],
        rounds=opts["rounds"],
        per_round=opts["per_round"],
        per_composition=opts["per_composition"],
        committee_size=opts["committee_size"],
        start_model=str(Path(start_model).resolve()) if start_model and Path(start_model).exists() else start_model,
        frames_every=opts["frames_every"],
        relax=RelaxSettings(max_steps=opts["max_steps"]),
        train=train,
        seed=opts["seed"],
    )


def _submit_learning(flow, settings, uri: str, loop_id: str) -> None:
    from jobflow.managers.fireworks import flow_to_workflow

    from dp_screen.stores import get_job_store

    lpad = launchpad(settings, None)
    initialise_launchpad(lpad)
    mapping = lpad.add_wf(flow_to_workflow(flow, store=get_job_store(settings, uri)))
    lp_file = write_worker_files(lpad, settings.home)
    click.echo(
        f"submitted active-learning loop '{loop_id}' ({len(mapping)} fireworks) to {redact(lpad.host)}/{lpad.name}"
    )
    click.echo(
        f"run it with: rlaunch -l {lp_file} -w {settings.home / 'fworker.yaml'} rapidfire (fine-tuning "
        f"jobs carry the category 'gpu': fworker_gpu.yaml)"
    )


ROUND_METRICS = (
    "energy_mae_mev_atom",
    "forces_mae_ev_a",
    "phase_de_mae_mev_atom",
    "lowest_phase_agreement",
    "force_spread_median_ev_a",
)


def _round_row(d: dict) -> dict:
    metrics = d.get("metrics") or {}
    return {
        "round": d["round"],
        "selection": d.get("selection"),
        "n_train": d.get("n_train"),
        **{k: metrics.get(k) for k in ROUND_METRICS},
        "model_sha256": d.get("model_sha256"),
    }


def _print_rounds(start: dict, rows: list[dict]) -> None:
    def fmt(v, spec):
        return "-" if v is None else format(v, spec)

    click.echo(
        f"{'round':>5s} {'selection':>11s} {'labels':>6s} {'E MAE':>9s} {'F MAE':>7s} {'dE MAE':>7s} "
        f"{'lowest':>6s} {'F spread':>8s}"
    )
    click.echo(
        f"{'start':>5s} {'':>11s} {0:>6d} {fmt(start.get('energy_mae_mev_atom'), '9.1f')} "
        f"{fmt(start.get('forces_mae_ev_a'), '7.3f')} {fmt(start.get('phase_de_mae_mev_atom'), '7.2f')} "
        f"{fmt(start.get('lowest_phase_agreement'), '6.2f')} {'-':>8s}"
    )
    for r in rows:
        click.echo(
            f"{r['round']:>5d} {r['selection']:>11s} {r['n_train']:>6d} {fmt(r['energy_mae_mev_atom'], '9.1f')} "
            f"{fmt(r['forces_mae_ev_a'], '7.3f')} {fmt(r['phase_de_mae_mev_atom'], '7.2f')} "
            f"{fmt(r['lowest_phase_agreement'], '6.2f')} {fmt(r['force_spread_median_ev_a'], '8.3f')}"
        )


@cli.group()
def dft() -> None:
    """The local DFT (CP2K) set-up."""


@dft.command("check")
@click.option(
    "--table",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Site table whose elements to check (default: the packaged default table).",
)
@click.option("--basis", default=None, help="Basis set name (default: CP2KSettings().basis).")
@click.option("--potential", default=None, help="Pseudopotential name (default: CP2KSettings().potential).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def dft_check(table, basis, potential, as_json) -> None:
    """Which elements of a site table the installed CP2K data covers (basis set and pseudopotential)."""
    from dp_screen.chemistry.site_tables import load_site_table
    from dp_screen.dft.cp2k import CP2KSettings, coverage, data_dir

    settings = CP2KSettings(**{k: v for k, v in {"basis": basis, "potential": potential}.items() if v})
    if data_dir() is None:
        raise DPScreenError("CP2K's data is not installed (no BASIS_MOLOPT); on Debian: apt-get install -y cp2k")
    elements = sorted({sp.element for sp in load_site_table(table).species})
    cov = coverage(elements, settings)
    if as_json:
        click.echo(
            json.dumps(
                {"basis": settings.basis, "potential": settings.potential, "data_dir": str(data_dir()), "elements": cov}
            )
        )
        return
    missing = [el for el, c in cov.items() if not c["covered"]]
    click.echo(
        f"{len(elements) - len(missing)} of {len(elements)} elements covered by {settings.basis} / "
        f"{settings.potential} in {data_dir()}"
    )
    for el, c in cov.items():
        click.echo(
            f"  {el:3s} {'ok ' if c['covered'] else 'NO '} basis {c['basis'] or '-'}, potential {c['potential'] or '-'}"
        )


@cli.command("report")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for index.html, its figures and CSV tables.",
)
@click.option(
    "--map",
    "map_name",
    default=None,
    help="Report a phase map shipped with dp_screen (e.g. cs2bbx6) instead of the store.",
)
@click.option(
    "--model",
    default=None,
    help="sha256 (or prefix) of the model whose relaxations to report (default: the one with the most relaxations).",
)
@click.option("--settings-hash", default=None, help="Relaxation settings hash (default: the most used).")
@click.option(
    "--heatmap",
    "heatmaps",
    multiple=True,
    metavar="A,A',X",
    help="dE heatmap over (B, B') for these A, A', X (repeatable), e.g. Ba,Ba,O. Default: the 3 largest.",
)
@_phase_error_option()
@click.option(
    "--max-force-spread",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Leave out of the phases and trends every (composition, ordering) whose committee force spread is "
    "above this (eV/A), or that no committee scored.",
)
@click.option(
    "--max-energy-spread",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="The same for the committee energy spread (meV/atom).",
)
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
@click.pass_context
def report_cmd(
    ctx, out_dir, map_name, model, settings_hash, heatmaps, phase_error, max_force_spread, max_energy_spread, as_json
) -> None:  # noqa: PLR0913
    """Write an HTML report (phase maps, trends, MLIP-vs-DFT parity, convergence) of the current store, or of a
    shipped phase map (--map)."""
    from dp_screen.analysis.report import write_map_report, write_report

    if map_name is not None:
        rep = write_map_report(out_dir, map_name)
        click.echo(
            json.dumps({"html": str(rep.html), "figures": {k: str(v) for k, v in rep.figures.items()}})
            if as_json
            else f"wrote {rep.html} ({len(rep.figures)} figures, {len(rep.tables)} tables) of the map {map_name}"
        )
        return

    triples = []
    for h in heatmaps:
        parts = [p.strip() for p in h.split(",")]
        if len(parts) != 3 or not all(parts):
            raise InputError(f"--heatmap {h!r} is not A,A',X (e.g. Ba,Ba,O or Cs+,Cs+,Cl-)")
        triples.append(tuple(parts))
    rep = write_report(
        out_dir,
        _settings(ctx),
        model_sha256=model,
        settings_hash=settings_hash,
        heatmaps=triples or None,
        progress=lambda msg: click.echo(f"report: {msg} ...", err=True),
        max_force_spread=max_force_spread,
        max_energy_spread=max_energy_spread,
        phase_error_mev=phase_error,
    )
    if as_json:
        click.echo(
            json.dumps(
                {
                    "html": str(rep.html),
                    "figures": {k: str(v) for k, v in rep.figures.items()},
                    "tables": {k: str(v) for k, v in rep.tables.items()},
                    "missing": rep.missing,
                    "summary": rep.summary,
                },
                default=str,
            )
        )
    else:
        click.echo(f"wrote {rep.html} ({len(rep.figures)} figures, {len(rep.tables)} tables)")
        if rep.summary.get("excluded") is not None:
            click.echo(
                "  kept out of the ranking: "
                + (", ".join(f"{n} {w}" for w, n in rep.summary["excluded"].items()) or "none")
            )
        tf = rep.summary.get("tilted_fraction")
        if tf:
            click.echo(
                f"  calls: {tf['n_tilted']} tilted, {tf['n_untilted']} untilted, {tf['n_undetermined']} "
                f"undetermined; {rep.summary['meta']['phase calls']}"
            )
        for line in rep.summary.get("model_accuracy") or []:
            click.echo(f"  model accuracy: {line}")
        for what in rep.missing:
            click.echo(f"  not in the store yet: {what}")


# --------------------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning dp_screen errors into one line and a non-zero exit."""
    import warnings

    # deprecation chatter of torch / e3nn / jobflow internals is not the user's business
    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings("ignore", message=".*TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD.*")
    try:
        cli.main(args=argv, prog_name="dp-screen", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except DPScreenError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
