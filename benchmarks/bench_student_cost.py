"""What a larger or equivariant (L >= 1) student costs on this machine, side by side with the packaged one's shape.

The packaged model is 32 channels with L = 0 (``src/dp_screen/data/models/dp_screen_default.json``). For each
architecture below this script trains from scratch with mace_run_train on the same CHGNet-labelled cells (bond-valence
structures of random tau-perovskite compositions, rattled and strained) for the same epochs, and times:
- training: wall seconds per epoch per 1,000 structures;
- inference: wall seconds per energy + forces + stress call on a batch of 10-atom cells (what a relaxation step
  costs), through dp_screen's TorchSim path;
- the model file size;
and prints each as a ratio to the first architecture (the packaged model's shape), measured in one run.

    OMP_NUM_THREADS=2 python benchmarks/bench_student_cost.py [--n 64] [--epochs 3] [--arch 32x0,64x1,128x1]

Needs chgnet (the dev extra). About 6 minutes with the defaults on the 2-core development machine (with a CP2K
run sharing it).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def labelled_cells(n: int, seed: int):
    """n CHGNet-labelled cells: bond-valence rock-salt cells of random compositions in random tilt systems, rattled
    by 0.05 A and strained by up to 3% (the perturbations make_default_model.py trains on)."""
    import numpy as np

    from dp_screen.jobs.active_learning import pool_rows
    from dp_screen.mlip.active_learning import ChgnetOracle
    from dp_screen.structures.perovskite import SiteSpeciesSet, build_bvm_structure

    rng = np.random.default_rng(seed)
    tilts = ["a0a0a0", "a0a0c-", "a-a-a-", "a0b-b-", "a+b-b-"]
    cells = []
    for row in pool_rows(n, seed):
        s = build_bvm_structure(
            SiteSpeciesSet.from_row(row), "rocksalt", tilts[int(rng.integers(len(tilts)))]
        ).structure
        s = s.copy()
        s.apply_strain(rng.uniform(-0.03, 0.03, 3))
        s.perturb(0.05)
        cells.append(s)
    labels = ChgnetOracle().label(cells)
    return [lab for lab in labels if not isinstance(lab, str)]


def epoch_seconds(log: Path) -> float:
    """Mean wall seconds between mace_run_train's per-epoch log lines (training plus its validation pass; start-up,
    statistics and compilation excluded)."""
    import re
    from datetime import datetime

    stamps = [
        datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f")
        for m in re.finditer(r"^(\S+ \S+) INFO: Epoch \d+:", log.read_text(), re.M)
    ]
    if len(stamps) < 2:
        raise SystemExit(f"{log}: fewer than two epoch lines; use --epochs 3 or more")
    return (stamps[-1] - stamps[0]).total_seconds() / (len(stamps) - 1)


def main() -> None:
    from dp_screen.mlip.models import load_model
    from dp_screen.mlip.relax import single_points
    from dp_screen.mlip.training import TrainSettings, train_mace

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="training cells")
    parser.add_argument("--epochs", type=int, default=3, help="at least 3 (per-epoch time from the log's epoch lines)")
    parser.add_argument("--arch", default="32x0,64x1,128x1", help="CHANNELSxL, comma-separated; the first is the base")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--save", action="store_true", help="write benchmarks/results/bench_student_cost.json (docs)")
    args = parser.parse_args()
    archs = [tuple(int(v) for v in a.split("x")) for a in args.arch.split(",")]
    t0 = time.perf_counter()
    data = labelled_cells(args.n, args.seed)
    print(f"{len(data)} CHGNet-labelled cells in {time.perf_counter() - t0:.0f} s", flush=True)
    n_valid = max(2, len(data) // 10)
    train, valid = data[:-n_valid], data[-n_valid:]
    batch = [item.structure for item in data[:16]]
    rows = []
    with tempfile.TemporaryDirectory(prefix="dp_screen_student_cost_") as work:
        for channels, lmax in archs:
            settings = TrainSettings(
                epochs=args.epochs,
                num_channels=channels,
                max_l=lmax,
                dtype="float32",
                batch_size=8,
                stress_weight=100.0,
                seed=args.seed,
            )
            res = train_mace(
                train, settings, Path(work) / f"c{channels}l{lmax}", name=f"c{channels}l{lmax}", valid=valid
            )
            epoch_s = epoch_seconds(Path(work) / f"c{channels}l{lmax}" / "mace_run_train.log")
            model = load_model(str(res.model_path), device="cpu", dtype="float32")
            single_points(batch, model)  # warm-up
            t = time.perf_counter()
            for _ in range(3):
                single_points(batch, model)
            infer_s = (time.perf_counter() - t) / 3
            n_params = sum(p.numel() for p in model.model.parameters())
            rows.append(
                {
                    "arch": f"{channels} ch, L={lmax}",
                    "params": n_params,
                    "train_s_per_epoch_per_1k": epoch_s / len(train) * 1000,
                    "infer_s_per_batch16": infer_s,
                    "file_mb": res.model_path.stat().st_size / 1e6,
                    "valid_energy_mae_mev_atom": res.errors.get("valid", {}).get("energy_mae_mev_atom"),
                }
            )
            print(rows[-1], flush=True)
    base = rows[0]
    print(f"\nside by side ({len(train)} training cells, {args.epochs} epochs each, ratios to {base['arch']}):")
    print(
        f"{'architecture':<16} {'params':>9} {'train s/epoch/1k':>17} {'ratio':>6} {'infer s/16 cells':>17} "
        f"{'ratio':>6} {'file MB':>8}"
    )
    for r in rows:
        print(
            f"{r['arch']:<16} {r['params']:>9d} {r['train_s_per_epoch_per_1k']:>17.1f} "
            f"{r['train_s_per_epoch_per_1k'] / base['train_s_per_epoch_per_1k']:>6.1f} {r['infer_s_per_batch16']:>17.3f} "
            f"{r['infer_s_per_batch16'] / base['infer_s_per_batch16']:>6.1f} {r['file_mb']:>8.2f}"
        )
    # what the packaged model's recipe (scripts/make_default_model.py: 2,250 cells, 25 + 8 epochs) would cost
    for r in rows:
        hours = r["train_s_per_epoch_per_1k"] * 2.25 * 33 / 3600
        print(f"{r['arch']}: the packaged model's recipe (2,250 cells x 33 epochs) ~ {hours:.1f} h of training here")
    if args.save:
        from _results import save_figures  # benchmarks/_results.py, next to this script

        save_figures(
            "bench_student_cost",
            {
                r["arch"]: f"{r['params']:,d} parameters; training {r['train_s_per_epoch_per_1k']:.1f} s per epoch per "
                f"1,000 cells ({r['train_s_per_epoch_per_1k'] / base['train_s_per_epoch_per_1k']:.1f}x); inference "
                f"{r['infer_s_per_batch16']:.3f} s per 16 cells ({r['infer_s_per_batch16'] / base['infer_s_per_batch16']:.1f}x); "
                f"{r['file_mb']:.2f} MB; the packaged recipe (2,250 cells x 33 epochs) "
                f"~{r['train_s_per_epoch_per_1k'] * 2.25 * 33 / 3600:.1f} h here"
                for r in rows
            },
            note=f"{len(train)} CHGNet-labelled training cells, {args.epochs} epochs each, float32, one process",
        )


if __name__ == "__main__":
    main()
