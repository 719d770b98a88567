"""Readable boolean predicates over cases, the building blocks of rule slices.

:func:`build_predicates` turns concept codes, metadata and labels into one boolean column per
predicate, named so that a conjunction reads as a sentence:

* concepts: ``report mentions support device`` (code 1), ``report denies pleural effusion`` (-1),
  ``report is uncertain about pneumonia`` (2);
* categorical metadata (and numeric columns with few distinct values): ``view = AP``, one per value
  (the ``max_levels`` most frequent), plus ``sex is missing`` when values are missing;
* numeric metadata: one-sided thresholds at the quartiles and the 5th, 10th, 90th and 95th
  percentiles (``age < 45``, ``age >= 70``), so that a conjunction of two expresses a range and a tail
  (the oldest 5%) is one predicate;
* labels: ``label = 0`` and ``label = 1``.

Constant columns (all true or all false) are dropped; they cannot define a slice.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["build_predicates", "concept_predicates", "metadata_predicates", "predicate_group"]

_CONCEPT_STATES = ((1, "report mentions {}"), (-1, "report denies {}"), (2, "report is uncertain about {}"))


def predicate_group(name: str) -> str:
    """The family of a predicate, from its name: ``ngram`` (``report says "..."``), ``label``,
    ``concept`` (``report mentions|denies|is uncertain about ...``) or ``metadata``."""
    if name.startswith('report says "'):
        return "ngram"
    if name.startswith("label = "):
        return "label"
    if name.startswith(("report mentions ", "report denies ", "report is uncertain about ")):
        return "concept"
    return "metadata"


def _shown(text: object) -> str:
    """A column name or value as a predicate shows it: quoted (JSON) when it holds the rules' ``∧``
    (``site = "A ∧ label = 0"`` must not read as two predicates), is blank or has outer spaces."""
    t = str(text)
    return json.dumps(t, ensure_ascii=False) if ("∧" in t or not t.strip() or t != t.strip()) else t


def _fmt(x: float) -> str:
    """A threshold as its predicate names it (and as it is applied): whole numbers in full (``2011``,
    ``20110328``), from 100 up one decimal (``2011.2``, a decimal year), below that 3 significant
    digits. (Three significant digits everywhere made every cut point of a year column ``2.01e+03``:
    2010, so no rule could name a later period.)"""
    if float(x).is_integer() and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.1f}" if abs(x) >= 100 else f"{x:.3g}"


def concept_predicates(concepts: pd.DataFrame, states: Sequence[int] = (1, -1, 2)) -> dict[str, np.ndarray]:
    """Predicates ``report mentions|denies|is uncertain about <concept>`` from concept codes."""
    out: dict[str, np.ndarray] = {}
    for col in concepts.columns:
        v = concepts[col].to_numpy()
        for code, template in _CONCEPT_STATES:
            if code in states:
                out[template.format(col)] = v == code
    return out


#: Tail quantiles added to the quantile grid of every numeric column: subgroup failures often sit in
#: a tail (the oldest patients, the smallest children), which quartile cut points cannot isolate.
TAIL_QUANTILES: tuple[float, ...] = (0.05, 0.10, 0.90, 0.95)


def _numeric_predicates(
    name: str, v: np.ndarray, n_bins: int, tails: Sequence[float] = TAIL_QUANTILES
) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    finite = np.isfinite(v)
    if not finite.any():
        return out
    grid = np.union1d(np.linspace(0, 1, n_bins + 1)[1:-1], np.asarray(tails, dtype=float))
    qs = np.quantile(v[finite], grid, method="higher")
    lo = np.nanmin(v[finite])
    for q in np.unique([float(_fmt(q)) for q in qs]):  # the name's rounded value is the threshold
        if q <= lo:
            continue
        # a threshold at a tied quantile: ">= q" keeps the tie on the upper side
        out[f"{name} < {_fmt(q)}"] = finite & (v < q)
        out[f"{name} >= {_fmt(q)}"] = finite & (v >= q)
    if not finite.all():
        out[f"{name} is missing"] = ~finite
    return out


def metadata_predicates(
    metadata: pd.DataFrame, n_bins: int = 4, max_levels: int = 20, numeric_min_unique: int = 6
) -> dict[str, np.ndarray]:
    """Predicates from metadata: ``col = value`` for categorical columns, quantile thresholds for
    numeric ones (``n_bins`` quantile bins give ``n_bins - 1`` cut points, plus the
    :data:`TAIL_QUANTILES`, each as ``<`` and ``>=``)."""
    out: dict[str, np.ndarray] = {}
    for col in metadata.columns:
        s = metadata[col]
        numeric = (
            pd.api.types.is_numeric_dtype(s)
            and not pd.api.types.is_bool_dtype(s)
            and s.nunique(dropna=True) >= numeric_min_unique
        )
        if numeric:
            out.update(
                _numeric_predicates(_shown(col), pd.to_numeric(s, errors="coerce").to_numpy(float), n_bins)
            )
            continue
        missing = s.isna().to_numpy()
        levels = s[~missing].map(str)
        counts = levels.value_counts()
        top = sorted(counts.index[:max_levels], key=lambda lv: (-counts[lv], lv))
        lv_arr = s.map(lambda x: None if pd.isna(x) else str(x)).to_numpy(dtype=object)
        for lv in top:
            out[f"{_shown(col)} = {_shown(lv)}"] = lv_arr == lv
        if missing.any():
            out[f"{_shown(col)} is missing"] = missing
    return out


def build_predicates(
    concepts: pd.DataFrame | None = None,
    metadata: pd.DataFrame | None = None,
    label: np.ndarray | Sequence[int] | None = None,
    *,
    extra: pd.DataFrame | None = None,
    n_bins: int = 4,
    max_levels: int = 20,
    concept_states: Sequence[int] = (1, -1, 2),
) -> pd.DataFrame:
    """One boolean column per readable predicate (see the module docstring for the names).

    Args:
        concepts: concept codes from :func:`medaudit.audit.concepts.extract_concepts`.
        metadata: metadata columns (categorical values, numeric quantile thresholds).
        label: binary ground-truth labels, giving ``label = 0`` / ``label = 1``.
        extra: further boolean columns appended as they are (e.g. open-vocabulary n-grams from
            :func:`medaudit.audit.concepts.ngram_features`).
        n_bins: quantile bins per numeric column.
        max_levels: most frequent values kept per categorical column.
        concept_states: which concept codes become predicates (1 mentions, -1 denies, 2 uncertain).

    Returns:
        (n, p) boolean DataFrame with a RangeIndex; constant columns are dropped.
    """
    cols: dict[str, np.ndarray] = {}
    n = None
    for part in (concepts, metadata, extra):
        if part is not None:
            n = len(part) if n is None else n
            if len(part) != n:
                raise ValueError("concepts, metadata, extra and label must have the same number of rows")
    if concepts is not None:
        cols.update(concept_predicates(concepts, concept_states))
    if metadata is not None:
        cols.update(metadata_predicates(metadata, n_bins=n_bins, max_levels=max_levels))
    if label is not None:
        y = np.asarray(label).astype(int).ravel()
        if n is not None and len(y) != n:
            raise ValueError("label must have one entry per row")
        for v in np.unique(y):
            name = f"label = {int(v)}"
            if name in cols:
                raise ValueError(
                    f"a metadata column named 'label' would hide the ground-truth predicate {name!r}"
                )
            cols[name] = y == v
    if extra is not None:
        for c in extra.columns:
            cols.setdefault(str(c), np.asarray(extra[c].to_numpy(dtype=bool)))
    keep = {k: np.asarray(v, dtype=bool) for k, v in cols.items() if 0 < np.count_nonzero(v) < len(v)}
    if not keep:
        return pd.DataFrame(index=pd.RangeIndex(n or (0 if label is None else len(label))))
    return pd.DataFrame(keep)
