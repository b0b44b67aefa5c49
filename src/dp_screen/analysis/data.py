"""Store collections as pandas DataFrames, with the filtering and grouping done by the database server.

The per-composition phase table is one aggregation: the server groups a model's relaxations by composition (one row
per composition comes back, not one per relaxation), and the composition descriptors are then fetched with a
projection and joined. For 10^5-10^6 relaxations this moves a few hundred bytes per composition over the wire
instead of whole documents (see ``benchmarks/bench_analysis.py``).

Everything takes ``db``: a :class:`~dp_screen.settings.DPScreenSettings` (the embedded server is started if needed),
a pymongo ``Database``, or None (the default settings).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from dp_screen.campaign_store import DIGEST_FIELDS
from dp_screen.errors import DatabaseError, InputError
from dp_screen.schemas.relaxation import exclusion, summary_key
from dp_screen.settings import DPScreenSettings
from dp_screen.stores import COLLECTIONS, database_uri, redact
from dp_screen.structures.phases import phase_summary, recall

if TYPE_CHECKING:
    from pymongo.database import Database

UNTILTED = "a0a0a0"
#: the composition fields of the analysis tables: the id and the descriptors a digest carries
COMPOSITION_FIELDS = ("composition_id", *DIGEST_FIELDS)
SPECIES_COLUMNS = ("A_sp", "A2_sp", "B_sp", "B2_sp", "X_sp")
INTERNAL = (
    "phase_sets",
    "phase_digests",
    "composition_digests",
    "counters",
    "al_rounds",
    "al_labels",
)  # not listed among the documents
_clients: dict[str, Any] = {}


def connect(db: DPScreenSettings | Database | None = None) -> Database:
    """A pymongo Database for settings (clients are cached per URI), or ``db`` itself if it is one."""
    import pymongo
    from pymongo.database import Database

    if isinstance(db, Database):
        return db
    settings = db or DPScreenSettings()
    uri = database_uri(settings)
    if uri not in _clients:
        _clients[uri] = pymongo.MongoClient(uri, serverSelectionTimeoutMS=int(settings.db_timeout_s * 1000))
    return _clients[uri][settings.database]


def _collection(db, name: str):
    if name not in COLLECTIONS:
        raise InputError(f"unknown collection {name!r}; expected one of {', '.join(COLLECTIONS)}")
    return connect(db)[name]


def _flatten(doc: dict, prefix: str = "", out: dict | None = None, max_depth: int = 2) -> dict:
    """Nested dicts to dotted keys (``phase.space_group``), down to ``max_depth`` levels; lists are kept."""
    out = {} if out is None else out
    for k, v in doc.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and max_depth > 0 and v:
            _flatten(v, key + ".", out, max_depth - 1)
        else:
            out[key] = v
    return out


def _run(what: str, fn):
    from pymongo.errors import PyMongoError

    try:
        return fn()
    except PyMongoError as exc:
        raise DatabaseError(f"{what} failed: {str(exc).splitlines()[0]}") from None


def load_collection(
    collection: str,
    query: dict | None = None,
    projection: list[str] | dict | None = None,
    db: DPScreenSettings | Database | None = None,
    limit: int = 0,
    sort: list[tuple[str, int]] | None = None,
    flatten: bool = True,
) -> pd.DataFrame:
    """Documents of ``collection`` matching ``query`` (filtered by the server) as a DataFrame.

    ``projection``: field names (dotted for nested fields, e.g. ``phase.space_group``) or a MongoDB projection; ask
    only for what you need, whole relaxation documents carry structures. Nested fields become dotted columns.
    """
    coll = _collection(db, collection)
    proj: dict | None
    if projection is None:
        proj = {"_id": 0}
    elif isinstance(projection, dict):
        proj = {"_id": 0, **projection}
    else:
        proj = {"_id": 0, **{f: 1 for f in projection}}

    def fetch():
        cursor = coll.find(query or {}, proj, batch_size=10_000)
        if sort:
            cursor = cursor.sort(sort)
        if limit:
            cursor = cursor.limit(limit)
        return list(cursor)

    docs = _run(f"reading {collection!r}", fetch)
    if flatten:
        docs = [_flatten(d) for d in docs]
    columns = list(projection) if isinstance(projection, list) else None
    df = pd.DataFrame(docs)
    if columns and df.empty:
        df = pd.DataFrame(columns=columns)
    return df


def aggregate(collection: str, pipeline: list[dict], db: DPScreenSettings | Database | None = None) -> pd.DataFrame:
    """Run an aggregation pipeline on the server; the result as a DataFrame (``_id`` sub-fields flattened)."""
    coll = _collection(db, collection)
    rows = _run(f"aggregation on {collection!r}", lambda: list(coll.aggregate(pipeline, allowDiskUse=True)))
    return pd.DataFrame([_flatten(r) for r in rows])


def relaxation_sets(db: DPScreenSettings | Database | None = None) -> pd.DataFrame:
    """The (model, relaxation settings) pairs in ``relaxations``, most relaxations first."""
    df = aggregate(
        "relaxations",
        [
            {
                "$group": {
                    "_id": {"model_sha256": "$model_sha256", "settings_hash": "$settings_hash"},
                    "model_name": {"$first": "$model_name"},
                    "n": {"$sum": 1},
                    "n_converged": {"$sum": {"$cond": ["$converged", 1, 0]}},
                    "last": {"$max": "$created_at"},
                }
            },
        ],
        db,
    )
    if df.empty:
        return pd.DataFrame(columns=["model_sha256", "settings_hash", "model_name", "n", "n_converged", "last"])
    df = df.rename(columns={"_id.model_sha256": "model_sha256", "_id.settings_hash": "settings_hash"})
    return df.sort_values(["n", "last"], ascending=False).reset_index(drop=True)


def species_label(element: str, charge: int) -> str:
    """``Fe``, 3 -> ``Fe3+``; ``Cl``, -1 -> ``Cl-``."""
    sign = "+" if charge > 0 else "-"
    mag = abs(int(charge))
    return f"{element}{'' if mag == 1 else mag}{sign}"


def composition_table(
    db: DPScreenSettings | Database | None = None,
    query: dict | None = None,
    fields=COMPOSITION_FIELDS,
    ids: list[str] | None = None,
) -> pd.DataFrame:
    """Compositions with their descriptors (server-side ``query``, or the given ``ids``), with species labels
    ``A_sp`` ... ``X_sp``."""
    if ids is not None:
        df = fetch_by_key("compositions", "composition_id", ids, list(fields), db)
    else:
        df = load_collection("compositions", query, list(fields), db)
    return _with_species_labels(df)


def _with_species_labels(df: pd.DataFrame) -> pd.DataFrame:
    if not df.empty:
        for site, charge in (("A", "nA"), ("A2", "nA2"), ("B", "nB"), ("B2", "nB2"), ("X", "nX")):
            if site in df and charge in df:
                df[f"{site}_sp"] = [
                    None if e is None or q is None or q != q else species_label(e, -abs(q) if site == "X" else q)
                    for e, q in zip(df[site], df[charge], strict=True)
                ]
    return df


def set_match(model_sha256: str | None = None, settings_hash: str | None = None) -> dict:
    """The relaxation filter for a model (sha256 or a prefix of it) and a relaxation settings hash."""
    match: dict = {}
    if model_sha256:
        if not re.fullmatch(r"[0-9a-f]+", model_sha256):
            raise InputError(f"model {model_sha256!r} is not a sha256 (or a prefix of one): hexadecimal digits only")
        match["model_sha256"] = {"$regex": f"^{model_sha256}"}
    if settings_hash:
        match["settings_hash"] = settings_hash
    return match


def choose_set(counts: dict[tuple[str, str], int], model_sha256: str | None, settings_hash: str | None, db):
    """The (model, settings hash) with the most relaxations among ``counts`` (relaxations per pair, already
    filtered by :func:`set_match`); None when there are none; errors name what the store holds."""
    if model_sha256 and not any(m.startswith(model_sha256) for m, _ in counts):
        known = ", ".join(sorted({m[:12] for m in relaxation_sets(db)["model_sha256"]})) or "none"
        raise InputError(f"no relaxations with model {model_sha256!r}; models in the store: {known}")
    if settings_hash and not any(s == settings_hash for _, s in counts):
        raise InputError(f"no relaxations with settings hash {settings_hash!r} (model {model_sha256 or 'any'})")
    return max(counts, key=counts.get) if counts else None


def fetch_by_key(
    collection: str, key: str, values, fields, db: DPScreenSettings | Database | None = None
) -> pd.DataFrame:
    """Documents whose ``key`` is in ``values``. Few values: ``$in`` queries of 100; many: one projected scan of the
    collection filtered here (an ``$in`` of thousands of values is quadratic on SecantusDB: 5 s for 1,600)."""
    values = list(dict.fromkeys(values))
    fields = list(dict.fromkeys([key, *fields]))
    if len(values) > 500:
        df = load_collection(collection, None, fields, db)
        return df[df[key].isin(values)].reset_index(drop=True) if not df.empty else df
    parts = [
        load_collection(collection, {key: {"$in": values[i : i + 100]}}, fields, db) for i in range(0, len(values), 100)
    ]
    parts = [p for p in parts if not p.empty]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=fields)


def phase_table(
    db: DPScreenSettings | Database | None = None,
    model_sha256: str | None = None,
    settings_hash: str | None = None,
    query: dict | None = None,
    phase_error_mev: float | None = None,
    digest: PhaseDigest | None = None,
) -> pd.DataFrame:
    """One row per relaxed (composition, ordering): its lowest-energy phase, dE(untilted - lowest), descriptors.

    Read from the phase digests the relax jobs write (one document per chunk, see
    :mod:`dp_screen.campaign_store`; ``digest`` if already read by :func:`read_phase_digest`), else from the
    per-composition phase summaries (``compositions.phases.<model>_<settings>``, listed in ``phase_sets``): one
    pass over the chunks or the compositions, not over the relaxations. A store without them (or
    a ``query`` on the relaxations, e.g. ``{"composition_id": {"$regex": "O2-$"}}``) is grouped from the
    relaxations by one server-side aggregation instead, with the same result. The (model, settings) pair analysed is
    the one given (``model_sha256`` may be a prefix), else the one with the most relaxations (see
    :func:`choose_set`; the pair is in ``df.attrs``). Only ranked relaxations count (converged, not failed, still a
    perovskite: field ``excluded`` None), each under the phase it ended in (``phase_tilt``); how many were kept
    out, and why, is in ``n_excluded`` and ``excluded`` ({reason: n}). Columns: ``ordering``, ``e_lowest``
    (eV/atom), ``lowest_tilt`` (the phase of the lowest variant), ``lowest_space_group`` (its space group after
    relaxation), ``dE_untilted_mev_atom`` (NaN without a ranked untilted variant), the call with its error bar
    (:func:`dp_screen.structures.phases.phase_call`: ``call`` tilted / untilted / undetermined, ``dE_tilt_mev_atom``
    = E(untilted) - E(lowest tilted phase), ``phases_within_error``, ``phase_error_mev`` (sigma; NaN: unqualified),
    ``phase_error_source``), ``ground_state_tilted`` (True / False for a tilted / untilted call, None when
    undetermined), ``winning_space_group`` (the lowest variant's group for a tilted call, the untilted variant's for
    an untilted one, None when undetermined), ``n_variants``, ``n_ranked``, ``n_excluded``, ``excluded``,
    ``energies_mev_atom`` ({phase: E - E_lowest}, the lowest per phase), ``composition_ground_state`` (True on the
    row of the composition's lowest ordering; see :func:`ground_state_table`), ``energy_spread_mev_atom`` and
    ``force_spread_ev_a`` (the committee's largest spread over the ordering's ranked variants, NaN when no
    committee scored them: ``dp-screen relax --committee``; see :func:`uncertainty_filter`) and the composition
    descriptors with species labels. A composition whose variants are all excluded has a row with no energies.

    ``phase_error_mev``: a sigma (meV/atom) that replaces the one each summary was called with (the model's
    measured error, or its committee's spread: :mod:`dp_screen.mlip.uncertainty`); the calls are made again from
    the stored phase energies with it.
    """
    columns = [
        "composition_id",
        "ordering",
        "e_lowest",
        "lowest_tilt",
        "lowest_space_group",
        "dE_untilted_mev_atom",
        "call",
        "dE_tilt_mev_atom",
        "phases_within_error",
        "phase_error_mev",
        "phase_error_source",
        "ground_state_tilted",
        "winning_space_group",
        "n_variants",
        "n_ranked",
        "n_excluded",
        "excluded",
        "energies_mev_atom",
        "composition_ground_state",
        "energy_spread_mev_atom",
        "force_spread_ev_a",
    ]
    empty = pd.DataFrame(columns=columns + list(COMPOSITION_FIELDS[1:]) + list(SPECIES_COLUMNS))
    picked = None if query else _registered_set(db, model_sha256, settings_hash)
    if digest is None and picked is not None:
        digest = read_phase_digest(db, *picked)
    if digest is not None:
        summaries, comps, picked = digest.summaries, digest.compositions, (digest.model_sha256, digest.settings_hash)
    elif picked is not None:
        key = summary_key(*picked)
        docs = _run(
            "reading phase summaries",
            lambda: list(
                _collection(db, "compositions").find(
                    {f"phases.{key}": {"$exists": True}},
                    {"_id": 0, **{f: 1 for f in COMPOSITION_FIELDS}, f"phases.{key}": 1},
                    batch_size=10_000,
                )
            ),
        )
        summaries = {d["composition_id"]: d.pop("phases")[key] for d in docs}
        comps = _with_species_labels(pd.DataFrame(docs)) if docs else pd.DataFrame()
    else:
        summaries, picked = _summaries_from_relaxations(db, model_sha256, settings_hash, query)
        if picked is None:
            return empty
        comps = composition_table(db, ids=list(summaries))
    model_error = _phase_error(db, picked[0], phase_error_mev)
    rows = [
        _ordering_row(cid, ordering, o, model_error)
        for cid, summ in summaries.items()
        for ordering, o in summ["orderings"].items()
    ]
    if not rows:
        return empty
    df = pd.DataFrame(rows)
    lowest = df.dropna(subset=["e_lowest"]).groupby("composition_id")["e_lowest"].transform("min")
    df["composition_ground_state"] = False
    df.loc[lowest.index, "composition_ground_state"] = df.loc[lowest.index, "e_lowest"] == lowest
    df = df.merge(comps, on="composition_id", how="left") if not comps.empty else df
    df.attrs.update(model_sha256=picked[0], settings_hash=picked[1], phase_error=model_error.as_dict())
    return df.sort_values(["composition_id", "ordering"]).reset_index(drop=True)


def _nan(value) -> float:
    return np.nan if value is None else float(value)


def _phase_error(db, model_sha256: str, sigma_mev: float | None):
    """The sigma of the calls: the user's, else the model's measured one (its card or its fine-tuning errors)."""
    from dp_screen.mlip.uncertainty import model_phase_error, user_phase_error

    if sigma_mev is not None:
        return user_phase_error(sigma_mev)
    doc = _run("reading 'models'", lambda: _collection(db, "models").find_one({"sha256": model_sha256}, {"errors": 1}))
    return model_phase_error(model_sha256, None, (doc or {}).get("errors"))


def _ordering_row(cid: str, ordering: str, o: dict, model_error) -> dict:
    """A phase-table row from one ordering's summary (``structures.phases.phase_summary``), called again from its
    phase energies (:func:`dp_screen.structures.phases.recall`: with the sigma it was summarised with, unless
    ``model_error`` is the user's)."""
    de = o.get("dE_untilted_mev_atom")
    call = recall(o, model_error)
    tilted = call["ground_state_tilted"]
    row = {
        "composition_id": cid,
        "ordering": ordering,
        "n_variants": o.get("n_variants", o.get("n_ranked", 0)),
        "n_ranked": o.get("n_ranked", 0),
        "excluded": o.get("excluded") or {},
        "energy_spread_mev_atom": _nan(o.get("energy_spread_mev_atom")),
        "force_spread_ev_a": _nan(o.get("force_spread_ev_a")),
        "call": call["call"],
        "dE_tilt_mev_atom": _nan(call["dE_tilt_mev_atom"]),
        "phases_within_error": call["phases_within_error"],
        "phase_error_mev": _nan(call["phase_error_mev"]),
        "phase_error_source": call["phase_error_source"],
    }
    row["n_excluded"] = row["n_variants"] - row["n_ranked"]
    if not o.get("n_ranked"):
        return {
            **row,
            "e_lowest": np.nan,
            "lowest_tilt": None,
            "lowest_space_group": None,
            "dE_untilted_mev_atom": np.nan,
            "ground_state_tilted": None,
            "winning_space_group": None,
            "energies_mev_atom": {},
            "lowest_structure_id": None,
        }
    winning = {True: o["lowest_space_group"], False: o["untilted_space_group"], None: None}[tilted]
    return {
        **row,
        "e_lowest": o["e_lowest"],
        "lowest_tilt": o["lowest"],
        "lowest_space_group": o["lowest_space_group"],
        "dE_untilted_mev_atom": np.nan if de is None else de,
        "ground_state_tilted": tilted,
        "winning_space_group": winning,
        "energies_mev_atom": o["energies_mev_atom"],
        "lowest_structure_id": o["lowest_structure_id"],
    }


@dataclass
class PhaseDigest:
    """What the phase digests of one (model, settings) set hold, each composition from its latest digest."""

    model_sha256: str
    settings_hash: str
    summaries: dict[str, dict]  # composition id -> phase summary
    compositions: pd.DataFrame  # descriptors with species labels
    variants: pd.DataFrame  # one row per relaxation: composition_id and DIGEST_VARIANT_FIELDS columns


def read_phase_digest(db, model_sha256: str, settings_hash: str) -> PhaseDigest | None:
    """The phase digests of a registered set (None for a set begun before digests existed, which the analysis
    reads from the per-composition summaries instead)."""
    from dp_screen.campaign_store import DIGEST_FIELDS, DIGEST_VARIANT_FIELDS, digest_order, latest_rows, unpack

    key = summary_key(model_sha256, settings_hash)
    reg = _run("reading phase_sets", lambda: _collection(db, "phase_sets").find_one({"key": key}, {"digests": 1}))
    if not reg or not reg.get("digests"):
        return None
    docs = _run(
        "reading phase digests",
        lambda: list(_collection(db, "phase_digests").find({"key": key}, {"_id": 0}, batch_size=200)),
    )
    docs = [unpack(d) for d in sorted(docs, key=digest_order)]
    rows = latest_rows(docs)
    ids = [docs[i]["composition_ids"][j] for i, j in rows]
    summaries = {cid: docs[i]["summaries"][j] for cid, (i, j) in zip(ids, rows, strict=True)}
    comps = pd.DataFrame(
        {"composition_id": ids, **{f: [docs[i]["columns"][f][j] for i, j in rows] for f in DIGEST_FIELDS}}
    )
    keep = {(i, j) for i, j in rows}
    parts = []
    for i, d in enumerate(docs):
        v = pd.DataFrame(d["variants"])
        if v.empty:
            continue
        v = v[[(i, int(c)) in keep for c in v["c"]]]
        v.insert(0, "composition_id", [d["composition_ids"][int(c)] for c in v.pop("c")])
        parts.append(v)
    cols = ["composition_id", *DIGEST_VARIANT_FIELDS.values()]
    variants = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)
    return PhaseDigest(model_sha256, settings_hash, summaries, _with_species_labels(comps) if ids else comps, variants)


def _registered_set(db, model_sha256: str | None, settings_hash: str | None) -> tuple[str, str] | None:
    """The (model, settings) of the registered phase summaries (``phase_sets``) to analyse; None when none fits."""
    sets = _run("reading phase_sets", lambda: list(_collection(db, "phase_sets").find({}, {"_id": 0})))
    counts = {
        (d["model_sha256"], d["settings_hash"]): d.get("n_relaxations", 0)
        for d in sets
        if (not model_sha256 or d["model_sha256"].startswith(model_sha256))
        and (not settings_hash or d["settings_hash"] == settings_hash)
    }
    return max(counts, key=counts.get) if counts else None


def _summaries_from_relaxations(db, model_sha256, settings_hash, query):
    """Per-composition phase summaries grouped from the relaxations by the server (stores without summaries)."""
    match = {**(query or {}), **set_match(model_sha256, settings_hash)}
    grouped = aggregate(
        "relaxations",
        [
            {"$match": match},
            {
                "$group": {
                    "_id": {"c": "$composition_id", "m": "$model_sha256", "s": "$settings_hash"},
                    "n_variants": {"$sum": 1},
                    "variants": {
                        "$push": {
                            "o": "$ordering",
                            "t": "$start_tilt",
                            "p": "$phase_tilt",
                            "e": "$energy_per_atom",
                            "sg": "$final_space_group",
                            "sg0": "$phase.space_group",
                            "sid": "$structure_id",
                            "x": "$excluded",
                            "f": "$failed",
                            "ok": "$converged",
                            "u": "$energy_spread_mev_atom",
                            "uf": "$force_spread_ev_a",
                        }
                    },
                }
            },
        ],
        db,
    )
    counts = {} if grouped.empty else grouped.groupby(["_id.m", "_id.s"])["n_variants"].sum().to_dict()
    picked = choose_set(counts, model_sha256, settings_hash, db)
    if picked is None:
        return {}, None
    grouped = grouped[(grouped["_id.m"] == picked[0]) & (grouped["_id.s"] == picked[1])]
    model_error = _phase_error(db, picked[0], None)
    summaries = {}
    for cid, variants in zip(grouped["_id.c"], grouped["variants"], strict=True):
        summaries[cid] = phase_summary(
            [
                {
                    "ordering": v.get("o"),
                    "start_tilt": v["t"],
                    "phase_tilt": v.get("p"),
                    "energy_per_atom": v["e"],
                    "structure_id": v.get("sid"),
                    "final_space_group": v.get("sg") or v.get("sg0"),
                    # documents from before 0.3.0 have no ``excluded``: failed / unconverged ones are kept out all the same
                    "excluded": v.get("x") or exclusion(bool(v.get("f")), bool(v.get("ok")), None),
                    "energy_spread_mev_atom": v.get("u"),
                    "force_spread_ev_a": v.get("uf"),
                }
                for v in variants
            ],
            model_error,
        )
    return summaries, picked


def uncertainty_filter(
    phases: pd.DataFrame, max_force_spread: float | None = None, max_energy_spread: float | None = None
) -> pd.DataFrame:
    """The rows of a phase table whose committee spread is within the bounds (eV/A, meV/atom); rows above a bound,
    and rows no committee scored while a bound is set, are left out (``df.attrs["uncertainty_filter"]`` says how
    many of each)."""
    if max_force_spread is None and max_energy_spread is None:
        return phases
    keep = pd.Series(True, index=phases.index)
    unscored = pd.Series(False, index=phases.index)
    for col, bound in (("force_spread_ev_a", max_force_spread), ("energy_spread_mev_atom", max_energy_spread)):
        if bound is None:
            continue
        if bound <= 0:
            raise InputError(f"spread bound {bound} for {col} must be > 0")
        values = pd.to_numeric(phases.get(col, pd.Series(np.nan, index=phases.index)), errors="coerce")
        unscored |= values.isna()
        keep &= values.le(bound)
    out = phases[keep].copy()
    out.attrs.update(phases.attrs)
    out.attrs["uncertainty_filter"] = {
        "max_force_spread_ev_a": max_force_spread,
        "max_energy_spread_mev_atom": max_energy_spread,
        "above": int((~keep & ~unscored).sum()),
        "unscored": int(unscored.sum()),
        "kept": int(keep.sum()),
    }
    return out.reset_index(drop=True)


def active_learning_rounds(db: DPScreenSettings | Database | None = None) -> pd.DataFrame:
    """One row per finished active-learning round of every loop in the store (plus each loop's start): labels so far
    and the held-out metrics of the committee's mean against the oracle."""
    docs = _run(
        "reading al_rounds",
        lambda: list(
            _collection(db, "al_rounds").find(
                {"stage": "done"},
                {
                    "_id": 0,
                    "loop_id": 1,
                    "round": 1,
                    "selection": 1,
                    "n_train": 1,
                    "metrics": 1,
                    "metrics_start": 1,
                    "settings.selection": 1,
                    "settings.oracle": 1,
                },
            )
        ),
    )
    keys = (
        "energy_mae_mev_atom",
        "forces_mae_ev_a",
        "phase_de_mae_mev_atom",
        "lowest_phase_agreement",
        "force_spread_median_ev_a",
    )
    rows = []
    for d in sorted(docs, key=lambda d: (d["loop_id"], d["round"])):
        base = {
            "loop_id": d["loop_id"],
            "loop_selection": (d.get("settings") or {}).get("selection"),
            "oracle": (d.get("settings") or {}).get("oracle"),
        }
        if d["round"] == 1 and d.get("metrics_start"):
            rows.append(
                {
                    **base,
                    "round": 0,
                    "selection": "start",
                    "n_labels": 0,
                    **{k: d["metrics_start"].get(k) for k in keys},
                }
            )
        rows.append(
            {
                **base,
                "round": d["round"],
                "selection": d.get("selection"),
                "n_labels": d.get("n_train"),
                **{k: (d.get("metrics") or {}).get(k) for k in keys},
            }
        )
    return pd.DataFrame(rows)


def ground_state_table(phases: pd.DataFrame) -> pd.DataFrame:
    """Each composition's overall ground state across its orderings: the row of :func:`phase_table` with the lowest
    energy per atom (compositions with no ranked variant are left out)."""
    if phases.empty:
        return phases.copy()
    out = phases[phases["composition_ground_state"].astype(bool)].drop_duplicates("composition_id")
    out.attrs.update(phases.attrs)
    return out.reset_index(drop=True)


def model_accuracy(db: DPScreenSettings | Database | None, model_sha256: str) -> list[str]:
    """What is measured of a model's accuracy (its card, or the errors its ``models`` document records)."""
    from dp_screen.mlip.models import accuracy_summary

    doc = _run("reading 'models'", lambda: _collection(db, "models").find_one({"sha256": model_sha256}, {"errors": 1}))
    return accuracy_summary(model_sha256, (doc or {}).get("errors"))


def validation_table(
    db: DPScreenSettings | Database | None = None, method: str | None = None, model_sha256: str | None = None
) -> pd.DataFrame:
    """Validation documents (DFT next to MLIP) without the per-atom arrays, with the composition's sites joined."""
    query = set_match(model_sha256)
    if method:
        query["method"] = method
    fields = [
        "validation_id",
        "relaxation_id",
        "structure_id",
        "composition_id",
        "formula",
        "X",
        "start_tilt",
        "ordering",
        "phase_tilt",
        "space_group",
        "method",
        "n_atoms",
        "dft_energy_per_atom",
        "mlip_energy_per_atom",
        "force_mae",
        "force_max_dft",
        "stress_mae_gpa",
        "scf_converged",
        "model_sha256",
    ]
    df = load_collection("validations", query, fields, db)
    if df.empty:
        return df
    comps = composition_table(
        db,
        ids=df["composition_id"].unique().tolist(),
        fields=("composition_id", "A", "nA", "A2", "nA2", "B", "nB", "B2", "nB2", "nX"),
    )
    if not comps.empty:
        df = df.merge(comps.drop(columns=["X"], errors="ignore"), on="composition_id", how="left")
    return df


def describe_store(db: DPScreenSettings | Database | None = None) -> dict:
    """Document counts per collection and where the store is (password hidden)."""
    database = connect(db)
    kept = _run(
        "reading the document counters",
        lambda: {d["collection"]: d["n"] for d in database["counters"].find({"exact": True}, {"_id": 0})},
    )
    # counting is a pass over the collection on SecantusDB (5 s per 10^6): the write counters stand in when exact
    counts = _run(
        "counting documents",
        lambda: {
            c: kept[c] if c in kept else database[c].estimated_document_count()
            for c in COLLECTIONS
            if c not in INTERNAL
        },
    )
    client = database.client
    host = ", ".join(f"{h}:{p}" for h, p in client.nodes) if client.nodes else str(client.address or "")
    return {"database": database.name, "server": redact(host), "counts": counts}


def composition_space(
    db: DPScreenSettings | Database | None = None,
    field: str = "goldschmidt_t",
    width: float = 0.025,
    n_stored: int | None = None,
) -> pd.DataFrame:
    """Histogram of a composition descriptor per anion: one row per (X, bin) with the number of compositions and
    how many of them Bartel's tau and Goldschmidt's t call perovskites. Binned from the composition digests when
    they cover all ``n_stored`` compositions (counted when not given), else by the server."""
    if field not in COMPOSITION_FIELDS or field in ("composition_id", "formula"):
        raise InputError(f"cannot bin compositions by {field!r}; numeric fields: goldschmidt_t, tau, rA_mean, ...")
    df = _composition_space_from_digests(db, field, width, n_stored)
    if df is not None:
        return df
    df = aggregate(
        "compositions",
        [
            {"$match": {field: {"$ne": None}}},
            {
                "$group": {
                    "_id": {"X": "$X", "bin": {"$floor": {"$multiply": [f"${field}", 1.0 / width]}}},
                    "n": {"$sum": 1},
                    "n_tau_perovskite": {"$sum": {"$cond": ["$tau_perovskite", 1, 0]}},
                    "n_goldschmidt_ok": {"$sum": {"$cond": ["$goldschmidt_ok", 1, 0]}},
                }
            },
        ],
        db,
    )
    if df.empty:
        return pd.DataFrame(columns=["X", "bin_left", "bin_right", "n", "n_tau_perovskite", "n_goldschmidt_ok"])
    df = df.rename(columns={"_id.X": "X"})
    df["bin_left"] = df.pop("_id.bin") * width
    df["bin_right"] = df["bin_left"] + width
    cols = ["X", "bin_left", "bin_right", "n", "n_tau_perovskite", "n_goldschmidt_ok"]
    df.attrs.update(field=field, width=width)
    return df[cols].sort_values(["X", "bin_left"]).reset_index(drop=True)


def _composition_space_from_digests(db, field: str, width: float, n_stored: int | None = None) -> pd.DataFrame | None:
    """:func:`composition_space` from the composition digests; None unless they cover every stored composition
    (a store written before digests existed, or by other means, is binned by the server instead)."""
    from dp_screen.campaign_store import DIGEST_FIELDS, digest_order, latest_rows, unpack

    if field not in DIGEST_FIELDS:
        return None
    docs = _run(
        "reading composition digests", lambda: list(_collection(db, "composition_digests").find({}, {"_id": 0}))
    )
    if not docs:
        return None
    docs = [unpack(d) for d in sorted(docs, key=digest_order)]
    rows = latest_rows(docs)
    if n_stored is None:
        n_stored = _run("counting compositions", lambda: _collection(db, "compositions").estimated_document_count())
    if len(rows) != n_stored:
        return None
    df = pd.DataFrame(
        {c: [docs[i]["columns"][c][j] for i, j in rows] for c in ("X", field, "tau_perovskite", "goldschmidt_ok")}
    )
    df = df.dropna(subset=[field])
    df["bin"] = np.floor(df[field].astype(float) * (1.0 / width))
    out = (
        df.groupby(["X", "bin"])
        .agg(
            n=(field, "size"),
            n_tau_perovskite=("tau_perovskite", lambda x: int(x.fillna(False).astype(bool).sum())),
            n_goldschmidt_ok=("goldschmidt_ok", lambda x: int(x.fillna(False).astype(bool).sum())),
        )
        .reset_index()
    )
    out["bin_left"] = out.pop("bin") * width
    out["bin_right"] = out["bin_left"] + width
    cols = ["X", "bin_left", "bin_right", "n", "n_tau_perovskite", "n_goldschmidt_ok"]
    out = out[cols].sort_values(["X", "bin_left"]).reset_index(drop=True)
    out.attrs.update(field=field, width=width)
    return out
