"""A DFT check of a shipped phase map: CP2K single points (the models' Hamiltonian) at the map's structures of a
stratified sample of closed-shell compositions, the untilted cell and the lowest tilted phase of each.

The structures are the map's own: each sampled composition is relaxed again exactly as ``scripts/make_map.py`` does
(the same builder, model and settings; the energies are checked against the map's). Each finished point is one line
of ``src/dp_screen/data/maps/NAME_dft_check.jsonl``, so the same command resumes. ``--summary`` prints how often the
map's call agrees with DFT's sign of dE = E(untilted) - E(lowest tilted phase) and the dE MAE.

    python scripts/make_map_dft_check.py cs2bbx6 [--per-anion 3] [--anions F,Cl,Br,I] [--nproc 1] [--summary]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))  # make_map (the family's order), make_dft_reference (cp2k_version)
MAPS = ROOT / "src" / "dp_screen" / "data" / "maps"


def closed_shell_sample(table, anions: list[str], per_anion: int, seed: int = 0):
    """Seeded sample of compositions per anion whose cells need no spin polarisation and no +U and whose elements
    CP2K's shipped basis and potential files cover, with a ranked untilted variant and a ranked tilted phase (so
    that DFT can be asked for the sign of dE)."""
    import make_map

    from dp_screen.dft.cp2k import CP2KSettings, check_coverage
    from dp_screen.dft.hamiltonian import hamiltonian_for
    from dp_screen.errors import DPScreenError
    from dp_screen.structures.perovskite import build_bvm_structure

    # the map's own seeded order (the order make_map.py appends in): the sample does not move as the map grows
    order = {cid: k for k, cid in enumerate(make_map.family("cs2bbx6", seed)["composition_id"])}
    table = table.assign(order=table["composition_id"].map(order)).sort_values("order")
    by_anion: dict[str, list] = {x: [] for x in anions}
    for x in anions:
        pool = table[(table["X"] == x) & ~table["hexagonal_candidate"]]
        for r in pool.itertuples():
            phases = set(r.energies_mev_atom)
            if "a0a0a0" not in phases or len(phases) < 2:
                continue
            species = _species(r)
            structure = build_bvm_structure(species, r.ordering, "a0a0a0").structure
            ham = hamiltonian_for(structure)
            if ham.spin_polarised or ham.u_values:
                continue
            try:
                check_coverage(structure, CP2KSettings())
            except DPScreenError:
                continue
            by_anion[x].append(r)
            if len(by_anion[x]) == per_anion:
                break
    # round robin over the anions: a check cut short still has some of each
    return [rows[k] for k in range(per_anion) for rows in by_anion.values() if k < len(rows)]


def _species(row):
    from dp_screen.structures.perovskite import SiteSpeciesSet

    return SiteSpeciesSet(
        ("Cs", 1), ("Cs", 1), (row.B, int(row.nB)), (row.B2, int(row.nB2)), (row.X, -1 if row.X != "O" else -2)
    )


def relaxed_pair(row) -> dict:
    """The map's relaxation of the composition again: {"untilted": Relaxation, "tilted": the lowest ranked
    variant that ended in a tilted phase}."""
    from dp_screen.api import relax
    from dp_screen.cell import PerovskiteCell
    from dp_screen.mlip.relax import RelaxSettings
    from dp_screen.structures.bond_valence import DEFAULT_BV_SET
    from dp_screen.structures.perovskite import build_bvm_structures
    from dp_screen.structures.tilts import DEFAULT_TILTS

    build = {"method": "bvm", "bv_set": DEFAULT_BV_SET, "fixed_midpoint": False, "move_a": False}
    species = _species(row)
    cells = []
    for tilt in DEFAULT_TILTS[row.ordering]:
        built = build_bvm_structures([species], row.ordering, tilt, bv_set=DEFAULT_BV_SET)[0]
        if not isinstance(built, Exception):
            cells.append(PerovskiteCell.from_built(built, build))
    results = relax(cells, model="default", device="cpu", settings=RelaxSettings(), progress=False)
    ranked = [r for r in results if r.excluded is None and r.phase is not None]
    untilted = [r for r in ranked if r.phase.phase == "a0a0a0"]
    tilted = [r for r in ranked if r.phase.phase != "a0a0a0"]
    if not untilted or not tilted:
        return {}
    return {
        "untilted": min(untilted, key=lambda r: r.energy_per_atom),
        "tilted": min(tilted, key=lambda r: r.energy_per_atom),
    }


def summary(points: list[dict], table) -> dict:
    """Per composition with both points: MLIP and DFT dE = E(untilted) - E(lowest tilted phase) (meV/atom), the
    map's call, whether DFT's sign agrees with the MLIP's and with the call; the dE MAE."""
    by_comp: dict[str, dict] = {}
    for p in points:
        if p.get("energy_per_atom") is not None and p.get("scf_converged"):
            by_comp.setdefault(p["composition_id"], {})[p["which"]] = p
    calls = table.set_index("composition_id")["call"].to_dict()
    rows = []
    for cid, pair in sorted(by_comp.items()):
        if set(pair) != {"untilted", "tilted"}:
            continue
        dft = 1e3 * (pair["untilted"]["energy_per_atom"] - pair["tilted"]["energy_per_atom"])
        mlip = 1e3 * (pair["untilted"]["mlip_energy_per_atom"] - pair["tilted"]["mlip_energy_per_atom"])
        call = calls.get(cid)
        rows.append(
            {
                "composition_id": cid,
                "formula": pair["untilted"]["formula"],
                "tilted_phase": pair["tilted"]["phase"],
                "dE_mlip_mev_atom": mlip,
                "dE_dft_mev_atom": dft,
                "same_sign": (mlip > 0) == (dft > 0),
                "call": call,
                "call_agrees": None if call == "undetermined" else (call == "tilted") == (dft > 0),
            }
        )
    n = len(rows)
    determined = [r for r in rows if r["call_agrees"] is not None]
    return {
        "rows": rows,
        "n": n,
        "same_sign": sum(r["same_sign"] for r in rows),
        "dE_mae_mev_atom": sum(abs(r["dE_mlip_mev_atom"] - r["dE_dft_mev_atom"]) for r in rows) / n if n else None,
        "dft_tilted": sum(r["dE_dft_mev_atom"] > 0 for r in rows),
        "determined_calls": len(determined),
        "calls_agree": sum(r["call_agrees"] for r in determined),
        "wall_time_s": sum(p.get("wall_time_s") or 0 for p in points),
    }


def main() -> None:
    from make_dft_reference import cp2k_version

    import dp_screen as dps
    from dp_screen.dft.cp2k import CP2KSettings
    from dp_screen.jobs.dft import dft_single_point

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=["cs2bbx6"])
    parser.add_argument("--anions", default="F,Cl,Br,I")
    parser.add_argument("--per-anion", type=int, default=3)
    parser.add_argument("--nproc", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--summary", action="store_true", help="print the comparison of the stored points")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    table = dps.load_map(args.name)
    out = args.out or MAPS / f"{args.name}_dft_check.jsonl"
    points = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    if args.summary:
        print(json.dumps(summary(points, table), indent=1))
        return
    done = {(p["composition_id"], p["which"]) for p in points}
    sample = closed_shell_sample(table, args.anions.split(","), args.per_anion, args.seed)
    print(f"{len(sample)} compositions sampled; {len(done)} points already in {out.name}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="dp_screen_map_dft_"))
    settings = CP2KSettings(nproc=args.nproc)
    for row in sample:
        if {(row.composition_id, "untilted"), (row.composition_id, "tilted")} <= done:
            continue
        pair = relaxed_pair(row)
        if not pair:
            print(f"{row.formula}: no ranked untilted and tilted pair on relaxing again; skipped", flush=True)
            continue
        map_energies = {v["tilt"]: v["energy_per_atom"] for v in row.variants}
        for which, r in pair.items():
            if (row.composition_id, which) in done:
                continue
            point = {
                "composition_id": row.composition_id,
                "formula": row.formula,
                "which": which,
                "start_tilt": r.start.tilt,
                "phase": r.phase.phase,
                "space_group": r.phase.space_group,
                "n_atoms": len(r.cell.structure),
                "mlip_energy_per_atom": r.energy_per_atom,
                "map_energy_per_atom": map_energies.get(r.start.tilt),
                "model_sha256": r.model.get("model_sha256"),
                "structure": r.cell.structure.as_dict(),
            }
            t0 = time.perf_counter()
            try:
                res = dft_single_point(r.cell.structure, settings, work / f"{row.composition_id}_{which}")
                point.update({k: v for k, v in res.items() if k not in ("forces", "output_file", "attempts")})
                point["cp2k_version"] = cp2k_version(res["output_file"])
            except Exception as exc:  # a failed point is stored with its reason, not retried silently
                point.update({"error": f"{type(exc).__name__}: {exc}", "energy_per_atom": None})
            point["wall_time_s"] = point.get("wall_time_s") or time.perf_counter() - t0
            with out.open("a") as fh:
                fh.write(json.dumps(point) + "\n")
            print(
                f"{row.formula} {which} ({r.phase.phase}, {point['n_atoms']} atoms): "
                f"{point.get('energy_per_atom')} eV/atom in {point['wall_time_s']:.0f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
