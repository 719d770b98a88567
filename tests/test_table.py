"""Case-table validation: every bad input gives a one-line InputError naming the file, column and row."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medaudit.audit.table import ColumnMap, load_case_table, load_embeddings
from medaudit.errors import InputError


def _png(path: Path, seed: int = 0) -> Path:
    arr = (np.random.default_rng(seed).random((16, 16)) * 255).astype(np.uint8)
    Image.fromarray(arr).save(path)
    return path


@pytest.fixture
def good(tmp_path: Path) -> pd.DataFrame:
    (tmp_path / "img").mkdir()
    rows = []
    for i in range(6):
        _png(tmp_path / "img" / f"c{i}.png", i)
        rows.append(
            {
                "id": f"c{i}",
                "label": i % 2,
                "prob": 0.1 + 0.15 * i,
                "image": f"img/c{i}.png",
                "report": f"report number {i}. no pleural effusion.",
                "sex": "F" if i % 2 else "M",
                "age": 40 + i,
            }
        )
    return pd.DataFrame(rows)


def _write(tmp_path: Path, df: pd.DataFrame, name: str = "cases.csv") -> Path:
    p = tmp_path / name
    if name.endswith(".csv"):
        df.to_csv(p, index=False)
    elif name.endswith(".parquet"):
        df.to_parquet(p, index=False)
    else:
        p.write_text("\n".join(json.dumps(r) for r in df.to_dict(orient="records")) + "\n")
    return p


def _err(tmp_path: Path, df: pd.DataFrame, **kw) -> str:
    p = _write(tmp_path, df)
    with pytest.raises(InputError) as ei:
        load_case_table(p, kw.pop("columns", ColumnMap()), kw.pop("meta", ["sex"]), **kw)
    msg = str(ei.value)
    assert "\n" not in msg
    assert str(p) in msg
    return msg


@pytest.mark.parametrize("name", ["cases.csv", "cases.parquet", "cases.jsonl"])
def test_reads_formats(tmp_path: Path, good: pd.DataFrame, name: str) -> None:
    ct = load_case_table(_write(tmp_path, good, name), ColumnMap(), ["sex", "age"])
    assert ct.ids == [f"c{i}" for i in range(6)]
    assert ct.df["label"].tolist() == [0, 1, 0, 1, 0, 1]
    assert ct.df["pred"].tolist() == [int(0.1 + 0.15 * i >= 0.5) for i in range(6)]
    assert Path(ct.df["image"][0]).is_absolute() and Path(ct.df["image"][0]).is_file()
    assert list(ct.meta.columns) == ["sex", "age"]
    assert ct.n_skipped == 0 and ct.has_image and ct.has_report


def test_csv_ids_stay_text(tmp_path: Path, good: pd.DataFrame) -> None:
    good["id"] = [f"00{i}" for i in range(6)]
    ct = load_case_table(_write(tmp_path, good), ColumnMap(), [])
    assert ct.ids == [f"00{i}" for i in range(6)]


def test_unknown_column_lists_available(tmp_path: Path, good: pd.DataFrame) -> None:
    msg = _err(tmp_path, good, meta=["sexx"])
    assert "'sexx'" in msg and "available columns" in msg and "age" in msg
    msg = _err(tmp_path, good, columns=ColumnMap(prob="score"))
    assert "'score'" in msg


def test_duplicate_id(tmp_path: Path, good: pd.DataFrame) -> None:
    good.loc[4, "id"] = "c1"
    msg = _err(tmp_path, good)
    assert "duplicate id 'c1'" in msg and "rows 2 and 5" in msg


def test_label_not_binary(tmp_path: Path, good: pd.DataFrame) -> None:
    good["label"] = good["label"].astype(object)
    good.loc[3, "label"] = 2
    msg = _err(tmp_path, good)
    assert "column 'label'" in msg and "row 4" in msg and "c3" in msg and "not binary" in msg


@pytest.mark.parametrize("bad", [np.nan, 1.5, -0.1])
def test_bad_probability(tmp_path: Path, good: pd.DataFrame, bad: float) -> None:
    good.loc[2, "prob"] = bad
    msg = _err(tmp_path, good)
    assert "column 'prob'" in msg and "row 3" in msg


def test_hard_prediction_instead_of_prob(tmp_path: Path, good: pd.DataFrame) -> None:
    good = good.drop(columns="prob").assign(yhat=[0, 0, 1, 1, 0, 1])
    ct = load_case_table(_write(tmp_path, good), ColumnMap(pred="yhat"), [])
    assert ct.df["pred"].tolist() == [0, 0, 1, 1, 0, 1]
    assert ct.df["prob"].tolist() == [0.0, 0.0, 1.0, 1.0, 0.0, 1.0]
    good.loc[1, "yhat"] = 3
    msg = _err(tmp_path, good, columns=ColumnMap(pred="yhat"))
    assert "column 'yhat'" in msg and "row 2" in msg


def test_empty_report(tmp_path: Path, good: pd.DataFrame) -> None:
    good.loc[5, "report"] = "   "
    msg = _err(tmp_path, good)
    assert "column 'report'" in msg and "row 6" in msg and "empty report" in msg
    # not required -> accepted
    ct = load_case_table(_write(tmp_path, good), ColumnMap(), [], require=("image",))
    assert ct.df["report"][5] == "" and not ct.has_report


def test_report_path_unreadable(tmp_path: Path, good: pd.DataFrame) -> None:
    (tmp_path / "rep").mkdir()
    paths = []
    for i, text in enumerate(good["report"]):
        (tmp_path / "rep" / f"{i}.txt").write_text(text)
        paths.append(f"rep/{i}.txt")
    good = good.drop(columns="report").assign(report_file=paths)
    ct = load_case_table(_write(tmp_path, good), ColumnMap(report_path="report_file"), [])
    assert ct.df["report"][2] == "report number 2. no pleural effusion."
    good.loc[2, "report_file"] = "rep/nope.txt"
    msg = _err(tmp_path, good, columns=ColumnMap(report_path="report_file"))
    assert "column 'report_file'" in msg and "row 3" in msg and "nope.txt" in msg


def test_missing_image(tmp_path: Path, good: pd.DataFrame) -> None:
    good.loc[1, "image"] = "img/missing.png"
    msg = _err(tmp_path, good)
    assert "column 'image'" in msg and "row 2" in msg and "missing.png" in msg


def test_skip_bad_counts_reasons(tmp_path: Path, good: pd.DataFrame) -> None:
    good["label"] = good["label"].astype(object)
    good.loc[0, "label"] = "maybe"
    good.loc[1, "image"] = "img/missing.png"
    good.loc[2, "prob"] = np.nan
    good.loc[4, "id"] = "c3"
    ct = load_case_table(_write(tmp_path, good), ColumnMap(), ["sex"], skip_bad=True)
    assert ct.ids == ["c3", "c5"]
    assert ct.n_skipped == 4
    assert ct.skipped_reasons == {
        "bad probability": 1,
        "duplicate id": 1,
        "label not binary": 1,
        "missing image": 1,
    }
    assert ct.meta["sex"].tolist() == ["F", "F"]


def test_too_few_cases(tmp_path: Path, good: pd.DataFrame) -> None:
    msg = _err(tmp_path, good, min_cases=20)
    assert "6 valid cases" in msg and "20" in msg


def test_unknown_format_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "t.xlsx").write_text("x")
    with pytest.raises(InputError, match=r"t\.xlsx: unknown table format"):
        load_case_table(tmp_path / "t.xlsx")
    with pytest.raises(InputError, match="not found"):
        load_case_table(tmp_path / "none.csv")


def test_load_embeddings_npy_and_parquet(tmp_path: Path) -> None:
    ids = ["a", "b", "c"]
    mat = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(tmp_path / "e.npy", mat[::-1])
    (tmp_path / "e.ids.txt").write_text("c\nb\na\n")
    np.testing.assert_array_equal(load_embeddings(tmp_path / "e.npy", ids), mat)
    pdf = pd.DataFrame(mat, columns=[f"v{j}" for j in range(4)]).assign(id=ids)
    pdf.to_parquet(tmp_path / "e.parquet")
    np.testing.assert_array_equal(load_embeddings(tmp_path / "e.parquet", ["b", "a", "c"]), mat[[1, 0, 2]])
    with pytest.raises(InputError, match=r"no embedding for 1 cases.*'d'"):
        load_embeddings(tmp_path / "e.parquet", ["a", "b", "c", "d"])
    with pytest.raises(InputError, match=r"do not match the case table.*'c'"):
        load_embeddings(tmp_path / "e.parquet", ["a", "b"])
    assert load_embeddings(tmp_path / "e.parquet", ["a", "b"], ignore_ids=["c"]).shape == (2, 4)
    (tmp_path / "e.ids.txt").write_text("c\nb\n")
    with pytest.raises(InputError, match="3 rows but 2 ids"):
        load_embeddings(tmp_path / "e.npy", ids)


def _set(df: pd.DataFrame, col: str, row: int, value: object) -> pd.DataFrame:
    df = df.copy()
    df[col] = df[col].astype(object)
    df.loc[row, col] = value
    return df


@pytest.mark.parametrize(
    ("defect", "extra", "needle"),
    [
        (lambda d: d, ["--meta", "nope"], "unknown column 'nope'"),
        (lambda d: _set(d, "id", 3, "c0"), [], "duplicate id 'c0'"),
        (lambda d: _set(d, "label", 2, 7), [], "row 3"),
        (lambda d: _set(d, "prob", 1, np.nan), [], "row 2"),
        (lambda d: _set(d, "report", 4, ""), [], "row 5"),
        (lambda d: _set(d, "image", 0, "img/none.png"), [], "none.png"),
        (lambda d: d.assign(report_file="missing.txt"), ["--report-path-col", "report_file"], "missing.txt"),
        (lambda d: d, [], "at least 20"),
    ],
)
def test_cli_bad_table_exits_2_without_output(
    tmp_path: Path, good: pd.DataFrame, capsys: pytest.CaptureFixture[str], defect, extra, needle
) -> None:
    from medaudit.cli import main

    table = _write(tmp_path, defect(good))
    out = tmp_path / "out"
    rc = main(["audit", "--table", str(table), "--out", str(out), "--cache-dir", str(tmp_path / "c"), *extra])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and str(table) in err[0] and needle in err[0], err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cases.csv", "img"]


def test_undecodable_image_fails_with_path(tmp_path: Path, good: pd.DataFrame, capsys) -> None:
    from medaudit.cli import main

    (tmp_path / "img" / "c2.png").write_bytes(b"not a png at all")
    table = _write(tmp_path, good)
    out = tmp_path / "out"
    args = [
        "audit",
        "--table",
        str(table),
        "--out",
        str(out),
        "--cache-dir",
        str(tmp_path / "c"),
        "--n-slices",
        "2",
    ]
    args += ["--n-components", "2", "--encoder-opt", "image.weights=null", "--encoder-opt", "image.size=32"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "c2.png" in err[0], err
    assert not out.exists()


# -- malformed files: one line naming the file and the line / column at fault ------------------------


def test_csv_line_with_extra_fields_is_named(tmp_path: Path, good: pd.DataFrame) -> None:
    p = tmp_path / "cases.csv"
    good.to_csv(p, index=False)
    lines = p.read_text().splitlines()
    lines[4] += ",extra,more"  # line 5 of the file: data row 4
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"cases\.csv: line 5 has 9 fields, the header has 7$"):
        load_case_table(p, meta=["sex", "age"])


def test_csv_short_line_and_trailing_comma_are_named(tmp_path: Path, good: pd.DataFrame) -> None:
    p = tmp_path / "cases.tsv"
    good.to_csv(p, index=False, sep="\t")
    lines = p.read_text().splitlines()
    lines[3] = "\t".join(lines[3].split("\t")[:3])
    p.write_text("\n".join(lines) + "\n\n")  # a trailing blank line is fine
    with pytest.raises(InputError, match=r"cases\.tsv: line 4 has 3 fields, the header has 7"):
        load_case_table(p)
    q = tmp_path / "trail.csv"
    q.write_text("id,label,prob,report\nc0,0,0.2,a,\nc1,1,0.8,b\n")
    with pytest.raises(InputError, match=r"trail\.csv: line 2 has 5 fields, the header has 4"):
        load_case_table(q, require=("report",))


def test_quoted_fields_with_commas_and_newlines_are_not_ragged(tmp_path: Path, good: pd.DataFrame) -> None:
    p = tmp_path / "cases.csv"
    good.assign(report=[f'line one, "quoted"\nline two {i}' for i in range(6)]).to_csv(p, index=False)
    assert len(load_case_table(p)) == 6


def test_duplicate_header_column_is_refused(tmp_path: Path, good: pd.DataFrame) -> None:
    p = tmp_path / "cases.csv"
    good.assign(label2=good["label"]).to_csv(p, index=False)
    p.write_text(p.read_text().replace("label2", "label", 1))
    with pytest.raises(InputError, match=r"cases\.csv: column 'label' appears 2 times in the header"):
        load_case_table(p)
    frame = good.copy()
    frame.columns = ["id", "label", "label", "image", "report", "sex", "age"]
    with pytest.raises(InputError, match=r"column 'label' appears more than once"):
        load_case_table(frame)


def test_malformed_jsonl_names_its_line(tmp_path: Path, good: pd.DataFrame) -> None:
    p = tmp_path / "cases.jsonl"
    good.to_json(p, orient="records", lines=True)
    lines = p.read_text().splitlines()
    lines[2] = lines[2][:40]  # cut short
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"cases\.jsonl: line 3 is not valid JSON") as exc:
        load_case_table(p)
    assert "position" not in str(exc.value)
    lines[2] = "[1, 2]"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"cases\.jsonl: line 3 is not a JSON object"):
        load_case_table(p)


def test_table_that_is_a_folder_or_not_utf8(tmp_path: Path, good: pd.DataFrame) -> None:
    (tmp_path / "d.csv").mkdir()
    with pytest.raises(InputError, match=r"d\.csv: is a folder, not a table file"):
        load_case_table(tmp_path / "d.csv")
    p = tmp_path / "latin.csv"
    good.to_csv(p, index=False)
    p.write_bytes(p.read_bytes().replace(b"report number 3", b"r\xe9port number 3"))
    with pytest.raises(InputError, match=r"latin\.csv: line 5 is not UTF-8"):
        load_case_table(p)


def test_embeddings_ids_file_not_utf8(tmp_path: Path) -> None:
    np.save(tmp_path / "e.npy", np.zeros((2, 3), np.float32))
    (tmp_path / "e.ids.txt").write_bytes(b"a\n\xe9\xe9\n")
    with pytest.raises(InputError, match=r"e\.ids\.txt: line 2 is not UTF-8"):
        load_embeddings(tmp_path / "e.npy", ["a", "b"])


def test_embeddings_file_that_is_not_a_numeric_npy(tmp_path: Path) -> None:
    (tmp_path / "t.npy").write_text("0.1 0.2\n0.3 0.4\n")
    (tmp_path / "t.ids.txt").write_text("a\nb\n")
    with pytest.raises(InputError, match=r"t\.npy: not a \.npy array file") as exc:
        load_embeddings(tmp_path / "t.npy", ["a", "b"])
    assert "pickle" not in str(exc.value)
    np.save(tmp_path / "o.npy", np.array([{"x": 1}, {"x": 2}], dtype=object), allow_pickle=True)
    (tmp_path / "o.ids.txt").write_text("a\nb\n")
    with pytest.raises(InputError, match=r"o\.npy: holds Python objects") as exc:
        load_embeddings(tmp_path / "o.npy", ["a", "b"])
    assert "allow_pickle" not in str(exc.value)
    np.save(tmp_path / "s.npy", np.array([["x", "y"], ["z", "w"]]))
    (tmp_path / "s.ids.txt").write_text("a\nb\n")
    with pytest.raises(InputError, match=r"s\.npy: embeddings must be numbers"):
        load_embeddings(tmp_path / "s.npy", ["a", "b"])


def test_mostly_numeric_metadata_column_is_warned_with_its_first_bad_row(
    tmp_path: Path, good: pd.DataFrame
) -> None:
    """``age`` holding one word among numbers is read as categorical: one warning names table, column, row."""
    import warnings

    from medaudit.audit.table import load_case_table

    df = good.assign(age=[50, 61, "old", 70, 44, 38])
    table = _write(tmp_path, df)
    with pytest.warns(
        UserWarning, match=r"cases\.csv: column 'age' is numeric except 1 value\(s\), first row 3 \('old'\)"
    ):
        load_case_table(table, meta=["age"], min_cases=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_case_table(
            _write(tmp_path, good.assign(age=[50, 61, 62, 70, 44, 38])), meta=["age"], min_cases=0
        )
        load_case_table(_write(tmp_path, good.assign(age=list("abcdef"))), meta=["age"], min_cases=0)
