"""The data behind the slice browser in ``report.html``: members, reports, thumbnails, highlights.

The browser is one self-contained HTML file, so everything it shows is embedded in it. What grows with
the audit is bounded by :class:`BrowserLimits`:

* **every member** of every slice is embedded as one compact row (id, label, prediction, probability,
  membership score), about 60 bytes per member with MIMIC-style 44-character ids;
* **report text** is embedded for every case when the audit has at most ``all_reports_up_to`` cases,
  otherwise for the ``reports_per_slice`` best members of each slice; each report is cut at
  ``report_chars`` characters, and its control characters are shown as ``[U+XXXX]`` (before the
  highlight spans are computed, so they fit the text shown; the spans count UTF-16 code units, as the
  page's JavaScript does). Metadata values are cut at ``meta_chars``. The search box searches these reports;
* **thumbnails** (``thumb_px`` pixels, JPEG) are embedded for the ``thumbs_per_slice`` best members
  of each slice; the browser creates an image element only for the page on screen.

The members past those limits keep their row (id, label, prediction, scores); their report and image
are in the case table, ``membership.parquet`` and ``AuditResult.members``.
``bench/report_size.py`` measures the resulting file at 377k cases.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from medaudit.report.html import neutralise_controls

__all__ = [
    "BrowserLimits",
    "browser_data",
    "clip_text",
    "complement_stats",
    "concept_names",
    "highlight_spans",
    "rule_text",
    "slice_terms",
    "thumbnail_uri",
]

_SENTENCE_RE = re.compile("[^.!?\n\u2028\u2029]+[.!?]*")
_WORD_RE = re.compile(r"[a-z0-9]+")
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")  # two UTF-16 code units each in JavaScript


@dataclass(frozen=True)
class BrowserLimits:
    """Caps on what ``report.html`` embeds (see the module docstring for why these values)."""

    all_reports_up_to: int = 5000
    reports_per_slice: int = 500
    report_chars: int = 3000
    meta_chars: int = 200
    thumbs_per_slice: int = 100
    thumb_px: int = 96
    thumb_quality: int = 70


def rule_text(rule: Any) -> str:
    """A readable line for a slice's optional ``rule`` field (string, predicate list or dict)."""
    if rule is None:
        return ""
    if isinstance(rule, str):
        return rule
    if isinstance(rule, dict):
        for key in ("text", "description", "rule"):
            if isinstance(rule.get(key), str):
                return rule[key]
        if "predicates" in rule:
            return rule_text(rule["predicates"])
        return ", ".join(f"{k} = {v}" for k, v in rule.items())
    if isinstance(rule, list | tuple):
        return " ∧ ".join(rule_text(p) for p in rule)
    return str(rule)


def concept_names(concepts: Any) -> list[str]:
    """Chip labels for a slice's optional ``concepts`` field (strings or dicts naming a concept)."""
    if not concepts:
        return []
    if isinstance(concepts, str | dict):
        concepts = [concepts]
    names = []
    for c in concepts:
        if isinstance(c, dict):
            name = next((c[k] for k in ("concept", "name", "term", "label") if c.get(k)), None)
            state = c.get("state")
            text = str(name) if name is not None else rule_text(c)
            names.append(f"{text} ({state})" if state else text)
        else:
            names.append(str(c))
    return names


def slice_terms(s: dict[str, Any], target: str | None = None, top: int = 5) -> list[str]:
    """Words that mark a slice's findings sentence: target, concepts, over-represented n-grams."""
    terms: list[str] = [target] if target else []
    for c in concept_names(s.get("concepts")):
        terms.append(re.sub(r"\s*\(.*\)$", "", c))
    over = [g for g in s.get("explanation", {}).get("ngrams", []) if g.get("direction") == "over"]
    terms += [str(g["ngram"]).replace("no_", "") for g in over[:top]]
    return [t for t in dict.fromkeys(t.strip() for t in terms) if t]


def _stem(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") else word


def highlight_spans(text: str, terms: Iterable[str]) -> list[list[int]]:
    """``[start, end]`` of each sentence of ``text`` that contains every word of one of ``terms``.

    Words match at a word start, case-insensitively, with a trailing plural ``s`` ignored, so the term
    "support devices" marks "A support device is seen."; numbers in a term are ignored. Returns ``[]``
    when nothing matches.
    """
    wanted = [[_stem(w) for w in _WORD_RE.findall(t.lower()) if not w.isdigit()] for t in terms]
    wanted = [w for w in wanted if w]
    spans = []
    for m in _SENTENCE_RE.finditer(text):
        words = _WORD_RE.findall(m.group(0).lower())
        if any(all(any(x.startswith(w) for x in words) for w in term) for term in wanted):
            start = m.start() + len(m.group(0)) - len(m.group(0).lstrip())
            spans.append([start, m.end()])
    return spans


def _utf16_spans(text: str, spans: list[list[int]]) -> list[list[int]]:
    """``spans`` (character offsets of ``text``) as the browser's offsets: JavaScript strings count
    UTF-16 code units, so each character beyond U+FFFF (an emoji, a math letter) before an offset
    counts twice; without this a highlight after one began a character early and cut a pair in two."""
    if not _ASTRAL.search(text):
        return spans
    units = np.cumsum([0] + [2 if ord(ch) > 0xFFFF else 1 for ch in text])
    return [[int(units[a]), int(units[b])] for a, b in spans]


def thumbnail_uri(path: object, size: int = 96, quality: int = 70) -> str | None:
    """A JPEG data URI of the image at ``path`` scaled to fit ``size`` px, or ``None`` if unreadable."""
    if not isinstance(path, str) or not path:
        return None
    try:
        from PIL import Image

        from medaudit.data.images import read_grayscale

        a = np.asarray(read_grayscale(path), dtype=np.float32)
    except Exception:  # a thumbnail is optional; an unreadable image is reported by the encoder
        return None
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    im = Image.fromarray((np.nan_to_num(a) * 255).astype(np.uint8))
    im.thumbnail((size, size))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _wilson(k: int, n: int) -> list[float | None]:
    if n <= 0:
        return [None, None]
    from medaudit.stats import wilson_ci

    lo, hi = wilson_ci(k, n)
    return [min(float(lo), k / n), max(float(hi), k / n)]


def _group_stats(label: np.ndarray, pred: np.ndarray, prob: np.ndarray) -> dict[str, Any]:
    n = int(label.size)
    err = label != pred
    share = lambda a: float(a.mean()) if n else None  # noqa: E731
    return {
        "n": n,
        "errors": int(err.sum()),
        "error_rate": share(err),
        "error_ci": _wilson(int(err.sum()), n),
        "label_pos": share(label == 1),
        "pred_pos": share(pred == 1),
        "fp": int(((label == 0) & (pred == 1)).sum()),
        "fn": int(((label == 1) & (pred == 0)).sum()),
        "mean_prob": share(prob),
    }


def complement_stats(table: Any, member_mask: np.ndarray) -> dict[str, dict[str, Any]]:
    """Error rate (Wilson 95% CI), label/prediction shares, FP/FN and mean probability, in vs out."""
    df = table.df
    label, pred = df["label"].to_numpy(), df["pred"].to_numpy()
    prob = df["prob"].to_numpy(dtype=np.float64)
    m = np.asarray(member_mask, dtype=bool)
    return {
        "slice": _group_stats(label[m], pred[m], prob[m]),
        "complement": _group_stats(label[~m], pred[~m], prob[~m]),
    }


def _slice_rows(payload: dict[str, Any], row_of: dict[str, int], scores: np.ndarray) -> list[dict]:
    """Per slice: the rows it lists (members best first, else its top-k exemplars) and their scores."""
    out = []
    for s in payload["slices"]:
        basis = "members" if s["member_ids"] else "top_k"
        ids = s["member_ids"] if s["member_ids"] else s["exemplar_ids"]
        rows = np.fromiter((row_of[c] for c in ids), dtype=np.int64, count=len(ids))
        col = scores[rows, s["rank"] - 1] if rows.size else np.zeros(0)
        out.append({"s": s, "basis": basis, "rows": rows, "score": np.round(col * 1000).astype(int)})
    return out


def _report_rows(n: int, lists: Sequence[dict], limits: BrowserLimits) -> np.ndarray:
    if n <= limits.all_reports_up_to:
        return np.arange(n)
    parts = [x["rows"][: limits.reports_per_slice] for x in lists]
    return np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)


def _cases_block(df: Any, used: np.ndarray) -> dict[str, list]:
    """Columnar rows of the embedded cases: id, label, prediction, probability (3 decimals)."""
    return {
        "id": [neutralise_controls(str(x)) for x in df["id"].to_numpy(dtype=object)[used]],
        "label": df["label"].to_numpy()[used].astype(int).tolist(),
        "pred": df["pred"].to_numpy()[used].astype(int).tolist(),
        "prob": np.round(df["prob"].to_numpy(dtype=np.float64)[used], 3).tolist(),
    }


def _reports_block(table: Any, texts: dict[int, str], pos: dict[int, int], meta_chars: int) -> list[list]:
    """``[case position, report text, metadata values]`` for each case whose report is embedded; a
    metadata value is cut at ``meta_chars`` characters (a free-text column would otherwise embed all of
    its text for every case: 63 MB for 1,500 cases of 42 kB notes)."""
    meta_vals = table.meta.to_numpy(dtype=object) if table.meta.shape[1] else None
    return [
        [pos[r], t, [_cell(v, meta_chars) for v in meta_vals[r]] if meta_vals is not None else []]
        for r, t in texts.items()
    ]


def _thumbs_block(table: Any, rows: np.ndarray, pos: dict[int, int], limits: BrowserLimits) -> list[list]:
    """``[case position, data URI]`` for each readable image among ``rows``."""
    images = table.df["image"].to_numpy(dtype=object)
    uris = ((int(r), thumbnail_uri(images[r], limits.thumb_px, limits.thumb_quality)) for r in rows.tolist())
    return [[pos[r], uri] for r, uri in uris if uri]


def _slices_block(
    lists: Sequence[dict], texts: dict[int, str], pos: dict[int, int], target: str | None
) -> list:
    """Per slice: its case positions in order, scores (per mille), highlight terms and spans."""
    out = []
    for x in lists:
        terms = slice_terms(x["s"], target)
        rows = x["rows"].tolist()
        marks = [
            [pos[r], _utf16_spans(texts[r], sp)]
            for r in rows
            if r in texts and (sp := highlight_spans(texts[r], terms))
        ]
        out.append(
            {
                "rank": x["s"]["rank"],
                "basis": x["basis"],
                "rows": [pos[r] for r in rows],
                "score": x["score"].tolist(),
                "terms": terms,
                "marks": marks,
            }
        )
    return out


def browser_data(
    payload: dict[str, Any],
    table: Any,
    scores: np.ndarray,
    limits: BrowserLimits | None = None,
) -> dict[str, Any]:
    """The JSON object the slice browser reads (see the module docstring for its size bounds)."""
    limits = limits or BrowserLimits()
    df = table.df
    n = len(df)
    row_of = {str(c): i for i, c in enumerate(df["id"].tolist())}
    lists = _slice_rows(payload, row_of, np.asarray(scores, dtype=np.float64))
    rep_rows = _report_rows(n, lists, limits)
    empty = [np.zeros(0, dtype=np.int64)]
    thumb_rows = np.unique(np.concatenate([x["rows"][: limits.thumbs_per_slice] for x in lists] or empty))
    used = np.unique(np.concatenate([x["rows"] for x in lists] + [rep_rows, thumb_rows])).astype(np.int64)
    pos = {int(r): i for i, r in enumerate(used)}
    target = payload.get("target") or payload.get("config", {}).get("target")
    target = target if isinstance(target, str) else None
    reports = df["report"].to_numpy(dtype=object)
    # control characters become their visible [U+XXXX] mark here, before the highlight spans are
    # computed: the page's rendering would otherwise lengthen the text after the spans were taken
    texts = {
        int(r): neutralise_controls(
            (reports[r] if isinstance(reports[r], str) else "")[: limits.report_chars]
        )
        for r in rep_rows
    }
    return {
        "limits": asdict(limits),
        "n_cases": n,
        "all_reports": bool(n <= limits.all_reports_up_to),
        "target": target,
        "meta_columns": [str(c) for c in table.meta.columns],
        "cases": _cases_block(df, used),
        "reports": _reports_block(table, texts, pos, limits.meta_chars),
        "thumbs": _thumbs_block(table, thumb_rows, pos, limits),
        "slices": _slices_block(lists, texts, pos, target),
    }


def clip_text(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, the cut marked with an ellipsis."""
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def _cell(v: Any, limit: int = BrowserLimits.meta_chars) -> Any:
    """A metadata value as JSON (NaN / None -> None, numpy scalars -> Python, other -> str)."""
    if v is None:
        return None
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float):
        return None if not np.isfinite(v) else round(v, 4)
    if isinstance(v, bool | int):
        return v
    return neutralise_controls(clip_text(str(v), limit))
