"""Structural descriptors of AA'BB'X6 compositions, vectorised over numpy arrays.

- Goldschmidt tolerance factor t = (rA + rX) / (sqrt(2) (rB + rX)), site-averaged radii.
- Bartel tau = rX/rB - nA (nA - (rA/rB) / ln(rA/rB)) (Bartel et al., Sci. Adv. 5, eaav0693 (2019)), with
  site-averaged radii and nA the mean A-site oxidation state; a perovskite is predicted when tau < 4.18. tau is
  undefined when rA <= rB (returned as NaN, and the perovskite call is then False).
- Octahedral factor mu = rB / rX.
- Site charge and radius differences, and the expected cation ordering (King & Woodward, J. Mater. Chem. 20, 5785
  (2010)): rock-salt B order is likely when |qB - qB'| >= 2; layered A order is plausible when A and A' differ in
  charge by 2 and the B site is rock-salt ordered.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

TAU_THRESHOLD = 4.18
GOLDSCHMIDT_WINDOW = (0.825, 1.059)

#: Orderings a starting structure can take (Vasala & Karppinen, Prog. Solid State Chem. 43, 1 (2015)): rock-salt B with A = A' (or A disordered),
#: layered A + rock-salt B, rock-salt A + rock-salt B.
ORDERINGS = ("rocksalt", "layered", "rocksalt-A")


def goldschmidt_tolerance(r_a, r_b, r_x):
    """Goldschmidt tolerance factor (arrays or floats, Angstrom)."""
    r_a, r_b, r_x = (np.asarray(v, dtype=float) for v in (r_a, r_b, r_x))
    return (r_a + r_x) / (np.sqrt(2.0) * (r_b + r_x))


def bartel_tau(r_a, r_b, r_x, n_a):
    """Bartel's tau; NaN where rA <= rB (undefined)."""
    r_a, r_b, r_x, n_a = (np.asarray(v, dtype=float) for v in (r_a, r_b, r_x, n_a))
    ratio = r_a / r_b
    with np.errstate(divide="ignore", invalid="ignore"):
        tau = r_x / r_b - n_a * (n_a - ratio / np.log(ratio))
    return np.where(ratio > 1.0, tau, np.nan)


def octahedral_factor(r_b, r_x):
    """Octahedral factor mu = rB / rX."""
    return np.asarray(r_b, dtype=float) / np.asarray(r_x, dtype=float)


def add_descriptors(df: pd.DataFrame) -> pd.DataFrame:
    """Add descriptor columns to a table of compositions, in place, and return it.

    ``df`` needs the columns A, A2, B, B2 (element symbols), nA, nA2, nB, nB2 (oxidation states) and rA, rA2, rB,
    rB2, rX (radii, Angstrom). Adds: rA_mean, rB_mean, nA_mean, goldschmidt_t, goldschmidt_ok, tau,
    tau_perovskite, octahedral_factor, dqA, dqB, drA, drB, rocksalt_b_likely, layered_a_plausible,
    expected_ordering.
    """
    n_a, n_a2, n_b, n_b2 = (df[c].to_numpy(dtype=float) for c in ("nA", "nA2", "nB", "nB2"))
    r_a, r_a2, r_b, r_b2, r_x = (df[c].to_numpy(dtype=float) for c in ("rA", "rA2", "rB", "rB2", "rX"))
    ra_mean, rb_mean, na_mean = (r_a + r_a2) / 2, (r_b + r_b2) / 2, (n_a + n_a2) / 2

    t = goldschmidt_tolerance(ra_mean, rb_mean, r_x)
    tau = bartel_tau(ra_mean, rb_mean, r_x, na_mean)
    dq_b = np.abs(n_b - n_b2)
    dq_a = np.abs(n_a - n_a2)
    same_a = (df["A"].to_numpy() == df["A2"].to_numpy()) & (n_a == n_a2)
    rocksalt_b = dq_b >= 2
    layered_a = ~same_a & (dq_a == 2) & rocksalt_b

    df["rA_mean"] = np.round(ra_mean, 4)
    df["rB_mean"] = np.round(rb_mean, 4)
    df["nA_mean"] = na_mean
    df["goldschmidt_t"] = np.round(t, 5)
    df["goldschmidt_ok"] = (t > GOLDSCHMIDT_WINDOW[0]) & (t < GOLDSCHMIDT_WINDOW[1])
    df["tau"] = np.round(tau, 5)
    df["tau_perovskite"] = np.nan_to_num(tau, nan=np.inf) < TAU_THRESHOLD
    df["octahedral_factor"] = np.round(octahedral_factor(rb_mean, r_x), 5)
    df["dqA"] = dq_a.astype(int)
    df["dqB"] = dq_b.astype(int)
    df["drA"] = np.round(np.abs(r_a - r_a2), 4)
    df["drB"] = np.round(np.abs(r_b - r_b2), 4)
    df["rocksalt_b_likely"] = rocksalt_b
    df["layered_a_plausible"] = layered_a
    df["expected_ordering"] = np.where(layered_a, "layered", np.where(same_a, "rocksalt", "rocksalt-A"))
    return df
