"""How fast the analysis reads a large store.

Writes N relaxation documents of realistic size (each carries its relaxed structure, as the real ones do) for N/5
compositions into a fresh embedded SecantusDB, then times side by side in one run:

- ``phase_table``: the server groups the relaxations by composition (``$group``), one row per composition comes back;
- the naive way: fetch every relaxation document and group with pandas;
- a projected fetch of the same fields (what ``load_collection`` does with a projection).

Usage: OMP_NUM_THREADS=1 python benchmarks/bench_analysis.py [--relaxations 100000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pymongo

from dp_screen.analysis import data
from dp_screen.settings import DPScreenSettings
from dp_screen.stores import EmbeddedServer

TILTS = ["a0a0a0", "a0a0c-", "a-a-a-", "a0b-b-", "a+b-b-"]
SG = {"a0a0a0": 225, "a0a0c-": 87, "a-a-a-": 148, "a0b-b-": 12, "a+b-b-": 14}


def fake_structure(rng) -> dict:
    """A dict the size of a 20-atom pymatgen Structure.as_dict() (about 4 kB)."""
    return {
        "lattice": {"matrix": rng.random((3, 3)).tolist()},
        "sites": [
            {
                "species": [{"element": "O", "occu": 1}],
                "abc": rng.random(3).tolist(),
                "xyz": rng.random(3).tolist(),
                "label": "O",
                "properties": {"site": "X"},
            }
            for _ in range(20)
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--relaxations", type=int, default=100_000)
    parser.add_argument("--save", action="store_true", help="write benchmarks/results/bench_analysis.json (docs)")
    args = parser.parse_args()
    n = args.relaxations
    rng = np.random.default_rng(0)
    home = tempfile.mkdtemp(prefix="bench_analysis_")
    settings = DPScreenSettings(home=home, database="bench")
    server = EmbeddedServer(settings)
    uri = server.start()["uri"]
    settings = DPScreenSettings(home=home, database="bench", db_uri=uri)
    db = pymongo.MongoClient(uri)["bench"]
    try:
        n_comp = n // len(TILTS)
        t0 = time.perf_counter()
        db["compositions"].create_index("composition_id", unique=True)
        db["compositions"].insert_many(
            [
                {
                    "composition_id": f"c{i}",
                    "formula": f"c{i}",
                    "A": "Ba",
                    "nA": 2,
                    "A2": "Ba",
                    "nA2": 2,
                    "B": "Mg",
                    "nB": 2,
                    "B2": "W",
                    "nB2": 6,
                    "X": "O",
                    "nX": -2,
                    "goldschmidt_t": 0.9 + 0.1 * rng.random(),
                    "tau": 3.5,
                }
                for i in range(n_comp)
            ]
        )
        now = datetime.now(UTC)
        structure = fake_structure(rng)
        for start in range(0, n, 10_000):
            docs = []
            for k in range(start, min(n, start + 10_000)):
                tilt = TILTS[k % len(TILTS)]
                docs.append(
                    {
                        "relaxation_id": f"r{k}",
                        "composition_id": f"c{k // len(TILTS)}",
                        "start_tilt": tilt,
                        "model_sha256": "m" * 64,
                        "settings_hash": "s",
                        "energy_per_atom": -7 + 0.01 * rng.random(),
                        "converged": True,
                        "failed": False,
                        "n_steps": 30,
                        "created_at": now,
                        "phase": {"space_group": SG[tilt]},
                        "structure": structure,
                    }
                )
            db["relaxations"].insert_many(docs)
        print(f"wrote {n} relaxations ({n_comp} compositions) in {time.perf_counter() - t0:.1f} s")

        t0 = time.perf_counter()
        phases = data.phase_table(settings)
        t_server = time.perf_counter() - t0

        t0 = time.perf_counter()
        every = pd.DataFrame(list(db["relaxations"].find({"model_sha256": "m" * 64, "failed": False})))
        naive = every.loc[every.groupby("composition_id")["energy_per_atom"].idxmin()]
        t_naive = time.perf_counter() - t0

        t0 = time.perf_counter()
        projected = data.load_collection(
            "relaxations",
            {"failed": False},
            ["composition_id", "start_tilt", "energy_per_atom", "phase.space_group"],
            settings,
        )
        t_proj = time.perf_counter() - t0
        assert len(phases) == len(naive) == n_comp and len(projected) == n
        lowest = dict(zip(naive["composition_id"], naive["start_tilt"], strict=True))
        assert all(lowest[c] == t for c, t in zip(phases["composition_id"], phases["lowest_tilt"], strict=True))
        print(f"phase_table (server-side $group):  {t_server:7.2f} s  ({n / t_server:,.0f} relaxations/s)")
        print(f"fetch everything + pandas groupby:  {t_naive:7.2f} s  (ratio {t_naive / t_server:.1f}x)")
        print(f"projected fetch of 4 fields:        {t_proj:7.2f} s  (ratio {t_proj / t_server:.1f}x)")
        if args.save:
            from _results import save_figures  # benchmarks/_results.py, next to this script

            save_figures(
                "bench_analysis",
                {
                    "relaxations (compositions)": f"{n:,d} ({n_comp:,d})",
                    "phase_table (server-side $group)": f"{t_server:.2f} s ({n / t_server:,.0f} relaxations/s)",
                    "fetch everything + pandas groupby": f"{t_naive:.2f} s ({t_naive / t_server:.1f}x)",
                    "projected fetch of 4 fields": f"{t_proj:.2f} s ({t_proj / t_server:.1f}x)",
                },
                note="the embedded SecantusDB server, which scans every document for any query",
            )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
