"""The audit with rule slices: --slicer rules|both, --concepts, fallbacks, one ranked list."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medaudit.audit.pipeline import AuditConfig, run_audit
from medaudit.audit.rule_audit import member_scores, merge_ranked, slice_evidence
from medaudit.audit.table import ColumnMap
from medaudit.cli import main
from test_audit_e2e import make_cases

_COLS = ColumnMap(id="case", label="truth", prob="score", image=None, report="text")


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, np.ndarray, Path]:
    folder = tmp_path_factory.mktemp("rule_cases")
    df, gt = make_cases(folder, n=300, images=False, seed=0)
    return df, gt, folder


def _cfg(folder: Path, **kw: object) -> AuditConfig:
    base = dict(
        columns=_COLS,
        meta=["view", "sex", "age"],
        modalities=("report", "metadata"),
        n_slices=3,
        n_components=6,
        pca=16,
        cache_dir=folder / "cache",
        write_report=False,
        encoder_kwargs={"report": {"dim": 16}},
    )
    base.update(kw)
    return AuditConfig(**base)  # type: ignore[arg-type]


def test_rules_find_and_name_the_planted_slice(cases, tmp_path: Path) -> None:
    df, gt, folder = cases
    res = run_audit(df, _cfg(folder, slicer="rules"), tmp_path / "out")
    top = res.slices[0]
    assert top["family"] == "rules" and "report mentions tube" in top["explanation"]["rule"]["rule"]
    members = set(top["member_ids"])
    assert len(members & set(df["case"][gt])) / len(members) >= 0.9
    assert top["explanation"]["headline"].startswith("rule: ")
    assert top["explanation"]["concepts"][0]["state"] == "mentioned"
    assert res.payload["rule_search"]["n_rules_tested"] > res.payload["rule_search"]["n_predicates"]
    assert res.payload["embedding_dims"] == {}  # no embeddings needed for rules


def test_both_gives_one_merged_list(cases, tmp_path: Path) -> None:
    df, gt, folder = cases
    res = run_audit(df, _cfg(folder, slicer="both", write_report=True), tmp_path / "out")
    data = json.loads((tmp_path / "out" / "slices.json").read_text())
    assert data["schema_version"] == "1.1" and len(data["slices"]) <= 3
    assert [s["rank"] for s in data["slices"]] == list(range(1, len(data["slices"]) + 1))
    keys = [(s["size"] < 10, s["evidence"]["log10_p"]) for s in data["slices"]]  # small slices last
    assert keys == sorted(keys)
    top = res.slices[0]
    assert set(top["member_ids"]) & set(df["case"][gt])
    assert top["linked"] and top["linked"][0]["jaccard"] >= 0.5  # the mixture found it too: merged
    for s in res.slices:
        assert s["explanation"]["rule"] is not None and 0 < s["explanation"]["rule"]["coverage"] <= 1
    html = (tmp_path / "out" / "report.html").read_text()
    assert "report mentions tube" in html and "Merged with" in html


def test_all_empty_reports_fall_back(cases, tmp_path: Path) -> None:
    df, _, folder = cases
    empty = df.assign(text="")
    with pytest.warns(UserWarning, match="every report is empty"):
        res = run_audit(empty, _cfg(folder, slicer="both"), tmp_path / "out")
    assert res.payload["modalities"] == ["metadata"] and res.payload["concepts"] is None
    assert any("every report is empty" in w for w in res.payload["warnings"])


def test_uncovered_language_warns(cases, tmp_path: Path) -> None:
    df, _, folder = cases
    rng = np.random.default_rng(0)
    words = ["keine", "Auffälligkeit", "Erguss", "links", "Herz", "normal", "groß", "Lunge"]
    foreign = df.assign(text=[" ".join(rng.choice(words, 6)) + "." for _ in range(len(df))])
    with pytest.warns(UserWarning, match="another language"):
        res = run_audit(foreign, _cfg(folder, slicer="rules"), tmp_path / "out")
    assert res.payload["concepts"] is None


def test_cli_bad_lexicon_exits_2(cases, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    df, _, _ = cases
    table = tmp_path / "cases.csv"
    df.to_csv(table, index=False)
    lex = tmp_path / "lex.yaml"
    lex.write_text("concepts:\n  - name: tube\n    synonyms: []\n")
    out = tmp_path / "audit"
    args = ["audit", "--table", str(table), "--out", str(out), "--id-col", "case", "--label-col", "truth"]
    args += ["--prob-col", "score", "--report-col", "text", "--meta", "view", "--slicer", "rules"]
    assert main([*args, "--concepts", str(lex)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lex.yaml" in err[0] and "synonyms" in err[0]
    assert not out.exists()
    lex.write_text("concepts:\n  - name: chest tube\n    synonyms: [chest tube]\n")
    assert main([*args, "--concepts", str(lex), "--no-report"]) == 0
    data = json.loads((out / "slices.json").read_text())
    assert data["concepts"]["mentioned"] == {"chest tube": 36}
    assert "report mentions chest tube" in data["slices"][0]["explanation"]["rule"]["rule"]


def test_merge_and_size_aware_ranking() -> None:
    """A 20-case slice with 15 errors outranks a 300-case slice at 16% errors (base rate 10%)."""
    n = 5000
    errors = np.zeros(n, dtype=bool)
    errors[:500] = True  # 10% overall
    small = np.zeros(n, dtype=bool)
    small[:15] = small[600:605] = True  # 15 errors of 20
    large = np.zeros(n, dtype=bool)
    large[100:148] = large[1000:1252] = True  # 48 errors of 300
    ev_small, ev_large = slice_evidence(small, errors), slice_evidence(large, errors)
    assert ev_large["excess_errors"] > ev_small["excess_errors"]
    assert ev_small["log10_p"] < ev_large["log10_p"]
    dup = large.copy()
    dup[1252:1300] = True  # Jaccard 300/348 with `large`
    kept, linked = merge_ranked([large, small, dup], [ev_large["log10_p"], ev_small["log10_p"], -1.0])
    assert kept[0] == 1 and len(kept) == 2 and linked[kept[1]][0][0] in (0, 2)


def test_slice_evidence_against_class_rates() -> None:
    """With the labels, a slice of positives is judged against the positives' error rate: a slice
    that only shares its class's high error rate has no excess; the overall-rate null would call it
    strong."""
    n = 2000
    labels = np.zeros(n, dtype=int)
    labels[:200] = 1
    errors = np.zeros(n, dtype=bool)
    errors[:100] = True  # positives: 50% errors
    errors[200:300] = True  # negatives: 100 of 1800
    pos = labels == 1
    strat, plain = slice_evidence(pos, errors, labels), slice_evidence(pos, errors)
    assert strat["excess_errors"] == pytest.approx(0.0) and strat["p_value"] > 0.4
    assert plain["excess_errors"] > 70 and plain["p_value"] < 1e-20
    assert strat["expected_errors"] == pytest.approx(100.0)


def test_merged_finding_is_shown_as_its_rule() -> None:
    """An embedding slice and a rule slice over the same cases are one finding, at the embedding
    slice's (better) rank, represented by the readable rule."""
    n = 400
    emb = np.zeros(n, dtype=bool)
    emb[:40] = True
    rule = np.zeros(n, dtype=bool)
    rule[5:45] = True  # Jaccard 35/45
    other = np.zeros(n, dtype=bool)
    other[200:230] = True
    kept, linked = merge_ranked([emb, other, rule], [-9.0, -5.0, -7.0], readable=[False, False, True])
    assert kept == [2, 1] and linked[2][0][0] == 0
    kept, _ = merge_ranked([emb, other, rule], [-9.0, -5.0, -7.0])
    assert kept == [0, 1]


def test_slice_evidence_compares_with_the_rest_of_the_class() -> None:
    """A slice that is a large share of its class is compared with the class's *other* members:
    21 positives all failing, where the other 34 positives fail 22 times, is Fisher's exact test
    (the class's overall rate, 78%, would compare the slice largely with itself)."""
    from scipy import stats

    labels = np.r_[np.ones(55, dtype=int), np.zeros(365, dtype=int)]
    errors = np.zeros(420, dtype=bool)
    errors[:43] = True  # 21 slice members + 22 other positives fail
    errors[55:84] = True  # 29 negatives fail
    mask = np.zeros(420, dtype=bool)
    mask[:21] = True
    ev = slice_evidence(mask, errors, labels)
    fisher = stats.fisher_exact([[21, 0], [22, 12]], alternative="greater").pvalue
    assert ev["p_value"] == pytest.approx(fisher, rel=1e-6)
    whole = slice_evidence(labels == 1, errors, labels)
    assert whole["p_value"] == pytest.approx(1.0)


def test_small_slices_rank_after_supported_ones() -> None:
    """An embedding slice of 4 cases, all errors, has a smaller p-value than a 20-case slice with 8
    errors, but below the minimum support it ranks after it."""
    n = 1000
    errors = np.zeros(n, dtype=bool)
    errors[:100] = True
    tiny = np.zeros(n, dtype=bool)
    tiny[:4] = True
    small = np.zeros(n, dtype=bool)
    small[10:18] = small[500:512] = True
    lp = [slice_evidence(m, errors)["log10_p"] for m in (tiny, small)]
    assert lp[0] < lp[1]
    assert merge_ranked([tiny, small], lp)[0] == [0, 1]
    assert merge_ranked([tiny, small], lp, min_size=10)[0] == [1, 0]


def test_member_scores_order_members_by_error_and_keep_the_rule() -> None:
    matches = np.array([[1], [1], [1], [0], [0]])
    labels = np.array([1, 1, 0, 1, 0])
    probs = np.array([0.9, 0.1, 0.8, 0.0, 1.0])  # right, wrong, wrong, (outside the rule)
    for t in (0.5, 0.8):
        s = member_scores(matches, labels, probs, t)[:, 0]
        assert ((s > t) == matches[:, 0].astype(bool)).all()  # membership is the rule's
        assert s[3] == s[4] == 0.0
        assert s[1] > s[2] > s[0] > t  # most wrong first (1 - p(true): 0.9, 0.8, 0.1)


def test_rule_slice_members_list_errors_first(cases, tmp_path: Path) -> None:
    df, _, folder = cases
    res = run_audit(df, _cfg(folder, slicer="rules"), tmp_path / "out")
    err = (df["score"].to_numpy() >= 0.5).astype(int) != df["truth"].to_numpy()
    wrong = pd.Series(err, index=df["case"].astype(str))
    sl = next(s for s in res.slices if s["family"] == "rules")
    members = res.members(sl["name"])
    flags = wrong.loc[members["id"].astype(str)].to_numpy()
    assert len(members) == sl["size"] and flags.any() and not flags.all()
    first_ok = int(np.argmin(flags))  # every error comes before the first correct member
    assert flags[:first_ok].all() and not flags[first_ok:].any()


def test_table_without_image_column_is_audited_without_images(cases, tmp_path: Path) -> None:
    df, _, folder = cases
    cfg = _cfg(folder, modalities=None, n_slices=2)
    with pytest.warns(UserWarning, match="no 'image' column"):
        res = run_audit(df.drop(columns=["image"], errors="ignore"), cfg, tmp_path / "out")
    assert "image" not in res.payload["modalities"] and res.slices
    with pytest.raises(Exception, match="image"):  # asked for explicitly: the column must exist
        run_audit(
            df.drop(columns=["image"], errors="ignore"),
            _cfg(folder, modalities=("image", "report")),
            tmp_path / "out2",
        )


def test_no_errors_warns(cases, tmp_path: Path) -> None:
    df, _, folder = cases
    perfect = df.assign(score=df["truth"].astype(float))
    with pytest.warns(UserWarning, match="no error"):
        res = run_audit(perfect, _cfg(folder, slicer="rules"), tmp_path / "out")
    assert any("no error" in w for w in res.payload["warnings"])


def test_rare_words_that_can_make_a_slice_become_predicates() -> None:
    from medaudit.audit.rule_audit import audit_predicates, ngram_min_reports

    assert ngram_min_reports(1000, 10) == 10 and ngram_min_reports(100_000, 10) == 500
    reports = [
        "Diaphragmatic eventration noted." if i < 12 else f"Lungs are clear {i % 7}." for i in range(1000)
    ]
    pred = audit_predicates(None, None, np.zeros(1000, dtype=int), reports, min_support=10)
    assert 'report says "eventration"' in pred.columns  # in 1.2% of the reports
    pred = audit_predicates(None, None, np.zeros(1000, dtype=int), reports, min_support=20)
    assert 'report says "eventration"' not in pred.columns  # too rare for a 20-case slice


def _weak_lead_table(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """Reports from a pool of sentences; 20 mention kyphosis and 8 of those are errors (12% elsewhere):
    p ~ 1e-3, not significant after correcting for the thousands of rules tried."""
    rng = np.random.default_rng(seed)
    pool = ["Heart size normal.", "Lungs are clear.", "No pleural effusion.", "Stable mediastinum.",
            "Mild degenerative change.", "No pneumothorax.", "Calcified granuloma.", "Low lung volumes.",
            "Prior study reviewed.", "Trachea midline.", "No focal consolidation.", "Bony structures intact."]  # fmt: skip
    texts = [" ".join(rng.choice(pool, size=4, replace=False)) for _ in range(n)]
    err = rng.random(n) < 0.12
    for i in range(20):
        texts[i] += " Thoracic kyphosis."
    err[:20] = np.arange(20) < 8
    y = rng.integers(0, 2, n)
    pred = np.where(err, 1 - y, y)
    return pd.DataFrame(
        {
            "case": [f"c{i}" for i in range(n)],
            "truth": y,
            "score": np.where(pred == 1, 0.8, 0.2),
            "text": texts,
            "view": rng.choice(["PA", "AP"], n),
            "sex": rng.choice(["F", "M"], n),
            "age": rng.integers(20, 90, n),
        }
    )


def test_exploratory_rule_slices_are_flagged_in_json_and_report(cases, tmp_path: Path) -> None:
    """When fewer rules than asked for survive the correction, the list is filled with rules that are
    significant only before it; slices.json flags them and the report says so."""
    _, _, folder = cases
    df = _weak_lead_table()
    res = run_audit(df, _cfg(folder, slicer="rules", write_report=True), tmp_path / "out")
    flags = [s["rule_significant"] for s in res.slices]
    assert flags and not all(flags) and flags == sorted(flags, reverse=True)
    for s in res.slices:
        assert (s["rule_qvalue"] <= 0.05) == s["rule_significant"]
    assert any("kyphosis" in " ".join(s["explanation"]["rule"]["rule"]) for s in res.slices)
    assert "Exploratory:" in (tmp_path / "out" / "report.html").read_text()
    strict = run_audit(df, _cfg(folder, slicer="rules", rule_exploratory=False), tmp_path / "strict")
    assert all(s["rule_significant"] for s in strict.slices) and len(strict.slices) < len(res.slices)


def test_both_reports_the_search_penalty_of_exploratory_rules(cases, tmp_path: Path) -> None:
    """Exploratory rules are picked on p x the layered Bonferroni factor (reported), and the merged
    list is ranked on the evidence alone."""
    _, _, folder = cases
    df = _weak_lead_table()
    res = run_audit(df, _cfg(folder, slicer="both", n_slices=5), tmp_path / "out")
    expl = [s for s in res.slices if s["family"] == "rules" and not s["rule_significant"]]
    assert expl and all(s["search_penalty_log10"] > 2 for s in expl)  # > log10(#single predicates)
    keys = [(s["size"] < 10, s["evidence"]["log10_p"]) for s in res.slices]
    assert keys == sorted(keys)
