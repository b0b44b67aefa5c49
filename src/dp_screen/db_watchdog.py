"""Stops an embedded database server once it has had no clients for a while (started by ``EmbeddedServer.start``).

    python -m dp_screen.db_watchdog HOME IDLE_SECONDS

Every few seconds it asks the server for its connections (``currentOp``) and counts those of other clients (its own
carry the application name ``dp_screen-watchdog``); after IDLE_SECONDS without any it stops the server, and it exits
when the server is gone.
"""

from __future__ import annotations

import sys
import time

APP_NAME = "dp_screen-watchdog"


def other_clients(client) -> int:
    """Connections to the server that are not this watchdog's."""
    ops = client.admin.command("currentOp").get("inprog", [])
    return sum(1 for op in ops if (op.get("clientMetadata") or {}).get("application", {}).get("name") != APP_NAME)


def watch(home: str, idle_s: float) -> None:
    import pymongo
    from pymongo.errors import PyMongoError

    from dp_screen.settings import DPScreenSettings
    from dp_screen.stores import EmbeddedServer

    server = EmbeddedServer(DPScreenSettings(home=home))
    state = server.running_state()
    if state is None:
        return
    client = pymongo.MongoClient(state["uri"], appname=APP_NAME, serverSelectionTimeoutMS=3000)
    poll = max(0.5, min(10.0, idle_s / 4))
    idle_since = time.monotonic()
    while True:
        time.sleep(poll)
        now = server.running_state()
        if now is None or now["pid"] != state["pid"]:
            return
        try:
            busy = other_clients(client) > 0
        except PyMongoError:
            busy = True  # cannot tell: keep the server
        if busy:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since >= idle_s:
            client.close()
            print(f"dp_screen watchdog: no clients for {idle_s:g} s; stopping the embedded server", flush=True)
            server.stop()
            return


if __name__ == "__main__":
    watch(sys.argv[1], float(sys.argv[2]))
