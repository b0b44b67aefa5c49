"""Write the notebooks of ``notebooks/`` (without outputs) from the cells below.

    python scripts/make_notebooks.py

The notebooks read the store that the ``DP_SCREEN_*`` environment variables point at (``DP_SCREEN_DB_URI``,
``DP_SCREEN_DATABASE``; unset: the embedded server of ``./.dp_screen``, as the ``dp-screen`` command does). The tests
execute them top to bottom against a small store (``tests/test_notebooks.py``).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]

SETUP = """%matplotlib inline
import os
from pathlib import Path

import pandas as pd
from IPython.display import display

from dp_screen.analysis import data, plots, trends
from dp_screen.settings import DPScreenSettings

pd.set_option("display.precision", 3)
# DP_SCREEN_DB_URI / DP_SCREEN_DATABASE / DP_SCREEN_HOME, or the embedded server of the project folder .dp_screen
settings = DPScreenSettings()
if "DP_SCREEN_HOME" not in os.environ and not settings.home.exists() and Path("../.dp_screen").exists():
    settings = DPScreenSettings(home=Path("../.dp_screen"))  # started from notebooks/: the project's store
data.describe_store(settings)"""

SCREEN = """%matplotlib inline
import os

import numpy as np
from matplotlib.figure import Figure

import dp_screen as dps

# the packaged model (or another MACE file: DP_SCREEN_NOTEBOOK_MODEL=/path/to/model)
MODEL = os.environ.get("DP_SCREEN_NOTEBOOK_MODEL", "default")
FORMULAS = ["Ba2CaWO6", "Cs2AgBiCl6", "Sr2CoMoO6"]"""

PLOT = """fig = Figure(figsize=(6, 3.5), layout="constrained")
ax = fig.add_subplot()
for k, row in enumerate(table.itertuples()):
    phases = sorted(row.energies_mev_atom, key=row.energies_mev_atom.get)
    e = np.array([row.energies_mev_atom[p] for p in phases])
    ax.scatter(np.full(len(e), k), e, s=25)
    for p, ek in zip(phases, e):
        ax.annotate(p, (k, ek), xytext=(5, 0), textcoords="offset points", fontsize=7, va="center")
    if row.phase_error_mev is not None and np.isfinite(row.phase_error_mev):  # within 2 sigma of the lowest
        ax.fill_between([k - 0.2, k + 0.2], 0, 2 * row.phase_error_mev, alpha=0.15, color="k")
ax.set_xticks(range(len(table)), [f"{f}\\n{c}" for f, c in zip(table.formula, table.call)], fontsize=8)
ax.set_ylabel("E - E(lowest) (meV/atom)")
ax.set_title("Phases of each composition; grey: within 2 sigma of the lowest")
fig"""

NOTEBOOKS = {
    "00_screen_your_own.ipynb": [
        new_markdown_cell(
            "# Screen your own compositions\n\nBuild, relax and rank a handful of formulas from Python "
            "(`import dp_screen as dps`), in memory: no database. Each composition is built in the "
            "tilt systems that cover ~97% of ordered double perovskites, relaxed with the packaged "
            "MACE model (symmetry held), and called `tilted`, `untilted` or `undetermined` at 2 sigma "
            "of the model's measured phase-energy error."
        ),
        new_code_cell(SCREEN),
        new_code_cell(
            "cells = dps.build(FORMULAS)  # bond-valence starts, default ordering and tilt systems\n"
            "[(c.formula, c.ordering, c.tilt) for c in cells]"
        ),
        new_code_cell(
            "results = dps.relax(cells, model=MODEL)\n"
            "table = dps.rank(results)\n"
            'table[["formula", "call", "ground_state", "lowest", "phases_within_error", '
            '"dE_tilt_mev_atom", "phase_error_mev", "phase_error_source"]]'
        ),
        new_markdown_cell(
            "## The phases of each composition and the error bar\n\nEvery phase a composition's "
            "relaxations ended in, relative to its lowest; the grey band is 2 sigma: the phases inside "
            "it cannot be told apart by this model."
        ),
        new_code_cell(PLOT),
        new_markdown_cell(
            "## Ground states, ready for the next step\n\n`dps.ground_states` returns the relaxed "
            "cells with their provenance; `workflows/atomate2_handoff.py` hands them to atomate2."
        ),
        new_code_cell(
            "ground = dps.ground_states(table)\n"
            "for cell in ground:\n"
            '    print(cell.formula, cell.provenance["phase"], cell.provenance["call"], '
            "cell.structure.get_space_group_info())\n"
            'print(table[["formula", "call", "lowest", "phase_error_mev", "n_ranked"]]'
            '.to_json(orient="records"))'
        ),
    ],
    "01_composition_space.ipynb": [
        new_markdown_cell(
            "# Composition space\n\nThe charge-balanced AA'BB'X6 compositions in the store "
            "(`dp-screen enumerate`), their tolerance factors and the cation ordering their "
            "descriptors suggest."
        ),
        new_code_cell(SETUP),
        new_markdown_cell(
            "## Compositions per tolerance-factor bin and anion\n\nBinned by the database server, so "
            "this is cheap for the whole space (~220k compositions)."
        ),
        new_code_cell(
            'hist = data.composition_space(settings, field="goldschmidt_t", width=0.025)\n'
            'counts = hist.groupby("X")[["n", "n_tau_perovskite", "n_goldschmidt_ok"]].sum()\n'
            'counts["tau_perovskite_share"] = counts["n_tau_perovskite"] / counts["n"]\n'
            "display(counts)\n"
            "plots.plot_composition_space(hist)"
        ),
        new_markdown_cell(
            "## Orderings and descriptors\n\nA projection keeps the transfer small: only the columns "
            "used here come back."
        ),
        new_code_cell(
            "comps = data.composition_table(settings)\n"
            'print(len(comps), "compositions")\n'
            'display(pd.crosstab(comps["X_sp"], comps["expected_ordering"]))\n'
            'comps.groupby("X_sp")[["goldschmidt_t", "tau", "octahedral_factor"]].describe()'
            ".T.round(3)"
        ),
        new_code_cell(
            "from matplotlib.figure import Figure\n\n"
            'fig = Figure(figsize=(5, 4), layout="constrained")\n'
            "ax = fig.add_subplot()\n"
            'for x, g in comps.dropna(subset=["tau"]).groupby("X_sp"):\n'
            '    ax.scatter(g["goldschmidt_t"], g["tau"], s=6, label=x)\n'
            'ax.axhline(4.18, color="k", ls="--", lw=0.8, label="tau = 4.18")\n'
            'ax.set_xlabel("Goldschmidt tolerance factor t")\n'
            'ax.set_ylabel("Bartel tau")\n'
            'ax.set_yscale("symlog")\n'
            "ax.legend(fontsize=7)\n"
            "fig"
        ),
    ],
    "02_phases_and_trends.ipynb": [
        new_markdown_cell(
            "# Phases and trends\n\nFor each relaxed composition: the lowest-energy variant, its space "
            "group and dE = E(untilted) - E(lowest) in meV/atom (`dp-screen relax` / `dp-screen run`). "
            "The relaxations of one model and settings are analysed: by default those with the most "
            "relaxations; pass `model_sha256=` to choose.\n\nEach row carries a **call** with its "
            "error bar: `tilted` when E(untilted) - E(lowest tilted phase) > 2 sigma, `untilted` when "
            "< -2 sigma or when no tilted start stayed tilted, else `undetermined`; sigma is the "
            "model's measured phase-energy error (`phase_error_mev`, its source in "
            "`phase_error_source`; pass `phase_error_mev=` to `data.phase_table` to use another). "
            "`phases_within_error` lists the phases within 2 sigma of the lowest. Every statistic "
            "counts the undetermined calls apart."
        ),
        new_code_cell(SETUP),
        new_code_cell(
            "display(data.relaxation_sets(settings))\n"
            "phases = data.phase_table(settings)\n"
            'print(len(phases), "relaxed compositions; model", phases.attrs.get("model_sha256"))\n'
            'display(phases["call"].value_counts())\n'
            "trends.tilted_fraction(phases)"
        ),
        new_code_cell(
            'phases[["formula", "call", "lowest_tilt", "phases_within_error", "dE_tilt_mev_atom", '
            '"phase_error_mev", "winning_space_group", "goldschmidt_t"]].sort_values("dE_tilt_mev_atom", '
            "ascending=False).head(20)"
        ),
        new_markdown_cell("## Trends by site and by tolerance factor"),
        new_code_cell(
            'for site in ["A2_sp", "B_sp", "B2_sp", "X_sp"]:\n'
            '    print(site.replace("_sp", "").replace("2", "\'"))\n'
            '    display(trends.trend_by(phases, site) if len(phases) else "no relaxations yet")\n'
            "trends.trend_by_tolerance(phases) if len(phases) else None"
        ),
        new_markdown_cell("## Phase maps"),
        new_code_cell(
            "if len(phases):\n"
            '    display(plots.plot_phase_fractions(trends.phase_fractions(phases, "X_sp")))\n'
            "    display(plots.plot_de_histogram(phases))\n"
            "    display(plots.plot_de_vs_tolerance(phases))"
        ),
        new_code_cell(
            "# dE over (B, B') for the (A, A', X) with the most relaxed compositions\n"
            'with_de = phases.dropna(subset=["dE_untilted_mev_atom"])\n'
            "if len(with_de):\n"
            '    a, a2, x = with_de.groupby(["A_sp", "A2_sp", "X_sp"]).size().idxmax()\n'
            "    display(plots.plot_de_heatmap(phases, a, a2, x))"
        ),
    ],
    "03_mlip_validation.ipynb": [
        new_markdown_cell(
            "# How far to trust the MLIP\n\nDFT single points of a stratified sample of relaxed "
            "structures (`dp-screen run --validate N`, or VASP through FireWorks) next to the MLIP's "
            "values, and the convergence of the relaxations."
        ),
        new_code_cell(SETUP),
        new_code_cell('vals = data.validation_table(settings)\nprint(len(vals), "validated structures")\nvals.head()'),
        new_markdown_cell(
            "## Phase energies: parity, errors and rank correlation\n\nEnergies relative to the "
            "untilted variant of the same composition and ordering (meV/atom): the differences a phase "
            "ranking rests on, in which the different energy references of DFT and the MLIP cancel."
        ),
        new_code_cell(
            "parity = trends.parity_table(vals)\ndisplay(trends.parity_stats(vals))\nplots.plot_parity(parity)"
        ),
        new_markdown_cell("## Convergence of the relaxations"),
        new_code_cell(
            "conv = trends.convergence_stats(settings)\n"
            'display(conv["overall"], conv["by_tilt"], conv["reasons"])\n'
            'plots.plot_convergence(conv.get("steps", []))'
        ),
    ],
    "04_cs2bbx6_map.ipynb": [
        new_markdown_cell(
            '# The Cs2BB\'X6 phase map\n\nThe map shipped with dp_screen (`dps.load_map("cs2bbx6")`, made by '
            "`scripts/make_map.py cs2bbx6`): every Cs2BB'X6 composition of the default space in the five default "
            "tilt systems, relaxed with the packaged model (symmetry held) and ranked with the error-barred calls. "
            "dE = E(untilted) - E(lowest phase). Hexagonal candidates (t >= 1.05) are kept apart: dp_screen builds "
            "no face-sharing polytype. The functions are `dp_screen.analysis.maps`'s."
        ),
        new_code_cell(
            "%matplotlib inline\n"
            "import numpy as np\n"
            "import pandas as pd\n"
            "from IPython.display import display\n\n"
            "import dp_screen as dps\n"
            "from dp_screen.analysis import maps\n\n"
            'pd.set_option("display.precision", 3)\n'
            'cs2 = dps.load_map("cs2bbx6")\n'
            'corner = cs2[~cs2["hexagonal_candidate"]]\n'
            'print(len(cs2), "of", cs2["n_family"].iloc[0], "compositions;", len(corner), '
            '"perovskite-corner rows;", int(cs2["hexagonal_candidate"].sum()), "hexagonal candidates")'
        ),
        new_markdown_cell("## Calls and dE per anion (hexagonal candidates apart)"),
        new_code_cell('display(maps.call_counts(corner, "X"))\nmaps.call_counts(cs2[cs2["hexagonal_candidate"]], "X")'),
        new_markdown_cell("## Against the tolerance factors, per anion"),
        new_code_cell(
            'display(maps.plot_trends(cs2, "goldschmidt_t"))\nmaps.plot_trends(cs2.dropna(subset=["tau"]), "tau")'
        ),
        new_code_cell('maps.binned(corner, "goldschmidt_t", [0.8, 0.9, 0.95, 0.97, 1.0, 1.05])'),
        new_markdown_cell(
            "## Against what is known\n\nThe rule of thumb by t band (Vasala & Karppinen 2015), the share "
            "of tilted ordered double perovskites (Lufaso, Barnes & Woodward 2006) and the seed's claim that the "
            "cubic phase lies ~0.1 eV/atom above the ground state."
        ),
        new_code_cell("display(maps.t_band_comparison(cs2))\nmaps.literature_comparison(cs2)"),
        new_markdown_cell("## B x B' maps per halide"),
        new_code_cell(
            'for x in ["F", "Cl", "Br", "I"]:\n'
            '    if (corner["X"] == x).sum() > 1:\n'
            "        display(maps.plot_b_pair_matrix(corner, x))"
        ),
        new_markdown_cell("## Where the undetermined calls sit"),
        new_code_cell(
            'undetermined = cs2[cs2["call"] == "undetermined"]\n'
            'print(f"{len(undetermined)} of {len(cs2)} undetermined")\n'
            'undetermined.groupby(["X", pd.cut(undetermined["goldschmidt_t"], [0.8, 0.9, 0.97, 1.0, 1.05, 1.2])], '
            "observed=True).size().unstack(fill_value=0)"
        ),
    ],
}


def main(out: Path = ROOT / "notebooks") -> None:
    out = Path(out)
    out.mkdir(exist_ok=True)
    for name, cells in NOTEBOOKS.items():
        for i, cell in enumerate(cells):
            cell.id = f"cell-{i}"  # stable ids: regenerating gives the same files
        nb = new_notebook(
            cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
        )
        nbformat.validate(nb)
        nbformat.write(nb, out / name)
        print("wrote", out / name)


if __name__ == "__main__":
    main()
