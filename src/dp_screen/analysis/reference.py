"""Accuracy of a model against the shipped DFT reference set (``dp_screen.dft.reference``).

The figures a chemist ranking phases needs, computed per composition relative to its untilted (a0a0a0) point:
phase energy differences dE = E(tilt) - E(a0a0a0) per atom, model vs DFT (MAE, meV/atom), whether the model puts
the lowest phase where DFT does, and the force (eV/A) and stress (GPa) errors at the same geometries.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pandas as pd

UNTILTED = "a0a0a0"


def reference_table(points: list[dict], predictions: list[dict]) -> pd.DataFrame:
    """One row per point: formula, tilt, method, DFT and model energy per atom, dE of each relative to the
    composition's untilted point (meV/atom; NaN without one), force and stress MAE. ``predictions[i]`` has the
    model's ``energy`` (eV), ``forces`` (eV/A) and ``stress_gpa`` for ``points[i]``."""
    rows = []
    for p, m in zip(points, predictions, strict=True):
        n = p["n_atoms"]
        f_err = np.abs(np.asarray(m["forces"], float) - np.asarray(p["forces"], float))
        s_err = (
            np.abs(np.asarray(m["stress_gpa"], float) - np.asarray(p["stress_gpa"], float))
            if p.get("stress_gpa") is not None and m.get("stress_gpa") is not None
            else None
        )
        rows.append(
            {
                "formula": p["formula"],
                "tilt": p["tilt"],
                "method": p.get("method"),
                "n_atoms": n,
                "space_group": p.get("space_group"),
                "dft_e": p["energy"] / n,
                "model_e": m["energy"] / n,
                "force_mae": float(f_err.mean()),
                "stress_mae_gpa": None if s_err is None else float(s_err.mean()),
            }
        )
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    for col in ("dft", "model"):
        base = df[df["tilt"] == UNTILTED].set_index("formula")[f"{col}_e"]
        df[f"{col}_de_mev"] = 1000 * (df[f"{col}_e"] - df["formula"].map(base))
    return df


def reference_metrics(points: list[dict], predictions: list[dict]) -> dict:
    """Phase-difference MAE (tilted points of compositions with an untilted one), lowest-phase agreement (over
    compositions with at least two points), force MAE and stress MAE (means over every point's components).

    Phases are the ones the cells ended in: a tilted start that relaxed back to the untilted cell (the same space
    group as another point's) is the same phase, so the model agrees when its lowest point has DFT's lowest
    point's tilt or, when both record one, its space group."""
    df = reference_table(points, predictions)
    if df.empty:
        return {"n_points": 0}
    tilted = df[(df["tilt"] != UNTILTED) & df["dft_de_mev"].notna()]
    agree: dict[str, bool] = {}
    by = defaultdict(list)
    for r in df.itertuples():
        by[r.formula].append(r)
    for formula, rs in by.items():
        if len(rs) >= 2:
            d, m = min(rs, key=lambda r: r.dft_e), min(rs, key=lambda r: r.model_e)
            agree[formula] = d.tilt == m.tilt or bool(pd.notna(d.space_group) and d.space_group == m.space_group)
    err = (tilted["model_de_mev"] - tilted["dft_de_mev"]).abs()
    forces = np.concatenate(
        [
            np.abs(np.asarray(m["forces"], float) - np.asarray(p["forces"], float)).ravel()
            for p, m in zip(points, predictions, strict=True)
        ]
    )
    stresses = [
        np.abs(np.asarray(m["stress_gpa"], float) - np.asarray(p["stress_gpa"], float)).ravel()
        for p, m in zip(points, predictions, strict=True)
        if p.get("stress_gpa") is not None and m.get("stress_gpa") is not None
    ]
    return {
        "n_points": len(df),
        "n_compositions": int(df["formula"].nunique()),
        "n_differences": len(err),
        "phase_de_mae_mev": float(err.mean()) if len(err) else None,
        "dft_de_mean_abs_mev": float(tilted["dft_de_mev"].abs().mean()) if len(err) else None,
        "lowest_phase_agreement": float(np.mean(list(agree.values()))) if agree else None,
        "n_lowest_compared": len(agree),
        "force_mae": float(forces.mean()),
        "stress_mae_gpa": float(np.concatenate(stresses).mean()) if stresses else None,
    }
