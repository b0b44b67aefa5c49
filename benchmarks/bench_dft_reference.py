"""Models against the shipped DFT reference set: single points on its structures, then phase-difference MAE
(tilt - untilted, meV/atom), lowest-phase agreement, force MAE (eV/A) and stress MAE (GPa), and a parity figure.

    python benchmarks/bench_dft_reference.py packaged [path/to/model.model ...] [chgnet] [--out bench_dft_reference]

``packaged``: the packaged default model; a path: any MACE model file; ``chgnet``: the CHGNet teacher (when its
package is installed: pip install chgnet). The reference set is made by scripts/make_dft_reference.py.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
EV_A3_TO_GPA = 160.21766208


def chgnet_predictions(structures):
    from chgnet.model import CHGNet
    from chgnet.model.dynamics import CHGNetCalculator
    from pymatgen.io.ase import AseAtomsAdaptor

    calc = CHGNetCalculator(CHGNet.load(verbose=False), use_device="cpu")
    out = []
    for s in structures:
        atoms = AseAtomsAdaptor.get_atoms(s.remove_oxidation_states() if hasattr(s, "remove_oxidation_states") else s)
        atoms.calc = calc
        out.append(
            {
                "energy": float(atoms.get_potential_energy()),
                "forces": atoms.get_forces(),
                "stress_gpa": atoms.get_stress(voigt=False) * EV_A3_TO_GPA,
            }
        )
    return out


def mace_predictions(structures, model: str | None):
    from dp_screen.mlip.models import load_model
    from dp_screen.mlip.relax import single_points

    return single_points(structures, load_model(model, device="cpu", dtype="float64"))


def main() -> None:
    from dp_screen.analysis.reference import reference_metrics, reference_table
    from dp_screen.dft.reference import card, load_reference

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=["packaged"])
    parser.add_argument("--out", default="bench_dft_reference")
    parser.add_argument(
        "--update-card", action="store_true", help="write the packaged model's figures into its card (errors_vs_dft)"
    )
    parser.add_argument("--save", action="store_true", help="write benchmarks/results/bench_dft_reference.json (docs)")
    args = parser.parse_args()
    points = load_reference()
    c = card()
    print(
        f"reference set: {len(points)} usable points ({c.get('n_points')} computed, {c.get('n_failed')} failed), "
        f"{len({p['formula'] for p in points})} compositions, methods {c.get('methods')}, "
        f"{c.get('cost', {}).get('cp2k_core_hours')} CP2K core-hours"
    )
    structures = [p["structure"].copy() for p in points]
    rows, tables = {}, {}
    for name in args.models:
        if name == "chgnet":
            try:
                import chgnet  # noqa: F401
            except ImportError:
                print("chgnet: not installed (pip install chgnet); skipped")
                continue
            preds = chgnet_predictions([s.copy() for s in structures])
        else:
            preds = mace_predictions(structures, None if name == "packaged" else name)
        rows[name] = reference_metrics(points, preds)
        tables[name] = reference_table(points, preds)
        # the same metrics on the spin-polarised (UKS) and the restricted points apart, when the set has both
        spin = [bool(p.get("hamiltonian", {}).get("spin_polarised")) for p in points]
        if any(spin) and not all(spin):
            for label, keep in (("open-shell", True), ("closed-shell", False)):
                idx = [i for i, s in enumerate(spin) if s == keep]
                rows[f"{name} [{label}]"] = reference_metrics([points[i] for i in idx], [preds[i] for i in idx])
    import pandas as pd

    pd.set_option("display.width", 200)
    summary = pd.DataFrame.from_dict(rows, orient="index")
    print(summary.to_string(float_format=lambda v: f"{v:.3g}"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary.to_csv(out / "metrics.csv")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 5), layout="constrained")
    ax = fig.add_subplot()
    for name, t in tables.items():
        t = t[(t["tilt"] != "a0a0a0") & t["dft_de_mev"].notna()]
        ax.scatter(t["dft_de_mev"], t["model_de_mev"], label=name, s=16)
        t.to_csv(out / f"points_{Path(name).stem}.csv", index=False)
    lim = ax.get_xlim() + ax.get_ylim()
    ax.plot([min(lim), max(lim)], [min(lim), max(lim)], "k--", lw=0.8)
    ax.set_xlabel("DFT E(tilt) - E(a0a0a0) (meV/atom)")
    ax.set_ylabel("model E(tilt) - E(a0a0a0) (meV/atom)")
    ax.legend()
    fig.savefig(out / "parity.png", dpi=110)
    print(f"parity figure: {out / 'parity.png'}")
    if args.update_card and "packaged" in rows:
        update_card(rows, c)
    if args.save:
        figures = {
            "reference set": f"{len(points)} points, {len({p['formula'] for p in points})} compositions, "
            f"{c.get('cost', {}).get('cp2k_core_hours')} CP2K core-hours (scripts/make_dft_reference.py)"
        }
        for name, m in rows.items():
            figures[name] = (
                f"phase dE MAE {m['phase_de_mae_mev']:.1f} meV/atom (DFT |dE| {m['dft_de_mean_abs_mev']:.1f}), lowest "
                f"phase {round(m['lowest_phase_agreement'] * m['n_lowest_compared'])} of {m['n_lowest_compared']}, "
                f"forces {m['force_mae']:.2f} eV/A, stress {m['stress_mae_gpa']:.2f} GPa ({m['n_points']} points)"
            )
        from _results import save_figures  # benchmarks/_results.py, next to this script

        save_figures(
            "bench_dft_reference", figures, note="single points of each model at the reference set's structures"
        )


def update_card(rows: dict, ref_card: dict) -> None:
    """The packaged model against the DFT reference set, into its card (printed next to every phase table)."""
    import numpy as np

    from dp_screen import __version__
    from dp_screen.mlip.models import default_model_path, file_sha256, update_packaged_model_card

    def plain(v):
        return int(v) if isinstance(v, int | np.integer) else float(v) if hasattr(v, "__float__") else v

    m = {k: plain(v) for k, v in rows["packaged"].items()}
    update_packaged_model_card(
        "errors_vs_dft",
        {
            "summary": f"vs the shipped CP2K reference set ({m['n_points']} points, {m['n_compositions']} compositions x 4 "
            f"tilt systems, single points at fixed structures): phase energy differences E(tilt) - "
            f"E(untilted) MAE {m['phase_de_mae_mev']:.1f} meV/atom (DFT's own |dE| "
            f"{m['dft_de_mean_abs_mev']:.1f}), same lowest phase in {round(m['lowest_phase_agreement'] * m['n_lowest_compared'])} "
            f"of {m['n_lowest_compared']}, forces MAE {m['force_mae']:.2f} eV/A, stress MAE "
            f"{m['stress_mae_gpa']:.2f} GPa",
            "made_by": "benchmarks/bench_dft_reference.py packaged --update-card",
            **m,
            "by_shell": {
                k.split("[")[1].rstrip("]"): {kk: plain(vv) for kk, vv in v.items()}
                for k, v in rows.items()
                if k.startswith("packaged [")
            },
            "reference_methods": ref_card.get("methods"),
            "model_sha256": file_sha256(default_model_path()),
            "dp_screen_version": __version__,
        },
    )


if __name__ == "__main__":
    main()
