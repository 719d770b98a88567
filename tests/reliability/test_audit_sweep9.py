"""A ninth adversarial sweep of ``medaudit audit``, ``demo`` and ``list``: inputs that were silently
changed or lost, refused only after the slow work, or refused with a line that blamed the wrong thing;
each case failed before its fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from medaudit.audit.concepts import parse_lexicon
from medaudit.audit.config import AuditConfig, ColumnMap
from medaudit.audit.pipeline import _slicer_for
from medaudit.audit.table import load_case_table
from medaudit.errors import InputError

from .conftest import SRC, make_table
from .conftest import refused as _refused


@pytest.fixture
def work(tmp_path: Path) -> Path:
    make_table(tmp_path / "data")
    return tmp_path


def _as_jsonl(work: Path, **changes: list[object]) -> Path:
    df = pd.read_csv(work / "data" / "cases.csv")
    for col, values in changes.items():
        df[col] = values
    p = work / "data" / "cases.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in df.to_dict(orient="records")))
    return p


def test_jsonl_ids_that_look_like_numbers_stay_text(work):
    """``"000"``, ``"001"`` ... came back as 0, 1 ...; ``"000"`` and ``"0"`` were called duplicates."""
    ids = [f"{i:03d}" for i in range(39)] + ["0"]
    p = _as_jsonl(work, id=ids)
    table = load_case_table(p, ColumnMap(), meta=["view", "age"], require=("report",))
    assert table.df["id"].tolist() == ids


def test_a_metadata_column_named_label_is_refused(cli, audit_args, work):
    """Its predicates ``label = 0/1`` were overwritten by the ground truth's: a silent loss of slices."""
    df = pd.read_csv(work / "data" / "cases.csv").rename(columns={"label": "truth", "view": "label"})
    df.to_csv(work / "data" / "cases.csv", index=False)
    args = audit_args(work / "data" / "cases.csv", work / "out", "--label-col", "truth")
    args[args.index("view,age")] = "label,age"
    _refused(cli, args, [work], "--meta 'label'", "reserved")


def test_slicer_kwargs_go_to_the_slicer_that_takes_them():
    """``--slicer rules`` ignored a misspelt key; ``--slicer both`` refused the rule search's ``alpha``."""
    with pytest.raises(InputError, match="slicer_kwargs 'alfa'"):
        _slicer_for(AuditConfig(slicer="rules", slicer_kwargs={"alfa": 0.01}), "rules", 100)
    assert _slicer_for(AuditConfig(slicer="rules", slicer_kwargs={"alpha": 0.01}), "rules", 100) is None
    mixture = _slicer_for(
        AuditConfig(slicer="both", slicer_kwargs={"alpha": 0.01, "init": "kmeans"}), "both", 100
    )
    assert mixture.init == "kmeans" and "alpha" not in mixture.get_params()
    with pytest.raises(InputError, match="slicer_kwargs 'bogus'"):
        _slicer_for(AuditConfig(slicer="both", slicer_kwargs={"bogus": 1}), "both", 100)


def test_rule_parameters_in_slicer_kwargs_reach_the_rule_search(cli, audit_args, work):
    cfg = work / "a.yaml"
    cfg.write_text("slicer_kwargs: {alpha: 0.2, max_level: 1}\n")
    rc, err = cli(*audit_args(work / "data" / "cases.csv", work / "out", "--slicer", "both", "--config", cfg))
    assert rc == 0, err
    out = json.loads((work / "out" / "slices.json").read_text())
    assert out["rule_search"]["alpha"] == 0.2 and out["rule_search"]["max_level"] == 1


def test_too_few_mixture_components_are_refused_before_any_embedding(cli, audit_args, work, tmp_path):
    """``--n-components 3`` embedded every case, then failed on "init='confusion' needs ..."."""
    args = audit_args(work / "data" / "cases.csv", work / "out", "--cache-dir", tmp_path / "cache")
    args[args.index("--n-components") + 1] = "3"
    args[args.index("--n-slices") + 1] = "2"
    _refused(cli, args, [work], "--n-components 3", "at least 4")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.npy"))


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--epochs", "-1"),
        ("--corr", "nan"),
        ("--corr", "1.5"),
        ("--seed", "-1"),
        ("--n-slices", "0"),
        ("--rank-by", "bogus"),
        ("--slicer", "bogus"),
        ("--device", "bogus"),
    ],
)
def test_demo_options_are_checked_before_the_cohort_is_built(cli, tmp_path, flag, value):
    """These gave an internal error (exit 1) or were refused only after the classifier had trained."""
    args = ["demo", "--out", tmp_path / "o", "--cache-dir", tmp_path / "cache", "--quick", flag, value]
    _refused(cli, args, [tmp_path], flag)


def test_list_recipes(cli):
    """``medaudit list --help`` offered ``recipes``, which ``list`` refused."""
    from medaudit.registry import available

    assert cli("list", "recipes")[0] == 0
    assert {line.split("\t")[0] for line in available("recipes")} >= {"mixed", "bigaug", "synthseg", "gin"}


def test_two_concept_qualifier_pairs_with_one_column_name_are_refused():
    """Concept ``a`` + qualifier ``b (c)`` and concept ``a (b`` + qualifier ``c)`` both made column
    ``a (b (c))``: the first one's codes were overwritten."""
    data = {
        "concepts": [{"name": "a", "synonyms": ["x"]}, {"name": "a (b", "synonyms": ["y"]}],
        "qualifiers": [{"name": "b (c)", "words": ["left"]}, {"name": "c)", "words": ["right"]}],
    }
    with pytest.raises(InputError, match=r"would both be column 'a \(b \(c\)\)'"):
        parse_lexicon(data, "lex.yaml")


def test_a_user_file_where_the_lock_goes_is_kept(cli, audit_args, work):
    """``.<out>.lock`` beside ``--out`` was opened, locked and deleted even when it was a user's file."""
    mine = work / ".out.lock"
    mine.write_text("my notes\n")
    _refused(
        cli, audit_args(work / "data" / "cases.csv", work / "out"), [work], ".out.lock", "not a medaudit lock"
    )
    assert mine.read_text() == "my notes\n"


def test_a_closed_stdout_is_exit_141_not_an_internal_error(tmp_path):
    """``medaudit list encoders | head -0`` exited 1 (documented as an internal error) with no line."""
    r, w = os.pipe()
    os.close(r)  # the reader has gone before the command writes
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.run(
        [sys.executable, "-m", "medaudit.cli", "list", "encoders"], stdout=w, stderr=subprocess.PIPE, env=env
    )
    os.close(w)
    assert proc.returncode == 141, proc.stderr
    assert b"internal error" not in proc.stderr


def test_an_all_blank_metadata_column_from_json_is_refused(work):
    """A JSON table writes absent values as ``""``: the column was audited as one constant category."""
    p = _as_jsonl(work, view=[""] * 40)
    with pytest.raises(InputError, match="column 'view'"):
        load_case_table(p, ColumnMap(), meta=["view", "age"], require=("report", "metadata"))


def test_tfidf_max_features_below_two_names_the_option(cli, audit_args, work):
    """It blamed the reports ("1 distinct term in all") and advised dropping the report modality."""
    args = audit_args(work / "data" / "cases.csv", work / "out", "--encoder-opt", "report.max_features=1")
    _refused(cli, args, [work], "max_features=1")
