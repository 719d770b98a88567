"""HTML robustness report for the results of :func:`medaudit.texture.evaluate.evaluate`.

One self-contained file (``templates/texture.html``, extending ``base.html``): a summary table per
model (clean Dice, mCE, relative mCE, ROOD-MRI scores, seen vs unseen families), a heatmap of
training filter x test corruption (mean Dice over severities 1..5), severity curves per corruption,
the CE table, and example slices (clean, corrupted, each model's prediction).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medaudit import __version__
from medaudit.io import atomic_write_text
from medaudit.report.html import array_to_data_uri, figure_to_data_uri, render
from medaudit.texture import metrics as tm


def _fmt(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return "—" if not np.isfinite(v) else f"{float(v):.3f}"
    return str(v)


def _table(df: pd.DataFrame, index: bool = False) -> dict[str, Any]:
    d = df.reset_index() if index else df
    return {
        "columns": [str(c) for c in d.columns],
        "rows": [[_fmt(v) for v in r] for r in d.itertuples(index=False)],
    }


def heatmap_figure(table: pd.DataFrame) -> Any:
    """Models x (clean + corruptions) mean Dice heatmap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vals = table.to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * vals.shape[1], 0.9 + 0.5 * vals.shape[0]))
    im = ax.imshow(vals, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(vals.shape[1]), [str(c) for c in table.columns], rotation=40, ha="right")
    ax.set_yticks(range(vals.shape[0]), [str(i) for i in table.index])
    for i in range(vals.shape[0]):
        for j in range(vals.shape[1]):
            if np.isfinite(vals[i, j]):
                ax.text(
                    j,
                    i,
                    f"{vals[i, j]:.2f}",
                    ha="center",
                    va="center",
                    color="w" if vals[i, j] < 0.6 else "k",
                    fontsize=8,
                )
    ax.set_xlabel("test corruption (mean Dice over severities 1..5)")
    ax.set_ylabel("training filter")
    fig.colorbar(im, ax=ax, fraction=0.03)
    return fig


def severity_figure(results: pd.DataFrame) -> Any:
    """Mean Dice vs severity (0 = clean), one panel per corruption, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sc = tm.condition_scores(results)
    corrs = sorted(sc.loc[sc["severity"] > 0, "corruption"].unique())
    n = max(1, len(corrs))
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False, sharey=True)
    for k, c in enumerate(corrs):
        ax = axes[k // cols][k % cols]
        for m in sorted(sc["model"].unique()):
            clean = sc[(sc["model"] == m) & (sc["severity"] == 0)]["dice"]
            g = sc[(sc["model"] == m) & (sc["corruption"] == c)].sort_values("severity")
            xs = ([0] if len(clean) else []) + g["severity"].tolist()
            ys = ([float(clean.mean())] if len(clean) else []) + g["dice"].tolist()
            ax.plot(xs, ys, marker="o", label=str(m))
        ax.set_title(str(c), fontsize=9)
        ax.set_xlabel("severity")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    for k in range(len(corrs), rows * cols):
        axes[k // cols][k % cols].axis("off")
    axes[0][0].set_ylabel("mean Dice")
    if corrs:  # clean scans only: no curve, and an empty legend is a matplotlib warning on stderr
        axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


_THUMB = 160


def _thumb_size(size: tuple[int, int]) -> tuple[int, int]:
    k = _THUMB / max(size)
    return max(1, round(size[0] * k)), max(1, round(size[1] * k))


def _upsample(a: np.ndarray) -> np.ndarray:
    """Nearest-neighbour enlargement so small working-resolution slices are visible."""
    k = max(1, _THUMB // max(a.shape))
    return np.kron(np.asarray(a, dtype=np.float32), np.ones((k, k), dtype=np.float32))


def _label_uri(lab: np.ndarray, n_classes: int) -> str:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    rgb = np.zeros((*lab.shape, 3), dtype=np.float32)
    for k in range(1, max(int(n_classes), int(lab.max()) + 1)):
        rgb[lab == k] = cmap(k % 10)[:3]
    import base64
    import io

    from PIL import Image

    im = Image.fromarray((np.rot90(rgb) * 255).astype(np.uint8))
    im = im.resize(_thumb_size(im.size), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _examples_ctx(examples: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not examples:
        return None
    n = int(
        max(
            [examples["label"].max() if examples.get("label") is not None else 0]
            + [p.max() for r in examples["rows"] for p in r["predictions"].values()]
        )
        + 1
    )
    models = list(examples["rows"][0]["predictions"]) if examples["rows"] else []
    rows = []
    for r in examples["rows"]:
        rows.append(
            {
                "corruption": r["corruption"],
                "severity": r["severity"],
                "image": array_to_data_uri(_upsample(np.rot90(r["image"])), size=None),
                "predictions": [_label_uri(r["predictions"][m], n) for m in models],
            }
        )
    return {
        "case": examples["case"],
        "models": models,
        "label": None if examples.get("label") is None else _label_uri(examples["label"], n),
        "rows": rows,
    }


def write_report(
    results: pd.DataFrame,
    out_path: str | Path,
    examples: Mapping[str, Any] | None = None,
    title: str = "Texture robustness report",
    notes: list[str] | None = None,
    baseline: str | None = None,
    texture_bias: pd.DataFrame | None = None,
) -> Path:
    """Render the robustness report to ``out_path`` (atomic); returns the path.

    ``texture_bias``: the per-model table of :func:`medaudit.texture.bias.summarise`, shown when given.
    """
    summary = tm.model_summary(results, baseline)
    heat = tm.mean_dice_table(results)
    ce = tm.corruption_error_table(results, baseline)
    rood = tm.rood_table(results)
    su = tm.seen_unseen_table(results)
    trained = (
        results.groupby("model")[["train_filter", "train_mode", "train_severity", "train_families"]]
        .first()
        .reset_index()
        if "train_filter" in results.columns
        else pd.DataFrame()
    )
    html = render(
        "texture.html",
        version=__version__,
        title=title,
        notes=list(notes or []),
        n_cases=int(results["case"].nunique()),
        corruptions=sorted(c for c in results["corruption"].unique() if c != tm.CLEAN),
        severities=sorted(int(s) for s in results["severity"].unique() if s > 0),
        severity_versions=sorted(
            int(v) for v in results.get("severity_version", pd.Series([1])).fillna(1).unique()
        ),
        models=_table(trained),
        summary=_table(summary),
        heatmap=figure_to_data_uri(heatmap_figure(heat)) if not heat.empty else None,
        heat_table=_table(heat, index=True),
        curves=figure_to_data_uri(severity_figure(results)),
        ce=_table(ce) if not ce.empty else None,
        rood=_table(rood) if not rood.empty else None,
        seen_unseen=_table(su) if not su.empty else None,
        examples=_examples_ctx(examples),
        texture_bias=_table(texture_bias) if texture_bias is not None and not texture_bias.empty else None,
    )
    return atomic_write_text(out_path, html)


def format_table(results: pd.DataFrame, baseline: str | None = None) -> pd.DataFrame:
    """The summary table printed by the CLI (one row per model)."""
    return tm.model_summary(results, baseline)
