"""The self-contained HTML report of an audit run (``report.html``).

Summary, ranked slices with error-rate bars and Wilson 95% intervals, n-gram and metadata tables,
exemplar thumbnails and report excerpts, and a 2-D map (PCA of the fused embedding) coloured by slice.
Every text goes through jinja2 autoescaping (:func:`medaudit.report.html.render`); figures and
thumbnails are embedded as data URIs, so the file has no external reference.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from medaudit import __version__
from medaudit.io import atomic_write_text
from medaudit.report.html import array_to_data_uri, figure_to_data_uri, render

__all__ = ["error_bar_figure", "map_figure", "render_audit_report", "write_audit_report"]

_EXCERPT_CHARS = 400
_MAP_MAX_POINTS = 5000


def error_bar_figure(slices: list[dict[str, Any]], overall_error: float | None) -> str:
    """Horizontal bars of each slice's error rate with its Wilson 95% interval, as a data URI."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    k = len(slices)
    fig, ax = plt.subplots(figsize=(6.4, 0.5 + 0.45 * max(k, 1)))
    ys = np.arange(k)[::-1]
    rates = [s["error_rate"] if s["error_rate"] is not None else 0.0 for s in slices]
    lo = [
        max(0.0, s["error_rate"] - s["error_ci"][0])
        if s["error_rate"] is not None and s["error_ci"][0] is not None
        else 0.0
        for s in slices
    ]
    hi = [
        max(0.0, s["error_ci"][1] - s["error_rate"])
        if s["error_rate"] is not None and s["error_ci"][1] is not None
        else 0.0
        for s in slices
    ]
    ax.barh(ys, rates, xerr=[lo, hi], color="#c0392b", alpha=0.85, capsize=3)
    ax.set_yticks(ys, [f"slice {s['rank']} (n={s['size']})" for s in slices])
    if overall_error is not None:
        ax.axvline(overall_error, color="#333", ls="--", lw=1, label=f"all cases ({overall_error:.2f})")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("error rate among members (95% Wilson CI)")
    fig.tight_layout()
    return figure_to_data_uri(fig)


def map_figure(
    embedding: np.ndarray, scores: np.ndarray, threshold: float = 0.5, seed: int = 0
) -> str | None:
    """PCA map of the fused embedding, each case coloured by its best slice (grey: no slice > threshold)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    x = np.asarray(embedding, dtype=np.float64)
    n = x.shape[0]
    if n < 3 or x.shape[1] < 2:
        return None
    idx = np.arange(n)
    if n > _MAP_MAX_POINTS:
        idx = np.sort(np.random.default_rng(seed).choice(n, _MAP_MAX_POINTS, replace=False))
    xy = PCA(n_components=2, random_state=seed).fit_transform(x[idx])
    best = scores[idx].argmax(axis=1)
    member = scores[idx].max(axis=1) > threshold
    fig, ax = plt.subplots(figsize=(6.4, 5.0))
    ax.scatter(xy[~member, 0], xy[~member, 1], s=6, c="#bbbbbb", label="no slice", linewidths=0)
    cmap = plt.get_cmap("tab10")
    for j in range(scores.shape[1]):
        sel = member & (best == j)
        if sel.any():
            ax.scatter(xy[sel, 0], xy[sel, 1], s=9, color=cmap(j % 10), label=f"slice {j + 1}", linewidths=0)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title("fused embedding (PCA), coloured by slice")
    ax.legend(fontsize=8, markerscale=2, loc="best")
    fig.tight_layout()
    return figure_to_data_uri(fig)


def _thumbnail(path: object) -> str | None:
    if not isinstance(path, str) or not path:
        return None
    try:
        from medaudit.data.images import read_grayscale

        return array_to_data_uri(read_grayscale(path), size=160)
    except Exception:  # a thumbnail is optional; an unreadable image is reported by the encoder
        return None


def _fmt(x: Any, nd: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        if not np.isfinite(x):
            return "–"
        return f"{x:.{nd}g}" if abs(x) < 1e-3 and x != 0 else f"{x:.{nd}f}"
    return str(x)


def render_audit_report(
    payload: dict[str, Any],
    table: Any,
    scores: np.ndarray,
    embedding: np.ndarray | None,
    max_metadata_rows: int = 10,
) -> str:
    """Render report.html from a slices.json payload, the case table, membership scores and embedding."""
    df = table.df
    row_of = {str(cid): i for i, cid in enumerate(df["id"].tolist())}
    counts = payload["counts"]
    slices_ctx = []
    for s in payload["slices"]:
        exemplars = []
        for cid in s["exemplar_ids"]:
            i = row_of[cid]
            rep = df["report"].iat[i]
            text = rep if isinstance(rep, str) else ""
            exemplars.append(
                {
                    "id": cid,
                    "label": int(df["label"].iat[i]),
                    "pred": int(df["pred"].iat[i]),
                    "prob": float(df["prob"].iat[i]),
                    "score": float(scores[i, s["rank"] - 1]),
                    "thumb": _thumbnail(df["image"].iat[i]),
                    "excerpt": text[:_EXCERPT_CHARS] + ("…" if len(text) > _EXCERPT_CHARS else ""),
                }
            )
        meta_rows = [
            {
                **m,
                "in_fmt": _fmt(m["in_slice"]),
                "out_fmt": _fmt(m["out_slice"]),
                "effect_fmt": _fmt(m["effect"]),
                "q_fmt": _fmt(m["q_value"]),
                "p_fmt": _fmt(m["p_value"]),
            }
            for m in s["explanation"].get("metadata", [])[:max_metadata_rows]
        ]
        ngrams = [
            {
                **g,
                "diff_fmt": f"{g['diff']:+.4f}",
                "sfrac": _fmt(g["slice_doc_frac"], 2),
                "rfrac": _fmt(g["reference_doc_frac"], 2),
            }
            for g in s["explanation"].get("ngrams", [])
        ]
        slices_ctx.append(
            {
                **s,
                "error_fmt": _fmt(s["error_rate"]),
                "ci_fmt": f"[{_fmt(s['error_ci'][0])}, {_fmt(s['error_ci'][1])}]",
                "soft_error_fmt": _fmt(s["soft_error_rate"]),
                "soft_size_fmt": f"{s['soft_size']:.1f}",
                "ngrams_ctx": ngrams,
                "metadata_ctx": meta_rows,
                "exemplars": exemplars,
                "n_members_shown": min(len(s["member_ids"]), 50),
            }
        )
    bar = error_bar_figure(payload["slices"], counts.get("error_rate"))
    seed = int(payload.get("config", {}).get("seed", 0) or 0)
    cmap = map_figure(embedding, scores, seed=seed) if embedding is not None else None
    return render(
        "audit.html",
        version=__version__,
        payload=payload,
        counts=counts,
        overall_error_fmt=_fmt(counts.get("error_rate")),
        slices=slices_ctx,
        bar_uri=bar,
        map_uri=cmap,
        has_images=bool(df["image"].notna().any()),
    )


def write_audit_report(
    path: str | os.PathLike[str],
    payload: dict[str, Any],
    table: Any,
    scores: np.ndarray,
    embedding: np.ndarray | None = None,
) -> Path:
    """Render and write report.html atomically; returns the path."""
    return atomic_write_text(path, render_audit_report(payload, table, scores, embedding))
