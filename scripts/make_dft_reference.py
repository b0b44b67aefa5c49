"""Make the DFT reference set shipped in ``src/dp_screen/data/dft_reference`` (read by ``dp_screen.dft.reference``).

For each composition below (rock-salt B ordering; eight closed-shell ones, the open-shell ones, the rest) and each of the
four tilt systems a0a0a0, a0a0c-, a-a-a-, a0b-b-: build the bond-valence structure, relax it with the packaged
model (symmetry held, fmax 0.02 eV/A, stress 0.2 GPa), reduce it to its 10-atom primitive cell, and run one CP2K
single point with the models' Hamiltonian (``dp_screen.dft.hamiltonian``: UKS with high-spin moments for
open-shell cations, Materials Project +U on oxides and fluorides). Every finished point (or failure, with its
reason) is appended to ``points.jsonl`` at once, so a killed run restarted with the same command repeats nothing;
``card.json`` is rewritten after every point with what was made and its cost in CP2K core-hours.

    OMP_NUM_THREADS=1 python scripts/make_dft_reference.py [--nproc 2] [--only closed|open] [--limit N]

Needs cp2k (apt-get install -y cp2k). Closed-shell points took 0.4-6 minutes on 2 cores (2 on average; about 14 SCF steps);
open-shell (UKS) points took 2.4-15 minutes here: Cr3+ 32-40 SCF steps, Ru5+ 63-75, Fe3+ 67, or 80 Broyden steps
and then the Kerker fallback of ``CP2KSettings.scf_fallbacks`` (recorded per point as ``scf_attempts``); the Ti3+, V3+
and tilted Fe3+ cells were run with ``--scf-fallbacks '[{"mixing": "KERKER_MIXING", "mixing_alpha": 0.05,
"max_scf": 60}]'`` and seven of them were accepted on the energy criterion (``CP2KSettings.ediff_per_atom``).
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

# (A, A', B, B', X) with oxidation states; chosen across X = O, F, Cl, Br, I and across A / B chemistries
# (alkali and alkaline-earth A; s-, d0-, d10- and p-block B). None has an element the Materials Project gives a +U
# on (Co, Cr, Fe, Mn, Mo, Ni, V, W in oxides and fluorides, even d0 W6+): CP2K 2023.1 has +U only at the Gamma
# point, so those run as Gamma-point supercells (270 atoms for a 3x3x3 grid), beyond this set's budget. The
# open-shell ones are halides, where MP applies no +U, and an oxide of a 4d ion MP gives no +U (Ru5+): UKS with
# high-spin moments, with k-points; d3 (Cr3+, Ru5+), d5 (Fe3+) and the orbitally degenerate d1 / d2 (Ti3+, V3+).
CLOSED_SHELL = [
    (("Ba", 2), ("Ba", 2), ("Y", 3), ("Nb", 5), ("O", -2)),
    (("Sr", 2), ("Sr", 2), ("Al", 3), ("Ta", 5), ("O", -2)),
    (("Ca", 2), ("Ca", 2), ("Al", 3), ("Nb", 5), ("O", -2)),
    (("Ba", 2), ("Ba", 2), ("In", 3), ("Ta", 5), ("O", -2)),
    (("K", 1), ("K", 1), ("Na", 1), ("Al", 3), ("F", -1)),
    (("Cs", 1), ("Cs", 1), ("Na", 1), ("Y", 3), ("F", -1)),
    (("Rb", 1), ("Rb", 1), ("K", 1), ("Sc", 3), ("F", -1)),
    (("Cs", 1), ("Cs", 1), ("Ag", 1), ("Bi", 3), ("Cl", -1)),
    (("Cs", 1), ("Cs", 1), ("Na", 1), ("In", 3), ("Cl", -1)),
    (("Rb", 1), ("Rb", 1), ("Na", 1), ("Sb", 3), ("Cl", -1)),
    (("Cs", 1), ("Cs", 1), ("Ag", 1), ("Bi", 3), ("Br", -1)),
    (("Cs", 1), ("Cs", 1), ("Na", 1), ("Bi", 3), ("I", -1)),
]
OPEN_SHELL = [
    (("Cs", 1), ("Cs", 1), ("Na", 1), ("Cr", 3), ("Cl", -1)),
    (("Cs", 1), ("Cs", 1), ("Na", 1), ("Fe", 3), ("Cl", -1)),
    (("Ba", 2), ("Ba", 2), ("Y", 3), ("Ru", 5), ("O", -2)),
    (("Cs", 1), ("Cs", 1), ("Na", 1), ("Ti", 3), ("Cl", -1)),
    (("Cs", 1), ("Cs", 1), ("K", 1), ("V", 3), ("Br", -1)),
]


def relaxed_cells(species_list, tilts, model):
    """{(formula, tilt): (10-atom primitive relaxed structure, relaxation record)} with the packaged model."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    from dp_screen.mlip.relax import RelaxSettings, relax_structures
    from dp_screen.structures.perovskite import build_bvm_structure

    settings = RelaxSettings(fmax=0.02, max_steps=500)
    built, keys = [], []
    for sp in species_list:
        for tilt in tilts:
            built.append(build_bvm_structure(sp, "rocksalt", tilt).structure)
            keys.append((sp.formula, tilt))
    results = relax_structures(built, model, settings)
    out = {}
    for key, res in zip(keys, results, strict=True):
        prim = SpacegroupAnalyzer(res.structure, symprec=1e-3).find_primitive(keep_site_properties=True)
        sga = SpacegroupAnalyzer(prim, symprec=1e-3)
        out[key] = (
            prim,
            {
                "mlip_energy_per_atom": res.energy_per_atom,
                "converged": bool(res.converged),
                "n_steps": int(res.n_steps),
                "space_group": int(sga.get_space_group_number()),
                "relax_settings": settings.as_dict(),
            },
        )
    return out


def cp2k_version(output_file: str) -> str | None:
    text = Path(output_file).read_text(errors="replace") if Path(output_file).exists() else ""
    m = re.search(r"CP2K\|\s+version string:\s+(.+)", text)
    return m.group(1).strip() if m else None


def write_card(out_dir: Path, points: list[dict], args, model_sha: str) -> None:
    done = [p for p in points if not p.get("error")]
    cpu_s = sum(p.get("wall_time_s", 0.0) * p.get("settings", {}).get("nproc", 1) for p in done)
    card = {
        "what": "CP2K single points at the packaged model's relaxed geometries (rock-salt B ordering, 10-atom "
        "primitive cells), for checking MLIP phase energies, forces and stresses against DFT",
        "made_by": "scripts/make_dft_reference.py",
        "updated": datetime.now(UTC).isoformat(),
        "geometry_model_sha256": model_sha,
        "tilts": list(args.tilts.split(",")),
        "n_points": len(done),
        "n_scf_converged": sum(bool(p.get("scf_converged")) for p in done),
        "n_failed": len(points) - len(done),
        "failures": {p["key"]: p["error"] for p in points if p.get("error")},
        "compositions": sorted({p["formula"] for p in done}),
        "methods": {m: sum(p.get("method") == m for p in done) for m in sorted({p.get("method") for p in done})},
        "spin_polarised_points": sum(bool(p.get("hamiltonian", {}).get("spin_polarised")) for p in done),
        "scf_fallback_points": sorted(p["key"] for p in done if len(p.get("scf_attempts") or []) > 1),
        # accepted on the energy criterion (CP2KSettings.ediff_per_atom), not on EPS_SCF
        "scf_energy_accepted_points": sorted(p["key"] for p in done if p.get("scf_converged_by") == "energy"),
        "cp2k_versions": sorted({p.get("cp2k_version") or "?" for p in done}),
        "cost": {
            "cp2k_core_hours": round(cpu_s / 3600, 3),
            "wall_hours": round(sum(p.get("wall_time_s", 0.0) for p in done) / 3600, 3),
            "machine": "2-core x86 CPU (the development machine), MPI over nproc processes, 1 OpenMP thread",
        },
        "settings": done[0]["settings"] if done else None,
    }
    (out_dir / "card.json").write_text(json.dumps(card, indent=1) + "\n")


def main() -> None:
    from dp_screen.dft.cp2k import CP2KError, CP2KSettings
    from dp_screen.dft.reference import REFERENCE_TILTS, point_key, read_points, reference_dir
    from dp_screen.errors import DPScreenError
    from dp_screen.jobs.dft import dft_single_point
    from dp_screen.mlip.models import default_model_path, file_sha256, load_model
    from dp_screen.structures.perovskite import SiteSpeciesSet

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--tilts", default=",".join(REFERENCE_TILTS))
    parser.add_argument("--only", choices=("closed", "open"), default=None)
    parser.add_argument("--limit", type=int, default=None, help="at most this many new points")
    parser.add_argument(
        "--formulas",
        default=None,
        help="comma-separated formulas of the chosen set to compute, in this order (default: all)",
    )
    parser.add_argument(
        "--retry-unconverged",
        action="store_true",
        help="recompute the points stored as failed or SCF-unconverged (e.g. after new SCF fallbacks)",
    )
    parser.add_argument(
        "--scf-fallbacks",
        default=None,
        help="JSON list of CP2KSettings overrides tried in turn when the SCF does not converge "
        "(default: CP2KSettings' own); recorded with each point's settings",
    )
    parser.add_argument("--out", default=None, help="folder of points.jsonl and card.json (default: the package's)")
    args = parser.parse_args()
    overrides = {}
    if args.scf_fallbacks:
        try:
            fallbacks = json.loads(args.scf_fallbacks)
        except json.JSONDecodeError as exc:
            raise SystemExit(
                f"--scf-fallbacks {args.scf_fallbacks!r} is not JSON ({exc}); give a list of dicts"
            ) from exc
        if not isinstance(fallbacks, list):
            raise SystemExit(
                f"--scf-fallbacks {args.scf_fallbacks!r}: give a JSON list of dicts of CP2KSettings fields"
            )
        overrides["scf_fallbacks"] = tuple(fallbacks)
    try:
        cp2k = CP2KSettings(nproc=args.nproc, **overrides)
    except CP2KError as exc:
        raise SystemExit(f"--scf-fallbacks: {exc}") from exc
    out_dir = Path(args.out) if args.out else reference_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    points_file = out_dir / "points.jsonl"
    # the open-shell ones after the first eight closed-shell ones, so that a run cut short has some of each
    chosen = {"closed": CLOSED_SHELL, "open": OPEN_SHELL}.get(
        args.only, CLOSED_SHELL[:8] + OPEN_SHELL + CLOSED_SHELL[8:]
    )
    species = [SiteSpeciesSet(*row) for row in chosen]
    if args.formulas:
        known = {sp.formula: sp for sp in species}
        wanted = [f.strip() for f in args.formulas.split(",") if f.strip()]
        unknown = [f for f in wanted if f not in known]
        if unknown:
            raise SystemExit(f"--formulas: {', '.join(unknown)} not in the chosen set; allowed: {', '.join(known)}")
        species = [known[f] for f in wanted]
    tilts = args.tilts.split(",")
    points = read_points(points_file)
    if args.retry_unconverged:
        bad = [p["key"] for p in points if p.get("error") or not p.get("scf_converged")]
        if bad:
            points = [p for p in points if p["key"] not in bad]
            tmp = points_file.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(json.dumps(p) + "\n" for p in points))
            tmp.replace(points_file)
            print(f"recomputing {len(bad)} failed or unconverged point(s): {', '.join(bad)}", flush=True)
    done = {p["key"] for p in points}
    todo = [(sp, t) for sp in species for t in tilts if point_key(sp.formula, t) not in done]
    if args.limit is not None:
        todo = todo[: args.limit]
    print(f"{len(done)} points already in {points_file}; {len(todo)} to compute", flush=True)
    if not todo:
        return
    model_path = default_model_path()
    model_sha = file_sha256(model_path)
    cells = relaxed_cells(sorted({sp for sp, _ in todo}, key=species.index), tilts, load_model(None, device="cpu"))
    work = Path(tempfile.mkdtemp(prefix="dp_screen_dft_reference_"))
    for n, (sp, tilt) in enumerate(todo, start=1):
        key = point_key(sp.formula, tilt)
        structure, relax = cells[(sp.formula, tilt)]
        point = {
            "key": key,
            "formula": sp.formula,
            "tilt": tilt,
            "ordering": "rocksalt",
            "species": {"A": sp.A, "A2": sp.A2, "B": sp.B, "B2": sp.B2, "X": sp.X},
            "n_atoms": len(structure),
            "structure": structure.as_dict(),
            "geometry_model_sha256": model_sha,
            **relax,
        }
        t0 = time.perf_counter()
        try:
            res = dft_single_point(structure, cp2k, work / key.replace("|", "_"))
            point.update(res)
            point["cp2k_version"] = cp2k_version(res["output_file"])
            for k in ("output_file",):
                point.pop(k, None)
        except (CP2KError, DPScreenError) as exc:
            point.update({"error": str(exc), "settings": cp2k.settings_dict(), "wall_time_s": time.perf_counter() - t0})
        with points_file.open("a") as fh:
            fh.write(json.dumps(point) + "\n")
        points.append(point)
        write_card(out_dir, points, args, model_sha)
        status = point.get("error") or (
            f"E = {point['energy_per_atom']:.4f} eV/atom, {point['method']}, "
            f"SCF {'converged' if point['scf_converged'] else 'NOT converged'} "
            f"({point.get('scf_steps')} steps, {len(point.get('scf_attempts') or [])} attempt(s))"
        )
        print(
            f"[{n}/{len(todo)}] {key} ({len(structure)} atoms, SG {relax['space_group']}): {status} "
            f"({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
