"""Concept lexicons: named concepts with grouped synonyms, loadable from YAML and validated.

YAML format (see ``default_lexicon.yaml`` and docs/concepts.md)::

    name: my-lexicon          # optional
    language: en              # optional; the built-in lexicon covers English reports
    concepts:
      - name: chest tube      # unique, required
        synonyms: [chest tube*, thoracostomy tube]   # non-empty, required
        group: device         # optional, free text
        includes: [tube]      # optional: other concepts whose mentions count for this one
        negatable: true       # optional (false for phrases that carry their own negation)
        exclude: [chest tube removal]   # optional: phrases that never count as a mention
    qualifiers:               # optional: side, site and severity words that qualify a mention
      - name: left
        words: [left]         # single words; "foo*" matches any word starting with "foo"
        group: side           # optional, free text

A synonym is a phrase of lower-case words matched within one sentence; ``foo*`` matches any word
starting with ``foo`` and ``~`` stands for up to two arbitrary words.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from medaudit.configfile import load_yaml_strict, read_config_text, yaml_error_text
from medaudit.errors import InputError
from medaudit.io import missing_reason

__all__ = ["Concept", "Lexicon", "Qualifier", "default_lexicon", "load_lexicon", "parse_lexicon"]

_TOP_KEYS = frozenset({"name", "language", "concepts", "description", "qualifiers"})
_QUALIFIER_KEYS = frozenset({"name", "words", "group", "description"})
_CONCEPT_KEYS = frozenset({"name", "synonyms", "group", "includes", "negatable", "exclude", "description"})
_WORD = re.compile(r"[a-z0-9]+\*?|~")


@dataclass(frozen=True)
class Concept:
    """One concept: ``name`` (used in rule text), its ``synonyms``, ``group``, ``includes``."""

    name: str
    synonyms: tuple[str, ...]
    group: str = ""
    includes: tuple[str, ...] = ()
    negatable: bool = True
    exclude: tuple[str, ...] = ()

    def pattern(self) -> str:
        """A regular expression over space-joined lower-case tokens matching any synonym."""
        return _phrases_pattern(self.synonyms)

    def first_words(self) -> tuple[frozenset[str], tuple[str, ...]]:
        """The words a synonym can start with: exact words and prefixes (from ``foo*``)."""
        exact: set[str] = set()
        prefixes: set[str] = set()
        for syn in self.synonyms:
            words = [w for w in _WORD.findall(syn.lower()) if w != "~"]
            if words:
                (prefixes.add(words[0][:-1]) if words[0].endswith("*") else exact.add(words[0]))
        return frozenset(exact), tuple(sorted(prefixes))

    def exclude_pattern(self) -> str | None:
        """A regular expression matching the ``exclude`` phrases (``None`` without any)."""
        return _phrases_pattern(self.exclude) if self.exclude else None


def _phrases_pattern(phrases: tuple[str, ...]) -> str:
    """One regular expression over space-joined lower-case tokens for a list of lexicon phrases."""
    alts = []
    for syn in sorted(phrases, key=len, reverse=True):
        parts = []
        gap = 0  # adjacent "~" make one gap of up to 2 words each: "(?:w ){0,2}(?:w ){0,2}" backtracks
        for w in [*_WORD.findall(syn.lower()), ""]:  # exponentially on a sentence it fails to match
            if w == "~":
                gap += 2
                continue
            if gap:
                parts.append(r"(?:[a-z0-9]+ ){0," + str(gap) + "}")
                gap = 0
            if w:
                core = re.escape(w.rstrip("*")) + (r"[a-z0-9]*" if w.endswith("*") else "")
                parts.append(core + " ")
        if parts:
            alts.append("".join(parts))
    return r"(?<![a-z0-9])(?:" + "|".join(alts) + ")" if alts else r"(?!x)x"


@dataclass(frozen=True)
class Qualifier:
    """A side, site or severity qualifier (``left``, ``base``, ``mild`` ...) of a concept mention:
    one of its single ``words`` (``foo*`` = any word starting with ``foo``) near the mention."""

    name: str
    words: tuple[str, ...]
    group: str = ""

    def matches(self, token: str) -> bool:
        return any(token.startswith(w[:-1]) if w.endswith("*") else token == w for w in self.words)


@dataclass(frozen=True)
class Lexicon:
    """An ordered set of concepts (order = column order of :func:`extract_concepts`) and the
    qualifiers that can narrow a mention (``atelectasis (left)``)."""

    concepts: tuple[Concept, ...]
    name: str = ""
    language: str = "en"
    qualifiers: tuple[Qualifier, ...] = ()

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.concepts]

    def __len__(self) -> int:
        return len(self.concepts)


#: most gaps (``~``, adjacent ones counted as one) in one synonym or exclusion: each gap multiplies the
#: ways a regular expression can fail on a sentence (12 gaps took seconds per report, 16 minutes)
MAX_PHRASE_GAPS = 4
# C0/C1 controls (not tab and line breaks: a name's whitespace reads as one space) and the Unicode
# bidirectional controls, which the report shows as [U+XXXX]: a name holding one could hide or reorder
# its text in slices.json, a notebook or a terminal
_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_chars(text: str, where: str, what: str, name: bool = False) -> str:
    """``text`` unless it holds an unpaired surrogate (a YAML escape ``"\\ud800"``: not text, and no
    output file can be written with it) or, for a name, a control or bidirectional-control character."""
    m = _SURROGATE.search(text) or (_CONTROLS.search(text) if name else None)
    if m:
        kind = "an unpaired surrogate" if _SURROGATE.match(m.group()) else "a control character"
        raise InputError(f"{where}: {what} holds {kind} ({ascii(m.group())[1:-1]}), not plain text")
    return text


def _text(value: Any, where: str, key: str, default: str = "") -> str:
    """A scalar YAML value as text. A list or mapping is refused before ``str()`` could expand it
    (a "billion laughs" alias tree is tiny in YAML and gigabytes as text); ``yes`` / ``no`` read as
    booleans by YAML 1.1 are refused instead of becoming ``'True'`` / ``'False'``."""
    if value is None:
        return default
    if isinstance(value, bool):
        raise InputError(f"{where}: key '{key}' is {str(value).lower()}, not text (quote it)")
    if not isinstance(value, (str, int, float)):
        raise InputError(f"{where}: key '{key}' must be text, not a {type(value).__name__}")
    return _check_chars(str(value).strip(), where, f"key '{key}'", name=key == "name")


def _str_list(value: Any, where: str, key: str) -> tuple[str, ...]:
    """A list of phrases; each must hold a word to match (not blank, not only punctuation or ``~``)
    and at most :data:`MAX_PHRASE_GAPS` gaps."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
        raise InputError(f"{where}: key '{key}' must be a list of strings")
    for j, v in enumerate(value):
        if isinstance(v, bool):
            raise InputError(f"{where}: key '{key}' item {j + 1} is {str(v).lower()}, not text (quote it)")
        _check_chars(str(v), where, f"key '{key}' item {j + 1}")
        words = _WORD.findall(str(v).lower())
        if not [w for w in words if w != "~"]:
            raise InputError(f"{where}: key '{key}' item {j + 1} ({str(v)!r}) has no word to match")
        gaps = sum(1 for i, w in enumerate(words) if w == "~" and (i == 0 or words[i - 1] != "~"))
        if gaps > MAX_PHRASE_GAPS:
            raise InputError(
                f"{where}: key '{key}' item {j + 1} has {gaps} '~' gaps between words, more than "
                f"{MAX_PHRASE_GAPS} (write '~ ~' for a longer gap)"
            )
    return tuple(str(v).strip() for v in value)


def _entry(item: Any, where: str, kind: str, i: int, keys: frozenset[str], needs: str) -> tuple[str, str]:
    """Check one ``concepts`` / ``qualifiers`` list item's shape and name: (name, where-prefix)."""
    if not isinstance(item, dict):
        raise InputError(f"{where}: {kind}s[{i}] must be a mapping with 'name' and '{needs}'")
    name = " ".join(_text(item.get("name"), f"{where}: {kind}s[{i}]", "name").split())
    at = f"{where}: {kind} '{name}'" if name else f"{where}: {kind}s[{i}]"
    unknown = sorted(set(map(str, item)) - keys)
    if unknown:
        raise InputError(f"{at}: unknown key '{unknown[0]}' (allowed: {', '.join(sorted(keys))})")
    if not name:
        raise InputError(f"{where}: {kind}s[{i}]: key 'name' is missing or empty")
    if not _looks_as(name):  # only invisible characters: every rule would read "report mentions "
        raise InputError(f"{where}: {kind}s[{i}]: key 'name' ({name!a}) has no visible character")
    if "∧" in name:  # the rules' "and": "x ∧ label = 0" would read as a conjunction of two predicates
        raise InputError(f"{at}: key 'name' holds '∧', which joins the predicates of a rule")
    return name, at


def _parse_concept(item: Any, where: str, i: int) -> Concept:
    name, at = _entry(item, where, "concept", i, _CONCEPT_KEYS, "synonyms")
    synonyms = _str_list(item.get("synonyms", []), at, "synonyms")
    includes = _str_list(item.get("includes", []), at, "includes")
    exclude = _str_list(item.get("exclude", []), at, "exclude")
    if not synonyms:
        raise InputError(f"{at}: key 'synonyms' is missing or empty")
    neg = item.get("negatable", True)
    if not isinstance(neg, bool):
        raise InputError(f"{at}: key 'negatable' must be true or false")
    _text(item.get("description"), at, "description")
    return Concept(name, synonyms, _text(item.get("group"), at, "group"), includes, neg, exclude)


def _parse_qualifier(item: Any, where: str, i: int) -> Qualifier:
    name, at = _entry(item, where, "qualifier", i, _QUALIFIER_KEYS, "words")
    words = _str_list(item.get("words", []), at, "words")
    if not words:
        raise InputError(f"{at}: key 'words' is missing or empty")
    for j, w in enumerate(words):
        if not re.fullmatch(r"[a-z0-9]+\*?", w.lower()):
            raise InputError(
                f"{at}: key 'words' item {j + 1} ({w!r}) must be one word (letters/digits, optional *)"
            )
    _text(item.get("description"), at, "description")
    return Qualifier(name, tuple(w.lower() for w in words), _text(item.get("group"), at, "group"))


def _parse_qualifiers(value: Any, where: str) -> tuple[Qualifier, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InputError(f"{where}: key 'qualifiers' must be a list of mappings with 'name' and 'words'")
    quals = [_parse_qualifier(it, where, i) for i, it in enumerate(value)]
    _unique_names([q.name for q in quals], where, "qualifier")
    return tuple(quals)


def _looks_as(name: str) -> str:
    """What a name reads as: compatibility forms folded (NFKC: ``ＴＵＢＥ`` is ``TUBE``), invisible
    format characters dropped (zero-width space, soft hyphen), case folded (``ß`` is ``ss``)."""
    folded = unicodedata.normalize("NFKC", name)
    folded = "".join(ch for ch in folded if unicodedata.category(ch) != "Cf")
    return " ".join(folded.casefold().split())


def _unique_names(names: list[str], where: str, kind: str) -> set[str]:
    """The lower-cased names; a duplicate (case-insensitive, or one that only reads the same: see
    :func:`_looks_as`) is an :class:`InputError`."""
    seen: set[str] = set()
    looks: dict[str, str] = {}
    for name in names:
        if name.lower() in seen:
            raise InputError(f"{where}: duplicate {kind} name '{name}'")
        other = looks.setdefault(_looks_as(name), name)
        if other != name:
            raise InputError(
                f"{where}: duplicate {kind} name {name!a}: it reads as '{other}' "
                "(it differs only in case, width or invisible characters)"
            )
        seen.add(name.lower())
    return seen


def _check_qualified_names(
    concepts: list[Concept], qualifiers: tuple[Qualifier, ...], seen: set[str], where: str
) -> None:
    """Every qualified column name (``"<concept> (<qualifier>)"``) is new: neither a concept's name nor
    another concept-qualifier pair's (``a`` + ``b (c)`` and ``a (b`` + ``c)`` would share one)."""
    pairs: dict[str, tuple[str, str]] = {}
    for c in concepts:
        for q in qualifiers:
            col = f"{c.name} ({q.name})"
            if col.lower() in seen:
                raise InputError(
                    f"{where}: concept '{col}' has the name of concept '{c.name}' "
                    f"qualified by '{q.name}'; rename one"
                )
            other = pairs.setdefault(col.lower(), (c.name, q.name))
            if other != (c.name, q.name):
                raise InputError(
                    f"{where}: concept '{c.name}' qualified by '{q.name}' and concept '{other[0]}' qualified "
                    f"by '{other[1]}' would both be column '{col}'; rename one"
                )


def parse_lexicon(data: Any, where: str = "<lexicon>") -> Lexicon:
    """Validate a lexicon given as parsed YAML (``where`` names its source in error messages)."""
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a mapping with a 'concepts' list")
    unknown = sorted(set(map(str, data)) - _TOP_KEYS)
    if unknown:
        raise InputError(f"{where}: unknown key '{unknown[0]}' (allowed: {', '.join(sorted(_TOP_KEYS))})")
    items = data.get("concepts")
    if not isinstance(items, list) or not items:
        raise InputError(f"{where}: key 'concepts' is missing or empty")
    concepts = [_parse_concept(it, where, i) for i, it in enumerate(items)]
    seen = _unique_names([c.name for c in concepts], where, "concept")
    for c in concepts:
        for inc in c.includes:
            if inc.lower() not in seen:
                raise InputError(f"{where}: concept '{c.name}': key 'includes' names unknown concept '{inc}'")
    _text(data.get("description"), where, "description")
    name, language = _text(data.get("name"), where, "name"), _text(data.get("language"), where, "language")
    qualifiers = _parse_qualifiers(data.get("qualifiers"), where)
    _check_qualified_names(concepts, qualifiers, seen, where)
    return Lexicon(tuple(concepts), name, language or "en", qualifiers)


def load_lexicon(path: str | Path) -> Lexicon:
    """Read and validate a YAML lexicon file; :class:`InputError` naming the file and the key."""
    p = Path(path)
    if not p.is_file():  # missing, a folder, or a pipe / device (reading one would block or never end)
        raise InputError(f"{p}: {missing_reason(p, 'lexicon file')}")
    try:  # at most MAX_CONFIG_BYTES, as every config file: a lexicon is read whole, then parsed
        text = read_config_text(p, "lexicon file")
    except InputError:
        raise
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: not a readable text file ({exc})") from exc
    try:
        data = load_yaml_strict(text, str(p), "lexicon")
    except yaml.YAMLError as exc:
        raise InputError(f"{p}: not valid YAML ({yaml_error_text(exc)})") from None
    return parse_lexicon(data, str(p))


@lru_cache(maxsize=1)
def default_lexicon() -> Lexicon:
    """The built-in English chest X-ray lexicon (``default_lexicon.yaml``)."""
    text = resources.files("medaudit.audit.concepts").joinpath("default_lexicon.yaml").read_text("utf-8")
    return parse_lexicon(yaml.safe_load(text), "default_lexicon.yaml")
