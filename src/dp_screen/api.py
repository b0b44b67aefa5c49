"""dp_screen from Python: build, relax and rank double perovskites in memory, no database.

    import dp_screen as dps

    cells = dps.build("Sr2FeMoO6")                       # the default ordering and tilt systems, bond valence
    results = dps.relax(cells, model="default")          # or a MACE file or foundation name; device auto
    table = dps.rank(results)                            # one row per composition and ordering, with the call
    table = dps.screen(["Ba2CaWO6", "Cs2AgBiCl6"])       # build -> relax -> rank
    space = dps.compositions(anions=["Cl"], a_site="Cs") # the composition space as a DataFrame

The CLI (``dp-screen build``, ``dp-screen relax --structure``) and the relax jobs call the same functions; the jobs
add reading and writing the store in chunks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dp_screen.cell import PerovskiteCell
from dp_screen.errors import InputError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from dp_screen.mlip.models import LoadedModel
    from dp_screen.mlip.relax import RelaxResult, RelaxSettings
    from dp_screen.structures.perovskite import BuiltStructure
    from dp_screen.structures.perovskite_check import PerovskiteCheck
    from dp_screen.structures.phases import PhaseIdentification

METHODS = ("bvm", "dls")


# --------------------------------------------------------------------------------------------------- building
def resolve_formula(formula: str):
    """(SiteSpeciesSet, descriptor row) of a formula such as ``Cs2AgBiCl6`` or ``Sr2Fe3+Mo5+O6``; a bad formula
    raises InputError naming it (:func:`dp_screen.chemistry.user_compositions.formula_row`)."""
    from dp_screen.chemistry.user_compositions import formula_row
    from dp_screen.structures.perovskite import SiteSpeciesSet

    row = formula_row(formula)
    return SiteSpeciesSet.from_row(row), row


def _choices(value, default: list[str], every: list[str], what: str) -> list[str]:
    if value in (None, "default"):
        return list(default)
    if value == "all":
        return list(every)
    values = [value] if isinstance(value, str) else list(value)
    bad = [v for v in values if v not in every]
    if bad:
        raise InputError(
            f"{what} {', '.join(map(repr, bad))} not available; allowed: {', '.join(every)}, 'default' or 'all'"
        )
    return values


def build(
    formulas: str | Iterable[str],
    tilts: str | Iterable[str] = "default",
    orderings: str | Iterable[str] = "default",
    method: str = "bvm",
    bv_set: str | None = None,
    progress: bool = True,
) -> list[PerovskiteCell]:
    """Starting cells of one or more formulas in each ordering and tilt system.

    Parameters
    ----------
    formulas
        AA'BB'X6 formulas in site order, e.g. ``"Cs2AgBiCl6"``, ``"NaLaMgWO6"`` or, to pick oxidation states,
        ``"Sr2Fe3+Mo5+O6"`` (:func:`dp_screen.chemistry.user_compositions.formula_row`).
    tilts
        ``"default"`` (the five tilt systems that cover ~97% of ordered double perovskites, per ordering), ``"all"``
        (every tilt system of the ordering's table) or a list of Glazer symbols.
    orderings
        ``"default"`` (the ordering the composition's descriptors predict), ``"all"`` (every ordering its A sites
        allow) or a list of ``rocksalt``, ``layered``, ``rocksalt-A``.
    method
        ``"bvm"`` (bond valence, SPuDS-like) or ``"dls"`` (a prototype rescaled by pymatgen's DLS predictor).
    bv_set
        Bond-valence parameter set of the BVM builder (default: the builder's).
    progress
        Show a progress bar (tqdm).

    Returns
    -------
    list of PerovskiteCell
        One per formula, ordering and tilt system, in that order.

    Examples
    --------
    >>> import dp_screen as dps
    >>> cells = dps.build("Cs2AgBiCl6", tilts=["a0a0a0", "a-a-a-"])
    >>> [(c.formula, c.tilt, c.structure.get_space_group_info()[1]) for c in cells]
    [('Cs2AgBiCl6', 'a0a0a0', 225), ('Cs2AgBiCl6', 'a-a-a-', 148)]
    """
    from dp_screen.structures.tilts import DEFAULT_TILTS, SPACE_GROUPS

    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; allowed: {', '.join(METHODS)}")
    jobs = []
    for f in [formulas] if isinstance(formulas, str) else list(formulas):
        species, row = resolve_formula(f)
        allowed = ["rocksalt"] if species.same_a else ["layered", "rocksalt-A"]
        for ordering in _choices(orderings, [row["expected_ordering"]], allowed, "ordering"):
            for tilt in _choices(tilts, list(DEFAULT_TILTS[ordering]), list(SPACE_GROUPS[ordering]), "tilt system"):
                jobs.append((species, ordering, tilt))
    return [
        build_cell(species, ordering, tilt, method, bv_set)[0]
        for species, ordering, tilt in _bar(jobs, progress, "building", "cell")
    ]


def build_cell(
    species,
    ordering: str,
    tilt: str = "a0a0a0",
    method: str = "bvm",
    bv_set: str | None = None,
    fixed_midpoint: bool = False,
    move_a: bool = False,
) -> tuple[PerovskiteCell, BuiltStructure]:
    """One starting cell (and the builder's full result: GII, tilt angles, bond lengths) of a composition
    (a :class:`~dp_screen.structures.perovskite.SiteSpeciesSet` or a formula), ordering and tilt system;
    ``fixed_midpoint`` and ``move_a`` are the BVM builder's options."""
    from dp_screen.structures.bond_valence import DEFAULT_BV_SET
    from dp_screen.structures.perovskite import build_bvm_structure, build_dls_structure

    if isinstance(species, str):
        species = resolve_formula(species)[0]
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; allowed: {', '.join(METHODS)}")
    if method == "bvm":
        settings = {
            "method": method,
            "bv_set": bv_set or DEFAULT_BV_SET,
            "fixed_midpoint": fixed_midpoint,
            "move_a": move_a,
        }
        built = build_bvm_structure(
            species, ordering, tilt, fixed_midpoint=fixed_midpoint, move_a=move_a, bv_set=settings["bv_set"]
        )
    else:
        settings = {"method": method}
        built = build_dls_structure(species, ordering, tilt)
    return PerovskiteCell.from_built(built, settings), built


def _bar(items, progress: bool, desc: str, unit: str):
    if not progress or len(items) < 2:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit=unit)


# -------------------------------------------------------------------------------------------------- relaxing
@dataclass
class Relaxation:
    """One relaxed cell and what dp_screen knows about it.

    Attributes
    ----------
    start, cell
        The starting and the relaxed :class:`~dp_screen.cell.PerovskiteCell` (same roles, ordering, start tilt).
    energy, energy_per_atom
        Final energy (eV) and per atom.
    forces, max_force, stress_gpa, max_stress_gpa
        Final forces (eV/A, N x 3) and the largest, the stress tensor and its largest component (GPa).
    n_steps, converged, failed, reason
        How the relaxation went.
    phase
        The phase it ended in (:class:`~dp_screen.structures.phases.PhaseIdentification`; None if it failed).
    gate
        The perovskite gate (:class:`~dp_screen.structures.perovskite_check.PerovskiteCheck`; None if it failed).
    model, settings
        The model's provenance (name, path, sha256, dtype, device) and the relaxation settings.
    """

    start: PerovskiteCell
    cell: PerovskiteCell
    energy: float
    energy_per_atom: float
    max_force: float
    stress_gpa: list
    max_stress_gpa: float
    n_steps: int
    converged: bool
    failed: bool
    reason: str | None
    phase: PhaseIdentification | None
    gate: PerovskiteCheck | None
    model: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    forces: np.ndarray | None = None

    @property
    def excluded(self) -> str | None:
        """Why it is kept out of rankings (failed, not_converged, not_perovskite), None when ranked."""
        from dp_screen.schemas.relaxation import exclusion

        return exclusion(self.failed, self.converged, None if self.gate is None else self.gate.ok)

    def variant(self) -> dict:
        """The variant :func:`dp_screen.structures.phases.phase_summary` ranks."""
        return {
            "ordering": self.start.ordering,
            "start_tilt": self.start.tilt or (self.phase.phase if self.phase else "?"),
            "phase_tilt": self.phase.phase if self.phase else None,
            "energy_per_atom": self.energy_per_atom,
            "structure_id": id(self),
            "final_space_group": self.phase.space_group if self.phase else None,
            "excluded": self.excluded,
        }


def assess(
    result: RelaxResult, ordering: str, start_tilt: str | None
) -> tuple[PhaseIdentification | None, PerovskiteCheck | None]:
    """The phase a relaxed structure ended in and the perovskite gate's verdict (None for a failed relaxation): the
    one assessment of relaxations, in memory (:func:`relax`) and in the relax jobs
    (:func:`dp_screen.jobs.relax.relax_store`)."""
    from dp_screen.structures.perovskite_check import check_perovskite
    from dp_screen.structures.phases import identify_phase

    if result.failed:
        return None, None
    return identify_phase(result.structure, ordering, start_tilt), check_perovskite(result.structure)


def _cells(inputs) -> list[PerovskiteCell]:
    from ase import Atoms
    from pymatgen.core import Structure

    items = [inputs] if isinstance(inputs, PerovskiteCell | Structure | Atoms) else list(inputs)
    out = []
    for k, item in enumerate(items):
        if isinstance(item, PerovskiteCell):
            out.append(item)
        elif isinstance(item, Structure):
            out.append(PerovskiteCell.from_structure(item, name=f"structure {k} ({item.composition.reduced_formula})"))
        elif isinstance(item, Atoms):
            out.append(PerovskiteCell.from_ase(item, name=f"atoms {k} ({item.get_chemical_formula()})"))
        else:
            raise InputError(
                f"relax: item {k} is a {type(item).__name__}; allowed: PerovskiteCell, pymatgen Structure, ASE Atoms"
            )
    return out


def load(model: str | None = "default", device: str | None = None, dtype: str | None = None) -> LoadedModel:
    """A MACE model: ``"default"`` (the packaged one), a file, or a MACE-MP foundation name; ``device`` None picks
    CUDA when present; ``dtype`` None: float32 on CUDA, float64 on the CPU."""
    from dp_screen.mlip.models import load_model, resolve_device

    dev = resolve_device(device)
    dtype = dtype or ("float32" if dev.startswith("cuda") else "float64")
    return load_model(None if model in (None, "default") else model, device=dev, dtype=dtype)


def relax(
    cells,
    model: str | LoadedModel | None = "default",
    device: str | None = None,
    dtype: str | None = None,
    settings: RelaxSettings | None = None,
    progress: bool = True,
) -> list[Relaxation]:
    """Relax cells with a MACE model, batched (TorchSim), and identify and gate each result.

    Parameters
    ----------
    cells
        PerovskiteCells (from :func:`build`), pymatgen Structures or ASE Atoms from elsewhere (their site roles and
        ordering inferred), one or a list.
    model
        ``"default"`` (the packaged model), a MACE file, a MACE-MP foundation name, or a model from :func:`load`.
    device, dtype
        Where and how to evaluate (None: CUDA when present; float32 on CUDA, float64 on the CPU).
    settings
        :class:`~dp_screen.mlip.relax.RelaxSettings` (default: symmetry held, fmax 0.05 eV/A, 0.2 GPa).
    progress
        Show a progress bar (structures done / total, rate, time left).

    Returns
    -------
    list of Relaxation
        In input order.

    Examples
    --------
    >>> import dp_screen as dps
    >>> results = dps.relax(dps.build("Cs2AgBiCl6", tilts=["a0a0a0"]), progress=False)
    >>> r = results[0]
    >>> (r.converged, r.phase.phase, r.gate.ok)
    (True, 'a0a0a0', True)
    """
    from dp_screen.mlip.models import LoadedModel
    from dp_screen.mlip.relax import RelaxSettings, relax_structures

    cells = _cells(cells)
    loaded = model if isinstance(model, LoadedModel) else load(model, device, dtype)
    settings = settings or RelaxSettings()
    bar = None
    if progress and len(cells) > 1:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(cells), desc="relaxing", unit="structure")
    try:
        results = relax_structures([c.structure for c in cells], loaded, settings, progress=bar.update if bar else None)
    finally:
        if bar:
            bar.close()
    prov, config = loaded.provenance(), settings.settings_dict()
    out = []
    for cell, res in zip(cells, results, strict=True):
        phase, gate = assess(res, cell.ordering, cell.tilt)
        relaxed = cell.with_structure(
            res.structure,
            model_sha256=loaded.sha256,
            relax_settings=config,
            energy_per_atom=res.energy_per_atom,
            converged=res.converged,
        )
        out.append(
            Relaxation(
                cell,
                relaxed,
                res.energy,
                res.energy_per_atom,
                res.max_force,
                res.stress_gpa,
                res.max_stress_gpa,
                res.n_steps,
                res.converged,
                res.failed,
                res.reason,
                phase,
                gate,
                prov,
                config,
                res.forces,
            )
        )
    return out


# --------------------------------------------------------------------------------------------------- ranking
RANK_COLUMNS = [
    "composition_id",
    "formula",
    "ordering",
    "call",
    "ground_state",
    "lowest",
    "phases_within_error",
    "dE_tilt_mev_atom",
    "dE_untilted_mev_atom",
    "phase_error_mev",
    "phase_error_source",
    "n_variants",
    "n_ranked",
    "excluded",
    "energies_mev_atom",
    "composition_ground_state",
    "model_sha256",
    "ground_state_cell",
]


def rank(results: Iterable[Relaxation], phase_error: float | None = None) -> pd.DataFrame:
    """One row per composition and ordering: the call with its error bar and the lowest phase.

    Each composition's relaxations are ranked as the relax jobs rank them
    (:func:`dp_screen.structures.phases.phase_summary`): converged, still-perovskite variants under the phase each
    ended in; ``call`` is tilted / untilted / undetermined at 2 sigma (``phase_error`` in meV/atom, else the model's
    measured error: :mod:`dp_screen.mlip.uncertainty`).

    Parameters
    ----------
    results
        Relaxations from :func:`relax` (one model).
    phase_error
        sigma (meV/atom) of a phase energy difference; None: the model's own.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`RANK_COLUMNS`: ``ground_state`` is the called phase (None when undetermined),
        ``lowest`` the lowest-energy phase, ``ground_state_cell`` the relaxed cell of the lowest variant, and
        ``composition_ground_state`` marks the composition's lowest ordering.
    """
    import pandas as pd

    from dp_screen.mlip.uncertainty import model_phase_error, user_phase_error
    from dp_screen.structures.phases import phase_summary

    results = list(results)
    shas = {r.model.get("model_sha256") for r in results}
    if len(shas) > 1:
        raise InputError(
            f"rank: relaxations of {len(shas)} models ({', '.join(sorted(s[:12] for s in shas))}); "
            "rank one model's at a time"
        )
    by_comp: dict[str, list[Relaxation]] = {}
    for r in results:
        by_comp.setdefault(r.start.composition_id, []).append(r)
    rows = []
    for cid, rs in by_comp.items():
        model = rs[0].model
        error = (
            user_phase_error(phase_error)
            if phase_error is not None
            else model_phase_error(model.get("model_sha256", ""), model.get("model_path"))
        )
        by_id = {id(r): r for r in rs}
        summ = phase_summary([r.variant() for r in rs], error)
        for ordering, o in summ["orderings"].items():
            best = by_id.get(o.get("lowest_structure_id"))
            rows.append(
                {
                    "composition_id": cid,
                    "formula": rs[0].start.formula,
                    "ordering": ordering,
                    "call": o["call"],
                    "ground_state": o["ground_state_phase"],
                    "lowest": o["lowest"],
                    "phases_within_error": o["phases_within_error"],
                    "dE_tilt_mev_atom": o["dE_tilt_mev_atom"],
                    "dE_untilted_mev_atom": o["dE_untilted_mev_atom"],
                    "phase_error_mev": o["phase_error_mev"],
                    "phase_error_source": o["phase_error_source"],
                    "n_variants": o["n_variants"],
                    "n_ranked": o["n_ranked"],
                    "excluded": o["excluded"],
                    "energies_mev_atom": o["energies_mev_atom"],
                    "composition_ground_state": ordering == (summ["ground_state"] or {}).get("ordering"),
                    "model_sha256": model.get("model_sha256"),
                    "ground_state_cell": best.cell if best else None,
                }
            )
    return pd.DataFrame(rows, columns=RANK_COLUMNS)


def screen(
    formulas: str | Iterable[str],
    tilts: str | Iterable[str] = "default",
    orderings: str | Iterable[str] = "default",
    method: str = "bvm",
    model: str | None = "default",
    device: str | None = None,
    settings: RelaxSettings | None = None,
    phase_error: float | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Build, relax and rank: :func:`build` -> :func:`relax` -> :func:`rank` (see their parameters).

    Examples
    --------
    >>> import dp_screen as dps
    >>> table = dps.screen(["Cs2AgBiCl6"], tilts=["a0a0a0", "a-a-a-"], progress=False)
    >>> table[["formula", "call"]].to_dict("records")[0]["formula"]
    'Cs2AgBiCl6'
    """
    cells = build(formulas, tilts=tilts, orderings=orderings, method=method, progress=progress)
    return rank(relax(cells, model=model, device=device, settings=settings, progress=progress), phase_error)


def ground_states(
    table: pd.DataFrame, top: int | None = None, sort_by: str | None = None, ascending: bool = False
) -> list[PerovskiteCell]:
    """The relaxed ground-state cell of each composition of a :func:`rank` table, with provenance.

    Parameters
    ----------
    table
        A table from :func:`rank` / :func:`screen`.
    top
        Only the first ``top`` compositions (after sorting).
    sort_by, ascending
        A column to sort the compositions by first (e.g. ``"dE_tilt_mev_atom"``); None keeps the table's order.

    Returns
    -------
    list of PerovskiteCell
        The lowest variant of each composition's lowest ordering; its ``provenance`` names the model (sha256), the
        relaxation settings, its energy per atom and the call.
    """
    if "ground_state_cell" not in table:
        raise InputError(
            "ground_states needs a table from dp_screen.rank / dp_screen.screen (column 'ground_state_cell')"
        )
    rows = table[table["composition_ground_state"].astype(bool) & table["ground_state_cell"].notna()]
    if sort_by is not None:
        if sort_by not in rows:
            raise InputError(f"ground_states: no column {sort_by!r}; columns: {', '.join(map(str, table.columns))}")
        rows = rows.sort_values(sort_by, ascending=ascending)
    rows = rows.head(top) if top is not None else rows
    out = []
    for _, r in rows.iterrows():
        cell = r["ground_state_cell"]
        out.append(
            cell.with_structure(cell.structure, call=r["call"], phase=r["lowest"], phase_error_mev=r["phase_error_mev"])
        )
    return out


# ------------------------------------------------------------------------------------------- composition space
def compositions(
    anions: Iterable[str] | None = None,
    a_site: str | None = None,
    table: str | None = None,
    same_a: bool = True,
    same_b: bool = True,
    bv_filter: str | None = None,
) -> pd.DataFrame:
    """The charge-balanced composition space as a DataFrame, with descriptors (tolerance factors, ordering).

    Parameters
    ----------
    anions
        Keep only these X elements (e.g. ``["Cl"]``).
    a_site
        Keep only compositions with this element on every A site (``"Cs"``: the Cs2BB'X6 family).
    table
        A site table (CSV); None: the packaged default (``data/site_table_r1.csv``).
    same_a, same_b
        Allow A = A' and B = B'.
    bv_filter
        None (all), ``"any"`` or ``"exact"``: only compositions whose every cation-anion pair has bond-valence
        parameters (exact: for the exact oxidation states), i.e. that the bond-valence builder can build.

    Examples
    --------
    >>> import dp_screen as dps
    >>> space = dps.compositions(anions=["Cl"], a_site="Cs")
    >>> bool((space["A"] == "Cs").all() and (space["X"] == "Cl").all())
    True
    """
    from dp_screen.jobs.enumerate import EnumerationSettings, enumerate_table

    _, df = enumerate_table(
        EnumerationSettings(
            table=table,
            anions=list(anions) if anions else None,
            allow_same_a=same_a,
            allow_same_b=same_b,
            bv_filter=bv_filter,
        )
    )
    if a_site is not None:
        if not ((df["A"] == a_site) | (df["A2"] == a_site)).any():
            raise InputError(
                f"a_site {a_site!r}: no composition of the table has it on the A site; A-site elements: "
                f"{', '.join(sorted(set(df['A']) | set(df['A2'])))}"
            )
        df = df[(df["A"] == a_site) & (df["A2"] == a_site)]
    return df.reset_index(drop=True)


__all__ = [
    "PerovskiteCell",
    "Relaxation",
    "assess",
    "build",
    "build_cell",
    "compositions",
    "ground_states",
    "load",
    "rank",
    "relax",
    "resolve_formula",
    "screen",
]


# -------------------------------------------------------------------------------------------------- shipped maps
MAP_JSON_COLUMNS = ("phases_within_error", "energies_mev_atom", "excluded", "variants", "not_built")


def maps() -> list[str]:
    """The names of the phase maps shipped in the package (``src/dp_screen/data/maps``)."""
    from importlib import resources

    folder = resources.files("dp_screen") / "data" / "maps"
    return sorted(p.name[:-4] for p in folder.iterdir() if p.name.endswith(".csv")) if folder.is_dir() else []


def load_map(name: str = "cs2bbx6") -> pd.DataFrame:
    """A phase map shipped with dp_screen: one row per composition and ordering.

    Made by ``scripts/make_map.py NAME`` (bond-valence starts in the default tilt systems, relaxed with the packaged
    model, symmetry held, ranked with the calls of :func:`rank`). Columns: the call, ground state and lowest phase,
    dE and its error bar, the composition's descriptors (``goldschmidt_t``, ``tau``, ...), ``hexagonal_candidate``
    (t >= 1.05, where face-sharing hexagonal polytypes compete; dp_screen builds none of them), ``variants`` (each
    variant's energy, the phase and space group it ended in, convergence and gate verdicts) and the provenance
    (model sha256, build and relaxation settings hashes, dp_screen version). ``n_family`` is the number of
    compositions of the family; a map with fewer rows is a seeded random sample of it, not yet complete.

    Parameters
    ----------
    name
        A map name; :func:`maps` lists them.
    """
    import json
    from importlib import resources

    import pandas as pd

    names = maps()
    if name not in names:
        raise InputError(f"no shipped map {name!r}; shipped: {', '.join(names) or 'none'}")
    with resources.as_file(resources.files("dp_screen") / "data" / "maps" / f"{name}.csv") as path:
        table = pd.read_csv(path)
    for column in MAP_JSON_COLUMNS:
        table[column] = [json.loads(v) for v in table[column]]
    return table
