"""An HTML report of the store: composition space, phases and trends, MLIP validation, convergence.

``write_report(out_dir)`` writes ``index.html`` with its PNG figures and CSV tables beside it; the page names the
database, the model (sha256) and relaxation settings it describes and the dp_screen version, and says plainly what
is missing (no relaxations yet, no validations yet) instead of leaving a gap.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from dp_screen import __version__
from dp_screen.analysis import data, plots, trends

if TYPE_CHECKING:
    from pymongo.database import Database

    from dp_screen.settings import DPScreenSettings

CSS = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;font-size:0.85em;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:2px 6px;
text-align:right}th{background:#f3f3f3}img{max-width:100%;border:1px solid #eee;margin:0.5em 0}
.note{color:#885;font-style:italic}.meta td{text-align:left}"""


@dataclass
class Report:
    """What :func:`write_report` wrote."""

    html: Path
    figures: dict[str, Path] = field(default_factory=dict)
    tables: dict[str, Path] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    summary: dict = field(default_factory=dict)


def _table(df: pd.DataFrame, index: bool = True) -> str:
    return df.to_html(index=index, float_format=lambda v: f"{v:.3g}", na_rep="-", border=0)


def _heatmap_choices(phases: pd.DataFrame, n: int = 3) -> list[tuple[str, str, str]]:
    """The (A, A', X) species with the most compositions that have a dE, needing at least 2 B and 2 B'."""
    df = phases.dropna(subset=["dE_untilted_mev_atom"])
    if df.empty:
        return []
    g = df.groupby(["A_sp", "A2_sp", "X_sp"]).agg(
        n=("composition_id", "size"), nb=("B_sp", "nunique"), nb2=("B2_sp", "nunique")
    )
    g = g[(g["nb"] >= 2) & (g["nb2"] >= 2)].sort_values("n", ascending=False)
    return [tuple(i) for i in g.index[:n]]


def _call_rule(phases: pd.DataFrame) -> str:
    """The call rule and the sigma(s) it was applied with, for the report's header."""
    rule = (
        "tilted when E(untilted) - E(lowest tilted phase) > 2 sigma, untilted when < -2 sigma or when no "
        "tilted start stayed tilted, else undetermined"
    )
    if phases.empty or "phase_error_source" not in phases:
        return rule
    used = phases.groupby("phase_error_source", dropna=False)["phase_error_mev"].agg(["min", "max", "size"])
    parts = []
    for source, r in used.iterrows():
        if pd.isna(r["min"]):
            parts.append(f"{int(r['size'])} unqualified (no measured model error: 1 meV/atom noise band)")
        else:
            span = f"{r['min']:.1f}" if r["min"] == r["max"] else f"{r['min']:.1f}-{r['max']:.1f}"
            parts.append(f"sigma {span} meV/atom from the {source} for {int(r['size'])} rows")
    err = phases.attrs.get("phase_error") or {}
    detail = f" ({err['detail']})" if err.get("detail") and err.get("sigma_mev") is not None else ""
    return f"{rule}; {'; '.join(parts)}{detail}"


def write_report(
    out_dir: str | Path,
    db: DPScreenSettings | Database | None = None,
    model_sha256: str | None = None,
    settings_hash: str | None = None,
    heatmaps: list[tuple[str, str, str]] | None = None,
    phase_error_mev: float | None = None,
    progress: Callable[[str], None] | None = None,
    max_force_spread: float | None = None,
    max_energy_spread: float | None = None,
) -> Report:
    """Write the report of the store's compositions, one model's relaxations and the validations into ``out_dir``.

    ``progress(message)`` is called as each part starts (reading a large store takes a while).
    ``max_force_spread`` (eV/A) / ``max_energy_spread`` (meV/atom): leave out of the phases and trends every
    (composition, ordering) whose committee spread is above the bound or that no committee scored
    (:func:`dp_screen.analysis.data.uncertainty_filter`); the report says how many. ``phase_error_mev``: sigma of
    the phase calls instead of the model's measured error (:mod:`dp_screen.mlip.uncertainty`).
    """
    say = progress or (lambda _msg: None)
    out = Path(out_dir)
    figdir = out / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    report = Report(html=out / "index.html")
    body: list[str] = []

    def figure(name: str, fig, caption: str) -> None:
        path = plots.save_figure(fig, figdir / f"{name}.png")
        report.figures[name] = path
        body.append(
            f'<figure><img src="figures/{path.name}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )

    def table(name: str, df: pd.DataFrame, title: str, index: bool = True) -> None:
        path = out / f"{name}.csv"
        df.to_csv(path, index=index)
        report.tables[name] = path
        body.append(f"<h3>{html.escape(title)} <small>(<a href='{path.name}'>csv</a>)</small></h3>{_table(df, index)}")

    def note(what: str, text: str) -> None:
        report.missing.append(what)
        body.append(f"<p class='note'>{html.escape(text)}</p>")

    store = data.describe_store(db)
    say(f"grouping {store['counts']['relaxations']} relaxations by composition")
    registered = data._registered_set(db, model_sha256, settings_hash)
    digest = data.read_phase_digest(db, *registered) if registered else None  # read once, used twice
    by_ordering = data.phase_table(db, model_sha256, settings_hash, phase_error_mev=phase_error_mev, digest=digest)
    scored = by_ordering[by_ordering["force_spread_ev_a"].notna()] if "force_spread_ev_a" in by_ordering else []
    unfiltered = by_ordering
    by_ordering = data.uncertainty_filter(by_ordering, max_force_spread, max_energy_spread)
    picked = (
        (by_ordering.attrs["model_sha256"], by_ordering.attrs["settings_hash"])
        if "model_sha256" in by_ordering.attrs
        else None
    )
    phases = data.ground_state_table(by_ordering)  # trends and maps: each composition's ground state
    accuracy = data.model_accuracy(db, picked[0]) if picked else []
    report.summary["model_accuracy"] = accuracy
    meta = {
        "database": f"{store['database']} on {store['server']}",
        "documents": ", ".join(f"{k}: {v}" for k, v in store["counts"].items()),
        "model (sha256)": picked[0] if picked else "no relaxations yet",
        "model accuracy": " / ".join(accuracy) if accuracy else "-",
        "relaxation settings hash": picked[1] if picked else "-",
        "phase calls": _call_rule(by_ordering),
        "dp_screen": __version__,
        "written": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    report.summary["meta"] = meta
    body.append(
        "<table class='meta'>"
        + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in meta.items())
        + "</table>"
    )

    # composition space
    body.append("<h2>Composition space</h2>")
    say(f"binning {store['counts']['compositions']} compositions")
    hist = data.composition_space(db, n_stored=store["counts"]["compositions"])
    if hist.empty:
        note("composition_space", "No compositions in the store yet: run `dp-screen enumerate`.")
    else:
        figure(
            "composition_space",
            plots.plot_composition_space(hist),
            "Compositions by Goldschmidt tolerance factor and anion",
        )
        by_x = hist.groupby("X")[["n", "n_tau_perovskite", "n_goldschmidt_ok"]].sum()
        table("compositions_by_anion", by_x, "Compositions by anion")

    # phases
    body.append("<h2>Phases and trends</h2>")
    if by_ordering.empty:
        note("phases", "No relaxations in the store yet: run `dp-screen relax` (or `dp-screen run`).")
    else:
        excluded: dict[str, int] = {}
        for ex in by_ordering["excluded"]:
            for why, n in ex.items():
                excluded[why] = excluded.get(why, 0) + n
        report.summary["excluded"] = excluded
        n_none = int(by_ordering.groupby("composition_id")["n_ranked"].sum().eq(0).sum())
        body.append(
            f"<p>Ranked: converged relaxations that are still perovskites, each under the phase it ended "
            f"in. Kept out of the ranking: {', '.join(f'{n} {w}' for w, n in sorted(excluded.items())) or 'none'}"
            f"; {n_none} compositions have no ranked variant.</p>"
        )
        tf = trends.tilted_fraction(phases)
        report.summary["tilted_fraction"] = tf
        frac = "-" if tf["fraction"] is None else f"{100 * tf['fraction']:.1f}%"
        body.append(
            f"<p>{len(phases)} relaxed compositions: {tf['n_tilted']} called tilted, {tf['n_untilted']} "
            f"untilted ({frac} tilted of the {tf['n']} determined calls) and {tf['n_undetermined']} "
            f"undetermined (the untilted and the lowest tilted phase within 2 sigma of each other, or no "
            f"untilted variant ranked), counted apart in every statistic below.</p>"
        )
        say("phase figures and trend tables")
        table(
            "largest_dE",
            trends.ranked(phases, 20),
            "The 20 largest dE (meV/atom): the strongest preference for a tilted phase",
            index=False,
        )
        fractions = trends.phase_fractions(phases, "X_sp")
        if not fractions.empty:
            figure("phase_fractions", plots.plot_phase_fractions(fractions), "Lowest-energy space group by anion")
            table("phase_fractions", fractions.rename(columns=plots.space_group_label), "Phase fractions by anion")
        figure("de_histogram", plots.plot_de_histogram(phases), "dE(untilted - lowest), stacked by anion")
        figure("de_vs_tolerance", plots.plot_de_vs_tolerance(phases), "dE against the Goldschmidt tolerance factor")
        for a, a2, x in heatmaps if heatmaps is not None else _heatmap_choices(phases):
            name = "heatmap_" + "_".join(s.replace("+", "p").replace("-", "m") for s in (a, a2, x))
            figure(name, plots.plot_de_heatmap(phases, a, a2, x), f"dE over (B, B') for A={a}, A'={a2}, X={x}")
        if not any(k.startswith("heatmap_") for k in report.figures):
            note("heatmap", "No (A, A', X) with at least two B and two B' cations relaxed: no dE heatmap.")
        for site, label in (("A2_sp", "A'"), ("B_sp", "B"), ("B2_sp", "B'"), ("X_sp", "X")):
            table(f"trend_by_{site[:-3]}", trends.trend_by(phases, site), f"Trend by {label} (dE in meV/atom)")
        table("trend_by_tolerance", trends.trend_by_tolerance(phases), "Trend by Goldschmidt tolerance factor")
        export = by_ordering.assign(
            energies_mev_atom=[json.dumps(e) for e in by_ordering["energies_mev_atom"]],
            excluded=[json.dumps(e) for e in by_ordering["excluded"]],
        )
        export.to_csv(out / "phases.csv", index=False)
        report.tables["phases"] = out / "phases.csv"
        body.append(
            "<p>Per (composition, ordering) table, with the exclusions: <a href='phases.csv'>phases.csv</a></p>"
        )

    # committee uncertainty
    body.append("<h2>Committee uncertainty</h2>")
    if len(scored) == 0:
        # optional (not "missing"): a campaign need not have a committee
        body.append(
            "<p class='note'>No relaxation scored by a committee: `dp-screen relax --committee M1,M2,M3` "
            "(members of a `dp-screen learn` round) stores each structure's committee spread.</p>"
        )
    else:
        report.summary["uncertainty"] = {
            "scored_orderings": len(scored),
            "of": len(unfiltered),
            "force_spread_median_ev_a": float(scored["force_spread_ev_a"].median()),
            "energy_spread_median_mev_atom": float(scored["energy_spread_mev_atom"].median()),
            "filter": by_ordering.attrs.get("uncertainty_filter"),
        }
        figure(
            "committee_spread",
            plots.plot_spread(scored),
            "Committee spread of each (composition, ordering): the largest over its ranked variants",
        )
        cols = [
            "composition_id",
            "ordering",
            "lowest_tilt",
            "dE_untilted_mev_atom",
            "energy_spread_mev_atom",
            "force_spread_ev_a",
        ]
        table(
            "most_uncertain",
            scored.sort_values("force_spread_ev_a", ascending=False)[cols].head(20),
            "The 20 most uncertain (composition, ordering): label these first",
            index=False,
        )
        filt = by_ordering.attrs.get("uncertainty_filter")
        if filt:
            body.append(
                f"<p>Phases and trends above use only rows within the committee bounds (force spread <= "
                f"{filt['max_force_spread_ev_a']} eV/A, energy spread <= {filt['max_energy_spread_mev_atom']} "
                f"meV/atom): {filt['kept']} kept, {filt['above']} above a bound, {filt['unscored']} not "
                f"scored.</p>"
            )
    loops = data.active_learning_rounds(db)
    if not loops.empty:
        figure(
            "active_learning",
            plots.plot_active_learning(loops),
            "Held-out errors per active-learning round (committee mean against the oracle), by loop",
        )
        table("active_learning", loops, "Active-learning rounds", index=False)

    # validation
    body.append("<h2>MLIP vs DFT</h2>")
    say(f"comparing {store['counts']['validations']} validations")
    vals = data.validation_table(db, model_sha256=picked[0] if picked else None)
    parity = trends.parity_table(vals)
    if vals.empty:
        note("validation", "No validations in the store yet: run `dp-screen run --validate N` or submit with --dft.")
    else:
        stats = trends.parity_stats(vals)
        report.summary["parity"] = stats.to_dict(orient="index")
        if parity.empty:
            note("parity", "No composition has a validated untilted and tilted variant yet: no phase-energy parity.")
        else:
            figure(
                "parity",
                plots.plot_parity(parity),
                "MLIP vs DFT phase energies, relative to the untilted variant of the same composition",
            )
        table(
            "parity_stats",
            stats,
            "Errors per DFT method (phase energy differences in meV/atom, forces in eV/A, "
            "stress in GPa; SCF-unconverged DFT results left out and counted)",
        )

    # convergence
    body.append("<h2>Relaxation convergence</h2>")
    say("convergence statistics")
    if store["counts"]["relaxations"]:  # (also when every relaxation failed and the phase table is empty)
        conv = trends.convergence_stats(
            db, *(picked or (model_sha256, settings_hash)), variants=digest.variants if digest is not None else None
        )
        report.summary["convergence"] = conv["overall"]
        figure("convergence", plots.plot_convergence(conv["steps"]), "Optimiser steps per relaxation")
        table("convergence_by_tilt", conv["by_tilt"], "Convergence by starting tilt system")
        if conv["reasons"]:
            table("failure_reasons", pd.Series(conv["reasons"], name="n").to_frame(), "Failure reasons")
    else:
        note("convergence", "No relaxations yet.")

    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>dp_screen report</title><style>{CSS}</style>"
        f"</head><body><h1>dp_screen report</h1>{''.join(body)}</body></html>"
    )
    report.html.write_text(page)
    return report
