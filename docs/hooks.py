"""MkDocs hook: pages holding a ``<!-- generated: NAME -->`` line get it replaced by a section made from a file the
project ships or a benchmark wrote, so no figure on those pages is copied by hand.

- ``model_card``: from ``src/dp_screen/data/models/dp_screen_default.json`` (the packaged model's card);
- ``bench_pipeline``: from ``benchmarks/results/bench_pipeline.json`` (``python benchmarks/bench_pipeline.py --save``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CARD = ROOT / "src" / "dp_screen" / "data" / "models" / "dp_screen_default.json"
PIPELINE = ROOT / "benchmarks" / "results" / "bench_pipeline.json"


def _fmt(v, spec: str = ".3g") -> str:
    return "-" if v is None else format(v, spec) if isinstance(v, (int, float)) else str(v)


def model_card() -> str:
    card = json.loads(CARD.read_text())
    out = [
        f"Generated from `{CARD.relative_to(ROOT)}` when the site is built.",
        "",
        "| field | value |",
        "|---|---|",
        f"| file | `{card['model']}` |",
        f"| sha256 | `{card['sha256']}` |",
        f"| teacher | {card['teacher']} |",
        f"| made by | {card['made_by']} |",
    ]
    s = card.get("settings", {})
    arch = f"{s.get('num_channels')} channels, L = {s.get('max_l')}, {s.get('num_interactions')} interactions"
    out += [f"| architecture | {arch}, r_max {s.get('r_max')} A, {s.get('dtype')} |", ""]
    out += [
        "## Errors against the teacher (held-out cells)",
        "",
        "| split | n | energy MAE (meV/atom) | energy RMSE | forces MAE (meV/A) | stress MAE (GPa) |",
        "|---|---|---|---|---|---|",
    ]
    for split, e in card.get("errors_vs_teacher", {}).items():
        if isinstance(e, dict):
            out.append(
                f"| {split} | {e['n']} | {_fmt(e['energy_mae_mev_atom'], '.1f')} | "
                f"{_fmt(e['energy_rmse_mev_atom'], '.1f')} | {_fmt(e['forces_mae_mev_a'], '.0f')} | "
                f"{_fmt(e['stress_mae_gpa'], '.2f')} |"
            )
    test_set = card.get("errors_vs_teacher", {}).get("test_set")
    if test_set:
        out += ["", f"Test set: {test_set}"]
    titles = {
        "phases_vs_teacher": "Phase ranking against the teacher",
        "errors_vs_dft": "Against the CP2K reference set",
        "known_phases": "Against experimentally known phases",
    }
    for key, title in titles.items():
        part = card.get(key) or {}
        if part.get("summary"):
            out += ["", f"## {title}", "", part["summary"] + ".", "", f"Measured by `{part.get('made_by', '?')}`."]
            numbers = {k: v for k, v in part.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            if numbers:
                rows = [f"| {_label(k)} | {_fmt(v)} |" for k, v in numbers.items()]
                out += ["", "| quantity | value |", "|---|---|", *rows]
    chain, prev = [], card.get("previous")
    while isinstance(prev, dict):
        chain.append(f"`{prev.get('sha256', '?')[:12]}` ({prev.get('made_by', '?')})")
        prev = prev.get("previous")
    if chain:
        out += ["", "## Earlier versions", "", "Each version starts from the one before: " + " <- ".join(chain) + "."]
    return "\n".join(out)


UNITS = {"mev_atom": "(meV/atom)", "mev_a": "(meV/A)", "ev_a": "(eV/A)", "gpa": "(GPa)", "pct": "(%)", "n": ""}


def _label(key: str) -> str:
    """A card field as words: ``phase_de_mae_mev_atom`` -> ``phase dE MAE (meV/atom)``."""
    for suffix, unit in UNITS.items():
        if key.endswith("_" + suffix):
            key = key[: -len(suffix) - 1] + (" " + unit if unit else "")
            break
    words = key.replace("_", " ").split(" ")
    names = {"de": "dE", "mae": "MAE", "rmse": "RMSE", "n": "number of"}
    return " ".join(names.get(w, w) for w in words)


PIPELINE_ROWS = [
    ("build_ms", "build, ms per structure per core", ".1f"),
    ("relax_machinery_ms", "relax-side machinery, ms per structure per core", ".1f"),
    ("identify_ms", "of which phase identification", ".1f"),
    ("gate_ms", "of which the perovskite gate", ".1f"),
    ("job_start_s", "relax job start (imports, model load), s", ".1f"),
    ("model_share", "packaged model: share of a relax job's wall time in model + optimiser", ".0%"),
]


def bench_pipeline() -> str:
    if not PIPELINE.exists():
        return f"No `{PIPELINE.relative_to(ROOT)}` yet: run `python benchmarks/bench_pipeline.py --save`."
    data = json.loads(PIPELINE.read_text())
    runs = data["runs"]
    names = list(runs)
    out = [
        f"Generated from `{PIPELINE.relative_to(ROOT)}`, written by `{data['command']}` on {data['machine']} "
        f"({data['date']}); the columns were measured side by side in that one run.",
        "",
        "| | " + " | ".join(f"`{n}`" for n in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for key, label, spec in PIPELINE_ROWS:
        out.append(f"| {label} | " + " | ".join(_fmt(runs[n].get(key), spec) for n in names) + " |")
    here = runs[names[0]]
    if "throughput_1" in here:
        one, many = here["throughput_1"], here["throughput_N"]
        out += [
            "",
            f"Whole campaign with the zero-cost model, {one['structures']} structures: 1 worker "
            f"{one['structures_per_s']:.1f} structures/s ({one['wall_s']} s), {many['workers']} worker processes "
            f"{many['structures_per_s']:.1f} structures/s ({many['wall_s']} s): **{here['workers_speedup']:.2f}x**.",
        ]
        if "workers_ceiling" in here:
            out += [
                "",
                f"The embedded database server used {one['server_cpu_s']} s of CPU in the 1-worker run, on the same "
                f"cores: {many['workers']} workers cannot pass {here['workers_ceiling']:.2f}x here "
                "(N x wall / (wall + server CPU)).",
            ]
    return "\n".join(out)


MAP = ROOT / "src" / "dp_screen" / "data" / "maps" / "cs2bbx6.csv"


def _markdown(df, fmt: str = ".3g") -> str:
    """A DataFrame as a Markdown table (its index as the first column)."""
    head = [str(df.index.name or ""), *map(str, df.columns)]
    rows = [
        [str(i), *(("-" if v != v else _fmt(v, fmt)) if isinstance(v, float) else str(v) for v in r)]
        for i, r in zip(df.index, df.itertuples(index=False), strict=True)
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def map_cs2bbx6() -> str:
    import dp_screen as dps
    from dp_screen.analysis import maps

    if not MAP.exists():
        return f"No `{MAP.relative_to(ROOT)}` yet: run `python scripts/make_map.py cs2bbx6`."
    t = dps.load_map("cs2bbx6")
    hexagonal = t[t["hexagonal_candidate"]]
    corner = t[~t["hexagonal_candidate"]]
    return "\n".join(
        [
            f"Generated from `{MAP.relative_to(ROOT)}` by `docs/hooks.py` with `dp_screen.analysis.maps` "
            f"({len(t)} of the family's {int(t['n_family'].iloc[0])} compositions; model "
            f"`{t['model_sha256'].iloc[0][:12]}`, dp_screen {t['dp_screen_version'].iloc[0]}).",
            "",
            f"Each chemistry counts once ({len(maps.one_per_chemistry(t))} chemistries: oxidation-state twins, the "
            "same elements on the same sites, are one structure to the model; `maps.one_per_chemistry`).",
            "",
            "**Calls and dE per anion** (dE = E(untilted) - E(lowest phase), meV/atom; the "
            f"{len(hexagonal)} hexagonal candidates, t >= 1.05, left out):",
            "",
            _markdown(maps.call_counts(corner, "X")),
            "",
            "**The hexagonal candidates**, counted apart:",
            "",
            _markdown(maps.call_counts(hexagonal, "X")) if len(hexagonal) else "none",
            "",
            "**By Goldschmidt t band**, against the rule of thumb of Vasala & Karppinen (2015):",
            "",
            _markdown(maps.t_band_comparison(t), ".0%"),
            "",
            "**Against what is known:**",
            "",
            _markdown(maps.literature_comparison(t)),
        ]
    )


def map_sample1000() -> str:
    import dp_screen as dps
    from dp_screen.analysis import maps

    path = MAP.with_name("sample1000.csv")
    if not path.exists():
        return f"No `{path.relative_to(ROOT)}` yet: run `python scripts/make_map.py sample1000`."
    t = dps.load_map("sample1000")
    corner = t[~t["hexagonal_candidate"]]
    return "\n".join(
        [
            f"Generated from `{path.relative_to(ROOT)}` ({len(t)} of the sample's {int(t['n_family'].iloc[0])} "
            f"compositions; {int(t['hexagonal_candidate'].sum())} hexagonal candidates left out below).",
            "",
            _markdown(maps.call_counts(corner, "X")),
            "",
            _markdown(maps.literature_comparison(t)),
        ]
    )


def map_dft_check() -> str:
    import importlib.util

    import dp_screen as dps

    path = MAP.with_name("cs2bbx6_dft_check.jsonl")
    if not path.exists():
        return f"No `{path.relative_to(ROOT)}` yet: run `python scripts/make_map_dft_check.py cs2bbx6`."
    spec = importlib.util.spec_from_file_location("make_map_dft_check", ROOT / "scripts" / "make_map_dft_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    points = [json.loads(line) for line in path.read_text().splitlines()]
    s = module.summary(points, dps.load_map("cs2bbx6"))
    if not s["n"]:
        return f"`{path.relative_to(ROOT)}` holds {len(points)} points, no complete pair yet."
    rows = [
        f"| {r['formula']} | {r['tilted_phase']} | {r['dE_mlip_mev_atom']:.1f} | {r['dE_dft_mev_atom']:.1f} | "
        f"{'yes' if r['same_sign'] else 'no'} | {r['call']} |"
        for r in s["rows"]
    ]
    return "\n".join(
        [
            f"Generated from `{path.relative_to(ROOT)}` (`scripts/make_map_dft_check.py`): {s['n']} compositions, "
            f"{len(points)} CP2K single points, {s['wall_time_s'] / 60:.0f} min of CP2K wall time on this machine.",
            "",
            f"MLIP and DFT agree on the sign of dE for {s['same_sign']} of {s['n']}; DFT puts the tilted phase lower for "
            f"{s['dft_tilted']} of {s['n']}; dE MAE {s['dE_mae_mev_atom']:.1f} meV/atom. The map's call agrees with "
            f"DFT's sign for {s['calls_agree']} of its {s['determined_calls']} determined calls (the others are "
            "undetermined: within 2 sigma, no claim).",
            "",
            "| composition | tilted phase | dE MLIP (meV/atom) | dE DFT | same sign | map call |",
            "|---|---|---|---|---|---|",
            *rows,
        ]
    )


def _cell(value) -> str:
    """A value for a Markdown table cell: a '|' in it (e.g. |dE|) would end the cell."""
    return str(value).replace("|", "\\|")


def bench_results() -> str:
    """Every result file a benchmark's ``--save`` wrote (``benchmarks/_results.py``), bench_pipeline's apart."""
    out = []
    for path in sorted(PIPELINE.parent.glob("*.json")):
        if path == PIPELINE:
            continue
        data = json.loads(path.read_text())
        out += [
            f"### `{path.stem}.py`",
            "",
            f"Generated from `{path.relative_to(ROOT)}`, written by `{data['command'].strip()}` on {data['machine']} "
            f"(commit {data['commit']}, {data['date']}; 1-minute load average {data['load_average_1min']} when it "
            "saved: a load above the core count means other jobs shared the machine, and times are longer than on an "
            "idle one)." + (f" {data['note'][0].upper()}{data['note'][1:]}." if data.get("note") else ""),
            "",
            "| figure | value |",
            "|---|---|",
            *[f"| {_cell(k)} | {_cell(v)} |" for k, v in data["figures"].items()],
            "",
        ]
    return "\n".join(out) if out else "No result files yet: run a benchmark with `--save`."


GENERATORS = {
    "model_card": model_card,
    "bench_pipeline": bench_pipeline,
    "bench_results": bench_results,
    "map_cs2bbx6": map_cs2bbx6,
    "map_dft_check": map_dft_check,
    "map_sample1000": map_sample1000,
}


def on_page_markdown(markdown: str, page, config, files) -> str:
    return re.sub(r"<!-- generated: (\w+) -->", lambda m: GENERATORS[m.group(1)](), markdown)
