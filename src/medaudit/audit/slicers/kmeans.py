"""k-means baseline slicer: cluster the misclassified cases.

1. PCA (scikit-learn) fitted on all cases, as in the mixture slicer.
2. The error cases are those whose predicted class (argmax of the class probabilities; 0.5
   threshold in the binary case) differs from the true class.
3. k-means with ``n_slices`` clusters on the PCA'd error cases (``MiniBatchKMeans`` above
   ``minibatch_above`` error cases).
4. Soft membership of any case ``x`` in slice ``j`` is a Gaussian kernel around the centre, scaled by
   how wrong the prediction is::

       score_j(x) = exp(-||z - c_j||^2 / (2 h_j^2)) * e(x)

   where ``h_j^2`` is the mean squared distance of cluster ``j``'s error cases to ``c_j`` and
   ``e(x) = 0.5 * sum_c |yhat_c - y_c|`` is the prediction error in [0, 1] (``|p - y|`` in the binary
   case; 0 or 1 for hard predictions). Correct cases therefore score near 0.
5. Slices are ranked by the error rate among all fitted cases whose nearest centre is ``c_j``
   (``slice_error_``), column 0 the highest.
"""

from __future__ import annotations

from typing import Self

import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.decomposition import PCA
from sklearn.utils.validation import check_is_fitted

from medaudit.errors import InputError

from .base import BaseSlicer, SlicerInputs, check_slicer_inputs

__all__ = ["KMeansErrorSlicer"]


class KMeansErrorSlicer(BaseSlicer):
    """k-means on the embeddings of misclassified cases (a baseline for the mixture slicer).

    Args:
        n_slices: number of clusters (slices).
        n_pca_components: PCA dimension (``None`` = no PCA), clipped to ``min(n, d)``.
        n_init: k-means restarts.
        max_iter: k-means iterations.
        minibatch_above: use ``MiniBatchKMeans`` when there are more error cases than this.
        random_state: seed.

    Fitted attributes:
        pca_, cluster_centers_ (n_slices, p), bandwidth_ (n_slices,), slice_error_ (n_slices,),
        slice_size_ (n_slices,) cases whose nearest centre is the slice's, n_error_cases_,
        n_classes_, n_features_in_.
    """

    def __init__(
        self,
        n_slices: int = 5,
        n_pca_components: int | None = 128,
        n_init: int = 3,
        max_iter: int = 300,
        minibatch_above: int = 100_000,
        random_state: int | None = 0,
    ) -> None:
        self.n_slices = n_slices
        self.n_pca_components = n_pca_components
        self.n_init = n_init
        self.max_iter = max_iter
        self.minibatch_above = minibatch_above
        self.random_state = random_state

    @staticmethod
    def _errors(inp: SlicerInputs) -> np.ndarray:
        """Per-case prediction error e(x) in [0, 1]."""
        return 0.5 * np.abs(inp.pred_probs - inp.targets).sum(axis=1)

    @staticmethod
    def _wrong(inp: SlicerInputs) -> np.ndarray:
        return inp.pred_probs.argmax(axis=1) != inp.targets.argmax(axis=1)

    def _project(self, emb: np.ndarray) -> np.ndarray:
        out = emb if self.pca_ is None else self.pca_.transform(emb)
        return np.asarray(out, dtype=np.float32)

    def fit(self, embeddings: np.ndarray, targets: np.ndarray, pred_probs: np.ndarray) -> Self:
        """Fit PCA on all cases and k-means on the misclassified ones."""
        if self.n_slices < 1:
            raise InputError(f"n_slices must be >= 1, got {self.n_slices}")
        inp = check_slicer_inputs(embeddings, targets, pred_probs)
        n, d = inp.embeddings.shape
        self.n_features_in_ = d
        self.n_classes_ = inp.n_classes
        wrong = self._wrong(inp)
        self.n_error_cases_ = int(wrong.sum())
        if self.n_error_cases_ < self.n_slices:
            raise InputError(
                f"only {self.n_error_cases_} misclassified cases; need at least n_slices={self.n_slices}"
            )
        if self.n_pca_components is None:
            self.pca_ = None
        else:
            self.pca_ = PCA(
                n_components=int(min(self.n_pca_components, n, d)),
                svd_solver="auto",
                random_state=self.random_state,
            ).fit(inp.embeddings)
        z_err = self._project(inp.embeddings[wrong])
        km_cls = MiniBatchKMeans if self.n_error_cases_ > self.minibatch_above else KMeans
        km = km_cls(
            n_clusters=self.n_slices,
            n_init=self.n_init,
            max_iter=self.max_iter,
            random_state=self.random_state,
        )
        km.fit(z_err)
        centres = km.cluster_centers_.astype(np.float64)
        d2_err = self._sqdist(z_err, centres)
        lab = d2_err.argmin(1)
        bw = np.array([d2_err[lab == j, j].mean() if np.any(lab == j) else 1.0 for j in range(self.n_slices)])
        # rank by the error rate among all cases whose nearest centre is c_j
        nearest = np.concatenate(
            [
                self._sqdist(self._project(inp.embeddings[s : s + 65536]), centres).argmin(1)
                for s in range(0, n, 65536)
            ]
        )
        size = np.bincount(nearest, minlength=self.n_slices)
        errs = np.bincount(nearest, weights=wrong.astype(np.float64), minlength=self.n_slices)
        rate = errs / np.maximum(size, 1)
        order = np.argsort(-rate, kind="stable")
        self.cluster_centers_ = centres[order]
        self.bandwidth_ = np.maximum(bw[order], np.finfo(np.float64).tiny)
        self.slice_error_ = rate[order]
        self.slice_size_ = size[order]
        return self

    @staticmethod
    def _sqdist(z: np.ndarray, centres: np.ndarray) -> np.ndarray:
        z = z.astype(np.float64)
        return np.maximum((z * z).sum(1)[:, None] - 2 * z @ centres.T + (centres * centres).sum(1)[None], 0.0)

    def predict_proba(
        self, embeddings: np.ndarray, targets: np.ndarray, pred_probs: np.ndarray
    ) -> np.ndarray:
        """(n, n_slices) scores ``exp(-d^2 / (2 h^2)) * e(x)``; column 0 is the highest-error slice."""
        check_is_fitted(self, "cluster_centers_")
        inp = check_slicer_inputs(embeddings, targets, pred_probs, n_classes=self.n_classes_)
        if inp.embeddings.shape[1] != self.n_features_in_:
            raise InputError(
                f"embeddings has {inp.embeddings.shape[1]} columns but the slicer was fitted on {self.n_features_in_}"
            )
        err = self._errors(inp)
        n = inp.embeddings.shape[0]
        out = np.empty((n, self.n_slices), dtype=np.float32)
        for s in range(0, n, 65536):
            d2 = self._sqdist(self._project(inp.embeddings[s : s + 65536]), self.cluster_centers_)
            out[s : s + 65536] = np.exp(-0.5 * d2 / self.bandwidth_[None]) * err[s : s + 65536, None]
        return out
