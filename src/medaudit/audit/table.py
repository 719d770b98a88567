"""The case table: one row per case (id, label, prediction, image, report, metadata), validated.

:func:`load_case_table` reads CSV / TSV, Parquet or JSON Lines (or takes a DataFrame), renames the user's
columns to canonical ones and checks every row. Each problem raises :class:`~medaudit.errors.InputError`
with a one-line message naming the file, the column and the row (rows are counted from 1, header
excluded), unless ``skip_bad=True``, in which case bad rows are dropped and counted by reason.

Canonical columns of :attr:`CaseTable.df`:

* ``id`` (str, unique), ``label`` (int 0/1), ``prob`` (float in [0, 1]; the hard prediction as 0.0/1.0
  when only a prediction column is given), ``pred`` (int 0/1; ``prob >= threshold`` unless a hard
  prediction column is given),
* ``image`` (str absolute path, or missing), ``report`` (str, or missing).

Metadata columns are kept, under their own names, in :attr:`CaseTable.meta` (same index as ``df``).

Reading the file itself is :mod:`medaudit.audit.table_read`'s; precomputed embeddings that replace a
modality's raw data are :mod:`medaudit.audit.embeddings_file`'s (both re-exported here).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from medaudit.audit.config import MODALITIES, ColumnMap, check_meta_columns
from medaudit.audit.embeddings_file import load_embeddings
from medaudit.audit.meta_values import numbers_from_text
from medaudit.audit.table_read import delimiter_hint, read_table, table_columns
from medaudit.data.images import check_pixel_limit
from medaudit.errors import InputError
from medaudit.io import missing_reason

__all__ = ["CaseTable", "ColumnMap", "load_case_table", "load_embeddings", "read_table", "table_columns"]


@dataclass
class CaseTable:
    """A validated case table.

    Attributes:
        df: canonical columns (``id, label, prob, pred, image, report``), index 0..n-1.
        meta: metadata columns (user names), same index as ``df``.
        n_skipped: rows dropped by ``skip_bad``.
        skipped_reasons: reason -> number of rows dropped for it.
        skipped_ids: ids of dropped rows (as strings, where readable).
        source: the table file, or ``None`` for a DataFrame.
        rows: each kept case's row in the user's table (1-based, header excluded; empty: ``i + 1``).
        origins: for a table built from a dataset (no ``source``), each case's place in the dataset's
            own files (``"row 3 of /data/valid.csv"``; ``""``: unknown); empty for a user's table.
        has_image / has_report: whether the modality's raw data is present for every row.
    """

    df: pd.DataFrame
    meta: pd.DataFrame
    n_skipped: int = 0
    skipped_reasons: dict[str, int] = field(default_factory=dict)
    skipped_ids: list[str] = field(default_factory=list)
    source: Path | None = None
    rows: list[int] = field(default_factory=list)
    origins: list[str] = field(default_factory=list)
    has_image: bool = False
    has_report: bool = False

    def __len__(self) -> int:
        return len(self.df)

    @property
    def ids(self) -> list[str]:
        return self.df["id"].tolist()

    def row(self, i: int) -> str:
        """``row N (id 'X')``: case ``i`` as the user's table numbers it (1-based, header excluded)."""
        n = self.rows[i] if i < len(self.rows) else i + 1
        return _row(n - 1, self.df["id"].iat[i])

    def place(self, i: int, column: str = "image") -> str:
        """Where case ``i`` is listed, for a message: ``TABLE: column 'image' row N (id 'X')``; for a
        dataset's table, its place in the dataset's own files (``row 3 of /data/valid.csv (id 'X')``),
        else its id alone (``id 'X'``): the dataset's combined row number would mislead."""
        if self.source is None and self.origins:
            ident = f"id '{self.df['id'].iat[i]}'"
            return f"{self.origins[i]} ({ident})" if self.origins[i] else ident
        where = str(self.source) if self.source is not None else "table"
        return f"{where}: column '{column}' {self.row(i)}"

    def without(self, drop: Sequence[int], reason: str) -> CaseTable:
        """This table without the cases at positions ``drop``, counted as skipped for ``reason``."""
        keep = np.ones(len(self.df), dtype=bool)
        keep[list(drop)] = False
        rows = self.rows or list(range(1, len(self.df) + 1))
        reasons = dict(self.skipped_reasons)
        reasons[reason] = reasons.get(reason, 0) + int((~keep).sum())
        return CaseTable(
            df=self.df.loc[keep].reset_index(drop=True),
            meta=self.meta.loc[keep].reset_index(drop=True),
            n_skipped=self.n_skipped + int((~keep).sum()),
            skipped_reasons=dict(sorted(reasons.items())),
            skipped_ids=self.skipped_ids + [str(i) for i in self.df["id"].to_numpy()[~keep]],
            source=self.source,
            rows=[r for r, k in zip(rows, keep, strict=True) if k],
            origins=[o for o, k in zip(self.origins, keep, strict=True) if k] if self.origins else [],
            has_image=self.has_image,
            has_report=self.has_report,
        )

    @property
    def errors(self) -> np.ndarray:
        """Boolean array: the classifier's prediction differs from the label."""
        return (self.df["pred"].to_numpy() != self.df["label"].to_numpy()).astype(bool)


class _RowProblems:
    """Collects row problems; raises on the first one unless ``skip`` is set."""

    def __init__(self, where: str, n: int, skip: bool) -> None:
        self.where = where
        self.skip = skip
        self.bad = np.zeros(n, dtype=bool)
        self.reasons: Counter[str] = Counter()

    def add(self, i: int, reason: str, message: str) -> None:
        if not self.skip:
            raise InputError(f"{self.where}: {message}")
        if not self.bad[i]:
            self.bad[i] = True
            self.reasons[reason] += 1


def _missing(v: object) -> bool:
    """True for None, NaN, pd.NA and NaT (scalars only)."""
    if v is None:
        return True
    try:
        return bool(pd.isna(v))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def _warn_mostly_numeric(meta: pd.DataFrame, where: str, share: float = 0.9) -> None:
    """Warn (one line) about a metadata column whose values are numbers except a few, such as an ``age``
    column holding ``old``: it is read as categorical, so every distinct age becomes its own category."""
    import warnings

    for col in meta.columns:
        s = meta[col]
        if pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
            continue
        present = s.map(lambda v: not _missing(v) and str(v).strip() != "")
        num = pd.to_numeric(s.where(present), errors="coerce").notna()
        n, bad = int(present.sum()), present & ~num
        if n >= 5 and 0 < int(bad.sum()) <= max(1.0, (1 - share) * n):
            i = int(bad[bad].index[0])  # the raw table's row (its index is 0 .. n-1)
            warnings.warn(
                f"{where}: column '{col}' is numeric except {int(bad.sum())} value(s), first row {i + 1} "
                f"({str(s.loc[i])!r}); it is read as categorical: fix or blank those values",
                UserWarning,
                stacklevel=3,
            )


def _row(i: int, ident: object) -> str:
    return f"row {i + 1} (id '{ident}')"


def _as_binary(value: object) -> int | None:
    """0/1 from 0, 1, 0.0, 1.0, True, False, '0', '1', 'true', 'false'; None otherwise."""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, np.integer)):
        return int(value) if value in (0, 1) else None
    if isinstance(value, (float, np.floating)):
        if np.isfinite(value) and value in (0.0, 1.0):
            return int(value)
        return None
    if isinstance(value, str):
        v = value.strip().lower()
        if v in ("0", "1", "0.0", "1.0"):
            return int(float(v))
        if v in ("true", "false"):
            return int(v == "true")
    return None


def _as_float(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _as_prob(value: object) -> float | None:
    if isinstance(value, (bool, np.bool_)):  # True / False are not probabilities
        return None
    try:
        f = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if not np.isfinite(f) or f < 0.0 or f > 1.0:
        return None
    return f


def percent_hint(values: Iterable[object]) -> str:
    """``'; ... percentages? ...'`` when the numbers of a probability column lie in [0, 100] and more than
    half of them exceed 1, else ``''``: a classifier's scores exported as percentages."""
    nums = np.array(
        [f for v in values if not isinstance(v, (bool, np.bool_)) and (f := _as_float(v)) is not None]
    )
    nums = nums[np.isfinite(nums)] if nums.size else nums
    if nums.size and nums.min() >= 0 and nums.max() <= 100 and (nums > 1).mean() > 0.5:
        return "; the column holds values up to 100: percentages? divide them by 100"
    return ""


def _check_columns(raw: pd.DataFrame, where: str, wanted: Iterable[tuple[str, str]]) -> None:
    available = [str(c) for c in raw.columns]
    for role, col in wanted:
        if col not in raw.columns:
            raise InputError(
                f"{where}: unknown column '{col}' (for {role}); available columns: {', '.join(available)}"
                + delimiter_hint(available, where)
                + _near_miss(col, available)
            )


def _near_miss(col: str, available: list[str]) -> str:
    """A hint naming a column that differs from ``col`` only by surrounding spaces or case (``' id '``
    printed in the list of available columns looks like ``id``)."""
    near = [a for a in available if a != col and a.strip().casefold() == col.strip().casefold()]
    return f" (column {near[0]!r} differs only by spaces or case)" if near else ""


def load_case_table(
    path_or_df: str | os.PathLike[str] | pd.DataFrame,
    columns: ColumnMap | None = None,
    meta: Sequence[str] = (),
    skip_bad: bool = False,
    require: Sequence[str] = ("image", "report"),
    threshold: float = 0.5,
    min_cases: int = 1,
) -> CaseTable:
    """Read and validate a case table.

    Args:
        path_or_df: a ``.csv``/``.tsv``/``.parquet``/``.jsonl`` file or a DataFrame.
        columns: the user's column names per role.
        meta: metadata columns to keep (for the metadata encoder and enrichment tests); each once,
            none of them a column of another role in ``columns`` (:func:`check_meta_columns`).
        skip_bad: drop bad rows (counted by reason) instead of raising.
        require: raw modalities that must be present and valid for every row: any of ``image``,
            ``report`` (``metadata`` requires ``meta`` to be non-empty). Modalities not required are
            loaded when their column exists, without failing on a bad value (a missing image file
            becomes a missing value; an empty report an empty string).
        threshold: probability cut-off giving the hard prediction when no ``pred`` column is given.
        min_cases: fewer valid cases than this raises an InputError.

    Returns:
        A :class:`CaseTable`.
    """
    columns = columns or ColumnMap()
    meta = list(meta)
    check_meta_columns(meta, columns)  # a column twice, or the label / prediction as metadata
    unknown_mod = [m for m in require if m not in MODALITIES]
    if unknown_mod:
        raise InputError(f"unknown modality '{unknown_mod[0]}' (choose from {', '.join(MODALITIES)})")
    raw, source, where, base = _read_raw(path_or_df, columns)
    use_prob, use_pred = _check_wanted(raw, where, columns, meta, require)
    probs = _RowProblems(where, len(raw), skip_bad)
    ids = _parse_ids(raw, columns, probs)
    labels = _parse_labels(raw, columns, probs, ids)
    prob, pred = _parse_predictions(raw, columns, probs, ids, use_prob, use_pred, threshold)
    reports, images = _parse_inputs(raw, columns, probs, ids, base, require)
    df = _case_frame(ids, labels, prob, pred, images, reports)
    meta_df = numbers_from_text(_plain_meta(raw[meta]), where) if meta else pd.DataFrame(index=raw.index)
    _check_meta_values(meta_df, probs, ids)
    _warn_mostly_numeric(meta_df[~probs.bad], where)  # the rows kept (a bad value is named above)
    table = _keep_good(df, meta_df, probs, ids, where, min_cases, source)
    if "metadata" in require:
        _check_meta_not_empty(table, meta, where)
    table.has_image = bool(images is not None and len(table.df) and table.df["image"].notna().all())
    table.has_report = bool(
        reports is not None
        and len(table.df)
        and table.df["report"].map(lambda r: bool(r and str(r).strip())).all()
    )
    return table


def _plain_meta(meta: pd.DataFrame) -> pd.DataFrame:
    """The metadata columns, those of a pandas nullable dtype whose missing value is ``pd.NA`` (``string``,
    ``Int64``, ``boolean``: a Parquet file or DataFrame after ``convert_dtypes()``) as NumPy ones: the
    rule search, the encoders and the enrichment tests compare values, and ``pd.NA == x`` cannot be a
    truth value. Numbers become float64 (missing: NaN), anything else object (missing: None)."""
    out = meta.copy()
    for col in out.columns:
        s = out[col]
        if getattr(s.dtype, "na_value", None) is not pd.NA:
            continue
        numeric = pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)
        out[col] = s.astype("float64") if numeric else s.astype(object).where(s.notna(), None)
    return out


def _check_meta_values(meta_df: pd.DataFrame, probs: _RowProblems, ids: list[str]) -> None:
    """A metadata value is one number or one text: a JSON list / object (JSON Lines, Parquet) or an
    infinite number is a bad row (the encoders and the enrichment tests cannot use it)."""
    for col in meta_df.columns:
        for i, v in enumerate(meta_df[col].tolist()):
            if isinstance(v, (list, tuple, dict, set, np.ndarray)):
                shown = " ".join(repr(v.tolist() if isinstance(v, np.ndarray) else v).split())
                shown = shown if len(shown) <= 60 else shown[:57] + "..."
                probs.add(
                    i,
                    "bad metadata value",
                    f"column '{col}' {_row(i, ids[i])}: metadata value {shown} is "
                    f"{'an object' if isinstance(v, dict) else 'a list'}, not a single number or text",
                )
            elif isinstance(v, (float, np.floating)) and np.isinf(v):
                probs.add(
                    i,
                    "bad metadata value",
                    f"column '{col}' {_row(i, ids[i])}: metadata value {float(v)} is not finite",
                )
            elif _beyond_float(v):
                probs.add(
                    i,
                    "bad metadata value",
                    f"column '{col}' {_row(i, ids[i])}: metadata value {str(v)[:12]}... "
                    f"({len(str(v).lstrip('-'))} digits) is too large to be a number",
                )


def _beyond_float(v: object) -> bool:
    """True for a whole number no float can hold (a CSV cell of 400 digits is read as a Python int)."""
    if not isinstance(v, int) or isinstance(v, bool):
        return False
    try:
        float(v)
    except OverflowError:
        return True
    return False


def _parse_inputs(
    raw: pd.DataFrame,
    columns: ColumnMap,
    probs: _RowProblems,
    ids: list[str],
    base: Path,
    require: Sequence[str],
) -> tuple[list[object] | None, list[object] | None]:
    """The reports and the images of the rows; ``None`` for a modality whose column the table lacks."""
    report_col = columns.report_path or columns.report
    reports = images = None
    if report_col and report_col in raw.columns:
        reports = _parse_reports(raw, columns, probs, ids, base, "report" in require)
    if columns.image and columns.image in raw.columns:
        images = _parse_images(raw, columns, probs, ids, base, "image" in require)
    return reports, images


def _case_frame(
    ids: list[str],
    labels: np.ndarray,
    prob: np.ndarray,
    pred: np.ndarray,
    images: list[object] | None,
    reports: list[object] | None,
) -> pd.DataFrame:
    """The table's columns, one row per raw row (``None`` images / reports: the table has no such column)."""
    n = len(ids)
    return pd.DataFrame(
        {
            "id": pd.Series(ids, dtype=object),
            "label": labels,
            "prob": prob,
            "pred": pred,
            "image": pd.Series([None] * n if images is None else images, dtype=object),
            "report": pd.Series([None] * n if reports is None else reports, dtype=object),
        }
    )


def _blank(col: pd.Series) -> pd.Series:
    """Missing values and blank strings (a JSON table writes an absent value as ``""``)."""
    return col.isna() | col.map(lambda v: isinstance(v, str) and not v.strip())


def _check_meta_not_empty(table: CaseTable, meta: list[str], where: str) -> None:
    """The metadata encoder cannot scale a column that has no value at all."""
    empty = next((m for m in meta if len(table.meta) and _blank(table.meta[m]).all()), None)
    if empty is not None:
        kept = " of the rows kept" if table.n_skipped else ""
        raise InputError(
            f"{where}: column '{empty}' (metadata) is empty in every row{kept}; drop it from --meta"
        )


def _read_raw(
    path_or_df: str | os.PathLike[str] | pd.DataFrame, columns: ColumnMap
) -> tuple[pd.DataFrame, Path | None, str, Path]:
    """The raw table, its source file, the name errors use, and the folder relative paths start from."""
    if isinstance(path_or_df, pd.DataFrame):
        raw = path_or_df.reset_index(drop=True).copy()
        source, where, base = None, "table", Path.cwd()
    else:
        source = Path(path_or_df)
        raw = read_table(source, text_columns=[columns.id]).reset_index(drop=True)
        where, base = str(source), source.absolute().parent
    raw.columns = [str(c) for c in raw.columns]
    dup = raw.columns[raw.columns.duplicated()]
    if len(dup):
        raise InputError(f"{where}: column '{dup[0]}' appears more than once")
    return raw, source, where, base


def _check_wanted(
    raw: pd.DataFrame, where: str, columns: ColumnMap, meta: list[str], require: Sequence[str]
) -> tuple[bool, bool]:
    """Check that every column a role needs exists; returns whether probabilities / predictions are read."""
    wanted: list[tuple[str, str]] = [("id", columns.id), ("label", columns.label)]
    use_pred = columns.pred is not None
    use_prob = columns.prob is not None and (columns.prob in raw.columns or not use_pred)
    if use_prob:
        wanted.append(("prob", columns.prob))  # type: ignore[arg-type]
    if use_pred:
        wanted.append(("pred", columns.pred))  # type: ignore[arg-type]
    if not use_prob and not use_pred:
        raise InputError(
            f"{where}: no prediction column: give a probability column (prob) or a hard prediction (pred)"
        )
    if "image" in require:
        if not columns.image:
            raise InputError(f"{where}: the image modality needs an image column")
        wanted.append(("image", columns.image))
    report_col = columns.report_path or columns.report
    if "report" in require:
        if not report_col:
            raise InputError(f"{where}: the report modality needs a report column")
        wanted.append(("report_path" if columns.report_path is not None else "report", report_col))
    if "metadata" in require and not meta:
        raise InputError(f"{where}: the metadata modality needs at least one metadata column (--meta)")
    wanted.extend(("metadata", m) for m in meta)
    _check_columns(raw, where, wanted)
    return use_prob, use_pred


def _parse_ids(raw: pd.DataFrame, columns: ColumnMap, probs: _RowProblems) -> list[str]:
    """Case ids as strings (integral floats as integers); missing and duplicate ids are bad rows."""
    ids: list[str] = []
    first_seen: dict[str, int] = {}
    for i, v in enumerate(raw[columns.id].tolist()):
        if _missing(v) or (isinstance(v, str) and not v.strip()):
            probs.add(i, "missing id", f"column '{columns.id}' row {i + 1}: missing id")
            ids.append("")
            continue
        if isinstance(v, (float, np.floating)) and float(v).is_integer():
            v = int(v)
        s = str(v).strip()
        ids.append(s)
        if s in first_seen:
            probs.add(
                i,
                "duplicate id",
                f"column '{columns.id}': duplicate id '{s}' in rows {first_seen[s] + 1} and {i + 1}",
            )
        else:
            first_seen[s] = i

    return ids


def _parse_labels(raw: pd.DataFrame, columns: ColumnMap, probs: _RowProblems, ids: list[str]) -> np.ndarray:
    """Binary labels; anything else is a bad row."""
    n = len(raw)
    labels = np.zeros(n, dtype=np.int64)
    for i, v in enumerate(raw[columns.label].tolist()):
        b = _as_binary(v)
        if b is None:
            probs.add(
                i,
                "label not binary",
                f"column '{columns.label}' {_row(i, ids[i])}: label {v!r} is not binary (0/1)",
            )
        else:
            labels[i] = b

    return labels


def _parse_predictions(
    raw: pd.DataFrame,
    columns: ColumnMap,
    probs: _RowProblems,
    ids: list[str],
    use_prob: bool,
    use_pred: bool,
    threshold: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities in [0, 1] and hard predictions (thresholded, or read from the ``pred`` column)."""
    n = len(raw)
    prob = np.zeros(n, dtype=np.float64)
    pred = np.zeros(n, dtype=np.int64)
    if use_prob:
        values = raw[columns.prob].tolist()  # type: ignore[index]
        hint: str | None = None
        for i, v in enumerate(values):
            f = _as_prob(v)
            if f is None:
                if hint is None:
                    hint = percent_hint(values)
                what = "is missing (NaN)" if _missing(v) else f"is not in [0, 1]{hint}"
                if not _missing(v) and _as_float(v) is None:
                    what = "is not a number"
                if isinstance(v, (bool, np.bool_)):
                    what = "is a boolean, not a probability in [0, 1]"
                probs.add(
                    i,
                    "bad probability",
                    f"column '{columns.prob}' {_row(i, ids[i])}: probability {v!r} {what}",
                )
            else:
                prob[i] = f
        pred = (prob >= threshold).astype(np.int64)
    if use_pred:
        for i, v in enumerate(raw[columns.pred].tolist()):  # type: ignore[index]
            b = _as_binary(v)
            if b is None:
                probs.add(
                    i,
                    "prediction not binary",
                    f"column '{columns.pred}' {_row(i, ids[i])}: prediction {v!r} is not binary (0/1)",
                )
            else:
                pred[i] = b
        if not use_prob:
            prob = pred.astype(np.float64)

    return prob, pred


def _parse_reports(
    raw: pd.DataFrame, columns: ColumnMap, probs: _RowProblems, ids: list[str], base: Path, need_report: bool
) -> list[object]:
    """Report texts (from the column, or read from the files it names); empty ones bad when required."""
    n = len(raw)
    report_col = columns.report_path or columns.report
    report_is_path = columns.report_path is not None
    reports: list[object] = [None] * n
    for i, v in enumerate(raw[report_col].tolist()):  # type: ignore[index]
        missing = _missing(v)
        if report_is_path:
            if missing or not str(v).strip():
                if need_report:
                    probs.add(
                        i, "empty report", f"column '{report_col}' {_row(i, ids[i])}: missing report path"
                    )
                continue
            rp = Path(str(v).strip())
            rp = rp if rp.is_absolute() else base / rp
            try:
                # a named pipe would block the read, a device such as /dev/zero never end it
                if rp.exists() and not rp.is_file() and not rp.is_dir():
                    raise OSError(0, "not a regular file: a device, pipe or socket")
                if "\x00" in str(rp):  # open() would raise ValueError: embedded null byte
                    raise OSError(0, "its name contains a NUL character")
                text = _report_text(rp.read_bytes())
            except OSError as exc:
                if need_report:
                    probs.add(
                        i,
                        "unreadable report file",
                        f"column '{report_col}' {_row(i, ids[i])}: report file {rp} is unreadable "
                        f"({exc.strerror or type(exc).__name__})",
                    )
                continue
        else:
            text = "" if missing else str(v)
        if not text.strip():
            if need_report:
                probs.add(i, "empty report", f"column '{report_col}' {_row(i, ids[i])}: empty report")
            reports[i] = ""
            continue
        reports[i] = text

    return reports


def _report_text(data: bytes) -> str:
    """A report file's text: UTF-16 when it starts with a UTF-16 byte-order mark (Notepad's "Unicode";
    read as UTF-8 it was letters between NUL characters), else UTF-8 without its byte-order mark, an
    undecodable byte shown as U+FFFD."""
    import codecs

    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", errors="replace")
    return data.decode("utf-8-sig", errors="replace")


def _parse_images(
    raw: pd.DataFrame, columns: ColumnMap, probs: _RowProblems, ids: list[str], base: Path, need_image: bool
) -> list[object]:
    """Image paths that exist, are readable and within the pixel limit (decoding errors surface later)."""
    n = len(raw)
    images: list[object] = [None] * n
    for i, v in enumerate(raw[columns.image].tolist()):  # type: ignore[index]
        missing = _missing(v) or not str(v).strip()
        if missing:
            if need_image:
                probs.add(
                    i, "missing image", f"column '{columns.image}' {_row(i, ids[i])}: missing image path"
                )
            continue
        ip = Path(str(v).strip())
        ip = ip if ip.is_absolute() else base / ip
        try:
            usable = ip.is_file() and os.access(ip, os.R_OK)
        except (OSError, ValueError):  # a name too long, or holding a NUL character
            usable = False
        if not usable:
            if need_image:  # not found, a folder, unreadable, a broken link ... (missing_reason)
                probs.add(
                    i,
                    "missing image",
                    f"column '{columns.image}' {_row(i, ids[i])}: {ip}: {missing_reason(ip, 'image file')}",
                )
            continue
        if need_image:
            try:
                check_pixel_limit(ip)
            except InputError as exc:
                probs.add(
                    i,
                    "image too large or unreadable",
                    f"column '{columns.image}' {_row(i, ids[i])}: {exc}",
                )
                continue
        images[i] = str(ip)

    return images


def _keep_good(
    df: pd.DataFrame,
    meta_df: pd.DataFrame,
    probs: _RowProblems,
    ids: list[str],
    where: str,
    min_cases: int,
    source: Path | None,
) -> CaseTable:
    """Drop the bad rows (with ``skip_bad``; otherwise a bad row has already raised) and count them."""
    keep = ~probs.bad
    skipped_ids = [ids[i] for i in np.flatnonzero(probs.bad) if ids[i]]
    df = df.loc[keep].reset_index(drop=True)
    meta_df = meta_df.loc[keep].reset_index(drop=True)
    if len(df) < min_cases:
        raise InputError(
            f"{where}: {len(df)} valid cases"
            + (f" after skipping {int(probs.bad.sum())} bad rows" if probs.bad.any() else "")
            + f"; at least {min_cases} are needed"
        )
    return CaseTable(
        df=df,
        meta=meta_df,
        n_skipped=int(probs.bad.sum()),
        skipped_reasons=dict(sorted(probs.reasons.items())),
        skipped_ids=skipped_ids,
        source=source,
        rows=[int(i) + 1 for i in np.flatnonzero(keep)],
    )
