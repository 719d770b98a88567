"""Report concepts: a lexicon of findings, devices and technique words with grouped synonyms,
negation- and uncertainty-aware extraction, and open-vocabulary n-gram features.

    from medaudit.audit.concepts import extract_concepts, load_lexicon
    codes = extract_concepts(["No pleural effusion, but small pneumothorax."])
    codes.loc[0, "pleural effusion"], codes.loc[0, "pneumothorax"]   # -1, 1

Codes: 1 positive, -1 negative, 2 uncertain, 0 not mentioned (see :mod:`.extract`).
"""

from __future__ import annotations

from .extract import NEGATIVE, NOT_MENTIONED, POSITIVE, UNCERTAIN, extract_concepts
from .lexicon import Concept, Lexicon, default_lexicon, load_lexicon, parse_lexicon
from .ngrams import ngram_features

__all__ = [
    "NEGATIVE",
    "NOT_MENTIONED",
    "POSITIVE",
    "UNCERTAIN",
    "Concept",
    "Lexicon",
    "default_lexicon",
    "extract_concepts",
    "load_lexicon",
    "ngram_features",
    "parse_lexicon",
]
