"""Scoring one slicer fit: fusing a variant's embeddings, precision@k of the slice scores, each modality's
share of the fused variance and of the slice assignment (eta²), and the explanation hit."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from medaudit.studies.cxr_slices import scenarios as sc
from medaudit.studies.cxr_slices.bench_config import KS


def modality_eta2(assign: np.ndarray, blocks: dict[str, np.ndarray]) -> dict[str, float]:
    """Share of each modality's (standardised) variance explained by the hard slice assignment.

    ``eta² = trace(between-slice scatter) / trace(total scatter)`` of the modality's z-scored embedding. A
    clustering driven by one modality separates that modality's space (high eta²) and not the others.
    """
    out = {}
    labels = np.unique(assign)
    for m, x in blocks.items():
        x = np.asarray(x, dtype=np.float64)
        sd = x.std(axis=0)
        keep = sd > 1e-12
        if not keep.any():
            out[m] = float("nan")
            continue
        z = (x[:, keep] - x[:, keep].mean(axis=0)) / sd[keep]
        total = float((z**2).sum())
        between = sum(
            float((assign == g).sum()) * float((z[assign == g].mean(axis=0) ** 2).sum()) for g in labels
        )
        out[m] = between / total if total > 0 else float("nan")
    return out


def _score_rows(
    scores: np.ndarray,
    scenario: sc.Scenario,
    probs: np.ndarray,
) -> dict[str, float]:
    from medaudit.studies.cxr_slices import metrics

    y = scenario.test_labels
    row: dict[str, float] = {}
    for k in KS:
        kk = min(k, len(y))
        row[f"p{k}_study"] = metrics.precision_at_k_study(
            scores, scenario.test_attribute, y, scenario.target_class, kk
        )
        row[f"p{k}_dcbench"] = metrics.precision_at_k_dcbench(scores, scenario.test_slice, kk)
    return row


def _variance_shares(
    blocks: dict[str, np.ndarray], fused: np.ndarray, method: str, dim: int, seed: int
) -> dict[str, float]:
    """Each modality's share of the total variance of the fused matrix (what PCA and the mixture see)."""
    from medaudit.audit.fusion import block_total_variance

    if len(blocks) == 1:
        return {next(iter(blocks)): 1.0}
    widths = [_fuse({m: b}, method, dim, seed).shape[1] if method == "concat" else
              np.asarray(_fuse_single_balanced(b, dim, seed)).shape[1] for m, b in blocks.items()]  # fmt: skip
    if sum(widths) != fused.shape[1]:
        return {}
    var = np.asarray(block_total_variance(fused, widths), dtype=np.float64)
    tot = var.sum()
    return {m: float(v / tot) if tot > 0 else float("nan") for m, v in zip(blocks, var, strict=True)}


def _fuse_single_balanced(x: np.ndarray, dim: int, seed: int) -> np.ndarray:
    from medaudit.audit.fusion import fuse

    return fuse({"x": x}, method="balanced", dim=dim, random_state=seed)


def _fuse(blocks: dict[str, np.ndarray], method: str, dim: int, seed: int) -> np.ndarray:
    from medaudit.audit.fusion import fuse

    if len(blocks) == 1:  # fusion is moot for one modality: its embedding as is
        return np.asarray(next(iter(blocks.values())), dtype=np.float32)
    return np.asarray(fuse(blocks, method=method, dim=dim, random_state=seed), dtype=np.float32)


def _explanation_hit(
    pred_run: tuple[pd.DataFrame, pd.DataFrame | None] | None,
    scores: np.ndarray | None,
    rule: list[str] | None,
    scen: sc.Scenario,
) -> dict[str, Any]:
    """Whether the top-ranked slice's rule (own or best-matching) or top concept names the attribute."""
    if pred_run is None or scores is None or scores.shape[1] == 0:
        return {}
    from medaudit.studies.cxr_slices.bench_rules import names_attribute, slice_terms

    members = scores[:, 0] > 0.5
    if not members.any():  # a soft slice with no member above 0.5: its 10 highest-scoring cases
        members = np.zeros(len(scores), dtype=bool)
        members[np.argsort(-scores[:, 0], kind="stable")[:10]] = True
    t = slice_terms(pred_run[0], pred_run[1], members, rule)
    attr = str(scen.metadata.get("attribute", ""))
    return {
        "hit": float(names_attribute(t["terms"], attr)),
        "top_rule": t["rule"],
        "top_concept": t["concept"],
    }
