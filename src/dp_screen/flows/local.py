"""Run a flow on this machine: in this process (one worker), or its independent jobs in N worker processes.

With ``workers > 1`` the flow goes to a private FireWorks launchpad (a database of its own next to the campaign's,
dropped afterwards) and N worker processes pull its jobs (``rapidfire``): the build chunk jobs run concurrently,
then the relax chunk jobs, each in its own process, so every core works. The results are those of the one-process
run: every chunk job writes its documents to the campaign collections, keyed and resumable, and the jobs' outputs
go to the same JobStore. An interrupted run restarted with the same command resumes from the stored documents
(the private launchpad of the interrupted run is dropped by the next run).

    python -m dp_screen.flows.local LAUNCHPAD_YAML   # one worker process (what run_flow starts N of)
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobflow import Flow

    from dp_screen.settings import DPScreenSettings

RUN_DB_PREFIX = "dp_screen_run_"  # the private launchpads' databases: <prefix><database hash>_<token>
WORKER_COMMAND = [sys.executable, "-m", "dp_screen.flows.local"]  # + the launchpad file: one worker process
RELAUNCHES = 2  # times the workers are started again while jobs are left ready to run (see _run_with_workers)
WORKER_ENV = "DP_SCREEN_WORKER_PROCESS"  # set in the worker processes: their jobs use no process pools of their own


def default_workers() -> int:
    """All the cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_flow(
    flow: Flow,
    settings: DPScreenSettings,
    workers: int = 1,
    wanted: list[str] | None = None,
    worker_command: list[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run ``flow``; return the outputs of the jobs whose uuids are in ``wanted`` ({uuid: output}, a job that did
    not finish is missing).

    ``workers``: 1 runs every job in this process (jobflow's ``run_locally``); N > 1 runs them in N worker processes
    (``worker_command`` + the launchpad file; default ``python -m dp_screen.flows.local``), with a progress bar of
    finished jobs. A failed job's error is printed; its dependants do not run.
    """
    from dp_screen.errors import InputError
    from dp_screen.stores import database_uri, get_job_store

    if workers < 1:
        raise InputError(f"workers={workers}: must be at least 1")
    uri = database_uri(settings)
    store = get_job_store(settings, uri)
    wanted = wanted or []
    if workers == 1:
        from jobflow import run_locally

        responses = run_locally(flow, store=store, create_folders=False, log=False, ensure_success=False)
        return {u: max(responses[u].items())[1].output for u in wanted if u in responses}
    return _run_with_workers(flow, settings, uri, store, workers, wanted, worker_command, progress)


def _run_with_workers(flow, settings, uri, store, workers, wanted, worker_command, progress) -> dict[str, Any]:
    from fireworks import LaunchPad
    from jobflow.managers.fireworks import flow_to_workflow
    from pymongo import MongoClient

    client = MongoClient(uri)
    # the campaign database's hash keeps the name under MongoDB's 63 characters
    mine = f"{RUN_DB_PREFIX}{hashlib.sha256(settings.database.encode()).hexdigest()[:10]}_"
    for name in client.list_database_names():  # the launchpads of interrupted runs: nothing in them is a result
        if name.startswith(mine) and not _owner_alive(client[name]["run_owner"].find_one() or {}):
            client.drop_database(name)
    name = f"{mine}{uuid.uuid4().hex[:8]}"
    lpad = LaunchPad(host=uri, uri_mode=True, name=name, strm_lvl="ERROR")  # not its INFO lines
    lpad.reset("", require_password=False)
    client[name]["run_owner"].insert_one({"host": socket.gethostname(), "pid": os.getpid()})
    work = Path(tempfile.mkdtemp(prefix="dp_screen_run_"))
    try:
        lpad.add_wf(flow_to_workflow(flow, store=store))
        lp_file = work / "launchpad.yaml"
        lpad.to_file(str(lp_file))
        command = [*(worker_command or WORKER_COMMAND), str(lp_file)]
        env = dict(os.environ, OMP_NUM_THREADS="1", **{WORKER_ENV: "1"})
        for attempt in range(1, RELAUNCHES + 2):
            procs = [subprocess.Popen(command, cwd=work, env=env, stdout=subprocess.DEVNULL) for _ in range(workers)]
            _watch(lpad, procs, progress)
            if not lpad.run_exists() or attempt > RELAUNCHES:
                break
            # a worker stops when it sees nothing ready and nothing running that could make more (FireWorks'
            # future_run_exists); a job that crashed its worker or a check made between two states of the workflow
            # can leave ready jobs behind: start the workers again rather than report an unfinished campaign
            codes = sorted({p.returncode for p in procs})
            print(
                f"the workers stopped (exit codes {codes}) with jobs ready to run: starting them again "
                f"({attempt} of {RELAUNCHES})",
                file=sys.stderr,
            )
        if os.environ.get("DP_SCREEN_RUN_TIMELINE"):  # the jobs' start and end (benchmarks/bench_pipeline.py)
            for launch in lpad.launches.find({}, {"fw_id": 1, "time_start": 1, "time_end": 1, "host": 1}):
                fw = lpad.fireworks.find_one({"fw_id": launch["fw_id"]}, {"name": 1})
                print(f"timeline {fw['name']}: {launch.get('time_start')} -> {launch.get('time_end')}", file=sys.stderr)
        _report_failures(lpad)
        store.connect()
        return {u: out for u in wanted if (out := _output(store, u)) is not None}
    finally:
        client.drop_database(name)
        client.close()


def _owner_alive(owner: dict) -> bool:
    """Whether the run that made a private launchpad may still be running (another machine's: assumed so)."""
    if owner.get("host") != socket.gethostname():
        return bool(owner)
    try:
        os.kill(owner["pid"], 0)
    except (ProcessLookupError, KeyError):
        return False
    except PermissionError:
        return True
    return True


def _watch(lpad, procs: list[subprocess.Popen], progress: bool) -> None:
    """Wait for the workers, with a bar of finished jobs (the flow's fan-out adds jobs as it goes)."""
    from tqdm.auto import tqdm

    bar = tqdm(desc="jobs", unit="job", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    try:
        while any(p.poll() is None for p in procs):
            bar.total = lpad.fireworks.count_documents({})
            bar.n = lpad.fireworks.count_documents({"state": "COMPLETED"})
            bar.refresh()
            time.sleep(0.5)
        bar.total = lpad.fireworks.count_documents({})
        bar.n = lpad.fireworks.count_documents({"state": "COMPLETED"})
        bar.refresh()
    except BaseException:
        for p in procs:
            p.terminate()
        raise
    finally:
        bar.close()


def _report_failures(lpad) -> None:
    """Print each failed job's last traceback line and, when jobs were left unfinished, how many in which state."""
    states = Counter(fw["state"] for fw in lpad.fireworks.find({}, {"state": 1}))
    if set(states) - {"COMPLETED"}:
        print(f"jobs by state: {dict(sorted(states.items()))}", file=sys.stderr)
    for fw in lpad.fireworks.find({"state": "FIZZLED"}, {"fw_id": 1, "name": 1}):
        launch = lpad.launches.find_one({"fw_id": fw["fw_id"], "state": "FIZZLED"}, sort=[("launch_id", -1)]) or {}
        exc = ((launch.get("action") or {}).get("stored_data") or {}).get("_exception", {})
        trace = (exc.get("_stacktrace") or "").strip().splitlines()
        print(f"job '{fw['name']}' failed: {trace[-1] if trace else 'no traceback stored'}", file=sys.stderr)


def _output(store, job_uuid: str):
    try:
        return store.get_output(job_uuid, which="last")
    except ValueError:  # the job did not finish
        return None


def work(launchpad_file: str) -> None:
    """One worker: run the launchpad's jobs until none is ready or can become ready."""
    from fireworks import FWorker, LaunchPad
    from fireworks.core.rocket_launcher import rapidfire

    rapidfire(
        LaunchPad.from_file(launchpad_file),
        FWorker(),
        nlaunches=0,
        sleep_time=1,
        strm_lvl="CRITICAL",
        local_redirect=False,
    )


if __name__ == "__main__":
    work(sys.argv[1])
