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

from medaudit.audit.concepts.lexicon import Lexicon, Qualifier, default_lexicon
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


#: Words either side of an affirmed mention searched for its qualifiers (within the clause).
QUALIFIER_WINDOW = 6
_CLAUSE_STOP = _SCOPE_STOP | {"and", "|"}


def _tokens_and_flags(text: str) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """The report's tokens (sentences joined by ``|``) and, per token: hedged; negated; a negation
    trigger ("no", "without" ...)."""
    tokens: list[str] = []
    flags: list[list[np.ndarray]] = [[], [], []]
    for toks in sentence_tokens(text):
        negated, trigger = negation_flags(toks)
        for out, f in zip(flags, (uncertainty_flags(toks), negated, trigger), strict=True):
            out.append(np.append(f, False))
        tokens.extend([*toks, "|"])
    if not tokens:
        empty = np.zeros(0, bool)
        return tokens, empty, empty, empty
    unc, neg, trig = (np.concatenate(f) for f in flags)
    return tokens, unc, neg, trig


def _report_codes(
    text: str,
    patterns: list[re.Pattern[str]],
    negatable: list[bool],
    excludes: list[re.Pattern[str] | None],
    first_words: list[tuple[frozenset[str], tuple[str, ...]]],
    qualifiers: _QualifierIndex | None = None,
) -> tuple[list[int], list[dict[int, int]]]:
    """Codes of one report for the lexicon's own synonyms (before ``includes``), and per concept the
    ``qualifiers`` (index -> code) found around its affirmed (1) or hedged (2) mentions."""
    codes = [NOT_MENTIONED] * len(patterns)
    quals: list[dict[int, int]] = [{} for _ in patterns]
    tokens, uncertain_all, negated_all, trigger_all = _tokens_and_flags(text)
    if not tokens:
        return codes, quals
    joined = " ".join(tokens) + " "
    starts = np.cumsum([0] + [len(t) + 1 for t in tokens[:-1]])
    words = set(tokens)
    mentions: list[list[tuple[int, int, int]]] = [[] for _ in patterns]  # not negated
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
            if qualifiers and code != NEGATIVE:
                mentions[k].append((a, b, code))
            if _PRIORITY[code] > _PRIORITY[best]:
                best = code
            if best == POSITIVE and not qualifiers:
                break
        codes[k] = best
    if qualifiers and any(mentions):
        token_quals = [qualifiers(t) for t in tokens]
        stop = np.fromiter((t in _CLAUSE_STOP for t in tokens), dtype=bool, count=len(tokens))
        stop |= negated_all | trigger_all
        for k, spans in enumerate(mentions):
            for a, b, code in spans:
                blocked = stop | uncertain_all if code == POSITIVE else stop
                for q in _span_qualifiers(token_quals, a, b, blocked):
                    if _PRIORITY[code] > _PRIORITY[quals[k].get(q, NOT_MENTIONED)]:
                        quals[k][q] = code
    return codes, quals


class _QualifierIndex:
    """Qualifier indices of a word, memoised (a report's words repeat across reports)."""

    def __init__(self, qualifiers: Sequence[Qualifier]) -> None:
        self.qualifiers = tuple(qualifiers)
        self._memo: dict[str, tuple[int, ...]] = {}

    def __bool__(self) -> bool:
        return bool(self.qualifiers)

    def __call__(self, word: str) -> tuple[int, ...]:
        hit = self._memo.get(word)
        if hit is None:
            hit = self._memo[word] = tuple(q for q, qual in enumerate(self.qualifiers) if qual.matches(word))
        return hit


def _span_qualifiers(token_quals: Sequence[tuple[int, ...]], a: int, b: int, blocked: np.ndarray) -> set[int]:
    """Qualifiers among the mention's own words ``[a, b)`` and its clause: up to
    :data:`QUALIFIER_WINDOW` words either side, stopping at a sentence end, ``and`` / ``but`` /
    ``which`` ... or a negated word (and, for an affirmed mention, a hedged one). Concepts of one
    clause share its qualifiers: "left basilar opacity, likely atelectasis" qualifies both."""
    found = {q for j in range(a, b) for q in token_quals[j]}
    for step, j in ((-1, a - 1), (1, b)):
        count = 0
        while 0 <= j < len(token_quals) and count < QUALIFIER_WINDOW and not blocked[j]:
            found.update(token_quals[j])
            j, count = j + step, count + 1
    return found


_CODE_OF_PRIORITY = np.array([NOT_MENTIONED, NEGATIVE, UNCERTAIN, POSITIVE], dtype=np.int8)


def _parts(lexicon: Lexicon) -> list[list[int]]:
    """Per concept, its own column and those of the concepts it includes."""
    index = {c.name.lower(): j for j, c in enumerate(lexicon.concepts)}
    return [[j, *(index[i.lower()] for i in c.includes)] for j, c in enumerate(lexicon.concepts)]


def _apply_includes(codes: np.ndarray, lexicon: Lexicon) -> np.ndarray:
    """Umbrella concepts take the strongest code of themselves and the concepts they include."""
    prio = np.vectorize(_PRIORITY.get, otypes=[np.int8])(codes) if codes.size else codes
    for j, cols in enumerate(_parts(lexicon)):
        if len(cols) > 1:
            codes[:, j] = _CODE_OF_PRIORITY[prio[:, cols].max(axis=1)]
    return codes


def extract_concepts(
    texts: Sequence[str] | pd.Series, lexicon: Lexicon | None = None, *, qualified: bool = False
) -> pd.DataFrame:
    """Concept codes of each report: one row per text, one int8 column per concept.

    Args:
        texts: report texts (``None`` / NaN / non-strings count as empty).
        lexicon: concepts to extract (default: :func:`default_lexicon`).
        qualified: also return one column ``"<concept> (<qualifier>)"`` per concept and lexicon
            qualifier found on at least one report: ``atelectasis (left)``, ``cardiomegaly (mild)``;
            1 when an affirmed mention of the concept has the qualifier in its clause, 2 when only a
            hedged one has, else 0. An umbrella concept takes the qualifiers of the concepts it
            includes.

    Returns:
        DataFrame (index of ``texts`` when it is a Series), columns = concept names in lexicon order
        (then the qualified columns, concept by concept), values 1 positive, -1 negative,
        2 uncertain, 0 not mentioned.
    """
    lex = lexicon or default_lexicon()
    patterns = [re.compile(c.pattern()) for c in lex.concepts]
    negatable = [c.negatable for c in lex.concepts]
    excludes = [re.compile(p) if (p := c.exclude_pattern()) else None for c in lex.concepts]
    first_words = [c.first_words() for c in lex.concepts]
    quals = lex.qualifiers if qualified else ()
    qindex = _QualifierIndex(quals)
    values = list(texts)
    codes = np.zeros((len(values), len(lex)), dtype=np.int8)
    qual_codes = np.zeros((len(values), len(lex), len(quals)), dtype=np.int8)
    for i, t in enumerate(values):
        if isinstance(t, str) and t.strip():
            codes[i], found = _report_codes(t, patterns, negatable, excludes, first_words, qindex)
            for k, qs in enumerate(found):
                for q, code in qs.items():
                    qual_codes[i, k, q] = _PRIORITY[code]
    codes = _apply_includes(codes, lex)
    index = texts.index if isinstance(texts, pd.Series) else None
    out = pd.DataFrame(codes, columns=lex.names, index=index)
    if quals:
        out = pd.concat([out, _qualified_frame(qual_codes, lex, index)], axis=1)
    return out


def _qualified_frame(qual_codes: np.ndarray, lex: Lexicon, index: pd.Index | None) -> pd.DataFrame:
    """The qualified columns that occur at least once, from priorities (positive > uncertain);
    umbrella concepts take the strongest of their own and their parts' qualified mentions."""
    cols: dict[str, np.ndarray] = {}
    for c, parts in zip(lex.concepts, _parts(lex), strict=True):
        merged = qual_codes[:, parts, :].max(axis=1)
        for q, qual in enumerate(lex.qualifiers):
            if merged[:, q].any():
                cols[f"{c.name} ({qual.name})"] = _CODE_OF_PRIORITY[merged[:, q]]
    return pd.DataFrame(cols, index=index, dtype=np.int8)
