"""Trends of a phase map (:func:`dp_screen.api.load_map`): calls and dE against the tolerance factors, per anion,
phase fractions, B x B' maps, and the comparisons with what is known about double perovskites.

dE here is ``dE_untilted_mev_atom`` = E(untilted) - E(lowest phase) of the ranked variants (>= 0; 0 when the
untilted cell is the lowest); the calls carry the model's error bar (tilted / untilted / undetermined at 2 sigma,
:mod:`dp_screen.structures.phases`). Hexagonal candidates (t >= 1.05, ``hexagonal_candidate``) are kept apart in
every statistic: dp_screen builds no face-sharing polytype, so their perovskite ranking answers a narrower question.

Each chemistry counts once: oxidation-state twins (Cs2Ag+Co3+Cl6 and Cs2Co+Ag3+Cl6, the same elements on the same
sites, :func:`dp_screen.chemistry.composition_space.chemistry_id`) are one structure to an MLIP, so the statistics
keep one row per chemistry and ordering (:func:`one_per_chemistry`): the twin first in composition-id order, whose
start the relax jobs relax for all of them (:mod:`dp_screen.jobs.relax`), with its descriptors. The columns that
count are called ``chemistries``. The B x B' matrices keep every composition (twins put their elements in
different cells).

Reference points:

- Vasala & Karppinen, Prog. Solid State Chem. 43, 1 (2015): by Goldschmidt t, >= 1.05 hexagonal polytypes,
  1.00-1.05 cubic Fm-3m, 0.97-1.00 tetragonal I4/m, < 0.97 monoclinic P21/n (:data:`T_BANDS`);
- Lufaso, Barnes & Woodward, Acta Cryst. B62, 397 (2006): about 70% of ordered double perovskites are tilted;
- the cubic phase typically higher in energy in CsA'BB'X6, by ~0.1 eV/atom on average (the project's seed).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dp_screen.structures.phases import UNTILTED

#: (low, high, label, phase expected by the rule of thumb, its tilt system or None)
T_BANDS = [
    (-np.inf, 0.97, "t < 0.97", "monoclinic P21/n", "a+b-b-"),
    (0.97, 1.00, "0.97 <= t < 1.00", "tetragonal I4/m", "a0a0c-"),
    (1.00, 1.05, "1.00 <= t < 1.05", "cubic Fm-3m", UNTILTED),
    (1.05, np.inf, "t >= 1.05", "hexagonal polytypes (not built)", None),
]
CALLS = ("tilted", "untilted", "undetermined")
LITERATURE_TILTED_FRACTION = 0.70  # Lufaso, Barnes & Woodward (2006)
SEED_CUBIC_ABOVE_GROUND_MEV = 100.0  # the seed's ~0.1 eV/atom


def one_per_chemistry(table: pd.DataFrame) -> pd.DataFrame:
    """One row per chemistry and ordering: the twin first in composition-id order (module docstring)."""
    from dp_screen.chemistry.composition_space import chemistry_id

    keys = pd.DataFrame(
        {"c": table["composition_id"].map(chemistry_id), "o": table["ordering"], "cid": table["composition_id"]}
    )
    first = keys.sort_values("cid", kind="stable").drop_duplicates(["c", "o"]).index
    return table[table.index.isin(first)]


def call_counts(table: pd.DataFrame, by: str | list[str] | None = None) -> pd.DataFrame:
    """Per group (e.g. ``"X"``): chemistries (:func:`one_per_chemistry`), the three calls, the tilted share of the
    determined calls, the share whose lowest phase is tilted (no error bar), and the median and mean dE
    (meV/atom)."""
    table = one_per_chemistry(table)
    groups = [("all", table)] if by is None else list(table.groupby(by, observed=True))
    rows = []
    for key, g in groups:
        n = g["call"].value_counts()
        determined = n.get("tilted", 0) + n.get("untilted", 0)
        de = g["dE_untilted_mev_atom"].dropna()
        rows.append(
            {
                "group": key,
                "chemistries": len(g),
                **{c: int(n.get(c, 0)) for c in CALLS},
                "tilted_of_determined": n.get("tilted", 0) / determined if determined else np.nan,
                "lowest_tilted": float((g["lowest"].notna() & (g["lowest"] != UNTILTED)).mean()) if len(g) else np.nan,
                "dE_median_mev_atom": float(de.median()) if len(de) else np.nan,
                "dE_mean_mev_atom": float(de.mean()) if len(de) else np.nan,
            }
        )
    return pd.DataFrame(rows).set_index("group")


def t_band_comparison(table: pd.DataFrame) -> pd.DataFrame:
    """The map against the rule of thumb by t band: chemistries (:func:`one_per_chemistry`), calls, the share whose
    lowest phase is the expected tilt system (untilted for the cubic band) and the most common lowest phase."""
    table = one_per_chemistry(table)
    rows = []
    for lo, hi, label, expected, tilt in T_BANDS:
        g = table[(table["goldschmidt_t"] >= lo) & (table["goldschmidt_t"] < hi)]
        n = g["call"].value_counts()
        rows.append(
            {
                "t band": label,
                "expected (experiment)": expected,
                "chemistries": len(g),
                **{c: int(n.get(c, 0)) for c in CALLS},
                "lowest is the expected phase": float((g["lowest"] == tilt).mean()) if tilt and len(g) else np.nan,
                "most common lowest phase": g["lowest"].mode().iloc[0] if len(g) else None,
            }
        )
    return pd.DataFrame(rows).set_index("t band")


def binned(table: pd.DataFrame, column: str, bins: list[float] | np.ndarray) -> pd.DataFrame:
    """:func:`call_counts` per anion and bin of a descriptor (``goldschmidt_t``, ``tau``)."""
    binned_table = table.assign(bin=pd.cut(table[column], bins))
    out = call_counts(binned_table, ["X", "bin"])
    out.index = pd.MultiIndex.from_tuples(out.index, names=["X", column])
    return out


def b_pair_matrix(table: pd.DataFrame, x: str, value: str = "dE_untilted_mev_atom") -> pd.DataFrame:
    """A B x B' matrix of ``value`` (the mean over oxidation-state assignments) for one anion."""
    g = table[table["X"] == x]
    return g.pivot_table(index="B", columns="B2", values=value, aggfunc="mean")


def literature_comparison(table: pd.DataFrame) -> pd.DataFrame:
    """The map's figures next to the three reference points of the module docstring (perovskite-corner rows,
    hexagonal candidates left out; each chemistry once)."""
    corner = one_per_chemistry(table[~table["hexagonal_candidate"].astype(bool)])
    counts = call_counts(corner).iloc[0]
    bands = t_band_comparison(corner)
    de = corner["dE_untilted_mev_atom"].dropna()
    return pd.DataFrame(
        [
            {
                "claim": "~70% of ordered double perovskites tilted (Lufaso, Barnes & Woodward 2006)",
                "literature": f"{LITERATURE_TILTED_FRACTION:.0%}",
                "map": f"{counts['tilted_of_determined']:.0%} of {int(counts['tilted'] + counts['untilted'])} determined "
                f"calls tilted ({int(counts['undetermined'])} undetermined); lowest phase tilted for "
                f"{counts['lowest_tilted']:.0%} of {int(counts['chemistries'])} chemistries",
            },
            {
                "claim": "cubic Fm-3m for 1.00 <= t < 1.05 (Vasala & Karppinen 2015)",
                "literature": "cubic",
                "map": _band_text(bands, "1.00 <= t < 1.05"),
            },
            {
                "claim": "tetragonal I4/m for 0.97 <= t < 1.00",
                "literature": "a0a0c-",
                "map": _band_text(bands, "0.97 <= t < 1.00"),
            },
            {"claim": "monoclinic P21/n for t < 0.97", "literature": "a+b-b-", "map": _band_text(bands, "t < 0.97")},
            {
                "claim": "cubic typically higher than the ground state, by ~0.1 eV/atom (the seed)",
                "literature": f"{SEED_CUBIC_ABOVE_GROUND_MEV:.0f} meV/atom",
                "map": f"untilted above the lowest phase for {(de > 0).mean():.0%} of {len(de)}; mean "
                f"{de.mean():.1f}, median {de.median():.1f} meV/atom"
                if len(de)
                else "-",
            },
        ]
    ).set_index("claim")


def _band_text(bands: pd.DataFrame, label: str) -> str:
    r = bands.loc[label]
    if not r["chemistries"]:
        return "no chemistries"
    share = r["lowest is the expected phase"]
    return (
        f"{r['chemistries']} chemistries: lowest phase the expected one for {share:.0%}; calls "
        f"{r['tilted']} tilted / {r['untilted']} untilted / {r['undetermined']} undetermined"
    )


def plot_trends(table: pd.DataFrame, column: str = "goldschmidt_t", bins: int = 12):
    """Two panels per anion against ``column``: the share of compositions whose lowest phase is tilted (with the
    share called tilted at 2 sigma) and the median dE; hexagonal candidates left out, each chemistry once."""
    from matplotlib.figure import Figure

    corner = one_per_chemistry(table[~table["hexagonal_candidate"].astype(bool)])
    edges = np.linspace(corner[column].min(), corner[column].max(), bins + 1)
    fig = Figure(figsize=(9, 3.6), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    for x, g in corner.groupby("X"):
        mid = pd.cut(g[column], edges, include_lowest=True)
        grouped = g.groupby(mid, observed=True)
        centres = [iv.mid for iv in grouped.groups]
        lowest = grouped.apply(lambda d: (d["lowest"] != UNTILTED).mean(), include_groups=False)
        called = grouped.apply(lambda d: (d["call"] == "tilted").mean(), include_groups=False)
        line = ax1.plot(centres, lowest.values, "o-", label=f"{x}: lowest tilted")[0]
        ax1.plot(centres, called.values, "x--", color=line.get_color(), alpha=0.6)
        ax2.plot(centres, grouped["dE_untilted_mev_atom"].median().values, "o-", color=line.get_color(), label=x)
    ax1.set_xlabel(column)
    ax1.set_ylabel("share of compositions")
    ax1.set_title("lowest phase tilted (o) / called tilted at 2 sigma (x)", fontsize=9)
    ax1.legend(fontsize=7)
    ax2.set_xlabel(column)
    ax2.set_ylabel("median E(untilted) - E(lowest) (meV/atom)")
    ax2.legend(fontsize=7)
    return fig


def plot_b_pair_matrix(table: pd.DataFrame, x: str):
    """The B x B' matrix of dE for one anion, as an image."""
    from matplotlib.figure import Figure

    m = b_pair_matrix(table, x)
    fig = Figure(figsize=(7, 6), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(m.values, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(m.columns)), m.columns, rotation=90, fontsize=5)
    ax.set_yticks(range(len(m.index)), m.index, fontsize=5)
    ax.set_xlabel("B'")
    ax.set_ylabel("B")
    ax.set_title(f"Cs2BB'{x}6: E(untilted) - E(lowest) (meV/atom)")
    fig.colorbar(image, ax=ax)
    return fig
