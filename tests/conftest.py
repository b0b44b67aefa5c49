"""Shared fixtures: a real SecantusDB server (started here, as a separate process) and small site tables."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

from dp_screen.settings import DPScreenSettings  # noqa: E402
from dp_screen.stores import EmbeddedServer  # noqa: E402

SMALL_TABLE = """# a small custom table for tests
site,element,oxidation_state,coordination,radius
A,Cs,1,12,
A,Ba,2,12,
A,La,3,12,
B,Ag,1,6,
B,Na,1,6,
B,Bi,3,6,
B,In,3,6,
B,Fe,3,6,
B,Ti,4,6,
B,W,6,6,
B,Mg,2,6,
X,Cl,-1,6,
X,O,-2,6,
"""


@pytest.fixture(scope="session")
def db_server(tmp_path_factory):
    """A real embedded SecantusDB server for the whole test session; yields its running state."""
    home = tmp_path_factory.mktemp("dp_screen_home")
    settings = DPScreenSettings(home=home)
    server = EmbeddedServer(settings)
    state = server.start()
    yield {"settings": settings, "uri": state["uri"], "pid": state["pid"], "home": home}
    server.stop()


@pytest.fixture
def db_settings(db_server, request):
    """Settings pointing at the session server with a fresh database name per test."""
    name = "t_" + request.node.name.replace("[", "_").replace("]", "").replace("-", "_")[:50]
    settings = DPScreenSettings(db_uri=db_server["uri"], database=name, home=db_server["home"])
    yield settings
    import pymongo

    client = pymongo.MongoClient(db_server["uri"])
    client.drop_database(name)
    client.close()


@pytest.fixture
def small_table_path(tmp_path):
    path = tmp_path / "small_table.csv"
    path.write_text(SMALL_TABLE)
    return path
