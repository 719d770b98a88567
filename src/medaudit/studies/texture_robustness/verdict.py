"""Issue 12's goals as a verdict computed from an evaluation's long results table.

For a robust model against the clean baseline, on the corruptions of families the robust model never
saw (``seen`` is false) at severities 3..5:

- ``delta_dice``: mean Dice gain (classes, cases, severities, corruptions averaged), goal >= +0.05;
- ``ce_ratio``: corruption error Σ(1 − Dice) / Σ(1 − Dice_baseline) over the same conditions, goal <= 0.6
  (BigAug's unseen-domain loss ratio is about 0.28);
- ``clean_cost``: baseline clean Dice minus the model's, goal <= 0.01.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

GOAL_DELTA, GOAL_CE, GOAL_COST = 0.05, 0.6, 0.01


@dataclass(frozen=True)
class GoalCheck:
    """The three goal figures of one model against the baseline."""

    model: str
    baseline: str
    corruptions: tuple[str, ...]
    dice: float
    dice_baseline: float
    ce_ratio: float
    clean_cost: float

    @property
    def delta_dice(self) -> float:
        return self.dice - self.dice_baseline

    @property
    def met(self) -> dict[str, bool]:
        return {
            "delta_dice": self.delta_dice >= GOAL_DELTA,
            "ce_ratio": self.ce_ratio <= GOAL_CE,
            "clean_cost": self.clean_cost <= GOAL_COST,
        }


def goal_check(
    results: pd.DataFrame, model: str, baseline: str, severities: Sequence[int] = (3, 4, 5)
) -> GoalCheck | None:
    """The goal figures of ``model`` against ``baseline`` (None when it has no unseen corruption)."""
    from medaudit.texture.metrics import condition_scores

    rows = results[(results["model"] == model) & (results["severity"] > 0) & ~results["seen"].astype(bool)]
    unseen = tuple(sorted(set(rows["corruption"])))
    if not unseen:
        return None
    sc = condition_scores(results)
    sel = sc[sc["severity"].isin(list(severities)) & sc["corruption"].isin(unseen)]
    per = sel.groupby(["model", "corruption", "severity"])["dice"].mean()
    m, b = per.loc[model], per.loc[baseline]
    clean = sc[sc["severity"] == 0].groupby("model")["dice"].mean()
    return GoalCheck(
        model=model,
        baseline=baseline,
        corruptions=unseen,
        dice=float(m.groupby("corruption").mean().mean()),
        dice_baseline=float(b.groupby("corruption").mean().mean()),
        ce_ratio=float((1 - m).sum() / (1 - b).sum()) if float((1 - b).sum()) > 0 else float("nan"),
        clean_cost=float(clean.get(baseline, float("nan")) - clean.get(model, float("nan"))),
    )


def goal_verdict(results: pd.DataFrame, severities: Sequence[int] = (3, 4, 5)) -> str:
    """One ``goals:`` line per non-baseline model, saying which of the three goals the numbers meet."""
    base = sorted(set(results.loc[results["train_mode"] == "clean", "model"]))
    others = sorted(set(results.loc[results["train_mode"] != "clean", "model"]))
    if not base or not others:
        return "goals: needs one clean baseline and one other model"
    lines = []
    for m in others:
        g = goal_check(results, m, base[0], severities)
        if g is None:
            lines.append(f"goals: '{m}' has no test corruption from a family it did not see")
            continue
        ok = g.met
        word = "MEETS all three goals" if all(ok.values()) else f"meets {sum(ok.values())} of 3 goals"
        mark = {True: "met", False: "NOT met"}
        lines.append(
            f"goals: '{m}' {word} on unseen families at severities {','.join(map(str, severities))}: "
            f"Dice {g.delta_dice:+.3f} (goal >= +{GOAL_DELTA}: {mark[ok['delta_dice']]}), "
            f"CE ratio {g.ce_ratio:.2f} (goal <= {GOAL_CE}: {mark[ok['ce_ratio']]}), "
            f"clean-Dice cost {g.clean_cost:+.3f} (goal <= {GOAL_COST}: {mark[ok['clean_cost']]})."
        )
    return "\n".join(lines)
