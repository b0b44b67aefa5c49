"""Pieces shared by every stored document."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, Field

from dp_screen import __version__


def utcnow() -> datetime:
    """Timezone-aware current time (UTC)."""
    return datetime.now(UTC)


class Provenance(BaseModel):
    """Where a result came from: code version, inputs' hashes and the settings used."""

    code: str = Field("dp_screen", description="Program that produced the document")
    code_version: str = Field(__version__, description="dp_screen version")
    site_table: str | None = Field(None, description="Name of the site table used")
    site_table_sha256: str | None = Field(None, description="sha256 of the site table's canonical CSV")
    model_sha256: str | None = Field(None, description="sha256 of the MLIP model file, where one was used")
    bv_table_sha256: str | None = Field(None, description="sha256 of the bond-valence parameter table, where used")
    settings: dict = Field(default_factory=dict, description="Settings of the step that produced the document")
