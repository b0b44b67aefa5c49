"""Trends over a phase table (see :func:`dp_screen.analysis.data.phase_table`), MLIP-vs-DFT parity and convergence.

Energies are in meV/atom. ``dE`` is E(untilted) - E(lowest variant) of one composition: 0 when the untilted cell is
the ground state, positive when a tilted phase is lower.

Every statistic of tilted / untilted ground states counts the **calls** (``call`` of the phase table:
:func:`dp_screen.structures.phases.phase_call`): a fraction of tilted ground states is taken over the determined
calls only, and the ``undetermined`` ones (|dE_tilt| within 2 sigma of the model's error) are counted apart, never
folded into either side.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from dp_screen.analysis.data import UNTILTED, aggregate, choose_set, set_match
from dp_screen.errors import InputError

if TYPE_CHECKING:
    from pymongo.database import Database

    from dp_screen.settings import DPScreenSettings

DE = "dE_untilted_mev_atom"
TOLERANCE_BINS = np.round(np.arange(0.75, 1.1251, 0.025), 3)


def _group_stats(groups) -> pd.DataFrame:
    def stats(g: pd.DataFrame) -> pd.Series:
        de = g[DE].dropna().astype(float)
        tilted = g["ground_state_tilted"].dropna().astype(bool)
        sg = g["winning_space_group"].dropna()
        counts = sg.astype(int).value_counts()
        undetermined = int(_calls(g).eq("undetermined").sum())
        return pd.Series(
            {
                "n": len(g),
                "n_with_dE": len(de),
                "dE_mean": de.mean() if len(de) else np.nan,
                "dE_median": de.median() if len(de) else np.nan,
                "dE_max": de.max() if len(de) else np.nan,
                "n_undetermined": undetermined,
                "undetermined_fraction": undetermined / len(g) if len(g) else np.nan,
                "tilted_fraction": tilted.mean() if len(tilted) else np.nan,
                "top_space_group": int(counts.index[0]) if len(counts) else None,
                "top_space_group_fraction": counts.iloc[0] / len(sg) if len(counts) else np.nan,
            }
        )

    return groups.apply(stats, include_groups=False)


def _calls(phases: pd.DataFrame) -> pd.Series:
    """The call of each row; a table from before calls existed: tilted / untilted from ``ground_state_tilted``."""
    if "call" in phases:
        return phases["call"].fillna("undetermined")
    return phases["ground_state_tilted"].map({True: "tilted", False: "untilted"}).fillna("undetermined")


def _check_columns(phases: pd.DataFrame, columns) -> None:
    missing = [c for c in columns if c not in phases.columns]
    if missing:
        raise InputError(f"the phase table has no column(s) {missing}; columns: {', '.join(map(str, phases.columns))}")


def trend_by(phases: pd.DataFrame, by: str | list[str]) -> pd.DataFrame:
    """Per value of ``by`` (e.g. ``"B2_sp"`` for B', or ``["A2_sp", "X_sp"]``): count, dE statistics, fraction of
    tilted ground states and the most frequent winning space group (with its fraction)."""
    by = [by] if isinstance(by, str) else list(by)
    _check_columns(phases, by + [DE, "ground_state_tilted", "winning_space_group"])
    if phases.empty:
        return pd.DataFrame(
            columns=[
                "n",
                "n_with_dE",
                "dE_mean",
                "dE_median",
                "dE_max",
                "n_undetermined",
                "undetermined_fraction",
                "tilted_fraction",
                "top_space_group",
                "top_space_group_fraction",
            ]
        )
    out = _group_stats(phases.groupby(by, sort=True))
    return out.astype({"n": int, "n_with_dE": int, "n_undetermined": int})


def trend_by_tolerance(phases: pd.DataFrame, column: str = "goldschmidt_t", bins=TOLERANCE_BINS) -> pd.DataFrame:
    """The statistics of :func:`trend_by` in bins of a tolerance factor (``goldschmidt_t`` or ``tau``)."""
    _check_columns(phases, [column])
    binned = phases.assign(_bin=pd.cut(phases[column].astype(float), bins=bins))
    out = _group_stats(binned.groupby("_bin", observed=True))
    out.index.name = f"{column} bin"
    return out.astype({"n": int, "n_with_dE": int, "n_undetermined": int})


def tilted_fraction(phases: pd.DataFrame) -> dict:
    """How the compositions are called: ``n`` determined calls, of which ``n_tilted`` tilted and ``n_untilted``
    untilted, ``fraction`` tilted among the determined ones, and ``n_undetermined`` counted apart."""
    calls = _calls(phases) if not phases.empty else pd.Series(dtype=object)
    n_tilted, n_untilted = int(calls.eq("tilted").sum()), int(calls.eq("untilted").sum())
    n = n_tilted + n_untilted
    return {
        "n": n,
        "n_tilted": n_tilted,
        "n_untilted": n_untilted,
        "n_undetermined": int(calls.eq("undetermined").sum()),
        "fraction": n_tilted / n if n else None,
    }


RANKING_COLUMNS = [
    "composition_id",
    "formula",
    "call",
    "lowest_tilt",
    "phases_within_error",
    "winning_space_group",
    DE,
    "dE_tilt_mev_atom",
    "phase_error_mev",
    "ground_state_tilted",
    "goldschmidt_t",
    "tau",
    "tau_perovskite",
    "n_variants",
    "n_converged",
]


def ranked(phases: pd.DataFrame, n: int = 20, column: str = DE, ascending: bool = False) -> pd.DataFrame:
    """The ``n`` compositions with the largest (or smallest) ``column``, with the columns a chemist reads first."""
    _check_columns(phases, [column])
    df = phases.dropna(subset=[column]).sort_values([column, "composition_id"], ascending=[ascending, True]).head(n)
    return df[[c for c in RANKING_COLUMNS if c in df.columns]].reset_index(drop=True)


def phase_fractions(phases: pd.DataFrame, by: str = "X_sp") -> pd.DataFrame:
    """Fraction of compositions per winning space group (columns) for each value of ``by`` (rows), with the
    undetermined calls as a column of their own (``"undetermined"``, last) instead of left out."""
    _check_columns(phases, [by, "winning_space_group"])
    undetermined = _calls(phases).eq("undetermined")
    df = phases[phases["winning_space_group"].notna() | undetermined]
    if df.empty:
        return pd.DataFrame()
    out = pd.crosstab(
        df[by], df["winning_space_group"].where(~undetermined[df.index], -1).astype(int), normalize="index"
    )
    return out.rename(columns={-1: "undetermined"})[
        [c for c in out.columns if c != -1] + (["undetermined"] if -1 in out.columns else [])
    ]


def _ordering_of(df: pd.DataFrame) -> pd.Series:
    """The ordering of each validation row: its ``ordering`` column, else read off the structure id
    (``composition:ordering:tilt:method``)."""
    if "ordering" in df and df["ordering"].notna().all():
        return df["ordering"]
    return df["structure_id"].astype(str).str.split(":").str[1]


def usable_validations(validations: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Validations with both energies whose DFT SCF converged, and how many were left out for an unconverged SCF
    (``scf_converged`` False; None, i.e. not recorded, counts as converged)."""
    if validations.empty:
        return validations, 0
    df = validations.dropna(subset=["dft_energy_per_atom", "mlip_energy_per_atom"])
    bad = df["scf_converged"].eq(False) if "scf_converged" in df else pd.Series(False, index=df.index)
    return df[~bad].copy(), int(bad.sum())


def parity_table(validations: pd.DataFrame) -> pd.DataFrame:
    """Phase energy differences relative to the untilted variant of the same composition and ordering, DFT next
    to MLIP (meV/atom): ``dft_rel_mev`` = E_DFT(variant) - E_DFT(untilted), ``mlip_rel_mev`` likewise, for every
    tilted variant of a (method, composition, ordering) whose untilted variant was validated too. These are the
    quantities a phase ranking rests on (offsets between the two energy scales cancel). Results whose SCF did not
    converge are left out first (:func:`usable_validations`)."""
    cols = ["composition_id", "method", "dft_energy_per_atom", "mlip_energy_per_atom"]
    out_cols = cols + ["ordering", "start_tilt", "dft_rel_mev", "mlip_rel_mev", "error_mev"]
    if validations.empty:
        return pd.DataFrame(columns=out_cols)
    _check_columns(validations, cols + ["start_tilt", "structure_id"])
    df, _ = usable_validations(validations)
    if df.empty:
        return pd.DataFrame(columns=out_cols)
    df["ordering"] = _ordering_of(df).to_numpy()
    tilt = df["phase_tilt"].fillna(df["start_tilt"]) if "phase_tilt" in df else df["start_tilt"]
    untilted = (
        df[tilt == UNTILTED]
        .groupby(["method", "composition_id", "ordering"])[["dft_energy_per_atom", "mlip_energy_per_atom"]]
        .min()
    )
    untilted.columns = ["dft_ref", "mlip_ref"]
    rel = df[tilt != UNTILTED].join(untilted, on=["method", "composition_id", "ordering"], how="inner")
    rel["dft_rel_mev"] = 1e3 * (rel["dft_energy_per_atom"] - rel["dft_ref"])
    rel["mlip_rel_mev"] = 1e3 * (rel["mlip_energy_per_atom"] - rel["mlip_ref"])
    rel["error_mev"] = rel["mlip_rel_mev"] - rel["dft_rel_mev"]
    return rel.drop(columns=["dft_ref", "mlip_ref"]).reset_index(drop=True)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return np.nan
    return float(spearmanr(a, b).statistic)


def parity_stats(validations: pd.DataFrame, absolute_methods: tuple[str, ...] = ()) -> pd.DataFrame:
    """Per DFT method: MAE and RMSE of phase energy differences relative to the untilted variant
    (:func:`parity_table`; meV/atom), how often the MLIP picks the same lowest phase (the untilted one included),
    the mean Spearman rank correlation of a composition's phase energies, force and stress MAE, and how many DFT
    results were left out for an unconverged SCF. ``absolute_methods``: methods whose energies share their
    reference with the MLIP's (a model trained on that method's labels); for them the absolute energy MAE is given
    too (NaN for the others: absolute energies of different codes differ by element references)."""
    columns = [
        "n_structures",
        "n_scf_unconverged",
        "n_compositions",
        "n_differences",
        "energy_mae_mev",
        "energy_rmse_mev",
        "rank_correlation",
        "ground_state_agreement",
        "abs_energy_mae_mev",
        "force_mae",
        "stress_mae_gpa",
    ]
    if validations.empty:
        return pd.DataFrame(columns=columns)
    rel = parity_table(validations)
    out = {}
    for method, all_vals in validations.groupby("method"):
        vals, n_bad = usable_validations(all_vals)
        r = rel[rel["method"] == method]
        err = r["error_mev"].to_numpy(dtype=float)
        rhos, agree = [], []
        for _, g in r.groupby(["composition_id", "ordering"]):
            dft = np.append(g["dft_rel_mev"].to_numpy(dtype=float), 0.0)  # the untilted variant at 0
            mlip = np.append(g["mlip_rel_mev"].to_numpy(dtype=float), 0.0)
            rhos.append(_spearman(dft, mlip))
            agree.append(int(np.argmin(dft)) == int(np.argmin(mlip)))
        rhos_ok = [x for x in rhos if np.isfinite(x)]
        absolute = np.nan
        if method in absolute_methods and len(vals):
            absolute = float(1e3 * np.abs(vals["mlip_energy_per_atom"] - vals["dft_energy_per_atom"]).mean())
        out[method] = {
            "n_structures": len(vals),
            "n_scf_unconverged": n_bad,
            "n_compositions": int(r["composition_id"].nunique()),
            "n_differences": len(err),
            "energy_mae_mev": float(np.abs(err).mean()) if len(err) else np.nan,
            "energy_rmse_mev": float(np.sqrt((err**2).mean())) if len(err) else np.nan,
            "rank_correlation": float(np.mean(rhos_ok)) if rhos_ok else np.nan,
            "ground_state_agreement": float(np.mean(agree)) if agree else np.nan,
            "abs_energy_mae_mev": absolute,
            "force_mae": float(vals["force_mae"].dropna().mean()) if "force_mae" in vals else np.nan,
            "stress_mae_gpa": float(vals["stress_mae_gpa"].dropna().mean()) if "stress_mae_gpa" in vals else np.nan,
        }
    df = pd.DataFrame.from_dict(out, orient="index", columns=columns)
    df.index.name = "method"
    return df.astype({"n_structures": int, "n_compositions": int, "n_scf_unconverged": int, "n_differences": int})


def _grouped_variants(variants: pd.DataFrame, model_sha256: str, settings_hash: str) -> pd.DataFrame:
    """Digest variant columns grouped like the server aggregation of :func:`convergence_stats`."""
    if variants.empty:
        return pd.DataFrame()
    v = pd.DataFrame(
        {
            "_id.t": variants["t"],
            "_id.k": variants["k"],
            "_id.r": [r if f else None for r, f in zip(variants["r"], variants["f"], strict=True)],
            "converged": variants["ok"].fillna(False).astype(int),
            "failed": variants["f"].fillna(False).astype(int),
            "stayed": variants["st"].eq(True).astype(int),
            "wall": variants["w"].fillna(0.0),
        }
    )  # noqa: E712
    g = (
        v.groupby(["_id.t", "_id.k", "_id.r"], dropna=False)
        .agg(
            n=("converged", "size"),
            converged=("converged", "sum"),
            failed=("failed", "sum"),
            stayed=("stayed", "sum"),
            wall=("wall", "sum"),
        )
        .reset_index()
    )
    g["_id.m"], g["_id.s"] = model_sha256, settings_hash
    return g


def convergence_stats(
    db: DPScreenSettings | Database | None = None,
    model_sha256: str | None = None,
    settings_hash: str | None = None,
    variants: pd.DataFrame | None = None,
) -> dict:
    """Convergence of one model's relaxations (the given model / settings, else the pair with the most relaxations),
    from one aggregation grouped by the server, or from ``variants`` (the per-relaxation columns of that set's phase
    digests, :func:`dp_screen.analysis.data.read_phase_digest`, which cost no pass over the relaxations). Returns {"model_sha256", "settings_hash", "overall": {...},
    "by_tilt": DataFrame, "reasons": {failure reason: count}, "steps": array of optimiser steps}."""
    match = set_match(model_sha256, settings_hash)
    if variants is not None:
        g = _grouped_variants(variants, model_sha256, settings_hash)
    else:
        g = aggregate(
            "relaxations",
            [
                {"$match": match},
                # grouped by step count too, so the server returns a histogram of steps instead of one value per relaxation
                {
                    "$group": {
                        "_id": {
                            "m": "$model_sha256",
                            "s": "$settings_hash",
                            "t": "$start_tilt",
                            "r": {"$cond": ["$failed", "$reason", None]},
                            "k": "$n_steps",
                        },
                        "n": {"$sum": 1},
                        "converged": {"$sum": {"$cond": ["$converged", 1, 0]}},
                        "failed": {"$sum": {"$cond": ["$failed", 1, 0]}},
                        "stayed": {"$sum": {"$cond": [{"$eq": ["$phase.stayed_in_start_tilt", True]}, 1, 0]}},
                        "wall": {"$sum": "$wall_time_s"},
                    }
                },
            ],
            db,
        )
    if not g.empty:
        g["steps"] = [np.full(int(n), k, dtype=float) for k, n in zip(g["_id.k"].fillna(0), g["n"], strict=True)]
    counts = {} if g.empty else g.groupby(["_id.m", "_id.s"])["n"].sum().to_dict()
    picked = choose_set(counts, model_sha256, settings_hash, db)
    empty = pd.DataFrame(
        columns=[
            "n",
            "converged_fraction",
            "failed_fraction",
            "stayed_fraction",
            "steps_mean",
            "steps_max",
            "wall_time_s_mean",
        ]
    )
    if picked is None:
        return {
            "model_sha256": None,
            "settings_hash": None,
            "overall": {"n": 0},
            "by_tilt": empty,
            "reasons": {},
            "steps": np.array([]),
        }
    model, shash = picked
    g = g[(g["_id.m"] == model) & (g["_id.s"] == shash)]
    rows = {}
    for tilt, part in g.groupby("_id.t"):
        steps = np.concatenate([np.asarray(x, dtype=float) for x in part["steps"]])
        n = int(part["n"].sum())
        rows[tilt] = {
            "n": n,
            "converged_fraction": part["converged"].sum() / n,
            "failed_fraction": part["failed"].sum() / n,
            "stayed_fraction": part["stayed"].sum() / n,
            "steps_mean": steps.mean(),
            "steps_max": int(steps.max()),
            "wall_time_s_mean": part["wall"].sum() / n,
        }
    table = pd.DataFrame.from_dict(rows, orient="index")[empty.columns]
    table.index.name = "start_tilt"
    steps = np.concatenate([np.asarray(x, dtype=float) for x in g["steps"]])
    total, conv, failed = int(g["n"].sum()), int(g["converged"].sum()), int(g["failed"].sum())
    reasons = g.dropna(subset=["_id.r"]).groupby("_id.r")["n"].sum() if "_id.r" in g else pd.Series(dtype=int)
    overall = {
        "n": total,
        "converged": conv,
        "failed": failed,
        "converged_fraction": conv / total,
        "failed_fraction": failed / total,
        "steps_median": float(np.median(steps)),
        "steps_p90": float(np.percentile(steps, 90)),
        "steps_max": int(steps.max()),
    }
    return {
        "model_sha256": model,
        "settings_hash": shash,
        "overall": overall,
        "by_tilt": table,
        "reasons": {str(k): int(v) for k, v in reasons.items()},
        "steps": steps,
    }
