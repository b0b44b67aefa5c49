"""The campaign machinery at scale: chunk jobs read only their own documents, a database lost mid-run ends with one
message and keeps what finished, on-device blow-up checks agree with the host ones, array-based space groups agree
with pymatgen's."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Structure
from pymongo import monitoring

from dp_screen.jobs.build import BuildSettings, build_structures_to_store
from dp_screen.jobs.enumerate import EnumerationSettings, write_compositions
from dp_screen.jobs.relax import relax_store
from dp_screen.mlip.relax import RelaxSettings
from dp_screen.structures.perovskite import SiteSpeciesSet, build_bvm_structure

TABLE = "site,element,oxidation_state\nA,Cs,1\nB,Ag,1\nB,Na,1\nB,Bi,3\nB,In,3\nX,Cl,-1\n"


class DocumentCounter(monitoring.CommandListener):
    """A pymongo command listener that keeps every document the server returns to find / getMore, per collection."""

    def __init__(self) -> None:
        super().__init__()
        self.docs: dict[str, list[dict]] = {}
        self._coll: dict[int, str] = {}

    def started(self, event) -> None:
        if event.command_name == "find":
            self._coll[event.request_id] = event.command["find"]
        elif event.command_name == "getMore":
            self._coll[event.request_id] = event.command["collection"]

    def succeeded(self, event) -> None:
        name = self._coll.pop(event.request_id, None)
        if name is None:
            return
        cursor = event.reply.get("cursor", {})
        self.docs.setdefault(name, []).extend(cursor.get("firstBatch", []) + cursor.get("nextBatch", []))

    def failed(self, event) -> None:
        self._coll.pop(event.request_id, None)


@pytest.fixture
def chlorides(db_settings, tmp_path):
    table = tmp_path / "t.csv"
    table.write_text(TABLE)
    write_compositions(EnumerationSettings(table=str(table), allow_same_b=False), db_settings)
    build_structures_to_store(BuildSettings(tilts=["a0a0a0", "a0a0c-"]), db_settings)
    return db_settings


def _listening(settings, monkeypatch) -> DocumentCounter:
    import pymongo

    from dp_screen import campaign_store

    counter = DocumentCounter()
    client = pymongo.MongoClient(settings.db_uri, event_listeners=[counter])
    monkeypatch.setitem(campaign_store._clients, settings.db_uri, client)
    return counter


def test_two_chunk_jobs_read_only_their_own_documents(chlorides, tiny_model_path, monkeypatch):
    import pymongo

    from dp_screen.campaign_store import CampaignStore

    ids = sorted(d["composition_id"] for d in CampaignStore(chlorides)["compositions"].find({}, {"composition_id": 1}))
    assert len(ids) == 4
    # a large unrelated collection: 3,000 relaxations of other compositions
    client = pymongo.MongoClient(chlorides.db_uri)
    client[chlorides.database]["relaxations"].insert_many(
        [
            {"relaxation_id": f"x{i}", "composition_id": f"other{i // 5}", "structure_id": f"other{i}"}
            for i in range(3000)
        ]
    )
    client.close()
    settings = RelaxSettings(max_steps=20)
    reads = []
    for chunk in (ids[:2], ids[2:]):
        counter = _listening(chlorides, monkeypatch)
        relax_store(str(tiny_model_path), settings, chlorides, query={"composition_id": {"$in": chunk}}, device="cpu")
        reads.append(counter.docs)
        for name, docs in counter.docs.items():
            mine = [d for d in docs if "composition_id" in d]
            assert all(d["composition_id"] in chunk for d in mine), (
                name,
                {d["composition_id"] for d in mine} - set(chunk),
            )
        # 2 compositions x 2 tilts: every collection read returns at most a few documents per structure
        assert sum(len(v) for v in counter.docs.values()) <= 4 * 4, {k: len(v) for k, v in counter.docs.items()}
    assert {k: len(v) for k, v in reads[0].items()} == {k: len(v) for k, v in reads[1].items()}


def test_a_database_lost_mid_run_ends_with_one_message_and_keeps_what_finished(tmp_path, tiny_model_path):
    from dp_screen.campaign_store import CampaignStore
    from dp_screen.errors import DatabaseError
    from dp_screen.settings import DPScreenSettings
    from dp_screen.stores import EmbeddedServer

    home = tmp_path / "h"
    server = EmbeddedServer(DPScreenSettings(home=home))
    uri = server.start(idle_stop_s=0)["uri"]
    settings = DPScreenSettings(home=home, db_uri=uri, db_timeout_s=1.0)
    try:
        table = tmp_path / "t.csv"
        table.write_text(TABLE)
        write_compositions(EnumerationSettings(table=str(table), allow_same_b=False), settings)
        build_structures_to_store(BuildSettings(tilts=["a0a0a0", "a0a0c-"]), settings)
        seen = []

        def lose_the_database(n):
            seen.append(n)
            if sum(seen) >= 3:
                server.stop()

        with pytest.raises(DatabaseError, match=r"failed while writing relaxations.*run the same command again"):
            relax_store(
                str(tiny_model_path),
                RelaxSettings(max_steps=30, max_atoms_per_batch=10),
                settings,
                device="cpu",
                write_every=1,
                identify_workers=0,
                progress=lose_the_database,
            )
    finally:
        server.stop()
    uri = server.start(idle_stop_s=0)["uri"]
    try:
        kept = CampaignStore(DPScreenSettings(home=home, db_uri=uri))["relaxations"].count_documents({})
        assert 1 <= kept < 8  # what finished before the server went away is stored
    finally:
        server.stop()


def test_device_checks_flag_the_same_blow_ups_as_the_host_path(tiny_model_path):
    import torch
    import torch_sim as ts

    from dp_screen.mlip.models import load_model
    from dp_screen.mlip.relax import _blow_up, _torchsim_model, device_checks

    model = load_model(tiny_model_path, device="cpu", dtype="float64")
    tm = _torchsim_model(model)
    base = build_bvm_structure(SiteSpeciesSet(("Cs", 1), ("Cs", 1), ("Ag", 1), ("Bi", 3), ("Cl", -1))).structure
    close = base.cart_coords.copy()
    close[1] = close[0] + [0.3, 0.0, 0.0]
    structures = [
        base,
        Structure(base.lattice, base.species, close, coords_are_cartesian=True),
        base.copy(),
        base.copy(),
    ]
    v0 = np.array([s.volume for s in structures])
    v0[2] = base.volume / 1.8  # as if the third had grown by 80% since its start
    settings = RelaxSettings()
    init_fn, _ = ts.OPTIM_REGISTRY[ts.Optimizer.fire]
    batch = init_fn(ts.initialize_state(structures, tm.device, tm.dtype), tm, cell_filter=ts.CellFilter.frechet)
    batch.positions[batch.system_idx == 3] = float("nan")  # the fourth has gone non-finite
    codes, _ = device_checks(batch, torch.tensor(v0, dtype=tm.dtype), settings)
    owner = batch.system_idx.numpy()
    host = [
        _blow_up(
            float(batch.energy[k]),
            batch.forces.numpy()[owner == k],
            batch.positions.numpy()[owner == k],
            batch.row_vector_cell.numpy()[k],
            v0[k],
            settings,
        )
        for k in range(4)
    ]
    assert host[0] is None and "too close" in host[1] and "volume" in host[2] and "non-finite" in host[3]
    assert [int(c) for c in codes[:, 0]] == [0, 3, 2, 1]
    assert codes[1, 2] == pytest.approx(0.3, abs=1e-6)  # the shortest distance, as the host computes it


def test_array_space_groups_agree_with_pymatgen():
    from dp_screen.structures.phases import (
        UNTILTED,
        _is_exactly,
        space_groups,
        space_groups_pymatgen,
        species_pattern,
        tilt_table,
    )
    from dp_screen.structures.tilts import SPACE_GROUPS

    rng = np.random.default_rng(0)
    structures = []
    for sp in (
        SiteSpeciesSet(("Sr", 2), ("Sr", 2), ("Co", 2), ("Mo", 6), ("O", -2)),
        SiteSpeciesSet(("Sr", 2), ("Sr", 2), ("Ti", 4), ("Ti", 4), ("O", -2)),
    ):
        for tilt in SPACE_GROUPS["rocksalt"]:
            s = build_bvm_structure(sp, "rocksalt", tilt).structure
            structures += [
                s,
                Structure(
                    s.lattice, s.species, s.cart_coords + rng.normal(0, 0.004, (len(s), 3)), coords_are_cartesian=True
                ),
            ]
    reference = [space_groups_pymatgen(s) for s in structures]
    assert [space_groups(s) for s in structures] == reference
    assert len({space_groups(s)["0.001"] for s in structures}) > 10
    # told the aristotype of the structure's species pattern (as identification is for an untilted start), the
    # moyopy shortcut answers the untilted starts and leaves every other structure to spglib: the same answers
    aristotypes = [tilt_table("rocksalt", *species_pattern(s))[UNTILTED] for s in structures]
    assert [space_groups(s, maximal=m) for s, m in zip(structures, aristotypes, strict=True)] == reference
    assert sum(_is_exactly(m, _cell(s), 0.1) for s, m in zip(structures, aristotypes, strict=True)) == 2


def _cell(s):
    codes: dict[str, int] = {}
    return (s.lattice.matrix, s.frac_coords, [codes.setdefault(x.species_string, len(codes) + 1) for x in s])


def _angles_one_anion_at_a_time(structure) -> list[float]:
    """B-X-B' angles the way pymatgen's per-site neighbour search gives them (the reference for the batched one)."""
    roles = structure.site_properties["site"]
    out = []
    for i, site in enumerate(structure):
        if roles[i] != "X":
            continue
        near = sorted(
            (n for n in structure.get_neighbors(site, 3.6) if roles[n.index] in ("B", "B2")),
            key=lambda n: n.nn_distance,
        )[:2]
        v1, v2 = near[0].coords - site.coords, near[1].coords - site.coords
        out.append(
            float(np.degrees(np.arccos(np.clip(np.dot(v1, v2) / np.linalg.norm(v1) / np.linalg.norm(v2), -1, 1))))
        )
    return sorted(out)


def test_batched_b_x_b_angles_agree_with_the_per_site_search():
    from dp_screen.structures.phases import b_x_b_angles
    from dp_screen.structures.tilts import SPACE_GROUPS

    for tilt in SPACE_GROUPS["rocksalt"]:
        s = build_bvm_structure(
            SiteSpeciesSet(("Sr", 2), ("Sr", 2), ("Co", 2), ("Mo", 6), ("O", -2)), "rocksalt", tilt
        ).structure
        assert sorted(b_x_b_angles(s)) == pytest.approx(_angles_one_anion_at_a_time(s), abs=1e-8)


def test_faster_identification_and_gate_give_the_answers_of_the_previous_implementation():
    """tests/data/machinery_reference.json holds what spglib-based identification and the per-pair perovskite gate
    (dp_screen at ee35e6a) said about a fixed set of 160 structures: starts, rattled and strained ones, and ones
    deformed to fail the gate (scripts/make_machinery_reference.py makes both the structures and the file). The
    moyopy identification and the array gate must say the same: same space groups, phase, candidates, angles,
    verdict, reason and measures."""
    import importlib.util
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("make_ref", root / "scripts" / "make_machinery_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    reference = json.loads((root / "tests" / "data" / "machinery_reference.json").read_text())
    made = {name: module.answers(s, tilt) for name, s, tilt in module.structures()}
    assert set(made) == set(reference) and len(made) == 160
    for name, ref in reference.items():
        got = json.loads(json.dumps(made[name], default=float))
        assert got["space_groups"] == ref["space_groups"] and got["phase"] == ref["phase"], name
        assert got["candidates"] == ref["candidates"], name
        assert got["mean_bxb_angle"] == pytest.approx(ref["mean_bxb_angle"], abs=1e-9), name
        assert got["gate"] == ref["gate"], name
    assert sum(not r["gate"]["ok"] for r in reference.values()) == 71


def test_the_validation_sample_reads_no_structure_it_does_not_validate(db_settings, monkeypatch):
    """A stratified validation sample of 2,000 ranked relaxations (with their structures) reads their light fields
    to draw it, then only the sampled relaxations whole."""
    from dp_screen.campaign_store import CampaignStore
    from dp_screen.jobs.validate import draw_sample

    structure = build_bvm_structure(SiteSpeciesSet(("Cs", 1), ("Cs", 1), ("Ag", 1), ("Bi", 3), ("Cl", -1))).structure
    docs = [
        {
            "relaxation_id": f"r{k}",
            "composition_id": f"C{k // 5}+_C+_B+_B3+_{'Cl' if k % 2 else 'Br'}-",
            "start_tilt": ("a0a0a0", "a0a0c-", "a-a-a-", "a0b-b-", "a+b-b-")[k % 5],
            "energy_per_atom": -3.0 - k % 7,
            "phase": {"space_group": (225, 87, 148, 12, 14)[k % 5]},
            "failed": False,
            "converged": True,
            "excluded": None,
            "model_sha256": "m" * 64,
            "structure": structure.as_dict(),
        }
        for k in range(2000)
    ]
    CampaignStore(db_settings).write_relaxations(docs)
    counter = _listening(db_settings, monkeypatch)
    sample = draw_sample(CampaignStore(db_settings), None, "m" * 64, 6, seed=3, by_composition=False)
    assert len(sample) == 6 and all("structure" in d for d in sample)
    read = counter.docs["relaxations"]
    assert len(read) == 2000 + 6 and sum("structure" in d for d in read) == 6
    assert len({(d["composition_id"][-3:], d["phase"]["space_group"]) for d in sample}) == 6  # stratified


def test_identification_in_worker_processes_gives_the_in_process_documents(chlorides, tiny_model_path):
    """relax_store with two identification processes writes the documents (space groups, phase, gate, energies)
    and counts that it writes with identification in its own process."""
    import json

    from dp_screen.campaign_store import CampaignStore

    store = CampaignStore(chlorides)
    fields = ("relaxation_id", "energy_per_atom", "converged", "phase", "perovskite_check", "excluded")

    def run(workers: int) -> tuple[dict, list[dict]]:
        store["relaxations"].delete_many({})
        counts = relax_store(
            str(tiny_model_path),
            RelaxSettings(max_steps=15),
            chlorides,
            device="cpu",
            identify_workers=workers,
            write_every=3,
        )
        docs = sorted(
            store["relaxations"].find({}, {f: 1 for f in fields} | {"_id": 0}), key=lambda d: d["relaxation_id"]
        )
        return counts, docs

    in_process, docs0 = run(0)
    pooled, docs2 = run(2)
    assert len(docs0) == 8 and json.dumps(docs2, sort_keys=True) == json.dumps(docs0, sort_keys=True)  # NaN == NaN
    for key in ("relaxed", "converged", "failed", "not_perovskite", "left_start_tilt"):
        assert pooled[key] == in_process[key], key
    assert in_process["relaxed"] == 8 and any(d["phase"] for d in docs0)
