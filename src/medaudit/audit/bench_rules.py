"""Rule slices in the failure-scenario benchmark: predicates, the ``rules`` / ``rules+mixture`` variants,
the ``sliceline`` peer and the explanation hit rate.

* :func:`cohort_predicates`: the readable predicate table of a whole cohort, built once (report concepts,
  open-vocabulary n-grams, metadata); each run adds ``label = 0/1`` for its test split
  (:func:`run_predicates`).
* :func:`fit_rules`: :class:`~medaudit.audit.slicers.rules.RuleSlicer` on a run's predicates.
* :func:`merge_ranked`: one ranked list of rule and embedding slices, as ``rules+mixture``: every slice
  (members = membership > 0.5) is scored by the exact one-sided binomial p-value of its errors against
  the overall error rate, the rule slicer's own ranking, so a small pure slice is not buried under a
  large one; duplicates (member Jaccard > 0.5) keep the better-ranked slice.
* :func:`slice_terms` / :func:`names_attribute`: what the top-ranked slice says (its rule, or for an
  embedding slice its best-matching rule, plus its most enriched concept) and whether that names the
  planted attribute (support devices, lateral or frontal view): the explanation hit rate.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "ATTRIBUTE_PATTERNS",
    "cohort_predicates",
    "fit_rules",
    "merge_ranked",
    "names_attribute",
    "run_predicates",
    "slice_terms",
    "top_concept",
]

#: planted attribute family -> pattern a positive predicate or concept must match to name it.
ATTRIBUTE_PATTERNS: dict[str, str] = {
    "devices": r"\b(support devices?|devices?|tubes?|lines? or catheter|catheters?|lines?|pacemakers?|leads|"
    r"sternotomy|wires?|clips|ports?|picc|defibrillator|icd|stents?|hardware|support_devices)\b",
    "lateral": r"\b(lateral|ll|rl)\b",
    "frontal": r"\b(pa|ap|frontal)\b",
}
_NEGATIVE_FORM = re.compile(r"\bdenies\b|\buncertain\b|\bis missing\b|!=|^not \(|\bno_\w|\bno \w")


def attribute_family(attribute: str) -> str | None:
    """``support_devices`` -> devices; ``view_position=LATERAL|LL`` -> lateral; a frontal list -> frontal."""
    a = attribute.lower()
    if "device" in a:
        return "devices"
    if "view" in a or "=" in a:
        vals = a.split("=", 1)[-1]
        return "lateral" if "lateral" in vals.split("|")[0] else "frontal"
    return None


def names_attribute(terms: Sequence[str], attribute: str) -> bool:
    """Whether any positive term (a predicate or concept name) names the planted ``attribute``."""
    fam = attribute_family(attribute)
    if fam is None:
        return False
    pat = re.compile(ATTRIBUTE_PATTERNS[fam], re.IGNORECASE)
    return any(pat.search(t) and not _NEGATIVE_FORM.search(t.lower()) for t in terms if t)


def cohort_predicates(df: pd.DataFrame, metadata_columns: Sequence[str]) -> pd.DataFrame:
    """Predicates of every case (no labels): concepts, open-vocabulary n-grams, metadata."""
    from medaudit.audit.concepts import extract_concepts, ngram_features
    from medaudit.audit.predicates import build_predicates

    reports = df["report"].fillna("").astype(str) if "report" in df else pd.Series([""] * len(df))
    concepts = extract_concepts(reports.reset_index(drop=True))
    meta_cols = [c for c in metadata_columns if c in df.columns]
    meta = df[meta_cols].reset_index(drop=True) if meta_cols else None
    grams = ngram_features(reports.tolist())
    grams = pd.DataFrame(np.asarray(grams.to_numpy(dtype=bool)), columns=grams.columns)
    pred = build_predicates(concepts, meta, extra=grams)
    return pred.astype(bool)


def run_predicates(cohort_pred: pd.DataFrame, idx: np.ndarray, y: np.ndarray) -> pd.DataFrame:
    """A run's predicate table: the test rows of ``cohort_pred`` plus ``label = 0/1``; constants dropped."""
    p = cohort_pred.iloc[np.asarray(idx)].reset_index(drop=True)
    y = np.asarray(y).astype(int)
    p = p.assign(**{"label = 0": y == 0, "label = 1": y == 1})
    counts = p.sum(axis=0).to_numpy()
    return p.loc[:, (counts > 0) & (counts < len(p))]


def fit_rules(
    pred: pd.DataFrame, y: np.ndarray, probs: np.ndarray, n_slices: int
) -> tuple[np.ndarray, list[str]]:
    """Fit the rule slicer; (n, n_slices) 0/1 memberships (zero columns when fewer slices) and rule texts."""
    from medaudit.audit.slicers.rules import RuleSlicer

    rs = RuleSlicer(n_slices=n_slices).fit(pred, y, probs)
    got = rs.predict_proba(pred, y, probs)
    out = np.zeros((len(pred), n_slices), dtype=np.float64)
    out[:, : got.shape[1]] = got
    texts = list(rs.rule_text_) + [""] * (n_slices - len(rs.rule_text_))
    return out, texts


def _log_p(members: np.ndarray, errors: np.ndarray) -> float:
    from medaudit.audit.slicers.rules import rule_log_pvalues

    m = members.astype(bool)
    if not m.any():
        return 0.0
    return float(
        rule_log_pvalues(np.array([errors[m].sum()]), np.array([m.sum()]), len(m), int(errors.sum()))[0]
    )


def merge_ranked(
    blocks: Sequence[np.ndarray], texts: Sequence[Sequence[str]], errors: np.ndarray, max_jaccard: float = 0.5
) -> tuple[np.ndarray, list[str]]:
    """Rank the slices of several slicers together by the binomial p-value of their members' errors;
    drop a slice whose members overlap a better-ranked one's at Jaccard > ``max_jaccard``."""
    cols, names = [], []
    for b, t in zip(blocks, texts, strict=True):
        for j in range(b.shape[1]):
            if (b[:, j] > 0.5).any():
                cols.append(b[:, j])
                names.append(t[j] if j < len(t) else "")
    order = sorted(range(len(cols)), key=lambda j: _log_p(cols[j] > 0.5, errors))
    kept: list[int] = []
    for j in order:
        mj = cols[j] > 0.5
        if all(
            ((mj & (cols[i] > 0.5)).sum() / max((mj | (cols[i] > 0.5)).sum(), 1)) <= max_jaccard for i in kept
        ):
            kept.append(j)
    if not kept:
        return np.zeros((len(errors), 1)), [""]
    return np.stack([cols[j] for j in kept], axis=1), [names[j] for j in kept]


def top_concept(pred: pd.DataFrame, members: np.ndarray, min_members: int = 3) -> str:
    """The ``report mentions …`` predicate most enriched among ``members`` (smoothed log odds ratio)."""
    cols = [c for c in pred.columns if str(c).startswith("report mentions ")]
    m = np.asarray(members, dtype=bool)
    if not cols or m.sum() == 0 or m.all():
        return ""
    x = pred[cols].to_numpy(dtype=bool)
    a, b = x[m].sum(0) + 0.5, (~x[m]).sum(0) + 0.5
    c, d = x[~m].sum(0) + 0.5, (~x[~m]).sum(0) + 0.5
    lor = np.log(a * d / (b * c))
    lor[x[m].sum(0) < min(min_members, m.sum())] = -np.inf
    j = int(np.argmax(lor))
    return str(cols[j]) if np.isfinite(lor[j]) and lor[j] > 0 else ""


def slice_terms(pred: pd.DataFrame, members: np.ndarray, rule_text: str = "") -> dict[str, Any]:
    """The top slice's rule (its own, else its best-matching rule) and its most enriched concept."""
    from medaudit.audit.slicers.rules import RULE_JOIN, best_rule

    m = np.asarray(members, dtype=bool)
    rule = rule_text
    if not rule and m.any():
        br = best_rule(pred, m)
        rule = br["text"] if br else ""
    return {
        "rule": rule,
        "concept": top_concept(pred, m),
        "terms": [*rule.split(RULE_JOIN), top_concept(pred, m)],
    }
