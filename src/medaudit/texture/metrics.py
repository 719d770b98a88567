"""Segmentation robustness metrics (see ARCHITECTURE.md, "Robustness metrics for segmentation").

Per case and class: Dice and HD95 with MONAI's ``DiceMetric`` and
``HausdorffDistanceMetric(percentile=95)`` (HD95 in mm, from the voxel spacing).

Summaries of the long results table written by :func:`medaudit.texture.evaluate.evaluate` (columns
``model, corruption, family, severity, case, class, dice, hd95`` and optionally ``seen``). Scores are
averaged over foreground classes within a case first, then over cases. Clean rows are those with
``severity == 0`` (corruption ``none``).

- **CE** (ImageNet-C style): ``CE_c = Σ_s (1 − Dice_{c,s}) / Σ_s (1 − Dice^{base}_{c,s})``, s = 1..5, the
  baseline being the clean-trained model. **Relative CE** uses ``(Dice_clean − Dice_{c,s})`` as the error.
- **ROOD-MRI** (Boone et al. 2023; their ``roodmri.metrics.calculate_metrics``): weights ``w_s = α^s``,
  α = 2/3. Overall = ``(M_0 + Σ_{s≥1} w_s M_s) / (1 + Σ_{s≥1} w_s)``, the weighted mean over levels 0..5.
  Degradation = ``Σ_{s≥1} w_s (M_0 − M_s) / Σ_{s≥1} w_s`` for higher-is-better metrics (Dice) and
  ``Σ w_s (M_s − M_0) / Σ w_s`` for lower-is-better ones (HD95). Both per corruption, then averaged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

ALPHA = 2.0 / 3.0
CLEAN = "none"


def segmentation_scores(
    pred: torch.Tensor, label: torch.Tensor, n_classes: int, spacing: Sequence[float] = (1.0, 1.0, 1.0)
) -> tuple[np.ndarray, np.ndarray]:
    """Per foreground class (1..n_classes-1): ``(dice, hd95)`` arrays.

    ``pred`` and ``label`` are integer maps ``(D,H,W)``. Dice is NaN where the class is absent from
    the reference. HD95 (mm) is NaN where the class is absent from the reference and equals the
    volume's diagonal (the largest possible distance) where the prediction misses it entirely.
    """
    import warnings

    from monai.metrics import DiceMetric, HausdorffDistanceMetric
    from monai.networks.utils import one_hot

    p = one_hot(torch.as_tensor(pred).long()[None, None], n_classes)
    y = one_hot(torch.as_tensor(label).long()[None, None], n_classes)
    dice = (
        DiceMetric(include_background=False, reduction="none", ignore_empty=True)(p, y)[0]
        .numpy()
        .astype(float)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd = (
            HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")(
                p, y, spacing=[float(s) for s in spacing]
            )[0]
            .numpy()
            .astype(float)
        )
    diag = float(np.sqrt(sum((n * s) ** 2 for n, s in zip(pred.shape, spacing, strict=True))))
    present = y[0, 1:].flatten(1).any(1).numpy()
    predicted = p[0, 1:].flatten(1).any(1).numpy()
    hd = np.where(present & ~predicted, diag, hd)
    hd = np.where(~present, np.nan, hd)
    hd = np.where(np.isinf(hd), diag, hd)
    return dice, hd


# --------------------------------------------------------------------------------------------------
# Scalar definitions (unit-tested by hand)


def corruption_error(dice: Sequence[float], dice_base: Sequence[float]) -> float:
    """``Σ_s (1 − dice_s) / Σ_s (1 − dice^base_s)`` over the same severities."""
    e, b = np.sum(1.0 - np.asarray(dice, float)), np.sum(1.0 - np.asarray(dice_base, float))
    return float(e / b) if b > 0 else float("nan")


def relative_corruption_error(
    dice_clean: float, dice: Sequence[float], base_clean: float, dice_base: Sequence[float]
) -> float:
    """``Σ_s (clean − dice_s) / Σ_s (clean^base − dice^base_s)``."""
    e = np.sum(dice_clean - np.asarray(dice, float))
    b = np.sum(base_clean - np.asarray(dice_base, float))
    return float(e / b) if b != 0 else float("nan")


def rood_overall(clean: float, by_severity: Mapping[int, float], alpha: float = ALPHA) -> float:
    """ROOD-MRI overall score: weighted mean over levels 0..5 with weights α^s (α^0 = 1 for clean)."""
    w = {int(s): alpha ** int(s) for s in by_severity}
    num = clean + sum(w[s] * float(v) for s, v in by_severity.items())
    return float(num / (1.0 + sum(w.values())))


def rood_degradation(
    clean: float, by_severity: Mapping[int, float], higher_is_better: bool = True, alpha: float = ALPHA
) -> float:
    """ROOD-MRI degradation: weighted mean over levels 1..5 of (clean − M_s), sign flipped if lower is better."""
    w = {int(s): alpha ** int(s) for s in by_severity}
    sign = 1.0 if higher_is_better else -1.0
    num = sum(w[s] * sign * (clean - float(v)) for s, v in by_severity.items())
    return float(num / sum(w.values())) if w else float("nan")


# --------------------------------------------------------------------------------------------------
# Table summaries


def condition_scores(results: pd.DataFrame) -> pd.DataFrame:
    """Mean Dice/HD95 per ``model, corruption, family, severity`` (classes within a case, then cases)."""
    cols = [c for c in ("dice", "hd95") if c in results.columns]
    keys = [k for k in ("model", "corruption", "family", "severity") if k in results.columns]
    per_case = results.groupby([*keys, "case"], dropna=False)[cols].mean().reset_index()
    return per_case.groupby(keys, dropna=False)[cols].mean().reset_index()


def _clean_of(scores: pd.DataFrame, model: str, col: str) -> float:
    sel = scores[(scores["model"] == model) & (scores["severity"] == 0)]
    return float(sel[col].mean()) if len(sel) else float("nan")


def mean_dice_table(results: pd.DataFrame) -> pd.DataFrame:
    """Rows: models; columns: ``clean`` and each corruption (mean Dice over severities 1..5)."""
    sc = condition_scores(results)
    corr = sc[sc["severity"] > 0]
    tab = corr.groupby(["model", "corruption"])["dice"].mean().unstack("corruption")
    clean = sc[sc["severity"] == 0].groupby("model")["dice"].mean().rename("clean")
    out = pd.concat([clean.to_frame(), tab], axis=1)  # a frame: tab has no column when only clean scans ran
    out.index.name = "model"
    return out


def corruption_error_table(results: pd.DataFrame, baseline: str | None = None) -> pd.DataFrame:
    """CE and relative CE per ``model, corruption`` against the clean-trained ``baseline`` model.

    ``baseline`` defaults to the model whose ``train_filter`` is ``none``. Only severities present for
    both models are summed.
    """
    sc = condition_scores(results)
    if baseline is None:
        bl = results.loc[results.get("train_filter", pd.Series(dtype=str)) == CLEAN, "model"].unique()
        if len(bl) == 0:
            return pd.DataFrame(columns=["model", "corruption", "family", "ce", "rce"])
        baseline = str(bl[0])
    rows = []
    for (m, c, fam), g in sc[sc["severity"] > 0].groupby(["model", "corruption", "family"]):
        b = sc[(sc["model"] == baseline) & (sc["corruption"] == c) & (sc["severity"] > 0)]
        j = g.merge(b, on="severity", suffixes=("", "_b"))
        if j.empty:
            continue
        ce = corruption_error(j["dice"], j["dice_b"])
        rce = relative_corruption_error(
            _clean_of(sc, m, "dice"), j["dice"], _clean_of(sc, baseline, "dice"), j["dice_b"]
        )
        rows.append({"model": m, "corruption": c, "family": fam, "ce": ce, "rce": rce})
    return pd.DataFrame(rows)


def rood_table(results: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """ROOD-MRI overall and degradation per ``model, corruption`` for Dice (and HD95 if present)."""
    sc = condition_scores(results)
    metrics = [(c, c == "dice") for c in ("dice", "hd95") if c in sc.columns]
    rows = []
    for (m, c, fam), g in sc[sc["severity"] > 0].groupby(["model", "corruption", "family"]):
        r: dict[str, object] = {"model": m, "corruption": c, "family": fam}
        for col, hib in metrics:
            clean = _clean_of(sc, m, col)
            by_s = {int(s): float(v) for s, v in zip(g["severity"], g[col], strict=True)}
            r[f"{col}_overall"] = rood_overall(clean, by_s, alpha)
            r[f"{col}_degradation"] = rood_degradation(clean, by_s, hib, alpha)
        rows.append(r)
    return pd.DataFrame(rows)


def model_summary(results: pd.DataFrame, baseline: str | None = None) -> pd.DataFrame:
    """One row per model: clean Dice, mean corrupted Dice, mCE, mean relative CE, ROOD scores (averaged
    over corruptions), and mean Dice on seen vs unseen corruption families."""
    sc = condition_scores(results)
    ce = corruption_error_table(results, baseline)
    rood = rood_table(results)
    rows = []
    for m in sorted(sc["model"].unique()):
        corr = sc[(sc["model"] == m) & (sc["severity"] > 0)]
        r: dict[str, object] = {
            "model": m,
            "clean_dice": _clean_of(sc, m, "dice"),
            "corrupted_dice": float(corr["dice"].mean()),
        }
        if not ce.empty:
            cm = ce[ce["model"] == m]
            r["mCE"], r["mRCE"] = float(cm["ce"].mean()), float(cm["rce"].mean())
        rm = rood[rood["model"] == m] if not rood.empty else rood
        for col in [c for c in rood.columns if c.endswith(("_overall", "_degradation"))]:
            r[col] = float(rm[col].mean())
        if "seen" in results.columns:
            sub = results[(results["model"] == m) & (results["severity"] > 0)]
            for flag, name in ((True, "seen"), (False, "unseen")):
                s = sub[sub["seen"] == flag]
                r[f"dice_{name}"] = float(condition_scores(s)["dice"].mean()) if len(s) else float("nan")
        rows.append(r)
    return pd.DataFrame(rows)


def seen_unseen_table(results: pd.DataFrame) -> pd.DataFrame:
    """Mean Dice per ``model, family`` with whether the family was seen in that model's training."""
    sub = results[results["severity"] > 0]
    if sub.empty or "seen" not in sub.columns:
        return pd.DataFrame(columns=["model", "family", "seen", "dice"])
    per = sub.groupby(["model", "family", "seen", "case"])["dice"].mean().reset_index()
    return per.groupby(["model", "family", "seen"])["dice"].mean().reset_index()
