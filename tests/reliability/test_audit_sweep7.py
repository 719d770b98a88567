"""A seventh adversarial sweep of ``medaudit audit``: inputs that gave an internal error, a misleading
line or a silently wrong audit; each case failed before its fix."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medaudit.audit.config import ColumnMap
from medaudit.audit.table import load_case_table

from .conftest import make_table, reports_as_files
from .conftest import refused as _refused


@pytest.fixture
def work(tmp_path: Path) -> Path:
    make_table(tmp_path / "data")
    return tmp_path


def _never(*a: object, **k: object) -> None:
    raise AssertionError("the embedding started")


# -- 1. a whole number in a metadata column that no float can hold ---------------------------------------


def test_metadata_number_beyond_float_range_is_a_bad_row(cli, audit_args, work):
    """pandas reads a 400-digit CSV cell as a Python int; the numeric check after the table was read
    raised 'OverflowError: int too large to convert to float' (internal error, exit 1)."""
    t = work / "data" / "cases.csv"
    df = pd.read_csv(t).astype({"age": object})
    df.loc[3, "age"] = "1" + "0" * 400
    df.to_csv(t, index=False)
    line = _refused(
        cli, audit_args(t, work / "out"), [work], "cases.csv", "column 'age'", "row 4 (id 'c003')"
    )
    assert "401 digits" in line and "too large" in line, line
    rc, err = cli(*audit_args(t, work / "out", "--skip-bad"))
    assert rc == 0, err
    counts = json.loads((work / "out" / "slices.json").read_text())["counts"]
    assert counts["skipped_reasons"] == {"bad metadata value": 1} and counts["cases"] == 39


# -- 2. a JSON Lines row that names a key twice ------------------------------------------------------------


def test_jsonl_row_naming_a_key_twice_is_refused(cli, audit_args, work):
    """pandas kept the last of ``"label": 1, ..., "label": 0`` silently: the audit ran on a flipped
    label (exit 0, another error rate)."""
    rows = pd.read_csv(work / "data" / "cases.csv").to_dict("records")
    lines = [json.dumps(r) for r in rows]
    lines[2] = lines[2][:-1] + ', "label": ' + str(1 - rows[2]["label"]) + "}"
    t = work / "data" / "cases.jsonl"
    t.write_text("\n".join(lines) + "\n")
    _refused(cli, audit_args(t, work / "out"), [work], "cases.jsonl: line 3", "'label' twice")


# -- 3. a Parquet file with a repeated column name ---------------------------------------------------------


def test_parquet_with_a_repeated_column_names_it(cli, audit_args, work):
    """pyarrow's 'Multiple matches for FieldRef.Name(label) in id: large_string ...' was the message."""
    df = pd.read_csv(work / "data" / "cases.csv")
    cols = [pa.array(df[c]) for c in df.columns] + [pa.array(1 - df["label"])]
    t = work / "data" / "cases.parquet"
    pq.write_table(pa.table(cols, names=[*df.columns, "label"]), t)
    line = _refused(cli, audit_args(t, work / "out"), [work], "cases.parquet", "column 'label'", "2 times")
    assert "FieldRef" not in line, line


# -- 4. a CSV quote that is never closed ---------------------------------------------------------------------


def test_csv_quote_never_closed_names_the_line_it_opens_on(cli, audit_args, work):
    """A stray '"' at the start of line 5 swallows the rest of the file into one field: the line named
    was the file's last (41), far from the quote."""
    t = work / "data" / "cases.csv"
    lines = t.read_text().splitlines(keepends=True)
    lines[4] = '"' + lines[4]
    t.write_text("".join(lines))
    line = _refused(cli, audit_args(t, work / "out"), [work], "cases.csv: line 5 has 1 fields")
    assert "runs on to line 41" in line and "not closed" in line, line


def test_csv_row_with_a_closed_multiline_field_gets_no_quote_hint(tmp_path):
    t = tmp_path / "t.csv"
    t.write_text('id,label,prob,report\nc1,1,0.5,"two\nlines",extra\n')
    with pytest.raises(Exception, match=r"line 2 has 5 fields, the header has 4$"):
        load_case_table(t, require=("report",))


# -- 5. a report file saved as UTF-16 (Notepad's "Unicode") or with a UTF-8 byte-order mark ---------------


def test_report_files_in_utf16_or_with_a_bom_are_read_as_their_text(work):
    """A UTF-16 report was read as UTF-8 with errors replaced: '\\ufffd\\ufffde\\x00f\\x00f...', letters
    between NUL characters, audited without a word (silently); a UTF-8 BOM stayed in the text."""
    t, df = reports_as_files(work, "r")
    (work / "data" / "r" / "c001.txt").write_bytes("pleural effusion".encode("utf-16"))
    (work / "data" / "r" / "c002.txt").write_bytes("chest tube".encode("utf-8-sig"))
    df.to_csv(t, index=False)
    table = load_case_table(t, ColumnMap(report=None, report_path="rpath"), require=("report",))
    assert table.df["report"][1] == "pleural effusion"
    assert table.df["report"][2] == "chest tube"


# -- 6. config: a misspelt encoder modality, fusion weights that cannot apply --------------------------------


def test_encoder_for_a_misspelt_modality_in_a_config_is_refused(cli, audit_args, work):
    """``encoders: {reports: minilm}`` was ignored: the default report encoder ran (exit 0)."""
    cfg = work / "a.yaml"
    cfg.write_text("encoders: {reports: minilm}\n")
    args = audit_args(work / "data" / "cases.csv", work / "out", "--config", cfg)
    _refused(cli, args, [work], "a.yaml", "key 'encoders'", "'reports'", "not a modality")


@pytest.mark.parametrize(
    ("yaml", "names"),
    [
        ("fusion_weights: {image: 2}\n", ["fusion_weights", "'image'", "not among the selected"]),
        ("fusion_weights: {report: 0, metadata: 0}\n", ["fusion_weights", "every selected modality", "0"]),
    ],
    ids=["unselected-modality", "all-zero"],
)
def test_fusion_weights_that_cannot_apply_are_refused_before_embedding(
    cli, audit_args, work, monkeypatch, yaml, names
):
    """A weight for a modality not selected failed after every case was embedded, as 'fuse: weight given
    for 'image' ...' (no key named); weights of 0 for every modality ran (exit 0) on a fused space of
    zeros, the slices fitted on labels and predictions alone."""
    import medaudit.audit.pipeline as pipeline

    monkeypatch.setattr(pipeline, "_encode_table", _never)
    cfg = work / "a.yaml"
    cfg.write_text(yaml)
    args = audit_args(work / "data" / "cases.csv", work / "out", "--config", cfg, "--slicer", "mixture")
    _refused(cli, args, [work], *names)


def test_fusion_weights_do_not_stop_the_rule_slicer(cli, audit_args, work):
    """The rule search fuses nothing: a shared config's weights are no reason to refuse it."""
    cfg = work / "a.yaml"
    cfg.write_text("fusion_weights: {image: 2}\n")
    rc, err = cli(
        *audit_args(work / "data" / "cases.csv", work / "out", "--config", cfg, "--slicer", "rules")
    )
    assert rc == 0, err


# -- 7. precomputed embeddings beyond float32's range ----------------------------------------------------


@pytest.mark.parametrize("suffix", [".npy", ".parquet"])
def test_embedding_value_beyond_float32_is_named_as_such(cli, audit_args, work, suffix):
    """A finite float64 value of 1e300 became infinite in the cast to float32: numpy printed 'overflow
    encountered in cast' on stderr and the line said 'non-finite values', which the file does not hold."""
    import numpy as np

    ids = pd.read_csv(work / "data" / "cases.csv")["id"].tolist()
    emb = np.random.default_rng(0).normal(size=(len(ids), 6))
    emb[5, 2] = 1e300
    e = work / "data" / f"emb{suffix}"
    if suffix == ".npy":
        np.save(e, emb)
        (work / "data" / "emb.ids.txt").write_text("\n".join(ids) + "\n")
    else:
        pd.DataFrame(emb, columns=[f"f{i}" for i in range(6)]).assign(id=ids).to_parquet(e)
    args = audit_args(work / "data" / "cases.csv", work / "out", "--embeddings", f"report={e}")
    line = _refused(cli, args, [work], f"emb{suffix}", "id 'c005'", "1e+300", "beyond float32")
    assert "non-finite" not in line, line


# -- 8. a header whose column differs only by spaces or case -----------------------------------------------


@pytest.mark.parametrize(("header", "shown"), [(" id ,label", "' id '"), ("id,Label", "'Label'")])
def test_column_differing_only_by_spaces_or_case_is_pointed_out(cli, audit_args, work, header, shown):
    """'unknown column 'id'; available columns: id , label, ...': the list seemed to hold the column."""
    t = work / "data" / "cases.csv"
    t.write_text(t.read_text().replace("id,label", header, 1))
    line = _refused(cli, audit_args(t, work / "out"), [work], "cases.csv: unknown column")
    assert f"column {shown} differs only by spaces or case" in line, line
