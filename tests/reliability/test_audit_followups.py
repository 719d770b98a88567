"""Follow-ups of the bad-input sweep of ``medaudit audit``: each case is refused with exit 2, one line
naming the file, column, row or flag, and nothing written (or, for the report and the Ray cache, the
output is right)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from .conftest import make_table
from .conftest import refused as _refused

RULES = ["--slicer", "rules", "--n-slices", "2", "--no-report"]


@pytest.fixture
def work(tmp_path: Path) -> Path:
    make_table(tmp_path / "data")
    return tmp_path


def _rules_args(table: Path, out: Path, cache: Path, *extra: object) -> list[object]:
    return ["audit", "--table", table, "--out", out, *RULES, "--cache-dir", cache, *extra]


def _cases(work: Path) -> pd.DataFrame:
    return pd.read_csv(work / "data" / "cases.csv")


# -- 1. a metadata column blank in every row, for every slicer ----------------------------------------


@pytest.mark.parametrize("slicer", ["rules", "mixture", "both"])
def test_blank_metadata_column_is_refused_by_every_slicer(cli, work, audit_cache, slicer):
    df = _cases(work)
    df["view"] = np.nan
    t = work / "data" / "blank.csv"
    df.to_csv(t, index=False)
    args = ["audit", "--table", t, "--out", work / "out", "--slicer", slicer, "--meta", "view,age"]
    args += ["--modalities", "report,metadata", "--n-components", "4", "--n-slices", "2", "--pca", "0"]
    args += ["--no-report", "--cache-dir", audit_cache]
    line = _refused(cli, args, [work], "blank.csv", "column 'view'", "every row", "--meta")
    assert line == f"error: {t}: column 'view' (metadata) is empty in every row; drop it from --meta"
