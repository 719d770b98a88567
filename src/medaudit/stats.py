"""The statistics every part of medaudit shares: one Wilson interval, one bootstrap, one BH correction.

One contract for all three:

* inputs are plain numbers or array-likes; nothing here reads files or raises :class:`InputError`
  for data that is merely degenerate;
* degenerate input gives NaN rather than an exception (an empty sample has no mean, no interval);
* intervals are two-sided at level ``1 - alpha`` and always contain their point estimate.

:func:`wilson_ci` and :func:`bh_qvalues` are thin wrappers of ``scipy.stats`` (``binomtest(...).
proportion_ci(method="wilson")`` and ``false_discovery_control``). :func:`bootstrap_ci` is a percentile
bootstrap of the mean drawn with ``numpy.random.default_rng(seed)``; it is kept rather than
``scipy.stats.bootstrap`` because its draws are the ones every earlier result was computed with, and it
bounds memory for long vectors.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

__all__ = ["bh_qvalues", "bootstrap_ci", "wilson_ci"]


def wilson_ci(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``k / n`` (e.g. a slice's error rate).

    Returns ``(nan, nan)`` when ``n == 0``. The bounds are exactly 0 at ``k == 0`` and 1 at ``k == n``,
    and the interval always contains ``k / n``.
    """
    k, n = int(k), int(n)
    if n <= 0:
        return float("nan"), float("nan")
    if not 0 <= k <= n:
        raise ValueError(f"wilson_ci: need 0 <= k <= n, got k={k}, n={n}")
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=1 - alpha, method="wilson")
    p = k / n
    lo = 0.0 if k == 0 else min(float(ci.low), p)
    hi = 1.0 if k == n else max(float(ci.high), p)
    return lo, hi


def bootstrap_ci(
    values: Sequence[float] | np.ndarray, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float, float]:
    """Mean and percentile bootstrap interval of the mean: ``(mean, lo, hi)``.

    Non-finite values are dropped (an undefined metric is not a zero). No finite value gives
    ``(nan, nan, nan)``; one value gives a collapsed interval (no spread can be estimated from one run).
    Resamples are drawn in blocks so the index matrix stays under about 80 MB.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    if x.size == 1:
        return float(x[0]), float(x[0]), float(x[0])
    if not 0 < alpha < 1 or n_boot < 1:
        raise ValueError(f"bootstrap_ci: need 0 < alpha < 1 and n_boot >= 1, got {alpha}, {n_boot}")
    rng = np.random.default_rng(seed)
    block = max(1, 10_000_000 // x.size)
    means = np.concatenate(
        [
            x[rng.integers(0, x.size, size=(min(block, n_boot - b), x.size))].mean(axis=1)
            for b in range(0, n_boot, block)
        ]
    )
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(x.mean()), float(lo), float(hi)


def bh_qvalues(p: Sequence[float] | np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values of p-values (``scipy.stats.false_discovery_control``, method "bh")."""
    p = np.asarray(p, dtype=np.float64)
    if p.size == 0:
        return p
    return np.asarray(stats.false_discovery_control(np.clip(p, 0.0, 1.0), method="bh"), dtype=float)
