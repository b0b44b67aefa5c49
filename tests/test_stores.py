"""The database layer against a real SecantusDB server started by the tests."""

from __future__ import annotations

import pymongo
import pytest
from jobflow import job, run_locally

from dp_screen.errors import DatabaseError
from dp_screen.jobs.enumerate import EnumerationSettings, write_compositions
from dp_screen.settings import DPScreenSettings
from dp_screen.stores import COLLECTIONS, EmbeddedServer, get_job_store, open_store, ping, upsert_documents


def test_server_is_reused_not_restarted(db_server):
    server = EmbeddedServer(db_server["settings"])
    state = server.start()
    assert state["pid"] == db_server["pid"] and state["uri"] == db_server["uri"]
    status = server.status()
    assert status["running"] and status["uri"] == db_server["uri"]
    ping(db_server["uri"])


def test_round_trip_and_indexes(db_settings):
    docs = [{"composition_id": f"c{i}", "X": "O" if i % 2 else "F", "value": i} for i in range(50)]
    with open_store("compositions", db_settings) as store:
        assert upsert_documents(store, docs) == {"inserted": 50, "replaced": 0}
        back = store.query_one({"composition_id": "c7"}, properties=["composition_id", "X", "value"])
        assert {k: back[k] for k in ("composition_id", "X", "value")} == {"composition_id": "c7", "X": "O", "value": 7}
        assert store.count({"X": "F"}) == 25
        indexes = store._collection.index_information()
        unique = [v for v in indexes.values() if v["key"] == [("composition_id", 1)]]
        assert unique and unique[0].get("unique")
        assert any(v["key"] == [("X", 1)] for v in indexes.values())
        # upsert of changed documents replaces, never duplicates
        changed = [{**d, "value": -d["value"]} for d in docs[:10]]
        assert upsert_documents(store, changed + docs[10:12]) == {"inserted": 0, "replaced": 12}
        assert store.count() == 50
        assert store.query_one({"composition_id": "c3"})["value"] == -3


def test_every_collection_has_a_store(db_settings):
    for name, key in COLLECTIONS.items():
        with open_store(name, db_settings) as store:
            assert store.key == key
            upsert_documents(store, [{key: "one"}, {key: "one"}])
            assert store.count() == 1


def test_enumerating_twice_leaves_one_document_per_composition(db_settings, small_table_path):
    settings = EnumerationSettings(table=str(small_table_path))
    first = write_compositions(settings, db_settings, chunk_size=7)
    assert first["total"] == 35 and first["inserted"] == 35 and first["stored_total"] == 35
    second = write_compositions(settings, db_settings, chunk_size=7)
    assert second["inserted"] == 0 and second["skipped"] == 35 and second["stored_total"] == 35
    with open_store("compositions", db_settings) as store:
        doc = store.query_one({"composition_id": "Cs+_Cs+_Ag+_Bi3+_Cl-"})
        assert doc["formula"] == "Cs2AgBiCl6"
        assert doc["provenance"]["site_table_sha256"] == first["site_table_sha256"]
        assert doc["provenance"]["code_version"]
        assert doc["goldschmidt_t"] == pytest.approx((1.88 + 1.81) / (2**0.5 * (1.09 + 1.81)), abs=1e-4)
        ids = [d["composition_id"] for d in store._collection.find({}, {"composition_id": 1})]
        assert len(ids) == len(set(ids)) == 35


def test_edited_table_replaces_documents(db_settings, small_table_path):
    write_compositions(EnumerationSettings(table=str(small_table_path)), db_settings)
    edited = small_table_path.read_text().replace("A,Cs,1,12,", "A,Cs,1,12,1.90")
    small_table_path.write_text(edited)
    result = write_compositions(EnumerationSettings(table=str(small_table_path)), db_settings)
    assert result["replaced"] == 35 and result["stored_total"] == 35
    with open_store("compositions", db_settings) as store:
        assert store.query_one({"composition_id": "Cs+_Cs+_Ag+_Bi3+_Cl-"})["rA"] == 1.90


def test_resume_after_partial_write(db_settings, small_table_path):
    """A run interrupted after some chunks: the rerun writes only the rest."""
    settings = EnumerationSettings(table=str(small_table_path))
    calls = []

    def interrupt(n):
        calls.append(n)
        if len(calls) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_compositions(settings, db_settings, chunk_size=10, progress=interrupt)
    resumed = write_compositions(settings, db_settings, chunk_size=10)
    assert resumed["skipped"] == 20 and resumed["inserted"] == 15 and resumed["stored_total"] == 35


def test_unreachable_uri_names_it():
    with pytest.raises(DatabaseError, match=r"cannot reach the database at mongodb://127\.0\.0\.1:1"):
        ping("mongodb://127.0.0.1:1", timeout_s=1)
    with pytest.raises(DatabaseError, match="malformed MongoDB URI 'http://nope'"):
        ping("http://nope", timeout_s=1)
    bad = DPScreenSettings(db_uri="mongodb://user:secret@127.0.0.1:1", db_timeout_s=1)
    with pytest.raises(DatabaseError) as err:
        with open_store("compositions", bad):
            pass
    assert "secret" not in str(err.value) and "***" in str(err.value)


@job
def _square(x):
    return {"value": x * x}


def test_job_store_runs_jobflow(db_settings):
    store = get_job_store(db_settings)
    flow_job = _square(7)
    responses = run_locally(flow_job, store=store, create_folders=False, ensure_success=True)
    assert responses[flow_job.uuid][1].output == {"value": 49}
    store.connect()
    assert store.get_output(flow_job.uuid) == {"value": 49}
    assert "data" in store.additional_stores
    store.close()


def test_start_stop_in_a_fresh_home(tmp_path):
    server = EmbeddedServer(DPScreenSettings(home=tmp_path / "proj"))
    state = server.start()
    client = pymongo.MongoClient(state["uri"], serverSelectionTimeoutMS=2000)
    client.dp_screen.probe.insert_one({"a": 1})
    client.close()
    assert server.stop() is True
    assert server.status()["running"] is False
    # data survive a restart
    state = server.start()
    client = pymongo.MongoClient(state["uri"], serverSelectionTimeoutMS=2000)
    assert client.dp_screen.probe.count_documents({}) == 1
    client.close()
    server.stop()
