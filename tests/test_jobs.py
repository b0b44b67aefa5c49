"""Makers run through jobflow against the real store."""

from __future__ import annotations

from jobflow import run_locally

from dp_screen.jobs.enumerate import EnumerateMaker, EnumerationSettings
from dp_screen.stores import get_job_store, open_store


def test_enumerate_maker_writes_compositions_and_returns_a_summary(db_settings, small_table_path):
    maker = EnumerateMaker(settings=EnumerationSettings(table=str(small_table_path), anions=["Cl"]))
    job = maker.make(db_settings.model_dump(mode="json"))
    responses = run_locally(job, store=get_job_store(db_settings), create_folders=False, ensure_success=True)
    summary = responses[job.uuid][1].output
    assert summary["total"] == 15 and summary["by_anion"] == {"Cl": 15} and summary["inserted"] == 15
    with open_store("compositions", db_settings) as store:
        assert store.count() == 15
        assert store.query_one({"formula": "Cs2AgBiCl6"})["provenance"]["settings"]["anions"] == ["Cl"]
