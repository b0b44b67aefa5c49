"""The figures of the map page of the documentation (docs/guide/map.md) from the shipped map, with
dp_screen.analysis.maps: trends against Goldschmidt t and Bartel tau per anion, and the B x B' matrix of dE per
halide.

    python scripts/make_map_figures.py [cs2bbx6 | sample1000]    (B x B' matrices only for the Cs2BB'X6 family)
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "figures"


def main(name: str = "cs2bbx6") -> None:
    import dp_screen as dps
    from dp_screen.analysis import maps

    table = dps.load_map(name)
    OUT.mkdir(parents=True, exist_ok=True)
    figures = {
        f"{name}_trends_t.png": maps.plot_trends(table, "goldschmidt_t"),
        f"{name}_trends_tau.png": maps.plot_trends(table.dropna(subset=["tau"]), "tau"),
    }
    corner = table[~table["hexagonal_candidate"]]
    for x in ("F", "Cl", "Br", "I") if name == "cs2bbx6" else ():
        if (corner["X"] == x).sum() > 1:
            figures[f"{name}_bb_{x}.png"] = maps.plot_b_pair_matrix(corner, x)
    for file, fig in figures.items():
        fig.savefig(OUT / file, dpi=80)
        print(f"wrote {OUT / file}")


if __name__ == "__main__":
    main(*sys.argv[1:])
