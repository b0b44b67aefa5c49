"""DFT labels from CP2K results and VASP task documents through one conversion (``dp_screen.dft.labels``).

The VASP fixture (``tests/data/vasp_static``) is the smallest honest one found: ``vasprun.xml`` is ASE's test file
``ase/test/testdata/vasp/vasprun_pstress.xml`` (a real VASP 6.3.0 run of 2-atom Li with PSTRESS; VASP itself cannot
run here), ``CONTCAR`` its final structure, and ``OUTCAR`` only the header lines pymatgen's parser requires (NBANDS
and NIONS from that vasprun; the NPLWV value is a placeholder). emmet's ``TaskDoc.from_directory``, which atomate2's
VASP jobs call, builds the TaskDoc from them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dp_screen.dft.labels import VASP_KBAR_TO_GPA, dft_label
from dp_screen.errors import InputError

FIXTURE = Path(__file__).parent / "data" / "vasp_static"


@pytest.fixture(scope="module")
def task_doc(tmp_path_factory):
    import shutil
    import warnings

    from emmet.core.tasks import TaskDoc

    folder = tmp_path_factory.mktemp("vasp")
    for f in FIXTURE.iterdir():
        shutil.copy(f, folder / f.name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no POTCAR here: emmet warns
        return TaskDoc.from_directory(folder)


def test_vasp_task_doc_gives_stress_in_gpa_with_ase_sign(task_doc):
    from pymatgen.io.vasp import Vasprun

    vr = Vasprun(str(FIXTURE / "vasprun.xml"), parse_dos=False, parse_eigen=False)
    kbar = np.asarray(vr.ionic_steps[-1]["stress"])
    assert abs(kbar[0, 0]) > 100  # compressed by PSTRESS: a sign error cannot hide
    for form in (task_doc, task_doc.model_dump()):  # the object, and the dict a jobflow store keeps
        label = dft_label(form)
        assert label["method"] == "vasp-pbe" and label["scf_converged"]
        assert label["energy"] == pytest.approx(vr.final_energy)
        np.testing.assert_allclose(label["stress_gpa"], kbar * VASP_KBAR_TO_GPA)
        assert label["stress_gpa"][0][0] == pytest.approx(-kbar[0, 0] / 10)  # kbar -> GPa, ASE's sign
        assert np.asarray(label["forces"]).shape == (len(vr.final_structure), 3)


def test_cp2k_result_and_bad_input():
    cp2k = {
        "method": "cp2k-pbe",
        "energy": -10.0,
        "forces": np.zeros((2, 3)),
        "stress_gpa": np.eye(3),
        "scf_converged": False,
        "settings": {"cutoff": 400},
    }
    label = dft_label(cp2k)
    assert label["stress_gpa"] == np.eye(3).tolist() and label["scf_converged"] is False
    with pytest.raises(InputError, match="allowed: a CP2K result dict"):
        dft_label({"energy": 1.0})


def test_finetune_maker_reads_vasp_labels(task_doc, tmp_path, monkeypatch):
    """FineTuneMaker takes TaskDocs as labels (before: it indexed lab["energy"] and failed on them); what it writes
    for mace_run_train has the stress in GPa. mace_run_train itself is replaced by a recorder here: the training
    run is exercised with CP2K labels elsewhere (tests/test_training.py)."""
    import dp_screen.jobs.training as training
    from dp_screen.settings import DPScreenSettings

    seen = {}

    def record(path, settings, db, name):
        seen["xyz"] = Path(path).read_text()
        return {"path": "m.model", "sha256": "0" * 64, "errors": {}, "n_train": 1}

    monkeypatch.setattr(training, "finetune_to_store", record)
    structure = task_doc.output.structure
    maker = training.FineTuneMaker()
    out = maker.make.original(
        maker,
        {"structures": [structure], "labels": [{"composition_id": "Li"}]},
        [task_doc],
        DPScreenSettings(home=tmp_path).model_dump(mode="json"),
    )
    assert out["n_train"] == 1
    from ase.io import read

    (atoms,) = read(str(tmp_path / "training" / f"{maker.model_name}.xyz"), index=":")
    stress_gpa = np.asarray(atoms.info["REF_stress"]).reshape(3, 3) * 160.21766208  # eV/A^3 -> GPa
    np.testing.assert_allclose(stress_gpa, dft_label(task_doc)["stress_gpa"], rtol=1e-6)
    assert atoms.info["REF_energy"] == pytest.approx(task_doc.output.energy)
