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

Also printed: the model's calls with its error bar (structures.phases.phase_call with the sigma of its card:
tilted / untilted / undetermined) and how often a determined call has the sign of the teacher's dE_tilt; note that
the packaged model's sigma was measured on these same 40 compositions. And: the MAE per tilt system, the compositions whose teacher margin between the two lowest phases is under
10 meV/atom (a call no model with a 10 meV/atom error can make reliably) and agreement on the rest, and the worst
compositions. ``--set trained`` runs the same measure on compositions the packaged model was fine-tuned on: side by
side with the held-out figures, it says whether the errors come from fitting or from generalising.

Usage:  python benchmarks/bench_teacher.py [MODEL ...] [--n 40] [--set held-out|trained]
        [--cache benchmarks/data/bench_teacher_cache.json]
        MODEL: a MACE file, "packaged" (the default), or "chgnet:0.2.0" / "chgnet:r2scan": another checkpoint of the
        teacher's own family, relaxed like the teacher (one at a time), measured the same way. It says how far apart
        two models of one family trained on the same kind of data rank these phases: a yardstick for the targets.
"""

from __future__ import annotations

N_DEFAULT = 40
SEED = 100


def held_out_rows(n: int = N_DEFAULT) -> list[dict]:
    """The benchmark's compositions (fixed: seed 100)."""
    from dp_screen.jobs.active_learning import pool_rows

    return pool_rows(n, SEED)


def held_tenth(composition_ids, seed: int) -> set[str]:
    """The tenth of a round's compositions that scripts/make_default_model_tilts.py never trains on (its test set):
    the first tenth (at least one) of the sorted ids shuffled with the run's seed."""
    import random

    comps = sorted(set(composition_ids))
    random.Random(seed).shuffle(comps)
    return set(comps[: max(1, len(comps) // 10)])


def card_rounds(card: dict) -> list[tuple[list[dict], set[str]]]:
    """(rows, held-out composition ids) of each round a model card's tilt_sets record: the draws of
    scripts/make_default_model_tilts.py, remade from the recorded arguments."""
    from dp_screen.jobs.active_learning import pool_rows

    args = card["tilt_sets"]["args"]
    used, out = {r["composition_id"] for r in held_out_rows()} | set(card["tilt_sets"].get("excluded", [])), []
    for r in range(1, card["tilt_sets"]["rounds"] + 1):
        rows = pool_rows(args["compositions"], args["seed"] + r - 1, exclude=set(used))
        comps = {row["composition_id"] for row in rows}
        out.append((rows, held_tenth(comps, args["seed"])))
        used |= comps
    return out


def packaged_card() -> dict:
    import json

    from dp_screen.mlip.models import default_model_path

    return json.loads(default_model_path().with_suffix(".json").read_text())


def trained_rows(n: int = N_DEFAULT) -> list[dict]:
    """``n`` compositions the packaged model was fine-tuned on: those of the rounds in its card (tilt_sets), less the
    tenth of each round held out as its test set."""
    card = packaged_card()
    if "tilt_sets" not in card:
        raise SystemExit(
            "--set trained needs a packaged model card with tilt_sets (scripts/make_default_model_tilts.py)"
        )
    rows = [row for rows, held in card_rounds(card) for row in rows if row["composition_id"] not in held][:n]
    if not rows:
        raise SystemExit(
            "--set trained: the packaged model's card records no drawn compositions (made with "
            f"--compositions 0 from the labels of {card['tilt_sets']['args'].get('with_labels')})"
        )
    return rows


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
                "volume_per_fu": res.structure.volume / (len(res.structure) / 10),
                "converged": res.converged,
                "failed": res.failed,
                "energy_per_atom": res.energy_per_atom,
                "n_steps": res.n_steps,
            }
            if k % 10 == 9 or k == len(todo) - 1:
                cache_path.parent.mkdir(parents=True, exist_ok=True)
                cache_path.write_text(json.dumps(cache))
                print(f"  teacher relaxations {k + 1}/{len(todo)}", flush=True)
    return cache


def other_chgnet_relaxations(checkpoint: str, items) -> tuple[list, str, str]:
    """Relaxations of the starting structures by another CHGNet checkpoint ("0.2.0", "r2scan"), with the optimiser
    and criteria of the teacher's own (ASE FIRE, Frechet cell filter, symmetry held), one at a time, with progress."""
    import hashlib
    from pathlib import Path

    import chgnet
    from chgnet.model import CHGNet
    from chgnet.model.dynamics import CHGNetCalculator

    from dp_screen.mlip.relax import RelaxSettings, relax_structures_ase

    try:
        other = CHGNet.load(model_name=checkpoint, verbose=False)
    except ValueError as exc:
        raise SystemExit(f"chgnet:{checkpoint}: not a CHGNet checkpoint ({exc})") from exc
    calc, results = CHGNetCalculator(other), []
    for k, (s, _) in enumerate(items):
        results += relax_structures_ase([s], None, RelaxSettings(), calculator=calc)
        if k % 20 == 19 or k == len(items) - 1:
            print(f"  chgnet:{checkpoint} relaxations {k + 1}/{len(items)}", flush=True)
    files = sorted(Path(chgnet.__file__).parent.glob(f"pretrained/{checkpoint}/*"))
    sha = hashlib.sha256(b"".join(f.read_bytes() for f in files if f.is_file())).hexdigest()[:12] if files else "?"
    return results, f"CHGNet {checkpoint}", sha


def evaluate(model_name: str | None, items, teacher_relaxed: dict) -> dict:
    """The model's relaxations, teacher single points at their geometries, and the metrics."""
    from collections import defaultdict

    import numpy as np
    from chgnet.model import CHGNet

    from dp_screen.mlip.models import load_model
    from dp_screen.mlip.relax import RelaxSettings, relax_structures
    from dp_screen.mlip.uncertainty import model_phase_error
    from dp_screen.structures.phases import identify_phase

    chg = CHGNet.load(model_name="0.3.0", verbose=False)
    if model_name and model_name.startswith("chgnet:"):
        # another CHGNet checkpoint as the "student": how far apart two models of the teacher's own family are
        results, name, sha = other_chgnet_relaxations(model_name.split(":", 1)[1], items)
        sigma = None  # no measured error of its own: its calls are unqualified
    else:
        model = load_model(model_name, device="cpu", dtype="float64")
        results = relax_structures([s for s, _ in items], model, RelaxSettings())
        name, sha = model.name, model.sha256[:12]
        sigma = model_phase_error(model.sha256, model.path).sigma_mev
    ok = [i for i, r in enumerate(results) if r.converged and not r.failed]
    structs = [results[i].structure.remove_oxidation_states() for i in ok]
    preds = chg.predict_structure(structs, task="e", batch_size=16)
    teacher_e = {i: float(p["e"]) for i, p in zip(ok, preds, strict=True)}
    by_comp: dict[str, dict[str, tuple[float, float, str]]] = defaultdict(dict)
    for i in ok:
        m = items[i][1]
        phase = identify_phase(results[i].structure, m["ordering"], m["tilt"]).phase
        by_comp[m["composition_id"]][m["tilt"]] = (results[i].energy_per_atom, teacher_e[i], phase)
    diffs, agree, per_tilt, per_comp, gaps = [], [], defaultdict(list), {}, []
    for cid, tilts in by_comp.items():
        if "a0a0a0" not in tilts or len(tilts) < 2:
            continue
        e0, t0, _ = tilts["a0a0a0"]
        mine = {k: 1e3 * ((e - e0) - (t - t0)) for k, (e, t, _) in tilts.items() if k != "a0a0a0"}
        diffs += list(mine.values())
        for k, d in mine.items():
            per_tilt[k].append(abs(d))
        per_comp[cid] = float(np.mean(np.abs(list(mine.values()))))
        lowest_model = tilts[min(tilts, key=lambda k: tilts[k][0])][2]
        lowest_teacher = tilts[min(tilts, key=lambda k: tilts[k][1])][2]
        agree.append(lowest_model == lowest_teacher)
        # the teacher's margin between its lowest phase and the next distinct one (meV/atom): how hard the call is
        teacher_by_phase: dict[str, float] = {}
        for _, t, ph in tilts.values():
            teacher_by_phase[ph] = min(t, teacher_by_phase.get(ph, np.inf))
        ordered = sorted(teacher_by_phase.values())
        gaps.append((1e3 * (ordered[1] - ordered[0]) if len(ordered) > 1 else np.inf, agree[-1]))
    calls = teacher_checked_calls(by_comp, sigma)
    vol = []
    for i in ok:
        m = items[i][1]
        ref = teacher_relaxed.get(f"{m['composition_id']}|{m['tilt']}")
        if ref and ref["converged"] and not ref["failed"]:
            vol.append(results[i].structure.volume / (len(results[i].structure) / 10) / ref["volume_per_fu"] - 1)
    diffs, vol = np.array(diffs), np.array(vol)
    return {
        "model": name,
        "sha256": sha,
        "n_structures": len(items),
        "n_ranked": len(ok),
        "failed": sum(r.failed for r in results),
        "not_converged": sum(not r.converged and not r.failed for r in results),
        "phase_de_mae_mev_atom": float(np.abs(diffs).mean()),
        "phase_de_rmse_mev_atom": float(np.sqrt((diffs**2).mean())),
        "n_differences": len(diffs),
        "lowest_phase_agreement": float(np.mean(agree)),
        "n_compositions": len(agree),
        "volume_within_3pct": float(np.mean(np.abs(vol) < 0.03)) if len(vol) else None,
        "volume_error_median_pct": float(100 * np.median(vol)) if len(vol) else None,
        "n_volumes": len(vol),
        "phase_de_mae_by_tilt": {k: float(np.mean(v)) for k, v in sorted(per_tilt.items())},
        "worst_compositions": dict(sorted(per_comp.items(), key=lambda kv: -kv[1])[:5]),
        "teacher_margin_below_10_mev": sum(g < 10 for g, _ in gaps),
        "lowest_phase_agreement_margin_above_10_mev": float(np.mean([a for g, a in gaps if g >= 10]))
        if any(g >= 10 for g, _ in gaps)
        else None,
        "teacher_de_mean_abs_mev_atom": float(
            np.mean(
                [
                    abs(1e3 * (t - tilts["a0a0a0"][1]))
                    for tilts in by_comp.values()
                    if "a0a0a0" in tilts
                    for k, (_, t, _) in tilts.items()
                    if k != "a0a0a0"
                ]
            )
        ),
        "calls": calls,
    }


def teacher_checked_calls(by_comp: dict, sigma: float | None) -> dict:
    """The model's tilted / untilted / undetermined calls (structures.phases.phase_call with ``sigma``) over its
    ranked variants, each composition's phases by the phase it ended in, checked against the teacher's energies at
    the same geometries: a tilted call is right when the teacher puts the lowest tilted phase below the untilted one,
    an untilted call when it does not (or no start stayed tilted); ``teacher_lowest_within`` is how often the
    teacher's lowest phase is among the phases the call lists within 2 sigma."""
    from dp_screen.structures.phases import UNTILTED, phase_call

    counts = {"tilted": 0, "untilted": 0, "undetermined": 0}
    right = within = n_within = 0
    for tilts in by_comp.values():
        model_e: dict[str, float] = {}
        teacher_e: dict[str, float] = {}
        for e, t, ph in tilts.values():
            model_e[ph], teacher_e[ph] = min(e, model_e.get(ph, e)), min(t, teacher_e.get(ph, t))
        low = min(model_e.values())
        call = phase_call({p: 1e3 * (e - low) for p, e in model_e.items()}, sigma)
        counts[call["call"]] += 1
        tilted = {p: t for p, t in teacher_e.items() if p != UNTILTED}
        teacher_tilted = (
            None if UNTILTED not in teacher_e else bool(tilted) and min(tilted.values()) < teacher_e[UNTILTED]
        )
        if call["call"] != "undetermined" and teacher_tilted is not None:
            right += (call["call"] == "tilted") == teacher_tilted
        n_within += 1
        within += min(teacher_e, key=teacher_e.get) in call["phases_within_error"].split(" | ")
    determined = counts["tilted"] + counts["untilted"]
    return {
        "sigma_mev": sigma,
        **counts,
        "determined_right": right,
        "determined": determined,
        "determined_right_fraction": right / determined if determined else None,
        "teacher_lowest_within": within / n_within if n_within else None,
    }


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
    parser.add_argument(
        "--cache",
        default=str(root / "benchmarks" / "data" / "bench_teacher_cache.json"),
        help="teacher relaxations (committed: 200 CHGNet relaxations, about 14 min on one core)",
    )
    parser.add_argument(
        "--update-card",
        action="store_true",
        help="write the packaged model's figures into its card (phases_vs_teacher), with those of "
        "any chgnet:CHECKPOINT given beside it as yardsticks",
    )
    parser.add_argument(
        "--set",
        choices=["held-out", "trained"],
        default="held-out",
        help="held-out: the benchmark's compositions; trained: compositions the packaged model was "
        "fine-tuned on (no teacher relaxations, so no volumes): with held-out, whether the phase "
        "errors come from fitting or from generalising to new compositions",
    )
    parser.add_argument("--save", action="store_true", help="write benchmarks/results/bench_teacher.json (docs)")
    args = parser.parse_args()
    if args.set == "trained":
        items, teacher = build_items(trained_rows(args.n)), {}
        if args.update_card:
            raise SystemExit("--update-card records the held-out figures; drop it or --set trained")
        print(f"{len(items)} structures ({args.n} compositions the packaged model was trained on x 5 tilt systems)")
    else:
        items = build_items(held_out_rows(args.n))
        t0 = time.time()
        teacher = teacher_relaxations(items, args.cache)
        print(
            f"{len(items)} structures ({args.n} compositions x 5 tilt systems); teacher relaxations ready in "
            f"{time.time() - t0:.0f} s"
        )
    measured = {}
    for name in args.models:
        t0 = time.time()
        m = measured[name] = evaluate(None if name == "packaged" else name, items, teacher)
        print(json.dumps({**m, "seconds": round(time.time() - t0)}))
        print(
            f"{m['model']} ({m['sha256']}): phase dE MAE {m['phase_de_mae_mev_atom']:.1f} meV/atom (RMSE "
            f"{m['phase_de_rmse_mev_atom']:.1f}; teacher |dE| mean {m['teacher_de_mean_abs_mev_atom']:.1f}), "
            f"lowest phase agrees {100 * m['lowest_phase_agreement']:.0f}% of {m['n_compositions']}"
            + (
                f", volume within 3% of the teacher's {100 * m['volume_within_3pct']:.0f}% of {m['n_volumes']} "
                f"(median {m['volume_error_median_pct']:+.1f}%)"
                if m["n_volumes"]
                else ""
            )
            + f", failed {m['failed']}, not converged {m['not_converged']} of {m['n_structures']}"
        )
        margin = m["lowest_phase_agreement_margin_above_10_mev"]
        print(
            "  dE MAE by tilt system: "
            + ", ".join(f"{k} {v:.1f}" for k, v in m["phase_de_mae_by_tilt"].items())
            + f"; {m['teacher_margin_below_10_mev']} of {m['n_compositions']} compositions have a teacher margin "
            f"under 10 meV/atom between their two lowest phases"
            + (f" (agreement on the others {100 * margin:.0f}%)" if margin is not None else "")
        )
        print(
            "  worst compositions (mean |dE error|, meV/atom): "
            + ", ".join(f"{k} {v:.0f}" for k, v in m["worst_compositions"].items())
        )
        c = m["calls"]
        sig = "unqualified (no measured error)" if c["sigma_mev"] is None else f"sigma {c['sigma_mev']:.1f} meV/atom"
        frac = "-" if c["determined_right_fraction"] is None else f"{100 * c['determined_right_fraction']:.0f}%"
        within = "-" if c["teacher_lowest_within"] is None else f"{100 * c['teacher_lowest_within']:.0f}%"
        print(
            f"  calls ({sig}): {c['tilted']} tilted, {c['untilted']} untilted, {c['undetermined']} undetermined; "
            f"determined calls right (teacher's sign of dE_tilt) {c['determined_right']}/{c['determined']} ({frac}); "
            f"teacher's lowest phase among those within 2 sigma: {within}"
        )
    if args.save:
        figures = {}
        for m in measured.values():
            c = m["calls"]
            figures[f"{m['model']} ({m['sha256']})"] = (
                f"phase dE MAE {m['phase_de_mae_mev_atom']:.1f} meV/atom (teacher |dE| "
                f"{m['teacher_de_mean_abs_mev_atom']:.1f}); lowest phase agrees {100 * m['lowest_phase_agreement']:.0f}%"
                f" of {m['n_compositions']}"
                + (f"; volume within 3% {100 * m['volume_within_3pct']:.0f}%" if m["n_volumes"] else "")
                + f"; calls {c['tilted']} tilted, {c['untilted']} untilted, {c['undetermined']} undetermined, "
                f"determined right {c['determined_right']}/{c['determined']}"
            )
        from _results import save_figures  # benchmarks/_results.py, next to this script

        save_figures(
            "bench_teacher", figures, note=f"{args.set} compositions ({args.n}) x 5 tilt systems; teacher CHGNet"
        )
    if args.update_card and "packaged" in measured:
        update_card(measured["packaged"], args.n, {k: v for k, v in measured.items() if k.startswith("chgnet:")})


def update_card(m: dict, n: int, yardsticks: dict | None = None) -> None:
    """The packaged model's phase ranking against its teacher, into its card (printed next to every phase table)."""
    from dp_screen import __version__
    from dp_screen.mlip.models import update_packaged_model_card

    update_packaged_model_card(
        "phases_vs_teacher",
        {
            "summary": f"vs its teacher CHGNet on {n} held-out compositions x 5 tilt systems (teacher single points at "
            f"its relaxed geometries): phase energy differences MAE {m['phase_de_mae_mev_atom']:.0f} meV/atom "
            f"(teacher's own |dE| {m['teacher_de_mean_abs_mev_atom']:.0f}), lowest phase agrees in "
            f"{100 * m['lowest_phase_agreement']:.0f}%, volume within 3% of the teacher's for "
            f"{100 * m['volume_within_3pct']:.0f}%, {m['failed'] + m['not_converged']} of {m['n_structures']} "
            f"relaxations failed or unconverged"
            + "".join(
                f"; for scale, {y['model']} measured the same way: {y['phase_de_mae_mev_atom']:.0f} "
                f"meV/atom, {100 * y['lowest_phase_agreement']:.0f}%, {100 * y['volume_within_3pct']:.0f}%"
                for y in (yardsticks or {}).values()
            ),
            "made_by": "benchmarks/bench_teacher.py --update-card",
            **m,
            "dp_screen_version": __version__,
            **({"yardsticks": yardsticks} if yardsticks else {}),
        },
    )


if __name__ == "__main__":
    main()
