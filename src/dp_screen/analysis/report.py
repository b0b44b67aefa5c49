"""An HTML report of the store: composition space, phases and trends, MLIP validation, convergence.

``write_report(out_dir)`` writes ``index.html`` with its PNG figures and CSV tables beside it; the page names the
database, the model (sha256) and relaxation settings it describes and the dp_screen version, and says plainly what
is missing (no relaxations yet, no validations yet) instead of leaving a gap.
"""

from __future__ import annotations

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


@dataclass
class _Section:
    """One part of the page: a title and its blocks (paragraphs, notes, figures, tables), in order."""

    title: str
    blocks: list[dict] = field(default_factory=list)


class _Writer:
    """Writes figures and tables beside the page and records them in the report and the current section."""

    def __init__(self, out: Path, report: Report) -> None:
        self.out, self.report = out, report
        self.figdir = out / "figures"
        self.figdir.mkdir(parents=True, exist_ok=True)
        self.sections: list[_Section] = []

    def section(self, title: str) -> None:
        self.sections.append(_Section(title))

    def _add(self, **block) -> None:
        self.sections[-1].blocks.append(block)

    def text(self, text: str) -> None:
        self._add(kind="text", text=text)

    def figure(self, name: str, fig, caption: str) -> None:
        path = plots.save_figure(fig, self.figdir / f"{name}.png")
        self.report.figures[name] = path
        self._add(kind="figure", file=path.name, text=caption)

    def table(self, name: str, df: pd.DataFrame, title: str, index: bool = True) -> None:
        path = self.out / f"{name}.csv"
        df.to_csv(path, index=index)
        self.report.tables[name] = path
        self._add(kind="table", file=path.name, text=title, html=_table(df, index))

    def note(self, what: str | None, text: str) -> None:
        """A note in place of a missing part (``what`` None: an optional part, not counted as missing)."""
        if what:
            self.report.missing.append(what)
        self._add(kind="note", text=text)

    def link(self, name: str, path: Path, text: str) -> None:
        self.report.tables[name] = path
        self._add(kind="link", file=path.name, text=text)


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
    the phase calls instead of the model's measured error (:mod:`dp_screen.mlip.uncertainty`). The page is
    rendered from ``src/dp_screen/data/templates/report.html.j2``.
    """
    say = progress or (lambda _msg: None)
    out = Path(out_dir)
    report = Report(html=out / "index.html")
    w = _Writer(out, report)
    store = data.describe_store(db)
    say(f"grouping {store['counts']['relaxations']} relaxations by composition")
    registered = data._registered_set(db, model_sha256, settings_hash)
    digest = data.read_phase_digest(db, *registered) if registered else None  # read once, used twice
    unfiltered = data.phase_table(db, model_sha256, settings_hash, phase_error_mev=phase_error_mev, digest=digest)
    by_ordering = data.uncertainty_filter(unfiltered, max_force_spread, max_energy_spread)
    picked = (
        (by_ordering.attrs["model_sha256"], by_ordering.attrs["settings_hash"])
        if "model_sha256" in by_ordering.attrs
        else None
    )
    meta = _meta(db, store, picked, by_ordering, report)
    _composition_section(w, db, store, say)
    _phase_section(w, by_ordering, heatmaps, say)
    _uncertainty_section(w, unfiltered, by_ordering)
    _active_learning_section(w, db)
    _validation_section(w, db, store, picked, say)
    _convergence_section(w, db, store, picked or (model_sha256, settings_hash), digest, say)
    report.html.write_text(_render(meta, w.sections))
    return report


def _render(meta: dict, sections: list[_Section]) -> str:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("dp_screen", "data/templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template("report.html.j2").render(meta=meta, sections=sections)


def _meta(db, store: dict, picked: tuple[str, str] | None, by_ordering: pd.DataFrame, report: Report) -> dict:
    """The header: what the page describes (database, model, settings, call rule, version, time)."""
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
    return meta


def _composition_section(w: _Writer, db, store: dict, say) -> None:
    w.section("Composition space")
    say(f"binning {store['counts']['compositions']} compositions")
    hist = data.composition_space(db, n_stored=store["counts"]["compositions"])
    if hist.empty:
        w.note("composition_space", "No compositions in the store yet: run `dp-screen enumerate`.")
        return
    caption = "Compositions by Goldschmidt tolerance factor and anion"
    w.figure("composition_space", plots.plot_composition_space(hist), caption)
    by_x = hist.groupby("X")[["n", "n_tau_perovskite", "n_goldschmidt_ok"]].sum()
    w.table("compositions_by_anion", by_x, "Compositions by anion")


def _phase_section(w: _Writer, by_ordering: pd.DataFrame, heatmaps, say) -> None:
    w.section("Phases and trends")
    if by_ordering.empty:
        w.note("phases", "No relaxations in the store yet: run `dp-screen relax` (or `dp-screen run`).")
        return
    phases = data.ground_state_table(by_ordering)  # trends and maps: each composition's ground state
    _ranking_text(w, by_ordering, phases)
    say("phase figures and trend tables")
    title = "The 20 largest dE (meV/atom): the strongest preference for a tilted phase"
    w.table("largest_dE", trends.ranked(phases, 20), title, index=False)
    fractions = trends.phase_fractions(phases, "X_sp")
    if not fractions.empty:
        w.figure("phase_fractions", plots.plot_phase_fractions(fractions), "Lowest-energy space group by anion")
        w.table("phase_fractions", fractions.rename(columns=plots.space_group_label), "Phase fractions by anion")
    w.figure("de_histogram", plots.plot_de_histogram(phases), "dE(untilted - lowest), stacked by anion")
    w.figure("de_vs_tolerance", plots.plot_de_vs_tolerance(phases), "dE against the Goldschmidt tolerance factor")
    for a, a2, x in heatmaps if heatmaps is not None else _heatmap_choices(phases):
        name = "heatmap_" + "_".join(s.replace("+", "p").replace("-", "m") for s in (a, a2, x))
        w.figure(name, plots.plot_de_heatmap(phases, a, a2, x), f"dE over (B, B') for A={a}, A'={a2}, X={x}")
    if not any(k.startswith("heatmap_") for k in w.report.figures):
        w.note("heatmap", "No (A, A', X) with at least two B and two B' cations relaxed: no dE heatmap.")
    for site, label in (("A2_sp", "A'"), ("B_sp", "B"), ("B2_sp", "B'"), ("X_sp", "X")):
        w.table(f"trend_by_{site[:-3]}", trends.trend_by(phases, site), f"Trend by {label} (dE in meV/atom)")
    w.table("trend_by_tolerance", trends.trend_by_tolerance(phases), "Trend by Goldschmidt tolerance factor")
    export = by_ordering.assign(
        energies_mev_atom=[json.dumps(e) for e in by_ordering["energies_mev_atom"]],
        excluded=[json.dumps(e) for e in by_ordering["excluded"]],
    )
    export.to_csv(w.out / "phases.csv", index=False)
    w.link("phases", w.out / "phases.csv", "Per (composition, ordering) table, with the exclusions")


def _ranking_text(w: _Writer, by_ordering: pd.DataFrame, phases: pd.DataFrame) -> None:
    """What was ranked, what was kept out, and the calls (the undetermined counted apart)."""
    excluded: dict[str, int] = {}
    for ex in by_ordering["excluded"]:
        for why, n in ex.items():
            excluded[why] = excluded.get(why, 0) + n
    w.report.summary["excluded"] = excluded
    n_none = int(by_ordering.groupby("composition_id")["n_ranked"].sum().eq(0).sum())
    kept_out = ", ".join(f"{n} {why}" for why, n in sorted(excluded.items())) or "none"
    w.text(
        "Ranked: converged relaxations that are still perovskites, each under the phase it ended in. Kept out of "
        f"the ranking: {kept_out}; {n_none} compositions have no ranked variant."
    )
    tf = trends.tilted_fraction(phases)
    w.report.summary["tilted_fraction"] = tf
    frac = "-" if tf["fraction"] is None else f"{100 * tf['fraction']:.1f}%"
    w.text(
        f"{len(phases)} relaxed compositions: {tf['n_tilted']} called tilted, {tf['n_untilted']} untilted ({frac} "
        f"tilted of the {tf['n']} determined calls) and {tf['n_undetermined']} undetermined (the untilted and the "
        "lowest tilted phase within 2 sigma of each other, or no untilted variant ranked), counted apart in every "
        "statistic below."
    )


def _uncertainty_section(w: _Writer, unfiltered: pd.DataFrame, by_ordering: pd.DataFrame) -> None:
    w.section("Committee uncertainty")
    scored = unfiltered[unfiltered["force_spread_ev_a"].notna()] if "force_spread_ev_a" in unfiltered else []
    if len(scored) == 0:  # optional (not "missing"): a campaign need not have a committee
        w.note(
            None,
            "No relaxation scored by a committee: `dp-screen relax --committee M1,M2,M3` (members of a "
            "`dp-screen learn` round) stores each structure's committee spread.",
        )
        return
    w.report.summary["uncertainty"] = {
        "scored_orderings": len(scored),
        "of": len(unfiltered),
        "force_spread_median_ev_a": float(scored["force_spread_ev_a"].median()),
        "energy_spread_median_mev_atom": float(scored["energy_spread_mev_atom"].median()),
        "filter": by_ordering.attrs.get("uncertainty_filter"),
    }
    caption = "Committee spread of each (composition, ordering): the largest over its ranked variants"
    w.figure("committee_spread", plots.plot_spread(scored), caption)
    cols = ["composition_id", "ordering", "lowest_tilt", "dE_untilted_mev_atom", "energy_spread_mev_atom"]
    worst = scored.sort_values("force_spread_ev_a", ascending=False)[[*cols, "force_spread_ev_a"]].head(20)
    w.table("most_uncertain", worst, "The 20 most uncertain (composition, ordering): label these first", index=False)
    filt = by_ordering.attrs.get("uncertainty_filter")
    if filt:
        w.text(
            f"Phases and trends above use only rows within the committee bounds (force spread <= "
            f"{filt['max_force_spread_ev_a']} eV/A, energy spread <= {filt['max_energy_spread_mev_atom']} "
            f"meV/atom): {filt['kept']} kept, {filt['above']} above a bound, {filt['unscored']} not scored."
        )


def _active_learning_section(w: _Writer, db) -> None:
    loops = data.active_learning_rounds(db)
    if loops.empty:
        return
    caption = "Held-out errors per active-learning round (committee mean against the oracle), by loop"
    w.figure("active_learning", plots.plot_active_learning(loops), caption)
    w.table("active_learning", loops, "Active-learning rounds", index=False)


def _validation_section(w: _Writer, db, store: dict, picked, say) -> None:
    w.section("MLIP vs DFT")
    say(f"comparing {store['counts']['validations']} validations")
    vals = data.validation_table(db, model_sha256=picked[0] if picked else None)
    if vals.empty:
        w.note("validation", "No validations in the store yet: run `dp-screen run --validate N` or submit with --dft.")
        return
    parity = trends.parity_table(vals)
    stats = trends.parity_stats(vals)
    w.report.summary["parity"] = stats.to_dict(orient="index")
    if parity.empty:
        w.note("parity", "No composition has a validated untilted and tilted variant yet: no phase-energy parity.")
    else:
        caption = "MLIP vs DFT phase energies, relative to the untilted variant of the same composition"
        w.figure("parity", plots.plot_parity(parity), caption)
    title = (
        "Errors per DFT method (phase energy differences in meV/atom, forces in eV/A, stress in GPa; "
        "SCF-unconverged DFT results left out and counted)"
    )
    w.table("parity_stats", stats, title)


def _convergence_section(w: _Writer, db, store: dict, key: tuple, digest, say) -> None:
    w.section("Relaxation convergence")
    say("convergence statistics")
    if not store["counts"]["relaxations"]:  # (also written when every relaxation failed: no phase table then)
        w.note("convergence", "No relaxations yet.")
        return
    conv = trends.convergence_stats(db, *key, variants=digest.variants if digest is not None else None)
    w.report.summary["convergence"] = conv["overall"]
    w.figure("convergence", plots.plot_convergence(conv["steps"]), "Optimiser steps per relaxation")
    w.table("convergence_by_tilt", conv["by_tilt"], "Convergence by starting tilt system")
    if conv["reasons"]:
        w.table("failure_reasons", pd.Series(conv["reasons"], name="n").to_frame(), "Failure reasons")


def write_map_report(out_dir: str | Path, name: str = "cs2bbx6") -> Report:
    """Write the report of a shipped phase map (:func:`dp_screen.api.load_map`) into ``out_dir``: calls and dE per
    anion (hexagonal candidates apart), the comparison with what is known, the t bands, trend figures and the
    B x B' matrices per halide (:mod:`dp_screen.analysis.maps`), rendered from the same template as
    :func:`write_report`."""
    from dp_screen.analysis import maps
    from dp_screen.api import load_map

    table = load_map(name)
    out = Path(out_dir)
    report = Report(html=out / "index.html")
    w = _Writer(out, report)
    hexagonal = table[table["hexagonal_candidate"]]
    corner = table[~table["hexagonal_candidate"]]
    meta = {
        "map": f"{name} ({len(table)} of its family's {int(table['n_family'].iloc[0])} compositions)",
        "model (sha256)": table["model_sha256"].iloc[0],
        "relaxation settings hash": table["relax_settings_hash"].iloc[0],
        "made by": f"scripts/make_map.py {name}, dp_screen {table['dp_screen_version'].iloc[0]}",
        "report": f"dp_screen {__version__}, {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
    }
    w.section("Calls and dE per anion")
    w.text(
        "dE = E(untilted) - E(lowest phase) in meV/atom; calls at 2 sigma of the model's measured phase error. "
        f"The {len(hexagonal)} hexagonal candidates (t >= 1.05: face-sharing polytypes compete, and dp_screen builds "
        "none) are counted apart."
    )
    w.table("calls_by_anion", maps.call_counts(corner, "X"), "Perovskite-corner compositions")
    if len(hexagonal):
        w.table("hexagonal_by_anion", maps.call_counts(hexagonal, "X"), "Hexagonal candidates (t >= 1.05)")
    w.section("Against what is known")
    w.table("literature", maps.literature_comparison(table), "The map next to experiment and the seed's claim")
    w.table("t_bands", maps.t_band_comparison(table), "By Goldschmidt t band (Vasala & Karppinen 2015)")
    w.section("Trends")
    w.figure("trends_t", maps.plot_trends(table, "goldschmidt_t"), "Against Goldschmidt t, per anion")
    w.figure("trends_tau", maps.plot_trends(table.dropna(subset=["tau"]), "tau"), "Against Bartel tau, per anion")
    for x in ("F", "Cl", "Br", "I"):
        if (corner["X"] == x).sum() > 1:
            w.figure(f"bb_{x}", maps.plot_b_pair_matrix(corner, x), f"E(untilted) - E(lowest) over (B, B'), X = {x}")
    report.summary = {"meta": meta, "compositions": len(table), "calls": table["call"].value_counts().to_dict()}
    report.html.write_text(_render(meta, w.sections))
    return report
