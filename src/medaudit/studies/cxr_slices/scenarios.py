"""Failure scenarios of the multimodal slice-discovery study (Liu, Bhatia & Fetit 2026).

Each builder is a pure function of a cohort case table (one row per image, the columns of
:mod:`medaudit.data.cxr.common`) and a seed. It returns a :class:`Scenario`: positional indices of a
training and a test split, the *manipulated* training labels the audited classifier is trained on, the
true test labels, the ground-truth slice mask on the test split and the target class of that slice.

The three scenarios (all parameters configurable; defaults are the study's, see ARCHITECTURE.md):

* **spurious correlation** (:func:`spurious_correlation`): the training split is drawn so that the task
  label and an attribute correlate at Pearson ``r`` (0.7). The joint 2×2 distribution is *solved* from
  the marginals and ``r`` (as dcbench's ``induce_correlation``) and each cell is sampled without
  replacement. Target slice: negatives with the attribute (the classifier's false positives).
* **rare slice** (:func:`rare_slice`): positives with the attribute are cut to ``rare_fraction`` (2%)
  of the training positives. Target slice: positives with the attribute.
* **noisy labels** (:func:`noisy_labels`): ``flip_fraction`` (30%) of the positive training labels
  that have the attribute are flipped to negative. Target slice: positives with the attribute.

Every test split holds the slice at ``slice_share`` (5%, 10% or 20%) of its cases; the rest is drawn at
random from the non-slice cases of the test pool. Train and test pools are disjoint by ``group``
(patient or study), so the frontal and lateral image of one study never straddle the split.

Attributes and labels are named by *specs* (:func:`binary_column`): ``"support_devices"`` (a label
column; positive when > 0.5), ``"view_position=LATERAL|LL"`` (value in a set, case-insensitive),
``"view_position!=LATERAL|LL"`` (value not in the set) or ``"!no_finding"`` (negation).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from medaudit.errors import InputError

#: Group columns tried, in order, when ``group="auto"``.
GROUP_CANDIDATES: tuple[str, ...] = ("patient_id", "subject_id", "study_id", "patient", "study")
#: View-position spellings of a lateral and of a frontal radiograph.
LATERAL_VIEWS = "LATERAL|LL|LAT|RL|XTABLE LATERAL|LEFT LATERAL|RIGHT LATERAL"
FRONTAL_VIEWS = "PA|AP|AP AXIAL|PA LLD|AP LLD|PA RLD|AP RLD|FRONTAL"


@dataclass(frozen=True)
class Scenario:
    """A failure scenario: manipulated training split, test split and the planted slice.

    All index arrays are positional (``df.iloc``) into the cohort table the builder was given.
    """

    name: str
    train_idx: np.ndarray
    test_idx: np.ndarray
    train_labels: np.ndarray  #: labels the classifier is trained on (manipulated), int 0/1
    train_true_labels: np.ndarray  #: the true labels of the training cases, int 0/1
    test_labels: np.ndarray  #: true labels of the test cases, int 0/1
    test_slice: np.ndarray  #: ground-truth slice mask on the test split, bool
    train_attribute: np.ndarray  #: attribute mask on the training split, bool
    test_attribute: np.ndarray  #: attribute mask on the test split, bool
    target_class: int
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def n_train(self) -> int:
        return len(self.train_idx)

    @property
    def n_test(self) -> int:
        return len(self.test_idx)

    def summary(self) -> dict[str, Any]:
        """Measured properties of the split (correlations, shares, flip counts) plus the metadata."""
        y, yt, a = self.train_labels, self.train_true_labels, self.train_attribute
        out: dict[str, Any] = {
            "scenario": self.name,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "train_prevalence": float(y.mean()) if len(y) else float("nan"),
            "train_corr_label_attr": _pearson(y, a),
            "train_pos_attr_share": float(a[yt == 1].mean()) if (yt == 1).any() else float("nan"),
            "train_flipped": int((y != yt).sum()),
            "test_slice_share": float(self.test_slice.mean()) if self.n_test else float("nan"),
            "test_prevalence": float(self.test_labels.mean()) if self.n_test else float("nan"),
        }
        out.update({k: v for k, v in self.metadata.items() if k not in out})
        return out


# --------------------------------------------------------------------------------------------------
# Column specs


def binary_column(df: pd.DataFrame, spec: str, uncertain: float = 0.0) -> np.ndarray:
    """Evaluate a column spec on ``df`` to a boolean mask (see the module docstring for the syntax).

    Label columns may hold NaN (not mentioned: negative) and ``-1`` (uncertain: ``uncertain``, 0 or 1).
    """
    spec = spec.strip()
    if not spec:
        raise InputError("empty column spec")
    if spec.startswith("!"):
        return ~binary_column(df, spec[1:], uncertain)
    for op in ("!=", "="):
        if op in spec:
            col, vals = (s.strip() for s in spec.split(op, 1))
            _require(df, col)
            wanted = {v.strip().upper() for v in vals.split("|") if v.strip()}
            got = df[col].astype("string").str.strip().str.upper().fillna("").to_numpy()
            mask = np.isin(got, list(wanted))
            return ~mask if op == "!=" else mask
    _require(df, spec)
    v = pd.to_numeric(df[spec], errors="coerce").to_numpy(dtype=float)
    v = np.where(v == -1, uncertain, v)
    return np.nan_to_num(v, nan=0.0) > 0.5


def _require(df: pd.DataFrame, col: str) -> None:
    if col not in df.columns:
        raise InputError(f"column '{col}' not in cohort table; available: {', '.join(map(str, df.columns))}")


def resolve_group(df: pd.DataFrame, group: str | None) -> np.ndarray:
    """Group key per row: the named column, the first of :data:`GROUP_CANDIDATES` for ``"auto"``, or
    the row itself when ``group`` is None or no candidate exists."""
    if group == "auto":
        group = next((c for c in GROUP_CANDIDATES if c in df.columns), None)
    if group is None:
        return np.arange(len(df)).astype(str)
    _require(df, group)
    return df[group].astype(str).to_numpy()


def split_pools(
    df: pd.DataFrame, test_fraction: float, seed: int, group: str | None = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    """Split row positions into disjoint training and test pools by group (a seeded permutation)."""
    if not 0.0 < test_fraction < 1.0:
        raise InputError(f"test_fraction={test_fraction}: must be in (0, 1)")
    groups = resolve_group(df, group)
    uniq = np.unique(groups)
    rng = np.random.default_rng([seed, 0])
    perm = rng.permutation(len(uniq))
    n_test = max(1, round(test_fraction * len(uniq)))
    test_groups = set(uniq[perm[:n_test]].tolist())
    is_test = np.fromiter((g in test_groups for g in groups), dtype=bool, count=len(groups))
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


# --------------------------------------------------------------------------------------------------
# Sampling helpers


def solve_joint(mu_y: float, mu_a: float, r: float) -> np.ndarray:
    """The 2×2 joint distribution ``p[y, a]`` with marginals ``mu_y``, ``mu_a`` and Pearson ``r``.

    For binary variables ``r = (p11 - mu_y mu_a) / sqrt(mu_y (1-mu_y) mu_a (1-mu_a))``, so ``p11`` is
    fixed by the marginals and ``r``; the other cells follow. Raises InputError when no such
    distribution exists (a cell would be negative).
    """
    for name, mu in (("label", mu_y), ("attribute", mu_a)):
        if not 0.0 < mu < 1.0:
            raise InputError(f"{name} prevalence {mu:.3f}: must be in (0, 1) to induce a correlation")
    p11 = r * math.sqrt(mu_y * (1 - mu_y) * mu_a * (1 - mu_a)) + mu_y * mu_a
    p = np.array([[1 - mu_y - mu_a + p11, mu_a - p11], [mu_y - p11, p11]])
    if (p < -1e-12).any():
        raise InputError(
            f"correlation r={r} is infeasible with label prevalence {mu_y:.3f} and attribute prevalence "
            f"{mu_a:.3f}; set matched marginals (the default) or lower r"
        )
    return np.clip(p, 0.0, 1.0)


def _round_counts(p: np.ndarray, n: int) -> np.ndarray:
    """Largest-remainder rounding of ``n * p`` to integers summing to ``n``."""
    raw = p.ravel() * n
    base = np.floor(raw).astype(int)
    rem = n - base.sum()
    order = np.argsort(-(raw - base), kind="stable")
    base[order[:rem]] += 1
    return base.reshape(p.shape)


def _take(rng: np.random.Generator, pool: np.ndarray, k: int, what: str) -> np.ndarray:
    if k > len(pool):
        raise InputError(f"{what}: need {k} cases but the pool has only {len(pool)}; lower n_train/n_test")
    return np.sort(rng.choice(pool, size=k, replace=False)) if k else pool[:0]


def sample_test(
    rng: np.random.Generator, pool: np.ndarray, in_slice: np.ndarray, n_test: int, slice_share: float
) -> np.ndarray:
    """Draw ``n_test`` positions from ``pool`` with exactly ``round(slice_share * n_test)`` in the slice.

    ``in_slice`` is a boolean mask over the whole cohort. If the pool is too small, ``n_test`` is
    reduced to the largest size that keeps the share (never below 20 cases).
    """
    if not 0.0 < slice_share < 1.0:
        raise InputError(f"slice_share={slice_share}: must be in (0, 1)")
    s_pool, o_pool = pool[in_slice[pool]], pool[~in_slice[pool]]
    cap = min(len(s_pool) / slice_share, len(o_pool) / (1 - slice_share))
    n = min(n_test, math.floor(cap + 1e-9))
    if n < 20:
        raise InputError(
            f"test pool holds {len(s_pool)} slice and {len(o_pool)} other cases: too few for a test split "
            f"with slice share {slice_share}"
        )
    k = round(slice_share * n)
    idx = np.concatenate([_take(rng, s_pool, k, "test slice"), _take(rng, o_pool, n - k, "test non-slice")])
    return rng.permutation(idx)


def _finish(
    name: str,
    df: pd.DataFrame,
    train_idx: np.ndarray,
    train_labels: np.ndarray,
    test_idx: np.ndarray,
    y: np.ndarray,
    a: np.ndarray,
    in_slice: np.ndarray,
    target_class: int,
    meta: dict[str, Any],
) -> Scenario:
    return Scenario(
        name=name,
        train_idx=np.asarray(train_idx, dtype=np.int64),
        test_idx=np.asarray(test_idx, dtype=np.int64),
        train_labels=np.asarray(train_labels, dtype=np.int64),
        train_true_labels=y[train_idx].astype(np.int64),
        test_labels=y[test_idx].astype(np.int64),
        test_slice=in_slice[test_idx].astype(bool),
        train_attribute=a[train_idx].astype(bool),
        test_attribute=a[test_idx].astype(bool),
        target_class=int(target_class),
        metadata=meta,
    )


def _pool_prevalence(y: np.ndarray, pool: np.ndarray, label_prevalence: float | None) -> float:
    """``label_prevalence`` when given, else the label prevalence of ``pool``."""
    return float(label_prevalence) if label_prevalence is not None else float(y[pool].mean())


def _draw_joint(
    rng: np.random.Generator,
    pool: np.ndarray,
    y: np.ndarray,
    a: np.ndarray,
    p: np.ndarray,
    n_train: int,
    what: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw a training split from ``pool`` whose (label, attribute) cells follow the joint ``p``.

    Each cell is sampled without replacement; when a cell of the pool is too small the whole split
    shrinks proportionally below ``n_train`` (never below 20 cases; ``what`` names the request in that
    error). Returns the sorted positions and the 2×2 cell counts.
    """
    cells = {(i, j): pool[(y[pool] == i) & (a[pool] == j)] for i in (0, 1) for j in (0, 1)}
    cap = min((len(cells[i, j]) / p[i, j] if p[i, j] > 0 else math.inf) for i in (0, 1) for j in (0, 1))
    n_eff = min(n_train, math.floor(cap))
    if n_eff < 20:
        raise InputError(f"spurious correlation: training pool too small for {what}")
    counts = _round_counts(p, n_eff)
    counts = np.minimum(counts, [[len(cells[i, j]) for j in (0, 1)] for i in (0, 1)])
    train_idx = np.sort(
        np.concatenate(
            [_take(rng, cells[i, j], int(counts[i, j]), f"cell y={i},a={j}") for i in (0, 1) for j in (0, 1)]
        )
    )
    return train_idx, counts


def _draw_rare(
    rng: np.random.Generator,
    pool: np.ndarray,
    y: np.ndarray,
    a: np.ndarray,
    mu_y: float,
    rare_fraction: float,
    n_train: int,
) -> np.ndarray:
    """Draw a training split from ``pool`` with label prevalence ``mu_y`` whose positives have the
    attribute in exactly ``round(rare_fraction * n_pos)`` cases (fewer positives when the pool runs
    short); negatives keep the pool's attribute mix. Returns the sorted positions."""
    pos_a = pool[y[pool] & a[pool]]
    pos_n = pool[y[pool] & ~a[pool]]
    neg = pool[~y[pool]]
    n_pos = min(round(mu_y * n_train), math.floor(len(pos_n) / (1 - rare_fraction)))
    if rare_fraction > 0:
        n_pos = min(n_pos, math.floor(len(pos_a) / rare_fraction) if len(pos_a) else n_pos)
    n_pa = round(rare_fraction * n_pos)
    n_neg = min(n_train - n_pos, len(neg))
    return np.sort(
        np.concatenate(
            [
                _take(rng, pos_a, n_pa, "positives with attribute"),
                _take(rng, pos_n, n_pos - n_pa, "positives without attribute"),
                _take(rng, neg, n_neg, "negatives"),
            ]
        )
    )


# --------------------------------------------------------------------------------------------------
# The three scenarios


def spurious_correlation(
    df: pd.DataFrame,
    seed: int = 0,
    task: str = "pneumothorax",
    attribute: str = "support_devices",
    corr: float = 0.7,
    n_train: int = 1000,
    n_test: int = 500,
    slice_share: float = 0.10,
    test_fraction: float = 0.5,
    match_marginals: bool = True,
    label_prevalence: float | None = None,
    group: str | None = "auto",
) -> Scenario:
    """Spurious correlation: training label and attribute correlate at Pearson ``corr``.

    The label and attribute prevalences of the training split are the pool's (or ``label_prevalence``);
    with ``match_marginals`` the attribute prevalence is set equal to the label's, which makes any
    ``|corr| <= 1`` feasible. The joint distribution is solved by :func:`solve_joint`, each cell is
    sampled without replacement, and if a cell of the pool is too small the whole training split is
    shrunk proportionally (recorded as ``n_train_effective``). Target slice: negatives with the
    attribute (target class 0).
    """
    y, a = binary_column(df, task), binary_column(df, attribute)
    rng = np.random.default_rng([seed, 1])
    train_pool, test_pool = split_pools(df, test_fraction, seed, group)
    mu_y = _pool_prevalence(y, train_pool, label_prevalence)
    mu_a = mu_y if match_marginals else float(a[train_pool].mean())
    p = solve_joint(mu_y, mu_a, corr)
    train_idx, counts = _draw_joint(rng, train_pool, y, a, p, n_train, f"r={corr} on '{task}'/'{attribute}'")
    in_slice = (~y) & a
    test_idx = sample_test(rng, test_pool, in_slice, n_test, slice_share)
    meta = {
        "task": task,
        "attribute": attribute,
        "corr_target": corr,
        "n_train_effective": len(train_idx),
        "slice_share_target": slice_share,
        "seed": seed,
        "cell_counts": counts.tolist(),
    }
    return _finish("spurious", df, train_idx, y[train_idx], test_idx, y, a, in_slice, 0, meta)


def rare_slice(
    df: pd.DataFrame,
    seed: int = 0,
    task: str = "cardiomegaly",
    attribute: str = f"view_position={LATERAL_VIEWS}",
    rare_fraction: float = 0.02,
    n_train: int = 1000,
    n_test: int = 500,
    slice_share: float = 0.10,
    test_fraction: float = 0.5,
    label_prevalence: float | None = None,
    group: str | None = "auto",
) -> Scenario:
    """Rare slice: positives with the attribute are ``rare_fraction`` of the training positives.

    The training split is drawn with the pool's label prevalence (or ``label_prevalence``); among its
    positives exactly ``round(rare_fraction * n_pos)`` have the attribute. Negatives keep the pool's
    attribute mix. Target slice: positives with the attribute (target class 1).
    """
    if not 0.0 <= rare_fraction < 1.0:
        raise InputError(f"rare_fraction={rare_fraction}: must be in [0, 1)")
    y, a = binary_column(df, task), binary_column(df, attribute)
    rng = np.random.default_rng([seed, 2])
    train_pool, test_pool = split_pools(df, test_fraction, seed, group)
    mu_y = _pool_prevalence(y, train_pool, label_prevalence)
    train_idx = _draw_rare(rng, train_pool, y, a, mu_y, rare_fraction, n_train)
    in_slice = y & a
    test_idx = sample_test(rng, test_pool, in_slice, n_test, slice_share)
    meta = {
        "task": task,
        "attribute": attribute,
        "rare_fraction_target": rare_fraction,
        "n_train_effective": len(train_idx),
        "slice_share_target": slice_share,
        "seed": seed,
    }
    return _finish("rare", df, train_idx, y[train_idx], test_idx, y, a, in_slice, 1, meta)


def noisy_labels(
    df: pd.DataFrame,
    seed: int = 0,
    task: str = "!no_finding",
    attribute: str = f"view_position={FRONTAL_VIEWS}",
    flip_fraction: float = 0.30,
    n_train: int = 1000,
    n_test: int = 500,
    slice_share: float = 0.10,
    test_fraction: float = 0.5,
    group: str | None = "auto",
) -> Scenario:
    """Noisy labels: ``flip_fraction`` of the positive training labels with the attribute are flipped.

    The training split is a random draw of ``n_train`` cases from the training pool; exactly
    ``round(flip_fraction * k)`` of its ``k`` positives with the attribute get label 0. Target slice:
    positives with the attribute (target class 1).
    """
    if not 0.0 <= flip_fraction <= 1.0:
        raise InputError(f"flip_fraction={flip_fraction}: must be in [0, 1]")
    y, a = binary_column(df, task), binary_column(df, attribute)
    rng = np.random.default_rng([seed, 3])
    train_pool, test_pool = split_pools(df, test_fraction, seed, group)
    train_idx = _take(rng, train_pool, min(n_train, len(train_pool)), "training split")
    labels = y[train_idx].astype(np.int64)
    cand = np.flatnonzero(y[train_idx] & a[train_idx])
    n_flip = round(flip_fraction * len(cand))
    flip = rng.choice(cand, size=n_flip, replace=False) if n_flip else cand[:0]
    labels[flip] = 0
    in_slice = y & a
    test_idx = sample_test(rng, test_pool, in_slice, n_test, slice_share)
    meta = {
        "task": task,
        "attribute": attribute,
        "flip_fraction_target": flip_fraction,
        "n_flip_candidates": len(cand),
        "n_train_effective": len(train_idx),
        "slice_share_target": slice_share,
        "seed": seed,
    }
    return _finish("noisy", df, train_idx, labels, test_idx, y, a, in_slice, 1, meta)


#: Scenario builders by name.
SCENARIOS: dict[str, Callable[..., Scenario]] = {
    "spurious": spurious_correlation,
    "rare": rare_slice,
    "noisy": noisy_labels,
}

#: The study's defaults, for MIMIC-CXR-JPG / CheXpert case tables.
STUDY_DEFAULTS: dict[str, dict[str, Any]] = {
    "spurious": {"task": "pneumothorax", "attribute": "support_devices"},
    "rare": {"task": "cardiomegaly", "attribute": f"view_position={LATERAL_VIEWS}"},
    "noisy": {"task": "!no_finding", "attribute": f"view_position={FRONTAL_VIEWS}"},
}


def build_scenario(name: str, df: pd.DataFrame, seed: int = 0, **params: Any) -> Scenario:
    """Build scenario ``name`` (``spurious``, ``rare`` or ``noisy``) with ``params`` over its defaults."""
    if name not in SCENARIOS:
        raise InputError(f"scenario '{name}': choose one of {', '.join(SCENARIOS)}")
    fn = SCENARIOS[name]
    allowed = set(fn.__code__.co_varnames[: fn.__code__.co_argcount]) - {"df", "seed"}
    bad = sorted(set(params) - allowed)
    if bad:
        raise InputError(f"scenario '{name}': unknown parameter(s) {', '.join(bad)}")
    return fn(df, seed=seed, **params)


def in_slice_accuracy_gap(scenario: Scenario, preds: np.ndarray) -> float:
    """Accuracy outside the slice minus accuracy inside it, on the test split (true labels)."""
    preds = np.asarray(preds).astype(np.int64)
    correct = preds == scenario.test_labels
    s = scenario.test_slice
    if not s.any() or s.all():
        return float("nan")
    return float(correct[~s].mean() - correct[s].mean())


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def scenario_params(name: str) -> list[str]:
    """Names of the configurable parameters of scenario ``name``."""
    fn = SCENARIOS[name]
    return [p for p in fn.__code__.co_varnames[: fn.__code__.co_argcount] if p not in ("df", "seed")]


__all__ = [
    "FRONTAL_VIEWS",
    "LATERAL_VIEWS",
    "SCENARIOS",
    "STUDY_DEFAULTS",
    "Scenario",
    "binary_column",
    "build_scenario",
    "in_slice_accuracy_gap",
    "noisy_labels",
    "rare_slice",
    "sample_test",
    "scenario_params",
    "solve_joint",
    "split_pools",
    "spurious_correlation",
]
