"""How dp_screen reaches its database.

One :class:`~dp_screen.settings.DPScreenSettings` gives every store: a MongoDB URI on clusters, or by default an
embedded SecantusDB server (a MongoDB wire-protocol server) that dp_screen starts itself on loopback with its data in
``<home>/db`` and reuses while it runs. SecantusDB is GPL-2.0: it is only ever run as a separate program
(``secantusd-py``) and spoken to over the wire protocol, never imported.

Collections (key field): compositions (composition_id), structures (structure_id), relaxations (relaxation_id),
validations (validation_id), models (model_id), the analysis digests and counters, the active-learning rounds
(al_rounds) and labels (al_labels); plus the jobflow JobStore ``outputs`` with its ``data`` store.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from dp_screen.errors import DatabaseError
from dp_screen.settings import DPScreenSettings

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from jobflow import JobStore
    from maggma.stores import MongoStore

#: collection name -> key field
COLLECTIONS: dict[str, str] = {
    "compositions": "composition_id",
    "structures": "structure_id",
    "relaxations": "relaxation_id",
    "validations": "validation_id",
    "models": "model_id",
    "phase_sets": "key",  # which (model, relaxation settings) phase summaries the compositions carry
    # what the analysis reads instead of one document per composition: one per relax chunk (phase summaries,
    # descriptors and convergence of its compositions) and one per written batch of compositions (their
    # descriptors); see dp_screen.campaign_store
    "phase_digests": "digest_id",
    "composition_digests": "digest_id",
    "counters": "collection",  # documents inserted per collection, so a report need not count 10^6 documents
    # active learning (dp_screen.jobs.active_learning): one document per round and one per labelled structure
    "al_rounds": "round_id",
    "al_labels": "label_id",
    # a campaign's phase table, written by its summary job in packed parts (a job's output stays small)
    "campaign_tables": "part_id",
}

#: secondary indexes (the key gets a unique index)
INDEXES: dict[str, list[str]] = {
    # every secondary index slows bulk writes (about 2 s per index per 20k documents on SecantusDB), so keep the
    # ones that select compositions by their species; descriptor filters run server-side without them
    "compositions": ["formula", "X", "A", "A2", "B", "B2"],
    "structures": ["composition_id", "ordering", "tilt", "method", "space_group", "settings_hash"],
    "relaxations": ["composition_id", "structure_id", "model_sha256", "settings_hash", "converged", "share_key"],
    "validations": ["composition_id", "relaxation_id", "method"],
    "models": ["sha256", "name"],
    "phase_digests": ["key"],
    "al_rounds": ["loop_id"],
    "al_labels": ["loop_id", "key"],
    "campaign_tables": ["table_id"],
}

SERVER_STATE_FILE = "server.json"
SERVER_LOG_FILE = "server.log"


def redact(uri: str) -> str:
    """A URI with its password hidden, for messages."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return uri


# --------------------------------------------------------------------------------------------------------------
# embedded server
# --------------------------------------------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child still answers kill(0); treat it as dead
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as fh:
        if fh.read().split(") ", 1)[1].startswith("Z"):
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int, timeout: float = 0.5) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _server_program() -> str:
    """Path of the ``secantusd-py`` launcher (next to this Python, or on PATH)."""
    beside = Path(sys.executable).parent / "secantusd-py"
    if beside.exists():
        return str(beside)
    found = shutil.which("secantusd-py")
    if found:
        return found
    raise DatabaseError(
        "cannot start the embedded database: the program 'secantusd-py' (PyPI package secantusdb) is not installed; "
        "install dp_screen with its dependencies, or set a MongoDB URI with --db-uri / DP_SCREEN_DB_URI"
    )


class EmbeddedServer:
    """The embedded SecantusDB server of one project folder: start (or reuse), stop, status."""

    def __init__(self, settings: DPScreenSettings | None = None) -> None:
        self.settings = settings or DPScreenSettings()
        self.dir = self.settings.db_dir
        self.state_file = self.dir / SERVER_STATE_FILE
        self.log_file = self.dir / SERVER_LOG_FILE
        self.data_dir = self.dir / "data"

    def _read_state(self) -> dict | None:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def running_state(self) -> dict | None:
        """The state of the running server (pid, port, uri, ...), or None if it is not running."""
        state = self._read_state()
        if state and _pid_alive(state["pid"]) and _port_open(state["port"]):
            return state
        return None

    def start(self, idle_stop_s: float | None = None) -> dict:
        """Start the server if it is not running; return its state. Safe to call from several processes.

        The port is remembered (``<home>/db/port``) and reused when free, so launchpad files that name it stay
        valid. ``idle_stop_s`` (None: the settings' ``db_idle_stop_s``; 0: never) starts a watchdog that stops the
        server once it has had no clients for that long.
        """
        idle = self.settings.db_idle_stop_s if idle_stop_s is None else idle_stop_s
        with self._lock():
            state = self.running_state()
            if state:
                return state
            port = self.settings.db_port or self._remembered_port() or _free_port()
            if _port_open(port):
                raise DatabaseError(
                    f"cannot start the embedded database on port {port}: the port is in use by another program; "
                    "choose another with DP_SCREEN_DB_PORT or leave it unset to pick a free one"
                )
            self.data_dir.mkdir(parents=True, exist_ok=True)
            cmd = [
                _server_program(),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--storage-path",
                str(self.data_dir),
                "--standalone",
                "--log-level",
                "WARNING",
            ]
            with open(self.log_file, "ab") as log:
                proc = subprocess.Popen(
                    cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
                )
            uri = f"mongodb://127.0.0.1:{port}"
            state = {"pid": proc.pid, "port": port, "uri": uri, "storage_path": str(self.data_dir)}
            deadline = time.monotonic() + max(30.0, self.settings.db_timeout_s)
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    tail = self.log_file.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
                    raise DatabaseError(
                        f"the embedded database server exited at start (code {proc.returncode}): {tail[0]}; "
                        f"see {self.log_file}"
                    )
                if _port_open(port):
                    try:
                        ping(uri, timeout_s=2.0)
                        break
                    except DatabaseError:
                        pass
                time.sleep(0.1)
            else:
                proc.kill()
                raise DatabaseError(f"the embedded database server did not answer on port {port}; see {self.log_file}")
            (self.dir / "port").write_text(str(port))
            if idle and idle > 0:
                state["watchdog_pid"] = self._start_watchdog(idle)
            self.state_file.write_text(json.dumps(state))
            return state

    def _remembered_port(self) -> int | None:
        try:
            port = int((self.dir / "port").read_text())
        except (OSError, ValueError):
            return None
        return None if _port_open(port) else port

    def _start_watchdog(self, idle_s: float) -> int:
        cmd = [sys.executable, "-m", "dp_screen.db_watchdog", str(self.settings.home.resolve()), str(idle_s)]
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        return proc.pid

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop the server; True if one was running."""
        with self._lock():
            state = self._read_state()
            was_running = bool(state and _pid_alive(state["pid"]))
            if was_running:
                pid = state["pid"]
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + timeout_s
                while _pid_alive(pid) and time.monotonic() < deadline:
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(pid, os.WNOHANG)
                    time.sleep(0.1)
                if _pid_alive(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            watchdog = (state or {}).get("watchdog_pid")
            if watchdog and watchdog != os.getpid() and _pid_alive(watchdog):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(watchdog, signal.SIGTERM)
            self.state_file.unlink(missing_ok=True)
            return was_running

    def status(self) -> dict:
        """Whether the server runs, and where."""
        state = self.running_state()
        return {
            "running": state is not None,
            "uri": state["uri"] if state else None,
            "pid": state["pid"] if state else None,
            "storage_path": str(self.data_dir),
            "log": str(self.log_file),
        }


# --------------------------------------------------------------------------------------------------------------
# connections and stores
# --------------------------------------------------------------------------------------------------------------


def ping(uri: str, timeout_s: float = 5.0) -> None:
    """Raise DatabaseError (one line, naming the URI) unless a MongoDB-protocol server answers at ``uri``."""
    import pymongo
    from pymongo.errors import ConfigurationError, InvalidURI, PyMongoError

    hint = "set a reachable MongoDB URI (--db-uri / DP_SCREEN_DB_URI) or leave it unset to use the embedded server"
    try:
        client = pymongo.MongoClient(
            uri, serverSelectionTimeoutMS=int(timeout_s * 1000), connectTimeoutMS=int(timeout_s * 1000)
        )
    except (InvalidURI, ConfigurationError, ValueError) as exc:
        raise DatabaseError(f"malformed MongoDB URI {redact(uri)!r}: {exc}; {hint}") from None
    try:
        client.admin.command("ping")
    except PyMongoError as exc:
        reason = str(exc).split(",")[0].split(" (configured")[0]
        raise DatabaseError(f"cannot reach the database at {redact(uri)}: {reason}; {hint}") from None
    finally:
        client.close()


def database_uri(settings: DPScreenSettings | None = None, start: bool = True) -> str:
    """The URI to use: the configured one (checked), or the embedded server's (started if needed)."""
    settings = settings or DPScreenSettings()
    if settings.db_uri:
        ping(settings.db_uri, settings.db_timeout_s)
        return settings.db_uri
    server = EmbeddedServer(settings)
    state = server.start() if start else server.running_state()
    if state is None:
        raise DatabaseError(
            f"the embedded database is not running (start it with: dp-screen db start); home {settings.home}"
        )
    return state["uri"]


def get_store(collection: str, settings: DPScreenSettings | None = None, uri: str | None = None) -> MongoStore:
    """A maggma store (not yet connected) for one of the dp_screen collections."""
    from maggma.stores import MongoStore

    if collection not in COLLECTIONS:
        raise DatabaseError(f"unknown collection {collection!r}; allowed: {', '.join(COLLECTIONS)}")
    settings = settings or DPScreenSettings()
    uri = uri or database_uri(settings)
    return MongoStore.from_uri(uri, collection_name=collection, database=settings.database, key=COLLECTIONS[collection])


def get_job_store(settings: DPScreenSettings | None = None, uri: str | None = None) -> JobStore:
    """A jobflow JobStore (docs store ``outputs`` + the ``data`` additional store atomate2 jobs need)."""
    from jobflow import JobStore
    from maggma.stores import MongoStore

    settings = settings or DPScreenSettings()
    uri = uri or database_uri(settings)
    docs = MongoStore.from_uri(uri, collection_name="outputs", database=settings.database)
    data = MongoStore.from_uri(uri, collection_name="outputs_data", database=settings.database)
    return JobStore(docs, additional_stores={"data": data})


def ensure_indexes(store: MongoStore, collection: str, secondary: bool = True) -> None:
    """Create the unique key index (and, with ``secondary``, the other indexes) of a collection (connected store)."""
    key = COLLECTIONS[collection]
    store._collection.create_index(key, unique=True)
    if secondary:
        for field in INDEXES.get(collection, []):
            store._collection.create_index(field)


@contextlib.contextmanager
def open_store(
    collection: str,
    settings: DPScreenSettings | None = None,
    uri: str | None = None,
    bulk_load: bool = False,
) -> Iterator[MongoStore]:
    """Connected store of a collection, with its indexes in place; closed on exit.

    With ``bulk_load`` the secondary indexes are built when the block ends instead of before it (building them
    once after a large insert is several times cheaper than maintaining them during it).
    """
    store = get_store(collection, settings, uri)
    try:
        store.connect()
    except Exception as exc:  # maggma wraps pymongo errors differently across versions
        raise DatabaseError(f"cannot connect to collection {collection!r} at {redact(store.uri)}: {exc}") from None
    try:
        ensure_indexes(store, collection, secondary=not bulk_load)
        yield store
        if bulk_load:
            ensure_indexes(store, collection)
    finally:
        store.close()


def upsert_many(collection, key: str, docs: Iterable[dict], in_batch: int = 256, keep: tuple[str, ...] = ()) -> dict:
    """Idempotent bulk write into a pymongo collection keyed on ``key``: one document per key, always.

    New keys are inserted in bulk (several times faster than upserts on these servers); existing ones are replaced,
    keeping the existing document's top-level fields named in ``keep`` (fields other steps derived from it, which
    the new document does not carry). Returns counts {"inserted": n, "replaced": m}.
    """
    from pymongo import ReplaceOne
    from pymongo.errors import BulkWriteError

    docs = list(docs)
    if not docs:
        return {"inserted": 0, "replaced": 0}
    keys = [d[key] for d in docs]
    existing: dict = {}
    proj = {key: 1, "_id": 0, **{f: 1 for f in keep}}
    for i in range(0, len(keys), in_batch):  # $in lists of a few hundred stay flat in cost
        existing |= {d[key]: d for d in collection.find({key: {"$in": keys[i : i + in_batch]}}, proj)}
    new = [dict(d) for d in docs if d[key] not in existing]  # copies: insert_many adds _id
    old = [_kept(d, existing[d[key]], keep) for d in docs if d[key] in existing]
    inserted = 0
    if new:
        try:
            inserted = len(collection.insert_many(new, ordered=False).inserted_ids)
        except BulkWriteError as exc:  # another writer inserted some of them meanwhile: replace those instead
            errors = exc.details.get("writeErrors", [])
            other = [e for e in errors if e.get("code") != 11000]
            if other:
                raise DatabaseError(f"writing to {collection.name!r} failed: {other[0].get('errmsg')}") from None
            dup = {new[e["index"]][key] for e in errors}
            inserted = exc.details.get("nInserted", 0)
            old += [_kept(d, collection.find_one({key: d[key]}, proj) or {}, keep) for d in docs if d[key] in dup]
    if old:
        collection.bulk_write([ReplaceOne({key: d[key]}, d, upsert=True) for d in old], ordered=False)
    return {"inserted": inserted, "replaced": len(old)}


def _kept(doc: dict, existing: dict, keep: tuple[str, ...]) -> dict:
    """``doc`` with the fields ``keep`` of the document it replaces (where that has them and ``doc`` does not)."""
    extra = {f: existing[f] for f in keep if f in existing and f not in doc}
    return {**doc, **extra} if extra else doc


def upsert_documents(store: MongoStore, docs: Iterable[dict], key: str | None = None) -> dict:
    """:func:`upsert_many` into a connected maggma store (keyed on the store's key by default)."""
    return upsert_many(store._collection, key or store.key, docs)
