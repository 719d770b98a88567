"""Precomputed embeddings that replace a modality's raw data (``--embeddings MODALITY=FILE``).

A ``.npy`` array with an ids file beside it, or a Parquet file with an ``id`` column plus numeric
vector columns; rows are aligned to the case table's ids. Problems are one
:class:`~medaudit.errors.InputError` naming the file (and the id or column).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from medaudit.audit.config import ColumnMap
from medaudit.audit.table_read import not_utf8
from medaudit.errors import InputError
from medaudit.io import missing_reason

__all__ = ["load_embeddings"]


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
        raise InputError(not_utf8(ip, exc)) from exc
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
