"""The summaries slices.json is made of: one per slice (size, error rate with its Wilson interval,
composition, explanation, exemplar and member ids; docs/audit.md), the ``counts`` block (cases, errors,
per-class error rates), the concept and rule-search blocks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from medaudit.audit import explain
from medaudit.audit.config import AuditConfig
from medaudit.audit.table import CaseTable
from medaudit.stats import wilson_ci

__all__ = ["case_counts", "concept_summary", "rule_search_summary", "slice_summary"]


def _wilson(k: int, n: int) -> tuple[float | None, float | None]:
    if n <= 0:
        return None, None
    return wilson_ci(k, n)


def slice_summary(
    j: int,
    scores: np.ndarray,
    table: CaseTable,
    config: AuditConfig,
    slicer_error: float | None,
    tfidf: tuple[Any, np.ndarray] | None = None,
    slicer_score: float | None = None,
) -> dict[str, Any]:
    """The summary of slice ``j`` (column ``j`` of ``scores``): size, error rate with its Wilson interval,
    composition, explanation (report n-grams, metadata enrichment), exemplar and member ids."""
    df = table.df
    labels = df["label"].to_numpy()
    preds = df["pred"].to_numpy()
    errors = labels != preds
    ids = np.asarray(df["id"].tolist(), dtype=object)
    s = scores[:, j]
    members = s > config.membership_threshold
    member_order = [int(i) for i in explain.exemplars(s, k=len(s)) if members[i]]
    size = int(members.sum())
    n_err = int(errors[members].sum())
    soft = float(s.sum())
    basis, mask = _basis(s, members, config.n_exemplars)
    composition = _composition(labels[mask], preds[mask])
    explanation = _explanation(table, config, basis, mask, errors, composition["majority_label"], tfidf)
    return {
        "rank": j + 1,
        "name": f"slice_{j + 1}",
        "size": size,
        "soft_size": soft,
        "error_rate": (n_err / size) if size else None,
        "error_ci": list(_wilson(n_err, size)),
        "n_errors": n_err,
        "soft_error_rate": float((s * errors).sum() / soft) if soft > 0 else None,
        "slicer_error": slicer_error,
        "slicer_score": slicer_score,
        "composition": composition,
        "explanation": explanation,
        "exemplar_ids": [str(ids[i]) for i in explain.exemplars(s, k=config.n_exemplars)],
        "member_ids": [str(ids[i]) for i in member_order],
    }


def _basis(s: np.ndarray, members: np.ndarray, n_exemplars: int) -> tuple[str, np.ndarray]:
    """The cases a slice is explained from: its members, else (none) its highest-scoring cases."""
    if members.any():
        return "members", members
    mask = np.zeros(len(s), dtype=bool)
    mask[explain.exemplars(s, k=n_exemplars)] = True
    return "top_k", mask


def _composition(lab: np.ndarray, prd: np.ndarray) -> dict[str, int]:
    """Labels, predictions and confusion counts of the cases; ``majority_label``: ties (and none) -> 1."""
    composition = {
        "label_1": int((lab == 1).sum()),
        "label_0": int((lab == 0).sum()),
        "pred_1": int((prd == 1).sum()),
        "pred_0": int((prd == 0).sum()),
        "tp": int(((lab == 1) & (prd == 1)).sum()),
        "fp": int(((lab == 0) & (prd == 1)).sum()),
        "tn": int(((lab == 0) & (prd == 0)).sum()),
        "fn": int(((lab == 1) & (prd == 0)).sum()),
    }
    composition["majority_label"] = int((lab == 1).sum() >= (lab == 0).sum())
    return composition


def _explanation(
    table: CaseTable,
    config: AuditConfig,
    basis: str,
    mask: np.ndarray,
    errors: np.ndarray,
    majority: int,
    tfidf: tuple[Any, np.ndarray] | None,
) -> dict[str, Any]:
    """Report n-grams of the ``mask`` cases against a reference (correctly classified cases of the
    majority label, else all others), and metadata enrichment."""
    labels = table.df["label"].to_numpy()
    explanation: dict[str, Any] = {"basis": basis, "ngrams": [], "metadata": []}
    if tfidf is not None:
        reference = (labels == majority) & ~errors & ~mask
        ref_kind = f"correctly classified cases with label {majority}"
        if not reference.any():
            reference = ~mask
            ref_kind = "all cases outside the slice"
        explanation["reference"] = ref_kind
        ng = explain.report_ngrams(None, mask, reference, top_k=config.top_ngrams, tfidf=tfidf)
        explanation["ngrams"] = ng.to_dict(orient="records")
    if table.meta.shape[1]:
        me = explain.metadata_enrichment(table.meta, mask)
        explanation["metadata"] = me.to_dict(orient="records")
    return explanation


def concept_summary(concepts: pd.DataFrame | None, lexicon: Any) -> dict[str, Any] | None:
    if concepts is None:
        return None
    from medaudit.audit.concepts import default_lexicon

    lex = lexicon or default_lexicon()
    return {
        "lexicon": lex.name or "custom",
        "language": lex.language,
        "codes": {"1": "mentioned", "-1": "denied", "2": "uncertain", "0": "not mentioned"},
        "mentioned": {c: int((concepts[c] == 1).sum()) for c in concepts.columns},
    }


def rule_search_summary(rs: Any, predicates: pd.DataFrame | None) -> dict[str, Any] | None:
    if rs is None or predicates is None:
        return None
    return {
        "n_predicates": int(predicates.shape[1]),
        "n_rules_tested": int(rs.n_rules_tested_),
        "min_support": int(rs.min_support_),
        "max_level": int(rs.max_level),
        "alpha": float(rs.alpha),
        "levels": rs.search_stats_,
    }


def case_counts(table: CaseTable) -> dict[str, Any]:
    """The ``counts`` block of slices.json: cases, skipped rows, errors, positives."""
    n, errors = len(table), table.errors
    return {
        "cases": n,
        "skipped_rows": table.n_skipped,
        "skipped_reasons": table.skipped_reasons,
        "errors": int(errors.sum()),
        "error_rate": float(errors.mean()) if n else None,
        "positives": int(table.df["label"].sum()),
        "predicted_positives": int(table.df["pred"].sum()),
        "by_class": _class_errors(table.df["label"].to_numpy(), errors),
    }


def _class_errors(labels: np.ndarray, errors: np.ndarray) -> dict[str, dict[str, Any]]:
    """Per true class: cases, errors, error rate: the class-level failure that slices are judged
    against (a classifier missing most positives is one finding, not a slice)."""
    out: dict[str, dict[str, Any]] = {}
    for c in np.unique(labels):
        m = labels == c
        out[str(c)] = {
            "cases": int(m.sum()),
            "errors": int(errors[m].sum()),
            "error_rate": float(errors[m].mean()),
        }
    return out
