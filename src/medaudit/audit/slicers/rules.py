"""Rule slices: conjunctions of readable predicates where a classifier fails (SliceLine-style search).

:class:`RuleSlicer` searches the lattice of conjunctions of up to ``max_level`` boolean predicates
(``view = AP ∧ report mentions support device``), after SliceLine (Sagadeeva & Boehm, SIGMOD 2021):

* **Scoring.** A rule with ``size`` cases and ``errors`` errors has *excess errors* ``errors - size *
  e`` (``e`` the overall error rate) and an exact one-sided p-value: the binomial probability of at
  least ``errors`` errors among ``size`` cases at rate ``e`` (SciPy's ``binomtest(alternative=
  "greater")``, vectorised). The search, its pruning and the Benjamini–Hochberg control use this test:
  a slice must fail more often than the cohort.
* **Class-level failures are not slices.** A rule made of label predicates only (``label = 1``) is
  never reported: "the classifier misses positives" is a class-level finding (the audit reports
  per-class error rates). With ``stratify=True`` (default) the *selection* also ranks the significant
  rules by the evidence that they fail more often than *the rest of their own classes*: Fisher's exact
  one-sided test of the rule's members against the other members of their true class (a rule inside
  one class, ``devices ∧ label = 0``), or the Cochran-Mantel-Haenszel test stratified by class (a
  rule across classes; :func:`medaudit.stats.stratified_excess_logp`). So ``devices ∧ label = 0``
  (28% errors where the other negatives fail 4%) ranks before ``age >= 37 ∧ label = 1`` (a
  restatement of the positives' 80% error rate, which the younger positives share), and
  ``lateral ∧ label = 1`` (100%) before the rest of the positives; a rule that covers its whole class
  has nothing to be compared with (p = 1). Against the class's overall rate (the binomial null used
  before) a slice that is a large share of its class was compared with itself: ``lateral ∧ label = 1``,
  21 of 55 positives, 21/21 errors where the positives fail 78%, scored p = 10^-2.2; against the other
  34 positives (22 errors) it scores 10^-2.9.
* **Families.** ``group_limits`` caps the predicates of one family per rule; by default one
  open-vocabulary n-gram (two n-grams multiply the rules tested and read as word salad).
* **Pruning** (level-wise, each bound holds for every extension of a rule): ``size >=
  min_support``; ``errors >= min_errors``; and the best p-value any extension could reach (all of
  its cases errors, at the smallest admissible size) must be <= ``alpha``; a rule failing any bound
  is not extended; nor is one whose best reachable p-value is worse than that of the ``10 *
  n_slices``-th best rule found so far (SliceLine's top-K score bound). Level-``k+1`` candidates are joined from level-``k`` rules whose every
  ``k``-subset survived (apriori). Beam limits keep the search fast: at most ``max_parents`` rules
  of a level are extended (the most significant ones) and ``max_candidates`` candidates evaluated
  (those with the most errors); each cut is recorded in ``search_stats_``.
* **Multiple testing.** Benjamini–Hochberg over *every* rule whose error count was computed, with
  p = 1 for rules pruned before their size was counted.
* **Selection.** Rules with ``q <= alpha`` and positive excess are picked greedily, one per round:
  each round scores every candidate on the cases *not yet covered* by the slices already picked, and
  takes the best one whose residual errors are still significant (p at most the Benjamini–Hochberg
  cut-off p-value). A rule that is only significant because it contains part of an earlier slice is
  therefore not reported again; rules sharing more than ``max_overlap`` of the smaller slice's members
  with a picked one (overlap coefficient ``|A ∩ B| / min(|A|, |B|)``) are skipped as duplicates. The
  candidates are every significant single predicate plus the most significant conjunctions (as many
  as fit in 128 MB of packed member rows, 200–5,000).

Ranking and size: ``rank_by="p_value"`` (default) ranks by the strength of evidence that a slice fails
more often than its classes predict (``stratify``) or than the cohort. It grows with both purity and
size, so a 20-case slice with 15 errors at a 10% base rate (p ≈ 1e-10) outranks a 300-case slice at
16% (p ≈ 1e-3), while a large slice with many excess errors still comes first.
``rank_by="excess_errors"`` favours size (SliceLine's objective at alpha = 1 is similar).

Counting is vectorised over bit-packed columns (:mod:`medaudit.audit.slicers.bits`); error counts are
computed on the error cases only and sizes only for rules that pass the error bounds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Self

import numpy as np
import pandas as pd
from scipy import stats

from medaudit.errors import InputError
from medaudit.stats import stratified_excess_logp

from .base import BaseSlicer, check_slicer_inputs
from .bits import as_bool_matrix, pack_columns, pack_mask, popcount_rows

__all__ = ["RuleSlicer", "best_rule", "rule_log_pvalues", "rule_pvalues"]

RULE_JOIN = " ∧ "
RANK_RULES = ("p_value", "excess_errors")


def rule_log_pvalues(
    errors: np.ndarray, size: np.ndarray, n: int, n_errors: int, rate: np.ndarray | None = None
) -> np.ndarray:
    """Natural log of the exact one-sided binomial p-values P(X >= errors), X ~ Binomial(size, e),
    e = n_errors / n the overall error rate, or per rule ``rate`` when given (the class-stratified null
    of :class:`RuleSlicer`) (``scipy.stats.binomtest(..., alternative="greater")``, vectorised).
    Binomial rather than hypergeometric: as exact, conservative for slices that are a large share of
    the cases, and ~200x faster in SciPy."""
    e = np.asarray(errors, dtype=np.int64)
    s = np.asarray(size, dtype=np.int64)
    r0 = n_errors / n if n else 0.0
    rate_arr = np.broadcast_to(np.asarray(r0 if rate is None else rate, dtype=float), e.shape)
    out = np.minimum(stats.binom.logsf(e - 1, s, rate_arr), 0.0)
    far = (~np.isfinite(out) | (out < -600.0)) & (rate_arr > 0.0) & (rate_arr < 1.0)
    if far.any():  # SciPy's logsf underflows to -inf in the far tail
        # P(X >= k) = pmf(k) * sum_j prod ratios; the ratios fall below r = (s-k)/(k+1) * rate/(1-rate)
        # < 1, so log sf = log pmf(k) - log(1 - r) up to a factor in [1, 1 / (1 - r)]: exact enough to rank.
        k, m, q = e[far].astype(float), s[far].astype(float), rate_arr[far]
        r = np.clip((m - k) / (k + 1.0) * q / (1.0 - q), 0.0, 1.0 - 1e-12)
        out[far] = stats.binom.logpmf(e[far], s[far], q) - np.log1p(-r)
    return out


def rule_pvalues(
    errors: np.ndarray, size: np.ndarray, n: int, n_errors: int, rate: np.ndarray | None = None
) -> np.ndarray:
    """One-sided binomial p-values (see :func:`rule_log_pvalues`)."""
    return np.exp(rule_log_pvalues(errors, size, n, n_errors, rate))


@dataclass
class _Picks:
    """The greedy selection's state: picked rule indices, their packed member rows and sizes, and the
    cases they cover."""

    covered: np.ndarray
    picked: list[int] = field(default_factory=list)
    rows: list[np.ndarray] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)

    def add(self, index: int, row: np.ndarray, size: int) -> None:
        self.picked.append(index)
        self.rows.append(row)
        self.sizes.append(size)
        self.covered |= row


class RuleSlicer(BaseSlicer):
    """Rule slices over a (n, p) boolean predicate matrix (see the module docstring).

    ``fit(X, targets, pred_probs)``: ``X`` is the boolean predicate matrix (a DataFrame from
    :func:`medaudit.audit.predicates.build_predicates` gives the rule names) in place of embeddings.

    Args:
        n_slices: slices returned (at most; fewer when fewer rules pass the test).
        max_level: largest number of predicates in a rule (1–3).
        min_support: smallest slice size, in cases (int) or as a fraction of the cases (float < 1).
        min_errors: smallest number of errors in a slice.
        alpha: Benjamini–Hochberg false discovery rate; also the pruning bound.
        max_overlap: overlap coefficient above which a rule is skipped as a duplicate of a better one.
        rank_by: ``"p_value"`` or ``"excess_errors"``.
        max_candidates: candidates evaluated per level at most (those with the most errors).
        max_parents: rules of one level extended to the next at most (the most significant ones).
        feature_names: names of the predicates when ``X`` is an array.
        group_limits: most predicates of one family per rule (families from
            :func:`medaudit.audit.predicates.predicate_group` of the names, or ``feature_groups``);
            default ``{"ngram": 1}``: an open-vocabulary n-gram may join concepts, metadata and the
            label, but two n-grams do not make a rule (their conjunctions multiply the rules tested,
            and so the multiple-testing burden, while reading as word salad).
        feature_groups: the family of each predicate, when the names do not tell it.
        stratify: rank the significant rules by their errors against the rest of their members'
            classes (see the module docstring); ``False`` ranks against the overall rate.
        exploratory: when fewer than ``n_slices`` rules survive the Benjamini–Hochberg correction,
            fill the rest with rules significant before it (``p <= alpha``), flagged
            ``slice_significant_ = False`` (leads to check, not findings).

    Attributes (after fit):
        rules_: per slice, the list of predicate names; ``rule_text_``: joined with " ∧ ".
        slice_error_, slice_size_, slice_errors_, slice_excess_, slice_pvalue_, slice_qvalue_,
        slice_score_ (-log10 p), slice_expected_ (errors at the overall rate): per slice, in rank order.
        slice_class_expected_, slice_class_pvalue_: errors its classes' rates predict, and the p-value
            against the rest of its classes.
        class_error_rates_: error rate per true class.
        slice_significant_: per slice, whether it survived the correction (``q <= alpha``); the
            significant ones come first.
        slice_search_penalty_: per slice, log10 of the layered Bonferroni factor for exploratory
            slices (:meth:`search_penalty`, the factor they were picked on), 0 for significant ones.
        n_rules_tested_: rules counted in the Benjamini–Hochberg correction.
        search_stats_: candidates and survivors per level, truncation flags, timings.
    """

    def __init__(
        self,
        n_slices: int = 5,
        max_level: int = 3,
        min_support: int | float = 10,
        min_errors: int = 3,
        alpha: float = 0.05,
        max_overlap: float = 0.5,
        rank_by: str = "p_value",
        max_candidates: int = 200_000,
        max_parents: int = 2_000,
        feature_names: list[str] | None = None,
        group_limits: dict[str, int] | None = None,
        feature_groups: list[str] | None = None,
        stratify: bool = True,
        exploratory: bool = False,
    ) -> None:
        self.n_slices = n_slices
        self.max_level = max_level
        self.min_support = min_support
        self.min_errors = min_errors
        self.alpha = alpha
        self.max_overlap = max_overlap
        self.rank_by = rank_by
        self.max_candidates = max_candidates
        self.max_parents = max_parents
        self.feature_names = feature_names
        self.group_limits = group_limits
        self.feature_groups = feature_groups
        self.stratify = stratify
        self.exploratory = exploratory

    # -- helpers -------------------------------------------------------------------------------------
    def _check_params(self) -> None:
        if self.rank_by not in RANK_RULES:
            raise InputError(f"rank_by '{self.rank_by}': choose one of {', '.join(RANK_RULES)}")
        if not 1 <= int(self.max_level) <= 3:
            raise InputError(f"max_level must be 1, 2 or 3, got {self.max_level}")
        if not 0 < float(self.alpha) <= 1:
            raise InputError(f"alpha must lie in (0, 1], got {self.alpha}")

    def _names(self, x: Any, p: int) -> list[str]:
        if isinstance(x, pd.DataFrame):
            return [str(c) for c in x.columns]
        if self.feature_names is not None:
            if len(self.feature_names) != p:
                raise InputError(f"feature_names has {len(self.feature_names)} names for {p} predicates")
            return [str(c) for c in self.feature_names]
        return [f"x{j}" for j in range(p)]

    def _best_p(self, errs: np.ndarray) -> np.ndarray:
        """Smallest p-value any extension of a rule with ``errs`` errors could reach (a lookup table:
        the bound depends on the error count only)."""
        if getattr(self, "_best_p_table", None) is None:
            e = np.arange(self.n_errors_ + 1)
            s = np.maximum(self.min_support_, e)
            self._best_p_table = rule_pvalues(np.minimum(e, s), s, self.n_, self.n_errors_)
        return self._best_p_table[errs]

    def _expandable(self, errs: np.ndarray, size: np.ndarray | None = None) -> np.ndarray:
        ok = errs >= self.min_errors
        if size is not None:
            ok &= size >= self.min_support_
        bound = min(self.alpha, self._kth_best)
        ok[ok] = self._best_p(errs[ok]) <= bound
        return ok

    def _update_kth_best(self, errs: np.ndarray, size: np.ndarray) -> None:
        """SliceLine's score pruning: the p-value of the K-th best admissible rule so far (K =
        ``10 * n_slices``); an extension whose best possible p-value is worse cannot enter the top K."""
        ok = (size >= self.min_support_) & (errs >= self.min_errors) & (errs > size * self.base_rate_)
        if not ok.any():
            return
        k = 10 * int(self.n_slices)
        p = np.concatenate([self._top_p, rule_pvalues(errs[ok], size[ok], self.n_, self.n_errors_)])
        self._top_p = np.sort(p)[:k]
        if len(self._top_p) >= k:
            self._kth_best = float(self._top_p[-1])

    def _init_groups(self, names: list[str]) -> None:
        """Per predicate, the index of its limited family (-1: unlimited), and each family's limit."""
        from medaudit.audit.predicates import predicate_group

        limits = {"ngram": 1} if self.group_limits is None else dict(self.group_limits)
        groups = self.feature_groups or [predicate_group(nm) for nm in names]
        if len(groups) != len(names):
            raise InputError(f"feature_groups has {len(groups)} entries for {len(names)} predicates")
        fams = sorted(limits)
        self._group_of = np.array([fams.index(g) if g in limits else -1 for g in groups], dtype=np.int64)
        self._group_limit = np.array([int(limits[f]) for f in fams], dtype=np.int64)
        self._class_only = np.array([g == "label" for g in groups] + [True], dtype=bool)  # [-1]: padding

    def _within_limits(self, rules: np.ndarray) -> np.ndarray:
        """Which rules ((m, k) feature indices) respect the per-family limits."""
        ok = np.ones(len(rules), dtype=bool)
        g = self._group_of[rules]
        for f, lim in enumerate(self._group_limit):
            ok &= (g == f).sum(axis=1) <= lim
        return ok

    # -- search --------------------------------------------------------------------------------------
    def _extend(self, parents: np.ndarray, singles: np.ndarray) -> np.ndarray:
        """Apriori join (levels 2 and 3): a candidate is generated only when every subset survived.

        ``parents``: (m, k) sorted feature indices; returns (m', k + 1), grouped by prefix."""
        if len(parents) == 0:
            return np.empty((0, parents.shape[1] + 1), dtype=np.int64)
        if parents.shape[1] == 1:
            s = np.sort(singles)
            i, j = np.triu_indices(len(s), 1)
            return np.stack([s[i], s[j]], axis=1)
        p = self.n_features_in_
        adj = np.zeros((p, p), dtype=bool)
        adj[parents[:, 0], parents[:, 1]] = adj[parents[:, 1], parents[:, 0]] = True
        cols = np.arange(p)
        out: list[np.ndarray] = []
        order = np.lexsort((parents[:, 1], parents[:, 0]))
        parents = parents[order]
        starts = np.flatnonzero(np.r_[True, parents[1:, 0] != parents[:-1, 0]])
        for g, a in zip(starts, parents[starts, 0], strict=True):
            bs = parents[g : g + np.searchsorted(parents[g:, 0], a, side="right"), 1]
            r, c = np.nonzero(adj[bs] & adj[a][None, :] & (cols[None, :] > bs[:, None]))
            out.append(np.stack([np.full(len(r), a), bs[r], c], axis=1))
        return np.concatenate(out) if out else np.empty((0, 3), dtype=np.int64)

    def _count(self, rules: np.ndarray, packed: np.ndarray) -> np.ndarray:
        """Bit counts of the conjunctions ``rules`` ((m, k), grouped by prefix) in ``packed`` rows."""
        out = np.empty(len(rules), dtype=np.int64)
        if len(rules) == 0:
            return out
        prefix = rules[:, :-1]
        starts = np.flatnonzero(np.r_[True, (prefix[1:] != prefix[:-1]).any(axis=1)])
        ends = np.r_[starts[1:], len(rules)]
        step = max(1, (1 << 22) // packed.shape[1])  # ~32 MB of temporaries per block
        for a, b in zip(starts, ends, strict=True):
            base = np.bitwise_and.reduce(packed[prefix[a]], axis=0)
            for lo in range(a, b, step):
                hi = min(b, lo + step)
                out[lo:hi] = popcount_rows(packed[rules[lo:hi, -1]] & base)
        return out

    def _search(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """All sized rules as a (m, max_level) index array padded with -1, their sizes and errors, and
        the number of rules tried."""
        p, depth = self.n_features_in_, int(self.max_level)
        size, errs = popcount_rows(self._fall), popcount_rows(self._ferr)
        level_rules = np.arange(p, dtype=np.int64)[:, None]
        all_rules, all_size, all_errs = [level_rules], [size], [errs]
        n_tested = p
        self._top_p, self._kth_best = np.empty(0), 1.0
        self._update_kth_best(errs, size)
        level_rules = level_rules[self._expandable(errs, size)]
        singles = level_rules[:, 0]
        stats_: dict[str, Any] = {"level_1": {"candidates": p, "expandable": len(level_rules)}}
        for level in range(2, depth + 1):
            cands = self._extend(level_rules, singles)
            cands = cands[self._within_limits(cands)]
            e = self._count(cands, self._ferr)
            truncated = len(cands) > self.max_candidates
            if truncated:
                keep = np.sort(np.argsort(-e, kind="stable")[: self.max_candidates])
                cands, e = cands[keep], e[keep]
            n_tested += len(cands)
            pass_err = self._expandable(e)
            sized, e = cands[pass_err], e[pass_err]
            s = self._count(sized, self._fall)
            all_rules.append(sized)
            all_size.append(s)
            all_errs.append(e)
            self._update_kth_best(e, s)
            ok = self._expandable(e, s)
            parents_cut = int(ok.sum()) > self.max_parents
            if parents_cut:  # beam: extend the most significant rules only
                idx = np.flatnonzero(ok)
                lp = rule_log_pvalues(e[idx], s[idx], self.n_, self.n_errors_)
                ok[:] = False
                ok[idx[np.argsort(lp, kind="stable")[: self.max_parents]]] = True
            level_rules = sized[ok]
            stats_[f"level_{level}"] = {
                "parents_cut": bool(parents_cut),
                "candidates": len(cands),
                "sized": len(sized),
                "expandable": len(level_rules),
                "truncated": bool(truncated),
            }
            if len(level_rules) == 0:
                break
        self.search_stats_ = stats_
        padded = np.full((sum(len(r) for r in all_rules), depth), -1, dtype=np.int64)
        row = 0
        for r in all_rules:
            padded[row : row + len(r), : r.shape[1]] = r
            row += len(r)
        return padded, np.concatenate(all_size), np.concatenate(all_errs), n_tested

    def _rule_rows(self, rules: np.ndarray) -> np.ndarray:
        """Packed member rows of padded rules (m, depth) -> (m, words)."""
        out = self._fall[np.maximum(rules[:, 0], 0)].copy()
        for k in range(1, rules.shape[1]):
            has = rules[:, k] >= 0
            out[has] &= self._fall[rules[has, k]]
        return out

    def _select(
        self,
        rules: np.ndarray,
        size: np.ndarray,
        errs: np.ndarray,
        q: np.ndarray,
        logp: np.ndarray,
    ) -> tuple[list[int], int]:
        """Greedy pick: each round takes the best rule on the cases not yet covered by picked slices
        (its *residual* errors must still be significant), skipping near-duplicates. With
        ``exploratory``, rounds left over after the significant rules run out pick among the rules
        that are significant before the correction (``p <= alpha``). Returns the picked rule indices
        and how many of them (the first ones) are significant."""
        excess = errs - size * self.base_rate_
        ok = (size >= self.min_support_) & (errs >= self.min_errors) & (excess > 0)
        ok &= ~self._class_only[rules].all(axis=1)  # 'label = 1' alone is a class-level finding
        sig = q <= self.alpha
        log_cut = float(logp[sig].max()) if sig.any() else -np.inf
        state = _Picks(np.zeros(self._fall.shape[1], dtype=np.uint64))
        self._greedy(rules, size, excess, logp, np.flatnonzero(ok & sig), log_cut, state)
        n_significant = len(state.picked)
        if self.exploratory and n_significant < int(self.n_slices):
            loose = np.flatnonzero(ok & ~sig & (logp <= np.log(self.alpha)))
            self._greedy(rules, size, excess, logp, loose, float(np.log(self.alpha)), state, penalize=True)
        return state.picked, n_significant

    def search_penalty(self, rules: np.ndarray) -> np.ndarray:
        """log10 of the layered Bonferroni factor of padded ``rules`` (Webb 2007): ``max_level`` x the
        rules tried at each rule's length. An exploratory rule's p-value, times this factor, is the
        evidence that it is not the luckiest of the many rules of its length."""
        level = (np.atleast_2d(rules) >= 0).sum(axis=1)
        tried = self._level_tested[np.clip(level, 1, 3) - 1]
        return np.log10(int(self.max_level) * np.maximum(tried, 1)).astype(float)

    def _greedy(
        self,
        rules: np.ndarray,
        size: np.ndarray,
        excess: np.ndarray,
        logp: np.ndarray,
        eligible: np.ndarray,
        log_cut: float,
        state: _Picks,
        penalize: bool = False,
    ) -> None:
        """Rounds of the greedy pick among ``eligible`` rules until ``n_slices`` are picked in all;
        ``penalize`` (exploratory rules) ranks on p-values times :meth:`search_penalty`."""
        level = (rules[eligible] >= 0).sum(axis=1)
        keys = (level, -excess[eligible], logp[eligible])
        if self.rank_by == "excess_errors":
            keys = (level, logp[eligible], -excess[eligible])
        order = eligible[np.lexsort(keys)]
        # candidate pool: every single predicate, plus the most significant conjunctions (memory cap)
        cap = int(np.clip((1 << 27) // (8 * self._fall.shape[1]), 200, 5000))
        single = (rules[order] >= 0).sum(axis=1) == 1
        order = np.concatenate([order[single], order[~single][:cap]])
        rows = self._rule_rows(rules[order])
        sizes = size[order]
        taken = np.zeros(len(order), dtype=bool)
        penalty = self.search_penalty(rules[order]) * np.log(10.0) if penalize else np.zeros(len(order))
        while len(state.picked) < int(self.n_slices) and len(order):
            free = rows & ~state.covered
            r_size = popcount_rows(free)
            r_err = popcount_rows(free & self._err_mask)
            r_exp = r_size * self.base_rate_
            r_logp = rule_log_pvalues(r_err, r_size, self.n_, self.n_errors_)
            ok = ~taken & (r_size >= self.min_support_) & (r_err >= self.min_errors)
            ok &= r_logp <= log_cut
            for row, n_row in zip(state.rows, state.sizes, strict=True):
                shared = popcount_rows(rows & row)
                ok &= shared <= self.max_overlap * np.minimum(sizes, n_row)
            if not ok.any():
                return
            if self.stratify:  # rank by how much worse than the rest of its classes a rule fails
                cand = np.flatnonzero(ok)  # only the eligible candidates need the class test
                r_exp, r_logp = np.zeros(len(ok)), np.zeros(len(ok))
                r_exp[cand], r_logp[cand] = self._class_evidence(free[cand], r_size[cand], r_err[cand])
            score = r_logp + penalty if self.rank_by == "p_value" else -(r_err - r_exp)
            best = int(np.flatnonzero(ok)[np.argmin(score[ok])])
            taken[best] = True
            state.add(int(order[best]), rows[best], int(sizes[best]))

    # -- estimator API -------------------------------------------------------------------------------
    def fit(self, embeddings: Any, targets: np.ndarray, pred_probs: np.ndarray) -> Self:
        """Search rule slices. ``embeddings``: the (n, p) boolean predicate matrix."""
        self._check_params()
        x = as_bool_matrix(embeddings, "predicates")
        n, p = x.shape
        names = self._names(embeddings, p)
        inp = check_slicer_inputs(np.zeros((n, 1), dtype=np.float32), targets, pred_probs)
        cls = inp.targets.argmax(axis=1)
        errors = cls != inp.pred_probs.argmax(axis=1)
        self.n_, self.n_errors_ = n, int(errors.sum())
        self.base_rate_ = self.n_errors_ / n
        ms = self.min_support
        self.min_support_ = max(1, int(np.ceil(ms * n)) if isinstance(ms, float) and ms < 1 else int(ms))
        self.feature_names_in_ = np.asarray(names, dtype=object)
        self.n_features_in_ = p
        self._best_p_table = None
        self._fall = pack_columns(x)
        self._ferr = pack_columns(x, np.flatnonzero(errors))
        self._err_mask = pack_mask(errors)
        self._init_strata(x, cls, errors, inp.targets.shape[1])
        self._init_groups(names)
        rules, size, errs, n_tested = self._search()
        lv = self.search_stats_
        self._level_tested = np.array([lv.get(f"level_{k}", {}).get("candidates", 1) for k in range(1, 4)])
        logp = rule_log_pvalues(errs, size, n, self.n_errors_)
        p_all = np.concatenate([np.exp(logp), np.ones(n_tested - len(rules))])
        q = np.asarray(stats.false_discovery_control(p_all, method="bh"), dtype=float)[: len(rules)]
        picked, n_sig = self._select(rules, size, errs, q, logp) if self.n_errors_ else ([], 0)
        self.n_rules_tested_ = int(n_tested)
        self._store(picked, rules, size, errs, logp, q, names)
        self.slice_significant_ = np.arange(len(picked)) < n_sig
        pen = self.search_penalty(rules[picked]) if picked else np.zeros(0)
        self.slice_search_penalty_ = np.where(self.slice_significant_, 0.0, pen)
        self._store_class_evidence(picked, rules)
        del self._fall, self._ferr, self._best_p_table, self._err_mask, self._cls_masks, self._cls_err_masks
        return self

    def _init_strata(self, x: np.ndarray, cls: np.ndarray, errors: np.ndarray, n_classes: int) -> None:
        """Per-class cases, errors and error rates (``class_error_rates_``) and packed class masks."""
        self._class_n = np.bincount(cls, minlength=n_classes)
        self._class_k = np.bincount(cls[errors], minlength=n_classes)
        self.class_error_rates_ = self._class_k / np.maximum(self._class_n, 1)
        self._cls_masks = [pack_mask(cls == c) for c in range(n_classes)]
        self._cls_err_masks = [pack_mask((cls == c) & errors) for c in range(n_classes)]

    def _class_counts(
        self, rows: np.ndarray, size: np.ndarray | None = None, errs: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Errors and cases of packed member ``rows`` in each true class: two (m, C) arrays. Class 0
        holds what classes 1..C-1 do not (``size`` and ``errs``, the rows' totals, when known)."""
        size = popcount_rows(rows) if size is None else size
        errs = popcount_rows(rows & self._err_mask) if errs is None else errs
        s = [popcount_rows(rows & m) for m in self._cls_masks[1:]]
        k = [popcount_rows(rows & m) for m in self._cls_err_masks[1:]]
        s_all = np.stack([size - np.sum(s, axis=0), *s], axis=1)
        k_all = np.stack([errs - np.sum(k, axis=0), *k], axis=1)
        return k_all, s_all

    def _class_evidence(
        self, rows: np.ndarray, size: np.ndarray | None = None, errs: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Errors of packed member ``rows`` expected from their classes' error rates, and the log
        p-values of their failing more often than the rest of their classes
        (:func:`medaudit.stats.stratified_excess_logp`)."""
        k, s = self._class_counts(rows, size, errs)
        exp = np.asarray(s @ self.class_error_rates_, dtype=float)
        return exp, stratified_excess_logp(k, s, self._class_k, self._class_n)

    def _store_class_evidence(self, picked: list[int], rules: np.ndarray) -> None:
        """Per slice, the errors its classes predict and the p-value against the rest of its classes."""
        if not picked:
            self.slice_class_expected_, self.slice_class_pvalue_ = np.zeros(0), np.zeros(0)
            return
        exp, logp = self._class_evidence(self._rule_rows(rules[picked]))
        self.slice_class_expected_, self.slice_class_pvalue_ = exp, np.exp(logp)

    def _store(
        self,
        picked: list[int],
        rules: np.ndarray,
        size: np.ndarray,
        errs: np.ndarray,
        logp: np.ndarray,
        q: np.ndarray,
        names: list[str],
    ) -> None:
        self.rule_index_ = [[int(j) for j in rules[i] if j >= 0] for i in picked]
        self.rules_ = [[names[j] for j in idx] for idx in self.rule_index_]
        self.rule_text_ = [RULE_JOIN.join(r) for r in self.rules_]
        self.slice_size_ = np.array([size[i] for i in picked], dtype=np.int64)
        self.slice_errors_ = np.array([errs[i] for i in picked], dtype=np.int64)
        self.slice_error_ = self.slice_errors_ / np.maximum(self.slice_size_, 1)
        self.slice_expected_ = self.slice_size_ * self.base_rate_
        self.slice_excess_ = self.slice_errors_ - self.slice_expected_
        lp = np.array([logp[i] for i in picked], dtype=float)
        self.slice_pvalue_ = np.exp(lp)
        self.slice_qvalue_ = np.array([q[i] for i in picked], dtype=float)
        self.slice_score_ = -lp / np.log(10.0)
        self.n_slices_ = len(picked)

    def predict_proba(self, embeddings: Any, targets: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
        """(n, n_slices_) 0/1 membership: a case is in a slice when it satisfies the slice's rule."""
        x = as_bool_matrix(embeddings, "predicates")
        if x.shape[1] != self.n_features_in_:
            raise InputError(
                f"predicates: {x.shape[1]} columns, but the slicer was fitted on {self.n_features_in_}"
            )
        out = np.zeros((x.shape[0], len(self.rule_index_)), dtype=np.float64)
        for k, idx in enumerate(self.rule_index_):
            out[:, k] = x[:, idx].all(axis=1)
        return out


def best_rule(
    predicates: pd.DataFrame | np.ndarray,
    mask: np.ndarray,
    names: list[str] | None = None,
    max_level: int = 2,
    beam: int = 25,
) -> dict[str, Any] | None:
    """The conjunction of up to ``max_level`` predicates that best matches the cases of ``mask``.

    Best = highest F1 between the rule's cases and ``mask`` (equivalently, highest Jaccard). Level 1
    is exhaustive; level 2 and 3 combine the ``beam`` predicates with the largest coverage.

    Returns:
        ``{"rule": [names], "text": "a ∧ b", "coverage": |rule ∩ mask| / |mask|, "precision":
        |rule ∩ mask| / |rule|, "jaccard": ..., "rule_size": |rule|}``, or ``None`` when nothing
        overlaps the mask.
    """
    x = as_bool_matrix(predicates, "predicates")
    cols = [str(c) for c in predicates.columns] if isinstance(predicates, pd.DataFrame) else names
    cols = cols or [f"x{j}" for j in range(x.shape[1])]
    m = np.asarray(mask, dtype=bool)
    n_m = int(m.sum())
    if n_m == 0 or x.shape[1] == 0:
        return None
    f = pack_columns(x)
    mp = pack_mask(m)
    size = popcount_rows(f)
    inter = popcount_rows(f & mp)
    cands: list[tuple[tuple[int, ...], int, int]] = [
        ((j,), int(size[j]), int(inter[j])) for j in range(x.shape[1])
    ]
    top = np.argsort(-inter, kind="stable")[:beam]
    top = np.sort(top[inter[top] > 0])
    from itertools import combinations

    from medaudit.audit.predicates import predicate_group

    is_ngram = np.array([predicate_group(c) == "ngram" for c in cols])
    for level in range(2, max_level + 1):
        for combo in combinations(top.tolist(), level):
            if is_ngram[list(combo)].sum() > 1:  # as in the search: one n-gram per rule
                continue
            row = np.bitwise_and.reduce(f[list(combo)], axis=0)
            cands.append((combo, int(popcount_rows(row)), int(popcount_rows(row & mp))))
    best = max(cands, key=lambda c: (2 * c[2] / (c[1] + n_m), -len(c[0])))
    rule, s, k = best
    if k == 0:
        return None
    return {
        "rule": [cols[j] for j in rule],
        "text": RULE_JOIN.join(cols[j] for j in rule),
        "coverage": k / n_m,
        "precision": k / s,
        "jaccard": k / (s + n_m - k),
        "rule_size": s,
    }
