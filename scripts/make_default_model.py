"""Make dp_screen's default MACE model by distillation from CHGNet (whose wheel ships its weights).

1. Sample compositions across the default space (rule R1, every cation-anion pair with bond-valence parameters),
   stratified so every A, B and X species appears, and build a BVM starting structure of each (a tilt system drawn
   from its ordering's default set).
2. Perturb each: isotropic scale, random strain, atomic displacements (seeded).
3. Label energy, forces and stress with CHGNet (the teacher).
4. Hold out whole compositions as a test set; train a small MACE from scratch on the rest with dp_screen's
   training machinery (mace_run_train), then fine-tune it with a heavier stress weight (equilibrium volumes),
   and report its errors against the teacher on the held-out set.

Usage:  pip install chgnet && python scripts/make_default_model.py [--compositions 450] [--per-composition 5]
        [--epochs 25] [--work .dp_screen/distill] [--out src/dp_screen/data/models/dp_screen_default.model]
Labels are cached in the work folder: a second run re-uses them. The teacher can be replaced by DFT labels: write
them with dp_screen.mlip.training.write_extxyz and pass --labels FILE.xyz.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def sample_compositions(n: int, seed: int):
    from dp_screen.jobs.enumerate import EnumerationSettings, enumerate_table

    _, df = enumerate_table(EnumerationSettings(bv_filter="any"))
    rows = df.sample(frac=1.0, random_state=seed).to_dict("records")
    seen: Counter = Counter()
    chosen, rest = [], []
    for row in rows:
        species = {(row[c], row[q]) for c, q in (("A", "nA"), ("A2", "nA2"), ("B", "nB"), ("B2", "nB2"), ("X", "nX"))}
        if any(seen[s] < 3 for s in species):
            chosen.append(row)
            seen.update(species)
        else:
            rest.append(row)
    chosen += rest[: max(0, n - len(chosen))]
    return chosen


def build_and_perturb(rows, per_composition: int, seed: int):
    from pymatgen.core import Structure

    from dp_screen.structures.perovskite import SiteSpeciesSet, build_bvm_structure
    from dp_screen.structures.tilts import DEFAULT_TILTS

    rng = np.random.default_rng(seed)
    pick = random.Random(seed)
    out = []
    for row in rows:
        species = SiteSpeciesSet.from_row(row)
        tilts = list(DEFAULT_TILTS[row["expected_ordering"]])
        try:
            # the packaged model was made from structures built with the brown-altermatt set (the builder's
            # default until 0.2.0): pinned so that this script reproduces it
            built = build_bvm_structure(species, row["expected_ordering"], pick.choice(tilts), bv_set="brown-altermatt")
        except Exception:  # noqa: BLE001 - skip what cannot be built
            continue
        base = built.structure.remove_oxidation_states()
        for k in range(per_composition):
            scale = rng.uniform(0.95, 1.06) if k else 1.0
            eps = rng.uniform(-0.03, 0.03, (3, 3)) if k else np.zeros((3, 3))
            eps = 0.5 * (eps + eps.T)
            lattice = base.lattice.matrix * scale @ (np.eye(3) + eps)
            disp = rng.normal(0, 0.07 if k else 0.0, (len(base), 3))
            cart = base.frac_coords @ lattice + disp
            out.append((row["composition_id"], Structure(lattice, base.species, cart, coords_are_cartesian=True)))
    return out


def label_with_chgnet(items, batch_size: int = 32):
    from chgnet.model import CHGNet

    from dp_screen.mlip.training import LabelledStructure

    model = CHGNet.load(verbose=False)
    labelled = []
    structures = [s for _, s in items]
    t0 = time.time()
    for start in range(0, len(structures), 256):
        preds = model.predict_structure(structures[start : start + 256], task="efs", batch_size=batch_size)
        for (cid, s), p in zip(items[start : start + 256], preds, strict=True):
            labelled.append(
                LabelledStructure(s, float(p["e"]) * len(s), np.asarray(p["f"]), np.asarray(p["s"]), source=cid)
            )
        print(f"  labelled {len(labelled)}/{len(structures)} ({time.time() - t0:.0f} s)", flush=True)
    return labelled


def main() -> None:
    from dp_screen.mlip.training import TrainSettings, read_extxyz, train_mace, write_extxyz

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compositions", type=int, default=450)
    parser.add_argument("--per-composition", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--work", default=str(ROOT / ".dp_screen" / "distill"))
    parser.add_argument("--labels", default=None, help="use these labels (extxyz) instead of the teacher")
    parser.add_argument(
        "--refine-epochs",
        type=int,
        default=8,
        help="second stage: fine-tune the first model with a heavier stress weight (volumes)",
    )
    parser.add_argument("--refine-stress-weight", type=float, default=300.0)
    parser.add_argument("--from-model", default=None, help="skip the first stage: refine this model")
    parser.add_argument("--out", default=str(ROOT / "src/dp_screen/data/models/dp_screen_default.model"))
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    labels_file = Path(args.labels) if args.labels else work / "chgnet_labels.xyz"
    if not labels_file.exists():
        t0 = time.time()
        rows = sample_compositions(args.compositions, args.seed)
        items = build_and_perturb(rows, args.per_composition, args.seed)
        print(f"{len(rows)} compositions -> {len(items)} structures ({time.time() - t0:.0f} s); labelling with CHGNet")
        write_extxyz(label_with_chgnet(items), labels_file)
    labelled = read_extxyz(labels_file)
    from ase.io import read

    sources = [a.info.get("config_type", str(i)) for i, a in enumerate(read(labels_file, index=":"))]
    comps = sorted(set(sources))
    random.Random(args.seed).shuffle(comps)
    held_out = set(comps[: max(1, len(comps) // 10)])
    train = [x for x, s in zip(labelled, sources, strict=True) if s not in held_out]
    test = [x for x, s in zip(labelled, sources, strict=True) if s in held_out]
    print(f"train {len(train)} structures, held-out test {len(test)} ({len(held_out)} compositions)")
    settings = TrainSettings(
        epochs=args.epochs,
        lr=0.01,
        batch_size=8,
        dtype="float32",
        num_channels=args.channels,
        max_l=0,
        r_max=5.0,
        num_interactions=2,
        correlation=2,
        forces_weight=10.0,
        stress_weight=10.0,
        seed=args.seed,
        extra={"--ema": None, "--ema_decay": "0.99"},
    )
    t0 = time.time()
    if args.from_model:
        first = Path(args.from_model)
    else:
        result = train_mace(
            train, settings, work / "train", name="dp_screen_default", test=test, models_dir=work / "models"
        )
        first = result.model_path
        print(f"stage 1 trained in {time.time() - t0:.0f} s: {first}")
    if args.refine_epochs:
        # stress is learnt in eV/A^3, where its errors are numerically tiny: a second stage with a heavier stress
        # weight fixes the equilibrium volumes (stage 1 alone: Cs2AgBiCl6 -8% against experiment)
        # e0s/keep_elements pinned to what made the packaged model (the defaults before 0.4.0)
        refine = TrainSettings(
            foundation=str(first),
            multihead=False,
            epochs=args.refine_epochs,
            lr=0.005,
            e0s="average",
            keep_elements=False,
            batch_size=8,
            dtype="float32",
            forces_weight=10.0,
            stress_weight=args.refine_stress_weight,
            seed=args.seed,
            extra={"--ema": None, "--ema_decay": "0.99"},
        )
        result = train_mace(
            train, refine, work / "refine", name="dp_screen_default_refined", test=test, models_dir=work / "models"
        )
        print(f"stage 2 (stress weight {args.refine_stress_weight}) done at {time.time() - t0:.0f} s")
    elif args.from_model:
        raise SystemExit("--from-model needs --refine-epochs > 0")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(result.model_path, out)
    card = {
        "model": out.name,
        "sha256": result.sha256,
        "teacher": "CHGNet 0.3.0 (chgnet package)",
        "training_structures": len(train),
        "test_structures": len(test),
        "test_compositions": len(held_out),
        "errors_vs_teacher": result.errors,
        "settings": result.settings,
        "made_by": "scripts/make_default_model.py",
        "args": vars(args),
    }
    out.with_suffix(".json").write_text(json.dumps(card, indent=2, default=str))
    print(json.dumps(result.errors, indent=2))


if __name__ == "__main__":
    main()
