"""Issue 12's goal verdict is computed from unseen conditions at severities 3-5 only."""

from __future__ import annotations

import pandas as pd
import pytest

from medaudit.studies.texture_robustness.verdict import goal_check, goal_verdict


def _rows(model_unseen, base_unseen, model_clean=0.80, base_clean=0.80, model_seen=0.1):
    rows = []

    def add(model, mode, corr, fam, seen, sev, dice):
        for case in ("a", "b"):
            for cls in ("csf", "gm", "wm"):
                rows.append(
                    dict(model=model, train_mode=mode, corruption=corr, family=fam, seen=seen, severity=sev)
                    | {"case": case, "class": cls, "dice": dice}
                )

    add("none", "clean", "none", "clean", False, 0, base_clean)
    add("bigaug", "bigaug", "none", "clean", False, 0, model_clean)
    for sev in (1, 2, 3, 4, 5):
        low = sev < 3  # severities 1-2 must not count: make them absurd
        add("none", "clean", "motion", "motion", False, sev, 0.0 if low else base_unseen)
        add("bigaug", "bigaug", "motion", "motion", False, sev, 1.0 if low else model_unseen)
        add("none", "clean", "gaussian_noise", "noise", False, sev, 0.5)
        add("bigaug", "bigaug", "gaussian_noise", "noise", True, sev, model_seen)  # seen: must not count
    return pd.DataFrame(rows)


def test_goal_figures():
    g = goal_check(_rows(0.75, 0.50), "bigaug", "none")
    assert g.corruptions == ("motion",)
    assert g.delta_dice == pytest.approx(0.25)
    assert g.ce_ratio == pytest.approx(0.25 / 0.5)
    assert g.clean_cost == pytest.approx(0.0)
    assert all(g.met.values())


def test_goal_verdict_says_which_goals_fail():
    v = goal_verdict(_rows(0.75, 0.50))
    assert "'bigaug' MEETS all three goals" in v
    v = goal_verdict(_rows(0.52, 0.50, model_clean=0.70))
    assert "meets 0 of 3 goals" in v and "Dice +0.020" in v and "NOT met" in v
    assert "clean-Dice cost +0.100" in v
    assert goal_verdict(_rows(0.5, 0.5).query("model == 'none'")).startswith("goals: needs")
