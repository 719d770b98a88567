"""An eighth adversarial sweep of ``medaudit audit``: inputs that gave a silently wrong audit or a line
that did not say where the fault is; each case failed before its fix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medaudit.audit.config import ColumnMap
from medaudit.audit.table import load_case_table
from medaudit.configfile import read_mapping
from medaudit.data.images import read_grayscale
from medaudit.errors import InputError
from test_images import RAMP, write_dicom

from .conftest import make_table
from .conftest import refused as _refused


@pytest.fixture
def work(tmp_path: Path) -> Path:
    make_table(tmp_path / "data")
    return tmp_path


# -- 1. one table column given two roles ---------------------------------------------------------------


def test_config_giving_the_label_column_the_prob_role_is_refused(cli, audit_args, work):
    """``columns: {prob: label}`` audited a classifier that makes no error: a warning and an empty
    audit (exit 0)."""
    cfg = work / "a.yaml"
    cfg.write_text("columns: {prob: label}\n")
    args = audit_args(work / "data" / "cases.csv", work / "out", "--config", cfg)
    _refused(cli, args, [work], "a.yaml", "columns label and prob", "column 'label'")


@pytest.mark.parametrize("flags", [["--prob-col", "label"], ["--label-col", "prob"]])
def test_flags_giving_one_column_two_roles_are_refused(cli, audit_args, work, flags):
    args = audit_args(work / "data" / "cases.csv", work / "out", *flags)
    line = _refused(cli, args, [work], "command line", "--label-col", "--prob-col")
    assert "--columns" not in line and "ColumnMap" not in line, line


@pytest.mark.parametrize(
    "shared",
    [{"id": "image"}, {"id": "path", "report_path": "path"}, {"pred": "prob"}, {"report_path": "report"}],
    ids=["id-is-image-path", "id-is-report-path", "prob-and-pred", "report-path-replaces-report"],
)
def test_column_roles_that_may_share_a_column(shared):
    ColumnMap(**shared)


# -- 2. a TAB in the indentation of a YAML config ----------------------------------------------------


def test_yaml_config_indented_with_a_tab_names_line_and_column(cli, audit_args, work):
    """'not a readable YAML/JSON config (while scanning for the next token)': no line, no TAB."""
    cfg = work / "a.yaml"
    cfg.write_text("n_slices: 2\nslicer_kwargs:\n\talpha: 0.5\n")
    args = audit_args(work / "data" / "cases.csv", work / "out", "--config", cfg)
    line = _refused(cli, args, [work], "a.yaml", "line 3, column 1", "'\\t'", "spaces")
    with pytest.raises(InputError, match=r"a\.yaml: .*line 3, column 1"):
        read_mapping(cfg)  # the reader every config (audit, texture train) goes through
    assert "while scanning" not in line, line


# -- 3. DICOM without a usable window; an empty image file ----------------------------------------------


@pytest.mark.parametrize("width", [0, -5])
@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_dicom_window_width_zero_or_less_is_min_max_scaled(tmp_path, width, photometric):
    """'cannot read image (ValueError: The (0028,1051) Window Width must be greater than or equal to 1
    ...)': real files carry a width of 0."""
    p = write_dicom(
        tmp_path / "w.dcm",
        RAMP,
        photometric,
        WindowCenter=1000,
        WindowWidth=width,
        RescaleSlope=2,
        RescaleIntercept=-100,
    )
    img = read_grayscale(p)
    expected = (RAMP - RAMP.min()) / (RAMP.max() - RAMP.min())  # min-max after the (linear) rescale
    if photometric == "MONOCHROME1":
        expected = 1.0 - expected
    np.testing.assert_allclose(img, expected, atol=1e-6)


@pytest.mark.parametrize("name", ["x.png", "x.dcm"])
def test_zero_byte_image_is_named_empty(tmp_path, name):
    """A 0-byte PNG was 'cannot identify image file'; a 0-byte .dcm a missing 'DICM' prefix."""
    (tmp_path / name).write_bytes(b"")
    with pytest.raises(InputError, match=rf"{name}: empty file \(0 bytes\)$"):
        read_grayscale(tmp_path / name)
    t = tmp_path / "cases.csv"
    t.write_text(f"id,label,prob,image\nc1,1,0.5,{name}\n")
    with pytest.raises(InputError, match=rf"row 1 .*{name}: empty file \(0 bytes\)$"):
        load_case_table(t, require=("image",))


# -- 4. --dataset: a predictions file holding only its header --------------------------------------------


def test_dataset_predictions_with_a_header_only_say_so(cli, tmp_path):
    """'no prediction row matches an image of the dataset': as if ids were wrong."""
    from test_dataset_audit import FAST, _mimic_n

    root, reports = _mimic_n(tmp_path, n_studies=2)
    pred = tmp_path / "pred.csv"
    pred.write_text("dicom_id,Edema\n")
    args = ["audit", "--dataset", f"mimic-cxr:{root}", "--dataset-reports", reports, "--predictions", pred]
    args += ["--target", "all", "--out", tmp_path / "out", *FAST, "--cache-dir", tmp_path / "cache"]
    line = _refused(cli, args, [tmp_path], "pred.csv", "no prediction rows")
    assert "matches" not in line, line


# -- 5. a JSON Lines number that pandas' reader cannot hold -----------------------------------------------


@pytest.mark.parametrize(
    "value", ["1" + "0" * 400, "-" + "9" * 19, "1" * 25 + ".5"], ids=["401-digits", "below-int64", "decimal"]
)
def test_jsonl_number_too_large_names_its_line_and_key(cli, audit_args, work, value):
    """'cannot read table (Value is too big! at position 232)': a position in no line of the file."""
    rows = pd.read_csv(work / "data" / "cases.csv").to_dict("records")
    lines = [json.dumps(r) for r in rows]
    lines[3] = lines[3].replace(f'"age": {rows[3]["age"]}', f'"age": {value}')
    t = work / "data" / "cases.jsonl"
    t.write_text("\n".join(lines) + "\n")
    line = _refused(
        cli, audit_args(t, work / "out"), [work], "cases.jsonl: line 4, key 'age'", "out of range"
    )
    assert "position" not in line, line


def test_jsonl_number_at_uint64_max_is_still_read(tmp_path):
    t = tmp_path / "t.jsonl"
    t.write_text('{"id": "a", "label": 1, "prob": 0.5, "n": 18446744073709551615}\n')
    assert load_case_table(t, meta=["n"], require=()).meta["n"].tolist() == [18446744073709551615]
