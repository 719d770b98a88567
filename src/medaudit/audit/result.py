"""An audit's result in a notebook: slices as a DataFrame, the members of one slice, a compact HTML view.

These back :meth:`AuditResult.to_frame`, :meth:`AuditResult.members` and
:meth:`AuditResult._repr_html_` (what Jupyter shows for a result), in the spirit of cleanlab's Datalab,
which hands its findings back as DataFrames.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import pandas as pd

from medaudit.errors import InputError

__all__ = ["result_html", "slice_members", "slices_frame"]

_FRAME_COLUMNS = [
    "rank",
    "name",
    "size",
    "n_errors",
    "error_rate",
    "error_ci_low",
    "error_ci_high",
    "soft_size",
    "soft_error_rate",
    "slicer_score",
    "basis",
    "top_ngrams",
    "top_metadata",
]


def _top_metadata(s: dict[str, Any], k: int = 3) -> str:
    rows = s.get("explanation", {}).get("metadata", [])[:k]
    return "; ".join(f"{m.get('column')}={m.get('value')}" for m in rows)


def slices_frame(slices: list[dict[str, Any]], n_ngrams: int = 5) -> pd.DataFrame:
    """One row per slice, in rank order, indexed by rank.

    Optional fields that a slicer may add (``kind``, ``rule``, ``concepts``) become columns ``kind``,
    ``rule`` (readable text) and ``concepts`` (``"; "``-joined) when any slice has them.
    """
    from medaudit.report.slice_browser import concept_names, rule_text

    rows = []
    for s in slices:
        ci = s.get("error_ci") or [None, None]
        ngrams = [
            g["ngram"] for g in s.get("explanation", {}).get("ngrams", []) if g.get("direction") == "over"
        ]
        row = {
            "rank": s["rank"],
            "name": s.get("name", f"slice_{s['rank']}"),
            "size": s["size"],
            "n_errors": s.get("n_errors"),
            "error_rate": s.get("error_rate"),
            "error_ci_low": ci[0],
            "error_ci_high": ci[1],
            "soft_size": s.get("soft_size"),
            "soft_error_rate": s.get("soft_error_rate"),
            "slicer_score": s.get("slicer_score"),
            "basis": s.get("explanation", {}).get("basis"),
            "top_ngrams": ", ".join(ngrams[:n_ngrams]),
            "top_metadata": _top_metadata(s),
        }
        if "kind" in s:
            row["kind"] = s["kind"]
        if "rule" in s:
            row["rule"] = rule_text(s["rule"])
        if "concepts" in s:
            row["concepts"] = "; ".join(concept_names(s["concepts"]))
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=_FRAME_COLUMNS).set_index("rank")
    extra = [c for c in ("kind", "rule", "concepts") if c in df.columns]
    return df[_FRAME_COLUMNS + extra].set_index("rank")


def _find_slice(slices: list[dict[str, Any]], slice_id: int | str) -> dict[str, Any]:
    for s in slices:
        if slice_id in (s["rank"], s.get("name")) or str(slice_id) == str(s["rank"]):
            return s
    known = ", ".join(f"{s['rank']} / {s.get('name')}" for s in slices)
    raise InputError(f"no slice '{slice_id}' (slices: {known})")


def slice_members(result: Any, slice_id: int | str, complement: bool = False) -> pd.DataFrame:
    """The member cases of a slice (rank or name), best first, or with ``complement=True`` every other case.

    Columns: ``id``, ``score`` (membership in this slice), ``label``, ``pred``, ``prob``, ``error``,
    ``image``, ``report``, the metadata columns, then every ``slice_j`` membership score. A slice with no
    member (``basis`` ``top_k``) returns its top-scoring cases, as the report does.
    """
    s = _find_slice(result.slices, slice_id)
    table = result.table
    df = table.df.reset_index(drop=True)
    ids = df["id"].astype(str)
    row_of = pd.Series(np.arange(len(df)), index=ids.to_numpy())
    listed = s["member_ids"] or s["exemplar_ids"]
    if complement:
        keep = ~ids.isin(set(listed)).to_numpy()
        rows = np.flatnonzero(keep)
    else:
        rows = row_of.loc[[str(c) for c in listed]].to_numpy(dtype=np.int64)
    mem = result.membership.reset_index(drop=True)
    score_cols = [c for c in mem.columns if c != "id"]
    out = pd.DataFrame(
        {
            "id": ids.to_numpy()[rows],
            "score": mem[s.get("name", f"slice_{s['rank']}")].to_numpy()[rows],
            "label": df["label"].to_numpy()[rows],
            "pred": df["pred"].to_numpy()[rows],
            "prob": df["prob"].to_numpy()[rows],
        }
    )
    out["error"] = out["label"] != out["pred"]
    out["image"] = df["image"].to_numpy()[rows]
    out["report"] = df["report"].to_numpy()[rows]
    meta = table.meta.reset_index(drop=True)
    for c in meta.columns:  # a metadata column named as one of ours ("score", "slice_2") keeps its values
        name = f"meta_{c}" if c in out.columns or c in score_cols else c
        while name in out.columns or name in score_cols:
            name = f"meta_{name}"
        out[name] = meta[c].to_numpy()[rows]
    for c in score_cols:
        out[c] = mem[c].to_numpy()[rows]
    return out


def _fmt(x: Any) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "–"
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def _esc(text: str) -> str:
    """HTML-escaped text whose control and bidirectional-control characters show as ``[U+XXXX]``, as in
    report.html: a metadata value or concept name cannot hide or reorder what the table shows."""
    from medaudit.report.html import neutralise_controls

    return html.escape(neutralise_controls(text))


def result_html(result: Any, max_rows: int = 20) -> str:
    """A compact, escaped HTML summary: counts, then one row per slice."""
    c = result.counts
    head = (
        f"<p><b>medaudit audit</b>: {c.get('cases')} cases, {c.get('errors')} errors "
        f"(error rate {_fmt(c.get('error_rate'))}), {len(result.slices)} slices; "
        f"outputs in <code>{_esc(str(result.out_dir))}</code></p>"
    )
    frame = slices_frame(result.slices).reset_index()
    cols = ["rank", "size", "error_rate", "error_ci_low", "error_ci_high", "top_ngrams", "top_metadata"]
    cols += [c for c in ("kind", "rule", "concepts") if c in frame.columns]
    th = "".join(f"<th>{_esc(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{_esc(_fmt(r[c]))}</td>" for c in cols) + "</tr>"
        for r in frame.head(max_rows).to_dict(orient="records")
    )
    more = f"<p>… {len(frame) - max_rows} more slices</p>" if len(frame) > max_rows else ""
    tip = "<p><code>.to_frame()</code>: all slices · <code>.members(rank)</code>: a slice's cases</p>"
    return f"<div>{head}<table><tr>{th}</tr>{body}</table>{more}{tip}</div>"
