"""Adversarial inputs found by a sweep of the audit's dataset readers, predictions join, concept
lexicons and HTML report; each case failed (traceback, silent result, unsafe page) before its fix."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from medaudit.audit.concepts import load_lexicon
from medaudit.data.cxr import read_chexpert, read_mimic_cxr, read_nih
from medaudit.errors import InputError
from test_cxr_readers import _chexpert, _mimic, _nih

from .conftest import make_table, one_line, snapshot

# -- concept lexicons (--concepts FILE) --------------------------------------------------------------

_BOMB_LEVELS = "".join(
    f"&{chr(98 + k)} [" + ",".join([f"*{chr(97 + k)}"] * 9) + "], " for k in range(8)
)  # 9**9 "lol" once expanded: str() of it ran out of memory


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            "concepts:\n  - name: z\n    synonyms: [a]\n    description: [&a [lol,lol,lol,lol,lol,lol,lol,lol,lol], "
            + _BOMB_LEVELS
            + "]\n  - name: *i\n    synonyms: [b]\n",
            # refused as it is read (sweep 11: every YAML config bounds its expanded size)
            r"lex\.yaml: not a lexicon: more than 1,000,000 values \(an alias \*name counts",
        ),
        (
            "concepts:\n  - {name: [a, b], synonyms: [x]}\n",
            r"concepts\[0\]: key 'name' must be text, not a list$",
        ),
        ("name: {a: 1}\nconcepts:\n  - {name: a, synonyms: [x]}\n", r"key 'name' must be text, not a dict$"),
        ("concepts:\n  - {name: a, synonyms: [x], group: [g]}\n", r"concept 'a': key 'group' must be text"),
        ("? [a]\n: 1\nconcepts: []\n", r"lex\.yaml: line 1: a mapping key must be plain text, not a list$"),
        ("concepts: " + "[" * 3000 + "]" * 3000 + "\n", r"lex\.yaml: not a lexicon \(.*nested too deeply\)$"),
        (
            "concepts:\n  - {name: chest tube, synonyms: [x]}\n  - {name: 'chest  tube', synonyms: [y]}\n",
            r"duplicate concept name 'chest tube'$",
        ),
        (
            "concepts:\n  - {name: a, synonyms: [tube, '  ']}\n",
            r"concept 'a': key 'synonyms' item 2 \(' '\) has no",
        ),
        ("concepts:\n  - {name: a, synonyms: ['(', tube]}\n", r"key 'synonyms' item 1 \('\('\) has no word"),
        (
            "concepts:\n  - {name: a, synonyms: ['~']}\n",
            r"key 'synonyms' item 1 \('~'\) has no word to match$",
        ),
        (
            "concepts:\n  - {name: a, synonyms: [tube, no]}\n",
            r"key 'synonyms' item 2 is false, not text \(quote",
        ),
        (
            "concepts:\n  - {name: a, synonyms: [x], exclude: ['']}\n",
            r"key 'exclude' item 1 \(''\) has no word",
        ),
    ],
    ids=[
        "yaml-bomb",
        "name-list",
        "top-name-dict",
        "group-list",
        "list-key",
        "deep-nesting",
        "dup-name-inner-space",
        "blank-synonym",
        "punctuation-synonym",
        "tilde-synonym",
        "yaml-bool-synonym",
        "blank-exclude",
    ],
)
def test_bad_lexicon_is_one_line_naming_file_and_key(tmp_path: Path, text: str, match: str) -> None:
    p = tmp_path / "lex.yaml"
    p.write_text(text)
    with pytest.raises(InputError) as exc:
        load_lexicon(p)
    assert str(p) in str(exc.value) and re.search(match, str(exc.value)), exc.value


def test_regex_special_synonyms_are_plain_words(tmp_path: Path) -> None:
    from medaudit.audit.concepts import extract_concepts

    p = tmp_path / "lex.yaml"
    p.write_text("concepts:\n  - {name: a, synonyms: ['c++ (line*']}\n")
    lex = load_lexicon(p)
    codes = extract_concepts(["A c line here.", "Anything else."], lex)
    assert codes["a"].tolist() == [1, 0]


def test_bad_lexicon_on_the_command_line_exits_2_and_writes_nothing(cli, audit_args, tmp_path: Path) -> None:
    table = make_table(tmp_path / "data")
    lex = tmp_path / "lex.yaml"
    lex.write_text("concepts:\n  - {name: a, synonyms: [tube, '']}\n")
    before = snapshot(tmp_path)
    rc, err = cli(*audit_args(table, tmp_path / "out", "--slicer", "rules", "--concepts", lex))
    assert rc == 2 and "lex.yaml" in one_line(err) and "item 2" in err
    assert snapshot(tmp_path) == before


# -- dataset readers (--dataset KIND:ROOT) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("", "empty image path"),
        ("../../../../etc/passwd", "image path '../../../../etc/passwd' is outside"),
        ("/etc/passwd", "image path '/etc/passwd' is outside"),
    ],
)
def test_chexpert_path_blank_or_outside_the_dataset_is_refused(tmp_path: Path, value: str, why: str) -> None:
    """A blank Path was a TypeError; a path escaping the dataset was read as an image."""
    root = _chexpert(tmp_path)
    raw = pd.read_csv(root / "train.csv")
    raw.loc[1, "Path"] = value
    raw.to_csv(root / "train.csv", index=False)
    with pytest.raises(InputError) as exc:
        read_chexpert(root)
    assert f"{root / 'train.csv'}: column 'Path' row 2: {why}" in str(exc.value)


def _edit_mimic_csv(path: Path, edit) -> None:
    df = pd.read_csv(path, dtype={"dicom_id": str})
    edit(df)
    df.to_csv(path, index=False)


def _append_first_row(df: pd.DataFrame, **changes: object) -> None:
    df.loc[len(df)] = df.iloc[0]
    for k, v in changes.items():
        df.loc[len(df) - 1, k] = v


@pytest.mark.parametrize(
    ("table", "edit", "match"),
    [
        (
            "metadata",
            lambda d: d.__setitem__("subject_id", d["subject_id"] + 0.5),
            "column 'subject_id' row 1: not",
        ),
        (
            "chexpert",
            lambda d: d.__setitem__("study_id", d["study_id"] + 0.25),
            "column 'study_id' row 1: not",
        ),
        (
            "metadata",
            lambda d: d.__setitem__("dicom_id", ["d1", "../../x/d2", "d3"]),
            "'dicom_id' row 2: '../../x",
        ),
        (
            "metadata",
            lambda d: d.__setitem__("dicom_id", ["d1", None, "d3"]),
            "'dicom_id' row 2: empty image id",
        ),
        (
            "chexpert",
            lambda d: _append_first_row(d, Edema=1.0),
            "'study_id' rows 1 and 3: study 50414267 has two",
        ),
    ],
    ids=[
        "fractional-subject",
        "fractional-study",
        "path-in-dicom-id",
        "blank-dicom-id",
        "conflicting-labels",
    ],
)
def test_mimic_ids_that_would_be_silently_wrong_are_refused(tmp_path: Path, table, edit, match) -> None:
    """A fractional id was truncated to another patient's, a conflicting label row silently dropped, a
    dicom_id with '../' built a path outside files/, a blank one looked for 'nan.jpg'."""
    root, reports = _mimic(tmp_path, gz=False)
    csv = root / f"mimic-cxr-2.0.0-{table}.csv"
    _edit_mimic_csv(csv, edit)
    with pytest.raises(InputError) as exc:
        read_mimic_cxr(root, reports_root=reports)
    assert str(exc.value).startswith(f"{csv}: ") and match in str(exc.value), exc.value


def test_mimic_label_row_repeated_identically_is_kept_once(tmp_path: Path) -> None:
    root, reports = _mimic(tmp_path, gz=False)
    _edit_mimic_csv(root / "mimic-cxr-2.0.0-chexpert.csv", _append_first_row)
    assert len(read_mimic_cxr(root, reports_root=reports)) == 3


def test_nih_split_list_not_utf8_names_the_file(tmp_path: Path) -> None:
    """It was a UnicodeDecodeError traceback."""
    root = _nih(tmp_path)
    (root / "test_list.txt").write_bytes(b"\xff\xfe00000002_000.png\n")
    with pytest.raises(InputError, match=re.escape(f"{root / 'test_list.txt'}: not a readable list")):
        read_nih(root)


# -- HTML pages ---------------------------------------------------------------------------------------

EVIL = '<script>alert(1)</script>"onerror=x javascript:alert(1) {{ 7*7 }} \u202egnp.exe\x07'


def _csp(html: str) -> str:
    m = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html)
    assert m, "no CSP meta tag"
    return m.group(1)


def test_dataset_index_page_has_a_hash_csp_and_escapes_prediction_ids() -> None:
    """index.html of `audit --dataset` allowed style-src 'unsafe-inline'."""
    from medaudit.report.html import render

    join = {"predictions_file": EVIL, "id_column": EVIL, "key_kind": "dicom_id", "n_joined": 1}
    join |= {"n_predictions": 2, "n_dataset": 1, "unjoined_predictions": 1, "unjoined_examples": [EVIL]}
    join |= {"images_without_prediction": 0, "without_prediction_examples": []}
    summary = {"dataset": "mimic-cxr", "join": join, "findings": {}, "skipped": {"edema": EVIL}}
    summary |= {"uncertain_policy": "zeros", "blank_labels": "negative", "modalities": ["report"]}
    summary |= {"embedded_rows": 1, "ranking_rule": "lower Wilson bound"}
    row = {"finding": "edema", "link": "edema/report.html", "slice": EVIL, "size": 3, "error_rate": 0.5}
    row |= {
        "error_lo": 0.1,
        "error_hi": 0.9,
        "finding_error_rate": 0.2,
        "excess_errors": 1.0,
        "top_ngram": EVIL,
    }
    html = render("dataset_index.html", summary=summary, rows=[row], version="0")
    policy = _csp(html)
    assert "'unsafe-inline'" not in policy and "'sha256-" in policy and "default-src 'none'" in policy
    assert "<script" not in html and "\u202e" not in html and "\x07" not in html
    assert "&lt;script&gt;" in html and "[U+202E]" in html and "&#34;onerror=x" in html


# -- predictions table (--predictions) ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("suffix", "write"),
    [
        (".csv", lambda p: p.write_text("dicom_id,edema\nd1,0.2\nd2,True\n")),
        (
            ".jsonl",
            lambda p: p.write_text('{"dicom_id": "d1", "edema": false}\n{"dicom_id": "d2", "edema": true}\n'),
        ),
        (
            ".parquet",
            lambda p: pd.DataFrame({"dicom_id": ["d1", "d2"], "edema": [False, True]}).to_parquet(p),
        ),
    ],
)
def test_boolean_prediction_is_refused_naming_column_and_row(cli, tmp_path: Path, suffix: str, write) -> None:
    """True / False were read as probabilities 1.0 / 0.0."""
    root, reports = _mimic(tmp_path, gz=False)
    pred = tmp_path / f"pred{suffix}"
    write(pred)
    before = snapshot(tmp_path)
    args = ["audit", "--dataset", f"mimic-cxr:{root}", "--dataset-reports", reports, "--predictions", pred]
    rc, err = cli(*args, "--target", "edema", "--out", tmp_path / "out", "--cache-dir", tmp_path / "cache")
    row = "row 2" if suffix == ".csv" else "row 1"
    assert rc == 2 and f"{pred}: column 'edema' {row}: probability" in one_line(err), err
    assert snapshot(tmp_path) == before


def test_truncated_openi_report_archive_names_the_archive(tmp_path: Path) -> None:
    """A .tgz cut short (an interrupted download) was an EOFError traceback."""
    import io
    import tarfile

    from medaudit.data.cxr import read_openi
    from test_cxr_readers import _openi

    rep, imgs, meta = _openi(tmp_path)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(rep, arcname="ecgen-radiology")
    tgz = tmp_path / "NLMCXR_reports.tgz"
    tgz.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(InputError, match=re.escape(f"{tgz}: not a readable report archive")):
        read_openi(tgz, imgs, meta)
