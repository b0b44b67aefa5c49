"""How a model ranks phases against its teacher (CHGNet) on held-out compositions.

40 random tau-perovskite rock-salt compositions (seed 100; kept out of scripts/make_default_model_al.py's pool) x
the 5 default tilt systems, each built by bond valence and relaxed with the model (symmetry held):
- teacher single points at the model's relaxed geometry: MAE of the phase energy differences E(tilt) - E(a0a0a0)
  (meV/atom) over the variants both relax to a ranked end, and lowest-phase agreement;
- teacher relaxations (CHGNet through ASE: FIRE on FrechetCellFilter with FixSymmetry, same criteria) for the
  volumes: fraction of variants whose relaxed volume is within 3% of the teacher's;
- blow-ups and non-convergence of the model's relaxations.
Teacher relaxations are cached in --cache (they do not depend on the model; the cache of the 40 default
compositions is committed, benchmarks/data/bench_teacher_cache.json, and is remade if deleted).

Usage:  python benchmarks/bench_teacher.py [MODEL ...] [--n 40] [--cache benchmarks/data/bench_teacher_cache.json]
        (MODEL: a MACE file, or "packaged"; default: packaged)
"""

from __future__ import annotations

N_DEFAULT = 40
SEED = 100


def held_out_rows(n: int = N_DEFAULT) -> list[dict]:
    """The benchmark's compositions (fixed: seed 100)."""
    from dp_screen.jobs.active_learning import pool_rows

    return pool_rows(n, SEED)


def teacher_relaxations(items, cache_path) -> dict:
    """CHGNet relaxations of the starting structures (cached per composition|tilt: they do not depend on the model)."""
    import json
    from pathlib import Path

    cache_path = Path(cache_path)
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    todo = [(s, m) for s, m in items if f"{m['composition_id']}|{m['tilt']}" not in cache]
    if todo:
        from chgnet.model import CHGNet
        from chgnet.model.dynamics import CHGNetCalculator

        from dp_screen.mlip.relax import RelaxSettings, relax_structures_ase

        calc = CHGNetCalculator(CHGNet.load(model_name="0.3.0", verbose=False))
        for k, (s, m) in enumerate(todo):
            (res,) = relax_structures_ase([s], None, RelaxSettings(), calculator=calc)
            cache[f"{m['composition_id']}|{m['tilt']}"] = {
                "volume_per_fu": res.structure.volume / (len(res.structure) / 10), "converged": res.converged,
                "failed": res.failed, "energy_per_atom": res.energy_per_atom, "n_steps": res.n_steps}  # fmt: skip
            if k % 10 == 9 or k == len(todo) - 1:
                cache_path.parent.mkdir(parents=True, exist_ok=True)
                cache_path.write_text(json.dumps(cache))
                print(f"  teacher relaxations {k + 1}/{len(todo)}", flush=True)
    return cache


def evaluate(model_name: str | None, items, teacher_relaxed: dict) -> dict:
    """The model's relaxations, teacher single points at their geometries, and the metrics."""
    from collections import defaultdict

    import numpy as np
    from chgnet.model import CHGNet

    from dp_screen.mlip.models import load_model
    from dp_screen.mlip.relax import RelaxSettings, relax_structures
    from dp_screen.structures.phases import identify_phase

    model = load_model(model_name, device="cpu", dtype="float64")
    results = relax_structures([s for s, _ in items], model, RelaxSettings())
    ok = [i for i, r in enumerate(results) if r.converged and not r.failed]
    chg = CHGNet.load(model_name="0.3.0", verbose=False)
    structs = [results[i].structure.remove_oxidation_states() for i in ok]
    preds = chg.predict_structure(structs, task="e", batch_size=16)
    teacher_e = {i: float(p["e"]) for i, p in zip(ok, preds, strict=True)}
    by_comp: dict[str, dict[str, tuple[float, float, str]]] = defaultdict(dict)
    for i in ok:
        m = items[i][1]
        phase = identify_phase(results[i].structure, m["ordering"], m["tilt"]).phase
        by_comp[m["composition_id"]][m["tilt"]] = (results[i].energy_per_atom, teacher_e[i], phase)
    diffs, agree = [], []
    for tilts in by_comp.values():
        if "a0a0a0" not in tilts or len(tilts) < 2:
            continue
        e0, t0, _ = tilts["a0a0a0"]
        diffs += [1e3 * ((e - e0) - (t - t0)) for k, (e, t, _) in tilts.items() if k != "a0a0a0"]
        lowest_model = tilts[min(tilts, key=lambda k: tilts[k][0])][2]
        lowest_teacher = tilts[min(tilts, key=lambda k: tilts[k][1])][2]
        agree.append(lowest_model == lowest_teacher)
    vol = []
    for i in ok:
        m = items[i][1]
        ref = teacher_relaxed.get(f"{m['composition_id']}|{m['tilt']}")
        if ref and ref["converged"] and not ref["failed"]:
            vol.append(results[i].structure.volume / (len(results[i].structure) / 10) / ref["volume_per_fu"] - 1)
    diffs, vol = np.array(diffs), np.array(vol)
    return {
        "model": model.name, "sha256": model.sha256[:12], "n_structures": len(items), "n_ranked": len(ok),
        "failed": sum(r.failed for r in results), "not_converged": sum(not r.converged and not r.failed for r in results),
        "phase_de_mae_mev_atom": float(np.abs(diffs).mean()), "phase_de_rmse_mev_atom": float(np.sqrt((diffs**2).mean())),
        "n_differences": len(diffs), "lowest_phase_agreement": float(np.mean(agree)), "n_compositions": len(agree),
        "volume_within_3pct": float(np.mean(np.abs(vol) < 0.03)), "volume_error_median_pct": float(100 * np.median(vol)),
        "n_volumes": len(vol),
        "teacher_de_mean_abs_mev_atom": float(np.mean([abs(1e3 * (t - tilts["a0a0a0"][1])) for tilts in by_comp.values()
                                                       if "a0a0a0" in tilts for k, (_, t, _) in tilts.items()
                                                       if k != "a0a0a0"])),
    }  # fmt: skip


def main() -> None:
    import argparse
    import json
    import time
    from pathlib import Path

    from dp_screen.jobs.active_learning import build_items

    root = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=["packaged"])
    parser.add_argument("--n", type=int, default=N_DEFAULT)
    parser.add_argument("--cache", default=str(root / "benchmarks" / "data" / "bench_teacher_cache.json"),
                        help="teacher relaxations (committed: 200 CHGNet relaxations, about 14 min on one core)")
    parser.add_argument("--update-card", action="store_true",
                        help="write the packaged model's figures into its card (phases_vs_teacher)")
    args = parser.parse_args()
    items = build_items(held_out_rows(args.n))
    t0 = time.time()
    teacher = teacher_relaxations(items, args.cache)
    print(f"{len(items)} structures ({args.n} compositions x 5 tilt systems); teacher relaxations ready in "
          f"{time.time() - t0:.0f} s")  # fmt: skip
    for name in args.models:
        t0 = time.time()
        m = evaluate(None if name == "packaged" else name, items, teacher)
        print(json.dumps({**m, "seconds": round(time.time() - t0)}))
        print(f"{m['model']} ({m['sha256']}): phase dE MAE {m['phase_de_mae_mev_atom']:.1f} meV/atom (RMSE "
              f"{m['phase_de_rmse_mev_atom']:.1f}; teacher |dE| mean {m['teacher_de_mean_abs_mev_atom']:.1f}), "
              f"lowest phase agrees {100 * m['lowest_phase_agreement']:.0f}% of {m['n_compositions']}, volume within "
              f"3% of the teacher's {100 * m['volume_within_3pct']:.0f}% of {m['n_volumes']} (median "
              f"{m['volume_error_median_pct']:+.1f}%), failed {m['failed']}, not converged {m['not_converged']} of "
              f"{m['n_structures']}")  # fmt: skip
        if args.update_card and name == "packaged":
            update_card(m, args.n)


def update_card(m: dict, n: int) -> None:
    """The packaged model's phase ranking against its teacher, into its card (printed next to every phase table)."""
    from dp_screen import __version__
    from dp_screen.mlip.models import update_packaged_model_card

    update_packaged_model_card("phases_vs_teacher", {
        "summary": f"vs its teacher CHGNet on {n} held-out compositions x 5 tilt systems (teacher single points at "
                   f"its relaxed geometries): phase energy differences MAE {m['phase_de_mae_mev_atom']:.0f} meV/atom "
                   f"(teacher's own |dE| {m['teacher_de_mean_abs_mev_atom']:.0f}), lowest phase agrees in "
                   f"{100 * m['lowest_phase_agreement']:.0f}%, volume within 3% of the teacher's for "
                   f"{100 * m['volume_within_3pct']:.0f}%, {m['failed'] + m['not_converged']} of {m['n_structures']} "
                   f"relaxations failed or unconverged",
        "made_by": "benchmarks/bench_teacher.py --update-card", **m, "dp_screen_version": __version__,
    })  # fmt: skip


if __name__ == "__main__":
    main()
