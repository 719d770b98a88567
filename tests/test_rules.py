"""Rule slicer: lattice search, exact test + Benjamini-Hochberg, non-overlapping selection."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from medaudit.audit.slicers import RuleSlicer, get_slicer
from medaudit.audit.slicers.rules import best_rule
from medaudit.errors import InputError


def _data(
    n: int = 3000, p: int = 30, seed: int = 0
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.random((n, p)) < rng.uniform(0.05, 0.3, p)
    y = rng.integers(0, 2, n)
    err = rng.random(n) < 0.1
    planted = x[:, 3] & x[:, 7] & (y == 0)
    err[planted] = rng.random(planted.sum()) < 0.7
    pred = np.where(err, 1 - y, y)
    df = pd.DataFrame(x, columns=[f"f{j}" for j in range(p)])
    df["label = 0"] = y == 0
    return df, y, pred, planted


def test_finds_planted_level3_rule() -> None:
    df, y, pred, planted = _data()
    s = RuleSlicer(n_slices=3).fit(df, y, pred)
    assert sorted(s.rules_[0]) == ["f3", "f7", "label = 0"]
    assert s.slice_qvalue_[0] < 1e-6 and s.slice_excess_[0] > 0
    member = s.predict_proba(df, y, pred)[:, 0].astype(bool)
    assert (member == planted).all()
    assert s.n_rules_tested_ >= df.shape[1]


def test_no_signal_no_slices() -> None:
    rng = np.random.default_rng(1)
    x = rng.random((2000, 20)) < 0.2
    y = rng.integers(0, 2, 2000)
    pred = np.where(rng.random(2000) < 0.1, 1 - y, y)
    s = RuleSlicer().fit(x, y, pred)
    assert s.n_slices_ <= 1  # BH at 5%: almost never a false slice on pure noise
    assert s.predict_proba(x, y, pred).shape == (2000, s.n_slices_)


def test_small_strong_slice_surfaces_next_to_large_ones() -> None:
    """A 20-case slice with 15 errors is reported although larger failing slices exist."""
    rng = np.random.default_rng(2)
    n = 5000
    x = rng.random((n, 12)) < 0.25
    y = rng.integers(0, 2, n)
    err = rng.random(n) < 0.1
    for a, b, rate in ((0, 1, 0.3), (2, 3, 0.25), (4, 5, 0.22)):  # large, moderate failures
        m = x[:, a] & x[:, b]
        err[m] = rng.random(m.sum()) < rate
    small = np.zeros(n, dtype=bool)
    small[rng.choice(n, 20, replace=False)] = True
    x[:, 11] = small
    err[small] = False
    err[np.flatnonzero(small)[:15]] = True
    pred = np.where(err, 1 - y, y)
    s = RuleSlicer(n_slices=5).fit(x, y, pred)
    assert ["x11"] in s.rules_
    assert s.slice_size_[s.rules_.index(["x11"])] == 20


def test_no_nested_duplicates() -> None:
    df, y, pred, _ = _data()
    s = RuleSlicer(n_slices=5).fit(df, y, pred)
    masks = s.predict_proba(df, y, pred).astype(bool)
    for i in range(masks.shape[1]):
        for j in range(i):
            shared = (masks[:, i] & masks[:, j]).sum()
            assert shared <= 0.5 * min(masks[:, i].sum(), masks[:, j].sum())


def test_estimator_contract_and_errors() -> None:
    df, y, pred, _ = _data(n=500)
    s = get_slicer("rules", n_slices=2)
    assert isinstance(clone(s), RuleSlicer)
    with pytest.raises(InputError, match="0/1"):
        RuleSlicer().fit(np.full((10, 2), 0.5), np.zeros(10), np.zeros(10))
    with pytest.raises(InputError, match="rows"):
        RuleSlicer().fit(df, y[:-1], pred)
    with pytest.raises(InputError, match="rank_by"):
        RuleSlicer(rank_by="size").fit(df, y, pred)


def test_best_rule_describes_members() -> None:
    df, _, _, planted = _data()
    d = best_rule(df, planted, max_level=3)
    assert d is not None and sorted(d["rule"]) == ["f3", "f7", "label = 0"]
    assert d["coverage"] == 1.0 and d["precision"] == 1.0
    assert best_rule(df, np.zeros(len(df), dtype=bool)) is None


def _class_level_failure(seed: int = 3) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """Positives are missed half the time everywhere (a class-level failure); among negatives, a
    device attribute triples the error rate (the slice)."""
    rng = np.random.default_rng(seed)
    n = 4000
    y = (rng.random(n) < 0.15).astype(int)
    x = rng.random((n, 15)) < 0.2
    err = np.where(y == 1, rng.random(n) < 0.5, rng.random(n) < 0.06)
    planted = x[:, 2] & (y == 0)
    err[planted] = rng.random(planted.sum()) < 0.2
    df = pd.DataFrame(x, columns=[f"f{j}" for j in range(15)])
    df["label = 0"], df["label = 1"] = y == 0, y == 1
    return df, y, np.where(err, 1 - y, y), planted


def test_class_level_failure_is_not_a_slice() -> None:
    """'label = 1' alone (positives missed everywhere) is never a slice; ranked against its classes'
    error rates, the negatives' device slice comes before restatements of the class-level failure
    ('fj ∧ label = 1'), which the overall-rate ranking (stratify=False) puts first."""
    df, y, pred, planted = _class_level_failure()
    s = RuleSlicer(n_slices=3).fit(df, y, pred)
    assert all(r != ["label = 1"] for r in s.rules_)
    assert "f2" in s.rules_[0] and "label = 1" not in s.rules_[0]
    assert s.class_error_rates_[1] > 0.4 > 0.1 > s.class_error_rates_[0]
    m = s.predict_proba(df, y, pred)[:, 0].astype(bool)
    assert (m & planted).sum() / m.sum() > 0.75
    assert s.slice_class_pvalue_[0] < 1e-6
    plain = RuleSlicer(n_slices=3, stratify=False).fit(df, y, pred)
    assert "label = 1" in plain.rules_[0]  # a restatement of the class-level failure comes first


def test_class_expected_errors_match_class_rates() -> None:
    df, y, pred, _ = _class_level_failure(seed=4)
    s = RuleSlicer(n_slices=2).fit(df, y, pred)
    err = pred != y
    rates = np.array([err[y == c].mean() for c in (0, 1)])
    for k, rule in enumerate(s.rules_):
        m = df[rule].to_numpy(bool).all(axis=1)
        assert s.slice_class_expected_[k] == pytest.approx(rates[y[m]].sum())
        assert s.slice_expected_[k] == pytest.approx(m.sum() * err.mean())


def test_one_ngram_per_rule() -> None:
    """Open-vocabulary n-grams join other predicates, never each other."""
    df, y, pred, planted = _data(n=2000, p=12)
    df = df.rename(columns={c: f'report says "{c}"' for c in df.columns if c.startswith("f")})
    s = RuleSlicer(n_slices=5).fit(df, y, pred)
    assert all(sum(t.startswith("report says") for t in r) <= 1 for r in s.rules_)
    d = best_rule(df, planted, max_level=3)
    assert d is not None and sum(t.startswith("report says") for t in d["rule"]) <= 1
    unlimited = RuleSlicer(n_slices=5, group_limits={}).fit(df, y, pred)
    assert sorted(unlimited.rules_[0]) == ["label = 0", 'report says "f3"', 'report says "f7"']


def test_exploratory_rules_fill_the_list_and_are_flagged() -> None:
    """A lead (18 cases, 8 errors at a 15% base rate: p ~ 1e-3) among 1,500 noise predicates does not
    survive Benjamini-Hochberg; ``exploratory`` reports it anyway, flagged as not significant."""
    rng = np.random.default_rng(0)
    n = 1000
    err = rng.random(n) < 0.15
    lead = np.zeros(n, dtype=bool)
    lead[:18] = True
    err[:18] = np.arange(18) < 8
    cols = {f"noise {j}": rng.random(n) < 0.3 for j in range(1500)}
    pred = pd.DataFrame({**cols, "lead": lead})
    y, probs = np.zeros(n, dtype=int), np.where(err, 0.8, 0.2)
    strict = RuleSlicer(n_slices=3, max_level=1).fit(pred, y, probs)
    assert strict.rules_ == [] and len(strict.slice_significant_) == 0
    loose = RuleSlicer(n_slices=3, max_level=1, exploratory=True).fit(pred, y, probs)
    assert ["lead"] in loose.rules_
    assert not loose.slice_significant_.any() and (loose.slice_qvalue_ > 0.05).all()
    assert (loose.slice_pvalue_ <= 0.05).all()
    # ranked on p x the layered Bonferroni factor: max_level (1) x the 1,501 single predicates tried
    assert np.allclose(loose.slice_search_penalty_, np.log10(1501))


def test_exploratory_rules_come_after_significant_ones() -> None:
    rng = np.random.default_rng(1)
    n = 1000
    err = rng.random(n) < 0.1
    strong = np.zeros(n, dtype=bool)
    strong[:40] = True
    err[:40] = True
    cols = {f"noise {j}": rng.random(n) < 0.3 for j in range(300)}
    pred = pd.DataFrame({**cols, "strong": strong})
    y, probs = np.zeros(n, dtype=int), np.where(err, 0.8, 0.2)
    rs = RuleSlicer(n_slices=5, max_level=1, exploratory=True).fit(pred, y, probs)
    assert rs.rules_[0] == ["strong"] and rs.slice_significant_[0]
    flags = rs.slice_significant_.tolist()
    assert flags == sorted(flags, reverse=True)  # significant first, then the exploratory ones
    assert rs.slice_search_penalty_[0] == 0.0 and (rs.slice_search_penalty_[~rs.slice_significant_] > 0).all()
