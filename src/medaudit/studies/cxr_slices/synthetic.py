"""Simulated audit data with a planted error slice, for tests and benchmarks of the slicers.

The embeddings are a mixture of Gaussian blobs living in a random low-dimensional subspace of
``R^d`` plus isotropic noise. One blob is the *planted slice*: inside it the classifier is wrong
much more often (mostly false positives), outside it the classifier is accurate. A good slicer must
rank that blob first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["PlantedSliceData", "make_planted_slice_data"]


@dataclass
class PlantedSliceData:
    """Arrays of one simulated audit.

    Attributes:
        embeddings: (n, d) float32 case embeddings (a ``np.memmap`` when written to disk).
        targets: (n,) int64 true binary labels.
        pred_probs: (n,) float32 predicted probability of class 1.
        in_slice: (n,) bool ground-truth membership of the planted slice.
    """

    embeddings: np.ndarray
    targets: np.ndarray
    pred_probs: np.ndarray
    in_slice: np.ndarray


def make_planted_slice_data(
    n: int = 2000,
    d: int = 64,
    *,
    n_clusters: int = 8,
    latent_dim: int = 16,
    slice_frac: float = 0.08,
    slice_error_rate: float = 0.8,
    base_error_rate: float = 0.05,
    separation: float = 4.0,
    noise: float = 1.0,
    random_state: int = 0,
    out_path: str | Path | None = None,
    chunk_size: int = 65536,
) -> PlantedSliceData:
    """Simulate ``n`` cases whose classifier errors concentrate in one planted cluster.

    Args:
        n: number of cases.
        d: embedding dimension.
        n_clusters: number of Gaussian blobs; blob 0 is the planted slice.
        latent_dim: dimension of the subspace that holds the blob centres.
        slice_frac: fraction of cases in the planted slice.
        slice_error_rate: probability that a case inside the slice is misclassified; the errors
            inside the slice are false positives (negatives predicted positive), the study's
            "spurious correlation" pattern, so all slice cases are negatives with the attribute.
        base_error_rate: misclassification probability outside the slice.
        separation: distance scale between blob centres (in units of the noise std).
        noise: standard deviation of the isotropic embedding noise.
        random_state: seed; the same seed gives the same arrays.
        out_path: if given, the embeddings are written chunk by chunk into this ``.npy`` file
            (memory-mapped), so 1M x 512 does not need to sit in memory twice.
        chunk_size: rows generated per chunk.
    """
    if n < n_clusters or d < 1 or latent_dim < 1:
        raise ValueError("need n >= n_clusters, d >= 1 and latent_dim >= 1")
    rng = np.random.default_rng(random_state)
    k = min(latent_dim, d)
    basis, _ = np.linalg.qr(rng.standard_normal((d, k)))  # (d, k) orthonormal columns
    basis = basis.T.astype(np.float32)  # (k, d)
    centres = (rng.standard_normal((n_clusters, k)) * separation).astype(np.float32)
    cluster, targets, pred_probs = _planted_labels(
        rng, n, n_clusters, slice_frac, slice_error_rate, base_error_rate
    )
    emb = _open_embeddings(out_path, n, d)
    _fill_embeddings(emb, rng, centres, cluster, basis, noise, chunk_size)
    if isinstance(emb, np.memmap):  # written to out_path
        emb.flush()
    return PlantedSliceData(embeddings=emb, targets=targets, pred_probs=pred_probs, in_slice=cluster == 0)


def _planted_labels(
    rng: np.random.Generator,
    n: int,
    n_clusters: int,
    slice_frac: float,
    slice_error_rate: float,
    base_error_rate: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw each case's blob (blob 0, the slice, with share ``slice_frac``), its true label (negative
    inside the slice) and the classifier's predicted probability; returns ``(cluster, targets, pred_probs)``."""
    other = (1.0 - slice_frac) / (n_clusters - 1)
    cluster = rng.choice(n_clusters, size=n, p=[slice_frac] + [other] * (n_clusters - 1))
    in_slice = cluster == 0
    targets = (rng.random(n) < 0.5).astype(np.int64)
    # the planted slice holds negatives only (e.g. negatives with a support device)
    targets[in_slice] = 0
    err_p = np.where(in_slice, slice_error_rate, base_error_rate)
    wrong = rng.random(n) < err_p
    pred_label = np.where(wrong, 1 - targets, targets)
    conf = rng.beta(8.0, 2.0, size=n)  # confidence in the predicted label, mostly 0.6-0.95
    pred_probs = np.where(pred_label == 1, conf, 1.0 - conf).astype(np.float32)
    return cluster, targets, pred_probs


def _open_embeddings(out_path: str | Path | None, n: int, d: int) -> np.ndarray:
    """An empty ``(n, d)`` float32 array: in memory, or a new ``.npy`` memmap at ``out_path``."""
    if out_path is None:
        return np.empty((n, d), dtype=np.float32)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    return np.lib.format.open_memmap(out_path, mode="w+", dtype=np.float32, shape=(n, d))


def _fill_embeddings(
    emb: np.ndarray,
    rng: np.random.Generator,
    centres: np.ndarray,
    cluster: np.ndarray,
    basis: np.ndarray,
    noise: float,
    chunk_size: int,
) -> None:
    """Write each case's embedding into ``emb`` chunk by chunk: its blob's centre (``centres[cluster]``)
    plus unit latent noise, lifted by ``basis`` (k, d), plus isotropic noise of std ``noise``."""
    (n, d), k = emb.shape, centres.shape[1]
    for start in range(0, n, chunk_size):
        stop = min(n, start + chunk_size)
        z = centres[cluster[start:stop]] + rng.standard_normal((stop - start, k), dtype=np.float32)
        block = z @ basis
        block += rng.standard_normal((stop - start, d), dtype=np.float32) * np.float32(noise)
        emb[start:stop] = block
