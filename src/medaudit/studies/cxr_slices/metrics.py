"""Slice-discovery metrics: precision@k (two definitions), the error-share baseline, and intervals.

Definitions follow docs/benchmark.md ("Precision@k, two definitions"):

* :func:`precision_at_k_dcbench` -- dcbench / Domino. Predicted slices are taken together with their
  complements; the one whose scores have the highest average precision for the ground-truth slice is
  chosen, and precision@k is the fraction of its k top-scored cases that are in the ground truth.
* :func:`precision_at_k_study` -- the multimodal study's code. Only slices whose majority true class is
  the target class count; for each, sum(1[attribute] x membership) over its k top members, divided by
  k; the best slice is kept.
* :func:`error_share_baseline` -- the attribute's share among all misclassified cases.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score

from medaudit.errors import InputError

__all__ = [
    "error_share_baseline",
    "precision_at_k_dcbench",
    "precision_at_k_study",
]


def _scores_2d(scores: np.ndarray) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 1:
        s = s[:, None]
    if s.ndim != 2 or s.shape[1] == 0:
        raise InputError(f"scores: expected shape (n, n_slices), got {np.shape(scores)}")
    if not np.all(np.isfinite(s)):
        row = int(np.argwhere(~np.isfinite(s))[0, 0])
        raise InputError(f"scores: non-finite value at row {row}")
    return s


def _gt_1d(gt: np.ndarray, n: int) -> np.ndarray:
    g = np.asarray(gt)
    if g.ndim != 1 or g.shape[0] != n:
        raise InputError(f"gt: expected shape ({n},) matching scores, got {g.shape}")
    return g.astype(bool)


def _top_k(col: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest values; ties broken by row order (stable)."""
    return np.argsort(-col, kind="stable")[:k]


def _check_k(k: int, n: int) -> int:
    if k < 1:
        raise InputError(f"k must be >= 1, got {k}")
    return min(int(k), n)


def precision_at_k_dcbench(scores: np.ndarray, gt: np.ndarray, k: int = 10) -> float:
    """Precision@k as in dcbench / Domino.

    Args:
        scores: (n, n_slices) membership scores in [0, 1] (or (n,) for one slice).
        gt: (n,) bool ground-truth slice membership.
        k: number of top-scored cases to inspect (clipped to n).

    Returns:
        The fraction of the k top cases of the best-matching predicted slice (by average precision,
        complements ``1 - score`` included) that belong to the ground-truth slice.
    """
    s = _scores_2d(scores)
    g = _gt_1d(gt, s.shape[0])
    if not g.any() or g.all():
        raise InputError("gt: the ground-truth slice must contain some but not all cases")
    k = _check_k(k, s.shape[0])
    cand = np.concatenate([s, 1.0 - s], axis=1)
    aps = [average_precision_score(g, cand[:, j]) for j in range(cand.shape[1])]
    best = int(np.argmax(aps))
    return float(g[_top_k(cand[:, best], k)].mean())


def _class_index(targets: np.ndarray, n: int) -> np.ndarray:
    t = np.asarray(targets)
    if t.ndim == 2:
        t = t.argmax(axis=1)
    if t.ndim != 1 or t.shape[0] != n:
        raise InputError(f"targets: expected shape ({n},) matching scores, got {np.shape(targets)}")
    return t.astype(np.int64)


def precision_at_k_study(
    scores: np.ndarray, gt: np.ndarray, targets: np.ndarray, target_class: int, k: int = 10
) -> float:
    """Precision@k as in the multimodal study's code.

    A slice's majority true class is the class with the largest membership-weighted count,
    ``argmax_c sum_i scores[i, j] * 1[targets_i == c]`` (for hard 0/1 memberships this is the plain
    majority among members). Only slices whose majority class is ``target_class`` are considered; for
    each, the k members with the highest membership give ``sum(1[gt] * membership) / k``; the best
    slice's value is returned, or 0.0 when no slice has ``target_class`` as its majority.

    Args:
        scores: (n, n_slices) membership probabilities.
        gt: (n,) bool: whether each case has the attribute of the target slice.
        targets: (n,) true class indices (or (n, C) one-hot).
        target_class: the true class of the target slice (e.g. 0 for false positives).
        k: number of top members (the study uses 10).
    """
    s = _scores_2d(scores)
    n = s.shape[0]
    g = _gt_1d(gt, n).astype(np.float64)
    t = _class_index(targets, n)
    k = _check_k(k, n)
    n_classes = max(int(t.max()) + 1, int(target_class) + 1)
    onehot = np.eye(n_classes)[t]  # (n, C)
    weighted = s.T @ onehot  # (n_slices, C)
    best = 0.0
    found = False
    for j in range(s.shape[1]):
        if int(np.argmax(weighted[j])) != int(target_class):
            continue
        found = True
        top = _top_k(s[:, j], k)
        best = max(best, float(np.sum(g[top] * s[top, j]) / k))
    return best if found else 0.0


def error_share_baseline(gt: np.ndarray, targets: np.ndarray, preds: np.ndarray) -> float:
    """The attribute's share among misclassified cases (the study's baseline).

    Args:
        gt: (n,) bool attribute / slice membership.
        targets: (n,) true class indices (or (n, C) one-hot).
        preds: (n,) predicted class indices, or (n,) probabilities of class 1 (thresholded at 0.5
            when any value is fractional), or (n, C) scores (argmax).

    Returns:
        ``mean(gt[preds != targets])``; NaN when there are no misclassified cases.
    """
    g = np.asarray(gt).astype(bool)
    n = g.shape[0]
    t = _class_index(targets, n)
    p = np.asarray(preds)
    if p.shape[0] != n:
        raise InputError(f"preds: expected {n} rows matching gt, got {p.shape[0]}")
    if p.ndim == 2:
        p = p.argmax(axis=1)
    elif np.issubdtype(p.dtype, np.floating) and np.any((p > 0) & (p < 1)):
        p = (p >= 0.5).astype(np.int64)
    wrong = p.astype(np.int64) != t
    if not wrong.any():
        return float("nan")
    return float(g[wrong].mean())
