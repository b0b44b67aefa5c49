"""Oxidation-state twins share one relaxation: the chemistry id, the re-decorated copy, the relax job relaxing one
start per chemistry and giving each twin its own documents, a later twin copying the stored relaxation, campaign
chunks that never split a chemistry."""

from __future__ import annotations

import pandas as pd
import pytest
from pymatgen.core import Structure

from dp_screen.campaign_store import CampaignStore
from dp_screen.chemistry.composition_space import chemistry_id, twin_counts
from dp_screen.flows.screening import _chunks
from dp_screen.jobs.build import BuildSettings, build_structures_to_store, relaxation_counts
from dp_screen.jobs.enumerate import EnumerationSettings, enumerate_table, write_compositions
from dp_screen.jobs.relax import relax_store
from dp_screen.mlip.relax import RelaxSettings
from dp_screen.structures.twins import redecorate

# Cs2BB'Cl6 with qB + qB' = 4: Ag+Ag3+, Co+Co3+ and the twins Ag+Co3+ / Co+Ag3+ (Ag on B in one, on B' in the
# other); elements the tests' tiny model knows, radii made up for the test (Co+ has no Shannon radius)
TABLE = (
    "site,element,oxidation_state,radius\nA,Cs,1,1.88\nB,Ag,1,1.15\nB,Ag,3,0.75\nB,Co,1,1.0\nB,Co,3,0.61\n"
    "X,Cl,-1,1.81\n"
)
TWIN_1, TWIN_2 = "Cs+_Cs+_Ag+_Co3+_Cl-", "Cs+_Cs+_Co+_Ag3+_Cl-"


@pytest.fixture(scope="module")
def table_path(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("twins") / "table.csv"
    path.write_text(TABLE)
    return str(path)


def test_chemistry_id_joins_twins_and_nothing_else():
    assert chemistry_id("Sr2+_Sr2+_Fe2+_Mo6+_O2-") == chemistry_id("Sr2+_Sr2+_Fe3+_Mo5+_O2-") == "Sr_Sr_Fe_Mo_O"
    assert chemistry_id(TWIN_1) == chemistry_id(TWIN_2) == "Cs_Cs_Ag_Co_Cl"
    assert chemistry_id("Sr2+_Sr2+_Fe3+_Mo5+_O2-") != chemistry_id("Sr2+_Sr2+_Fe3+_W5+_O2-")
    with pytest.raises(ValueError, match="not a composition id: 'CsCl'"):
        chemistry_id("CsCl")
    df = pd.DataFrame(
        {
            "composition_id": [TWIN_1, TWIN_2, "Cs+_Cs+_Co+_Co3+_Cl-", "Sr2+_Sr2+_Fe2+_Mo6+_O2-"],
            "expected_ordering": ["rocksalt", "rocksalt", "rocksalt", "layered"],
        }
    )
    assert twin_counts(df) == {"compositions": 4, "chemistries": 3, "twins": 1}


def test_a_copy_keeps_every_atom_and_takes_the_twins_oxidation_states_and_roles(table_path):
    from dp_screen.structures.perovskite import SiteSpeciesSet, build_bvm_structure

    _, df = enumerate_table(EnumerationSettings(table=table_path))
    row = df.set_index("composition_id").loc[TWIN_1].to_dict()
    built = build_bvm_structure(SiteSpeciesSet.from_row({**row, "composition_id": TWIN_1}), "rocksalt", "a0a0c-")
    copy = Structure.from_dict(redecorate(built.structure.as_dict(), TWIN_2))
    assert copy.lattice == built.structure.lattice
    assert [s.specie.symbol for s in copy] == [s.specie.symbol for s in built.structure]
    roles = dict(zip([str(s.specie) for s in copy], copy.site_properties["site"], strict=True))
    assert roles == {"Cs+": "A", "Co+": "B", "Ag3+": "B2", "Cl-": "X"}  # Co was B2 (Co3+) in TWIN_1
    with pytest.raises(ValueError, match="not in the twin's pair"):
        redecorate(built.structure.as_dict(), "Cs+_Cs+_Ag+_Bi3+_Cl-")


@pytest.fixture
def twins_store(db_settings, table_path):
    write_compositions(EnumerationSettings(table=table_path), db_settings)
    build_structures_to_store(BuildSettings(tilts=["a0a0a0", "a0a0c-"]), db_settings)
    return db_settings


def test_twins_are_relaxed_once_each_keeping_its_own_documents(twins_store, tiny_model_path):
    settings = RelaxSettings(max_steps=40)
    built = CampaignStore(twins_store).built_structure_meta(None)
    assert len(built) == 8
    # the second twin's composition is relaxed alone first; the others then relax, the first twin copies it
    first = relax_store(
        str(tiny_model_path), settings, twins_store, query={"composition_id": TWIN_2}, device="cpu", write_every=1
    )
    assert (first["relaxed"], first["shared"]) == (2, 0)
    rest = relax_store(str(tiny_model_path), settings, twins_store, device="cpu", write_every=1)
    assert (rest["skipped"], rest["relaxed"], rest["shared"]) == (2, 4, 2)
    store = CampaignStore(twins_store)
    docs = {d["structure_id"]: d for d in store.relaxations({})}
    assert len(docs) == 8
    for tilt in ("a0a0a0", "a0a0c-"):
        own = docs[f"{TWIN_2}:rocksalt:{tilt}:bvm"]
        copy = docs[f"{TWIN_1}:rocksalt:{tilt}:bvm"]
        assert copy["relaxed_as"] == own["structure_id"] and own["relaxed_as"] is None
        assert copy["energy_per_atom"] == own["energy_per_atom"] and copy["phase_tilt"] == own["phase_tilt"]
        assert copy["share_key"] == own["share_key"] and copy["composition_id"] == TWIN_1
        species = {str(s.specie) for s in Structure.from_dict(copy["structure"])}
        assert species == {"Cs+", "Ag+", "Co3+", "Cl-"}
    # each twin has its own phase summary and keeps its own descriptors
    comps = {
        c["composition_id"]: c
        for c in store.compositions(None, ["composition_id", "phases", "goldschmidt_t", "chemistry_id"])
    }
    assert comps[TWIN_1]["phases"] and comps[TWIN_2]["phases"]
    assert comps[TWIN_1]["goldschmidt_t"] != comps[TWIN_2]["goldschmidt_t"]
    assert comps[TWIN_1]["chemistry_id"] == comps[TWIN_2]["chemistry_id"] == "Cs_Cs_Ag_Co_Cl"
    again = relax_store(str(tiny_model_path), settings, twins_store, device="cpu")
    assert (again["relaxed"], again["shared"], again["skipped"]) == (0, 0, 8)


def test_twins_relaxed_together_relax_the_first_ones_start_and_can_be_kept_apart(twins_store, tiny_model_path):
    together = relax_store(str(tiny_model_path), RelaxSettings(max_steps=30), twins_store, device="cpu")
    assert (together["relaxed"], together["shared"]) == (6, 2)
    docs = {d["structure_id"]: d for d in CampaignStore(twins_store).relaxations({})}
    first, second = sorted([TWIN_1, TWIN_2])  # the start relaxed: the twin first in composition-id order
    assert docs[f"{second}:rocksalt:a0a0a0:bvm"]["relaxed_as"] == f"{first}:rocksalt:a0a0a0:bvm"
    apart = relax_store(str(tiny_model_path), RelaxSettings(max_steps=31), twins_store, device="cpu", share_twins=False)
    assert (apart["relaxed"], apart["shared"]) == (8, 0)


def test_relaxation_counts_and_chunks_that_keep_twins_together(table_path):
    _, df = enumerate_table(EnumerationSettings(table=table_path))
    assert relaxation_counts(df, BuildSettings(tilts=["a0a0a0", "a0a0c-"])) == {
        "structures": 8,
        "relaxations": 6,
        "saved": 2,
    }
    ids = sorted(df["composition_id"])
    chunks = _chunks(ids, 1)
    assert sorted(c for chunk in chunks for c in chunk) == ids
    assert any(set(chunk) == {TWIN_1, TWIN_2} for chunk in chunks)
    assert all(len({chemistry_id(c) for c in chunk}) == 1 for chunk in chunks)


def test_a_later_twin_copies_the_committee_scores_of_the_stored_relaxation(twins_store, tiny_model_path, tmp_path):
    """With a committee, a twin that copies a stored relaxation gets the committee's scores of that relaxation,
    scored once (the stored original is scored and written back; the copy carries the same spreads)."""
    from conftest import TINY_ELEMENTS, make_tiny_mace

    settings = RelaxSettings(max_steps=30)
    relax_store(str(tiny_model_path), settings, twins_store, query={"composition_id": TWIN_2}, device="cpu")
    members = [str(tiny_model_path), str(make_tiny_mace(tmp_path / "m1.model", TINY_ELEMENTS, seed=1))]
    out = relax_store(
        str(tiny_model_path), settings, twins_store, query={"composition_id": TWIN_1}, device="cpu", committee=members
    )
    assert (out["relaxed"], out["shared"]) == (0, 2)
    docs = {d["structure_id"]: d for d in CampaignStore(twins_store).relaxations({})}
    pairs = [(docs[f"{TWIN_2}:rocksalt:{t}:bvm"], docs[f"{TWIN_1}:rocksalt:{t}:bvm"]) for t in ("a0a0a0", "a0a0c-")]
    assert any(not own["failed"] for own, _ in pairs)
    for own, copy in pairs:
        if own["failed"]:
            continue
        assert own["uncertainty"]["committee_sha256"] == copy["uncertainty"]["committee_sha256"]
        assert own["energy_spread_mev_atom"] == copy["energy_spread_mev_atom"] is not None
