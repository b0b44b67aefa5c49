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
    state = server.start(idle_stop_s=0)
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


def make_tiny_mace(path, atomic_numbers, seed=0, scale=1.0, e0=-2.0):
    """A tiny random-weight MACE (ScaleShiftMACE with ZBL pair repulsion) saved with torch.save.

    Not a physical potential: it gives smooth, repulsive-at-short-range energies and forces so that the relaxation
    engine, the ASE path and the training machinery run on real MACE code.
    """
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    import mace  # noqa: F401  (before e3nn)
    import numpy as np
    import torch
    from e3nn import o3
    from mace import modules

    torch.manual_seed(seed)
    z = sorted(set(atomic_numbers))
    block = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    model = modules.ScaleShiftMACE(
        r_max=5.0,
        num_bessel=6,
        num_polynomial_cutoff=5,
        max_ell=2,
        interaction_cls=block,
        interaction_cls_first=block,
        num_interactions=2,
        num_elements=len(z),
        hidden_irreps=o3.Irreps("8x0e"),
        MLP_irreps=o3.Irreps("8x0e"),
        gate=torch.nn.functional.silu,
        atomic_energies=np.full(len(z), e0),
        avg_num_neighbors=20.0,
        atomic_numbers=z,
        correlation=2,
        radial_type="bessel",
        atomic_inter_scale=scale,
        atomic_inter_shift=0.0,
        pair_repulsion=True,
    ).double()
    torch.save(model, path)
    return path


TINY_ELEMENTS = [8, 9, 11, 13, 17, 20, 27, 38, 42, 47, 55, 56, 83]  # O F Na Al Cl Ca Co Sr Mo Ag Cs Ba Bi


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory):
    return make_tiny_mace(tmp_path_factory.mktemp("models") / "tiny.model", TINY_ELEMENTS, seed=0, scale=1.0)


def run_cli(args, capsys):
    """Run the dp-screen CLI in-process; return (exit code, stdout, stderr)."""
    from dp_screen.cli import main

    code = 0
    try:
        main(args)
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err
