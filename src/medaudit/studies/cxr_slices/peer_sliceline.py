"""The ``sliceline`` package (0.3.0, Sagadeeva & Boehm, SIGMOD 2021) as a peer of the rule slicer.

:func:`run_sliceline` fits ``sliceline.slicefinder.Slicefinder`` on the same binary predicate table the
rule slicer sees (one column per readable predicate) and the 0/1 misclassification vector, with the
package's defaults except the number of slices and the lattice level, and returns hard memberships and
each slice's rule as text. The package treats every column as categorical, so a slice may also require a
predicate to be *false*; such a term is written ``not (<predicate>)``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from medaudit.errors import InputError

__all__ = ["SlicelineResult", "run_sliceline"]


class SlicelineResult:
    """Memberships ``scores`` (n, k) in 0/1, the rule of each slice, and the package's statistics."""

    def __init__(self, scores: np.ndarray, rules: list[str], stats: list[dict[str, float]]) -> None:
        self.scores = scores
        self.rules = rules
        self.stats = stats


def _rule_text(columns: list[str], values: np.ndarray) -> str:
    terms = []
    for col, v in zip(columns, values, strict=True):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            continue
        terms.append(col if int(v) == 1 else f"not ({col})")
    return " ∧ ".join(terms)


def run_sliceline(
    predicates: pd.DataFrame,
    errors: np.ndarray,
    k: int = 5,
    max_l: int = 3,
    min_sup: int | float = 10,
    alpha: float = 0.6,
) -> SlicelineResult:
    """Top-``k`` SliceLine slices over boolean ``predicates`` for the error vector ``errors``.

    Returns exactly ``k`` membership columns (ties beyond ``k`` dropped; missing slices as all-zero
    columns) in the package's score order.
    """
    from sliceline.slicefinder import Slicefinder

    err = np.asarray(errors, dtype=np.float64).ravel()
    if len(err) != len(predicates):
        raise InputError(f"sliceline: {len(err)} errors for {len(predicates)} predicate rows")
    n = len(err)
    scores = np.zeros((n, k), dtype=np.float64)
    if predicates.shape[1] == 0 or err.sum() == 0:
        return SlicelineResult(scores, [""] * k, [{} for _ in range(k)])
    x = np.asarray(predicates.to_numpy(dtype=bool), dtype=np.int64)
    sf = Slicefinder(alpha=alpha, k=k, max_l=max_l, min_sup=min_sup, verbose=False)
    sf.fit(x, err)
    top = np.asarray(sf.top_slices_, dtype=object)
    rules: list[str] = [""] * k
    stats: list[dict[str, float]] = [{} for _ in range(k)]
    if top.size:
        member = np.asarray(sf.transform(x), dtype=np.float64)
        m = min(k, member.shape[1], len(top))
        scores[:, :m] = member[:, :m]
        cols = [str(c) for c in predicates.columns]
        for j in range(m):
            rules[j] = _rule_text(cols, top[j])
            stats[j] = {key: float(v) for key, v in sf.top_slices_statistics_[j].items()}
    return SlicelineResult(scores, rules, stats)
