"""Concepts and rule slices inside the audit: predicates, the rule slicer, slice descriptions and
the single ranked list of embedding (mixture) and rule slices.

* :func:`report_concepts`: concept codes of the table's reports, or ``None`` with a warning when every
  report is empty or the lexicon matches (almost) none of them (another language).
* :func:`audit_predicates`: readable predicates from concepts, metadata, labels and open-vocabulary
  n-grams.
* :func:`describe_slice`: the slice's best-matching rule (coverage, precision) and its concept
  enrichment (odds ratio, Benjamini–Hochberg q), plus a one-line headline.
* :func:`merge_ranked`: one list ranked by the evidence of excess errors, overlapping slices merged.

Ranking across families. Every slice, whatever found it, is scored on its members with the same
test: are its errors above what the *rest of its members' classes* predict (Fisher's exact one-sided
test inside one class, its exact stratified extension across two, :func:`slice_evidence`, the
ranking null of the rule slicer); the list is sorted by that p-value, with slices under the rule
search's minimum support last (a tiny embedding slice was picked by the error-aware mixture *for*
its errors, so its p-value overstates the evidence). A class-level failure (most positives missed)
is therefore not a slice; the audit reports it as per-class error rates. The test needs both purity
and size: a 20-case slice with 15 errors at a 10% base rate (p ~ 1e-10) ranks above a 300-case slice
at 16% (p ~ 1e-3), and a large slice with many excess errors still ranks first.

Merging. Two slices whose member Jaccard index is >= ``MERGE_JACCARD`` (0.5) are one finding: at
0.5 the shared cases outnumber the cases only one of them holds (two 100-case slices share >= 67
cases), so each is mostly the other; below it most cases differ. The better-ranked slice is kept and
lists the other under ``linked``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from medaudit.audit import explain
from medaudit.audit.concepts import Lexicon, default_lexicon, extract_concepts, ngram_features
from medaudit.audit.predicates import build_predicates
from medaudit.audit.slicers.rules import best_rule, rule_log_pvalues
from medaudit.stats import stratified_excess_logp

__all__ = [
    "MERGE_JACCARD",
    "audit_predicates",
    "concept_enrichment",
    "describe_slice",
    "member_scores",
    "merge_ranked",
    "ngram_min_reports",
    "report_concepts",
]

MERGE_JACCARD = 0.5
#: Below this share of non-empty reports with any lexicon match, the reports are taken to be in a
#: language (or style) the lexicon does not cover.
MIN_COVERAGE = 0.05
_STATE = {1: "mentioned", -1: "denied", 2: "uncertain", 0: "not mentioned"}


def report_concepts(
    reports: Sequence[Any],
    lexicon: Lexicon | None = None,
    where: str = "reports",
    *,
    qualified: bool = False,
    min_reports: int = 10,
) -> tuple[pd.DataFrame | None, str | None]:
    """Concept codes of the reports, or ``(None, warning)`` when no report text can be used.

    ``qualified``: add the side/site/severity-qualified concepts (``atelectasis (left)``) that at
    least ``min_reports`` reports carry (rarer ones cannot make a rule slice, and would only widen
    the multiple-testing correction of the enrichment table)."""
    texts = [r if isinstance(r, str) else "" for r in reports]
    n_text = sum(bool(t.strip()) for t in texts)
    if n_text == 0:
        return None, f"{where}: every report is empty; concepts and report rules are skipped"
    lex = lexicon or default_lexicon()
    codes = extract_concepts(texts, lex, qualified=qualified)
    plain = codes.iloc[:, : len(lex)]
    covered = int((plain != 0).any(axis=1).sum())
    if covered < MIN_COVERAGE * n_text:
        return None, (
            f"{where}: the concept lexicon ({lex.name or 'custom'}, language '{lex.language}') matches "
            f"only {covered} of {n_text} reports; they may be in another language. Concepts are skipped; "
            "the audit uses the other modalities and open-vocabulary n-grams"
        )
    if codes.shape[1] > len(lex):
        counts = (codes.iloc[:, len(lex) :] != 0).sum()
        codes = pd.concat([plain, codes[counts.index[counts >= min_reports]]], axis=1)
    return codes, None


def audit_predicates(
    concepts: pd.DataFrame | None,
    metadata: pd.DataFrame | None,
    label: np.ndarray,
    reports: Sequence[Any] | None = None,
    max_ngrams: int = 1000,
    min_support: int = 10,
) -> pd.DataFrame:
    """Predicates for the rule slicer: concepts, metadata, label and the ``max_ngrams`` most frequent
    open-vocabulary n-grams (1–2 words) in at most half of the reports and in at least
    :func:`ngram_min_reports` of them: as many as a rule slice needs (``min_support``), and 0.5% of
    the reports on large tables. A word in 1% of the reports ("eventration") can name a failure
    group of that size; a fixed 2% floor hid it. The cap (1000) binds only on large tables: a
    1,000-report Open-i sample has 545–570 n-grams in 10 or more reports, and the words that name
    a small group ("stent", "epicardial fat", "shoulder") rank 350–550 by frequency, so the earlier
    cap of 300 cut them (docs/heldout_real_reports.md)."""
    extra = None
    if reports is not None and max_ngrams > 0 and any(isinstance(r, str) and r.strip() for r in reports):
        low = ngram_min_reports(len(reports), min_support)
        extra = ngram_features(reports, ngram_range=(1, 2), min_df=low, max_df=0.5, max_features=max_ngrams)
        extra = extra if extra.shape[1] else None
    meta = metadata if metadata is not None and metadata.shape[1] else None
    return build_predicates(concepts, meta, label, extra=extra)


def ngram_min_reports(n_reports: int, min_support: int = 10) -> int:
    """Fewest reports an open-vocabulary n-gram predicate must occur in: ``max(min_support, 0.5% of
    the reports)`` (rarer n-grams cannot make a rule slice; on large tables the floor keeps the
    vocabulary to words that can name a group worth a slice)."""
    return max(int(min_support), 2, int(np.ceil(0.005 * n_reports)))


def concept_enrichment(concepts: pd.DataFrame, mask: np.ndarray, top: int = 10) -> list[dict[str, Any]]:
    """Concept states over-represented in the slice: odds ratio and Benjamini–Hochberg q per
    (concept, state), from :func:`medaudit.audit.explain.metadata_enrichment`."""
    states = concepts.apply(lambda c: c.map(_STATE))
    table = explain.metadata_enrichment(states, mask)
    if table.empty:
        return []
    table = table[(table["direction"] == "over") & (table["value"] != "not mentioned")]
    table = table.rename(columns={"column": "concept", "value": "state"})
    return table.head(top).to_dict(orient="records")


def _headline(rule: dict[str, Any] | None, concepts: list[dict[str, Any]], family: str) -> str:
    parts = []
    if rule is not None:
        if family == "rules":
            parts.append(f"rule: {rule['text']}")
        else:
            parts.append(
                f"{rule['coverage']:.0%} of members match {rule['text']} "
                f"({rule['precision']:.0%} of the cases matching it are members)"
            )
    if concepts:
        top = ", ".join(
            f"{c['concept']} {c['state']} ({c['in_slice']:.0%} vs {c['out_slice']:.0%}, "
            f"OR {c['effect']:.3g}, q {c['q_value']:.1g})"
            for c in concepts[:3]
        )
        parts.append(f"top concepts: {top}")
    return "; ".join(parts)


def describe_slice(
    predicates: pd.DataFrame | None,
    concepts: pd.DataFrame | None,
    mask: np.ndarray,
    rule: list[str] | None = None,
    family: str = "mixture",
) -> dict[str, Any]:
    """``rule`` (the slice's own rule, or its best-matching one), ``concepts`` and ``headline``."""
    m = np.asarray(mask, dtype=bool)
    desc: dict[str, Any] = {"rule": None, "concepts": [], "headline": ""}
    if rule is not None and predicates is not None:
        cover = predicates[rule].to_numpy(bool).all(axis=1)
        k = int((cover & m).sum())
        desc["rule"] = {
            "rule": list(rule),
            "text": " ∧ ".join(rule),
            "coverage": k / max(int(m.sum()), 1),
            "precision": k / max(int(cover.sum()), 1),
            "jaccard": k / max(int((cover | m).sum()), 1),
            "rule_size": int(cover.sum()),
        }
    elif predicates is not None and predicates.shape[1] and m.any():
        desc["rule"] = best_rule(predicates, m, max_level=3, beam=20)
    if concepts is not None and m.any() and not m.all():
        desc["concepts"] = concept_enrichment(concepts, m)
    desc["headline"] = _headline(desc["rule"], desc["concepts"], family)
    return desc


def member_scores(
    matches: np.ndarray, labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5
) -> np.ndarray:
    """Membership scores of rule slices: 0 for a case outside the rule; for a case inside it, a score
    in the top fifth of ``(threshold, 1]`` that grows with how far the classifier is from the truth
    (``1 - p(true class)``): ``threshold + (1 - threshold) * (0.8 + 0.2 * (1 - p_true))``. Members
    stay near 1 (the rule leaves no doubt that they are members, and score-weighted figures such as
    ``soft_size`` stay within 10% of the rule's), while the order among them is the classifier's.

    A rule decides *who* is in the slice; the score decides *in which order* its members are shown
    (report, :meth:`~medaudit.audit.result.AuditResult.members`, top-k precision): the cases the
    classifier gets most wrong first, as an error-aware mixture (Domino) orders its members. Size,
    error rate and every count use membership (score > ``threshold``), so they are the rule's.

    Args:
        matches: (n, k) 0/1 rule matches (:meth:`RuleSlicer.predict_proba`).
        labels: (n,) true binary labels; probs: (n,) predicted P(label = 1).
    """
    m = np.asarray(matches, dtype=bool)
    p = np.asarray(probs, dtype=np.float64)
    wrong = np.where(np.asarray(labels) == 1, 1.0 - p, p)[:, None]
    graded = threshold + (1.0 - threshold) * (0.8 + 0.2 * np.clip(wrong, 0.0, 1.0))
    return np.where(m, graded, 0.0)


def slice_evidence(
    mask: np.ndarray, errors: np.ndarray, classes: np.ndarray | None = None
) -> dict[str, float]:
    """Members' errors against the rest of their classes (``classes``: the true labels; the ranking
    null of :class:`~medaudit.audit.slicers.rules.RuleSlicer`: Fisher's exact test inside one class,
    Cochran-Mantel-Haenszel across classes, :func:`medaudit.stats.stratified_excess_logp`), or
    against the overall error rate without ``classes`` (exact one-sided binomial): expected errors
    (at the classes' or the overall rate), excess errors and the p-value."""
    m = np.asarray(mask, dtype=bool)
    e = np.asarray(errors, dtype=bool)
    size, k = int(m.sum()), int((e & m).sum())
    if classes is None:
        expected = size * float(e.mean()) if len(e) else 0.0
        logp = (
            float(rule_log_pvalues(np.array([k]), np.array([size]), len(e), int(e.sum()))[0]) if size else 0.0
        )
    else:
        _, inv = np.unique(np.asarray(classes), return_inverse=True)
        n_c, k_c = np.bincount(inv), np.bincount(inv, weights=e.astype(float))
        s_c = np.bincount(inv[m], minlength=len(n_c))
        e_c = np.bincount(inv[m & e], minlength=len(n_c))
        expected = float(s_c @ (k_c / n_c))
        logp = float(stratified_excess_logp(e_c[None], s_c[None], k_c, n_c)[0])
    return {
        "expected_errors": expected,
        "excess_errors": k - expected,
        "p_value": float(np.exp(logp)),
        "log10_p": logp / float(np.log(10.0)),
    }


def merge_ranked(
    masks: list[np.ndarray],
    log10_p: Sequence[float],
    threshold: float = MERGE_JACCARD,
    readable: Sequence[bool] | None = None,
    min_size: int = 1,
) -> tuple[list[int], dict[int, list[tuple[int, float]]]]:
    """Rank slices by ``log10_p`` (ascending) and merge those with member Jaccard >= ``threshold``.

    Slices with fewer than ``min_size`` members (the rule search's minimum support) rank after every
    slice that has enough: an embedding slice of 4 cases, all errors, was picked *because* its members
    fail (the mixture models the errors), so its p-value overstates the evidence, and the rule search
    would not have been allowed to report it.

    A merged group keeps the rank of its best member. Its representative is that best member, unless
    ``readable`` marks another member of the group (a rule slice) and not the best one: a finding that a
    rule describes is shown as the rule, with the embedding slice listed under ``linked``.

    Returns the kept indices in rank order and, per kept index, the merged ``(index, jaccard)`` pairs.
    """
    small = [int(np.asarray(m).sum()) < min_size for m in masks]
    order = sorted(range(len(masks)), key=lambda i: (small[i], log10_p[i], i))
    readable = list(readable) if readable is not None else [False] * len(masks)
    kept: list[int] = []
    linked: dict[int, list[tuple[int, float]]] = {}
    for i in order:
        target = None
        for pos, k in enumerate(kept):
            union = int((masks[i] | masks[k]).sum())
            jac = int((masks[i] & masks[k]).sum()) / union if union else 0.0
            if jac >= threshold:
                target = (pos, k, jac)
                break
        if target is None:
            kept.append(i)
            linked[i] = []
            continue
        pos, k, jac = target
        if readable[i] and not readable[k]:  # the rule represents the finding at the same rank
            kept[pos] = i
            linked[i] = [(k, jac), *linked.pop(k)]
        else:
            linked[k].append((i, jac))
    return kept, linked


def warn(message: str) -> None:
    """Emit an audit warning (Python ``UserWarning``)."""
    warnings.warn(message, UserWarning, stacklevel=3)
