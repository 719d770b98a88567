"""Hand-computed cases for the slice-discovery metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medaudit.errors import InputError
from medaudit.studies.cxr_slices.metrics import (
    error_share_baseline,
    precision_at_k_dcbench,
    precision_at_k_study,
)


def test_dcbench_picks_best_ap_slice():
    gt = np.array([1, 1, 0, 0, 0, 0], dtype=bool)
    scores = np.array(
        [
            [0.9, 0.1],
            [0.2, 0.8],
            [0.8, 0.7],
            [0.1, 0.6],
            [0.0, 0.0],
            [0.0, 0.0],
        ]
    )
    # slice 0 ranks 0 (gt), 2, 1 (gt): AP = (1/1 + 2/3)/2 = 0.833; slice 1 ranks 1 (gt), 2, 3, 0 (gt):
    # AP = (1 + 2/4)/2 = 0.75; complements are worse -> slice 0; its top-2 are rows 0 and 2 -> 1/2.
    assert precision_at_k_dcbench(scores, gt, k=2) == pytest.approx(0.5)
    assert precision_at_k_dcbench(scores, gt, k=1) == pytest.approx(1.0)
    assert precision_at_k_dcbench(scores, gt, k=3) == pytest.approx(2 / 3)


def test_dcbench_uses_complements():
    gt = np.array([1, 1, 0, 0], dtype=bool)
    scores = np.array([[0.0], [0.1], [0.9], [1.0]])  # anti-correlated: the complement is perfect
    assert precision_at_k_dcbench(scores, gt, k=2) == pytest.approx(1.0)


def test_dcbench_k_clipped_and_errors():
    gt = np.array([1, 0, 0], dtype=bool)
    assert precision_at_k_dcbench(np.array([0.9, 0.1, 0.2]), gt, k=10) == pytest.approx(1 / 3)
    with pytest.raises(InputError, match="some but not all"):
        precision_at_k_dcbench(np.ones((3, 1)), np.zeros(3, bool))
    with pytest.raises(InputError, match="gt"):
        precision_at_k_dcbench(np.ones((3, 1)), np.zeros(4, bool))
    with pytest.raises(InputError, match=r"non-finite.*row 1"):
        precision_at_k_dcbench(np.array([0.1, np.nan, 0.2]), gt)


def test_study_precision_hand_computed():
    targets = np.array([0, 0, 0, 1, 1, 1])
    gt = np.array([1, 1, 0, 0, 0, 1], dtype=bool)
    scores = np.array(
        [
            [0.9, 0.0],
            [0.8, 0.1],
            [0.7, 0.0],
            [0.1, 0.9],
            [0.0, 0.9],
            [0.0, 0.95],
        ]
    )
    # slice 0: majority class 0; top-2 rows 0, 1 both in gt -> (0.9 + 0.8) / 2 = 0.85
    # slice 1: majority class 1 -> ignored for target_class 0
    assert precision_at_k_study(scores, gt, targets, target_class=0, k=2) == pytest.approx(0.85)
    # k=3: rows 0, 1, 2 -> (0.9 + 0.8 + 0) / 3
    assert precision_at_k_study(scores, gt, targets, target_class=0, k=3) == pytest.approx(1.7 / 3)
    # target class 1: slice 1, top-2 rows 5 (0.95, gt) and 3 (0.9, not gt; ties by row order) -> 0.475
    assert precision_at_k_study(scores, gt, targets, target_class=1, k=2) == pytest.approx(0.475)
    # no slice with majority class 2 -> 0.0
    assert precision_at_k_study(scores, gt, targets, target_class=2, k=2) == 0.0


def test_error_share_baseline():
    gt = np.array([1, 0, 1, 0, 1], dtype=bool)
    targets = np.array([0, 0, 1, 1, 0])
    preds = np.array([1, 0, 0, 1, 1])  # errors at rows 0, 2, 4 -> all in gt
    assert error_share_baseline(gt, targets, preds) == pytest.approx(1.0)
    probs = np.array([0.9, 0.1, 0.4, 0.3, 0.2])  # thresholded: 1, 0, 0, 0, 0 -> errors rows 0, 2, 3
    assert error_share_baseline(gt, targets, probs) == pytest.approx(2 / 3)
    assert math.isnan(error_share_baseline(gt, targets, targets))
    scores2 = np.stack([1 - probs, probs], 1)
    assert error_share_baseline(gt, targets, scores2) == pytest.approx(2 / 3)
