"""Refine dp_screen's packaged model by active learning with CHGNet (its teacher) as the oracle.

The loop (dp_screen.jobs.active_learning.run_loop, what ``dp-screen learn`` runs): a pool of random tau-perovskite
rock-salt compositions x the 5 default tilt systems is relaxed with the current model; the relaxed structures and
frames of their paths are scored by a committee of 3 models, the most uncertain (at most ``--cap`` per composition)
labelled by CHGNet, and the committee fine-tuned on every label so far (each member from its own previous round,
keeping every element of the start model). The compositions of benchmarks/bench_teacher.py's held-out set are kept
out of the pool and out of the loop's own held-out set.

``--selection random`` runs the control loop (same settings, random picks) for the selection comparison.
The store is the project's (``--home``); the loop resumes where it stopped when run again with the same arguments.

Usage:  pip install chgnet && python scripts/make_default_model_al.py [--loop al-default] [--rounds 4]
        [--install]   (copy the last round's first member to src/dp_screen/data/models and update the card)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> None:
    from bench_teacher import held_out_rows

    from dp_screen.jobs.active_learning import LoopStore, pool_rows, run_loop
    from dp_screen.mlip.active_learning import LoopSettings
    from dp_screen.mlip.relax import RelaxSettings
    from dp_screen.mlip.training import TrainSettings
    from dp_screen.settings import DPScreenSettings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", default=None, help="loop id (default: al-default-<selection>)")
    parser.add_argument("--selection", choices=["uncertainty", "random"], default="uncertainty")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--per-round", type=int, default=120)
    parser.add_argument("--cap", type=int, default=4)
    parser.add_argument("--pool", type=int, default=60)
    parser.add_argument("--held-out", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--stress-weight", type=float, default=100.0)
    parser.add_argument("--home", default=str(ROOT / ".dp_screen"))
    parser.add_argument("--install", action="store_true", help="install the last round's first member as the default")
    args = parser.parse_args()
    loop_id = args.loop or f"al-default-{args.selection}"
    db = DPScreenSettings(home=Path(args.home))
    bench = held_out_rows()
    bench_ids = {r["composition_id"] for r in bench}
    held = pool_rows(args.held_out, 22, exclude=bench_ids)
    pool = pool_rows(args.pool, 21, exclude=bench_ids | {r["composition_id"] for r in held})
    from dp_screen.mlip.models import default_model_path, file_sha256

    # the packaged model this loop starts from, kept aside so --install cannot move it; named by its hash so that a
    # copy of an earlier packaged model is never taken for the current one
    start = ROOT / ".dp_screen" / "start_model" / f"dp_screen_default_{file_sha256(default_model_path())[:8]}.model"
    if not start.exists():
        start.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(default_model_path(), start)
    loop = LoopSettings(
        loop_id=loop_id,
        oracle="chgnet",
        selection=args.selection,
        rounds=args.rounds,
        per_round=args.per_round,
        per_composition=args.cap,
        committee_size=3,
        start_model=str(start),
        frames_every=20,
        relax=RelaxSettings(max_steps=200),
        train=TrainSettings(
            epochs=args.epochs,
            lr=0.005,
            batch_size=8,
            dtype="float32",
            energy_weight=50.0,
            forces_weight=10.0,
            stress_weight=args.stress_weight,
            extra={"--ema": None, "--ema_decay": "0.99"},
        ),
        seed=3,
    )
    t0 = time.time()
    rounds = run_loop(loop, pool, held, db, progress=lambda m: print(f"[{time.time() - t0:6.0f} s] {m}", flush=True))
    for rd in rounds:
        print(
            json.dumps(
                {
                    "round": rd["round"],
                    "selection": rd["selection"],
                    "n_train": rd.get("n_train"),
                    "metrics": rd.get("metrics"),
                    "seconds": [rd.get("seconds_prepare"), rd.get("seconds_train")],
                },
                default=str,
            )
        )
    if args.install:
        last = LoopStore(db).round(loop_id, args.rounds)
        member = Path(last["members"]["0"]["path"])
        out = default_model_path()
        shutil.copy2(member, out)
        card_path = out.with_suffix(".json")
        old = json.loads(card_path.read_text())
        from dp_screen.jobs.active_learning import as_labelled
        from dp_screen.mlip.models import file_sha256
        from dp_screen.mlip.training import model_errors

        held_labels = [as_labelled(d) for d in LoopStore(db).labels(loop_id, split="held_out", status="labelled")]
        card = {
            "model": out.name,
            "sha256": file_sha256(out),
            "teacher": "CHGNet 0.3.0 (chgnet package)",
            "made_by": "scripts/make_default_model.py, then scripts/make_default_model_al.py",
            "active_learning": {
                "loop_id": loop_id,
                "rounds": args.rounds,
                "labels": last.get("n_train"),
                "held_out_metrics": last.get("metrics"),
                "start_model_sha256": old.get("sha256"),
                "settings": last.get("settings"),
                "args": vars(args),
                "per_round": [{"round": rd["round"], "metrics": rd.get("metrics")} for rd in rounds],
                "wall_time_s": sum((rd.get("seconds_prepare") or 0) + (rd.get("seconds_train") or 0) for rd in rounds),
            },
            # on the loop's held-out set: structures of 10 compositions x 5 tilt systems relaxed by the start model
            "errors_vs_teacher": {
                "test": model_errors(out, held_labels, dtype="float32"),
                "start_model_test": model_errors(start, held_labels, dtype="float32"),
                "test_set": f"the held-out set of loop {loop_id}: {len(held_labels)} relaxed "
                "structures of compositions outside its pool",
            },
            "previous": old,
        }
        card_path.write_text(json.dumps(card, indent=2, default=str))
        print(f"installed {member} as {out} (sha256 {card['sha256'][:12]})")


if __name__ == "__main__":
    main()
