"""Benchmark of the composition space: enumeration, descriptors, store writes and reads.

Prints: time to enumerate the default space with descriptors; time to write all of it to the embedded store (a fresh
SecantusDB server in a temporary folder); an indexed lookup; two aggregations (count by anion, count by A-site
species). Targets on a 2-core machine: enumeration < 10 s, full write < 3 min, lookup < 10 ms.

Usage: python benchmarks/bench_enumerate.py [--anions O,F] [--keep DIR] [--save]

``--save`` writes the figures to benchmarks/results/bench_enumerate.json for the documentation.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from dp_screen.jobs.enumerate import EnumerationSettings, enumerate_table, write_compositions
from dp_screen.settings import DPScreenSettings
from dp_screen.stores import EmbeddedServer, open_store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--anions", default=None, help="restrict to these anions (default: the full space)")
    parser.add_argument("--keep", default=None, help="project folder to keep (default: a temporary one)")
    parser.add_argument("--save", action="store_true", help="write benchmarks/results/bench_enumerate.json (docs)")
    args = parser.parse_args()
    figures: dict[str, object] = {}
    anions = args.anions.split(",") if args.anions else None
    settings = EnumerationSettings(anions=anions)

    runs = []
    for _ in range(3):
        t0 = time.perf_counter()
        _, df = enumerate_table(settings)
        runs.append(time.perf_counter() - t0)
    figures["enumerate + descriptors (s, median of 3; target < 10)"] = round(statistics.median(runs), 2)
    figures["compositions"] = len(df)
    print(
        f"enumerate + descriptors: {len(df)} compositions, median {statistics.median(runs):.2f} s "
        f"(runs: {', '.join(f'{r:.2f}' for r in runs)}; target < 10 s)"
    )

    home = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="dp_screen_bench_"))
    db = DPScreenSettings(home=home)
    server = EmbeddedServer(db)
    server.start()
    try:
        t0 = time.perf_counter()
        summary = write_compositions(settings, db)
        write_s = time.perf_counter() - t0
        figures["write every composition to the embedded store, indexes built (s; target < 180)"] = round(write_s, 1)
        print(
            f"write to embedded store: {summary['inserted']} documents in {write_s:.1f} s "
            f"({summary['inserted'] / write_s:.0f} docs/s, indexes built; target < 180 s)"
        )
        t0 = time.perf_counter()
        again = write_compositions(settings, db)
        figures["the same command again: nothing to write (s)"] = round(time.perf_counter() - t0, 1)
        print(f"re-run (nothing to write, {again['skipped']} skipped): {time.perf_counter() - t0:.1f} s")

        with open_store("compositions", db) as store:
            coll = store._collection
            ids = df["composition_id"].sample(200, random_state=0).tolist()
            times = []
            for cid in ids:
                t0 = time.perf_counter()
                doc = coll.find_one({"composition_id": cid})
                times.append(time.perf_counter() - t0)
                assert doc is not None
            figures["indexed lookup by composition_id, median of 200 (ms; target < 10)"] = round(
                1e3 * statistics.median(times), 2
            )
            print(
                f"indexed lookup by composition_id: median {1e3 * statistics.median(times):.2f} ms, "
                f"max {1e3 * max(times):.2f} ms over 200 (target < 10 ms)"
            )
            t0 = time.perf_counter()
            n_cs = coll.count_documents({"A2": "Cs"})
            print(f"indexed count A2 = Cs: {n_cs} in {1e3 * (time.perf_counter() - t0):.1f} ms")
            t0 = time.perf_counter()
            by_anion = {d["_id"]: d["n"] for d in coll.aggregate([{"$group": {"_id": "$X", "n": {"$sum": 1}}}])}
            figures["aggregation: count by anion (s)"] = round(time.perf_counter() - t0, 2)
            print(f"aggregate count by anion: {dict(sorted(by_anion.items()))} in {time.perf_counter() - t0:.2f} s")
            t0 = time.perf_counter()
            by_a = list(
                coll.aggregate(
                    [
                        {"$project": {"a": ["$A", "$A2"]}},
                        {"$unwind": "$a"},
                        {"$group": {"_id": "$a", "n": {"$sum": 1}}},
                        {"$sort": {"n": -1}},
                    ]
                )
            )
            figures["aggregation: count by A-site species (s)"] = round(time.perf_counter() - t0, 2)
            top = ", ".join(f"{d['_id']} {d['n']}" for d in by_a[:5])
            print(
                f"aggregate count by A-site species (A or A'): {len(by_a)} species, top {top} "
                f"in {time.perf_counter() - t0:.2f} s"
            )
    finally:
        if not args.keep:
            server.stop()
    if args.save:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _results import save_figures

        save_figures("bench_enumerate", figures, note="the embedded SecantusDB server, a fresh database")


if __name__ == "__main__":
    main()
