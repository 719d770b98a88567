"""Metadata values that are numbers written as text: dates (as decimal years) and DICOM ages.

**Dates**, so that a period of time can define a slice.

A study date, an acquisition time or a scanner's installation date is metadata that hospital audits
need: a failure that starts with a new scanner or protocol is a *period*. Read as text, each date was
its own category (the 20 most frequent days became ``study_date = 2011-03-28`` predicates, none of them
a period); the metadata encoder one-hot encoded them the same way.

A metadata column is read as dates when it has a datetime dtype (Parquet, a DataFrame), or when every
value that is not missing is an ISO 8601 date (``2011-03-28``, ``2011/03/28``, optionally with a time
``2011-03-28T09:06:50`` and a zone). It becomes a number, the decimal year (``2011-03-28`` ->
``2011.235``): linear in time for the encoders, and readable in a rule (``study_date >= 2011.2``).
Day-first or month-first dates (``03/28/2011``) are ambiguous and stay text; DICOM ``DA`` values
(``20110328``) read from a CSV are numbers already and keep their order.

**DICOM ages.** A column whose every present value is a DICOM Age String (``063Y``, ``006M``, ``012W``,
``030D``: Patient's Age as headers hold it) becomes the age in years (63, 0.5, 0.23, 0.082). Read as
text, every age was its own category, and no rule could say ``age >= 70``.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd

__all__ = ["dates_as_years", "decimal_year", "dicom_ages_as_years", "numbers_from_text"]

_ISO_DATE = re.compile(
    r"\d{4}[-/](0[1-9]|1[0-2])[-/](0[1-9]|[12]\d|3[01])"
    r"([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?"
)


def decimal_year(t: pd.Series) -> pd.Series:
    """Datetimes as decimal years (missing stays NaN): the year plus the elapsed share of it."""
    t = pd.to_datetime(t, errors="coerce", utc=True).dt.tz_localize(None)
    start = pd.to_datetime(t.dt.year.astype("Int64").astype(str) + "-01-01", errors="coerce")
    days = np.where(t.dt.is_leap_year, 366.0, 365.0)
    out = t.dt.year + (t - start).dt.total_seconds() / (days * 86400.0)
    return out.astype("float64")


_DICOM_AGE = re.compile(r"(\d{3})([DWMY])")
_YEARS_PER = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0}


def _all_match(s: pd.Series, pattern: re.Pattern[str]) -> tuple[bool, pd.Series]:
    """Whether every present value of ``s`` is a string matching ``pattern``, and the present mask."""
    present = s.map(
        lambda v: v is not None and not (isinstance(v, float) and np.isnan(v)) and str(v).strip() != ""
    )
    first = s[present].iloc[0] if present.any() else None
    if not isinstance(first, str) or pattern.fullmatch(first.strip()) is None:  # most columns stop here
        return False, present
    if not all(isinstance(v, str) for v in s[present]):
        return False, present
    return bool(s[present].map(lambda v: pattern.fullmatch(v.strip()) is not None).all()), present


def _text_kind(s: pd.Series) -> bool:
    return not (pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s))


def dicom_ages_as_years(meta: pd.DataFrame) -> pd.DataFrame:
    """``meta`` with its DICOM Age String columns (``063Y``) as ages in years, float64."""
    out = meta.copy()
    for col in out.columns:
        if not _text_kind(out[col]) or pd.api.types.is_datetime64_any_dtype(out[col]):
            continue
        is_age, present = _all_match(out[col], _DICOM_AGE)
        if is_age:
            parts = out[col].where(present).str.strip().str.extract(_DICOM_AGE)
            out[col] = pd.to_numeric(parts[0], errors="coerce") * parts[1].map(_YEARS_PER).astype(float)
    return out


def numbers_from_text(meta: pd.DataFrame, where: str) -> pd.DataFrame:
    """Dates as decimal years and DICOM ages as years (see the module docstring)."""
    return dicom_ages_as_years(dates_as_years(meta, where))


def dates_as_years(meta: pd.DataFrame, where: str) -> pd.DataFrame:
    """``meta`` with its date columns (see the module docstring) as decimal years, float64.

    A date column whose text cannot be a calendar day (``2011-02-30``) is left as text, with one
    warning naming ``where``, the column and the first such row."""
    out = meta.copy()
    for col in out.columns:
        s = out[col]
        if pd.api.types.is_datetime64_any_dtype(s):
            out[col] = decimal_year(s)
            continue
        if not _text_kind(s):
            continue
        is_date, present = _all_match(s, _ISO_DATE)
        if not is_date:
            continue
        parsed = pd.to_datetime(
            s.where(present).map(lambda v: v.strip() if isinstance(v, str) else v).str.replace("/", "-"),
            errors="coerce",
            utc=True,
            format="ISO8601",
        )
        bad = present & parsed.isna()
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            warnings.warn(
                f"{where}: column '{col}' holds dates, but row {i + 1} ({str(s.iloc[i])!r}) is no calendar "
                "day; the column is read as text",
                UserWarning,
                stacklevel=3,
            )
            continue
        out[col] = decimal_year(parsed)
    return out
