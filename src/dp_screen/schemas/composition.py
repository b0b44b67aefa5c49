"""The document of one AA'BB'X6 composition, with its descriptors (collection ``compositions``)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field, TypeAdapter

from dp_screen.schemas.common import Provenance

if TYPE_CHECKING:
    import pandas as pd


class CompositionDoc(BaseModel):
    """One charge-balanced AA'BB'X6 composition (one oxidation-state assignment) and its descriptors."""

    composition_id: str = Field(
        ..., description="Canonical id A_A'_B_B'_X in species notation, e.g. Cs+_Cs+_Ag+_Bi3+_Cl-"
    )
    formula: str = Field(..., description="Formula with the site order kept, e.g. Cs2AgBiCl6")
    chemistry_id: str | None = Field(
        None,
        description="Its elements on the sites, e.g. Cs_Cs_Ag_Bi_Cl: oxidation-state twins share it and one "
        "relaxation per ordering, tilt and method (dp_screen.structures.twins); None: stored before 0.4",
    )
    A: str
    nA: int
    rA: float = Field(..., description="Radius of A (Angstrom, Shannon, coordination of the site table)")
    A2: str
    nA2: int
    rA2: float
    B: str
    nB: int
    rB: float
    B2: str
    nB2: int
    rB2: float
    X: str
    nX: int
    rX: float
    rA_mean: float
    rB_mean: float
    nA_mean: float
    goldschmidt_t: float = Field(..., description="Goldschmidt tolerance factor (site-averaged radii)")
    goldschmidt_ok: bool = Field(..., description="0.825 < t < 1.059")
    tau: float | None = Field(..., description="Bartel tau; None where undefined (rA <= rB)")
    tau_perovskite: bool = Field(..., description="tau < 4.18 (False where tau is undefined)")
    octahedral_factor: float = Field(..., description="rB / rX")
    dqA: int = Field(..., description="|qA - qA'|")
    dqB: int = Field(..., description="|qB - qB'|")
    drA: float = Field(..., description="|rA - rA'| (Angstrom)")
    drB: float = Field(..., description="|rB - rB'| (Angstrom)")
    rocksalt_b_likely: bool = Field(..., description="|qB - qB'| >= 2 (King & Woodward 2010)")
    layered_a_plausible: bool = Field(..., description="A, A' differ in charge by 2 and B is rock-salt ordered")
    expected_ordering: Literal["rocksalt", "layered", "rocksalt-A"]
    provenance: Provenance = Field(default_factory=Provenance)

    @classmethod
    def from_table(cls, df: pd.DataFrame, provenance: Provenance) -> list[dict]:
        """Store documents (plain dicts of Python scalars) for every row of an enumeration table.

        Every document is validated against this schema; the validated dicts are returned as built (their values
        are already native Python types), which avoids a second pass through pydantic.
        """
        from dp_screen.chemistry.composition_space import chemistry_id

        fields = [f for f in cls.model_fields if f not in ("provenance", "chemistry_id")]
        columns = [df[f].tolist() for f in fields]
        prov = provenance.model_dump()
        tau_at = fields.index("tau")
        records = []
        for row in zip(*columns, strict=True):
            rec = dict(zip(fields, row, strict=True))
            rec["chemistry_id"] = chemistry_id(rec["composition_id"])
            if math.isnan(row[tau_at]):
                rec["tau"] = None
            rec["provenance"] = prov
            records.append(rec)
        _adapter.validate_python(records)
        return records


_adapter = TypeAdapter(list[CompositionDoc])
