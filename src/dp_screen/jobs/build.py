"""Build the starting structures of the compositions in the store (a function and its jobflow Maker)."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from jobflow import Maker, job
from monty.json import MSONable

from dp_screen.campaign_store import CampaignStore
from dp_screen.errors import DPScreenError, InputError
from dp_screen.schemas.common import Provenance
from dp_screen.schemas.structure import StructureDoc, settings_hash, structure_id
from dp_screen.settings import DPScreenSettings
from dp_screen.structures.bond_valence import DEFAULT_BV_SET, bond_valence_table, check_bv_set
from dp_screen.structures.perovskite import SiteSpeciesSet, build_bvm_structures, build_dls_structure
from dp_screen.structures.tilts import DEFAULT_TILTS, SPACE_GROUPS, parse_tilt

if TYPE_CHECKING:
    from collections.abc import Callable

METHODS = ("bvm", "dls")
COMPOSITION_FIELDS = [
    "composition_id",
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
    "expected_ordering",
]


@dataclass
class BuildSettings(MSONable):
    """Which starting structures to build.

    Parameters
    ----------
    tilts
        Tilt systems; None: the default set of each ordering (``DEFAULT_TILTS``); ["all"]: every tilt system of the
        ordering's table. A tilt system the ordering has no table entry for is skipped for that ordering.
    methods
        "bvm" (bond valence, GII-minimised) and/or "dls" (prototype rescaled by DLSVolumePredictor).
    ordering
        Force one ordering; None: the composition's expected ordering (its descriptors).
    move_a
        BVM: also optimise the symmetry-allowed A-cation displacements (see ``build_bvm_structures``).
    bv_set
        BVM: bond-valence parameter set, ``adams2001`` (default) or ``brown-altermatt``
        (``dp_screen.structures.bond_valence``).
    """

    tilts: list[str] | None = None
    methods: list[str] = field(default_factory=lambda: ["bvm"])
    ordering: str | None = None
    move_a: bool = False
    bv_set: str = DEFAULT_BV_SET

    def __post_init__(self) -> None:
        check_bv_set(self.bv_set)
        for m in self.methods:
            if m not in METHODS:
                raise InputError(f"unknown method {m!r}; allowed: {', '.join(METHODS)}")
        if self.ordering is not None and self.ordering not in SPACE_GROUPS:
            raise InputError(f"unknown ordering {self.ordering!r}; allowed: {', '.join(SPACE_GROUPS)}")
        for t in self.tilts or []:
            if t != "all":
                parse_tilt(t)

    def tilts_for(self, ordering: str) -> list[str]:
        """Tilt systems to build for one ordering."""
        if self.tilts is None:
            return list(DEFAULT_TILTS[ordering])
        if self.tilts == ["all"]:
            return list(SPACE_GROUPS[ordering])
        return [t for t in self.tilts if t in SPACE_GROUPS[ordering]]

    def settings_dict(self) -> dict:
        """Settings that change a built structure (for provenance and the settings hash). Which tilts, methods and
        ordering are built only selects work (each is part of the structure id), so it is left out: building a
        subset of tilts later finds the structures already built."""
        out = {"bv_table_sha256": bond_valence_table().sha256, "bv_set": self.bv_set}
        if self.move_a:  # only when set, so the hash of the default settings (and stored builds) stays the same
            out["move_a"] = True
        return out

    def selection_dict(self) -> dict:
        """What was selected (recorded in provenance, not hashed)."""
        return {"tilts": self.tilts, "methods": sorted(self.methods), "ordering": self.ordering}


def relaxation_counts(df, settings: BuildSettings | None = None) -> dict[str, int]:
    """Starting structures an enumeration table asks for with these build settings, and the relaxations they need
    when oxidation-state twins share one per (chemistry, ordering, tilt, method) (:mod:`dp_screen.jobs.relax`)."""
    from dp_screen.chemistry.composition_space import chemistry_id

    settings = settings or BuildSettings()
    structures, shared = 0, set()
    for cid, expected in zip(df["composition_id"], df["expected_ordering"], strict=True):
        ordering = settings.ordering or expected
        variants = [(t, m) for t in settings.tilts_for(ordering) for m in settings.methods]
        structures += len(variants)
        chem = chemistry_id(cid)
        shared.update((chem, ordering, t, m) for t, m in variants)
    return {"structures": structures, "relaxations": len(shared), "saved": structures - len(shared)}


def build_structures_to_store(
    settings: BuildSettings,
    db_settings: DPScreenSettings | None = None,
    query: dict | None = None,
    limit: int | None = None,
    chunk_size: int = 2000,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> dict:
    """Build every requested structure of the stored compositions (``query`` filters them) into ``structures``.

    Resumable: structures already stored with the same settings (built or failed) are skipped, so an interrupted
    run started again builds only the rest. A structure that cannot be built is stored with ``status: failed``
    and its reason. Returns counts.
    """
    from dp_screen.progress import stage

    if progress is None and on_total is None:  # inside dp-screen run: the shared "building" bar
        on_total, progress = stage("building")
    t0 = time.perf_counter()
    config = settings.settings_dict()
    config_hash = settings_hash(config)
    provenance = Provenance(bv_table_sha256=config["bv_table_sha256"], settings={**config, **settings.selection_dict()})
    store = CampaignStore(db_settings)
    rows = store.compositions(query, COMPOSITION_FIELDS, limit)
    if not rows:
        raise InputError(f"no compositions in the store match {query or {}}; run 'dp-screen enumerate' first")
    counts = {"compositions": len(rows), "built": 0, "failed": 0, "skipped": 0}
    wanted = [
        (row, ordering, tilt, method)
        for row in rows
        for ordering in [settings.ordering or row["expected_ordering"]]
        for tilt in settings.tilts_for(ordering)
        for method in settings.methods
    ]
    done = store.structure_ids_with_settings(
        [structure_id(r["composition_id"], o, t, m) for r, o, t, m in wanted], config_hash
    )
    tasks: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for row, ordering, tilt, method in wanted:
        if structure_id(row["composition_id"], ordering, tilt, method) in done:
            counts["skipped"] += 1
        else:
            tasks[(ordering, tilt, method)].append(row)
    if on_total:
        on_total(counts["skipped"] + sum(len(v) for v in tasks.values()))
    if progress and counts["skipped"]:
        progress(counts["skipped"])
    for (ordering, tilt, method), group in tasks.items():
        for start in range(0, len(group), chunk_size):
            chunk = group[start : start + chunk_size]
            species = [SiteSpeciesSet.from_row(r) for r in chunk]
            if method == "bvm":
                results = build_bvm_structures(species, ordering, tilt, move_a=settings.move_a, bv_set=settings.bv_set)
            else:
                results = [_safe_dls(sp, ordering, tilt) for sp in species]
            docs = []
            for row, res in zip(chunk, results, strict=True):
                if isinstance(res, DPScreenError):
                    counts["failed"] += 1
                    docs.append(
                        StructureDoc.from_error(
                            row["composition_id"], row["formula"], ordering, tilt, method, res, config, provenance
                        )
                    )
                else:
                    counts["built"] += 1
                    docs.append(StructureDoc.from_built(row["composition_id"], res, config, provenance))
            store.write_structures([d.model_dump() for d in docs])
            if progress:
                progress(len(chunk))
    counts["stored"] = counts["built"] + counts["failed"] + counts["skipped"]
    counts["seconds"] = round(time.perf_counter() - t0, 2)
    counts["settings_hash"] = config_hash
    return counts


def _safe_dls(species: SiteSpeciesSet, ordering: str, tilt: str):
    try:
        return build_dls_structure(species, ordering, tilt)
    except DPScreenError as exc:
        return exc


@dataclass
class BuildMaker(Maker):
    """Build starting structures of stored compositions into the ``structures`` collection.

    Parameters
    ----------
    name
        Job name.
    settings
        Tilt systems, methods, ordering.
    chunk_size
        Compositions built (and written) together.
    """

    name: str = "build structures"
    settings: BuildSettings = field(default_factory=BuildSettings)
    chunk_size: int = 2000

    @job
    def make(self, query: dict | None = None, limit: int | None = None, db_settings: dict | None = None) -> dict:
        """Build the structures of the compositions matching ``query``; the output is the counts."""
        db = DPScreenSettings(**db_settings) if db_settings else DPScreenSettings()
        return build_structures_to_store(self.settings, db, query=query, limit=limit, chunk_size=self.chunk_size)
