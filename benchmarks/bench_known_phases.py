"""Known answers: build, relax and rank experimentally characterised double perovskites with each model given.

For every compound of ``dp_screen.structures.known_phases`` (observed space group and source in that module) the
bond-valence starting structures of the default tilt systems of its ordering are built, relaxed with the model
(symmetry held, the default criteria of ``RelaxSettings``; ``--free`` relaxes freely), gated (converged, still a
perovskite) and ranked under the phase each ended in, as ``dp-screen relax`` does. Printed per model: the predicted
ground state against the observed tilt system, how many are right (overall, cubic, tilted), the call with the
model's error bar (tilted / untilted / undetermined, structures.phases.phase_call) and how often a determined
call has the observed sense, and the relaxed
volume per formula unit of the observed phase against experiment (PBE-trained models overestimate volumes by a
few %; see README).

    python benchmarks/bench_known_phases.py                 # the packaged model
    python benchmarks/bench_known_phases.py model.model ... # other MACE files too ("default": the packaged one)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")


def evaluate(
    model_name: str | None, free: bool, max_steps: int, names: list[str] | None, phase_error: float | None = None
) -> dict:
    from dp_screen.jobs.relax import phase_summary
    from dp_screen.mlip.models import load_model
    from dp_screen.mlip.relax import RelaxSettings, relax_structures
    from dp_screen.mlip.uncertainty import model_phase_error, user_phase_error
    from dp_screen.schemas.relaxation import exclusion
    from dp_screen.structures.known_phases import KNOWN_PHASES
    from dp_screen.structures.perovskite import SiteSpeciesSet, build_bvm_structure
    from dp_screen.structures.perovskite_check import check_perovskite
    from dp_screen.structures.phases import identify_phase
    from dp_screen.structures.tilts import DEFAULT_TILTS

    model = load_model(model_name, device="cpu", dtype="float64")
    error = user_phase_error(phase_error) if phase_error is not None else model_phase_error(model.sha256, model.path)
    settings = RelaxSettings(fix_symmetry=not free, max_steps=max_steps)
    compounds = [KNOWN_PHASES[n] for n in (names or KNOWN_PHASES)]
    jobs, structures = [], []
    for k in compounds:
        species = SiteSpeciesSet(*k.sites)
        for tilt in DEFAULT_TILTS[k.ordering]:
            jobs.append((k, tilt))
            structures.append(build_bvm_structure(species, k.ordering, tilt).structure)
    t0 = time.perf_counter()
    results = relax_structures(structures, model, settings)
    seconds = time.perf_counter() - t0
    rows = []
    for k in compounds:
        variants = []
        for (kk, tilt), res in zip(jobs, results, strict=True):
            if kk is not k:
                continue
            phase = None if res.failed else identify_phase(res.structure, k.ordering, tilt)
            check = None if res.failed else check_perovskite(res.structure)
            variants.append(
                {
                    "ordering": k.ordering,
                    "start_tilt": tilt,
                    "phase_tilt": phase.phase if phase else None,
                    "energy_per_atom": res.energy_per_atom,
                    "structure_id": tilt,
                    "excluded": exclusion(res.failed, res.converged, None if check is None else check.ok),
                    "volume_per_fu": res.structure.volume / (len(res.structure) / 10),
                }
            )
        summary = phase_summary(variants, error)
        observed = k.observed_tilt
        same = [v for v in variants if v["excluded"] is None and v["phase_tilt"] == observed]
        v_obs = min(same, key=lambda v: v["energy_per_atom"])["volume_per_fu"] if same else None
        # the best guess (as before error bars): the lowest phase, or the untilted one when the lowest is within
        # 1 meV/atom of it; and the call with its error bar
        o = summary["orderings"].get(k.ordering) or {}
        de = o.get("dE_untilted_mev_atom")
        predicted = o.get("lowest") if de is None or de > 1.0 else "a0a0a0"
        call = o.get("call")
        rows.append(
            {
                "name": k.name,
                "observed_sg": k.space_group,
                "observed": observed,
                "predicted": predicted,
                "lowest": summary["lowest"],
                "dE_mev": summary["dE_untilted_mev_atom"],
                "right": predicted == observed,
                "call": call,
                "phases_within_error": o.get("phases_within_error"),
                "dE_tilt_mev": o.get("dE_tilt_mev_atom"),
                # a determined call is right when it has the observed sense (tilted or not)
                "call_right": None if call in (None, "undetermined") else (call == "tilted") == (observed != "a0a0a0"),
                "observed_within_error": observed in (o.get("phases_within_error") or "").split(" | "),
                "excluded": summary["excluded"],
                "volume_error_pct": None
                if v_obs is None or k.volume_per_fu is None
                else 100 * (v_obs / k.volume_per_fu - 1),
            }
        )
    return {
        "model": model.provenance(),
        "settings": settings.settings_dict(),
        "rows": rows,
        "seconds": seconds,
        "n_relaxations": len(results),
        "phase_error": error.as_dict(),
    }


def report(out: dict) -> list[str]:
    import numpy as np

    rows = out["rows"]
    lines = [
        f"model {out['model']['model_name']} ({out['model']['model_sha256'][:12]}), "
        f"{out['n_relaxations']} relaxations in {out['seconds']:.0f} s, fix_symmetry={out['settings']['fix_symmetry']}",
        f"{'compound':12s} {'obs SG':>6s} {'observed':>8s} {'predicted':>9s} {'lowest':>8s} {'dE':>7s} {'dV obs %':>8s}"
        f"  {'call':>12s} {'dE tilt':>8s}  within 2 sigma / excluded",
    ]
    for r in rows:
        de = "" if r["dE_mev"] is None else f"{r['dE_mev']:7.1f}"
        dv = "" if r["volume_error_pct"] is None else f"{r['volume_error_pct']:+8.1f}"
        dt = "" if r["dE_tilt_mev"] is None else f"{r['dE_tilt_mev']:8.1f}"
        mark = "ok" if r["right"] else "--"
        cmark = {True: "right", False: "WRONG", None: ""}[r["call_right"]]
        lines.append(
            f"{r['name']:12s} {r['observed_sg']:6d} {str(r['observed']):>8s} {str(r['predicted']):>9s} "
            f"{str(r['lowest']):>8s} {de:>7s} {dv:>8s} {mark}  {str(r['call']):>12s} {dt:>8s}  "
            f"{r['phases_within_error'] or '-'} {r['excluded'] or ''} {cmark}"
        )
    cubic = [r for r in rows if r["observed"] == "a0a0a0"]
    tilted = [r for r in rows if r["observed"] != "a0a0a0"]
    dv = np.array([r["volume_error_pct"] for r in rows if r["volume_error_pct"] is not None])
    lines.append(
        f"ground states right: {sum(r['right'] for r in rows)}/{len(rows)} (cubic {sum(r['right'] for r in cubic)}"
        f"/{len(cubic)}, tilted {sum(r['right'] for r in tilted)}/{len(tilted)})"
    )
    err = out.get("phase_error") or {}
    calls = {c: [r for r in rows if r["call"] == c] for c in ("tilted", "untilted", "undetermined")}
    determined = [r for r in rows if r["call_right"] is not None]
    sigma = (
        "unqualified" if err.get("sigma_mev") is None else f"sigma {err['sigma_mev']:.1f} meV/atom ({err['source']})"
    )
    lines.append(
        f"calls ({sigma}): tilted {len(calls['tilted'])} (observed tilted: "
        f"{sum(r['observed'] != 'a0a0a0' for r in calls['tilted'])}), untilted {len(calls['untilted'])} "
        f"(observed untilted: {sum(r['observed'] == 'a0a0a0' for r in calls['untilted'])}), undetermined "
        f"{len(calls['undetermined'])} (observed tilted: "
        f"{sum(r['observed'] != 'a0a0a0' for r in calls['undetermined'])}); determined calls right "
        f"{sum(r['call_right'] for r in determined)}/{len(determined)}; observed phase among those within "
        f"2 sigma: {sum(r['observed_within_error'] for r in rows)}/{len(rows)}"
    )
    if dv.size:
        lines.append(
            f"relaxed volume of the observed phase vs experiment: median {np.median(dv):+.1f}%, "
            f"mean |error| {np.abs(dv).mean():.1f}%, within 3%: {int((np.abs(dv) <= 3).sum())}/{dv.size}, "
            f"range {dv.min():+.1f}% to {dv.max():+.1f}% ({dv.size} compounds with an observed cell)"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=["default"], help="MACE files; 'default': the packaged model")
    parser.add_argument("--free", action="store_true", help="relax without holding the space group")
    parser.add_argument("--max-steps", type=int, default=500)
    parser.add_argument("--only", default=None, help="comma-separated compound names")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument(
        "--phase-error",
        type=float,
        default=None,
        help="sigma (meV/atom) of the calls instead of each model's measured error",
    )
    parser.add_argument(
        "--update-card",
        action="store_true",
        help="write the packaged model's figures into its card (known_phases), as shipped",
    )
    parser.add_argument("--save", action="store_true", help="write benchmarks/results/bench_known_phases.json (docs)")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else None
    everything = []
    for m in args.models:
        out = evaluate(None if m == "default" else m, args.free, args.max_steps, names, args.phase_error)
        everything.append(out)
        print("\n".join(report(out)), flush=True)
        print(flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(everything, fh, indent=1, default=float)
    if args.update_card:
        update_card(everything)
    if args.save:
        save(everything)


def save(everything: list[dict]) -> None:
    """Each model's ground states, calls and volumes for the documentation (benchmarks/_results.py)."""
    from _results import save_figures  # benchmarks/_results.py, next to this script

    figures = {}
    for out in everything:
        e, rows = card_entry(out), out["rows"]
        label = f"{out['model']['model_name']} ({out['model']['model_sha256'][:12]})"
        determined = [r for r in rows if r["call_right"] is not None]
        figures[f"{label}: ground state right"] = (
            f"{e['right']}/{e['n']} (cubic {e['cubic_right']}/{e['cubic_n']}, tilted {e['tilted_right']}/{e['tilted_n']})"
        )
        figures[f"{label}: determined calls right"] = (
            f"{sum(r['call_right'] for r in determined)}/{len(determined)} (undetermined "
            f"{sum(r['call'] == 'undetermined' for r in rows)}); observed phase within 2 sigma "
            f"{sum(r['observed_within_error'] for r in rows)}/{len(rows)}"
        )
        figures[f"{label}: relaxed volume of the observed phase vs experiment"] = (
            f"median {e['volume_error_median_pct']:+.1f}%, within 3% {e['volume_within_3pct']}/{e['volume_n']}"
        )
        figures[f"{label}: time"] = (
            f"{out['n_relaxations']} relaxations in {out['seconds']:.0f} s (fix_symmetry={out['settings']['fix_symmetry']})"
        )
    save_figures("bench_known_phases", figures, note="observed room-temperature space groups of 20 double perovskites")


def card_entry(out: dict) -> dict:
    """The ``known_phases`` entry of a model card from one model's results."""
    import numpy as np

    from dp_screen import __version__

    rows = out["rows"]
    cubic = [r for r in rows if r["observed"] == "a0a0a0"]
    tilted = [r for r in rows if r["observed"] != "a0a0a0"]
    dv = np.array([r["volume_error_pct"] for r in rows if r["volume_error_pct"] is not None])
    right = sum(r["right"] for r in rows)
    return {
        "summary": f"vs {len(rows)} experimentally characterised double perovskites (observed room-temperature space "
        f"groups), symmetry-held relaxations: ground state right for {right}/{len(rows)} (cubic "
        f"{sum(r['right'] for r in cubic)}/{len(cubic)}, tilted {sum(r['right'] for r in tilted)}/"
        f"{len(tilted)}); relaxed volume of the observed phase vs experiment median {np.median(dv):+.1f}%, "
        f"within 3% for {int((np.abs(dv) <= 3).sum())} of {dv.size}",
        "made_by": "benchmarks/bench_known_phases.py --update-card",
        "right": right,
        "n": len(rows),
        "cubic_right": sum(r["right"] for r in cubic),
        "cubic_n": len(cubic),
        "tilted_right": sum(r["right"] for r in tilted),
        "tilted_n": len(tilted),
        "volume_error_median_pct": round(float(np.median(dv)), 1),
        "volume_within_3pct": int((np.abs(dv) <= 3).sum()),
        "volume_n": int(dv.size),
        "dp_screen_version": __version__,
    }


def update_card(everything: list[dict]) -> None:
    from dp_screen.mlip.models import default_model_path, packaged_model_card, update_packaged_model_card

    sha = packaged_model_card()["sha256"]
    for out in everything:
        if out["model"]["model_sha256"] == sha and out["settings"]["fix_symmetry"]:
            update_packaged_model_card("known_phases", card_entry(out))
            print(f"updated {default_model_path().with_suffix('.json')}")


if __name__ == "__main__":
    sys.exit(main())
