"""The slicer interface and the shared validation of (embeddings, targets, pred_probs)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Self

import numpy as np
from sklearn.base import BaseEstimator

from medaudit.errors import InputError

__all__ = ["BaseSlicer", "SlicerInputs", "check_slicer_inputs"]

_CHECK_CHUNK = 65536


class SlicerInputs:
    """Validated slicer inputs.

    Attributes:
        embeddings: (n, d) floating array (the caller's array when it already was float; never copied
            just to validate, so memory-mapped arrays stay on disk).
        targets: (n, C) float32 one-hot (or soft) labels.
        pred_probs: (n, C) float32 predicted class probabilities.
    """

    def __init__(self, embeddings: np.ndarray, targets: np.ndarray, pred_probs: np.ndarray) -> None:
        self.embeddings = embeddings
        self.targets = targets
        self.pred_probs = pred_probs

    @property
    def n_classes(self) -> int:
        return int(self.targets.shape[1])


def _first_bad_row(mask_bad: np.ndarray) -> int:
    return int(np.argwhere(mask_bad.reshape(mask_bad.shape[0], -1).any(axis=1))[0, 0])


def _check_finite(name: str, arr: np.ndarray) -> None:
    for start in range(0, arr.shape[0], _CHECK_CHUNK):
        block = np.asarray(arr[start : start + _CHECK_CHUNK])
        ok = np.isfinite(block)
        if not ok.all():
            raise InputError(f"{name}: NaN or infinite value at row {start + _first_bad_row(~ok)}")


def _check_unit_interval(name: str, arr: np.ndarray) -> None:
    bad = (arr < 0) | (arr > 1)
    if bad.any():
        row = _first_bad_row(bad)
        raise InputError(f"{name}: values must lie in [0, 1]; row {row} does not")


def check_slicer_inputs(
    embeddings: np.ndarray,
    targets: np.ndarray,
    pred_probs: np.ndarray,
    n_classes: int | None = None,
) -> SlicerInputs:
    """Validate and normalise slicer inputs.

    Args:
        embeddings: (n, d) case embeddings.
        targets: (n,) integer class labels (binary: 0/1) or (n, C) one-hot labels.
        pred_probs: (n,) probability of class 1 (binary; hard 0/1 predictions are fine) or (n, C)
            class probabilities (or one-hot hard predictions).
        n_classes: the number of classes seen at fit time (checked when given).

    Raises:
        InputError: on wrong shapes, mismatched row counts, NaN/inf values, negative or fractional
            labels, or probabilities outside [0, 1]. The message names the argument and the row.
    """
    emb, t, p = _validated_arrays(embeddings, targets, pred_probs)
    c = _class_count(t, p, n_classes)
    return SlicerInputs(emb, _targets_matrix(t, c), _probs_matrix(p, c))


def _validated_arrays(
    embeddings: np.ndarray, targets: np.ndarray, pred_probs: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(embeddings as a floating array, targets and pred_probs as float64) after the shape, row-count,
    finiteness and probability-range checks."""
    emb = embeddings if isinstance(embeddings, np.ndarray) else np.asarray(embeddings)
    if emb.ndim != 2:
        raise InputError(f"embeddings: expected a 2-D array (n, d), got shape {emb.shape}")
    if not np.issubdtype(emb.dtype, np.floating):
        emb = emb.astype(np.float32)
    n = emb.shape[0]
    t = np.asarray(targets)
    p = np.asarray(pred_probs)
    for name, arr in (("targets", t), ("pred_probs", p)):
        if arr.ndim not in (1, 2):
            raise InputError(f"{name}: expected shape (n,) or (n, C), got {arr.shape}")
        if arr.shape[0] != n:
            raise InputError(f"{name} has {arr.shape[0]} rows but embeddings has {n} rows")
    if n == 0:
        raise InputError("embeddings: no rows")
    _check_finite("embeddings", emb)
    t = t.astype(np.float64)
    p = p.astype(np.float64)
    _check_finite("targets", t)
    _check_finite("pred_probs", p)
    _check_unit_interval("pred_probs", p)
    return emb, t, p


def _target_classes(t: np.ndarray) -> int:
    """Classes the targets imply: max label + 1 for (n,) integer labels, the columns of (n, C) ones."""
    if t.ndim == 1:
        bad = (t < 0) | (t != np.round(t))
        if bad.any():
            raise InputError(
                f"targets: labels must be non-negative integers; row {_first_bad_row(bad)} is {t[bad][0]}"
            )
        return int(t.max()) + 1
    _check_unit_interval("targets", t)
    return t.shape[1]


def _class_count(t: np.ndarray, p: np.ndarray, n_classes: int | None) -> int:
    """The number of classes C of the inputs (at least 2; ``n_classes`` when given), after checking that
    targets and pred_probs agree on it."""
    n_pred = 2 if p.ndim == 1 else p.shape[1]
    n_target = _target_classes(t)
    c = max(n_target, n_pred, 2)
    if p.ndim == 1 and n_target > 2:
        raise InputError(
            f"pred_probs is 1-D (binary) but targets has {n_target} classes; pass (n, C) probabilities"
        )
    if p.ndim == 2 and n_target > n_pred:
        raise InputError(f"targets has {n_target} classes but pred_probs has {n_pred} columns")
    if t.ndim == 2 and t.shape[1] != n_pred:
        raise InputError(f"targets has {t.shape[1]} columns but pred_probs has {n_pred} columns")
    if n_classes is not None:
        if c > n_classes:
            raise InputError(f"inputs have {c} classes but the slicer was fitted on {n_classes}")
        c = n_classes
    return c


def _targets_matrix(t: np.ndarray, c: int) -> np.ndarray:
    """(n, c) float32 targets: one-hot for (n,) labels, zero-padded columns for (n, C) ones."""
    n = t.shape[0]
    y = np.zeros((n, c), dtype=np.float32)
    if t.ndim == 1:
        y[np.arange(n), t.astype(np.int64)] = 1.0
    else:
        y[:, : t.shape[1]] = t
    return y


def _probs_matrix(p: np.ndarray, c: int) -> np.ndarray:
    """(n, c) float32 probabilities: (1 - p, p) for (n,) binary ones, zero-padded columns for (n, C)."""
    yh = np.zeros((p.shape[0], c), dtype=np.float32)
    if p.ndim == 1:
        yh[:, 0] = 1.0 - p
        yh[:, 1] = p
    else:
        yh[:, : p.shape[1]] = p
    return yh


class BaseSlicer(BaseEstimator, ABC):
    """A slice discovery method with the scikit-learn estimator contract.

    ``__init__`` stores parameters only; ``fit`` learns attributes ending in ``_``. Subclasses
    implement :meth:`fit` and :meth:`predict_proba`; column 0 of the scores is always the slice with
    the highest error.
    """

    n_slices: int

    @abstractmethod
    def fit(self, embeddings: np.ndarray, targets: np.ndarray, pred_probs: np.ndarray) -> Self:
        """Discover slices on (n, d) embeddings, (n,) or (n, C) targets and predictions."""

    @abstractmethod
    def predict_proba(
        self, embeddings: np.ndarray, targets: np.ndarray, pred_probs: np.ndarray
    ) -> np.ndarray:
        """(n, n_slices) membership scores in [0, 1], column 0 the highest-error slice."""

    def predict(self, embeddings: np.ndarray, targets: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
        """(n, n_slices) hard 0/1 membership: each case joins the slice where its score is highest,
        provided that score is at least 0.5; other cases belong to no slice."""
        probs = self.predict_proba(embeddings, targets, pred_probs)
        out = np.zeros(probs.shape, dtype=np.int32)
        best = probs.argmax(axis=1)
        rows = np.flatnonzero(probs[np.arange(len(best)), best] >= 0.5)
        out[rows, best[rows]] = 1
        return out

    def fit_predict_proba(
        self, embeddings: np.ndarray, targets: np.ndarray, pred_probs: np.ndarray
    ) -> np.ndarray:
        """Fit, then return the membership scores of the same cases."""
        return self.fit(embeddings, targets, pred_probs).predict_proba(embeddings, targets, pred_probs)
