"""The self-contained HTML report of an audit run (``report.html``): a slice browser.

Summary, error-rate bars with Wilson 95% intervals and a 2-D map (PCA of the fused embedding); a slice
table to sort and filter (error rate, size, concept / n-gram); per slice its rule and concepts (when the
slicer gives them), a comparison with its complement, n-gram and metadata tables, and a pager over every
member (thumbnail, label, prediction, report with the findings sentence highlighted); a search box over
the report text. Server-side text goes through jinja2 autoescaping; the browser's data is one JSON data
block (:func:`medaudit.report.csp.json_script`) rendered with DOM APIs and ``textContent`` only. The page
has no external reference, and its CSP allows its inline style and script by hash only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from markupsafe import Markup

from medaudit import __version__
from medaudit.io import atomic_write_text
from medaudit.report.html import figure_to_data_uri, render

__all__ = ["error_bar_figure", "map_figure", "render_audit_report", "write_audit_report"]

_ASSETS = ("audit_browser.css", "audit_browser.js")
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


def _fmt(x: Any, nd: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        if not np.isfinite(x):
            return "–"
        return f"{x:.{nd}g}" if abs(x) < 1e-3 and x != 0 else f"{x:.{nd}f}"
    return str(x)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _compare_rows(table: Any, scores: np.ndarray, s: dict[str, Any], threshold: float) -> list[dict]:
    """Slice vs complement, row by row (members: score > threshold; top-k slices: their exemplars)."""
    from medaudit.report.slice_browser import complement_stats

    mask = scores[:, s["rank"] - 1] > threshold
    if not mask.any():
        ids = set(s["exemplar_ids"])
        mask = np.array([str(c) in ids for c in table.df["id"].tolist()], dtype=bool)
    st = complement_stats(table, mask)
    rows = []
    for name, key, fmt in (
        ("cases", "n", str),
        ("errors", "errors", str),
        ("error rate", "error_rate", _pct),
        ("label positive", "label_pos", _pct),
        ("predicted positive", "pred_pos", _pct),
        ("false positives", "fp", str),
        ("false negatives", "fn", str),
        ("mean probability", "mean_prob", _fmt),
    ):
        rows.append({"name": name, "slice": fmt(st["slice"][key]), "complement": fmt(st["complement"][key])})
    for g in ("slice", "complement"):
        lo, hi = st[g]["error_ci"]
        st[g]["ci"] = "–" if lo is None else f"[{_pct(lo)}, {_pct(hi)}]"
    rows.insert(
        3, {"name": "error rate 95% CI", "slice": st["slice"]["ci"], "complement": st["complement"]["ci"]}
    )
    return rows


def _slice_context(
    s: dict[str, Any], table: Any, scores: np.ndarray, threshold: float, target: str | None, max_meta: int
) -> dict[str, Any]:
    """Everything the template shows for one slice (numbers formatted, optional fields made readable)."""
    from medaudit.report.slice_browser import BrowserLimits, clip_text, concept_names, rule_text, slice_terms

    meta_rows = [
        {
            **m,
            # a free-text column's value is shown cut, as in the member cards (slices.json has it whole)
            "value": clip_text(str(m.get("value", "")), BrowserLimits.meta_chars),
            "in_fmt": _fmt(m["in_slice"]),
            "out_fmt": _fmt(m["out_slice"]),
            "effect_fmt": _fmt(m["effect"]),
            "q_fmt": _fmt(m["q_value"]),
            "p_fmt": _fmt(m["p_value"]),
        }
        for m in s["explanation"].get("metadata", [])[:max_meta]
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
    chips = concept_names(s.get("concepts"))
    terms = chips + [str(g["ngram"]) for g in ngrams] + ([rule_text(s.get("rule"))] if s.get("rule") else [])
    n_err = s.get("n_errors")
    return {
        **s,
        "error_fmt": _fmt(s["error_rate"]),
        "error_sort": "" if s["error_rate"] is None else s["error_rate"],
        "n_errors_fmt": _fmt(n_err),
        "n_errors_sort": "" if n_err is None else n_err,
        "ci_fmt": f"[{_fmt(s['error_ci'][0])}, {_fmt(s['error_ci'][1])}]",
        "soft_error_fmt": _fmt(s["soft_error_rate"]),
        "soft_error_sort": "" if s["soft_error_rate"] is None else s["soft_error_rate"],
        "soft_size_fmt": f"{s['soft_size']:.1f}",
        "ngrams_ctx": ngrams,
        "metadata_ctx": meta_rows,
        "rule_line": rule_text(s.get("rule")),
        "concept_chips": chips,
        "kind_text": str(s.get("kind") or ""),
        "terms_json": json.dumps(terms, ensure_ascii=False),
        "mark_terms": slice_terms(s, target),
        "compare_rows": _compare_rows(table, scores, s, threshold),
    }


def _notes(data: dict[str, Any], lim: Any) -> tuple[str, str]:
    n_rep = len(data["reports"])
    if data["all_reports"]:
        search = f"Searches the text of all {n_rep} reports."
    else:
        search = (
            f"Searches the {n_rep} embedded reports (the best {lim.reports_per_slice} members of each "
            f"slice; this audit has {data['n_cases']} cases, more than {lim.all_reports_up_to})."
        )
    limits = (
        f"Every member of every slice is listed (id, label, prediction, probability, membership). Report "
        f"text ({n_rep} reports, at most {lim.report_chars} characters each) is embedded for every case "
        f"when the audit has at most {lim.all_reports_up_to} cases, otherwise for the best "
        f"{lim.reports_per_slice} members of each slice. Thumbnails ({lim.thumb_px} px JPEG, "
        f"{len(data['thumbs'])} embedded) cover the best {lim.thumbs_per_slice} members of each slice and "
        f"are drawn only for the page on screen. Everything else is in membership.parquet, the case table "
        f"and AuditResult.members(). The file loads nothing from the network."
    )
    return search, limits


def render_audit_report(
    payload: dict[str, Any],
    table: Any,
    scores: np.ndarray,
    embedding: np.ndarray | None,
    max_metadata_rows: int = 10,
    limits: Any = None,
) -> str:
    """Render report.html (the slice browser) from slices.json's payload, the case table and scores.

    ``limits`` (:class:`medaudit.report.slice_browser.BrowserLimits`) caps the embedded report text and
    thumbnails; the page's CSP allows its own inline style and script by their SHA-256 hashes only.
    """
    from medaudit.audit.outputs import to_jsonable
    from medaudit.report.csp import CSP_PLACEHOLDER, json_script
    from medaudit.report.html import environment
    from medaudit.report.slice_browser import BrowserLimits, browser_data

    limits = limits or BrowserLimits()
    scores = np.asarray(scores, dtype=np.float64)
    counts = payload["counts"]
    threshold = float(payload.get("config", {}).get("membership_threshold", 0.5))
    data = browser_data(payload, table, scores, limits)
    target = data["target"]
    slices_ctx = [
        _slice_context(s, table, scores, threshold, target, max_metadata_rows) for s in payload["slices"]
    ]
    all_terms = sorted({t for s in slices_ctx for t in json.loads(s["terms_json"])})
    bar = error_bar_figure(payload["slices"], counts.get("error_rate"))
    seed = int(payload.get("config", {}).get("seed", 0) or 0)
    cmap = map_figure(embedding, scores, seed=seed) if embedding is not None else None
    search_note, limits_note = _notes(data, limits)
    loader = environment().loader
    assert loader is not None
    asset = {name: Markup(loader.get_source(environment(), name)[0]) for name in _ASSETS}
    html = render(
        "audit.html",
        version=__version__,
        payload=payload,
        counts=counts,
        overall_error_fmt=_fmt(counts.get("error_rate")),
        slices=slices_ctx,
        bar_uri=bar,
        map_uri=cmap,
        target=target,
        meter_low=min(float(counts.get("error_rate") or 0.0), 0.999),
        meter_high=min(2 * float(counts.get("error_rate") or 0.0), 1.0),
        has_kind=any(s.get("kind") for s in payload["slices"]),
        all_terms=all_terms,
        search_note=search_note,
        limits_note=limits_note,
        csp_placeholder=CSP_PLACEHOLDER,
        data_json=json_script(to_jsonable(data)),  # NaN -> null, numpy scalars -> Python
        browser_css=asset["audit_browser.css"],
        browser_js=asset["audit_browser.js"],
    )
    return html  # render() filled the CSP placeholder with the page's hashes


def write_audit_report(
    path: str | os.PathLike[str],
    payload: dict[str, Any],
    table: Any,
    scores: np.ndarray,
    embedding: np.ndarray | None = None,
) -> Path:
    """Render and write report.html atomically; returns the path."""
    return atomic_write_text(path, render_audit_report(payload, table, scores, embedding))
