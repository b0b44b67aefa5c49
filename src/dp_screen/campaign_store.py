"""The one owner of the campaign's collections: their indexes and every query and write the jobs and the CLI need.

Everything goes through public pymongo APIs on the database that :mod:`dp_screen.stores` locates (the configured
MongoDB URI, or the embedded server). The rule that keeps a campaign of 10^6 structures as cheap per chunk as one of
10^4: **a chunk job touches only its own documents**, by indexed key or indexed field (``$in`` lists are sent in
batches of ``IN_BATCH``, which keeps them flat in cost on SecantusDB and MongoDB alike), and never counts or scans a
collection. Whole-collection passes (counts, the phase table of a report) belong to the analysis, a few per report.

**Digests** keep the analysis of a large store cheap as well. On SecantusDB reading a document costs ~0.1 ms
whatever its size, so one document per composition (2 x 10^5 at 10^6 relaxations) would make a report's phase
table a minute of reading. Each relax chunk therefore also writes one ``phase_digests`` document for its
compositions (their phase summaries, descriptors and the convergence of every variant, in columns), and each
batch of written compositions one ``composition_digests`` document (their descriptors). A digest's content is
one compressed JSON value (:func:`unpack` reads it): SecantusDB reads nested values at ~4 MB/s but a binary
value at memory speed. A composition that is in
several digests is read from the one with its highest **phase version**, then the latest (``order``), so a chunk
re-run or relaxed again in another chunking replaces what it had. Both numbers come from the server, never from a
worker's clock: ``order`` is an atomic counter (:meth:`CampaignStore.next_order`), and a composition's phase version
(``phase_versions.<key>`` in its document) is incremented after every write of its relaxations.

**Summaries that survive anything.** A relax job recomputes the phase summary of every composition it was given
(not only those it relaxed), from the relaxations stored at that moment, so a job killed between its last
relaxation write and its summaries leaves nothing stale once the same command runs again. A summary is written only
if the composition's phase version is still the one read before its relaxations were (compare-and-set); when
another job wrote relaxations of the same composition meanwhile, the summary is recomputed, so two concurrent jobs
over overlapping compositions cannot lose an update (:meth:`CampaignStore.write_phase_summaries`).

A database that goes away mid-run ends the run with one :class:`~dp_screen.errors.DatabaseError` naming the server
and what was being done; writes happen in small batches as results finish, so at most the batch in flight is lost.
"""

from __future__ import annotations

import functools
from datetime import UTC
from typing import TYPE_CHECKING, Any

from dp_screen.errors import DatabaseError
from dp_screen.settings import DPScreenSettings
from dp_screen.stores import COLLECTIONS, INDEXES, database_uri, redact, upsert_many

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

IN_BATCH = 256  # ids per $in query
DIGEST_SIZE = 20_000  # compositions per composition digest
PHASE_DIGEST_SIZE = 1000  # compositions per phase digest (~1.5 MB)
TABLE_PART_SIZE = 20_000  # rows per part of a stored campaign table (~1 MB packed)
#: the composition descriptors a digest carries (what the analysis joins to the phase table and bins by)
DIGEST_FIELDS = (
    "formula",
    "A",
    "nA",
    "A2",
    "nA2",
    "B",
    "nB",
    "B2",
    "nB2",
    "X",
    "nX",
    "rA_mean",
    "rB_mean",
    "goldschmidt_t",
    "goldschmidt_ok",
    "tau",
    "tau_perovskite",
    "octahedral_factor",
    "expected_ordering",
)
#: fields of a composition document written by later steps (relax jobs, campaigns), kept when it is enumerated again
DERIVED_COMPOSITION_FIELDS = ("phases", "phase_versions", "campaigns")
#: per-variant convergence columns of a phase digest: relaxation field -> column name
DIGEST_VARIANT_FIELDS = {
    "start_tilt": "t",
    "n_steps": "k",
    "converged": "ok",
    "failed": "f",
    "reason": "r",
    "phase.stayed_in_start_tilt": "st",
    "wall_time_s": "w",
    "energy_spread_mev_atom": "u",
    "force_spread_ev_a": "uf",
}
_indexed: set[tuple[str, str]] = set()  # (uri, database) whose indexes this process has ensured
_clients: dict[str, Any] = {}


def _guard(what: str):
    """Turn a driver error inside a method into one DatabaseError line naming the server and the operation."""

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(self, *args, **kwargs):
            from pymongo.errors import PyMongoError

            try:
                return fn(self, *args, **kwargs)
            except PyMongoError as exc:
                reason = str(exc).split(",")[0].split(" (configured")[0].splitlines()[0]
                raise DatabaseError(
                    f"the database at {redact(self.uri)} failed while {what}: {reason}; what finished is stored: "
                    f"run the same command again to resume"
                ) from None

        return wrapper

    return deco


def _get(doc: dict, dotted: str):
    for part in dotted.split("."):
        doc = doc.get(part) if isinstance(doc, dict) else None
    return doc


def _digest_id(prefix: str, ids: list[str]) -> str:
    import hashlib

    return f"{prefix}:{hashlib.sha256(chr(10).join(sorted(ids)).encode()).hexdigest()[:20]}"


def _columns(rows: list[dict], fields) -> dict[str, list]:
    return {f: [_get(r, f) for r in rows] for f in fields}


def _packed(payload: dict) -> dict:
    """A digest's content as one compressed JSON value: SecantusDB reads ~4 MB/s of nested BSON values but a
    binary value at memory speed (a 10^6-relaxation store's digests: ~4 MB packed instead of ~140 MB nested)."""
    import json
    import zlib

    from bson import Binary

    def plain(v):
        return v.item() if hasattr(v, "item") else str(v)

    return {"encoding": "json+zlib", "payload": Binary(zlib.compress(json.dumps(payload, default=plain).encode(), 1))}


def unpack(doc: dict) -> dict:
    """The content of a digest document (:func:`_packed`), merged with its metadata."""
    import json
    import zlib

    if doc.get("encoding") != "json+zlib":
        raise DatabaseError(f"digest {doc.get('digest_id')!r} has encoding {doc.get('encoding')!r}; allowed: json+zlib")
    return {**{k: v for k, v in doc.items() if k != "payload"}, **json.loads(zlib.decompress(doc["payload"]))}


def digest_order(doc: dict) -> tuple:
    """Sort key of digests, oldest first: the server's counter (``order``); digests written before it existed
    come first, by their own stamp."""
    if doc.get("order") is not None:
        return (1, doc["order"], 0)
    return (0, doc.get("written_at"), doc.get("seq", 0))


def latest_rows(digests: list[dict], ids_field: str = "composition_ids") -> list[tuple[int, int]]:
    """(digest index, row) of each composition's current appearance in ``digests`` (sorted by
    :func:`digest_order`): its highest phase version (``versions``, where the digest has them), then the latest."""
    where: dict[str, tuple[int, int]] = {}
    best: dict[str, int] = {}
    for i, d in enumerate(digests):
        versions = d.get("versions") or [-1] * len(d[ids_field])
        for j, cid in enumerate(d[ids_field]):
            if versions[j] >= best.get(cid, -1):
                where[cid], best[cid] = (i, j), versions[j]
    return sorted(where.values())


def _batches(values: list, size: int = IN_BATCH) -> Iterator[list]:
    for i in range(0, len(values), size):
        yield values[i : i + size]


class CampaignStore:
    """The collections of one dp_screen database (see :data:`dp_screen.stores.COLLECTIONS`)."""

    def __init__(self, settings: DPScreenSettings | None = None, uri: str | None = None) -> None:
        import pymongo

        self.settings = settings or DPScreenSettings()
        self.uri = uri or database_uri(self.settings)
        if self.uri not in _clients:
            timeout = int(self.settings.db_timeout_s * 1000)
            _clients[self.uri] = pymongo.MongoClient(
                self.uri, serverSelectionTimeoutMS=timeout, connectTimeoutMS=timeout
            )
        self.db = _clients[self.uri][self.settings.database]
        self.ensure_indexes()

    @classmethod
    def from_dict(cls, db_settings: dict | None) -> CampaignStore:
        """From the settings dict that jobs receive."""
        return cls(DPScreenSettings(**db_settings) if db_settings else DPScreenSettings())

    def __getitem__(self, name: str):
        if name not in COLLECTIONS:
            raise DatabaseError(f"unknown collection {name!r}; allowed: {', '.join(COLLECTIONS)}")
        return self.db[name]

    @_guard("creating indexes")
    def ensure_indexes(self) -> None:
        """The unique key index and the secondary indexes of every collection, once per process and database."""
        tag = (self.uri, self.settings.database)
        if tag in _indexed:
            return
        for name, key in COLLECTIONS.items():
            self.db[name].create_index(key, unique=True)
            for fld in INDEXES.get(name, []):
                self.db[name].create_index(fld)
        _indexed.add(tag)

    # ------------------------------------------------------------------------------------------------ generic
    def _by_keys(
        self, name: str, field: str, values: Iterable, projection: dict, extra: dict | None = None
    ) -> list[dict]:
        """Documents whose indexed ``field`` is in ``values``, keeping those whose fields equal ``extra``.

        The server is asked by ``field`` alone and ``extra`` is applied here: a server's planner could otherwise
        serve the query from an index on an ``extra`` field that matches most of the collection (every relaxation of
        a campaign has the same model hash), which would make a chunk's cost grow with the collection."""
        values = list(dict.fromkeys(values))
        extra = extra or {}
        proj = {"_id": 0, **projection, **({k.split(".")[0]: 1 for k in extra} if projection else {})}
        out: list[dict] = []
        for part in _batches(values):
            out += [
                d
                for d in self[name].find({field: {"$in": part}}, proj)
                if all(_get(d, k) == v for k, v in extra.items())
            ]
        return out

    def _find(
        self, name: str, query: dict, projection: dict | None = None, sort: str | None = None, limit: int | None = None
    ) -> list[dict]:
        """Documents matching ``query``; a query on ``{field: {"$in": [...]}}`` alone is batched."""
        proj = {"_id": 0, **(projection or {})}
        if len(query) == 1:
            ((field, cond),) = query.items()
            if isinstance(cond, dict) and set(cond) == {"$in"} and len(cond["$in"]) > IN_BATCH and not limit:
                docs = self._by_keys(name, field, cond["$in"], projection or {})
                return sorted(docs, key=lambda d: d.get(sort)) if sort else docs
        cursor = self[name].find(query, proj)
        if sort:
            cursor = cursor.sort(sort, 1)
        if limit:
            cursor = cursor.limit(limit)
        return list(cursor)

    def _upsert(self, name: str, docs: list[dict], keep: tuple[str, ...] = ()) -> dict:
        """One document per key, always: new keys inserted in bulk, existing ones replaced (keeping ``keep``)."""
        result = upsert_many(self[name], COLLECTIONS[name], docs, IN_BATCH, keep)
        self.count_inserted(name, result["inserted"])
        return result

    def count_inserted(self, name: str, n: int) -> None:
        """Add ``n`` inserted documents to ``name``'s counter. A counter begun on a collection that held only
        those documents is exact (``exact``) as long as every insert goes through here (nothing here deletes)."""
        if n <= 0:
            return
        doc = self["counters"].find_one_and_update(
            {"collection": name}, {"$inc": {"n": int(n)}}, upsert=True, return_document=True
        )
        if "exact" not in doc:  # just created: exact if the collection held nothing else
            self["counters"].update_one(
                {"collection": name},
                {"$set": {"exact": doc["n"] == int(n) and self[name].estimated_document_count() == int(n)}},
            )

    @_guard("reading the document counters")
    def counters(self) -> dict[str, int]:
        """The exact counters (collection -> documents) kept by :meth:`count_inserted`."""
        return {d["collection"]: d["n"] for d in self["counters"].find({"exact": True}, {"_id": 0})}

    # ------------------------------------------------------------------------------------------ compositions
    @_guard("reading the stored compositions")
    def composition_table_hashes(self) -> dict[str, str | None]:
        """composition id -> site table hash of every stored composition (enumeration: a whole-collection pass)."""
        return {
            d["composition_id"]: d.get("provenance", {}).get("site_table_sha256")
            for d in self["compositions"].find({}, {"composition_id": 1, "provenance.site_table_sha256": 1, "_id": 0})
        }

    @_guard("reading compositions")
    def stored_compositions(self, ids: list[str], site_table_sha256: str) -> set[str]:
        """Which of ``ids`` are stored from this site table."""
        return {
            d["composition_id"]
            for d in self._by_keys(
                "compositions",
                "composition_id",
                ids,
                {"composition_id": 1},
                {"provenance.site_table_sha256": site_table_sha256},
            )
        }

    @_guard("writing compositions")
    def write_compositions(self, docs: list[dict]) -> dict:
        """Upsert compositions and write their digest (see the module docstring). A composition enumerated again
        (from another site table, say) keeps what later steps derived from it: :data:`DERIVED_COMPOSITION_FIELDS`."""
        result = self._upsert("compositions", docs, DERIVED_COMPOSITION_FIELDS)
        self.write_composition_digests(docs)
        return result

    def _stamp(self) -> dict:
        """When a digest is written: the server's order (:meth:`next_order`) and, for people, the time."""
        from datetime import datetime

        return {"order": self.next_order(), "written_at": datetime.now(UTC)}

    @_guard("numbering a digest")
    def next_order(self) -> int:
        """The next number of the server's digest counter (one atomic increment: no two writers get the same)."""
        doc = self["counters"].find_one_and_update(
            {"collection": "_digest_order"}, {"$inc": {"n": 1}}, upsert=True, return_document=True
        )
        return int(doc["n"])

    @_guard("writing composition digests")
    def write_composition_digests(self, docs: list[dict]) -> None:
        docs = [d for d in docs if d.get("composition_id")]
        for part in _batches(docs, DIGEST_SIZE):
            ids = [d["composition_id"] for d in part]
            digest = {
                "digest_id": _digest_id("compositions", ids),
                "n_compositions": len(ids),
                **self._stamp(),
                **_packed({"composition_ids": ids, "columns": _columns(part, DIGEST_FIELDS)}),
            }
            self["composition_digests"].replace_one({"digest_id": digest["digest_id"]}, digest, upsert=True)

    @_guard("reading composition digests")
    def composition_digests(self) -> list[dict]:
        """Every composition digest, oldest first (the analysis: a few documents per 10^5 compositions)."""
        docs = sorted(self["composition_digests"].find({}, {"_id": 0}), key=digest_order)
        return [unpack(d) for d in docs]

    @_guard("writing the phase digest")
    def write_phase_digest(
        self,
        key: str,
        summaries: dict[str, dict],
        compositions: list[dict],
        variants: list[dict],
        versions: dict[str, int] | None = None,
    ) -> None:
        """One digest of a relax chunk: the phase summaries of its compositions (``summaries``, by id), their
        descriptors (``compositions``: documents with :data:`DIGEST_FIELDS`), the convergence columns of every
        variant (``variants``: relaxation documents with :data:`DIGEST_VARIANT_FIELDS` and ``composition_id``) and
        the phase version each summary was computed at (``versions``)."""
        comps = {c["composition_id"]: c for c in compositions}
        by_comp: dict[str, list[dict]] = {}
        for v in variants:
            by_comp.setdefault(v.get("composition_id"), []).append(v)
        for ids in _batches(sorted(summaries), PHASE_DIGEST_SIZE):  # (a document stays far below 16 MB)
            self._write_phase_digest(
                key,
                ids,
                summaries,
                comps,
                [v for c in ids for v in by_comp.get(c, [])],
                [(versions or {}).get(c, 0) for c in ids],
            )

    def _write_phase_digest(self, key, ids, summaries, comps, variants, versions) -> None:
        pos = {cid: i for i, cid in enumerate(ids)}
        digest = {
            "digest_id": _digest_id(key, ids),
            "key": key,
            **self._stamp(),
            "n_compositions": len(ids),
            **_packed(
                {
                    "versions": versions,
                    "composition_ids": ids,
                    "summaries": [summaries[c] for c in ids],
                    "columns": _columns([comps.get(c, {}) for c in ids], DIGEST_FIELDS),
                    "variants": {
                        "c": [pos[v["composition_id"]] for v in variants],
                        **{col: [_get(v, f) for v in variants] for f, col in DIGEST_VARIANT_FIELDS.items()},
                    },
                }
            ),
        }
        self["phase_digests"].replace_one({"digest_id": digest["digest_id"]}, digest, upsert=True)

    @_guard("reading phase digests")
    def phase_digests(self, key: str) -> list[dict]:
        """Every phase digest of one (model, settings) set, oldest first."""
        docs = sorted(self["phase_digests"].find({"key": key}, {"_id": 0}), key=digest_order)
        return [unpack(d) for d in docs]

    @_guard("tagging the campaign's compositions")
    def tag_campaign(self, ids: list[str], campaign: str) -> None:
        for part in _batches(ids):
            self["compositions"].update_many({"composition_id": {"$in": part}}, {"$addToSet": {"campaigns": campaign}})

    @_guard("reading compositions")
    def compositions(self, query: dict | None, fields: list[str], limit: int | None = None) -> list[dict]:
        """Compositions matching ``query`` (a chunk's ``{"composition_id": {"$in": ids}}`` is batched), by id."""
        return self._find("compositions", query or {}, {f: 1 for f in fields}, sort="composition_id", limit=limit)

    @_guard("writing phase summaries")
    def write_phase_summaries(
        self, key: str, summaries: dict[str, dict], versions: dict[str, int] | None = None
    ) -> set[str]:
        """Set ``phases.<key>`` of each composition id to its summary; return the ids written.

        ``versions`` (from :meth:`phase_versions`, read *before* the relaxations the summaries come from): a
        summary is written only while its composition's phase version is still that one (compare-and-set), so a
        summary computed before another job's relaxation write never replaces one computed after it. The ids not
        written are to be recomputed by the caller."""
        from pymongo import UpdateOne

        def version_is(v: int):
            return v if v else {"$in": [0, None]}

        ids = sorted(summaries)
        ops = [
            UpdateOne(
                {
                    "composition_id": cid,
                    **({f"phase_versions.{key}": version_is(versions.get(cid, 0))} if versions is not None else {}),
                },
                {"$set": {f"phases.{key}": summaries[cid]}},
            )
            for cid in ids
        ]
        matched = 0
        for part in _batches(ops, 1000):
            matched += self["compositions"].bulk_write(part, ordered=False).matched_count
        if versions is None or matched == len(ids):
            return set(ids)
        now = self.phase_versions(key, ids)  # who moved on meanwhile (a handful: only where jobs overlapped)
        return {cid for cid in ids if now.get(cid, 0) == versions.get(cid, 0)}

    @_guard("reading phase summaries")
    def stale_phase_summaries(self, key: str, ids: list[str], model_error: dict | None = None) -> dict[str, int]:
        """Those of ``ids`` without a phase summary for ``key`` computed at their current phase version (and, where
        ``model_error`` is given, with that model error), with that version (read once, before their relaxations
        are: see :meth:`write_phase_summaries`)."""
        docs = self._by_keys(
            "compositions",
            "composition_id",
            ids,
            {
                "composition_id": 1,
                f"phase_versions.{key}": 1,
                f"phases.{key}.version": 1,
                f"phases.{key}.model_phase_error": 1,
            },
        )
        stale = {}
        for d in docs:
            version = int(_get(d, f"phase_versions.{key}") or 0)
            if _get(d, f"phases.{key}.version") != version or (
                model_error is not None and _get(d, f"phases.{key}.model_phase_error") != model_error
            ):
                stale[d["composition_id"]] = version
        return dict(sorted(stale.items()))

    @_guard("reading phase versions")
    def phase_versions(self, key: str, ids: list[str]) -> dict[str, int]:
        """composition id -> its phase version for ``key`` (0 where none was counted yet)."""
        docs = self._by_keys("compositions", "composition_id", ids, {"composition_id": 1, f"phase_versions.{key}": 1})
        return {d["composition_id"]: int(_get(d, f"phase_versions.{key}") or 0) for d in docs}

    @_guard("counting relaxation writes")
    def bump_phase_versions(self, key: str, ids: list[str]) -> None:
        """Increment the phase version of these compositions (after their relaxations of ``key`` were written)."""
        for part in _batches(sorted(set(ids))):
            self["compositions"].update_many({"composition_id": {"$in": part}}, {"$inc": {f"phase_versions.{key}": 1}})

    @_guard("registering the phase summaries")
    def register_phase_set(self, key: str, model_sha256: str, settings_hash: str, model_name: str, n_new: int) -> None:
        """Record that compositions carry ``phases.<key>`` and how many relaxations the set has (by $inc), so the
        analysis finds the sets without scanning the relaxations."""
        from datetime import datetime

        self["phase_sets"].update_one(
            {"key": key},
            {
                "$set": {
                    "model_sha256": model_sha256,
                    "settings_hash": settings_hash,
                    "model_name": model_name,
                    "updated_at": datetime.now(UTC),
                },
                "$inc": {"n_relaxations": int(n_new)},
                # a set begun by a dp_screen that writes phase digests has one for every composition it relaxed
                "$setOnInsert": {"digests": True},
            },
            upsert=True,
        )

    @_guard("reading phase summaries")
    def phase_summaries(self, ids: list[str], key: str, fields: list[str]) -> list[dict]:
        return self._by_keys("compositions", "composition_id", ids, {**{f: 1 for f in fields}, f"phases.{key}": 1})

    # ---------------------------------------------------------------------------------------- campaign tables
    @_guard("writing the campaign table")
    def write_campaign_table(self, table_id: str, rows: list[dict], part_size: int = TABLE_PART_SIZE) -> int:
        """Store a campaign's phase table (one row per composition) under ``table_id``, replacing an older one,
        in packed parts of ``part_size`` rows (each far below MongoDB's 16 MB document limit); returns the parts."""
        parts = list(_batches(rows, part_size)) or [[]]
        for k, part in enumerate(parts):
            doc = {
                "part_id": f"{table_id}|{k}",
                "table_id": table_id,
                "part": k,
                "n_parts": len(parts),
                "n_rows": len(part),
                **self._stamp(),
                **_packed({"rows": part}),
            }
            self["campaign_tables"].replace_one({"part_id": doc["part_id"]}, doc, upsert=True)
        self["campaign_tables"].delete_many({"table_id": table_id, "part": {"$gte": len(parts)}})
        return len(parts)

    @_guard("reading the campaign table")
    def campaign_table(self, table_id: str) -> list[dict]:
        """The rows of a stored campaign table (:meth:`write_campaign_table`), in order."""
        docs = sorted(self["campaign_tables"].find({"table_id": table_id}, {"_id": 0}), key=lambda d: d["part"])
        return [row for d in docs for row in unpack(d)["rows"]]

    # -------------------------------------------------------------------------------------------- structures
    @_guard("reading built structures")
    def structure_ids_with_settings(self, structure_ids: list[str], settings_hash: str) -> set[str]:
        """Which of ``structure_ids`` are stored (built or failed) with this build settings hash."""
        return {
            d["structure_id"]
            for d in self._by_keys(
                "structures", "structure_id", structure_ids, {"structure_id": 1}, {"settings_hash": settings_hash}
            )
        }

    @_guard("writing structures")
    def write_structures(self, docs: list[dict]) -> dict:
        return self._upsert("structures", docs)

    @_guard("reading built structures")
    def built_structure_meta(self, query: dict | None, limit: int | None = None) -> list[dict]:
        """Built structures matching ``query``, without their structures, by id (a chunk's id list is batched)."""
        query = dict(query or {})
        ids = query.get("composition_id", {}).get("$in") if isinstance(query.get("composition_id"), dict) else None
        proj = {"structure": 0, "bv_parameters": 0, "_id": 0}
        if ids is not None and len(query) == 1 and not limit:
            out: list[dict] = []
            for part in _batches(ids):
                out += list(self["structures"].find({"composition_id": {"$in": part}, "status": "built"}, proj))
            return sorted(out, key=lambda d: d["structure_id"])
        cursor = self["structures"].find({**query, "status": "built"}, proj).sort("structure_id", 1)
        return list(cursor.limit(limit) if limit else cursor)

    @_guard("reading structures")
    def structures_by_id(self, structure_ids: list[str]) -> dict[str, dict]:
        return {d["structure_id"]: d for d in self._by_keys("structures", "structure_id", structure_ids, {})}

    # ------------------------------------------------------------------------------------------- relaxations
    @_guard("reading relaxations")
    def relaxation_states(self, relaxation_ids: list[str]) -> dict[str, str | None]:
        """relaxation id -> the build settings hash of the structure it was made from, for the stored ones."""
        return {
            d["relaxation_id"]: d.get("structure_settings_hash")
            for d in self._by_keys(
                "relaxations", "relaxation_id", relaxation_ids, {"relaxation_id": 1, "structure_settings_hash": 1}
            )
        }

    @_guard("writing relaxations")
    def write_relaxations(self, docs: list[dict]) -> dict:
        """Upsert relaxations, then bump the phase version of their compositions (module docstring)."""
        from dp_screen.schemas.relaxation import summary_key

        result = self._upsert("relaxations", docs)
        by_key: dict[str, list[str]] = {}
        for d in docs:
            if d.get("composition_id") and d.get("model_sha256") and d.get("settings_hash"):
                by_key.setdefault(summary_key(d["model_sha256"], d["settings_hash"]), []).append(d["composition_id"])
        for key, ids in by_key.items():
            self.bump_phase_versions(key, ids)
        return result

    @_guard("reading relaxations for the phase summaries")
    def relaxations_for_summary(self, composition_ids: list[str], model_sha256: str, settings_hash: str) -> list[dict]:
        fields = {
            "composition_id": 1,
            "ordering": 1,
            "start_tilt": 1,
            "phase_tilt": 1,
            "energy_per_atom": 1,
            "structure_id": 1,
            "excluded": 1,
            "final_space_group": 1,
            **{f: 1 for f in DIGEST_VARIANT_FIELDS},
        }
        return self._by_keys(
            "relaxations",
            "composition_id",
            composition_ids,
            fields,
            {"model_sha256": model_sha256, "settings_hash": settings_hash},
        )

    @_guard("reading relaxations")
    def relaxations(self, query: dict, projection: dict | None = None) -> list[dict]:
        return self._find("relaxations", query, projection)

    @_guard("reading shared relaxations")
    def shared_relaxations(self, share_keys: list[str]) -> dict[str, dict]:
        """share key -> a stored relaxation document with that key (the relaxed original where there is one), for
        the keys that have one (:func:`dp_screen.schemas.relaxation.share_key`)."""
        out: dict[str, dict] = {}
        for d in self._by_keys("relaxations", "share_key", share_keys, {}):
            if d["share_key"] not in out or not d.get("relaxed_as"):
                out[d["share_key"]] = d
        return out

    @_guard("reading relaxations")
    def relaxations_of_compositions(
        self, composition_ids: list[str], equal: dict, projection: dict | None = None
    ) -> list[dict]:
        """Relaxation documents (whole, or ``projection``'s fields) of these compositions whose fields equal
        ``equal`` (applied here)."""
        return self._by_keys("relaxations", "composition_id", composition_ids, projection or {}, equal)

    # ------------------------------------------------------------------------------------ validations, models
    @_guard("reading validations")
    def validated(self, relaxation_ids: list[str], methods: str | list[str]) -> set[str]:
        """Which relaxations have a validation by one of ``methods``."""
        methods = {methods} if isinstance(methods, str) else set(methods)
        return {
            d["relaxation_id"]
            for d in self._by_keys("validations", "relaxation_id", relaxation_ids, {"relaxation_id": 1, "method": 1})
            if d.get("method") in methods
        }

    @_guard("writing validations")
    def write_validations(self, docs: list[dict]) -> dict:
        return self._upsert("validations", docs)

    @_guard("reading models")
    def model(self, sha256: str) -> dict | None:
        return self["models"].find_one({"sha256": sha256}, {"_id": 0})

    @_guard("writing models")
    def write_model(self, doc: dict) -> dict:
        return self._upsert("models", [doc])

    @_guard("counting documents")
    def counts(self) -> dict[str, int]:
        """Estimated document count per collection (for status lines, never inside a chunk job)."""
        return {name: self[name].estimated_document_count() for name in COLLECTIONS}
