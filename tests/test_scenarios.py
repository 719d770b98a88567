"""Failure-scenario construction: correlation, rare share, flips, test slice share, determinism."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medaudit.errors import InputError
from medaudit.studies.cxr_slices import scenarios as sc


def make_cohort(n_patients: int = 1500, seed: int = 0) -> pd.DataFrame:
    """A cohort shaped like a CXR case table: two images (frontal + lateral) per patient."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        ptx = rng.random() < 0.25
        dev = rng.random() < (0.5 if ptx else 0.3)
        cardio = rng.random() < 0.3
        eff = rng.random() < 0.2
        nf = not (ptx or dev or cardio or eff)
        for view in ("PA", "LATERAL") if rng.random() < 0.7 else ("AP",):
            rows.append(
                {
                    "id": f"p{p}_{view}",
                    "patient_id": f"p{p}",
                    "pneumothorax": float(ptx) if rng.random() > 0.05 else np.nan,
                    "support_devices": float(dev),
                    "cardiomegaly": float(cardio),
                    "pleural_effusion": float(eff) if rng.random() > 0.05 else -1.0,
                    "no_finding": float(nf),
                    "view_position": view,
                    "age": float(rng.integers(20, 90)),
                }
            )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def cohort() -> pd.DataFrame:
    return make_cohort()


def test_binary_column_specs(cohort):
    lat = sc.binary_column(cohort, "view_position=LATERAL|LL")
    assert lat.sum() == (cohort.view_position == "LATERAL").sum()
    front = sc.binary_column(cohort, "view_position!=lateral")
    assert np.array_equal(front, ~lat)
    assert np.array_equal(sc.binary_column(cohort, "!no_finding"), cohort.no_finding.to_numpy() < 0.5)
    ptx = sc.binary_column(cohort, "pneumothorax")  # NaN -> negative
    assert ptx.dtype == bool and ptx.sum() == (cohort.pneumothorax == 1).sum()
    assert (
        sc.binary_column(cohort, "pleural_effusion", uncertain=1.0).sum()
        > sc.binary_column(cohort, "pleural_effusion").sum()
    )
    with pytest.raises(InputError, match="nonexistent"):
        sc.binary_column(cohort, "nonexistent")


def test_solve_joint_matches_pearson():
    for mu_y, mu_a, r in [(0.3, 0.3, 0.7), (0.1, 0.1, 0.7), (0.4, 0.5, 0.5)]:
        p = sc.solve_joint(mu_y, mu_a, r)
        assert p.sum() == pytest.approx(1.0)
        assert p[1].sum() == pytest.approx(mu_y) and p[:, 1].sum() == pytest.approx(mu_a)
        cov = p[1, 1] - mu_y * mu_a
        assert cov / np.sqrt(mu_y * (1 - mu_y) * mu_a * (1 - mu_a)) == pytest.approx(r)
    with pytest.raises(InputError, match="infeasible"):
        sc.solve_joint(0.05, 0.6, 0.9)


def test_pools_are_disjoint_by_patient(cohort):
    tr, te = sc.split_pools(cohort, 0.5, seed=3)
    assert not set(cohort.patient_id.iloc[tr]) & set(cohort.patient_id.iloc[te])
    assert len(tr) + len(te) == len(cohort)


@pytest.mark.parametrize("share", [0.05, 0.10, 0.20])
def test_spurious_correlation(cohort, share):
    s = sc.spurious_correlation(cohort, seed=1, n_train=600, n_test=300, slice_share=share)
    summ = s.summary()
    assert summ["train_corr_label_attr"] == pytest.approx(0.7, abs=0.02)
    assert s.test_slice.mean() == pytest.approx(share, abs=0.5 / s.n_test + 1e-9)
    assert s.target_class == 0
    # the slice is negatives with the attribute
    assert np.all(s.test_labels[s.test_slice] == 0) and np.all(s.test_attribute[s.test_slice])
    assert not set(s.train_idx) & set(s.test_idx)
    assert np.array_equal(s.train_labels, s.train_true_labels)


def test_rare_slice(cohort):
    s = sc.rare_slice(cohort, seed=2, n_train=800, n_test=300, slice_share=0.2)
    pos = s.train_true_labels == 1
    share = s.train_attribute[pos].mean()
    assert share == pytest.approx(0.02, abs=0.5 / pos.sum() + 1e-9)
    assert s.target_class == 1
    assert np.all(s.test_labels[s.test_slice] == 1) and np.all(s.test_attribute[s.test_slice])
    assert s.test_slice.mean() == pytest.approx(0.2, abs=0.01)


def test_noisy_labels(cohort):
    s = sc.noisy_labels(cohort, seed=4, n_train=800, n_test=300, slice_share=0.05)
    cand = (s.train_true_labels == 1) & s.train_attribute
    flipped = s.train_labels != s.train_true_labels
    assert flipped.sum() == round(0.3 * cand.sum())
    assert np.all(cand[flipped]) and np.all(s.train_labels[flipped] == 0)
    assert s.test_slice.mean() == pytest.approx(0.05, abs=0.005)
    assert s.summary()["train_flipped"] == flipped.sum()


def test_determinism_and_seed_dependence(cohort):
    a = sc.build_scenario("noisy", cohort, seed=7, n_train=400, n_test=200)
    b = sc.build_scenario("noisy", cohort, seed=7, n_train=400, n_test=200)
    c = sc.build_scenario("noisy", cohort, seed=8, n_train=400, n_test=200)
    for f in ("train_idx", "test_idx", "train_labels", "test_slice"):
        assert np.array_equal(getattr(a, f), getattr(b, f))
    assert not np.array_equal(a.train_idx, c.train_idx)


def test_build_scenario_validates(cohort):
    with pytest.raises(InputError, match="unknown parameter"):
        sc.build_scenario("rare", cohort, flip_fraction=0.1)
    with pytest.raises(InputError, match="scenario 'bogus'"):
        sc.build_scenario("bogus", cohort)
    with pytest.raises(InputError, match="slice_share"):
        sc.build_scenario("rare", cohort, slice_share=1.5)


def test_accuracy_gap(cohort):
    s = sc.rare_slice(cohort, seed=0, n_train=400, n_test=200)
    perfect = s.test_labels.copy()
    assert sc.in_slice_accuracy_gap(s, perfect) == 0.0
    miss_slice = perfect.copy()
    miss_slice[s.test_slice] = 1 - miss_slice[s.test_slice]
    assert sc.in_slice_accuracy_gap(s, miss_slice) == pytest.approx(1.0)
