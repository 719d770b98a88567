"""Open-vocabulary report features: negation-marked, sentence-bounded n-grams as binary columns.

A failure named by a word no lexicon lists can still become a rule: ``report says "pectus"``. N-grams
come from :func:`medaudit.audit.explain.phrase_ngrams` (negated words carry the prefix ``no_``; n-grams
never cross a sentence or a de-identification placeholder).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.feature_extraction.text import CountVectorizer

from medaudit.audit.explain import phrase_ngrams

__all__ = ["ngram_features"]


def ngram_features(
    texts: Sequence[str] | pd.Series,
    ngram_range: tuple[int, int] = (1, 2),
    min_df: int | float = 0.01,
    max_df: float = 0.9,
    max_features: int | None = 200,
) -> pd.DataFrame:
    """Binary n-gram presence per report, as a boolean DataFrame named ``report says "<n-gram>"``.

    Args:
        texts: report texts (non-strings count as empty).
        ngram_range: n-gram sizes.
        min_df / max_df: document-frequency bounds (as in scikit-learn's ``CountVectorizer``).
        max_features: keep the most frequent n-grams only.

    Returns:
        (n, V) boolean DataFrame (sparse-backed), V <= ``max_features``; empty when no n-gram passes.
    """
    docs = [t if isinstance(t, str) else "" for t in texts]
    vec = CountVectorizer(
        analyzer=partial(phrase_ngrams, ngram_range=ngram_range),
        binary=True,
        min_df=min_df,
        max_df=max_df,
        max_features=max_features,
        dtype=np.uint8,
    )
    try:
        x = vec.fit_transform(docs)
    except ValueError:  # empty vocabulary (or min_df above max_df on a tiny corpus)
        return pd.DataFrame(index=range(len(docs)))
    names = [f'report says "{v}"' for v in vec.get_feature_names_out()]
    return pd.DataFrame.sparse.from_spmatrix(sparse.csc_matrix(x, dtype=bool), columns=names)
