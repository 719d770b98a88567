"""Robustness metrics checked against numbers computed by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from medaudit.texture import metrics as tm


def test_corruption_error_by_hand():
    # model errors 0.1+0.2+0.3 = 0.6; baseline errors 0.2+0.4+0.6 = 1.2
    assert tm.corruption_error([0.9, 0.8, 0.7], [0.8, 0.6, 0.4]) == pytest.approx(0.5)
    # relative: (0.95-0.9)+(0.95-0.8)+(0.95-0.7) = 0.45 ; (0.9-0.8)+(0.9-0.6)+(0.9-0.4) = 0.9
    assert tm.relative_corruption_error(0.95, [0.9, 0.8, 0.7], 0.9, [0.8, 0.6, 0.4]) == pytest.approx(0.5)


def test_rood_scores_by_hand():
    a = 2 / 3
    by = {1: 0.8, 2: 0.6}
    # overall = (0.9 + a*0.8 + a^2*0.6) / (1 + a + a^2) = (0.9 + 0.53333 + 0.26667) / 2.11111
    assert tm.rood_overall(0.9, by) == pytest.approx(1.7 / (1 + a + a * a))
    assert tm.rood_overall(0.9, by) == pytest.approx(0.805263, abs=1e-6)
    # degradation = (a*0.1 + a^2*0.3) / (a + a^2) = (0.066667 + 0.133333) / 1.111111 = 0.18
    assert tm.rood_degradation(0.9, by) == pytest.approx(0.18)
    # lower is better (HD95): corrupted - clean
    assert tm.rood_degradation(2.0, {1: 3.0, 2: 5.0}, higher_is_better=False) == pytest.approx(
        (a * 1 + a * a * 3) / (a + a * a)
    )


def test_segmentation_scores_cubes():
    lab = torch.zeros(10, 10, 10, dtype=torch.long)
    lab[2:6, 2:6, 2:6] = 1
    lab[6:9, 6:9, 6:9] = 2
    pred = lab.clone()
    pred[2:6, 2:6, 2:4] = 0  # half of class 1 missing -> dice = 2*32/(32+64) = 2/3
    pred[6:9, 6:9, 6:9] = 0  # class 2 entirely missed -> HD95 = diagonal
    dice, hd = tm.segmentation_scores(pred, lab, 4, spacing=(2.0, 1.0, 1.0))
    assert dice[0] == pytest.approx(2 / 3)
    assert dice[1] == pytest.approx(0.0)
    assert np.isnan(dice[2]) and np.isnan(hd[2])  # class 3 absent from the reference
    assert hd[1] == pytest.approx(np.sqrt(20**2 + 10**2 + 10**2))
    assert 0 < hd[0] <= 2.0 * 2 + 1e-6  # missing slab along the third axis (1 mm voxels)


def _rows():
    """Two models, one corruption at severities 1..2, two cases, one class; Dice chosen by hand."""
    d = {  # model -> {severity: dice}
        "none": {0: 0.9, 1: 0.7, 2: 0.5},
        "f@3": {0: 0.8, 1: 0.75, 2: 0.7},
    }
    rows = []
    for m, by in d.items():
        for s, v in by.items():
            for case, delta in (("c1", 0.05), ("c2", -0.05)):
                rows.append(
                    {
                        "model": m,
                        "train_filter": "none" if m == "none" else "f",
                        "corruption": "none" if s == 0 else "noise",
                        "family": "clean" if s == 0 else "noise",
                        "seen": False,
                        "severity": s,
                        "case": case,
                        "class": "A",
                        "dice": v + delta,
                        "hd95": 10.0 * (s + 1),
                    }
                )
    return pd.DataFrame(rows)


def test_tables_from_long_results():
    df = _rows()
    ce = tm.corruption_error_table(df).set_index("model")
    # f@3: errors 0.25+0.3 = 0.55 ; none: 0.3+0.5 = 0.8
    assert ce.loc["f@3", "ce"] == pytest.approx(0.55 / 0.8)
    assert ce.loc["none", "ce"] == pytest.approx(1.0)
    # relative: (0.05+0.1)/(0.2+0.4)
    assert ce.loc["f@3", "rce"] == pytest.approx(0.15 / 0.6)
    md = tm.mean_dice_table(df)
    assert md.loc["none", "clean"] == pytest.approx(0.9) and md.loc["none", "noise"] == pytest.approx(0.6)
    rood = tm.rood_table(df).set_index("model")
    a = 2 / 3
    assert rood.loc["none", "dice_overall"] == pytest.approx((0.9 + a * 0.7 + a * a * 0.5) / (1 + a + a * a))
    assert rood.loc["none", "hd95_degradation"] == pytest.approx((a * 10 + a * a * 20) / (a + a * a))
    summ = tm.model_summary(df).set_index("model")
    assert summ.loc["f@3", "mCE"] == pytest.approx(0.55 / 0.8)
    assert np.isnan(summ.loc["f@3", "dice_seen"]) and summ.loc["f@3", "dice_unseen"] == pytest.approx(0.725)
