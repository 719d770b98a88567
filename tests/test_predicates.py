"""Readable predicates from concepts, metadata and labels."""

from __future__ import annotations

import numpy as np
import pandas as pd

from medaudit.audit.predicates import build_predicates


def test_names_and_values() -> None:
    concepts = pd.DataFrame({"support device": [1, 0, -1, 2], "pneumonia": [0, 0, 0, 0]}, dtype="int8")
    meta = pd.DataFrame({"view": ["AP", "PA", "AP", None] * 3, "age": np.arange(20, 80, 5)})
    concepts = pd.concat([concepts] * 3, ignore_index=True)
    p = build_predicates(concepts, meta, label=np.array([0, 1, 0, 1] * 3))
    assert p.dtypes.eq(bool).all()
    assert p["report mentions support device"].tolist()[:4] == [True, False, False, False]
    assert p["report denies support device"].tolist()[:4] == [False, False, True, False]
    assert p["report is uncertain about support device"].tolist()[:4] == [False, False, False, True]
    assert "report mentions pneumonia" not in p.columns  # constant columns are dropped
    assert p["view = AP"].sum() == 6 and p["view is missing"].sum() == 3
    assert p["label = 0"].sum() == 6
    age = [c for c in p.columns if c.startswith("age ")]
    # quartiles and the 5/10/90/95th percentiles: 7 distinct cut points here, each as < and >=
    assert len(age) == 14 and "age >= 50" in age and "age < 50" in age, age
    assert (p["age >= 50"] == (meta["age"] >= 50)).all()
    assert p["age >= 75"].sum() == 1  # the top 5% is one predicate (quartiles alone stop at 65)


def test_extra_columns_kept() -> None:
    extra = pd.DataFrame({'report says "pectus"': [True, False, True]})
    p = build_predicates(extra=extra)
    assert list(p.columns) == ['report says "pectus"']
