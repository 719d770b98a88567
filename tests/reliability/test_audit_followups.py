"""Follow-ups of the bad-input sweep of ``medaudit audit``: each case is refused with exit 2, one line
naming the file, column, row or flag, and nothing written (or, for the report and the Ray cache, the
output is right)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medaudit.audit.config import AuditConfig, ColumnMap
from medaudit.audit.pipeline import run_audit
from medaudit.errors import InputError

from .conftest import make_table, snapshot
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


# -- 2. --meta naming a reserved column, or a column twice --------------------------------------------


@pytest.mark.parametrize(
    ("meta", "extra", "names"),
    [
        ("view,label", [], ["--meta 'label'", "label column"]),
        ("prob", [], ["--meta 'prob'", "prob"]),
        ("id", [], ["--meta 'id'", "id column"]),
        ("report", [], ["--meta 'report'", "report column"]),
        ("image", [], ["--meta 'image'", "image column"]),
        ("score", ["--prob-col", "score"], ["--meta 'score'", "--prob-col"]),
        ("view,view", [], ["--meta 'view'", "more than once"]),
    ],
)
def test_meta_naming_a_reserved_or_repeated_column_is_refused(cli, work, audit_cache, meta, extra, names):
    t = work / "data" / "cases.csv"
    if "score" in meta:
        df = _cases(work).rename(columns={"prob": "score"})
        t = work / "data" / "score.csv"
        df.to_csv(t, index=False)
    _refused(cli, _rules_args(t, work / "out", audit_cache, "--meta", meta, *extra), [work], *names)


def test_meta_repeated_over_two_flags_is_refused(cli, work, audit_cache):
    args = _rules_args(
        work / "data" / "cases.csv", work / "out", audit_cache, "--meta", "view", "--meta", "view"
    )
    _refused(cli, args, [work], "--meta 'view'", "more than once")


def test_api_refuses_reserved_and_repeated_meta_with_the_same_message(cli, work, audit_cache):
    t = work / "data" / "cases.csv"
    args = _rules_args(t, work / "out", audit_cache, "--meta", "label")
    cli_line = _refused(cli, args, [work], "--meta 'label'")
    before = snapshot(work)
    for meta in (["label"], ["view", "view"]):
        cfg = AuditConfig(meta=meta, slicer="rules", n_slices=2, write_report=False, cache_dir=audit_cache)
        with pytest.raises(InputError) as exc:
            run_audit(t, cfg, work / "out")
        if meta == ["label"]:
            assert f"error: {exc.value}" == cli_line
        else:
            assert "--meta 'view'" in str(exc.value) and "more than once" in str(exc.value)
    cfg = AuditConfig(meta=["score"], columns=ColumnMap(prob="score"), slicer="rules", cache_dir=audit_cache)
    with pytest.raises(InputError, match=r"--meta 'score'.*--prob-col"):
        run_audit(_cases(work).rename(columns={"prob": "score"}), cfg, work / "out")
    assert snapshot(work) == before


def test_meta_of_ordinary_columns_still_works(cli, work, audit_cache):
    rc, err = cli(*_rules_args(work / "data" / "cases.csv", work / "out", audit_cache, "--meta", "view,age"))
    assert rc == 0, err


def test_dataset_mode_refuses_reserved_or_repeated_meta_before_any_work(cli, tmp_path):
    """The dataset's default metadata columns never clash (tests/test_dataset_audit.py runs them)."""
    pred = tmp_path / "pred.csv"
    pred.write_text("dicom_id,edema\nd1,0.2\n")
    base = ["audit", "--dataset", f"mimic-cxr:{tmp_path / 'mimic'}", "--predictions", pred]
    base += ["--target", "edema", "--out", tmp_path / "out", "--cache-dir", tmp_path / "cache"]
    for meta, names in (("label", ["--meta 'label'"]), ("sex,sex", ["--meta 'sex'", "more than once"])):
        _refused(cli, [*base, "--meta", meta], [tmp_path], *names)


# -- 3. a boolean probability column -----------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_boolean_probability_is_refused_naming_file_column_and_row(cli, work, audit_cache, suffix):
    df = _cases(work)
    df["prob"] = df["prob"] > 0.5
    t = work / "data" / f"bool{suffix}"
    if suffix == ".csv":
        df.to_csv(t, index=False)
    elif suffix == ".jsonl":
        df.to_json(t, orient="records", lines=True)
    else:
        df.to_parquet(t)
    line = _refused(cli, _rules_args(t, work / "out", audit_cache), [work], str(t), "column 'prob' row 1")
    assert "boolean" in line


# -- 4. messages: a binary file named .csv, a table with another delimiter ----------------------------


@pytest.mark.parametrize(
    ("write", "names"),
    [
        (lambda df, p: df.to_parquet(p), ["Parquet", ".parquet"]),
        (lambda df, p: p.write_bytes(b"PK\x03\x04" + b"\0" * 60), ["zip", "xlsx"]),
        (lambda df, p: p.write_bytes(__import__("gzip").compress(df.to_csv(index=False).encode())), ["gzip"]),
    ],
)
def test_binary_file_named_csv_says_what_it_looks_like(cli, work, audit_cache, write, names):
    t = work / "data" / "binary.csv"
    write(_cases(work), t)
    line = _refused(cli, _rules_args(t, work / "out", audit_cache), [work], str(t), *names)
    assert "UTF-8" not in line


@pytest.mark.parametrize(("sep", "shown"), [(";", "';'"), ("\t", "tab")])
def test_table_with_another_delimiter_gets_a_hint(cli, work, audit_cache, sep, shown):
    t = work / "data" / "other.csv"
    _cases(work).to_csv(t, sep=sep, index=False)
    line = _refused(cli, _rules_args(t, work / "out", audit_cache), [work], str(t), "unknown column 'id'")
    assert "separated" in line and shown in line


def test_single_column_header_without_delimiter_gets_no_hint(cli, work, audit_cache):
    t = work / "data" / "one.csv"
    t.write_text("name\na\nb\n")
    line = _refused(cli, _rules_args(t, work / "out", audit_cache), [work], "unknown column 'id'")
    assert "separated" not in line


# -- 5. highlights after a control character -------------------------------------------------------------


def test_highlight_after_a_control_character_covers_exactly_its_sentence():
    from medaudit.audit.table import CaseTable
    from medaudit.report.html import neutralise_controls
    from medaudit.report.slice_browser import browser_data

    sentence = "Large effusion on the left."
    reports = [f"Bell\x07 here \u202e and \x85 more. {sentence} Clear.", f"Nothing. {sentence}"]
    df = pd.DataFrame(
        {"id": ["a", "b"], "label": [1, 0], "prob": [0.2, 0.7], "pred": [0, 1], "image": [None, None]}
    )
    df["report"] = reports
    table = CaseTable(df=df, meta=pd.DataFrame(index=df.index))
    slices = [
        {
            "rank": 1,
            "member_ids": ["a", "b"],
            "exemplar_ids": [],
            "explanation": {"ngrams": [{"ngram": "effusion", "direction": "over"}]},
        }
    ]
    data = browser_data({"slices": slices}, table, np.array([[0.9], [0.8]]))
    texts = {p: t for p, t, _ in data["reports"]}
    marks = dict((p, sp) for p, sp in data["slices"][0]["marks"])
    for p, text in texts.items():
        assert neutralise_controls(text) == text  # rendering the page changes nothing more
        assert [text[a:b] for a, b in marks[p]] == [sentence]
    assert "[U+0007]" in texts[0] and "[U+202E]" in texts[0] and "[U+0085]" in texts[0]


# -- 6. encode_with_ray writes the width into a new cache folder's meta.json -------------------------------


def test_encode_with_ray_writes_the_width_into_a_new_meta_json(tmp_path, monkeypatch):
    from medaudit.audit.encoders import distributed, get_encoder

    enc = get_encoder("report", "tfidf-svd", dim=4)
    texts = [f"report {w} number {i}" for i, w in enumerate(["effusion", "edema", "tube", "clear"] * 3)]
    seen: dict[str, object] = {}

    def fake_actors(encoder, ids, items, todo, folder, *rest):
        seen.update(json.loads((folder / "meta.json").read_text()))
        return {}  # nothing written: encode_cached computes every item

    monkeypatch.setattr(distributed, "_run_actors", fake_actors)
    out = distributed.encode_with_ray(enc, [f"c{i}" for i in range(len(texts))], texts, tmp_path, "local")
    assert seen["dim"] == out.shape[1] == enc.dim
