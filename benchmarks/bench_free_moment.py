"""Is the total magnetic moment free to change during CP2K's SCF, as in the Materials Project's VASP runs?

dp_screen's CP2K input (dft/cp2k.py) starts an open-shell cell ferromagnetic with MULTIPLICITY = total high-spin
moment + 1 and Fermi-Dirac smearing (&SMEAR) on. CP2K's FIXED_MAGNETIC_MOMENT (in &SMEAR) defaults to -100: "a
negative value allows for a change of the magnetic moment" (CP2K 2023.1 input reference, `cp2k.psmp --xml`), so
MULTIPLICITY only sets the start. This script checks it: Cs2NaCrCl6 (Cr3+ d3, 3 muB, no +U on a chloride, so
k-points stay available; Gamma only here to keep it cheap: the question is the moment, not the energy) once as
dp_screen writes it (MULTIPLICITY 4) and once started at MULTIPLICITY 2 (1 unpaired electron). A free moment ends
both at the same total spin and energy.

    python benchmarks/bench_free_moment.py [--save]    # about 8 minutes on 2 cores
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from dataclasses import replace

os.environ.setdefault("OMP_NUM_THREADS", "1")


def run(multiplicity: int | None, work: str) -> dict:
    import dp_screen.dft.cp2k as cp2k
    import dp_screen.dft.hamiltonian as hamiltonian
    from dp_screen.structures.perovskite import SiteSpeciesSet, build_bvm_structure

    s = build_bvm_structure(SiteSpeciesSet(("Cs", 1), ("Cs", 1), ("Na", 1), ("Cr", 3), ("Cl", -1))).structure
    original = hamiltonian.hamiltonian_for
    if multiplicity:  # the start moment forced to another value
        hamiltonian.hamiltonian_for = lambda st: replace(original(st), multiplicity=multiplicity)
    try:
        res = cp2k.run_cp2k(s, cp2k.CP2KSettings(kpoint_length=0.0), work)
    finally:
        hamiltonian.hamiltonian_for = original
    text = open(res["output_file"]).read()
    alpha, beta, _, spin = (
        float(x) for x in re.findall(r"# Total charge and spin\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)", text)[-1]
    )
    start = re.search(r"DFT\| Multiplicity\s+(\d+)", text).group(1)
    return {
        "start_multiplicity": int(start),
        "final_alpha": alpha,
        "final_beta": beta,
        "final_spin": spin,
        "energy_ev": res["energy"],
        "scf_converged": res["scf_converged"],
    }


def main() -> None:
    from dp_screen.dft.cp2k import cp2k_executable

    save = "--save" in sys.argv[1:]
    if cp2k_executable() is None:
        sys.exit("cp2k is not installed (apt-get install -y cp2k)")
    work = tempfile.mkdtemp(prefix="dp_screen_moment_")
    rows = [run(None, f"{work}/as_written"), run(2, f"{work}/start_1_unpaired")]
    for r in rows:
        print(
            f"start MULTIPLICITY {r['start_multiplicity']}: final alpha {r['final_alpha']:.0f}, beta "
            f"{r['final_beta']:.0f}, total spin moment {r['final_spin']:.3f}, E {r['energy_ev']:.6f} eV, SCF "
            f"converged {r['scf_converged']}"
        )
    free = abs(rows[0]["final_spin"] - rows[1]["final_spin"]) < 1e-3
    print(
        f"moment free during the SCF: {free} (energy difference {1e3 * (rows[1]['energy_ev'] - rows[0]['energy_ev']):.4f} meV)"
    )
    if save:
        figures = {
            f"started at MULTIPLICITY {r['start_multiplicity']}": f"total spin moment {r['final_spin']:.3f}, "
            f"E {r['energy_ev']:.6f} eV, SCF converged {r['scf_converged']}"
            for r in rows
        }
        figures["moment free during the SCF"] = (
            f"{free} (energy difference {1e3 * (rows[1]['energy_ev'] - rows[0]['energy_ev']):.4f} meV)"
        )
        from _results import save_figures  # benchmarks/_results.py, next to this script

        save_figures("bench_free_moment", figures, note="Cs2NaCrCl6 (Cr3+, 3 unpaired electrons), CP2K at Gamma")


if __name__ == "__main__":
    main()
