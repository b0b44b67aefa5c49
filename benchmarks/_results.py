"""Benchmark figures for the documentation: a script's ``--save`` writes ``benchmarks/results/<script>.json``
(command, machine, load, date, commit and its figures, in the order printed), which ``docs/hooks.py`` renders on
the Benchmarks page, so no figure there is copied by hand."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def save_figures(script: str, figures: dict[str, object], note: str = "") -> Path:
    """Write ``figures`` (label -> value, as printed) for ``script`` (its file name without .py)."""
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    out = RESULTS / f"{script}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "command": f"python benchmarks/{script}.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_average_1min": round(os.getloadavg()[0], 2),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "commit": sha.stdout.strip(),
        "note": note,
        "figures": figures,
    }
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}")
    return out
