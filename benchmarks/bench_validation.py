"""How far to trust the packaged default model: real CP2K PBE single points of every variant of a few compositions,
compared with the MLIP by ``dp_screen.analysis`` (phase-energy MAE / RMSE, rank correlation, same lowest phase,
force and stress errors). Needs cp2k (apt-get install -y cp2k). The oxide is Ba2CaTeO6 (closed shell, no +U): an
oxide of W, Mo or another +U element is a supercell at the Gamma point in CP2K 2023.1 (dft/hamiltonian.py), and
Ba2CaWO6's untilted cell, run that way, took 115 s per SCF step of 270 atoms here (stopped after 9 steps).

Usage: OMP_NUM_THREADS=1 python benchmarks/bench_validation.py [--tilts a0a0a0,a0a0c-] [--out report_validation]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

from dp_screen.analysis import data, trends
from dp_screen.analysis.report import write_report
from dp_screen.dft.cp2k import CP2KSettings
from dp_screen.jobs.build import BuildSettings, build_structures_to_store
from dp_screen.jobs.enumerate import EnumerationSettings, write_compositions
from dp_screen.jobs.relax import relax_store
from dp_screen.jobs.validate import validate_sample
from dp_screen.mlip.relax import RelaxSettings
from dp_screen.settings import DPScreenSettings
from dp_screen.stores import EmbeddedServer

TABLE = "site,element,oxidation_state\nA,Ba,2\nB,Ca,2\nB,Te,6\nX,O,-2\n"
TABLE2 = "site,element,oxidation_state\nA,Cs,1\nB,Ag,1\nB,Bi,3\nX,Cl,-1\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tilts", default="a0a0a0,a0a0c-,a-a-a-")
    parser.add_argument("--out", default=None)
    parser.add_argument("--save", action="store_true", help="write benchmarks/results/bench_validation.json (docs)")
    args = parser.parse_args()
    tilts = args.tilts.split(",")
    home = Path(tempfile.mkdtemp(prefix="bench_validation_"))
    settings = DPScreenSettings(home=home)
    server = EmbeddedServer(settings)
    settings = DPScreenSettings(home=home, db_uri=server.start()["uri"])
    try:
        for i, text in enumerate((TABLE, TABLE2)):
            (home / f"t{i}.csv").write_text(text)
            write_compositions(EnumerationSettings(table=str(home / f"t{i}.csv"), allow_same_b=False), settings)
        build_structures_to_store(BuildSettings(tilts=tilts), settings)
        relaxed = relax_store(None, RelaxSettings(fmax=0.02, max_steps=300), settings, device="cpu")
        print(f"relaxed {relaxed['relaxed']} structures with the default model")
        cp2k = CP2KSettings(nproc=2)
        t0 = time.perf_counter()
        done = validate_sample(None, 2 * len(tilts), cp2k, settings, work_dir=home / "cp2k")
        cp2k_s = time.perf_counter() - t0
        print(f"CP2K: {done['validated']} single points in {cp2k_s:.0f} s; errors: {done['errors']}")
        vals = data.validation_table(settings)
        pd.set_option("display.width", 160)
        print(
            vals[
                [
                    "formula",
                    "start_tilt",
                    "space_group",
                    "n_atoms",
                    "dft_energy_per_atom",
                    "mlip_energy_per_atom",
                    "force_mae",
                    "stress_mae_gpa",
                ]
            ].to_string(index=False)
        )
        print(
            trends.parity_table(vals)[["formula", "start_tilt", "dft_rel_mev", "mlip_rel_mev"]].to_string(index=False)
        )
        stats = trends.parity_stats(vals)
        print(stats.T.to_string())
        if args.save:
            figures = {"CP2K single points": f"{done['validated']} in {cp2k_s:.0f} s (errors: {done['errors']})"}
            row = stats.iloc[0]
            figures.update(
                {
                    "phase energy differences E(tilt) - E(a0a0a0)": f"MAE {row['energy_mae_mev']:.1f}, RMSE "
                    f"{row['energy_rmse_mev']:.1f} meV/atom on {int(row['n_differences'])} differences",
                    "rank correlation": f"{row['rank_correlation']:.2f}",
                    "same lowest phase": f"{row['ground_state_agreement']:.0%} of {int(row['n_compositions'])} compositions",
                    "forces MAE (eV/A)": f"{row['force_mae']:.3f}",
                    "stress MAE (GPa)": f"{row['stress_mae_gpa']:.2f}",
                    "SCF unconverged": f"{int(row['n_scf_unconverged'])} of {int(row['n_structures'])}",
                }
            )
            from _results import save_figures  # benchmarks/_results.py, next to this script

            save_figures(
                "bench_validation",
                figures,
                note="packaged model vs CP2K PBE on Ba2CaTeO6 and Cs2AgBiCl6 in " + ", ".join(tilts),
            )
        if args.out:
            print("report:", write_report(args.out, settings).html)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
