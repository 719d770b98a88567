"""Audit outputs, versioned: ``slices.json`` and ``membership.parquet`` (schema in docs/audit.md).

``slices.json`` (``schema_version`` "1.1"; 1.1 adds, and 1.0 readers can ignore: ``warnings``,
``concepts``, ``rule_search``, ``ranking``, and per slice ``family`` (mixture / rules), ``evidence``
(excess errors, one-sided p against the rest of the members' classes), ``linked`` (merged overlapping slices), ``rule_qvalue`` and ``rule_significant`` (rule
slices) and ``explanation.headline`` / ``explanation.rule`` / ``explanation.concepts``)::

    {
      "schema_version": "1.1",
      "medaudit_version": "0.1.0",
      "created": "2026-11-28T14:00:00+00:00",
      "config": {...},                       # the AuditConfig, JSON-serialised
      "counts": {"cases": n, "skipped_rows": s, "skipped_reasons": {...}, "errors": e,
                 "error_rate": e / n, "positives": p, "predicted_positives": q,
                 "by_class": {"0": {"cases": ..., "errors": ..., "error_rate": ...}, "1": {...}}},
      "membership_rule": "...",
      "slices": [ {"rank": 1, "name": "slice_1", "size": ..., "soft_size": ..., "error_rate": ...,
                   "error_ci": [lo, hi], "soft_error_rate": ..., "slicer_error": ...,
                   "composition": {...}, "explanation": {"basis": ..., "reference": ...,
                   "ngrams": [...], "metadata": [...]}, "exemplar_ids": [...], "member_ids": [...]}, ...]
    }

``membership.parquet``: column ``id`` then ``slice_1 .. slice_k`` (membership scores, rank order).
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medaudit.errors import InputError
from medaudit.io import atomic_save, atomic_write_json

__all__ = [
    "MEMBERSHIP_FILE",
    "SCHEMA_VERSION",
    "SLICES_FILE",
    "membership_frame",
    "read_membership",
    "read_slices_json",
    "to_jsonable",
    "write_membership",
    "write_slices_json",
]

SCHEMA_VERSION = "1.1"
SLICES_FILE = "slices.json"
MEMBERSHIP_FILE = "membership.parquet"
REPORT_FILE = "report.html"

_REQUIRED_TOP = ("schema_version", "config", "counts", "slices")
_REQUIRED_SLICE = ("rank", "size", "error_rate", "error_ci", "explanation", "member_ids")


def to_jsonable(obj: Any) -> Any:
    """Recursively convert numpy scalars/arrays, Paths, tuples, dataclasses, DataFrames and NaN to JSON values.

    NaN and infinities become ``null`` (JSON has no NaN); other objects become ``"<TypeName>"``.
    """
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, pd.DataFrame):
        return [to_jsonable(r) for r in obj.to_dict(orient="records")]
    if isinstance(obj, np.ndarray):
        return [to_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if obj is None or isinstance(obj, (str, int)):
        return obj
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    return f"<{type(obj).__name__}>"  # e.g. a torch module passed as an encoder argument


def membership_frame(ids: list[str], scores: np.ndarray) -> pd.DataFrame:
    """``id`` + ``slice_1..slice_k`` from an (n, k) score matrix whose columns are in rank order."""
    scores = np.asarray(scores, dtype=np.float64)
    df = pd.DataFrame({"id": pd.Series([str(i) for i in ids], dtype=str)})
    for j in range(scores.shape[1]):
        df[f"slice_{j + 1}"] = scores[:, j]
    return df


def write_membership(path: str | os.PathLike[str], df: pd.DataFrame) -> Path:
    """Write the membership table as Parquet, atomically."""
    path = Path(path)
    with atomic_save(path) as tmp:
        df.to_parquet(tmp, index=False, engine="pyarrow")
    return path


def write_slices_json(path: str | os.PathLike[str], payload: dict[str, Any]) -> Path:
    """Write ``slices.json`` (converted with :func:`to_jsonable`), atomically."""
    payload = {
        "schema_version": SCHEMA_VERSION,
        **{k: v for k, v in payload.items() if k != "schema_version"},
    }
    return atomic_write_json(path, to_jsonable(payload))


def read_slices_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check ``slices.json``; InputError (one line naming the file) if it is not a schema-1.x
    audit output: unreadable, not UTF-8, truncated or edited into another shape."""
    from medaudit.configfile import load_json_strict

    p = Path(path)
    if p.exists() and not p.is_file():  # a folder, or a device such as /dev/zero that never ends
        raise InputError(f"{p}: not a slices.json file (not a regular file)")
    try:
        data = load_json_strict(p.read_text(encoding="utf-8"), str(p))
    except FileNotFoundError as exc:
        raise InputError(f"{p}: file not found") from exc
    except InputError:  # a key given twice
        raise
    except RecursionError:
        raise InputError(f"{p}: not a readable JSON file (nested too deeply)") from None
    except (OSError, ValueError) as exc:  # JSONDecodeError, UnicodeDecodeError, a number too long
        raise InputError(f"{p}: not a readable JSON file ({_one_line(exc)})") from None
    if not isinstance(data, dict):
        raise InputError(f"{p}: expected a JSON object")
    for key in _REQUIRED_TOP:
        if key not in data:
            raise InputError(f"{p}: missing key '{key}'")
    major = str(data["schema_version"]).split(".")[0]
    if major != SCHEMA_VERSION.split(".")[0]:
        raise InputError(
            f"{p}: schema_version {data['schema_version']} is not supported (expected {SCHEMA_VERSION})"
        )
    if not isinstance(data["slices"], list):
        raise InputError(f"{p}: key 'slices' must be a list, not {_json_kind(data['slices'])}")
    for i, s in enumerate(data["slices"]):
        if not isinstance(s, dict):
            raise InputError(f"{p}: slice {i + 1} must be an object, not {_json_kind(s)}")
        for key in _REQUIRED_SLICE:
            if key not in s:
                raise InputError(f"{p}: slice {i + 1} lacks key '{key}'")
        if not isinstance(s["rank"], int) or isinstance(s["rank"], bool) or s["rank"] < 1:
            raise InputError(f"{p}: slice {i + 1}: key 'rank' must be a whole number >= 1")
        ids = s["member_ids"]
        if not isinstance(ids, list) or not all(isinstance(c, str) for c in ids):
            raise InputError(f"{p}: slice {i + 1}: key 'member_ids' must be a list of case ids (strings)")
    return data


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _json_kind(value: Any) -> str:
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null"}
    return kinds.get(type(value), "a number")


def read_membership(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read ``membership.parquet``; InputError unless it has ``id`` and ``slice_1..slice_k`` columns."""
    import pyarrow as pa

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: file not found")
    try:
        df = pd.read_parquet(p)
    except (OSError, ValueError, pa.ArrowException) as exc:  # truncated, empty, not Parquet
        raise InputError(f"{p}: not a readable Parquet file ({_one_line(exc)})") from None
    cols = list(df.columns)
    if not cols or cols[0] != "id":
        raise InputError(f"{p}: first column must be 'id'")
    expected = [f"slice_{j + 1}" for j in range(len(cols) - 1)]
    if cols[1:] != expected:
        raise InputError(f"{p}: expected columns id, {', '.join(expected)}; got {', '.join(cols)}")
    return df
