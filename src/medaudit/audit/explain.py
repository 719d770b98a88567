"""Explanations of a discovered slice: report n-grams (negation-aware), metadata enrichment, exemplars.

Report n-grams follow the multimodal study (Liu, Bhatia & Fetit 2026): TF-IDF over 1–4-grams with
English stop-words removed, ranked by |mean TF-IDF(slice) − mean TF-IDF(reference)|, where the
reference is the correctly classified cases of the slice's majority class. Unlike the study, negation
words are kept and negated concepts become distinct tokens before counting (a NegEx-style scope, see
:func:`negate_text`): "No pleural effusion." becomes ``no no_pleural no_effusion``, so a slice whose
reports *deny* an effusion is never explained by the positive n-gram "pleural effusion".
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, TfidfVectorizer

from medaudit.stats import bh_qvalues

__all__ = [
    "NEGATION_PREFIX",
    "exemplars",
    "metadata_enrichment",
    "negate_text",
    "negated_phrases",
    "negation_flags",
    "ngram_tfidf",
    "phrase_ngrams",
    "report_ngrams",
    "sentence_tokens",
]

NEGATION_PREFIX = "no_"

#: Negation words never removed as stop-words.
NEGATION_WORDS = frozenset({"no", "not", "nor", "none", "never", "without", "cannot", "neither", "nothing"})
STOP_WORDS = frozenset(ENGLISH_STOP_WORDS) - NEGATION_WORDS

# Pre-negation triggers negate the words that follow; post-negation triggers the words before.
_PRE_TRIGGERS: tuple[tuple[str, ...], ...] = tuple(
    tuple(t.split())
    for t in (
        "no evidence of",
        "no signs of",
        "no sign of",
        "negative for",
        "free of",
        "absence of",
        "clear of",
        "rather than",
        "resolution of",
        "interval resolution of",
        "removal of",
        "interval removal of",
        "no",
        "not",
        "without",
        "nor",
        "neither",
        "denies",
        "never",
    )
)
_POST_TRIGGERS: tuple[tuple[str, ...], ...] = tuple(
    tuple(t.split())
    for t in (
        "not seen",
        "not identified",
        "not present",
        "not visualized",
        "not visualised",
        "not demonstrated",
        "not evident",
        "not appreciated",
        "is absent",
        "are absent",
        "was absent",
        "has resolved",
        "have resolved",
        "is resolved",
        "are resolved",
        "ruled out",
        "has cleared",
        "have cleared",
        "has been removed",
        "have been removed",
        "is excluded",
        "are excluded",
    )
)
# Words that end a forward (pre-trigger) scope. Copulas start a new clause after a list of negated
# findings ("no effusion, heart size is enlarged").
_FORWARD_STOP = frozenset(
    [
        "but",
        "however",
        "although",
        "though",
        "except",
        "which",
        "whereas",
        "while",
        "yet",
        "apart",
        "aside",
        "besides",
        "is",
        "are",
        "was",
        "were",
        "has",
        "have",
        "had",
        "remains",
        "remain",
        "shows",
        "show",
        "demonstrates",
        "suggest",
        "suggests",
    ]
)
# Words that end a backward (post-trigger) scope.
_BACKWARD_STOP = frozenset(
    ["but", "however", "although", "though", "except", "which", "whereas", "while", "yet"]
)
# Content words (non stop-words) a scope may cover. 12, not NegEx's classic 5-6: Open-i's lists of
# denied findings ("No focal consolidation, suspicious pulmonary opacity, large pleural effusion, or
# pneumothorax") run to 9; measured against MeSH, see docs/concepts.md.
_MAX_SCOPE = 12

_SENTENCE_SPLIT = re.compile(r"[.;:!?\n]+")
_TOKEN = re.compile(r"[a-z0-9]+")


def _index(phrases: tuple[tuple[str, ...], ...]) -> dict[str, tuple[tuple[str, ...], ...]]:
    """First word -> phrases starting with it, longest first."""
    out: dict[str, list[tuple[str, ...]]] = {}
    for ph in phrases:
        out.setdefault(ph[0], []).append(ph)
    return {k: tuple(sorted(v, key=len, reverse=True)) for k, v in out.items()}


_PRE_INDEX = _index(_PRE_TRIGGERS)
_POST_INDEX = _index(_POST_TRIGGERS)


def _match(tokens: Sequence[str], i: int, index: dict[str, tuple[tuple[str, ...], ...]]) -> int:
    """Length of the longest phrase of ``index`` starting at ``tokens[i]`` (0 if none)."""
    for ph in index.get(tokens[i], ()):
        if tuple(tokens[i : i + len(ph)]) == ph:
            return len(ph)
    return 0


def _ends_forward(tokens: Sequence[str], j: int) -> bool:
    """Whether ``tokens[j]`` ends a forward negation scope ("no opacity to suggest pneumonia" does not
    end at "suggest": the pneumonia is denied too)."""
    return tokens[j] in _FORWARD_STOP and not (j > 0 and tokens[j - 1] == "to")


def negation_flags(tokens: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """NegEx scope of one sentence's tokens: (negated, trigger) boolean arrays, one entry per token.

    See :func:`negate_text` for the triggers and the scope rules (a scope ends at the sentence, at
    "but" / "however" / "although" ..., and after twelve content words).
    """
    n = len(tokens)
    negated = np.zeros(n, dtype=bool)
    trigger = np.zeros(n, dtype=bool)
    # post-triggers: negate backwards within the clause
    i = 0
    while i < n:
        m = _match(tokens, i, _POST_INDEX)
        if m:
            trigger[i : i + m] = True
            count = 0
            j = i - 1
            while j >= 0 and count < _MAX_SCOPE and tokens[j] not in _BACKWARD_STOP:
                if tokens[j] not in STOP_WORDS and not trigger[j]:
                    negated[j] = True
                    count += 1
                j -= 1
            i += m
        else:
            i += 1
    # pre-triggers: negate forwards
    i = 0
    while i < n:
        if trigger[i]:
            i += 1
            continue
        m = _match(tokens, i, _PRE_INDEX)
        if m:
            trigger[i : i + m] = True
            count = 0
            j = i + m
            while j < n and count < _MAX_SCOPE and not _ends_forward(tokens, j) and not trigger[j]:
                if _match(tokens, j, _PRE_INDEX):  # a new trigger starts its own scope
                    break
                if tokens[j] not in STOP_WORDS:
                    negated[j] = True
                    count += 1
                j += 1
            i += m
        else:
            i += 1
    return negated, trigger


def _negate_sentence(tokens: list[str]) -> list[str]:
    negated, trigger = negation_flags(tokens)
    out: list[str] = []
    for tok, neg, trig in zip(tokens, negated, trigger, strict=True):
        if trig:
            if tok in NEGATION_WORDS:
                out.append(tok)
            continue
        if tok in STOP_WORDS:
            continue
        out.append(NEGATION_PREFIX + tok if neg else tok)
    return out


#: De-identification placeholders (Open-i ``XXXX``, MIMIC ``___``, ``[** ... **]``): never features.
_PLACEHOLDER = re.compile(r"\b[xX]{2,}\b|_{2,}|\[\*\*.*?\*\*\]")
_PLACEHOLDER_TOKEN = re.compile(r"^(?:no_)?x{2,}$")


def sentence_tokens(text: str) -> list[list[str]]:
    """Lower-case word tokens of each sentence of ``text``; placeholders become the token ``xxxx``."""
    out: list[list[str]] = []
    for sentence in _SENTENCE_SPLIT.split(_PLACEHOLDER.sub(" xxxx ", str(text)).lower()):
        toks = _TOKEN.findall(re.sub(r"n't\b", " not", sentence))
        if toks:
            out.append(toks)
    return out


def negated_phrases(text: str) -> list[list[str]]:
    """Negation-marked content words of ``text`` (see :func:`negate_text`), as phrases.

    A phrase never crosses a sentence end (``.;:!?`` or a line break) nor a de-identification
    placeholder, which is dropped: n-grams built inside phrases never span either.
    """
    phrases: list[list[str]] = []
    for toks in sentence_tokens(text):
        cur: list[str] = []
        for tok in _negate_sentence(toks):
            if _PLACEHOLDER_TOKEN.match(tok):
                if cur:
                    phrases.append(cur)
                cur = []
            else:
                cur.append(tok)
        if cur:
            phrases.append(cur)
    return phrases


def phrase_ngrams(text: str, ngram_range: tuple[int, int] = (1, 4)) -> list[str]:
    """The n-grams of :func:`negated_phrases` (never across a sentence or a placeholder)."""
    lo, hi = ngram_range
    out: list[str] = []
    for ph in negated_phrases(text):
        for k in range(lo, hi + 1):
            out.extend(" ".join(ph[i : i + k]) for i in range(len(ph) - k + 1))
    return out


def negate_text(text: str) -> str:
    """Lower-case, tokenise, mark negated words and drop stop-words (negation words are kept).

    A NegEx-style heuristic: within a sentence, a pre-negation trigger ("no", "not", "without",
    "negative for", "no evidence of", ...) negates up to twelve following content words, stopping at a
    clause break ("but", "however", a copula such as "is"); a post-negation trigger ("not seen",
    "is absent", "has resolved", ...) negates up to twelve preceding content words. Negated words get the
    prefix ``no_``. Example: ``"No pleural effusion or pneumothorax. Heart is enlarged."`` ->
    ``"no no_pleural no_effusion no_pneumothorax heart enlarged"``.
    """
    return " ".join(w for ph in negated_phrases(text) for w in ph)


def report_ngrams(
    reports: Sequence[str] | None,
    in_slice_mask: np.ndarray,
    reference_mask: np.ndarray,
    top_k: int = 10,
    ngram_range: tuple[int, int] = (1, 4),
    min_df: int = 2,
    tfidf: tuple[Any, np.ndarray] | None = None,
) -> pd.DataFrame:
    """Rank report n-grams by how differently they occur in a slice and in a reference group.

    TF-IDF (fitted on all ``reports``, after :func:`negate_text`) over 1–4-grams; score
    ``diff = mean TF-IDF(slice) − mean TF-IDF(reference)``; ranked by ``|diff|``.

    Args:
        reports: one report text per case (may be ``None`` when ``tfidf`` is given).
        in_slice_mask: bool (n,), the slice's cases.
        reference_mask: bool (n,), the reference cases (the study: correctly classified cases of the
            slice's majority class). Cases in both masks count only for the slice.
        top_k: rows returned.
        ngram_range: n-gram sizes.
        min_df: minimum number of reports an n-gram must occur in (lowered to 1 if nothing survives).
        tfidf: ``ngram_tfidf(reports)`` computed once and reused across slices (optional).

    Returns:
        DataFrame with columns ``ngram`` (tokens; negated words carry the prefix ``no_``),
        ``negated`` (any token negated), ``diff``, ``direction`` (``over`` / ``under``-represented in
        the slice), ``slice_mean``, ``reference_mean``, ``slice_doc_frac``, ``reference_doc_frac``.
    """
    in_slice = np.asarray(in_slice_mask, dtype=bool)
    ref = np.asarray(reference_mask, dtype=bool) & ~in_slice
    if len(in_slice) != len(ref) or (reports is not None and len(reports) != len(in_slice)):
        raise ValueError("reports and masks must have the same length")
    if not in_slice.any() or not ref.any():
        return pd.DataFrame(columns=list(_NGRAM_COLUMNS))
    if tfidf is None:
        tfidf = ngram_tfidf(reports, ngram_range=ngram_range, min_df=min_df)
    x, vocab = tfidf
    if x.shape[0] != len(in_slice):
        raise ValueError("the TF-IDF matrix and the masks must have the same number of rows")
    if x.shape[1] == 0:
        return pd.DataFrame(columns=list(_NGRAM_COLUMNS))
    xs, xr = x[in_slice], x[ref]
    stats = {
        "slice_mean": _column_means(xs),
        "reference_mean": _column_means(xr),
        "slice_doc_frac": _column_means(xs > 0),
        "reference_doc_frac": _column_means(xr > 0),
    }
    diff = stats["slice_mean"] - stats["reference_mean"]
    order = _top_candidates(diff, vocab, top_k)
    order = _collapse_redundant([o for o in order if diff[o] != 0.0], vocab, xs, diff)[:top_k]
    return _ngram_frame(order, vocab, diff, stats)


#: columns of :func:`report_ngrams`
_NGRAM_COLUMNS = (
    "ngram",
    "negated",
    "diff",
    "direction",
    "slice_mean",
    "reference_mean",
    "slice_doc_frac",
    "reference_doc_frac",
)


def _column_means(m: Any) -> np.ndarray:
    """Column means of a (sparse or dense) matrix as a flat array."""
    return np.asarray(m.mean(axis=0)).ravel()


def _top_candidates(diff: np.ndarray, vocab: np.ndarray, top_k: int) -> np.ndarray:
    """Indices of the ``4 * top_k`` largest ``|diff|`` (every tie at the cut kept), ranked stably:
    ``|diff|`` descending, ties by n-gram text. Over-fetched so that redundant n-grams can be collapsed.
    """
    a = np.abs(diff)
    pool = 4 * top_k
    if len(a) > pool > 0:
        kth = np.partition(a, len(a) - pool)[len(a) - pool]
        cand = np.flatnonzero(a >= kth)  # keeps every tie at the cut
    else:
        cand = np.arange(len(a))
    return cand[np.lexsort((vocab[cand], -a[cand]))]


def _ngram_frame(
    order: Sequence[int], vocab: np.ndarray, diff: np.ndarray, stats: dict[str, np.ndarray]
) -> pd.DataFrame:
    """The :func:`report_ngrams` table of the n-grams ``order`` (``stats``: the four per-n-gram columns)."""
    return pd.DataFrame(
        {
            "ngram": [str(vocab[o]) for o in order],
            "negated": [any(t.startswith(NEGATION_PREFIX) for t in vocab[o].split()) for o in order],
            "diff": [float(diff[o]) for o in order],
            "direction": ["over" if diff[o] > 0 else "under" for o in order],
            **{col: [float(v[o]) for o in order] for col, v in stats.items()},
        },
        columns=list(_NGRAM_COLUMNS),
    )


def _contains(big: str, small: str) -> bool:
    return f" {small} " in f" {big} "


def _collapse_redundant(
    order: list[int], vocab: np.ndarray, xs: Any, diff: np.ndarray, min_jaccard: float = 0.8
) -> list[int]:
    """Drop an n-gram when a better-ranked one contains it (or it contains that one), both point the
    same way, and they occur in nearly the same slice reports (Jaccard >= ``min_jaccard``): "chest
    tube" and "tube" in the same members are one feature."""
    kept: list[int] = []
    docs: dict[int, np.ndarray] = {}

    def _docs(j: int) -> np.ndarray:
        if j not in docs:
            docs[j] = np.asarray(xs[:, j].todense() if hasattr(xs, "todense") else xs[:, j]).ravel() > 0
        return docs[j]

    for o in order:
        redundant = False
        for k in kept:
            if np.sign(diff[k]) != np.sign(diff[o]):
                continue
            if not (_contains(str(vocab[k]), str(vocab[o])) or _contains(str(vocab[o]), str(vocab[k]))):
                continue
            a, b = _docs(k), _docs(o)
            union = int((a | b).sum())
            if union == 0 or (a & b).sum() / union >= min_jaccard:
                redundant = True
                break
        if not redundant:
            kept.append(o)
    return kept


def ngram_tfidf(
    reports: Sequence[str], ngram_range: tuple[int, int] = (1, 4), min_df: int = 2
) -> tuple[Any, np.ndarray]:
    """TF-IDF matrix (sparse, n x V) and vocabulary of the negation-marked reports' n-grams.

    N-grams come from :func:`phrase_ngrams`: they never cross a sentence, and de-identification
    placeholders (``XXXX``, ``___``) are never features.

    ``min_df`` is lowered to 1 when no n-gram occurs in ``min_df`` reports. An empty corpus gives an
    ``(n, 0)`` matrix.
    """
    from functools import partial

    from scipy import sparse

    docs = [r if isinstance(r, str) else "" for r in reports]
    for mdf in sorted({max(1, min(min_df, len(docs))), 1}, reverse=True):
        vec = TfidfVectorizer(
            analyzer=partial(phrase_ngrams, ngram_range=ngram_range),
            lowercase=False,
            min_df=mdf,
            dtype=np.float64,
        )
        try:
            x = vec.fit_transform(docs)
        except ValueError:  # empty vocabulary
            continue
        return x.tocsr(), vec.get_feature_names_out()
    return sparse.csr_matrix((len(docs), 0)), np.array([], dtype=object)


def metadata_enrichment(
    meta_df: pd.DataFrame,
    in_slice_mask: np.ndarray,
    max_levels: int = 30,
    numeric_min_unique: int = 6,
) -> pd.DataFrame:
    """Test every metadata column for a difference between the slice and the rest of the cases.

    * Categorical columns (and numeric ones with fewer than ``numeric_min_unique`` distinct values):
      each value (up to ``max_levels`` most frequent ones; missing values form the level
      ``(missing)``) gets a two-sided Fisher exact test on the 2×2 table in-slice × has-value. Effect
      sizes: odds ratio (Haldane–Anscombe +0.5 correction when a cell is zero) and risk difference
      (share in slice − share outside).
    * Numeric columns: two-sided Mann–Whitney U test; effect size the standardised mean difference
      (mean_in − mean_out) / sqrt((var_in + var_out) / 2). Missing values are dropped.

    All p-values are corrected together with Benjamini–Hochberg (``q_value``).

    Returns:
        Tidy DataFrame, one row per test, sorted by ``q_value`` then ``|effect|``: ``column``, ``kind``
        (categorical / numeric), ``value`` (the level; empty for numeric), ``test``, ``in_slice`` (share
        or mean in the slice), ``out_slice``, ``effect``, ``effect_name`` (odds_ratio / smd),
        ``risk_difference`` (categorical), ``direction`` (over / under), ``n_in``, ``n_out``,
        ``p_value``, ``q_value``.
    """
    mask = np.asarray(in_slice_mask, dtype=bool)
    if len(mask) != len(meta_df):
        raise ValueError("meta_df and in_slice_mask must have the same length")
    rows: list[dict[str, object]] = []
    if mask.all() or not mask.any() or meta_df.shape[1] == 0:
        return pd.DataFrame(columns=_ENRICHMENT_COLUMNS)
    for col in meta_df.columns:
        s = meta_df[col]
        numeric = (
            pd.api.types.is_numeric_dtype(s)
            and not pd.api.types.is_bool_dtype(s)
            and s.nunique(dropna=True) >= numeric_min_unique
        )
        rows += (
            _numeric_test(str(col), s, mask) if numeric else _categorical_tests(str(col), s, mask, max_levels)
        )
    if not rows:
        return pd.DataFrame(columns=_ENRICHMENT_COLUMNS)
    out = pd.DataFrame(rows)
    out["q_value"] = bh_qvalues(out["p_value"].to_numpy(dtype=float))
    # |effect| on a comparable scale: log odds ratio for categorical, SMD for numeric
    strength = np.where(
        out["effect_name"] == "odds_ratio",
        np.abs(np.log(out["effect"].astype(float).clip(lower=1e-12))),
        np.abs(out["effect"].astype(float)),
    )
    out = (
        out.assign(_s=strength)
        .sort_values(
            ["q_value", "_s", "direction", "column", "value"],
            ascending=[True, False, True, True, True],
            kind="mergesort",
        )
        .drop(columns="_s")
        .reset_index(drop=True)
    )
    return out[_ENRICHMENT_COLUMNS]


_ENRICHMENT_COLUMNS = [
    "column",
    "kind",
    "value",
    "test",
    "in_slice",
    "out_slice",
    "effect",
    "effect_name",
    "risk_difference",
    "direction",
    "n_in",
    "n_out",
    "p_value",
    "q_value",
]


def _numeric_test(col: str, s: pd.Series, mask: np.ndarray) -> list[dict[str, object]]:
    """Mann-Whitney U of a numeric column, slice vs rest, with the standardised mean difference."""
    v = pd.to_numeric(s, errors="coerce").to_numpy(dtype=float)
    a, b = v[mask & np.isfinite(v)], v[~mask & np.isfinite(v)]
    if len(a) < 2 or len(b) < 2:
        return []
    if np.all(np.concatenate([a, b]) == a[0]):
        p = 1.0
    else:
        p = float(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)
    pooled = np.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2.0)
    smd = float((a.mean() - b.mean()) / pooled) if pooled > 0 else 0.0
    return [
        {
            "column": col,
            "kind": "numeric",
            "value": "",
            "test": "mannwhitneyu",
            "in_slice": float(a.mean()),
            "out_slice": float(b.mean()),
            "effect": smd,
            "effect_name": "smd",
            "risk_difference": np.nan,
            "direction": "over" if smd > 0 else "under",
            "n_in": len(a),
            "n_out": len(b),
            "p_value": p,
        }
    ]


def _odds_ratio(a: int, b: int, c: int, d: int) -> float:
    """Odds ratio of a 2x2 table, with the Haldane-Anscombe +0.5 correction when a cell is zero."""
    if min(a, b, c, d) == 0:
        return ((a + 0.5) * (d + 0.5)) / ((b + 0.5) * (c + 0.5))
    return (a * d) / (b * c)


def _categorical_tests(col: str, s: pd.Series, mask: np.ndarray, max_levels: int) -> list[dict[str, object]]:
    """Fisher's exact test per value (the ``max_levels`` most frequent), with odds ratio and risk difference."""
    levels = s.astype(object).where(s.notna(), "(missing)").map(str)
    counts = levels.value_counts()
    if len(counts) < 2:
        return []
    top = sorted(counts.index[:max_levels], key=lambda lv: (-counts[lv], lv))
    n_in, n_out = int(mask.sum()), int((~mask).sum())
    lv_arr = levels.to_numpy()
    rows: list[dict[str, object]] = []
    for lv in top:
        has = lv_arr == lv
        a = int((has & mask).sum())
        b = n_in - a
        c = int((has & ~mask).sum())
        d = n_out - c
        p = float(stats.fisher_exact([[a, b], [c, d]], alternative="two-sided").pvalue)
        odds = _odds_ratio(a, b, c, d)
        rd = a / n_in - c / n_out
        rows.append(
            {
                "column": col,
                "kind": "categorical",
                "value": str(lv),
                "test": "fisher",
                "in_slice": a / n_in,
                "out_slice": c / n_out,
                "effect": float(odds),
                "effect_name": "odds_ratio",
                "risk_difference": float(rd),
                "direction": "over" if rd > 0 else "under",
                "n_in": n_in,
                "n_out": n_out,
                "p_value": p,
            }
        )
    return rows


def exemplars(scores: np.ndarray, k: int = 8) -> np.ndarray:
    """Indices of the ``k`` cases with the highest membership ``scores`` (ties: lower index first)."""
    s = np.asarray(scores, dtype=float).ravel()
    order = np.lexsort((np.arange(len(s)), -s))
    return order[: max(0, int(k))]
