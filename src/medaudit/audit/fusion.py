"""Fuse per-modality embeddings into one matrix for the slicer.

``concat`` is the multimodal study's plain concatenation: a 1280-d image embedding then outweighs a
20-d metadata one simply by width and scale. ``balanced`` gives every modality the same say: each block
is standardised, PCA-reduced to ``min(dim, width)``, scaled to unit total variance and multiplied by
``sqrt(weight)``, so block ``m`` contributes exactly ``weight[m]`` to the total variance.
"""

from __future__ import annotations

from itertools import combinations
from typing import Literal

import numpy as np

from medaudit.audit.config import MODALITIES
from medaudit.errors import InputError

#: The 7 non-empty subsets of the three modalities, singles first, then pairs, then all three.
MODALITY_VARIANTS: tuple[tuple[str, ...], ...] = tuple(
    combo for r in range(1, len(MODALITIES) + 1) for combo in combinations(MODALITIES, r)
)

FusionMethod = Literal["concat", "balanced"]


def _validate(embeddings: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if not isinstance(embeddings, dict) or not embeddings:
        raise InputError("fuse: expected a non-empty dict of modality -> (n, d) embeddings")
    out: dict[str, np.ndarray] = {}
    n: int | None = None
    for name, arr in embeddings.items():
        a = np.asarray(arr, dtype=np.float64)
        if a.ndim == 1:
            a = a[:, None]
        if a.ndim != 2:
            raise InputError(f"fuse: embedding {name!r} has shape {a.shape}, expected (n, d)")
        if n is None:
            n = a.shape[0]
        elif a.shape[0] != n:
            raise InputError(f"fuse: embedding {name!r} has {a.shape[0]} rows, expected {n}")
        if not np.isfinite(a).all():
            row = int(np.argmax(~np.isfinite(a).all(axis=1)))
            raise InputError(f"fuse: embedding {name!r} has non-finite values in row {row}")
        out[name] = a
    return out


def _weights(names: list[str], weights: dict[str, float] | None) -> dict[str, float]:
    w = {k: 1.0 for k in names}
    if weights:
        for k, v in weights.items():
            if k not in w:
                raise InputError(f"fuse: weight given for {k!r}, which is not among the embeddings {names}")
            if not np.isfinite(v) or v < 0:
                raise InputError(f"fuse: weight for {k!r} must be a non-negative number, got {v}")
            w[k] = float(v)
    return w


def fuse(
    embeddings: dict[str, np.ndarray],
    method: FusionMethod = "concat",
    weights: dict[str, float] | None = None,
    dim: int = 64,
    random_state: int = 0,
) -> np.ndarray:
    """Fuse modality embeddings (blocks in the dict's order) into one ``(n, D)`` float32 matrix.

    Args:
        embeddings: modality name -> ``(n, d_m)`` array (same ``n`` for all).
        method: ``"concat"`` (plain concatenation, as in the study; with ``weights`` each block is also
            multiplied by ``sqrt(weight)``) or ``"balanced"`` (see module docstring).
        weights: per-modality weights (default 1 each); names must be keys of ``embeddings``.
        dim: balanced only: PCA components kept per modality (at most its width and ``n``).
        random_state: seed of the randomized PCA solver (balanced only).

    Returns:
        float32 array; for ``balanced`` each block has total variance equal to its weight.
    """
    blocks = _validate(embeddings)
    names = list(blocks)
    w = _weights(names, weights)
    if method == "concat":
        parts = [blocks[k] * np.sqrt(w[k]) if weights else blocks[k] for k in names]
        return np.concatenate(parts, axis=1).astype(np.float32)
    if method != "balanced":
        raise InputError(f"fuse: unknown method {method!r} (expected 'concat' or 'balanced')")
    if dim < 1:
        raise InputError(f"fuse: dim must be positive, got {dim}")
    return np.concatenate(
        [_balanced_block(blocks[k], w[k], dim, random_state) for k in names], axis=1
    ).astype(np.float32)


def _balanced_block(x: np.ndarray, weight: float, dim: int, random_state: int) -> np.ndarray:
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    n, d = x.shape
    z = StandardScaler().fit_transform(x)  # constant columns stay 0
    k = min(dim, d, n)
    if n >= 2 and k < d:
        z = PCA(n_components=k, svd_solver="auto", random_state=random_state).fit_transform(z)
    z = z - z.mean(axis=0, keepdims=True)
    total_var = float((z**2).sum() / max(n, 1))  # sum of column variances (ddof=0) = ||Z||_F^2 / n
    if total_var <= 0:
        return np.zeros((n, z.shape[1]))
    return z / np.sqrt(total_var) * np.sqrt(weight)


def block_total_variance(fused: np.ndarray, widths: list[int]) -> list[float]:
    """Total variance (sum of column variances, ddof=0) of each consecutive block of ``fused``."""
    out, start = [], 0
    for wdt in widths:
        b = np.asarray(fused[:, start : start + wdt], dtype=np.float64)
        out.append(float(b.var(axis=0).sum()))
        start += wdt
    return out
