"""A tenth adversarial sweep of ``medaudit audit``: pandas' nullable dtypes, flags that one mode dropped
without a word, answers leaking into ``--dataset`` metadata, ``~`` in config paths, and tables pandas
reads that the checks refused or let through; each case failed before its fix."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from medaudit.audit.config import AuditConfig, ColumnMap
from medaudit.audit.datasets import parse_dataset
from medaudit.audit.pipeline import run_audit
from medaudit.audit.table import load_case_table, read_table
from medaudit.errors import InputError

from .conftest import make_table, one_line
from .conftest import refused as _refused


@pytest.fixture
def work(tmp_path: Path) -> Path:
    make_table(tmp_path / "data")
    return tmp_path


def _cases(work: Path) -> pd.DataFrame:
    return pd.read_csv(work / "data" / "cases.csv")


# -- 1. metadata of pandas' nullable dtypes (pd.NA) -------------------------------------------------


def _nullable(work: Path) -> pd.DataFrame:
    """The table after ``convert_dtypes()`` (``string``, ``Int64``, ``boolean``) with missing values."""
    df = _cases(work).convert_dtypes()
    df["portable"] = (df["view"] == "AP").astype("boolean")
    df.loc[1, "view"] = pd.NA
    df.loc[2, "age"] = pd.NA
    df.loc[3, "portable"] = pd.NA
    return df


@pytest.mark.parametrize("slicer", ["rules", "both"])
def test_metadata_of_a_nullable_dtype_with_a_missing_value_is_audited(cli, audit_args, work, slicer):
    """A Parquet file written after ``convert_dtypes()`` with a blank ``view``: internal error (exit 1),
    ``TypeError: boolean value of NA is ambiguous``, in the rule search."""
    t = work / "data" / "cases.parquet"
    _nullable(work).to_parquet(t)
    args = audit_args(t, work / "out", "--slicer", slicer)
    args[args.index("view,age")] = "view,age,portable"
    rc, err = cli(*args)
    assert rc == 0, err
    assert (work / "out" / "slices.json").is_file()


def test_nullable_metadata_reaches_the_encoders_as_numpy_values(work):
    table = load_case_table(_nullable(work), ColumnMap(), meta=["view", "age", "portable"], require=())
    assert table.meta["view"].iloc[1] is None and table.meta["portable"].iloc[3] is None
    assert table.meta["age"].dtype == "float64" and pd.isna(table.meta["age"].iloc[2])
    assert table.meta["view"].iloc[0] in ("AP", "PA")


def test_python_api_takes_a_dataframe_after_convert_dtypes(work, tmp_path):
    cfg = AuditConfig(
        meta=["view", "age"],
        modalities=("report", "metadata"),
        n_components=4,
        n_slices=2,
        pca=None,
        write_report=False,
        cache_dir=tmp_path / "cache",
    )
    result = run_audit(_nullable(work), cfg, tmp_path / "out")
    assert result.counts["cases"] == 40


# -- 2. flags that the other mode ignored -----------------------------------------------------------


@pytest.mark.parametrize(
    "flags",
    [
        ["--predictions", "p.csv"],
        ["--target", "edema"],
        ["--uncertain", "ones"],
        ["--pred-id", "dicom_id"],
        ["--dataset-reports", "reports"],
    ],
)
def test_dataset_flags_with_a_table_are_refused(cli, audit_args, work, flags):
    """They were ignored: ``--table t.csv --predictions p.csv`` audited the table's own ``prob``."""
    _refused(
        cli, audit_args(work / "data" / "cases.csv", work / "out", *flags), [work], flags[0], "--dataset"
    )


@pytest.mark.parametrize(
    "flag", ["--label-col", "--prob-col", "--pred-col", "--id-col", "--image-col", "--report-path-col"]
)
def test_table_column_flags_with_a_dataset_are_refused(cli, tmp_path, flag):
    """They were ignored: ``--dataset ... --pred-col hard`` audited the probabilities, not ``hard``."""
    pred = tmp_path / "pred.csv"
    pred.write_text("dicom_id,edema\nd1,0.2\n")
    args = ["audit", "--dataset", f"mimic-cxr:{tmp_path / 'mimic'}", "--predictions", pred, "--target"]
    args += ["edema", "--out", tmp_path / "out", "--cache-dir", tmp_path / "cache", flag, "x"]
    _refused(cli, args, [tmp_path], flag, "--dataset")


# -- 3. the answer as --dataset metadata ------------------------------------------------------------


@pytest.fixture(scope="module")
def mimic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    from test_dataset_audit import _mimic_n, _predictions

    tmp = tmp_path_factory.mktemp("mimic")
    root, reports = _mimic_n(tmp, n_studies=8)
    return root, reports, _predictions(root, tmp / "pred.csv")


@pytest.mark.parametrize(
    ("target", "meta", "names"),
    [
        ("edema", "prob__edema", ["--meta 'prob__edema'", "predictions"]),
        ("edema", "prob__cardiomegaly", ["--meta 'prob__cardiomegaly'", "predictions"]),
        ("edema", "edema,view_position", ["--meta 'edema'", "label of finding 'edema'"]),
        ("all", "cardiomegaly", ["--meta 'cardiomegaly'", "label of finding 'cardiomegaly'"]),
    ],
)
def test_a_prediction_or_the_audited_label_as_dataset_metadata_is_refused(
    cli, mimic, tmp_path, target, meta, names
):
    """``--meta prob__edema`` gave the slice ``prob__edema >= 0.637 ∧ label = 0``: the prediction (or,
    with ``--meta edema``, the label) leaked into the slices."""
    root, reports, pred = mimic
    args = ["audit", "--dataset", f"mimic-cxr:{root}", "--dataset-reports", reports, "--predictions", pred]
    args += ["--target", target, "--meta", meta, "--modalities", "report,metadata", "--slicer", "rules"]
    args += ["--out", tmp_path / "out", "--cache-dir", tmp_path / "cache", "--no-report"]
    _refused(cli, args, [tmp_path, root.parent], *names)


def test_another_findings_label_is_still_metadata(cli, mimic, tmp_path):
    root, reports, pred = mimic
    args = ["audit", "--dataset", f"mimic-cxr:{root}", "--dataset-reports", reports, "--predictions", pred]
    args += ["--target", "edema", "--meta", "cardiomegaly", "--modalities", "report,metadata", "--slicer"]
    args += ["rules", "--out", tmp_path / "out", "--cache-dir", tmp_path / "cache", "--no-report"]
    rc, err = cli(*args)
    assert rc == 0, err
    summary = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert "edema" in json.dumps(summary)


# -- 4. a .json table that names a key twice ----------------------------------------------------------


def test_json_table_naming_a_key_twice_is_refused(cli, audit_args, work):
    """``[{"label": 1, "label": 0, ...}]``: pandas kept the last label silently (JSON Lines was refused)."""
    records = _cases(work).to_dict(orient="records")
    text = json.dumps(records).replace('"label": 1,', '"label": 1, "label": 0,', 1)
    t = work / "data" / "cases.json"
    t.write_text(text)
    _refused(cli, audit_args(t, work / "out"), [work], str(t), "'label' twice")


def test_json_table_without_repeats_is_read(work):
    t = work / "data" / "cases.json"
    t.write_text(json.dumps(_cases(work).to_dict(orient="records")))
    assert len(read_table(t)) == 40


# -- 5. '~' in config paths ---------------------------------------------------------------------------


def test_tilde_in_a_config_file_is_the_home_folder(cli, audit_args, work, monkeypatch):
    """``cache_dir: ~/cache`` made a folder named ``~`` in the current one (only a shell expands ``~``)."""
    home = work / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    cfg = work / "a.yaml"
    cfg.write_text("cache_dir: ~/cache\n")
    args = audit_args(work / "data" / "cases.csv", work / "out", "--config", cfg)
    del args[args.index("--cache-dir") : args.index("--cache-dir") + 2]
    rc, err = cli(*args)
    assert rc == 0, err
    assert not (work / "~").exists()
    assert (home / "cache").is_dir()


def test_tilde_in_config_paths_and_in_medaudit_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = AuditConfig(concepts="~/lex.yaml", embeddings={"image": "~/e.npy"})
    assert cfg.concepts == tmp_path / "lex.yaml" and cfg.embeddings["image"] == tmp_path / "e.npy"
    monkeypatch.setenv("MEDAUDIT_CACHE", "~/c")
    assert AuditConfig().resolved_cache_dir() == tmp_path / "c"


def test_tilde_after_the_dataset_kind_is_the_home_folder(monkeypatch, tmp_path):
    """``--dataset nih:~/nih``: the shell expands no ``~`` after ``nih:`` ("~/nih: folder not found")."""
    monkeypatch.setenv("HOME", str(tmp_path))
    assert parse_dataset("nih:~/nih").root == tmp_path / "nih"


# -- 6. CSV lines before the header -----------------------------------------------------------------


def test_blank_lines_before_the_header_are_skipped_as_pandas_does(work):
    """They were refused: ``line 3 has 6 fields, the header has 0``."""
    t = work / "data" / "cases.csv"
    t.write_text("\n\n" + t.read_text())
    table = load_case_table(t, ColumnMap(), meta=["view"], require=("report",))
    assert len(table) == 40


def test_excels_sep_line_is_named(cli, audit_args, work):
    t = work / "data" / "cases.csv"
    t.write_text("sep=,\n" + t.read_text())
    _refused(cli, audit_args(t, work / "out"), [work], str(t), "'sep=,'", "Excel")


def test_load_case_table_still_refuses_a_real_short_header(work):
    t = work / "data" / "cases.csv"
    t.write_text("id,label\n" + t.read_text().split("\n", 1)[1])
    with pytest.raises(InputError, match="line 2 has 6 fields, the header has 2"):
        load_case_table(t, ColumnMap(), require=())


# -- 7. --dataset with the cache or the lexicon inside --out -------------------------------------------


@pytest.mark.parametrize("inside", ["cache", "lexicon"])
def test_dataset_out_holding_the_cache_or_lexicon_is_refused_and_left_absent(cli, mimic, tmp_path, inside):
    """``--out od --cache-dir od/cache`` failed (exit 2) only after making ``od/cache``: the output folder
    was left behind; the lexicon inside ``--out`` passed with ``--force`` (``--table`` refused both)."""
    root, reports, pred = mimic
    out = tmp_path / "out"
    args = ["audit", "--dataset", f"mimic-cxr:{root}", "--dataset-reports", reports, "--predictions", pred]
    args += ["--target", "edema", "--modalities", "report", "--slicer", "rules", "--no-report", "--out", out]
    if inside == "cache":
        args += ["--cache-dir", out / "cache"]
    else:
        out.mkdir()
        (out / "lex.yaml").write_text("concepts:\n  - {name: edema, synonyms: [edema]}\n")
        args += ["--cache-dir", tmp_path / "cache", "--concepts", out / "lex.yaml", "--force"]
    _refused(cli, args, [tmp_path], f"--out {out}", "contains the input")
    assert not out.exists() or sorted(p.name for p in out.iterdir()) == ["lex.yaml"]


def test_a_utf16_table_is_named_utf16(cli, tmp_path, audit_args):
    """Excel's 'Unicode Text' (UTF-16 with a byte-order mark) was 'line 1 is not UTF-8 text (invalid
    start byte)'."""
    src = make_table(tmp_path / "data")
    table = tmp_path / "data" / "u16.csv"
    table.write_bytes(src.read_text().encode("utf-16"))
    rc, err = cli(*audit_args(table, tmp_path / "out"))
    line = one_line(err)
    assert (
        rc == 2
        and line == f"error: {table}: is UTF-16 text, not UTF-8; save it as UTF-8 (Excel: 'CSV UTF-8')"
    )
    assert not (tmp_path / "out").exists()
