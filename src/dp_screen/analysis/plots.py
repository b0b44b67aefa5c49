"""Matplotlib figures of the trends: every function returns a Figure with labelled axes and units.

The figures are built with the object-oriented API (no pyplot state), so they work the same in scripts, reports
(saved with :func:`save_figure`) and notebooks (``display(fig)``).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from dp_screen.errors import InputError

DE_LABEL = r"$\Delta E$ (untilted $-$ lowest, meV/atom)"


@cache
def space_group_label(number: int) -> str:
    """``87`` -> ``I4/m (87)``."""
    from pymatgen.symmetry.groups import SpaceGroup

    try:
        return f"{SpaceGroup.from_int_number(int(number)).symbol} ({int(number)})"
    except Exception:  # noqa: BLE001 - unknown numbers are shown as numbers
        return str(number)


def _site_match(phases: pd.DataFrame, site: str, value: str) -> pd.Series:
    """Rows whose ``site`` is ``value``, given as an element (``Ba``) or a species (``Ba2+``)."""
    return (phases[site] == value) | (phases.get(f"{site}_sp", phases[site]) == value)


def plot_de_heatmap(phases: pd.DataFrame, A: str, A2: str, X: str, annotate: bool | None = None) -> Figure:
    """dE over (B, B') for fixed A, A' and X (elements or species labels)."""
    sel = phases[_site_match(phases, "A", A) & _site_match(phases, "A2", A2) & _site_match(phases, "X", X)]
    if sel.empty:
        combos = sorted({f"{a}/{a2}/{x}" for a, a2, x in zip(phases["A"], phases["A2"], phases["X"], strict=True)})
        raise InputError(
            f"no relaxed compositions with A={A}, A'={A2}, X={X}; present (A/A'/X): {', '.join(combos[:20]) or 'none'}"
        )
    grid = sel.pivot_table(index="B_sp", columns="B2_sp", values="dE_untilted_mev_atom", aggfunc="min", dropna=False)
    # at most ~12 x 10 inches: a whole site table's B x B' grid (~80 x 80) would otherwise be a 4000-pixel image,
    # whose tick labels constrained layout measures over and over (10 s per figure)
    cols, rows = max(4, grid.shape[1]), max(4, grid.shape[0])
    small = cols <= 24 and rows <= 24
    fig = Figure(
        figsize=(min(12.0, 2.4 + 0.45 * cols), min(10.0, 1.4 + 0.4 * rows)), layout="constrained" if small else None
    )
    ax = fig.add_subplot()
    if not small:
        fig.subplots_adjust(left=0.08, right=0.9, bottom=0.1, top=0.95)
        ax.tick_params(labelsize=5)
    values = np.ma.masked_invalid(grid.to_numpy(dtype=float))
    image = ax.imshow(values, cmap="viridis", aspect="auto", origin="lower")
    ax.set_xticks(range(grid.shape[1]), grid.columns, rotation=90)
    ax.set_yticks(range(grid.shape[0]), grid.index)
    ax.set_xlabel("B' cation")
    ax.set_ylabel("B cation")
    ax.set_title(f"A = {A}, A' = {A2}, X = {X}")
    fig.colorbar(image, ax=ax, label=DE_LABEL)
    if annotate if annotate is not None else grid.size <= 150:
        for (r, c), v in np.ndenumerate(grid.to_numpy(dtype=float)):
            if np.isfinite(v):
                ax.text(
                    c,
                    r,
                    f"{v:.0f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="w" if v < np.nanmax(values) / 2 else "k",
                )
    return fig


def plot_de_histogram(phases: pd.DataFrame, by: str = "X_sp", bins: int = 40) -> Figure:
    """Histogram of dE, stacked by ``by`` (the anion by default)."""
    df = phases.dropna(subset=["dE_untilted_mev_atom"])
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    groups = [(k, g["dE_untilted_mev_atom"].astype(float).to_numpy()) for k, g in df.groupby(by)] if len(df) else []
    if groups:
        ax.hist([g for _, g in groups], bins=bins, stacked=True, label=[str(k) for k, _ in groups])
        ax.legend(title=by.replace("_sp", ""))
    ax.set_xlabel(DE_LABEL)
    ax.set_ylabel("compositions")
    ax.set_title(f"{len(df)} compositions with an untilted variant")
    return fig


def plot_de_vs_tolerance(phases: pd.DataFrame, column: str = "goldschmidt_t", by: str = "X_sp") -> Figure:
    """dE against a tolerance factor, one colour per ``by`` value."""
    df = phases.dropna(subset=["dE_untilted_mev_atom", column])
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    for key, g in df.groupby(by):
        ax.scatter(g[column].astype(float), g["dE_untilted_mev_atom"].astype(float), s=10, alpha=0.7, label=str(key))
    if len(df):
        ax.legend(title=by.replace("_sp", ""))
    ax.set_xlabel("Goldschmidt tolerance factor t" if column == "goldschmidt_t" else f"{column}")
    ax.set_ylabel(DE_LABEL)
    return fig


def plot_phase_fractions(fractions: pd.DataFrame, by_label: str = "anion X") -> Figure:
    """Stacked bars: fraction of compositions in each winning space group (``trends.phase_fractions`` output)."""
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    bottom = np.zeros(len(fractions))
    for sg in fractions.columns:
        vals = fractions[sg].to_numpy(dtype=float)
        ax.bar([str(i) for i in fractions.index], vals, bottom=bottom, label=space_group_label(sg))
        bottom += vals
    ax.set_xlabel(by_label)
    ax.set_ylabel("fraction of compositions")
    ax.set_ylim(0, 1)
    ax.set_title("Lowest-energy phase (space group)")
    if len(fractions.columns):
        ax.legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
    return fig


def plot_parity(parity: pd.DataFrame) -> Figure:
    """MLIP against DFT phase energies relative to the untilted variant (``trends.parity_table`` output)."""
    fig = Figure(figsize=(4.8, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for method, g in parity.groupby("method"):
        err = g["mlip_rel_mev"] - g["dft_rel_mev"]
        label = f"{method}: MAE {err.abs().mean():.1f}, RMSE {np.sqrt((err**2).mean()):.1f} meV/atom"
        ax.scatter(g["dft_rel_mev"], g["mlip_rel_mev"], s=14, label=label)
    lims = [0.0, 1.0]
    if len(parity):
        v = np.concatenate([parity["dft_rel_mev"], parity["mlip_rel_mev"]]).astype(float)
        pad = 0.05 * (np.ptp(v) or 1.0)
        lims = [v.min() - pad, v.max() + pad]
        ax.legend(fontsize=7)
    ax.plot(lims, lims, "k--", lw=0.8)
    ax.set_xlim(lims)
    ax.set_ylim(lims)
    ax.set_xlabel("DFT: E(tilt) - E(untilted) (meV/atom)")
    ax.set_ylabel("MLIP: E(tilt) - E(untilted) (meV/atom)")
    ax.set_title("Phase energies, MLIP vs DFT")
    return fig


def plot_convergence(steps: np.ndarray, max_steps: int | None = None) -> Figure:
    """Histogram of optimiser steps per relaxation."""
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    if len(steps):
        ax.hist(np.asarray(steps, dtype=float), bins=min(50, max(5, len(np.unique(steps)))))
    if max_steps:
        ax.axvline(max_steps, color="k", ls="--", lw=0.8, label="step limit")
        ax.legend()
    ax.set_xlabel("optimiser steps (FIRE)")
    ax.set_ylabel("relaxations")
    return fig


def plot_composition_space(hist: pd.DataFrame) -> Figure:
    """Compositions per tolerance-factor bin and anion (``data.composition_space`` output), with the share that
    Bartel's tau classifies as perovskite."""
    fig = Figure(figsize=(6.5, 4), layout="constrained")
    ax = fig.add_subplot()
    width = hist.attrs.get("width", 0.025)
    bottom: dict[float, float] = {}
    for x, g in hist.groupby("X"):
        lefts = g["bin_left"].round(6).to_numpy()
        base = np.array([bottom.get(b, 0.0) for b in lefts])
        ax.bar(lefts, g["n"], width=width, bottom=base, align="edge", label=f"{x}", alpha=0.85)
        for b, n in zip(lefts, g["n"], strict=True):
            bottom[b] = bottom.get(b, 0.0) + n
    ax.set_xlabel(
        "Goldschmidt tolerance factor t"
        if hist.attrs.get("field", "goldschmidt_t") == "goldschmidt_t"
        else hist.attrs["field"]
    )
    ax.set_ylabel("compositions")
    if len(hist):
        tau_share = hist["n_tau_perovskite"].sum() / hist["n"].sum()
        ax.set_title(f"{int(hist['n'].sum())} compositions, {100 * tau_share:.0f}% perovskite by tau")
        ax.legend(title="X", ncols=2, fontsize=7)
    return fig


def plot_spread(scored: pd.DataFrame) -> Figure:
    """Histograms of the committee's force and energy spread over (composition, ordering) rows."""
    fig = Figure(figsize=(9, 3.2), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, col, label in (
        (axes[0], "force_spread_ev_a", "force spread (eV/A)"),
        (axes[1], "energy_spread_mev_atom", "energy spread (meV/atom)"),
    ):
        values = pd.to_numeric(scored[col], errors="coerce").dropna()
        ax.hist(values, bins=min(40, max(5, len(values) // 3)), color="tab:purple")
        ax.set_xlabel(label)
        ax.set_ylabel("orderings")
    return fig


def plot_active_learning(rounds: pd.DataFrame) -> Figure:
    """Held-out errors against the number of labels, one line per loop (e.g. uncertainty vs random selection)."""
    fig = Figure(figsize=(12, 3.4), layout="constrained")
    axes = fig.subplots(1, 3)
    for ax, col, label in (
        (axes[0], "energy_mae_mev_atom", "energy MAE (meV/atom)"),
        (axes[1], "phase_de_mae_mev_atom", "phase dE MAE (meV/atom)"),
        (axes[2], "forces_mae_ev_a", "force MAE (eV/A)"),
    ):
        for loop_id, g in rounds.groupby("loop_id"):
            sel = g["loop_selection"].dropna().iloc[0] if g["loop_selection"].notna().any() else ""
            ax.plot(g["n_labels"], pd.to_numeric(g[col], errors="coerce"), "o-", label=f"{loop_id} ({sel})")
        ax.set_xlabel("labels")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=7)
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Write ``fig`` as PNG (folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path
