"""Rule slices in the failure-scenario benchmark: predicates, the ``rules`` / ``rules+mixture`` variants,
the ``sliceline`` peer and the explanation hit rate.

Everything here reuses the audit's own functions, so the benchmark measures what ``medaudit audit`` does:

* :func:`cohort_concepts`: report concept codes of the whole cohort, extracted once;
  :func:`run_predicates`: a run's predicate table, built from its test split as the audit builds it.
* :func:`fit_rules`: :class:`~medaudit.audit.slicers.rules.RuleSlicer` with the audit's settings.
* :func:`merge_ranked`: the audit's one ranked list of rule and embedding slices (``rules+mixture``).
* :func:`slice_terms` / :func:`names_attribute`: what the top-ranked slice says (its rule, or for an
  embedding slice its best-matching rule, plus its top concept) and whether that names the planted
  attribute (support devices, lateral or frontal view): the explanation hit rate.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "ATTRIBUTE_PATTERNS",
    "cohort_concepts",
    "fit_rules",
    "merge_ranked",
    "names_attribute",
    "run_predicates",
    "slice_terms",
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


def cohort_concepts(df: pd.DataFrame) -> pd.DataFrame:
    """Concept codes of every report of the cohort, with the audit's default qualifiers (extracted
    once; empty frame without reports)."""
    from medaudit.audit.pipeline import AuditConfig
    from medaudit.audit.rule_audit import report_concepts

    cfg = AuditConfig()
    reports = df["report"].tolist() if "report" in df else [""] * len(df)
    codes, _ = report_concepts(reports, qualified=cfg.concept_qualifiers, min_reports=cfg.rule_min_support)
    return codes.reset_index(drop=True) if codes is not None else pd.DataFrame(index=range(len(df)))


def run_predicates(
    concepts: pd.DataFrame, df: pd.DataFrame, idx: np.ndarray, y: np.ndarray, metadata_columns: Sequence[str]
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """A run's predicate table, built as the audit builds it (:func:`medaudit.audit.rule_audit.
    audit_predicates` on the test split: concepts, metadata, label, open-vocabulary n-grams), and the
    test split's concept codes."""
    from medaudit.audit.pipeline import AuditConfig
    from medaudit.audit.rule_audit import audit_predicates

    idx = np.asarray(idx)
    codes = concepts.iloc[idx].reset_index(drop=True) if concepts.shape[1] else None
    meta_cols = [c for c in metadata_columns if c in df.columns]
    meta = df.iloc[idx][meta_cols].reset_index(drop=True) if meta_cols else None
    reports = df.iloc[idx]["report"].tolist() if "report" in df else None
    cfg = AuditConfig()
    pred = audit_predicates(
        codes, meta, np.asarray(y), reports, max_ngrams=cfg.rule_ngrams, min_support=cfg.rule_min_support
    )
    return pred, codes


def fit_rules(
    pred: pd.DataFrame, y: np.ndarray, probs: np.ndarray, n_slices: int
) -> tuple[np.ndarray, list[list[str]]]:
    """The audit's rule slicer (its default search settings); (n, n_slices) membership scores as the
    audit writes them (:func:`medaudit.audit.rule_audit.member_scores`; zero columns when fewer slices
    pass the test) and each slice's rule (list of predicate names)."""
    from medaudit.audit.pipeline import AuditConfig
    from medaudit.audit.rule_audit import member_scores
    from medaudit.audit.slicers.rules import RuleSlicer

    cfg = AuditConfig()
    rs = RuleSlicer(
        n_slices=n_slices,
        max_level=cfg.rule_max_level,
        min_support=cfg.rule_min_support,
        exploratory=cfg.rule_exploratory,
    )
    rs.fit(pred, y, probs)
    got = member_scores(rs.predict_proba(pred, y, probs), y, probs, cfg.membership_threshold)
    out = np.zeros((len(pred), n_slices), dtype=np.float64)
    out[:, : got.shape[1]] = got
    return out, [list(r) for r in rs.rules_] + [[] for _ in range(n_slices - len(rs.rules_))]


def merge_ranked(
    blocks: Sequence[np.ndarray],
    rules: Sequence[Sequence[list[str]]],
    errors: np.ndarray,
    labels: np.ndarray | None = None,
) -> tuple[np.ndarray, list[list[str]]]:
    """The audit's one ranked list (``--slicer both``): every non-empty slice of every block ranked by
    the evidence of its members' errors (against the rest of their classes when ``labels`` are
    given), slices under the audit's minimum support last, overlapping ones merged at the audit's
    Jaccard threshold (:func:`medaudit.audit.rule_audit.merge_ranked`)."""
    from medaudit.audit.pipeline import AuditConfig
    from medaudit.audit.rule_audit import merge_ranked as product_merge
    from medaudit.audit.rule_audit import slice_evidence

    cols, names, readable = [], [], []
    for b, r in zip(blocks, rules, strict=True):
        for j in range(b.shape[1]):
            if (b[:, j] > 0.5).any():
                cols.append(b[:, j])
                names.append(list(r[j]) if j < len(r) else [])
                readable.append(bool(names[-1]))
    if not cols:
        return np.zeros((len(errors), 1)), [[]]
    masks = [c > 0.5 for c in cols]
    logp = [slice_evidence(m, errors, labels)["log10_p"] for m in masks]
    cfg = AuditConfig()
    order, _ = product_merge(masks, logp, cfg.merge_jaccard, readable, min_size=cfg.rule_min_support)
    return np.stack([cols[j] for j in order], axis=1), [names[j] for j in order]


def slice_terms(
    pred: pd.DataFrame, concepts: pd.DataFrame | None, members: np.ndarray, rule: list[str] | None = None
) -> dict[str, Any]:
    """What the audit says of a slice (:func:`medaudit.audit.rule_audit.describe_slice`): its rule
    (own, or best-matching for an embedding slice) and its top concept."""
    from medaudit.audit.rule_audit import describe_slice

    d = describe_slice(
        pred, concepts, np.asarray(members, dtype=bool), rule or None, "rules" if rule else "mixture"
    )
    r = d["rule"]["rule"] if d["rule"] else []
    top = d["concepts"][0] if d["concepts"] else None
    concept = f"report mentions {top['concept']}" if top and top.get("state") == "mentioned" else ""
    return {"rule": " ∧ ".join(r), "concept": concept, "terms": [*r, concept]}
