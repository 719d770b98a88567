"""Negation- and uncertainty-aware concept extraction from report text.

Codes (int8), one column per concept of the lexicon:

* ``1`` positive: mentioned and affirmed at least once;
* ``2`` uncertain: mentioned, never affirmed, hedged at least once ("may represent", "possible",
  "cannot be excluded", "suspicious for" ...);
* ``-1`` negative: mentioned, and every mention negated ("no", "without", "negative for", "not seen"
  ... — the NegEx scope of :func:`medaudit.audit.explain.negation_flags`);
* ``0`` not mentioned.

Scopes never cross a sentence and end at "but", "however", "although", "except" ...: "No pleural
effusion, but small pneumothorax" gives pleural effusion = -1 and pneumothorax = 1. A concept with
``includes`` (the umbrella ``support device``) takes the strongest code of itself and its parts, in the
order positive > uncertain > negative > not mentioned.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from medaudit.audit.concepts.lexicon import Lexicon, default_lexicon
from medaudit.audit.explain import negation_flags, sentence_tokens

__all__ = [
    "NEGATIVE",
    "NOT_MENTIONED",
    "POSITIVE",
    "UNCERTAIN",
    "extract_concepts",
    "uncertainty_flags",
]

POSITIVE, NEGATIVE, UNCERTAIN, NOT_MENTIONED = 1, -1, 2, 0
_PRIORITY = {NOT_MENTIONED: 0, NEGATIVE: 1, UNCERTAIN: 2, POSITIVE: 3}

_UNCERTAIN_PRE = tuple(
    tuple(t.split())
    for t in (
        "may represent",
        "may reflect",
        "may be",
        "might be",
        "could represent",
        "could be",
        "can not exclude",
        "cannot exclude",
        "cannot rule out",
        "difficult to exclude",
        "not exclude",
        "differential considerations include",
        "differential diagnosis includes",
        "not excluded",
        "possible",
        "possibly",
        "probable",
        "questionable",
        "question of",
        "suspicious for",
        "concerning for",
        "suggestive of",
        "suggesting",
        "suspected",
        "suspect",
        "equivocal",
        "differential",
        "versus",
        "vs",
        "consider",
        "not entirely excluded",
        "indeterminate",
    )
)
_UNCERTAIN_POST = tuple(
    tuple(t.split())
    for t in (
        "cannot be excluded",
        "can not be excluded",
        "not be excluded",
        "cannot be ruled out",
        "not excluded",
        "is possible",
        "is suspected",
        "is questioned",
        "is not excluded",
    )
)
_SCOPE_STOP = frozenset(
    ["but", "however", "although", "though", "except", "which", "whereas", "while", "yet"]
)
_SCOPE = 8  # tokens an uncertainty scope covers


def _match_at(tokens: Sequence[str], i: int, phrases: Iterable[tuple[str, ...]]) -> int:
    for ph in phrases:
        if tuple(tokens[i : i + len(ph)]) == ph:
            return len(ph)
    return 0


_PRE_SORTED = tuple(sorted(_UNCERTAIN_PRE, key=len, reverse=True))
_POST_SORTED = tuple(sorted(_UNCERTAIN_POST, key=len, reverse=True))
_FIRST_WORDS = frozenset(p[0] for p in _UNCERTAIN_PRE + _UNCERTAIN_POST)


def uncertainty_flags(tokens: Sequence[str]) -> np.ndarray:
    """Boolean (len(tokens),): tokens inside a hedge's scope within one sentence (ConText-style)."""
    n = len(tokens)
    flags = np.zeros(n, dtype=bool)
    for i in range(n):
        if tokens[i] not in _FIRST_WORDS:
            continue
        m = _match_at(tokens, i, _POST_SORTED)
        if m:
            j, count = i - 1, 0
            while j >= 0 and count < _SCOPE and tokens[j] not in _SCOPE_STOP:
                flags[j] = True
                j, count = j - 1, count + 1
        m = _match_at(tokens, i, _PRE_SORTED)
        if m:
            j, count = i + m, 0
            while j < n and count < _SCOPE and tokens[j] not in _SCOPE_STOP:
                flags[j] = True
                j, count = j + 1, count + 1
    return flags


def _mask(text: str, rx: re.Pattern[str] | None) -> str:
    """``text`` with the matches of ``rx`` overwritten (same length, so offsets stay valid)."""
    return rx.sub(lambda m: "#" * (m.end() - m.start() - 1) + " ", text) if rx is not None else text


def _report_codes(
    text: str,
    patterns: list[re.Pattern[str]],
    negatable: list[bool],
    excludes: list[re.Pattern[str] | None],
    first_words: list[tuple[frozenset[str], tuple[str, ...]]],
) -> list[int]:
    """Codes of one report for the lexicon's own synonyms (before ``includes``)."""
    codes = [NOT_MENTIONED] * len(patterns)
    sentences = sentence_tokens(text)
    if not sentences:
        return codes
    tokens: list[str] = []
    neg: list[np.ndarray] = []
    unc: list[np.ndarray] = []
    for toks in sentences:
        negated, _ = negation_flags(toks)
        neg.append(np.append(negated, False))
        unc.append(np.append(uncertainty_flags(toks), False))
        tokens.extend([*toks, "|"])
    negated_all, uncertain_all = np.concatenate(neg), np.concatenate(unc)
    joined = " ".join(tokens) + " "
    starts = np.cumsum([0] + [len(t) + 1 for t in tokens[:-1]])
    words = set(tokens)
    for k, rx in enumerate(patterns):
        exact, prefixes = first_words[k]
        if words.isdisjoint(exact) and not (prefixes and any(t.startswith(prefixes) for t in words)):
            continue  # no synonym can start here: skip the regular expression
        best = NOT_MENTIONED
        for m in rx.finditer(_mask(joined, excludes[k])):
            a = int(np.searchsorted(starts, m.start(), side="right")) - 1
            b = int(np.searchsorted(starts, m.end() - 1, side="right"))
            if uncertain_all[a:b].any():
                code = UNCERTAIN
            elif negatable[k] and negated_all[a:b].any():
                code = NEGATIVE
            else:
                code = POSITIVE
            if _PRIORITY[code] > _PRIORITY[best]:
                best = code
            if best == POSITIVE:
                break
        codes[k] = best
    return codes


def _apply_includes(codes: np.ndarray, lexicon: Lexicon) -> np.ndarray:
    """Umbrella concepts take the strongest code of themselves and the concepts they include."""
    index = {c.name.lower(): j for j, c in enumerate(lexicon.concepts)}
    prio = np.vectorize(_PRIORITY.get, otypes=[np.int8])(codes) if codes.size else codes
    inv = np.array([0, -1, 2, 1], dtype=np.int8)  # priority -> code
    for j, c in enumerate(lexicon.concepts):
        if c.includes:
            cols = [j, *(index[i.lower()] for i in c.includes)]
            codes[:, j] = inv[prio[:, cols].max(axis=1)]
    return codes


def extract_concepts(texts: Sequence[str] | pd.Series, lexicon: Lexicon | None = None) -> pd.DataFrame:
    """Concept codes of each report: one row per text, one int8 column per concept.

    Args:
        texts: report texts (``None`` / NaN / non-strings count as empty).
        lexicon: concepts to extract (default: :func:`default_lexicon`).

    Returns:
        DataFrame (index of ``texts`` when it is a Series), columns = concept names in lexicon order,
        values 1 positive, -1 negative, 2 uncertain, 0 not mentioned.
    """
    lex = lexicon or default_lexicon()
    patterns = [re.compile(c.pattern()) for c in lex.concepts]
    negatable = [c.negatable for c in lex.concepts]
    excludes = [re.compile(p) if (p := c.exclude_pattern()) else None for c in lex.concepts]
    first_words = [c.first_words() for c in lex.concepts]
    values = list(texts)
    codes = np.zeros((len(values), len(lex)), dtype=np.int8)
    for i, t in enumerate(values):
        if isinstance(t, str) and t.strip():
            codes[i] = _report_codes(t, patterns, negatable, excludes, first_words)
    codes = _apply_includes(codes, lex)
    index = texts.index if isinstance(texts, pd.Series) else None
    return pd.DataFrame(codes, columns=lex.names, index=index)
