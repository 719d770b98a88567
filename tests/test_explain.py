"""Explanations: negation-aware report n-grams, metadata enrichment, exemplars; output schema helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medaudit.audit.explain import exemplars, metadata_enrichment, negate_text, ngram_tfidf, report_ngrams
from medaudit.audit.outputs import (
    membership_frame,
    read_membership,
    read_slices_json,
    write_membership,
    write_slices_json,
)
from medaudit.errors import InputError


def test_negate_text_scopes() -> None:
    assert negate_text("No pleural effusion or pneumothorax. Heart is enlarged.") == (
        "no no_pleural no_effusion no_pneumothorax heart enlarged"
    )
    assert negate_text("Small left pleural effusion.") == "small left pleural effusion"
    assert negate_text("Pleural effusion is not seen.") == "no_pleural no_effusion not"
    assert negate_text("Negative for pneumonia but there is edema") == "no_pneumonia edema"
    assert "no_effusion" in negate_text("Effusion isn't present.")


def _corpus(n: int = 60, seed: int = 0) -> tuple[list[str], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    reports, in_slice = [], np.zeros(n, dtype=bool)
    for i in range(n):
        if i < n // 3:  # the slice: denies an effusion
            reports.append(f"No pleural effusion. Mild cardiomegaly. Lines {rng.integers(100)}.")
            in_slice[i] = True
        elif i < 2 * n // 3:  # reference: has an effusion
            reports.append("Moderate right pleural effusion. Lungs otherwise clear.")
        else:
            reports.append("Lungs are clear. Normal heart size.")
    reference = ~in_slice
    return reports, in_slice, reference


def test_negated_slice_not_explained_by_positive_concept() -> None:
    reports, in_slice, reference = _corpus()
    ng = report_ngrams(reports, in_slice, reference, top_k=40)
    assert 0 < len(ng) <= 40  # redundant n-grams (same words, same reports) are collapsed
    over = ng[ng["direction"] == "over"]["ngram"].tolist()
    neg = next(g for g in over if "no_effusion" in g)
    # the positive concept is *under*-represented in the slice, never over
    pos = ng[ng["ngram"] == "pleural effusion"]
    assert pos.empty or (pos["direction"] == "under").all()
    assert not any(g in {"pleural effusion", "effusion", "pleural"} for g in over)
    assert ng["diff"].abs().is_monotonic_decreasing
    assert set(ng.columns) >= {"ngram", "diff", "direction", "negated", "slice_doc_frac"}
    assert ng.loc[ng["ngram"] == neg, "negated"].item()
    # a TF-IDF computed once and reused gives the same ranking
    again = report_ngrams(None, in_slice, reference, top_k=40, tfidf=ngram_tfidf(reports))
    pd.testing.assert_frame_equal(again, ng)


def test_report_ngrams_empty_groups() -> None:
    reports, in_slice, _ = _corpus(12)
    assert report_ngrams(reports, in_slice, np.zeros(12, dtype=bool)).empty
    with pytest.raises(ValueError):
        report_ngrams(reports[:-1], in_slice, ~in_slice)


def test_metadata_enrichment_categorical_and_numeric() -> None:
    rng = np.random.default_rng(0)
    n = 300
    in_slice = np.zeros(n, dtype=bool)
    in_slice[:60] = True
    view = np.where(rng.random(n) < 0.15, "lateral", "frontal").astype(object)
    view[:60] = np.where(rng.random(60) < 0.9, "lateral", "frontal")
    age = rng.normal(50, 10, n)
    age[:60] += 15
    noise = rng.choice(["a", "b", "c"], n)
    meta = pd.DataFrame({"view": view, "age": age, "site": noise})
    me = metadata_enrichment(meta, in_slice)
    top = me.iloc[0]
    assert (top["column"], top["value"], top["direction"]) in {
        ("view", "lateral", "over"),
        ("age", "", "over"),
    }
    lat = me[(me["column"] == "view") & (me["value"] == "lateral")].iloc[0]
    assert (
        lat["test"] == "fisher"
        and lat["q_value"] < 1e-10
        and lat["effect"] > 10
        and lat["risk_difference"] > 0.5
    )
    ag = me[me["column"] == "age"].iloc[0]
    assert ag["test"] == "mannwhitneyu" and ag["q_value"] < 1e-6 and 1.0 < ag["effect"] < 2.5
    site = me[me["column"] == "site"]
    assert (site["q_value"] > 0.01).all()
    # BH: q >= p, and monotone in p
    assert (me["q_value"] >= me["p_value"] - 1e-15).all()
    srt = me.sort_values("p_value")
    assert srt["q_value"].is_monotonic_increasing


def test_metadata_enrichment_missing_level_and_degenerate() -> None:
    meta = pd.DataFrame({"sex": ["F", None, "M", None, "F", "M"]})
    me = metadata_enrichment(meta, np.array([1, 1, 0, 0, 0, 0], dtype=bool))
    assert "(missing)" in me["value"].tolist()
    assert metadata_enrichment(meta, np.zeros(6, dtype=bool)).empty


def test_exemplars_order() -> None:
    s = np.array([0.1, 0.9, 0.5, 0.9, 0.3])
    assert exemplars(s, k=3).tolist() == [1, 3, 2]
    assert exemplars(s, k=10).tolist() == [1, 3, 2, 4, 0]


def test_outputs_roundtrip_and_schema_checks(tmp_path: Path) -> None:
    df = membership_frame(["a", "b"], np.array([[0.9, 0.1], [0.2, 0.8]]))
    assert list(df.columns) == ["id", "slice_1", "slice_2"]
    write_membership(tmp_path / "m.parquet", df)
    pd.testing.assert_frame_equal(read_membership(tmp_path / "m.parquet"), df)
    payload = {
        "config": {"seed": 0},
        "counts": {"cases": 2},
        "slices": [
            {
                "rank": 1,
                "size": 1,
                "error_rate": float("nan"),
                "error_ci": [np.float32(0.1), 0.9],
                "explanation": {"ngrams": [], "metadata": []},
                "member_ids": ["a"],
            }
        ],
    }
    write_slices_json(tmp_path / "s.json", payload)
    data = read_slices_json(tmp_path / "s.json")
    assert data["schema_version"] == "1.1" and data["slices"][0]["error_rate"] is None
    (tmp_path / "bad.json").write_text('{"schema_version": "2.0", "config": {}, "counts": {}, "slices": []}')
    with pytest.raises(InputError, match=r"schema_version 2\.0"):
        read_slices_json(tmp_path / "bad.json")
    df.rename(columns={"slice_2": "x"}).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(InputError, match="expected columns"):
        read_membership(tmp_path / "bad.parquet")
