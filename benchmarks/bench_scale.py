"""Campaign machinery at scale: per-structure cost of a chunk's work with 10^4, 10^5 and 10^6 documents in the store.

For each size N a fresh database on the embedded server is filled by bulk insert (N/5 real compositions of the
default space, N structure documents and N relaxation documents of them; the filler is written directly, it is not
under test). Then one probe chunk of new compositions goes through the real machinery: the build chunk job
(``build_structures_to_store``), the relax chunk job with a stand-in model that costs nothing (the relaxation
returns its input at once, so what is timed is the reading, identification, gating, writing and summaries), and
the analysis of the whole store (``dp-screen report``, which reads the phase and composition digests the filler
holds as the enumeration and the relax chunk jobs would have written them). Printed: seconds per structure of each part at each size,
and the per-structure machinery ratio of the largest size to the smallest.

    python benchmarks/bench_scale.py                      # 1e4, 1e5, 1e6 (the filler of 1e6 takes ~25 minutes)
    python benchmarks/bench_scale.py --sizes 1e4,1e5
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

TILTS = ("a0a0a0", "a0a0c-", "a-a-a-", "a0b-b-", "a+b-b-")
PROBE = 60  # compositions of the probe chunk (x 5 tilt systems)
CHUNK = 500  # compositions per relax chunk job of a campaign (flows.campaign.CampaignOptions.chunk_size)


def stub_relax(structures, model, settings=None, progress=None, on_result=None):
    """The relaxation stand-in: every structure 'converges' at once where it started."""
    from dp_screen.mlip.relax import RelaxResult

    out = []
    for i, s in enumerate(structures):
        res = RelaxResult(
            structure=s,
            energy=-5.0 * len(s),
            energy_per_atom=-5.0 - 1e-3 * (i % 5),
            max_force=0.0,
            max_stress_gpa=0.0,
            stress_gpa=[[0.0] * 3] * 3,
            n_steps=0,
            converged=True,
            initial_volume=s.volume,
        )
        if on_result:
            on_result(i, res)
        out.append(res)
    if progress:
        progress(len(out))
    return out


def fill(db, store, comps, n_structures: int, model_sha: str, shash: str, batch: int = 20_000) -> None:
    """Bulk-insert the filler: compositions, built structures and relaxations (no structures inside), and the
    digests of them that the enumeration and the relax chunk jobs write."""

    from dp_screen.schemas.relaxation import summary_key
    from dp_screen.structures.phases import phase_summary

    now = datetime.now(UTC)
    key = summary_key(model_sha, shash)
    per_comp = -(-n_structures // len(comps)) if comps else 0
    variants = {}
    for c in comps:  # the summaries the relax jobs would have written
        variants[c["composition_id"]] = [
            {
                "composition_id": c["composition_id"],
                "ordering": "rocksalt",
                "start_tilt": t,
                "phase_tilt": t,
                "energy_per_atom": -5.0 - 0.001 * j,
                "structure_id": f"{c['composition_id']}:rocksalt:{t}:bvm",
                "excluded": None,
                "final_space_group": 225,
                "n_steps": 50 + j,
                "converged": True,
                "failed": False,
                "reason": None,
                "phase": {"stayed_in_start_tilt": True},
                "wall_time_s": 0.1,
            }
            for j, t in enumerate(TILTS[:per_comp])
        ]
        c["phases"] = {key: phase_summary(variants[c["composition_id"]])}
    db["compositions"].insert_many(comps)
    store.count_inserted("compositions", len(comps))  # as write_compositions does
    store.write_composition_digests(comps)
    for i in range(0, len(comps), CHUNK):  # one phase digest per relax chunk job, as relax_store writes them
        part = comps[i : i + CHUNK]
        store.write_phase_digest(
            key,
            {c["composition_id"]: c["phases"][key] for c in part},
            part,
            [v for c in part for v in variants[c["composition_id"]]],
        )
    db["phase_sets"].insert_one(
        {
            "key": key,
            "model_sha256": model_sha,
            "settings_hash": shash,
            "model_name": "filler",
            "n_relaxations": n_structures,
            "digests": True,
        }
    )
    rows = []
    for k in range(n_structures):
        c = comps[k // len(TILTS)]["composition_id"]
        tilt = TILTS[k % len(TILTS)]
        sid = f"{c}:rocksalt:{tilt}:bvm"
        rows.append((c, tilt, sid))
    for i in range(0, len(rows), batch):
        part = rows[i : i + batch]
        db["structures"].insert_many(
            [
                {
                    "structure_id": sid,
                    "composition_id": c,
                    "formula": c,
                    "ordering": "rocksalt",
                    "tilt": t,
                    "method": "bvm",
                    "status": "built",
                    "settings_hash": "filler",
                    "space_group": 225,
                }
                for c, t, sid in part
            ]
        )
        db["relaxations"].insert_many(
            [
                {
                    "relaxation_id": f"{sid}|{model_sha[:12]}|{shash}",
                    "structure_id": sid,
                    "composition_id": c,
                    "formula": c,
                    "ordering": "rocksalt",
                    "start_tilt": t,
                    "phase_tilt": t,
                    "method": "bvm",
                    "model_sha256": model_sha,
                    "model_name": "filler",
                    "settings_hash": shash,
                    "energy_per_atom": -5.0 - 0.001 * j,
                    "converged": True,
                    "failed": False,
                    "excluded": None,
                    "reason": None,
                    "n_steps": 50,
                    "wall_time_s": 0.1,
                    "final_space_group": 225,
                    "phase": {"space_group": 225, "stayed_in_start_tilt": True},
                    "created_at": now,
                }
                for j, (c, t, sid) in enumerate(part)
            ]
        )
        store.count_inserted("structures", len(part))
        store.count_inserted("relaxations", len(part))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1e4,1e5,1e6", help="structure documents in the store, comma-separated")
    parser.add_argument("--save", action="store_true", help="write benchmarks/results/bench_scale.json (docs)")
    args = parser.parse_args()
    sizes = [int(float(x)) for x in args.sizes.split(",")]

    import dp_screen.jobs.relax as relax_job
    from dp_screen.analysis.report import write_report
    from dp_screen.campaign_store import CampaignStore
    from dp_screen.jobs.build import BuildSettings, build_structures_to_store
    from dp_screen.jobs.enumerate import EnumerationSettings, enumerate_table
    from dp_screen.mlip.models import default_model_path, file_sha256
    from dp_screen.mlip.relax import RelaxSettings
    from dp_screen.schemas.common import Provenance
    from dp_screen.schemas.composition import CompositionDoc
    from dp_screen.settings import DPScreenSettings
    from dp_screen.stores import EmbeddedServer

    relax_job.relax_structures = stub_relax
    from dp_screen.mlip.models import load_model
    from dp_screen.structures.phases import tilt_table
    from dp_screen.structures.tilts import SPACE_GROUPS

    load_model(None, device="cpu")  # imports and the first load are not per-chunk costs
    for ordering in SPACE_GROUPS:
        tilt_table(ordering, True, False)
    home = Path(tempfile.mkdtemp(prefix="bench_scale_"))
    server = EmbeddedServer(DPScreenSettings(home=home))
    uri = server.start(idle_stop_s=0)["uri"]
    table, df = enumerate_table(EnumerationSettings())
    df = df.sort_values("composition_id").reset_index(drop=True)
    prov = Provenance(site_table=table.name, site_table_sha256=table.sha256, settings={})
    probe = df.iloc[-PROBE:]
    sha = file_sha256(default_model_path())
    results = {}
    try:
        for n in sizes:
            import pymongo

            settings = DPScreenSettings(home=home, db_uri=uri, database=f"scale_{n}", db_timeout_s=60)
            n_comp = -(-n // len(TILTS))
            if n_comp > len(df) - PROBE:
                raise SystemExit(f"size {n} needs {n_comp} compositions; the default space has {len(df) - PROBE}")
            t0 = time.perf_counter()
            comps = CompositionDoc.from_table(df.iloc[:n_comp], prov)
            store = CampaignStore(settings)  # its indexes
            fill(pymongo.MongoClient(uri)[settings.database], store, comps, n, sha, "filler")
            store.write_compositions(CompositionDoc.from_table(probe, prov))
            t_fill = time.perf_counter() - t0
            ids = sorted(probe["composition_id"])
            query = {"composition_id": {"$in": ids}}
            t0 = time.perf_counter()
            built = build_structures_to_store(BuildSettings(), settings, query=query)
            t_build = time.perf_counter() - t0
            t0 = time.perf_counter()
            relaxed = relax_store(None, RelaxSettings(), settings, query=query, device="cpu")
            t_relax = time.perf_counter() - t0
            n_struct = built["built"] + built["failed"]
            t0 = time.perf_counter()
            write_report(home / f"report_{n}", settings)
            t_report = time.perf_counter() - t0
            results[n] = {
                "build": t_build / n_struct,
                "relax": t_relax / n_struct,
                "report": t_report,
                "fill": t_fill,
                "n_probe": n_struct,
                "relaxed": relaxed["relaxed"],
            }
            r = results[n]
            print(
                f"{n:>9,d} structure documents (+{n:,d} relaxations; filler {t_fill:.0f} s): probe chunk of "
                f"{n_struct} structures: build {1e3 * r['build']:.2f} ms/structure, relax machinery "
                f"{1e3 * r['relax']:.2f} ms/structure (identification, gate, writes, summaries; model cost 0); "
                f"report of the whole store {t_report:.1f} s",
                flush=True,
            )
            if n != sizes[-1]:  # the last one goes with the server's folder (dropping 10^6 documents takes long)
                store.db.client.drop_database(f"scale_{n}")
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
    lo, hi = min(results), max(results)
    ratio = (results[hi]["build"] + results[hi]["relax"]) / (results[lo]["build"] + results[lo]["relax"])

    def short(n: int) -> str:  # 1000000 -> 1e6
        return f"{n:.0e}".replace("e+0", "e").replace("e+", "e")

    print(f"scale ratio {short(hi)}/{short(lo)}: {ratio:.2f}")
    if args.save:
        figures = {
            f"{short(n)} structure documents (+ as many relaxations)": f"build {1e3 * r['build']:.2f} ms, relax "
            f"machinery {1e3 * r['relax']:.2f} ms per structure (probe of {r['n_probe']}); report of the whole "
            f"store {r['report']:.1f} s; filler {r['fill']:.0f} s"
            for n, r in results.items()
        }
        figures[f"scale ratio {short(hi)}/{short(lo)}"] = f"{ratio:.2f}"
        from _results import save_figures  # benchmarks/_results.py, next to this script

        save_figures("bench_scale", figures, note="a zero-cost stand-in model; the embedded SecantusDB server")


def relax_store(*args, **kwargs):
    import dp_screen.jobs.relax as relax_job

    return relax_job.relax_store(*args, **kwargs)


if __name__ == "__main__":
    main()
