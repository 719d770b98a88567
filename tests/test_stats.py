"""The shared statistics (medaudit.stats): one Wilson interval, one bootstrap, one BH correction, one
stratified excess test."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medaudit.stats import bh_qvalues, bootstrap_ci, stratified_excess_logp, wilson_ci


def _wilson_formula(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return centre - half, centre + half


def test_wilson_matches_textbook_and_formula():
    lo, hi = wilson_ci(8, 20)  # textbook: (0.2188, 0.6134)
    assert lo == pytest.approx(0.2188, abs=1e-4) and hi == pytest.approx(0.6134, abs=1e-4)
    for k, n in [(1, 7), (15, 20), (3, 1000), (500, 1000)]:
        assert wilson_ci(k, n) == pytest.approx(_wilson_formula(k, n), abs=1e-12)


def test_wilson_edges_are_exact_and_degenerate_input():
    lo, hi = wilson_ci(0, 37)
    assert lo == 0.0 and 0.0 < hi < 0.15
    lo, hi = wilson_ci(37, 37)
    assert hi == 1.0 and 0.85 < lo < 1.0
    assert all(math.isnan(v) for v in wilson_ci(0, 0))
    with pytest.raises(ValueError):
        wilson_ci(5, 4)


def test_bootstrap_ci_contract():
    v = np.arange(10, dtype=float)
    mean, lo, hi = bootstrap_ci(v, n_boot=2000, seed=0)
    assert mean == pytest.approx(4.5) and lo < mean < hi
    assert 1.2 < (hi - lo) / 2 < 2.3  # about 1.96 * sd / sqrt(n) = 1.78
    assert bootstrap_ci(v, seed=1) == bootstrap_ci(v, seed=1)
    assert bootstrap_ci(v, seed=1) != bootstrap_ci(v, seed=2)
    assert bootstrap_ci(np.full(5, 3.0)) == (3.0, 3.0, 3.0)
    assert bootstrap_ci([7.0]) == (7.0, 7.0, 7.0)
    assert all(math.isnan(x) for x in bootstrap_ci([]))
    # non-finite values are dropped, not treated as numbers
    assert bootstrap_ci([1.0, np.nan, 3.0], seed=0) == bootstrap_ci([1.0, 3.0], seed=0)


def test_bootstrap_blocks_give_the_same_draws_as_one_matrix():
    v = np.random.default_rng(0).normal(size=50)
    _, lo, hi = bootstrap_ci(v, n_boot=500, seed=3)
    rng = np.random.default_rng(3)
    means = v[rng.integers(0, v.size, size=(500, v.size))].mean(axis=1)
    assert (lo, hi) == tuple(np.quantile(means, [0.025, 0.975]))


def test_bh_qvalues_by_hand():
    p = np.array([0.01, 0.04, 0.03, 0.20])
    # sorted: 0.01, 0.03, 0.04, 0.20 -> p * m / rank = 0.04, 0.06, 0.0533, 0.20 -> monotone: .04 .0533 .0533 .2
    q = bh_qvalues(p)
    assert q == pytest.approx([0.04, 0.05333333, 0.05333333, 0.20])
    assert bh_qvalues([]).size == 0


def test_public_api_resolves_every_name():
    import medaudit

    for name in medaudit.__all__:
        assert getattr(medaudit, name) is not None, name
    assert medaudit.AuditConfig().rank_by == "excess_errors"


def test_stratified_excess_is_fisher_in_one_stratum_and_exact_across_two() -> None:
    """Inside one stratum: Fisher's exact one-sided test; a subset that is the whole stratum: p = 1;
    across two strata: the exact convolution of the per-stratum hypergeometric laws; across three:
    the Cochran-Mantel-Haenszel normal tail, close to the exact convolution for large counts."""
    from scipy import stats

    k_tot, n_tot = np.array([30, 40]), np.array([300, 60])
    lp = stratified_excess_logp([[12, 0]], [[40, 0]], k_tot, n_tot)
    fisher = stats.fisher_exact([[12, 28], [18, 242]], alternative="greater").pvalue
    assert math.exp(lp[0]) == pytest.approx(fisher, rel=1e-6)
    assert stratified_excess_logp([[30, 0]], [[300, 0]], k_tot, n_tot)[0] == 0.0
    assert stratified_excess_logp([[0, 0]], [[0, 0]], k_tot, n_tot)[0] == 0.0

    def exact(k, s, kt, nt):
        pmf = [stats.hypergeom.pmf(np.arange(s[c] + 1), nt[c], kt[c], s[c]) for c in range(len(s))]
        conv = pmf[0]
        for p in pmf[1:]:
            conv = np.convolve(conv, p)
        return conv[sum(k) :].sum()

    for k, s in (([3, 8], [7, 8]), ([10, 20], [40, 25]), ([0, 9], [5, 9])):
        got = math.exp(stratified_excess_logp([k], [s], k_tot, n_tot)[0])
        assert got == pytest.approx(exact(k, s, k_tot, n_tot), rel=1e-6)
    kt3, nt3 = np.array([100, 200, 150]), np.array([1000, 800, 600])
    k3, s3 = [25, 60, 50], [150, 180, 160]
    cmh = math.exp(stratified_excess_logp([k3], [s3], kt3, nt3)[0])
    assert abs(math.log10(cmh) - math.log10(exact(k3, s3, kt3, nt3))) < 0.3
    assert stratified_excess_logp([[2, 10]], [[40, 20]], k_tot, n_tot)[0] > math.log(0.5)  # a deficit
