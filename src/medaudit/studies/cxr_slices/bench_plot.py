"""The benchmark's precision plot (``precision.png``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from medaudit.io import atomic_save

#: Bar colour per fusion.
_FUSION_COLORS = {"none": "#7f8c8d", "concat": "#2980b9", "balanced": "#c0392b"}
_BAR_WIDTH = 0.4


def plot_results(
    results: pd.DataFrame,
    path: Path,
    metrics: Sequence[tuple[str, str]] = (("p10_study", "baseline"), ("p10_dcbench", "baseline_slice")),
) -> None:
    """Grouped bars: one column per scenario, one row per (metric, baseline); variants × fusion with 95%
    CI error bars, the baseline as a dashed line. Medaudit rows of the ``study`` slicer config only."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = results[(results["method"] == "medaudit")]
    if "slicer_config" in r and (r["slicer_config"] == "study").any():
        r = r[r["slicer_config"] == "study"]
    scen = list(dict.fromkeys(r["scenario"]))
    nc, nr = max(1, len(scen)), len(metrics)
    fig, axes = plt.subplots(nr, nc, figsize=(5.0 * nc, 3.6 * nr), squeeze=False)
    for row_i, (metric, base_col) in enumerate(metrics):
        for ax, s in zip(axes[row_i], scen, strict=False):
            _plot_panel(ax, r[r["scenario"] == s], f"{s}: {metric}", metric, base_col)
    _figure_legend(fig, axes)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    with atomic_save(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def _plot_panel(ax: Any, g: pd.DataFrame, title: str, metric: str, base_col: str) -> None:
    """One scenario's bars of ``metric``: a group per variant, a bar per fusion, the baseline dashed."""
    variants = list(dict.fromkeys(g["variant"]))
    for i, v in enumerate(variants):
        _variant_bars(ax, g[g["variant"] == v], i, metric)
    if base_col in g:
        ax.axhline(g[base_col].mean(), ls="--", color="k", lw=1, label=base_col)
    ax.set_xticks(range(len(variants)))
    short = [v.replace("image", "img").replace("report", "rep").replace("metadata", "meta") for v in variants]
    ax.set_xticklabels(short, rotation=35, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_title(title, fontsize=10)


def _variant_bars(ax: Any, gv: pd.DataFrame, i: int, metric: str) -> None:
    """The bars of one variant (its rows ``gv``) around x = ``i``, one per fusion, with 95% CI error bars."""
    w = _BAR_WIDTH
    fs = [f for f in ("none", "concat", "balanced") if f in set(gv["fusion"])]
    for j, f in enumerate(fs):
        row = gv[gv["fusion"] == f].iloc[0]
        x = i + (j - (len(fs) - 1) / 2) * w
        err = [[row[metric] - row[f"{metric}_lo"]], [row[f"{metric}_hi"] - row[metric]]]
        color = _FUSION_COLORS.get(f, "#999")
        ax.bar(x, row[metric], width=w * 0.95, color=color, yerr=err, capsize=2, label=f)


def _figure_legend(fig: Any, axes: Any) -> None:
    """One legend above the panels, each label once."""
    uniq: dict[str, Any] = {}
    for ax in axes.ravel():
        handles, labels = ax.get_legend_handles_labels()
        uniq.update(zip(labels, handles, strict=False))
    fig.legend(uniq.values(), uniq.keys(), fontsize=8, loc="upper center", ncol=len(uniq), frameon=False)
