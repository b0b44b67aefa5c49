"""dp_screen settings: one object that says where the database is and where local files go.

Values come from (highest first) explicit arguments / CLI options, environment variables ``DP_SCREEN_*``, then the
defaults below. With no ``db_uri`` dp_screen uses an embedded SecantusDB server that it starts itself on loopback,
keeping its data in ``<home>/db``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class DPScreenSettings(BaseSettings):
    """Where dp_screen keeps its data. Environment variables: DP_SCREEN_DB_URI, DP_SCREEN_HOME, ..."""

    model_config = SettingsConfigDict(env_prefix="DP_SCREEN_", extra="forbid")

    db_uri: str | None = Field(
        None, description="MongoDB URI (clusters). None: use the embedded SecantusDB server under `home`."
    )
    database: str = Field("dp_screen", description="Database name")
    home: Path = Field(Path(".dp_screen"), description="Project folder: embedded database, models, reports")
    db_port: int | None = Field(None, description="Port of the embedded server (None: a free port, remembered)")
    db_timeout_s: float = Field(5.0, description="Seconds to wait for the database to answer before giving up")
    db_idle_stop_s: float = Field(
        1800.0,
        description="An embedded server started implicitly stops itself after this many seconds without "
        "clients (0: never; `dp-screen db start` starts one that runs until `dp-screen db stop`)",
    )

    @property
    def db_dir(self) -> Path:
        """Folder of the embedded database server (data, state file, log)."""
        return self.home.resolve() / "db"
