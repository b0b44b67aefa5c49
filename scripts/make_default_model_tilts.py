"""Refine dp_screen's packaged model on whole tilt sets: every composition in all 5 default tilt systems.

The model ranks phases by energy differences within one composition, E(tilt) - E(a0a0a0). The packaged model's
training set (scripts/make_default_model.py) holds each composition in one tilt system only, as randomly perturbed
cells; the active-learning loops (scripts/make_default_model_al.py) label a few structures per composition. This
script uses the loop's pieces (dp_screen.jobs.active_learning: pool rows, BVM builds, batched relaxations with
path frames; the ``chgnet`` oracle; fine-tuning that keeps every element of the start model) in large rounds
with a committee of one, where every candidate is labelled. Round r:

1. ``--compositions`` new random tau-perovskite rock-salt compositions (seed ``--seed`` + r - 1; those of earlier
   rounds, of the rounds recorded in the start model's card when it is the packaged one, and
   benchmarks/bench_teacher.py's held-out compositions are excluded), each built by bond valence in the
   5 default tilt systems.
2. Each structure relaxed with the current model (symmetry held); candidates: the BVM start, a frame from the
   middle of the relaxation path, and the relaxed end.
3. Every candidate labelled by CHGNet (energy, forces, stress), appended to ``labels.xyz`` chunk by chunk.
4. The current model fine-tuned on the labels of rounds 1..r; a tenth of each round's compositions is never trained
   on: the test set. The energy weight is heavy and rises by round (50, then 200; the stress weight 300, then
   1,000): phase ranking is an energy-difference question, and with the forces of BVM starts (about 0.5 eV/A RMS)
   in the data the force term otherwise dominates the loss.

``--energy-reference per_composition`` fits the energies relative within each composition only (the start model
keeps each composition's absolute level; forces and stresses as labelled): the loss is then spent on the phase
differences instead of the composition's absolute energy, which the ranking never uses.

``--with-labels DIR,...`` adds the labels of earlier runs' work directories to the training set (each run's
held-out tenth stays in the test set; their compositions are not drawn again); with ``--compositions 0`` a round
draws nothing new and only fine-tunes on them.

Every stage is cached in ``--work``, the start model and its card too: a second run with the same arguments resumes
where the first stopped, and refines the same start even after the first installed its model.

Usage:  pip install chgnet && python scripts/make_default_model_tilts.py [--rounds 1] [--compositions 250] [--epochs 10]
        [--install]   (copy the last round's model to src/dp_screen/data/models with its card)

The packaged model is this script's default run with ``--install`` (round 1 from scripts/make_default_model.py's
model), then ``--seed 41 --epochs 20 --work .dp_screen/tilts_b --install`` and ``--seed 51 --epochs 20 --work
.dp_screen/tilts_c --install``: two more rounds, each on 250 new compositions, refining the installed model on those
labels only (README, "The default model").
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


def candidates(args, work: Path, start: Path, exclude: set[str], seed: int, say) -> list[tuple[str, str, object]]:
    """(composition_id, kind, structure) of every candidate; relaxations cached in candidates.json."""
    from pymatgen.core import Structure

    cache = work / "candidates.json"
    if cache.exists():
        return [(c, k, Structure.from_dict(d)) for c, k, d in json.loads(cache.read_text())]
    from bench_teacher import held_out_rows

    from dp_screen.jobs.active_learning import build_items, pool_rows
    from dp_screen.mlip.models import load_model
    from dp_screen.mlip.relax import RelaxSettings, relax_structures

    bench = {r["composition_id"] for r in held_out_rows()}
    rows = pool_rows(args.compositions, seed, exclude=bench | exclude)
    items = build_items(rows)
    say(f"{len(rows)} compositions -> {len(items)} BVM structures; relaxing with {start.name}")
    model = load_model(str(start), device="cpu", dtype="float32")
    done = [0]

    def progress(n):
        done[0] += n
        if done[0] // 100 != (done[0] - n) // 100 or done[0] == len(items):
            say(f"  relaxed {done[0]}/{len(items)}")

    results = relax_structures(
        [s for s, _ in items], model, RelaxSettings(max_steps=200), progress=progress, frames_every=10
    )
    out = []
    for (s, meta), res in zip(items, results, strict=True):
        cid = meta["composition_id"]
        out.append((cid, "start", s.copy().remove_oxidation_states()))
        if res.failed:
            continue
        frames = res.extra.get("frames") or []
        if frames:
            out.append((cid, "path", frames[len(frames) // 2].copy().remove_oxidation_states()))
        out.append((cid, "relaxed", res.structure.copy().remove_oxidation_states()))
    cache.write_text(json.dumps([(c, k, s.as_dict()) for c, k, s in out]))
    say(f"{len(out)} candidates ({sum(r.failed for r in results)} relaxations failed: their start kept)")
    return out


def label(cands, work: Path, say, chunk: int = 200):
    """CHGNet labels of every candidate, appended to labels.xyz chunk by chunk (resumable)."""
    from dp_screen.mlip.active_learning import ChgnetOracle
    from dp_screen.mlip.training import read_extxyz, write_extxyz

    path = work / "labels.xyz"
    status = work / "labels_done.json"
    done = json.loads(status.read_text()) if status.exists() else {"n": 0, "failed": []}
    if not cands:  # nothing drawn (--compositions 0): no teacher to load
        return [], done
    oracle = ChgnetOracle()
    t0 = time.time()
    labelled = read_extxyz(path) if path.exists() and done["n"] else []
    for start in range(done["n"], len(cands), chunk):
        part = cands[start : start + chunk]
        answers = oracle.label([s for _, _, s in part])
        for (cid, kind, _), ans in zip(part, answers, strict=True):
            if isinstance(ans, str):
                done["failed"].append([cid, kind, ans])
            else:
                ans.source = f"{cid}|{kind}"
                labelled.append(ans)
        write_extxyz(labelled, path)
        done["n"] = start + len(part)
        status.write_text(json.dumps(done))
        say(f"  labelled {done['n']}/{len(cands)} ({time.time() - t0:.0f} s)")
    return labelled, done


def earlier_labels(work: Path) -> tuple[list, set[str]]:
    """The labels of every round of an earlier run in ``work`` and the compositions that run held out (a tenth of
    each round's, drawn with its seed as in main)."""
    from bench_teacher import held_tenth

    from dp_screen.mlip.training import read_extxyz

    labelled, held = [], set()
    rounds = sorted(work.glob("round*/labels.xyz"), key=lambda p: int(p.parent.name.removeprefix("round")))
    if not rounds:
        raise SystemExit(f"--with-labels {work}: no round*/labels.xyz there (a work directory of this script)")
    for path in rounds:
        result = path.parent / "models" / "result.json"
        if not result.exists():
            raise SystemExit(f"--with-labels {work}: {path.parent.name} has not finished (no models/result.json)")
        seed = json.loads(result.read_text())["settings"]["seed"]
        new = read_extxyz(path)
        held |= held_tenth((x.source.split("|")[0] for x in new), seed)
        labelled += new
    return labelled, held


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None


def _at(values: list[float], r: int) -> float:
    """Round r's value (1-based; the last one repeats)."""
    return values[min(r, len(values)) - 1]


def train_round(args, r: int, rdir: Path, start: Path, labelled, held: set[str], say) -> dict:
    """Fine-tune ``start`` on every label of rounds 1..r but those of the ``held`` compositions (its test set)."""
    from dp_screen.mlip.training import TrainSettings, model_errors, train_mace

    result_file = rdir / "models" / "result.json"
    if result_file.exists():
        return json.loads(result_file.read_text())
    comps = {x.source.split("|")[0] for x in labelled}
    train = [x for x in labelled if x.source.split("|")[0] not in held]
    test = [x for x in labelled if x.source.split("|")[0] in held]
    say(
        f"round {r}: train {len(train)} structures, test {len(test)} ({len(held)} compositions); fine-tuning "
        f"{start.name}"
    )
    settings = TrainSettings(
        foundation=str(start),
        multihead=False,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=8,
        dtype="float32",
        energy_reference=args.energy_reference,
        energy_weight=_at(args.energy_weight, r),
        forces_weight=10.0,
        stress_weight=_at(args.stress_weight, r),
        seed=args.seed,
        extra={"--ema": None, "--ema_decay": "0.99"},
    )
    t0 = time.time()
    result = train_mace(
        train, settings, rdir / "train", name=f"dp_screen_default_tilts_r{r}", test=test, models_dir=rdir / "models"
    )
    res = {
        "round": r,
        "model_path": str(result.model_path),
        "sha256": result.sha256,
        "errors": result.errors,
        "start_model": str(start),
        "start_errors_on_test": model_errors(start, test, dtype="float32"),
        "settings": result.settings,
        "train_s": round(time.time() - t0),
        "n_train": len(train),
        "n_test": len(test),
        "n_test_compositions": len(held),
        "n_compositions": len(comps),
    }
    result_file.write_text(json.dumps(res, indent=2, default=str))
    return res


def main() -> None:
    from bench_teacher import held_tenth

    from dp_screen.mlip.models import default_model_path, file_sha256
    from dp_screen.mlip.training import ENERGY_REFERENCES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compositions", type=int, default=250, help="new compositions per round")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="rounds to run (one round per step of the packaged model; round 2 measured worse, README)",
    )
    parser.add_argument("--seed", type=int, default=31, help="round r draws its compositions with seed + r - 1")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument(
        "--energy-weight",
        type=_floats,
        default=[50.0, 200.0],
        help="loss weight of the energy, per round (comma-separated; the last one repeats)",
    )
    parser.add_argument("--stress-weight", type=_floats, default=[300.0, 1000.0], help="the same for the stress")
    parser.add_argument("--lr", type=float, default=0.005)
    parser.add_argument(
        "--energy-reference",
        choices=ENERGY_REFERENCES,
        default="absolute",
        help="per_composition: each composition's labels moved by one energy per atom onto the start "
        "model's mean for it, so the fine-tune fits energies within a composition (phase "
        "differences) and not each composition's absolute level (mlip.training.composition_offsets)",
    )
    parser.add_argument("--start", default=None, help="model to refine (default: the packaged one, kept aside)")
    parser.add_argument("--work", default=str(ROOT / ".dp_screen" / "tilts"))
    parser.add_argument(
        "--with-labels",
        type=lambda t: [x for x in t.split(",") if x],
        default=[],
        help="work directories of earlier runs (comma-separated) whose labels are trained on too: "
        "their held-out compositions stay in the test set, none of their compositions is drawn "
        "again; with --compositions 0 a round draws nothing new",
    )
    parser.add_argument("--install", action="store_true", help="install the last round's model as the packaged default")
    args = parser.parse_args()
    if args.compositions < 0 or (args.compositions == 0 and not args.with_labels):
        parser.error(
            f"--compositions {args.compositions}: a round needs new compositions (> 0), or 0 with "
            "--with-labels (fine-tune on earlier runs' labels only)"
        )
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t_all = time.time()

    def say(msg):
        print(f"[{time.time() - t_all:6.0f} s] {msg}", flush=True)

    # the packaged model and its card, copied into --work on the first run: --install cannot move the start under a
    # running refinement, and a run started again (even after it installed) refines the same start with the same card
    start, start_card = Path(args.start) if args.start else work / "start" / default_model_path().name, None
    if not args.start:
        if not start.exists():
            start.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(default_model_path().with_suffix(".json"), start.with_suffix(".json"))
            shutil.copy2(default_model_path(), start)
        start_card = json.loads(start.with_suffix(".json").read_text())
    first_start = start
    labelled, used, held, rounds = [], set(), set(), []
    if start_card and "tilt_sets" in start_card:  # refining a model of this script: its compositions not drawn again
        from bench_teacher import card_rounds

        used = {row["composition_id"] for rows, _ in card_rounds(start_card) for row in rows}
        used |= set(start_card["tilt_sets"].get("excluded", []))
    for d in args.with_labels:  # earlier runs' labels: trained on, their tenths held out as they were
        extra, extra_held = earlier_labels(Path(d))
        labelled += extra
        held |= extra_held
        used |= {x.source.split("|")[0] for x in extra}
        say(f"with {len(extra)} labels of {d} ({len(extra_held)} held-out compositions)")
    excluded = sorted(used)
    for r in range(1, args.rounds + 1):
        rdir = work / f"round{r}"
        rdir.mkdir(exist_ok=True)
        timings = json.loads((rdir / "timings.json").read_text()) if (rdir / "timings.json").exists() else {}
        t0 = time.time()
        cands = candidates(args, rdir, start, used, args.seed + r - 1, say) if args.compositions else []
        timings.setdefault("candidates_s", round(time.time() - t0))
        used |= {c for c, _, _ in cands}
        t0 = time.time()
        new, done = label(cands, rdir, say)
        timings.setdefault("labels_s", round(time.time() - t0))
        timings["failed_labels"] = len(done["failed"])
        (rdir / "timings.json").write_text(json.dumps(timings))
        labelled += new
        held |= held_tenth((x.source.split("|")[0] for x in new), args.seed)  # never trained on: the test set
        res = train_round(args, r, rdir, start, labelled, held, say)
        res["timings_s"] = {**timings, "train_s": res["train_s"]}
        rounds.append(res)
        say(f"round {r}: fine-tuned in {res['train_s']} s: {res['model_path']}")
        say(f"  test set: start model {json.dumps(res['start_errors_on_test'])}")
        say(f"  test set: refined     {json.dumps(res['errors']['test'])}")
        start = Path(res["model_path"])
    if args.install:
        out = default_model_path()
        shutil.copy2(start, out)
        card_path = out.with_suffix(".json")
        old = start_card or json.loads(card_path.read_text())  # the card of the model refined, or the packaged one
        last = rounds[-1]
        made_by = "scripts/make_default_model.py, then scripts/make_default_model_tilts.py"
        if start_card and "tilt_sets" in start_card:  # a refinement of a model this script made: say so
            made_by = (
                f"{old.get('made_by', made_by)}, then scripts/make_default_model_tilts.py again on "
                "new compositions (tilt_sets.args; the model it refined: previous)"
            )
        card = {
            "model": out.name,
            "sha256": file_sha256(out),
            "teacher": "CHGNet 0.3.0 (chgnet package)",
            "made_by": made_by,
            "tilt_sets": {
                "rounds": len(rounds),
                "compositions": last["n_compositions"],
                "labels": len(labelled),
                "excluded": excluded,
                "start_model_sha256": file_sha256(first_start),
                "args": vars(args),
                "per_round": [
                    {
                        k: rd[k]
                        for k in (
                            "round",
                            "sha256",
                            "n_train",
                            "n_test",
                            "errors",
                            "start_errors_on_test",
                            "settings",
                            "timings_s",
                        )
                    }
                    for rd in rounds
                ],
            },
            "errors_vs_teacher": {
                "test": last["errors"]["test"],
                "train": last["errors"]["train"],
                "start_model_test": last["start_errors_on_test"],
                "test_set": f"{last['n_test']} structures (BVM starts, path frames, relaxed ends) "
                f"of {last['n_test_compositions']} compositions outside the training "
                "set",
            },
            "settings": last["settings"],
            "previous": old,
        }
        card_path.write_text(json.dumps(card, indent=2, default=str))
        say(f"installed {start} as {out} (sha256 {card['sha256'][:12]})")


if __name__ == "__main__":
    main()
