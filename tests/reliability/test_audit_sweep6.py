"""A sixth adversarial sweep of ``medaudit audit``: inputs that hung, wrote something half-done or failed
without naming the file, column or row; each case failed before its fix."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from .conftest import make_table, reports_as_files
from .conftest import refused as _refused

RULES = ["--slicer", "rules", "--n-slices", "2", "--no-report"]


@pytest.fixture
def work(tmp_path: Path) -> Path:
    make_table(tmp_path / "data")
    return tmp_path


@contextlib.contextmanager
def feeding(fifo: Path, text: str, seconds: float = 20.0) -> Iterator[None]:
    """Make ``fifo`` a named pipe and feed ``text`` to whoever opens it for reading within ``seconds``
    (without a feeder a reader blocks forever: the test would hang instead of failing)."""
    os.mkfifo(fifo)
    stop = threading.Event()

    def feed() -> None:
        end = time.monotonic() + seconds
        while not stop.is_set() and time.monotonic() < end:
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                    return
                time.sleep(0.02)
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            return

    th = threading.Thread(target=feed, daemon=True)
    th.start()
    try:
        yield
    finally:
        stop.set()
        th.join()


# -- 1. a report file or a lexicon that is a named pipe or a device -----------------------------------


def test_report_file_that_is_a_pipe_is_refused_not_read(cli, work, audit_cache):
    """A report path naming a FIFO (or a link to /dev/zero) was opened and read: the run blocked until
    something wrote to the pipe (forever, from a terminal), or read /dev/zero until memory ran out."""
    t, df = reports_as_files(work)
    df.to_csv(t, index=False)
    pipe = work / "data" / "reports" / "c002.txt"
    pipe.unlink()
    args = ["audit", "--table", t, "--out", work / "out", *RULES, "--cache-dir", audit_cache]
    args += ["--report-path-col", "rpath"]
    with feeding(pipe, "effusion tube."):
        line = _refused(cli, args, [work], "cases.csv", "column 'rpath'", "row 3", "c002.txt")
    assert "pipe" in line, line


def test_lexicon_that_is_a_pipe_is_refused_not_read(cli, work, audit_cache):
    """``--concepts FIFO`` blocked reading the pipe; ``--concepts FOLDER`` named the path twice."""
    lex = work / "lex.yaml"
    t = work / "data" / "cases.csv"
    args = ["audit", "--table", t, "--out", work / "out", *RULES, "--cache-dir", audit_cache]
    with feeding(lex, "concepts:\n  - {name: tube, synonyms: [tube]}\n"):
        line = _refused(cli, [*args, "--concepts", lex], [work], str(lex))
    assert "pipe" in line, line
    folder = work / "lexdir.yaml"
    folder.mkdir()
    line = _refused(cli, [*args, "--concepts", folder], [work], str(folder), "is a folder")
    assert line.count(str(folder)) == 1, line


# -- 2. --dataset: a --target the predictions table has no column for ---------------------------------


def test_dataset_target_without_a_predictions_column_is_refused_before_embedding(cli, tmp_path, monkeypatch):
    """It embedded every image of the dataset first (hours on MIMIC-CXR), then failed with a line that
    named neither the predictions table nor --target."""
    import medaudit.audit.multitarget as multitarget
    from test_dataset_audit import FAST, _mimic_n, _predictions

    def never(*a, **k):
        raise AssertionError("the embedding started")

    monkeypatch.setattr(multitarget, "shared_embeddings", never)
    root, reports = _mimic_n(tmp_path, n_studies=6)
    pred = _predictions(root, tmp_path / "pred.csv")  # Edema and cardiomegaly only
    args = ["audit", "--dataset", f"mimic-cxr:{root}", "--dataset-reports", reports, "--predictions", pred]
    args += ["--target", "pneumothorax", "--out", tmp_path / "out", *FAST, "--cache-dir", tmp_path / "cache"]
    line = _refused(cli, args, [tmp_path], "pred.csv", "'pneumothorax'", "--target")
    assert "edema" in line, line


# -- 3. a metadata value that is a list, an object or infinite ----------------------------------------


@pytest.mark.parametrize(
    ("suffix", "value", "names"),
    [
        (".jsonl", ["PA", "AP"], ["column 'view' row 4 (id 'c003')", "['PA', 'AP']", "is a list"]),
        (".jsonl", {"view": "PA"}, ["column 'view' row 4 (id 'c003')", "is an object"]),
        (".csv", float("inf"), ["column 'age' row 4 (id 'c003')", "inf is not finite"]),
    ],
    ids=["jsonl-list", "jsonl-object", "csv-inf"],
)
@pytest.mark.parametrize("slicer", ["mixture", "rules"])
def test_metadata_value_that_is_not_one_finite_value_is_a_bad_row(
    cli, audit_args, work, suffix, value, names, slicer
):
    """A JSON list or object in a --meta column was an internal error (TypeError: unhashable type 'list',
    or 'truth value of an array is ambiguous'); an infinite age one of scikit-learn's ('Input X contains
    infinity'), while the rule slicer ran on it. ``--skip-bad`` drops the row and counts it."""
    df = pd.read_csv(work / "data" / "cases.csv")
    col = "age" if isinstance(value, float) else "view"
    df[col] = df[col].astype(object)
    df.at[3, col] = value
    t = work / "data" / f"cases{suffix}"
    if suffix == ".csv":
        df.to_csv(t, index=False)
    else:
        df.to_json(t, orient="records", lines=True)
    args = audit_args(t, work / "out", "--slicer", slicer)
    _refused(cli, args, [work], t.name, *names)
    rc, err = cli(*args, "--skip-bad")
    assert rc == 0, err
    counts = json.loads((work / "out" / "slices.json").read_text())["counts"]
    assert counts["skipped_reasons"] == {"bad metadata value": 1} and counts["cases"] == 39


# -- 4. every report the same text --------------------------------------------------------------------


@pytest.mark.parametrize("text", ["Same text.", "The and of."])
def test_identical_reports_give_no_numpy_warning(cli, audit_args, work, tmp_path, text):
    """scikit-learn's TruncatedSVD divides the explained variance by a total of 0 when every report is
    the same: 'warning: invalid value encountered in divide' (and 'divide by zero') reached stderr of a
    successful run, a line saying nothing about the input."""
    import warnings

    t = work / "data" / "cases.csv"
    pd.read_csv(t).assign(report=text).to_csv(t, index=False)
    args = audit_args(t, work / "out", "--cache-dir", tmp_path / "fresh-cache", "--slicer", "mixture")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        rc, err = cli(*args)
    assert rc == 0, err


# -- 5. --slicer kmeans with fewer misclassified cases than slices -------------------------------------


@pytest.mark.parametrize("n_wrong", [0, 1])
def test_kmeans_with_too_few_errors_is_one_line_before_embedding(cli, audit_args, work, n_wrong, monkeypatch):
    """It embedded every case first, then printed two lines (the 'makes no error' warning, then
    'only 0 misclassified cases; need at least n_slices=2', naming neither the table nor the flag)."""
    import medaudit.audit.pipeline as pipeline

    def never(*a, **k):
        raise AssertionError("the embedding started")

    monkeypatch.setattr(pipeline, "_encode_table", never)
    t = work / "data" / "cases.csv"
    df = pd.read_csv(t)
    df["prob"] = df["label"] * 0.8 + 0.1  # every case right ...
    df.loc[: n_wrong - 1, "prob"] = 1 - df.loc[: n_wrong - 1, "prob"]  # ... but the first n_wrong
    df.to_csv(t, index=False)
    args = audit_args(t, work / "out", "--slicer", "kmeans")
    _refused(cli, args, [work], "cases.csv", f"only {n_wrong} misclassified", "--slicer kmeans", "--n-slices")


# -- 6. precomputed embeddings ------------------------------------------------------------------------


def test_npy_embeddings_without_a_column_are_refused(cli, audit_args, work):
    """An ``(n, 0)`` array was accepted: the report modality entered the audit with no feature at all
    (a Parquet file without vector columns was refused already)."""
    e = work / "emb.npy"
    np.save(e, np.zeros((40, 0), np.float32))
    (work / "emb.ids.txt").write_text("".join(f"c{i:03d}\n" for i in range(40)))
    args = audit_args(work / "data" / "cases.csv", work / "out", "--embeddings", f"report={e}")
    _refused(cli, args, [work], "emb.npy", "at least one column", "(40, 0)")


def test_ids_file_with_a_byte_order_mark_matches_the_table(cli, audit_args, work):
    """An ids file saved with a UTF-8 byte-order mark (Windows Notepad) failed: '1 embedding rows do not
    match the case table, e.g. id '\\ufeffc000'', an id that prints like one of the table's."""
    e = work / "emb.npy"
    np.save(e, np.random.default_rng(0).random((40, 4)).astype(np.float32))
    (work / "emb.ids.txt").write_text("\ufeff" + "".join(f"c{i:03d}\r\n" for i in range(40)))
    rc, err = cli(*audit_args(work / "data" / "cases.csv", work / "out", "--embeddings", f"report={e}"))
    assert rc == 0, err


# -- 7. JSON Lines tables without a case object -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("", ["has no column", "empty"]),
        ("\n  \n", ["has no column"]),
        ('"one case"\n', ["line 1 is not a JSON object"]),
        ("[1, 2]\n[3, 4]\n", ["line 1 is not a JSON object"]),
    ],
    ids=["empty", "blank-lines", "a-string", "arrays"],
)
def test_jsonl_table_without_objects_says_so(cli, audit_args, work, text, names):
    """pandas reads these as a table with no column or with columns 0, 1: the line was 'unknown column
    'id' (for id); available columns: ' (nothing, or 0), not what is wrong with the file."""
    t = work / "data" / "cases.jsonl"
    t.write_text(text)
    line = _refused(cli, audit_args(t, work / "out"), [work], "cases.jsonl", *names)
    assert "unknown column" not in line, line


# -- 8. --seed outside numpy's range ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "why"), [("-1", "greater than or equal to 0"), ("4294967296", "less than")]
)
def test_seed_outside_numpys_range_names_the_flag(cli, audit_args, work, value, why):
    """numpy seeds are unsigned 32-bit: a negative or larger seed was an internal error ('Seed must be
    between 0 and 2**32 - 1', 'Overflow when unpacking long long') after the table was read."""
    args = audit_args(work / "data" / "cases.csv", work / "out", "--seed", value)
    _refused(cli, args, [work], f"--seed {value}", why)


@pytest.mark.parametrize("target", ["edema", "all"])
def test_dataset_findings_without_any_prediction_fail_before_embedding(cli, tmp_path, monkeypatch, target):
    """A predictions column blank in every row failed after every image was embedded, with a line
    ('finding 'edema': every prediction is blank') that named neither the predictions file nor its
    column."""
    import medaudit.audit.multitarget as multitarget
    from test_dataset_audit import FAST, _mimic_n, _predictions

    def never(*a, **k):
        raise AssertionError("the embedding started")

    monkeypatch.setattr(multitarget, "shared_embeddings", never)
    root, reports = _mimic_n(tmp_path, n_studies=6)
    pred = _predictions(root, tmp_path / "pred.csv")
    df = pd.read_csv(pred)
    df["Edema"] = np.nan
    if target == "all":
        df["cardiomegaly"] = np.nan
    df.to_csv(pred, index=False)
    args = ["audit", "--dataset", f"mimic-cxr:{root}", "--dataset-reports", reports, "--predictions", pred]
    args += ["--target", target, "--out", tmp_path / "out", *FAST, "--cache-dir", tmp_path / "cache"]
    _refused(cli, args, [tmp_path], "pred.csv: column 'Edema': every prediction is blank")


# -- 9. reports that hold a single term in all --------------------------------------------------------


def test_reports_with_a_single_term_name_the_table_and_column(cli, audit_args, work, tmp_path):
    """Every report 'effusion' (one tf-idf feature): an internal error from scikit-learn ('Found array
    with 1 feature(s) ... while a minimum of 2 is required by TruncatedSVD')."""
    t = work / "data" / "cases.csv"
    pd.read_csv(t).assign(report="Effusion.").to_csv(t, index=False)
    args = audit_args(t, work / "out", "--cache-dir", tmp_path / "fresh-cache", "--slicer", "mixture")
    _refused(cli, args, [work], "cases.csv: column 'report'", "1 distinct term", "--modalities")


# -- 10. image and report paths no file can have --------------------------------------------------------


def _with_images(work: Path) -> pd.DataFrame:
    from PIL import Image

    df = pd.read_csv(work / "data" / "cases.csv")
    (work / "imgs").mkdir()
    for i in df.index:
        Image.fromarray(np.full((16, 16), i, np.uint8)).save(work / "imgs" / f"{i}.png")
    df["image"] = [str(work / "imgs" / f"{i}.png") for i in df.index]
    return df


@pytest.mark.parametrize(
    ("value", "why"),
    [("imgs/a\x00b.png", "contains a NUL character"), ("imgs/" + "a" * 300 + ".png", "name is too long")],
    ids=["nul", "name-too-long"],
)
def test_image_path_no_file_can_have_is_a_bad_row(cli, audit_args, work, value, why):
    """A NUL character was an internal error ('ValueError: embedded null byte', with --skip-bad too); a
    file name over 255 bytes a line naming the path alone ('File name too long'), not table and row."""
    df = _with_images(work)
    df.loc[3, "image"] = str(work / value)  # in a folder that exists
    t = work / "data" / "cases.csv"
    df.to_csv(t, index=False)
    args = audit_args(
        t, work / "out", "--modalities", "report,metadata,image", "--encoder-opt", "image.size=32"
    )
    _refused(cli, args, [work], "cases.csv: column 'image' row 4 (id 'c003')", why)
    rc, err = cli(*args, "--skip-bad")
    assert rc == 0, err
    assert json.loads((work / "out" / "slices.json").read_text())["counts"]["skipped_rows"] == 1


def test_report_path_with_a_nul_character_is_a_bad_row(cli, work, audit_cache):
    t, df = reports_as_files(work, "r")
    df.loc[2, "rpath"] = "r/a\x00b.txt"
    df.to_csv(t, index=False)
    args = ["audit", "--table", t, "--out", work / "out", *RULES, "--cache-dir", audit_cache]
    args += ["--report-path-col", "rpath"]
    _refused(cli, args, [work], "cases.csv: column 'rpath' row 3", "NUL character")
