"""Reading a case table file (CSV / TSV, gzipped or not, Parquet, JSON Lines) into a DataFrame.

Every problem of the file itself (binary content under a text suffix, a quote never closed, a row with
too many fields, a repeated key or column, a number beyond 64 bits, bytes that are not UTF-8) is one
:class:`~medaudit.errors.InputError` naming the file and the line. Row-level checks of the values are
:mod:`medaudit.audit.table`'s.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO

import pandas as pd

from medaudit.errors import InputError
from medaudit.io import check_unique_header, missing_reason

__all__ = ["delimiter_hint", "read_table", "table_columns"]


def _suffix(p: Path) -> str:
    """The table format's suffix, ``.csv.gz`` style for gzipped files."""
    return "".join(s.lower() for s in p.suffixes[-2:]) if p.suffix.lower() == ".gz" else p.suffix.lower()


def read_table(path: str | os.PathLike[str], text_columns: Sequence[str] = ()) -> pd.DataFrame:
    """Read a CSV / TSV, Parquet or JSON Lines file into a DataFrame (no validation beyond parsing).

    ``text_columns`` (e.g. the id column) are read from CSV / TSV / JSON as text, so ``007`` stays ``007``.
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
            return _read_json(p, lines=suffix != ".json", text_columns=text_columns)
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
            header = next((r for r in reader if not _blank_row(r)), None)  # pandas skips blank lines
            if header is None:
                return  # an empty file: pandas names it
            check_unique_header(p, header)
            n, line = len(header), reader.line_num
            for row in reader:
                start, line = line + 1, reader.line_num
                if len(row) == n or _blank_row(row):
                    continue  # blank lines are skipped, as pandas does
                raise InputError(
                    f"{p}: line {start} has {len(row)} fields, the header has {n}"
                    + _runs_on(row, n, line)
                    + (_excel_sep_hint(header) or delimiter_hint(header, str(p)))
                )
    except UnicodeDecodeError as exc:
        raise InputError(not_utf8(p, exc)) from exc
    except csv.Error as exc:
        raise InputError(f"{p}: line {line + 1}: {exc}") from exc
    except (OSError, EOFError) as exc:
        raise InputError(f"{p}: cannot read table ({exc})") from exc
    finally:
        csv.field_size_limit(old_limit)


def _blank_row(row: list[str]) -> bool:
    return not row or (len(row) == 1 and not row[0].strip())


def delimiter_hint(available: list[str], where: str) -> str:
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


def _excel_sep_hint(header: list[str]) -> str:
    """A hint when the header line is Excel's delimiter line (``sep=;``), which is not a header."""
    first = ",".join(header).strip()
    if first.lower().startswith("sep=") and len(first) <= 6:
        return f" (the first line '{first}' is Excel's delimiter line, not a header: delete it)"
    return ""


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
        raise InputError(not_utf8(p, exc)) from exc
    except (OSError, EOFError) as exc:
        raise InputError(f"{p}: cannot read table ({exc})") from exc


def _check_json_keys(p: Path) -> None:
    """Raise an InputError naming the key of a ``.json`` table's object that names a key twice (pandas
    keeps the last of ``{"label": 1, "label": 0}``); a file that is not JSON is left to pandas' reader."""
    import json

    try:
        with _open_text(p) as fh:
            json.load(fh, object_pairs_hook=_unique_keys)
    except _RepeatedKey as exc:
        raise InputError(f"{p}: a JSON object names the key '{exc.args[0]}' twice") from None
    except (ValueError, OSError, EOFError, RecursionError):
        return  # not JSON, not UTF-8, nested too deeply ...: pandas' reader names it


def _read_json(p: Path, lines: bool, text_columns: Sequence[str] = ()) -> pd.DataFrame:
    """A JSON Lines (or, with ``lines=False``, a JSON) table; a bad line is named; ``text_columns``
    stay text (``"007"`` is not the number 7)."""
    if lines:
        _check_json_lines(p)  # names the first bad line (pandas keeps the last of a repeated key)
    else:
        _check_json_keys(p)
    try:
        df = pd.read_json(p, lines=lines, dtype=dict.fromkeys(text_columns, str) or True)
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


def not_utf8(p: Path, exc: UnicodeDecodeError) -> str:
    """One line for a text file that is not UTF-8: UTF-16 (it starts with a byte-order mark, as Excel's
    "Unicode Text" does) is said to be, else the first line that is not UTF-8 is named."""
    import gzip

    try:
        with gzip.open(p, "rb") if p.suffix.lower() == ".gz" else open(p, "rb") as fh:
            head = fh.read(2)
    except (OSError, EOFError):
        head = b""
    if head in (b"\xff\xfe", b"\xfe\xff"):
        return f"{p}: is UTF-16 text, not UTF-8; save it as UTF-8 (Excel: 'CSV UTF-8')"
    return f"{p}: line {_bad_utf8_line(p)} is not UTF-8 text ({exc.reason})"


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
