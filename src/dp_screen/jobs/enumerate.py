"""Enumerate the composition space into the ``compositions`` collection (a function and its jobflow Maker)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from jobflow import Maker, job
from monty.json import MSONable

from dp_screen.campaign_store import CampaignStore
from dp_screen.chemistry.composition_space import enumerate_compositions, summarize
from dp_screen.chemistry.site_tables import load_site_table
from dp_screen.schemas.common import Provenance
from dp_screen.schemas.composition import CompositionDoc
from dp_screen.settings import DPScreenSettings
from dp_screen.structures.bond_valence import bond_valence_coverage

if TYPE_CHECKING:
    from collections.abc import Callable

    import pandas as pd

    from dp_screen.chemistry.site_tables import SiteTable


@dataclass
class EnumerationSettings(MSONable):
    """What to enumerate.

    Parameters
    ----------
    table
        Path of a site-table CSV file; None for the packaged default (rule R1).
    anions
        Keep only these X elements (e.g. ["O", "F"]); None keeps all of the table's anions.
    allow_same_a, allow_same_b
        Allow A = A' (same species) and B = B'.
    bv_filter
        None, "exact" or "any": keep only compositions whose every cation-anion pair has bond-valence parameters
        (see :func:`dp_screen.structures.bond_valence.bond_valence_coverage`).
    """

    table: str | None = None
    anions: list[str] | None = None
    allow_same_a: bool = True
    allow_same_b: bool = True
    bv_filter: str | None = None

    def site_table(self) -> SiteTable:
        """The site table these settings select."""
        return load_site_table(self.table).restrict_anions(self.anions)

    def settings_dict(self) -> dict:
        """Settings as a plain dict for provenance."""
        return {
            "table": self.table,
            "anions": self.anions,
            "allow_same_a": self.allow_same_a,
            "allow_same_b": self.allow_same_b,
            "bv_filter": self.bv_filter,
        }


def enumerate_table(settings: EnumerationSettings) -> tuple[SiteTable, pd.DataFrame]:
    """The site table and the enumerated compositions (with descriptors) for these settings."""
    table = settings.site_table()
    df = enumerate_compositions(table, allow_same_a=settings.allow_same_a, allow_same_b=settings.allow_same_b)
    if settings.bv_filter:
        df = df[bond_valence_coverage(df, settings.bv_filter)].reset_index(drop=True)
    return table, df


def write_compositions(
    settings: EnumerationSettings,
    db_settings: DPScreenSettings | None = None,
    chunk_size: int = 5000,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> dict:
    """Enumerate and write every composition document; resumable and idempotent.

    Compositions already stored from the same site table (same sha256) are skipped, so an interrupted run started
    again writes only what is missing and a second run writes nothing; any other stored version of a composition is
    replaced, so the collection always holds exactly one document per composition id.
    ``progress(n)`` is called after each chunk with the number of compositions handled; ``on_total(N)`` once first.
    """
    t0 = time.perf_counter()
    table, df = enumerate_table(settings)
    provenance = Provenance(site_table=table.name, site_table_sha256=table.sha256, settings=settings.settings_dict())
    counts = {"inserted": 0, "replaced": 0, "skipped": 0}
    store = CampaignStore(db_settings)
    hashes = store.composition_table_hashes()  # enumeration writes the whole space: one pass over what is stored
    done = {cid for cid, h in hashes.items() if h == table.sha256}
    todo = df[~df["composition_id"].isin(done)] if done else df
    counts["skipped"] = len(df) - len(todo)
    if on_total:
        on_total(len(df))
    if progress and counts["skipped"]:
        progress(counts["skipped"])
    for start in range(0, len(todo), chunk_size):
        chunk = todo.iloc[start : start + chunk_size]
        result = store.write_compositions([d for d in CompositionDoc.from_table(chunk, provenance)])
        counts["inserted"] += result["inserted"]
        counts["replaced"] += result["replaced"]
        if progress:
            progress(len(chunk))
    stored = len(set(hashes) | set(df["composition_id"]))
    return {
        **summarize(df),
        **counts,
        "stored_total": stored,
        "site_table": table.name,
        "site_table_sha256": table.sha256,
        "seconds": round(time.perf_counter() - t0, 2),
    }


@dataclass
class EnumerateMaker(Maker):
    """Enumerate the composition space into the ``compositions`` collection.

    Parameters
    ----------
    name
        Job name.
    settings
        What to enumerate (site table, anions, A = A' / B = B').
    chunk_size
        Documents per bulk write.
    """

    name: str = "enumerate compositions"
    settings: EnumerationSettings = field(default_factory=EnumerationSettings)
    chunk_size: int = 5000

    @job
    def make(self, db_settings: dict | None = None) -> dict:
        """Write the compositions; the output is the small summary dict (counts, table hash), not the documents."""
        db = DPScreenSettings(**db_settings) if db_settings else DPScreenSettings()
        return write_compositions(self.settings, db, chunk_size=self.chunk_size)
