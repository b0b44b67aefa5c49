"""The analysis step as a job: write the HTML report of the store (``dp_screen.analysis.report``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from jobflow import Maker, job

from dp_screen.settings import DPScreenSettings


@dataclass
class ReportMaker(Maker):
    """Write the report (figures, tables, index.html) of the store's compositions, relaxations and validations.

    Parameters
    ----------
    name
        Job name.
    out_dir
        Report folder; a relative path is taken inside the project folder (``DPScreenSettings.home``), so the
        report lands in the same place wherever the worker runs.
    heatmaps
        (A, A', X) triples for dE heatmaps; None: the three with the most relaxed compositions.
    phase_error_mev
        sigma (meV/atom) of the phase calls instead of the model's measured error (None: the model's; see
        :mod:`dp_screen.mlip.uncertainty`).
    """

    name: str = "report"
    out_dir: str = "report"
    heatmaps: list[tuple[str, str, str]] | None = None
    phase_error_mev: float | None = None

    @job
    def make(self, model_sha256: str | None = None, db_settings: dict | None = None) -> dict:
        """Write the report for ``model_sha256`` (or prefix; None: the model with the most relaxations)."""
        from dp_screen.analysis.report import write_report

        db = DPScreenSettings(**db_settings) if db_settings else DPScreenSettings()
        out = Path(self.out_dir)
        if not out.is_absolute():
            out = db.home.resolve() / out
        rep = write_report(
            out, db, model_sha256=model_sha256, heatmaps=self.heatmaps, phase_error_mev=self.phase_error_mev
        )
        return {
            "html": str(rep.html),
            "figures": sorted(rep.figures),
            "missing": rep.missing,
            "tilted_fraction": rep.summary.get("tilted_fraction"),
        }
