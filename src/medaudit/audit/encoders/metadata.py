"""Metadata (tabular) encoders.

Registered (modality ``metadata``): ``tabular`` (default; one-hot categoricals, standardised numerics,
missing-value indicators) and ``sentence`` (a templated sentence per case, e.g. "Patient age 63, sex F,
view PA.", embedded by a report encoder as in the multimodal study).
"""

from __future__ import annotations

import math
import string
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from medaudit.audit.encoders.base import get_encoder, register_encoder, stable_hash
from medaudit.errors import InputError


def _frame(inputs: Any, what: str) -> pd.DataFrame:
    if not isinstance(inputs, pd.DataFrame):
        raise InputError(f"{what}: expected a pandas DataFrame, got {type(inputs).__name__}")
    if inputs.columns.duplicated().any():
        dup = inputs.columns[inputs.columns.duplicated()][0]
        raise InputError(f"{what}: duplicate column {dup!r}")
    return inputs


@register_encoder("metadata", "tabular")
class TabularEncoder:
    """One-hot categoricals, standardised numerics with missing-value indicators (sklearn ColumnTransformer).

    Column kinds are inferred at :meth:`fit` (numeric dtypes -> numeric, everything else -> categorical)
    unless given. Numerics: median imputation, then standardisation; categoricals:
    missing as its own level, one-hot, unknown levels at encode time ignored (all-zero). Numeric
    columns with missing values at fit time also get a 0/1 missing-value indicator.

    Args:
        columns: columns to use (default all).
        categorical / numeric: force a column's kind.
        max_categories: keep at most this many levels per column (rarer ones grouped), ``None`` = all.
    """

    name = "tabular"
    modality = "metadata"
    requires_fit = True

    def __init__(
        self,
        columns: Sequence[str] | None = None,
        categorical: Sequence[str] | None = None,
        numeric: Sequence[str] | None = None,
        max_categories: int | None = 50,
    ) -> None:
        self.columns = columns
        self.categorical = categorical
        self.numeric = numeric
        self.max_categories = max_categories
        self.transformer_: Any = None
        self.numeric_: list[str] = []
        self.categorical_: list[str] = []
        self._key: str | None = None

    @property
    def is_fitted(self) -> bool:
        return self.transformer_ is not None

    def _select(self, df: pd.DataFrame) -> pd.DataFrame:
        cols = list(self.columns) if self.columns is not None else list(df.columns)
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise InputError(f"tabular metadata: missing column {missing[0]!r}")
        return df[cols]

    def fit(self, inputs: Any) -> TabularEncoder:
        from sklearn.compose import ColumnTransformer
        from sklearn.impute import MissingIndicator, SimpleImputer
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import OneHotEncoder, StandardScaler

        df = self._select(_frame(inputs, "tabular metadata"))
        if len(df) == 0 or df.shape[1] == 0:
            raise InputError("tabular metadata: need at least one row and one column to fit")
        forced_cat = set(self.categorical or ())
        forced_num = set(self.numeric or ())
        num, cat = [], []
        for c in df.columns:
            if c in forced_num or (
                c not in forced_cat
                and pd.api.types.is_numeric_dtype(df[c])
                and not pd.api.types.is_bool_dtype(df[c])
            ):
                num.append(c)
            else:
                cat.append(c)
        for c in num:
            if df[c].isna().all():
                raise InputError(f"tabular metadata: numeric column {c!r} is entirely missing")
            try:
                pd.to_numeric(df[c])
            except (TypeError, ValueError):
                raise InputError(f"tabular metadata: column {c!r} is declared numeric but is not") from None
        parts = []
        if num:
            parts.append(("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), num))
            if df[num].isna().any().any():  # 0/1 indicators, left unscaled like the one-hot columns
                parts.append(("missing", MissingIndicator(features="missing-only"), num))
        if cat:
            parts.append(
                (
                    "cat",
                    OneHotEncoder(
                        handle_unknown="infrequent_if_exist" if self.max_categories else "ignore",
                        max_categories=self.max_categories,
                        sparse_output=False,
                        dtype=np.float32,
                    ),
                    cat,
                )
            )
        ct = ColumnTransformer(parts, sparse_threshold=0.0)
        ct.fit(self._coerce(df, num, cat))
        self.transformer_, self.numeric_, self.categorical_ = ct, num, cat
        self._key = None
        return self

    @staticmethod
    def _coerce(df: pd.DataFrame, num: list[str], cat: list[str]) -> pd.DataFrame:
        out = pd.DataFrame(index=df.index)
        for c in num:
            out[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
        for c in cat:
            col = df[c].astype(object)
            out[c] = col.where(col.notna(), "<missing>").astype(str)
        return out

    @property
    def dim(self) -> int:
        if self.transformer_ is None:
            raise InputError("tabular metadata: dim is known only after fit()")
        return len(self.transformer_.get_feature_names_out())

    def feature_names(self) -> list[str]:
        """Names of the output columns (after fit)."""
        if self.transformer_ is None:
            raise InputError("tabular metadata: fit() first")
        return [str(n) for n in self.transformer_.get_feature_names_out()]

    def encode(self, inputs: Any) -> np.ndarray:
        """Encode rows; fits on them first if the encoder is not fitted yet."""
        df = _frame(inputs, "tabular metadata")
        if self.transformer_ is None:
            self.fit(df)
        missing = [c for c in [*self.numeric_, *self.categorical_] if c not in df.columns]
        if missing:
            raise InputError(f"tabular metadata: missing column {missing[0]!r}")
        x = self.transformer_.transform(self._coerce(df, self.numeric_, self.categorical_))
        return np.asarray(x, dtype=np.float32)

    def cache_key(self) -> str:
        if self.transformer_ is None:
            raise InputError("tabular metadata: fit() before asking for cache_key()")
        if self._key is None:
            self._key = stable_hash(self.name, self.numeric_, self.categorical_, self.transformer_)
        return self._key


def _fmt(v: Any, missing: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA or v is pd.NaT:
        return missing
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4g}"
    return str(v)


class _Row(dict):
    def __init__(self, data: dict[str, str], row: Any) -> None:
        super().__init__(data)
        self.row = row

    def __missing__(self, key: str) -> str:
        raise InputError(f"sentence metadata: template field {{{key}}} is not a column (row {self.row})")


@register_encoder("metadata", "sentence")
class SentenceMetadataEncoder:
    """Render each row as a sentence and embed it with a report encoder (the study's approach).

    Args:
        template: a ``str.format`` template over column names, e.g.
            ``"Patient age {age}, sex {sex}, view {view}."``. ``None`` = ``"Patient <col> <value>, ..."``
            over all columns (underscores in names become spaces).
        text_encoder: report encoder name (default ``"minilm"``) or an encoder instance.
        text_encoder_kw: keyword arguments for :func:`get_encoder` when ``text_encoder`` is a name.
        missing: text used for missing values.
    """

    name = "sentence"
    modality = "metadata"

    def __init__(
        self,
        template: str | None = None,
        text_encoder: Any = "minilm",
        text_encoder_kw: dict[str, Any] | None = None,
        missing: str = "unknown",
    ) -> None:
        self.template = template
        self.text_encoder = text_encoder
        self.text_encoder_kw = text_encoder_kw
        self.missing = missing
        self._enc: Any = None

    @property
    def encoder(self) -> Any:
        if self._enc is None:
            if isinstance(self.text_encoder, str):
                self._enc = get_encoder("report", self.text_encoder, **(self.text_encoder_kw or {}))
            else:
                self._enc = self.text_encoder
        return self._enc

    @property
    def requires_fit(self) -> bool:
        return bool(getattr(self.encoder, "requires_fit", False))

    @property
    def is_fitted(self) -> bool:
        return bool(getattr(self.encoder, "is_fitted", True))

    def sentences(self, inputs: Any) -> list[str]:
        """The sentence rendered for each row."""
        df = _frame(inputs, "sentence metadata")
        if self.template is not None:
            fields = {f for _, f, _, _ in string.Formatter().parse(self.template) if f}
            missing = [f for f in fields if f not in df.columns]
            if missing:
                raise InputError(f"sentence metadata: template field {{{missing[0]}}} is not a column")
        out = []
        for idx, row in zip(df.index, df.itertuples(index=False, name=None), strict=True):
            vals = {str(c): _fmt(v, self.missing) for c, v in zip(df.columns, row, strict=True)}
            if self.template is None:
                body = ", ".join(f"{c.replace('_', ' ')} {v}" for c, v in vals.items())
                out.append(f"Patient {body}.")
            else:
                out.append(self.template.format_map(_Row(vals, idx)))
        return out

    def fit(self, inputs: Any) -> SentenceMetadataEncoder:
        self.encoder.fit(self.sentences(inputs))
        return self

    @property
    def dim(self) -> int:
        return int(self.encoder.dim)

    def encode(self, inputs: Any) -> np.ndarray:
        return np.asarray(self.encoder.encode(self.sentences(inputs)), dtype=np.float32)

    def cache_key(self) -> str:
        return stable_hash(self.name, self.template, self.missing, self.encoder.cache_key())
