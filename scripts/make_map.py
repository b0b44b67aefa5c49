"""Make (or extend) a shipped phase map: every composition of a family of the default space, in the default tilt
systems, built (bond valence), relaxed with the packaged model (symmetry held) and ranked with the error-barred
calls of ``dp_screen.api.rank``; one row per composition and ordering, appended as each chunk finishes.

Resumable: compositions already in the output are skipped, so the same command continues an interrupted run. The
compositions are processed in a seeded random order, so a map that is not finished yet is a random sample of its
family (the ``n_family`` column says how many it has in all).

    python scripts/make_map.py cs2bbx6 [--workers 2] [--chunk 8] [--limit N] [--hours H]

Families: ``cs2bbx6`` (A = A' = Cs: 3,359 compositions of the default space); ``sample1000`` (1,000 compositions
of the whole default space, stratified by anion, A-site type and tau band, seeded: space-wide trends).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
MAPS = ROOT / "src" / "dp_screen" / "data" / "maps"
FAMILIES = {"cs2bbx6": "A == 'Cs' and A2 == 'Cs'", "sample1000": None}  # None: a stratified sample (below)
SAMPLE_SIZE = 1000
DESCRIPTORS = [
    "nB",
    "nB2",
    "goldschmidt_t",
    "tau",
    "tau_perovskite",
    "octahedral_factor",
    "dqB",
    "drB",
    "expected_ordering",
]


def family(name: str, seed: int = 0):
    """The family's compositions (enumeration rows of the default space) in the map's seeded random order."""
    from dp_screen.jobs.enumerate import EnumerationSettings, enumerate_table

    _, df = enumerate_table(EnumerationSettings())
    rows = df.query(FAMILIES[name]) if FAMILIES[name] else stratified_sample(df, SAMPLE_SIZE, seed)
    return rows.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def stratified_sample(df, n: int, seed: int = 0):
    """``n`` compositions of the whole space, stratified by anion, A-site type (the pair of A charges) and tau band
    (perovskite by tau, not, undefined): each stratum in proportion to its size, at least one from each."""
    import numpy as np
    import pandas as pd

    a_type = df["nA"].astype(int).astype(str) + "+" + df["nA2"].astype(int).astype(str)
    tau_band = np.where(df["tau"].isna(), "undefined", np.where(df["tau_perovskite"], "perovskite", "not"))
    strata = df.assign(a_type=a_type, tau_band=tau_band).groupby(["X", "a_type", "tau_band"])
    picked = pd.concat([g.sample(max(1, round(n * len(g) / len(df))), random_state=seed) for _, g in strata])
    return picked.sample(n=min(n, len(picked)), random_state=seed) if len(picked) > n else picked


def map_rows(rows: list[dict], n_family: int) -> list[dict]:
    """Build, relax and rank the compositions of ``rows`` (one process); the map's rows."""
    import pandas as pd

    import dp_screen
    from dp_screen.api import rank, relax
    from dp_screen.cell import PerovskiteCell
    from dp_screen.mlip.relax import RelaxSettings
    from dp_screen.schemas.structure import settings_hash
    from dp_screen.structures.bond_valence import DEFAULT_BV_SET
    from dp_screen.structures.perovskite import SiteSpeciesSet, build_bvm_structures
    from dp_screen.structures.tilts import DEFAULT_TILTS

    species = [SiteSpeciesSet.from_row(r) for r in rows]
    build = {"method": "bvm", "bv_set": DEFAULT_BV_SET, "fixed_midpoint": False, "move_a": False}
    cells = []
    not_built: dict[str, list[str]] = {}
    for ordering in sorted({r["expected_ordering"] for r in rows}):
        mine = [(s, r) for s, r in zip(species, rows, strict=True) if r["expected_ordering"] == ordering]
        for tilt in DEFAULT_TILTS[ordering]:
            built = build_bvm_structures([s for s, _ in mine], ordering, tilt, bv_set=DEFAULT_BV_SET)
            for b, (_, r) in zip(built, mine, strict=True):
                if isinstance(b, Exception):
                    not_built.setdefault(r["composition_id"], []).append(f"{tilt}: {b}")
                else:
                    cells.append(PerovskiteCell.from_built(b, build))
    settings = RelaxSettings()
    results = relax(cells, model="default", device="cpu", settings=settings, progress=False) if cells else []
    table = rank(results)
    # a composition none of whose cells could be built is in the map too: undetermined, with the builder's reasons
    missing = [r for r in rows if r["composition_id"] not in set(table["composition_id"])]
    if missing:
        from dp_screen.mlip.models import default_model_path, file_sha256
        from dp_screen.mlip.uncertainty import model_phase_error

        sha = file_sha256(default_model_path())
        error = model_phase_error(sha, default_model_path())
        empty = {
            "call": "undetermined",
            "ground_state": None,
            "lowest": None,
            "dE_tilt_mev_atom": None,
            "dE_untilted_mev_atom": None,
            "phase_error_mev": error.sigma_mev,
            "phase_error_source": error.source,
            "phases_within_error": "",
            "n_variants": 0,
            "n_ranked": 0,
            "energies_mev_atom": {},
            "excluded": {},
            "model_sha256": sha,
            "ground_state_cell": None,
        }
        extra = [
            {
                "composition_id": r["composition_id"],
                "formula": r["formula"],
                "ordering": r["expected_ordering"],
                **empty,
            }
            for r in missing
        ]
        table = pd.concat([table, pd.DataFrame(extra)], ignore_index=True) if len(table) else pd.DataFrame(extra)
    by_comp: dict[str, list] = {}
    for r in results:
        by_comp.setdefault(r.start.composition_id, []).append(r)
    desc = {r["composition_id"]: r for r in rows}
    relax_hash = settings_hash({**settings.settings_dict(), "dtype": "float64"})
    out = []
    for row in table.drop(columns=["ground_state_cell"]).to_dict("records"):
        cid = row["composition_id"]
        variants = [
            {
                "tilt": r.start.tilt,
                "energy_per_atom": r.energy_per_atom,
                "phase": r.phase.phase if r.phase else None,
                "space_group": r.phase.space_group if r.phase else None,
                "converged": r.converged,
                "failed": r.failed,
                "perovskite_ok": None if r.gate is None else r.gate.ok,
                "excluded": r.excluded,
            }
            for r in by_comp.get(cid, [])
            if r.start.ordering == row["ordering"]
        ]
        d = desc[cid]
        out.append(
            {
                **{k: row[k] for k in ("composition_id", "formula", "ordering", "call", "ground_state", "lowest")},
                "B": d["B"],
                "B2": d["B2"],
                "X": d["X"],
                **{k: d.get(k) for k in DESCRIPTORS},
                "hexagonal_candidate": bool(d["goldschmidt_t"] >= 1.05),
                "dE_tilt_mev_atom": row["dE_tilt_mev_atom"],
                "dE_untilted_mev_atom": row["dE_untilted_mev_atom"],
                "phase_error_mev": row["phase_error_mev"],
                "phase_error_source": row["phase_error_source"],
                "phases_within_error": json.dumps(row["phases_within_error"]),
                "n_variants": row["n_variants"],
                "n_ranked": row["n_ranked"],
                "energies_mev_atom": json.dumps(row["energies_mev_atom"]),
                "excluded": json.dumps(row["excluded"]),
                "variants": json.dumps(variants),
                "not_built": json.dumps(not_built.get(cid, [])),
                "model_sha256": row["model_sha256"],
                "build_settings_hash": settings_hash(build),
                "relax_settings_hash": relax_hash,
                "dp_screen_version": dp_screen.__version__,
                "n_family": n_family,
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(FAMILIES))
    parser.add_argument("--workers", type=_positive, default=2)
    parser.add_argument("--chunk", type=_positive, default=8, help="compositions per job")
    parser.add_argument("--limit", type=int, default=None, help="stop after this many compositions in the map")
    parser.add_argument("--hours", type=float, default=None, help="stop submitting new chunks after this long")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="default: src/dp_screen/data/maps/NAME.csv")
    args = parser.parse_args()
    import multiprocessing

    import pandas as pd

    out = args.out or MAPS / f"{args.name}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    columns = None
    if out.exists():
        existing = pd.read_csv(out, dtype=str, keep_default_na=False)
        if "not_built" not in existing:  # a map made before the column existed: every row was built
            existing.insert(existing.columns.get_loc("model_sha256"), "not_built", "[]")
            existing.to_csv(out, index=False)
        columns = list(existing.columns)
    done = set(pd.read_csv(out, usecols=["composition_id"])["composition_id"]) if out.exists() else set()
    rows = family(args.name, args.seed)
    target = len(rows) if args.limit is None else min(len(rows), args.limit)
    todo = [r for r in rows.to_dict("records") if r["composition_id"] not in done][: max(0, target - len(done))]
    chunks = [todo[i : i + args.chunk] for i in range(0, len(todo), args.chunk)]
    print(f"{args.name}: {len(rows)} compositions, {len(done)} in {out.name}, {len(todo)} to do", flush=True)
    t0 = time.perf_counter()
    deadline = None if args.hours is None else t0 + 3600 * args.hours
    context = multiprocessing.get_context("forkserver")
    signal.signal(signal.SIGTERM, _interrupted)  # a kill stops the workers too (they are the forkserver's children)
    try:
        _run(args, chunks, rows, out, columns, done, t0, deadline, context)
    except KeyboardInterrupt:
        print("interrupted: what finished is in the map; the same command resumes", file=sys.stderr)
        sys.exit(130)


def _positive(text: str) -> int:
    """An argparse type: a whole number >= 1, or an error naming the value."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return int(text)


def _interrupted(signum, frame) -> None:
    raise KeyboardInterrupt


def _run(args, chunks, rows, out, columns, done, t0, deadline, context) -> None:  # noqa: PLR0913
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(args.workers, mp_context=context) as pool:
        try:
            n_done = _collect(pool, args, chunks, rows, out, columns, done, t0, deadline)
        except KeyboardInterrupt:  # stop the workers now, not after their chunks (the pool's exit would wait)
            for child in multiprocessing.active_children():
                child.terminate()
            raise
    print(f"wall {time.perf_counter() - t0:.0f} s for {n_done} compositions", file=sys.stderr)


def _collect(pool, args, chunks, rows, out, columns, done, t0, deadline) -> int:  # noqa: PLR0913
    """Submit the chunks (two per worker in flight) and append each finished one to the map; return how many
    compositions were added."""
    from concurrent.futures import FIRST_COMPLETED, wait

    import pandas as pd

    pending = set()
    n_done = 0
    while chunks or pending:
        while chunks and len(pending) < 2 * args.workers and (deadline is None or time.perf_counter() < deadline):
            pending.add(pool.submit(map_rows, chunks.pop(0), len(rows)))
        if not pending:
            break
        finished, pending = wait(pending, return_when=FIRST_COMPLETED)
        for f in finished:
            new = pd.DataFrame(f.result())
            if new.empty:
                continue
            new = new if columns is None else new[columns]
            new.to_csv(out, mode="a", header=not out.exists(), index=False)
            columns = list(new.columns)
            n_done += new["composition_id"].nunique()
        rate = n_done / (time.perf_counter() - t0)
        print(f"{len(done) + n_done} of {len(rows)} compositions ({rate * 3600:.0f} per hour)", flush=True)
    return n_done


if __name__ == "__main__":
    main()
