"""Rule variants, the sliceline peer and the explanation hit rate of the scenario benchmark."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from medaudit.audit import bench_rules as br

pytest.importorskip("medaudit.audit.slicers.rules")


@pytest.mark.parametrize(
    ("terms", "attribute", "hit"),
    [
        (["report mentions support device", "label = 0"], "support_devices", True),
        (["report mentions pacemaker or leads"], "support_devices", True),
        (['report says "chest tube"'], "support_devices", True),
        (["report denies support device"], "support_devices", False),
        (["not (report mentions tube)"], "support_devices", False),
        (["age >= 70", "label = 0"], "support_devices", False),
        (["view_position = LATERAL"], "view_position=LATERAL|LL", True),
        (["view_position = PA"], "view_position=LATERAL|LL", False),
        (["view_position = PA"], "view_position=PA|AP|FRONTAL", True),
        (["report mentions lateral view"], "view_position=PA|AP|FRONTAL", False),
        ([""], "support_devices", False),
    ],
)
def test_names_attribute(terms: list[str], attribute: str, hit: bool) -> None:
    assert br.names_attribute(terms, attribute) is hit


def test_merge_ranked_surfaces_small_pure_slice_and_drops_duplicates() -> None:
    n = 1000
    rng = np.random.default_rng(0)
    errors = rng.random(n) < 0.10
    small = np.zeros(n)
    small[:20] = 1
    errors[:20] = False
    errors[:15] = True  # a 20-case slice with 15 errors
    large = np.zeros(n)
    large[100:400] = 1
    errors[100:400] = rng.random(300) < 0.16  # 300 cases at 16%
    dup = large.copy()
    dup[395:400] = 0  # the same failure found by the other slicer
    scores, rules = br.merge_ranked([np.c_[large], np.c_[small, dup]], [[["big rule"]], []], errors)
    assert scores.shape[1] == 2
    assert np.array_equal(scores[:, 0], small)
    assert rules == [[], ["big rule"]]


def test_slice_terms_names_devices() -> None:
    from medaudit.audit.concepts import extract_concepts

    n = 200
    reports = ["Right chest tube in place. No effusion."] * 40 + ["Heart size normal. Lungs clear."] * (
        n - 40
    )
    codes = extract_concepts(reports)
    pred = pd.DataFrame(
        {"report mentions tube": (codes["tube"] == 1).to_numpy(), "age >= 70": np.arange(n) % 2 == 0}
    )
    members = np.zeros(n, dtype=bool)
    members[:30] = True
    t = br.slice_terms(pred, codes, members)
    assert t["rule"] == "report mentions tube"
    assert br.names_attribute(t["terms"], "support_devices")
    own = br.slice_terms(pred, codes, members, ["age >= 70"])
    assert own["rule"] == "age >= 70"


def test_sliceline_peer_finds_planted_conjunction() -> None:
    pytest.importorskip("sliceline")
    from medaudit.audit.peer_sliceline import run_sliceline

    rng = np.random.default_rng(1)
    n = 600
    x = pd.DataFrame(rng.random((n, 8)) < 0.3, columns=[f"p{i}" for i in range(8)])
    planted = (x["p2"] & x["p5"]).to_numpy()
    err = ((rng.random(n) < 0.05) | (planted & (rng.random(n) < 0.9))).astype(float)
    res = run_sliceline(x, err, k=3, max_l=2, alpha=0.95)
    assert res.scores.shape == (n, 3)
    assert res.rules[0] == "p2 ∧ p5"
    assert np.array_equal(res.scores[:, 0].astype(bool), planted)


def test_benchmark_rule_variants_and_sliceline_rows(tmp_path) -> None:
    pytest.importorskip("sliceline")
    from medaudit.audit import benchmark as bm
    from test_benchmark import SMALL, synth_cohort

    df, emb = synth_cohort()
    lateral = (df["view_position"] == "LATERAL").to_numpy()
    df["report"] = np.where(lateral, "Lateral view. Heart size normal.", "PA view. Heart size normal.")
    cfg = dataclasses.replace(
        SMALL,
        n_runs=1,
        variants=(("image", "report", "metadata"),),
        fusions=("concat",),
        rule_variants=("rules", "rules+mixture"),
        peer_sliceline=True,
    )
    bm.run_benchmark(cfg, tmp_path / "b", cohort=df, embeddings=emb, kind="table", n_boot=100)
    runs = pd.read_parquet(tmp_path / "b" / "runs.parquet")
    got = set(zip(runs["variant"], runs["method"], strict=True))
    assert {("rules", "medaudit"), ("rules+mixture", "medaudit"), ("rules", "sliceline-0.3.0")} <= got
    rules = runs[(runs["variant"] == "rules") & (runs["method"] == "medaudit")].iloc[0]
    assert rules["p10_dcbench"] >= 0.8  # the planted rare slice: positives on laterals
    assert rules["hit"] == 1.0
    assert "lateral" in rules["top_rule"].lower()
    hits = pd.read_csv(tmp_path / "b" / "hit_rate.csv")
    assert {"rules", "rules+mixture"} <= set(hits["variant"])
