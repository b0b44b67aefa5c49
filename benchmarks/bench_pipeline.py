"""The CPU side of a campaign, per structure and per core: what the GPU waits for.

On a fresh database of the embedded server, N random compositions of the default space (seeded) go through the real
jobs: enumeration writes them, the build chunk job (``build_structures_to_store``) builds their 5 default tilt
systems, and the relax chunk job (``relax_store``) relaxes them with a stand-in model that costs nothing (each
structure 'converges' at once where it started), so what is timed is the relax side's machinery: reading, phase
identification, the perovskite gate, documents, writes, summaries and digests (after one warm-up job on the first
composition, whose time is the job's fixed start: imports and the model load, printed apart). Printed, in ms per structure on one
core: build, relax machinery and its parts (identification and gate timed apart on the same structures). Then, with
the packaged model on the CPU, a small chunk relaxed for real: the share of the relax job's wall time spent in the
model and optimiser (the rest is machinery).

``--compare REV`` runs the same measurement on another commit of dp_screen (a git worktree, its own database) in the
same run and prints both side by side: how a change moved the figures, on the same machine at the same time.

    python benchmarks/bench_pipeline.py [--n 100] [--model-chunk 20] [--compare HEAD~3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))


@contextlib.contextmanager
def prepared_store(home: Path, n: int, seed: int = 7):
    """A fresh database of the embedded server holding ``n`` random rock-salt compositions of the default space and
    their built structures (5 default tilt systems); yields its settings and the query selecting them."""
    from dp_screen.campaign_store import CampaignStore
    from dp_screen.jobs.build import BuildSettings, build_structures_to_store
    from dp_screen.jobs.enumerate import EnumerationSettings, enumerate_table
    from dp_screen.schemas.common import Provenance
    from dp_screen.schemas.composition import CompositionDoc
    from dp_screen.settings import DPScreenSettings
    from dp_screen.stores import EmbeddedServer

    server = EmbeddedServer(DPScreenSettings(home=home))
    uri = server.start(idle_stop_s=0)["uri"]
    db = DPScreenSettings(home=home, db_uri=uri, database="bench_pipeline")
    try:
        settings = EnumerationSettings(bv_filter="exact")
        table, df = enumerate_table(settings)
        rows = df[df["expected_ordering"] == "rocksalt"].sample(n, random_state=seed)
        prov = Provenance(site_table=table.name, site_table_sha256=table.sha256, settings=settings.settings_dict())
        CampaignStore(db).write_compositions(CompositionDoc.from_table(rows, prov))
        query = {"composition_id": {"$in": sorted(rows["composition_id"])}}
        build_structures_to_store(BuildSettings(), db, query=query)
        yield db, query
    finally:
        server.stop()


def measure(n: int, model_chunk: int, seed: int = 7) -> dict:
    """The figures of this checkout (see the module docstring)."""
    from bench_scale import stub_relax  # the zero-cost model: every structure 'converges' at once where it started
    from pymatgen.core import Structure

    import dp_screen.jobs.relax as relax_job
    from dp_screen.campaign_store import CampaignStore
    from dp_screen.jobs.build import BuildSettings, build_structures_to_store
    from dp_screen.jobs.enumerate import EnumerationSettings, enumerate_table
    from dp_screen.mlip.relax import RelaxSettings
    from dp_screen.schemas.common import Provenance
    from dp_screen.schemas.composition import CompositionDoc
    from dp_screen.settings import DPScreenSettings
    from dp_screen.stores import EmbeddedServer
    from dp_screen.structures.perovskite_check import check_perovskite
    from dp_screen.structures.phases import identify_phase

    home = Path(tempfile.mkdtemp(prefix="dp_bench_pipeline_"))
    server = EmbeddedServer(DPScreenSettings(home=home))
    uri = server.start(idle_stop_s=0)["uri"]
    db = DPScreenSettings(home=home, db_uri=uri, database="bench_pipeline")
    out: dict = {"n_compositions": n}
    try:
        settings = EnumerationSettings(bv_filter="exact")
        table, df = enumerate_table(settings)
        rows = df[df["expected_ordering"] == "rocksalt"].sample(n, random_state=seed)
        store = CampaignStore(db)
        prov = Provenance(site_table=table.name, site_table_sha256=table.sha256, settings=settings.settings_dict())
        store.write_compositions(CompositionDoc.from_table(rows, prov))
        query = {"composition_id": {"$in": sorted(rows["composition_id"])}}
        t0 = time.perf_counter()
        built = build_structures_to_store(BuildSettings(), db, query=query)
        out["build_ms"] = 1e3 * (time.perf_counter() - t0) / max(1, built["built"] + built.get("failed", 0))
        out["n_structures"] = built["built"]
        real = relax_job.relax_structures
        relax_job.relax_structures = stub_relax
        ids = sorted(rows["composition_id"])
        try:
            # a job's fixed start (imports, model load) once, on the first composition; then the rest, per structure
            t0 = time.perf_counter()
            relax_job.relax_store(
                None, RelaxSettings(), db, query={"composition_id": {"$in": ids[:1]}}, device="cpu", identify_workers=0
            )
            out["job_start_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            relaxed = relax_job.relax_store(
                None, RelaxSettings(), db, query={"composition_id": {"$in": ids[1:]}}, device="cpu", identify_workers=0
            )
            out["relax_machinery_ms"] = 1e3 * (time.perf_counter() - t0) / relaxed["relaxed"]
        finally:
            relax_job.relax_structures = real
        docs = store.structures_by_id([m["structure_id"] for m in store.built_structure_meta(query)])
        cells = [(Structure.from_dict(d["structure"]), d["ordering"], d["tilt"]) for d in docs.values()]
        t0 = time.perf_counter()
        for s, o, t in cells:
            identify_phase(s, o, t)
        out["identify_ms"] = 1e3 * (time.perf_counter() - t0) / len(cells)
        t0 = time.perf_counter()
        for s, _, _ in cells:
            check_perovskite(s)
        out["gate_ms"] = 1e3 * (time.perf_counter() - t0) / len(cells)
        if model_chunk:
            few = {"composition_id": {"$in": sorted(rows["composition_id"])[: max(1, model_chunk // 5)]}}
            inside = [0.0]

            def timed(*args, **kwargs):
                t = time.perf_counter()
                try:
                    return real(*args, **kwargs)
                finally:
                    inside[0] += time.perf_counter() - t

            relax_job.relax_structures = timed
            try:
                t0 = time.perf_counter()
                # other settings than the stub run's: relaxed again, for real
                res = relax_job.relax_store(None, RelaxSettings(max_steps=200), db, query=few, device="cpu")
                wall = time.perf_counter() - t0
            finally:
                relax_job.relax_structures = real
            out.update(
                model_structures=res["relaxed"],
                model_wall_s=round(wall, 2),
                model_share=inside[0] / wall if wall else None,
            )
    finally:
        server.stop()
    return out


def throughput(n: int, workers: int, chunks: int, seed: int = 11) -> dict:
    """Structures per second through a whole campaign (``dp-screen run``'s flow and runner: select, build, relax with
    the zero-cost model, summary) of ``n`` random compositions in ``chunks`` chunk jobs, with ``workers`` processes
    (1: in this process), on a fresh database, in a fresh interpreter (as ``dp-screen run`` starts). The wall time
    includes everything a user waits for after the command starts: imports, enumeration, worker start-up, the jobs
    and the summary."""
    text = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--campaign", f"{n},{workers},{chunks}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(text.strip().splitlines()[-1])


def _throughput_here(n: int, workers: int, chunks: int, seed: int = 11) -> dict:
    t0 = time.perf_counter()
    from bench_scale import stub_relax

    import dp_screen.jobs.relax as relax_job
    from dp_screen.flows.local import run_flow
    from dp_screen.flows.screening import ScreeningFlowMaker
    from dp_screen.jobs.relax import RelaxMaker
    from dp_screen.settings import DPScreenSettings
    from dp_screen.stores import EmbeddedServer

    home = Path(tempfile.mkdtemp(prefix="dp_bench_workers_"))
    server = EmbeddedServer(DPScreenSettings(home=home))
    uri = server.start(idle_stop_s=0)["uri"]
    db = DPScreenSettings(home=home, db_uri=uri, database=f"bench_w{workers}")
    maker = ScreeningFlowMaker(limit=n, seed=seed, chunk_size=-(-n // chunks), relax=RelaxMaker(device="cpu"))
    flow = maker.make(db_settings=db.model_dump(mode="json"))
    real = relax_job.relax_structures
    relax_job.relax_structures = stub_relax
    try:
        out = run_flow(
            flow,
            db,
            workers,
            [flow.output.uuid],
            progress=False,
            worker_command=[sys.executable, str(Path(__file__).resolve()), "--worker"],
        )
        wall = time.perf_counter() - t0
        server_cpu = _cpu_seconds(server.running_state()["pid"])
    finally:
        relax_job.relax_structures = real
        server.stop()
    summary = out[flow.output.uuid]
    return {
        "workers": workers,
        "structures": summary["relaxations"],
        "wall_s": round(wall, 1),
        "server_cpu_s": round(server_cpu, 1),
        "structures_per_s": summary["relaxations"] / wall,
    }


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def worker(launchpad_file: str) -> None:
    """A ``dp-screen run`` worker process with the zero-cost model in place of the packaged one."""
    from bench_scale import stub_relax

    import dp_screen.jobs.relax as relax_job
    from dp_screen.flows.local import work

    relax_job.relax_structures = stub_relax
    work(launchpad_file)


def run_elsewhere(rev: str, args) -> dict:
    """The same measurement on another commit (a git worktree of ``rev``, run with its own sources)."""
    work = Path(tempfile.mkdtemp(prefix="dp_bench_rev_")) / "tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(work), rev], check=True)
    try:
        env = dict(os.environ, PYTHONPATH=str(work / "src"))
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--n",
            str(args.n),
            "--model-chunk",
            str(args.model_chunk),
            "--json-only",
        ]
        text = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True, cwd=work).stdout
        return json.loads(text.strip().splitlines()[-1])
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(work)], check=False)


ROWS = [
    ("build_ms", "build, ms per structure"),
    ("job_start_s", "relax job start (imports, model load), s"),
    ("relax_machinery_ms", "relax machinery, ms per structure"),
    ("identify_ms", "  of which phase identification"),
    ("gate_ms", "  of which perovskite gate"),
    ("model_share", "packaged model: share of relax wall time in model + optimiser"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="compositions (x 5 tilt systems)")
    parser.add_argument("--model-chunk", type=int, default=20, help="structures relaxed with the packaged model")
    parser.add_argument("--compare", default=None, metavar="REV", help="also measure this commit, side by side")
    parser.add_argument("--workers", type=int, default=None, help="N of the 1-vs-N throughput (default: all cores)")
    parser.add_argument("--throughput-n", type=int, default=1000, help="compositions of the 1-vs-N campaigns")
    parser.add_argument("--save", action="store_true", help="also write benchmarks/results/bench_pipeline.json (docs)")
    parser.add_argument("--json-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--campaign", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker)
        return
    if args.campaign:
        print(json.dumps(_throughput_here(*map(int, args.campaign.split(",")))))
        return
    here = measure(args.n, args.model_chunk)
    if not args.json_only and args.throughput_n:
        from dp_screen.flows.local import default_workers

        n_workers = args.workers or default_workers()
        for w in (1, n_workers):
            here[f"throughput_{'1' if w == 1 else 'N'}"] = throughput(args.throughput_n, w, chunks=2 * n_workers)
        one, many = here["throughput_1"], here["throughput_N"]
        here["workers_speedup"] = many["structures_per_s"] / one["structures_per_s"]
        # the embedded database server is a process of its own on the same cores: N workers can at best share out
        # the one-worker run's CPU time (the worker's wall time plus the server's CPU time) over N cores
        here["workers_ceiling"] = many["workers"] * one["wall_s"] / (one["wall_s"] + one["server_cpu_s"])
    if args.json_only:
        print(json.dumps(here))
        return
    other = run_elsewhere(args.compare, args) if args.compare else None
    print(f"{here['n_structures']} structures of {args.n} compositions; one process, OMP_NUM_THREADS=1")
    print(f"{'':62s} {'this checkout':>14s}" + (f" {args.compare:>14s}" if other else ""))
    for key, label in ROWS:

        def fmt(d, key=key):
            v = (d or {}).get(key)
            return "-" if v is None else (f"{100 * v:.0f}%" if key == "model_share" else f"{v:.1f}")

        print(f"{label:62s} {fmt(here):>14s}" + (f" {fmt(other):>14s}" if other else ""))
    if "workers_speedup" in here:
        one, many = here["throughput_1"], here["throughput_N"]
        print(
            f"whole campaign, zero-cost model, {one['structures']} structures in {2 * many['workers']} chunk jobs: "
            f"1 worker {one['structures_per_s']:.1f} structures/s ({one['wall_s']} s), {many['workers']} worker "
            f"processes {many['structures_per_s']:.1f} structures/s ({many['wall_s']} s): "
            f"{here['workers_speedup']:.2f}x"
        )
        print(
            f"the database server used {one['server_cpu_s']} s of CPU in the 1-worker run: on {many['workers']} cores "
            f"the speedup cannot pass {here['workers_ceiling']:.2f}x (N x wall / (wall + server CPU))"
        )
    print(
        "targets: build + relax machinery <= 8 ms per structure per core; model share >= 90%; "
        "N workers >= 1.7x one on this 2-core machine"
    )
    print(json.dumps({"this": here, **({args.compare: other} if other else {})}))
    if args.save:
        save(here, other, args)


def save(here: dict, other: dict | None, args) -> None:
    """The figures for the documentation's benchmarks page (docs/hooks.py renders them)."""
    import platform
    from datetime import UTC, datetime

    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    runs = {f"this checkout ({sha.stdout.strip()})": here, **({args.compare: other} if other else {})}
    out = ROOT / "benchmarks" / "results" / "bench_pipeline.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/bench_pipeline.py " + " ".join(sys.argv[1:])
    machine = (
        f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}"
    )
    date = datetime.now(UTC).strftime("%Y-%m-%d")
    out.write_text(json.dumps({"command": command, "machine": machine, "date": date, "runs": runs}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
