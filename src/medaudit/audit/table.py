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

Precomputed embeddings can replace a modality's raw data: :func:`load_embeddings`.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

from medaudit.audit.config import MODALITIES, ColumnMap, check_meta_columns
from medaudit.data.images import check_pixel_limit
from medaudit.errors import InputError
from medaudit.io import check_unique_header, missing_reason

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


def _suffix(p: Path) -> str:
    """The table format's suffix, ``.csv.gz`` style for gzipped files."""
    return "".join(s.lower() for s in p.suffixes[-2:]) if p.suffix.lower() == ".gz" else p.suffix.lower()


def read_table(path: str | os.PathLike[str], text_columns: Sequence[str] = ()) -> pd.DataFrame:
    """Read a CSV / TSV, Parquet or JSON Lines file into a DataFrame (no validation beyond parsing).

    ``text_columns`` (e.g. the id column) are read from CSV / TSV as text, so ``007`` stays ``007``.
    A CSV / TSV header must name each column once and every data line must have as many fields as the
    header (pandas would otherwise rename a repeated column, or shift a longer line into a phantom row);
    a bad JSON Lines file is named with its first bad line.
    """
    text_dtype = {c: str for c in text_columns}
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{p}: is a folder, not a table file")
    if not p.exists():
        raise InputError(f"{p}: {missing_reason(p, 'table file')}")
    if not p.is_file():
        raise InputError(f"{p}: not a regular file")
    suffix = _suffix(p)
    _check_not_binary(p, suffix)
    try:
        if suffix in (".csv", ".csv.gz"):
            _check_delimited(p, ",")
            return pd.read_csv(p, dtype=text_dtype)
        if suffix in (".tsv", ".tsv.gz", ".tab"):
            _check_delimited(p, "\t")
            return pd.read_csv(p, sep="\t", dtype=text_dtype)
        if suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            check_unique_header(p, pq.read_schema(p).names)  # pyarrow: 'Multiple matches for FieldRef'
            return pd.read_parquet(p)
        if suffix in (".jsonl", ".ndjson", ".jsonl.gz", ".json"):
            return _read_json(p, lines=suffix != ".json")
    except InputError:
        raise
    except pd.errors.EmptyDataError as exc:
        raise InputError(f"{p}: the table file is empty (no header line)") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{p}: not UTF-8 text (byte {exc.start + 1} cannot be decoded)") from exc
    except Exception as exc:  # pandas / pyarrow parse errors, OSError ...
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{p}: cannot read table ({msg})") from exc
    raise InputError(f"{p}: unknown table format '{p.suffix}' (use .csv, .tsv, .parquet or .jsonl)")


#: leading bytes of binary formats a text table is mistaken for: magic -> what the file looks like
_BINARY_MAGIC = {
    b"PAR1": ("a Parquet file", "name it .parquet"),
    b"PK\x03\x04": ("a zip archive (an Excel .xlsx workbook?)", "export the sheet as CSV"),
    b"\x1f\x8b": ("a gzip-compressed file", "add .gz to its name"),
}
_TEXT_KINDS = {".csv": "CSV", ".tsv": "TSV", ".tab": "TSV", ".jsonl": "JSON Lines", ".ndjson": "JSON Lines"}


def _check_not_binary(p: Path, suffix: str) -> None:
    """A file named as a text table (``.csv``, ``.tsv``, ``.jsonl`` ...) that starts with the magic bytes
    of Parquet, zip (xlsx) or gzip is named for what it looks like, not as a file that is not UTF-8."""
    kind = _TEXT_KINDS.get(suffix, "JSON" if suffix == ".json" else None)
    if kind is None:  # .parquet, or gzipped text (.csv.gz): their readers name what is wrong
        return
    try:
        with open(p, "rb") as fh:
            head = fh.read(4)
    except OSError:
        return  # the reader names it
    for magic, (what, fix) in _BINARY_MAGIC.items():
        if head.startswith(magic):
            raise InputError(f"{p}: looks like {what}, not {kind} text; {fix}")


def _open_text(p: Path) -> IO[str]:
    if p.suffix.lower() == ".gz":
        import gzip

        return gzip.open(p, "rt", encoding="utf-8-sig", newline="")
    return open(p, encoding="utf-8-sig", newline="")


def _check_delimited(p: Path, sep: str) -> None:
    """The header names each column once; every non-blank data line has as many fields as the header."""
    import csv

    old_limit = csv.field_size_limit()
    csv.field_size_limit(2**31 - 1)  # long report texts
    line = 1
    try:
        with _open_text(p) as fh:
            reader = csv.reader(fh, delimiter=sep)
            header = next(reader, None)
            if header is None:
                return  # an empty file: pandas names it
            check_unique_header(p, header)
            n, line = len(header), reader.line_num
            for row in reader:
                start, line = line + 1, reader.line_num
                if len(row) == n or not row or (len(row) == 1 and not row[0].strip()):
                    continue  # blank lines are skipped, as pandas does
                raise InputError(
                    f"{p}: line {start} has {len(row)} fields, the header has {n}" + _runs_on(row, n, line)
                )
    except UnicodeDecodeError as exc:
        raise InputError(f"{p}: line {_bad_utf8_line(p)} is not UTF-8 text ({exc.reason})") from exc
    except csv.Error as exc:
        raise InputError(f"{p}: line {line + 1}: {exc}") from exc
    except (OSError, EOFError) as exc:
        raise InputError(f"{p}: cannot read table ({exc})") from exc
    finally:
        csv.field_size_limit(old_limit)


def _runs_on(row: list[str], n: int, end: int) -> str:
    """A hint for a row of fewer than ``n`` fields whose last field spans lines (up to line ``end``): a
    quote that is never closed swallows the following lines, to the end of the file, into one field."""
    if len(row) < n and "\n" in row[-1]:
        return f" (its last field runs on to line {end}: is a '\"' not closed?)"
    return ""


class _RepeatedKey(Exception):
    """A JSON object names a key twice (raised by :func:`_unique_keys`)."""


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """``json.loads``'s ``object_pairs_hook``: the object as a dict, refusing a repeated key (``json``
    and pandas keep the last of ``{"label": 1, "label": 0}`` silently)."""
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            raise _RepeatedKey(key)
        out[key] = value
    return out


def _check_json_lines(p: Path) -> None:
    """Raise an InputError naming the first line of ``p`` that is not a JSON object, or that names a key
    twice (no-op if none does)."""
    import json

    try:
        with _open_text(p) as fh:
            for n, text in enumerate(fh, start=1):
                if not text.strip():
                    continue
                try:
                    obj = json.loads(text, object_pairs_hook=_unique_keys)
                except json.JSONDecodeError as exc:
                    raise InputError(
                        f"{p}: line {n} is not valid JSON ({exc.msg}, character {exc.pos + 1})"
                    ) from None
                except _RepeatedKey as exc:
                    raise InputError(f"{p}: line {n} names the key '{exc.args[0]}' twice") from None
                if not isinstance(obj, dict):
                    raise InputError(f"{p}: line {n} is not a JSON object ({{...}}), one case per line")
    except UnicodeDecodeError as exc:
        raise InputError(f"{p}: line {_bad_utf8_line(p)} is not UTF-8 text ({exc.reason})") from exc
    except (OSError, EOFError) as exc:
        raise InputError(f"{p}: cannot read table ({exc})") from exc


def _read_json(p: Path, lines: bool) -> pd.DataFrame:
    """A JSON Lines (or, with ``lines=False``, a JSON) table; a bad line is named."""
    if lines:
        _check_json_lines(p)  # names the first bad line (pandas keeps the last of a repeated key)
    try:
        df = pd.read_json(p, lines=lines)
    except ValueError as exc:  # ujson: 'Value is too big! at position 232', a place in no line
        where = _big_number(p) if lines and str(exc).startswith("Value is too") else None
        if where is None:
            raise
        raise InputError(f"{p}: {where}") from None
    if lines and (df.shape[1] == 0 or not all(isinstance(c, str) for c in df.columns)):
        raise InputError(f"{p}: the table has no column (the file is empty, or each line is {{}})")
    return df


#: the whole part of a JSON number that pandas' JSON reader holds: from int64's least to uint64's most
_JSON_WHOLE_RANGE = (-(2**63), 2**64 - 1)


class _BigNumber(str):
    """A JSON number (its text) whose whole part is beyond :data:`_JSON_WHOLE_RANGE`."""


def _number(text: str) -> object:
    """``json.loads``'s ``parse_int`` / ``parse_float``: a :class:`_BigNumber` for a number pandas
    cannot read, else ``None`` (the scan needs no value)."""
    whole = text.split(".")[0].split("e")[0].split("E")[0]
    if len(whole.lstrip("-").lstrip("0")) > 20:  # int() of 5000 digits is refused by Python itself
        return _BigNumber(text)
    low, high = _JSON_WHOLE_RANGE
    return None if low <= int(whole) <= high else _BigNumber(text)


def _big_number(p: Path) -> str | None:
    """``line N, key 'K': the number 12345… (401 digits) is too large ...`` for the first number of the
    JSON Lines file ``p`` that pandas cannot read, or ``None`` (its lines were checked to be objects)."""
    import json

    with _open_text(p) as fh:
        for n, text in enumerate(fh, start=1):
            obj = json.loads(text, parse_int=_number, parse_float=_number) if text.strip() else {}
            big = [(k, b) for k, v in obj.items() for b in _bigs(v)]
            if big:
                key, num = big[0]
                shown = num if len(num) <= 24 else f"{num[:12]}… ({len(num)} characters)"
                low, high = _JSON_WHOLE_RANGE
                return (
                    f"line {n}, key '{key}': the number {shown} is out of range (readable: {low} to {high})"
                )
    return None


def _bigs(value: object) -> Iterable[_BigNumber]:
    """The :class:`_BigNumber` values in a parsed JSON value, nested lists and objects included."""
    if isinstance(value, _BigNumber):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _bigs(v)
    elif isinstance(value, list):
        for v in value:
            yield from _bigs(v)


def _bad_utf8_line(p: Path) -> int | str:
    """The number of the first line of ``p`` that is not UTF-8 (``'?'`` when it cannot be told)."""
    import gzip

    try:
        with gzip.open(p, "rb") if p.suffix.lower() == ".gz" else open(p, "rb") as fh:
            for n, raw in enumerate(fh, start=1):
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError:
                    return n
    except (OSError, EOFError):
        pass
    return "?"


def table_columns(path_or_df: str | os.PathLike[str] | pd.DataFrame) -> list[str] | None:
    """The column names of a table, read from its header only (``None`` when the format has no cheap
    header: JSON Lines; the full read then reports what is wrong)."""
    if isinstance(path_or_df, pd.DataFrame):
        return [str(c) for c in path_or_df.columns]
    p = Path(path_or_df)
    suffix = _suffix(p)
    try:
        if suffix in (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".tab"):
            sep = "," if suffix.startswith(".csv") else "\t"
            return [str(c) for c in pd.read_csv(p, sep=sep, nrows=0).columns]
        if suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            return [str(c) for c in pq.read_schema(p).names]
    except Exception:  # unreadable: the full read names the problem
        return None
    return None


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


def _check_columns(raw: pd.DataFrame, where: str, wanted: Iterable[tuple[str, str]]) -> None:
    available = [str(c) for c in raw.columns]
    for role, col in wanted:
        if col not in raw.columns:
            raise InputError(
                f"{where}: unknown column '{col}' (for {role}); available columns: {', '.join(available)}"
                + _delimiter_hint(available, where)
                + _near_miss(col, available)
            )


def _near_miss(col: str, available: list[str]) -> str:
    """A hint naming a column that differs from ``col`` only by surrounding spaces or case (``' id '``
    printed in the list of available columns looks like ``id``)."""
    near = [a for a in available if a != col and a.strip().casefold() == col.strip().casefold()]
    return f" (column {near[0]!r} differs only by spaces or case)" if near else ""


def _delimiter_hint(available: list[str], where: str) -> str:
    """A hint when a file's whole header was read as one column holding another delimiter (a ``;``- or
    tab-separated file named ``.csv``, a comma-separated one named ``.tsv``); ``""`` otherwise."""
    if len(available) != 1 or where == "table":  # "table": a DataFrame, no delimiter involved
        return ""
    if where.lower().endswith((".tsv", ".tsv.gz", ".tab")):
        read_as, others = "tab", ((";", "';'", "save it tab-separated"), (",", "comma", "name it .csv"))
    else:
        read_as, others = "comma", ((";", "';'", "save it with commas"), ("\t", "tab", "name it .tsv"))
    for sep, name, fix in others:
        if sep in available[0]:
            return (
                f" (the header was read as one column: the file looks {name}-separated, "
                f"and this file name is read as {read_as}-separated; {fix})"
            )
    return ""


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
    meta_df = raw[meta].copy() if meta else pd.DataFrame(index=raw.index)
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


def _check_meta_not_empty(table: CaseTable, meta: list[str], where: str) -> None:
    """The metadata encoder cannot scale a column that has no value at all."""
    empty = next((m for m in meta if len(table.meta) and table.meta[m].isna().all()), None)
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
        for i, v in enumerate(raw[columns.prob].tolist()):  # type: ignore[index]
            f = _as_prob(v)
            if f is None:
                what = "is missing (NaN)" if _missing(v) else "is not in [0, 1]"
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


def _ids_file_for(path: Path) -> Path | None:
    for cand in (
        path.with_suffix(".ids.txt"),
        path.with_name(path.name + ".ids.txt"),
        path.with_suffix(".ids"),
        path.with_suffix(".ids.csv"),
    ):
        if cand.is_file():
            return cand
    return None


def load_embeddings(
    path: str | os.PathLike[str],
    ids: Sequence[str],
    ids_path: str | os.PathLike[str] | None = None,
    ignore_ids: Iterable[str] = (),
    columns: ColumnMap | None = None,
) -> np.ndarray:
    """Load precomputed embeddings and align them to ``ids``.

    Two layouts:

    * ``X.npy`` (2-D float array) with an ids file ``X.ids.txt`` (one id per line, same order) next to
      it, or given as ``ids_path``;
    * ``X.parquet`` with an ``id`` column and either numeric vector columns or one list-valued column.

    Every id in ``ids`` must have exactly one row; a row whose id is not in ``ids`` (other than
    ``ignore_ids``, e.g. rows dropped by ``skip_bad``) raises an InputError, as do duplicate ids and
    non-finite values. A parquet column named ``label``, ``prob`` or ``pred``, or as the label,
    probability or prediction column of ``columns``, is refused: it would leak the answer into the slices.

    Returns:
        float32 array of shape ``(len(ids), d)`` in the order of ``ids``.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: {missing_reason(p, 'embeddings file')}")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        mat, emb_ids = _read_npy_embeddings(p, ids_path)
    elif suffix in (".parquet", ".pq"):
        mat, emb_ids = _read_parquet_embeddings(p, columns or ColumnMap())
    else:
        raise InputError(f"{p}: unknown embeddings format '{p.suffix}' (use .npy + ids file, or .parquet)")
    return _align_embeddings(p, mat, emb_ids, ids, ignore_ids)


def _as_float32(p: Path, mat: np.ndarray, emb_ids: list[str]) -> np.ndarray:
    """``mat`` as float32; a finite value beyond float32's range is named (the cast made it infinite,
    with numpy's 'overflow encountered in cast' on stderr, and the row was called non-finite)."""
    with np.errstate(over="ignore"):
        out = np.asarray(mat, dtype=np.float32)
    if np.isinf(out).any():
        big = np.isinf(out) & np.isfinite(mat)
        if big.any():
            r = int(np.flatnonzero(big.any(axis=1))[0])
            raise InputError(
                f"{p}: the embedding of id '{emb_ids[r]}' holds {float(mat[r][big[r]][0]):.3g}, beyond "
                f"float32's range (±{float(np.finfo(np.float32).max):.2g}); scale the vectors"
            )
    return out


def _read_npy_embeddings(p: Path, ids_path: str | os.PathLike[str] | None) -> tuple[np.ndarray, list[str]]:
    """The ``.npy`` matrix and the ids of its rows (``ids_path`` or the ``X.ids.txt`` next to it)."""
    try:
        with open(p, "rb") as fh:
            magic = fh.read(6)
    except OSError as exc:
        raise InputError(f"{p}: cannot read embeddings ({exc.strerror or type(exc).__name__})") from exc
    if magic != b"\x93NUMPY":
        raise InputError(f"{p}: not a .npy array file (no NumPy header); save it with numpy.save")
    try:
        mat = np.load(p, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc):  # an object array: never unpickled
            raise InputError(f"{p}: holds Python objects, not a numeric array; save a float array") from exc
        raise InputError(f"{p}: not a readable .npy array ({str(exc).splitlines()[0]})") from exc
    except (OSError, EOFError) as exc:
        raise InputError(f"{p}: not a readable .npy array ({exc})") from exc
    if mat.dtype.kind not in "biuf":
        raise InputError(f"{p}: embeddings must be numbers, got an array of dtype {mat.dtype}")
    ip = Path(ids_path) if ids_path else _ids_file_for(p)
    if ip is None or not ip.is_file():
        raise InputError(f"{p}: ids file not found (expected {p.with_suffix('.ids.txt')}, one id per line)")
    try:
        text = ip.read_text(encoding="utf-8-sig")  # a byte-order mark (Notepad) is not part of an id
    except UnicodeDecodeError as exc:
        raise InputError(f"{ip}: line {_bad_utf8_line(ip)} is not UTF-8 text ({exc.reason})") from exc
    except OSError as exc:
        raise InputError(f"{ip}: cannot read ids file ({exc.strerror or type(exc).__name__})") from exc
    emb_ids = [line.strip() for line in text.splitlines() if line.strip()]
    if emb_ids and ip.suffix == ".csv" and emb_ids[0].lower() == "id":
        emb_ids = emb_ids[1:]
    if mat.ndim != 2 or mat.shape[1] == 0:  # (n, 0): no feature at all
        raise InputError(
            f"{p}: embeddings must be a 2-D array with at least one column, got shape {mat.shape}"
        )
    if len(emb_ids) != mat.shape[0]:
        raise InputError(f"{p}: {mat.shape[0]} rows but {len(emb_ids)} ids in {ip}")
    return mat, emb_ids


#: the column roles whose values are the answer: (ColumnMap field, what it is, its flag)
_ANSWER_ROLES = (
    ("label", "label", "--label-col"),
    ("prob", "probability", "--prob-col"),
    ("pred", "prediction", "--pred-col"),
)


def _check_answer_columns(p: Path, names: Iterable[object], columns: ColumnMap) -> None:
    """Refuse an embeddings column named ``label``, ``prob`` or ``pred``, or as the table's label,
    probability or prediction column: read as a feature, it leaks the answer into the slices."""
    roles = {field_name: (what, flag) for field_name, what, flag in _ANSWER_ROLES}
    for field_name, what, flag in _ANSWER_ROLES:
        if (col := getattr(columns, field_name)) is not None:
            roles[col] = (what, flag)
    for name in map(str, names):
        if name in roles:
            what, flag = roles[name]
            raise InputError(
                f"{p}: column '{name}' is named as the {what} column ({flag}); read as an embedding "
                f"feature it would leak the {what} into the slices: drop it (keep 'id' and the vector)"
            )


def _read_parquet_embeddings(p: Path, columns: ColumnMap) -> tuple[np.ndarray, list[str]]:
    """The matrix (numeric columns, or one list-valued column) and ``id`` column of a parquet file; a
    column named as a label, probability or prediction column is refused."""
    try:
        edf = pd.read_parquet(p)
    except Exception as exc:
        raise InputError(f"{p}: cannot read embeddings ({str(exc).splitlines()[0]})") from exc
    if "id" not in edf.columns:
        raise InputError(f"{p}: no 'id' column; available columns: {', '.join(map(str, edf.columns))}")
    emb_ids = [str(v) for v in edf["id"].tolist()]
    rest = edf.drop(columns=["id"])
    _check_answer_columns(p, rest.columns, columns)
    if rest.shape[1] == 1 and rest.iloc[:, 0].dtype == object:
        try:
            mat = np.stack([np.asarray(v, dtype=np.float64) for v in rest.iloc[:, 0]])
        except (ValueError, TypeError) as exc:
            raise InputError(f"{p}: column '{rest.columns[0]}' is not a vector column") from exc
    else:
        bad = [c for c in rest.columns if not pd.api.types.is_numeric_dtype(rest[c])]
        if bad:
            raise InputError(f"{p}: column '{bad[0]}' is not numeric")
        mat = rest.to_numpy(dtype=np.float64)
    if mat.ndim != 2 or mat.shape[1] == 0:
        raise InputError(f"{p}: no vector columns besides 'id'")
    return mat, emb_ids


def _align_embeddings(
    p: Path, mat: np.ndarray, emb_ids: list[str], ids: Sequence[str], ignore_ids: Iterable[str]
) -> np.ndarray:
    """Rows of ``mat`` in the order of ``ids`` (float32); duplicate, unmatched, missing, non-finite rows
    or values beyond float32 raise."""
    index: dict[str, int] = {}
    for j, e in enumerate(emb_ids):
        if e in index:
            raise InputError(f"{p}: duplicate id '{e}' in rows {index[e] + 1} and {j + 1}")
        index[e] = j
    wanted = set(ids)
    ignore = set(ignore_ids)
    extra = [e for e in emb_ids if e not in wanted and e not in ignore]
    if extra:
        raise InputError(
            f"{p}: {len(extra)} embedding rows do not match the case table, e.g. id '{extra[0]}' (row {index[extra[0]] + 1})"
        )
    missing = [i for i in ids if i not in index]
    if missing:
        raise InputError(f"{p}: no embedding for {len(missing)} cases of the table, e.g. id '{missing[0]}'")
    out = _as_float32(p, mat[[index[i] for i in ids]], list(ids))
    if not np.isfinite(out).all():
        r = int(np.flatnonzero(~np.isfinite(out).all(axis=1))[0])
        raise InputError(f"{p}: non-finite values in the embedding of id '{ids[r]}'")
    return out
