"""Shared pieces of the chest X-ray readers: the case-table shape, target selection, file checks.

Every reader returns the *audit case table*: a :class:`pandas.DataFrame` with one row per image and the
columns ``id`` (unique string), one column per available label (``0.0``/``1.0``, ``NaN`` unknown, CheXpert
style ``-1.0`` uncertain where the source has it), ``image`` (absolute path), ``report`` (free text, may be
empty) and metadata columns. Passing ``target=`` selects one label and adds the binary ``label`` column
that the audit uses (see :func:`select_target`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from medaudit.errors import InputError
from medaudit.io import missing_reason

UncertainPolicy = Literal["zeros", "ones", "ignore"]
UNCERTAIN_POLICIES: tuple[str, ...] = ("zeros", "ones", "ignore")

#: The 14 CheXpert observations, as written in the CheXpert / MIMIC-CXR-JPG label tables.
CHEXPERT_LABELS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)


def snake(name: str) -> str:
    """``'Support Devices'`` -> ``'support_devices'`` (the label-column naming used in case tables)."""
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")


def resolve_target(target: str, available: Iterable[str]) -> str:
    """Match ``target`` against label columns, ignoring case, spaces and underscores."""
    avail = list(available)
    key = snake(target)
    for col in avail:
        if snake(col) == key:
            return col
    raise InputError(f"target '{target}': not a label column; available: {', '.join(avail)}")


def select_target(
    df: pd.DataFrame,
    target: str,
    label_columns: Sequence[str],
    uncertain: UncertainPolicy = "zeros",
    missing: Literal["zeros", "drop"] = "zeros",
) -> pd.DataFrame:
    """Reduce a multi-label table to one audited target, written to a binary integer ``label`` column.

    Uncertain labels (``-1``) follow ``uncertain``: ``zeros`` maps them to negative (U-Zeros of the
    CheXpert paper), ``ones`` to positive (U-Ones), ``ignore`` drops those rows for this target. Blank
    labels (not mentioned) follow ``missing``: ``zeros`` (the usual convention, not mentioned = negative)
    or ``drop``. The chosen source column name is stored in ``df.attrs['target']``.
    """
    if uncertain not in UNCERTAIN_POLICIES:
        raise InputError(f"uncertain policy '{uncertain}': choose one of {', '.join(UNCERTAIN_POLICIES)}")
    col = resolve_target(target, label_columns)
    v = pd.to_numeric(df[col], errors="coerce")
    keep = np.ones(len(df), dtype=bool)
    out = v.copy()
    unc = v == -1
    if uncertain == "zeros":
        out[unc] = 0.0
    elif uncertain == "ones":
        out[unc] = 1.0
    else:
        keep &= ~unc.to_numpy()
    if missing == "drop":
        keep &= v.notna().to_numpy()
    out = out.fillna(0.0)
    res = df.loc[keep].copy()
    res["label"] = (out[keep] > 0.5).astype(int).to_numpy()
    res = res.reset_index(drop=True)
    res.attrs["target"] = col
    return res


def plain(value: object) -> str:
    """A cell value as a user wrote it, for messages: ``7``, ``1.7``, ``'yes'`` (never ``np.float64(7.0)``)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return repr(str(value))


def check_label_values(raw: pd.DataFrame, columns: Iterable[str], path: str | Path) -> None:
    """Every cell of the label ``columns`` is 1, 0, -1 or blank; else an InputError naming the file,
    the column and the 1-based data row (text such as ``yes`` is refused too, not read as blank)."""
    for lab in columns:
        vals = pd.to_numeric(raw[lab], errors="coerce")
        text = raw[lab].notna() & (raw[lab].astype(str).str.strip() != "")
        bad = (vals.notna() & ~vals.isin([-1.0, 0.0, 1.0])) | (vals.isna() & text)
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise InputError(
                f"{path}: column '{lab}' row {i + 1}: label {plain(raw[lab].iloc[i])} not in {{1, 0, -1, blank}}"
            )


def require_dir(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise InputError(f"{p}: {missing_reason(p, f'{what} folder')}")
    return p


def find_one(root: Path, names: Sequence[str], what: str) -> Path:
    """First of ``names`` present in ``root``; InputError naming all candidates otherwise."""
    for n in names:
        if (root / n).is_file():
            return root / n
    raise InputError(f"{root}: missing {what} (expected one of: {', '.join(names)})")


def require_columns(df: pd.DataFrame, columns: Iterable[str], source: str | Path) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(f"{source}: missing column(s) {', '.join(repr(c) for c in missing)}")


def read_csv(path: Path, **kw: object) -> pd.DataFrame:
    """``pd.read_csv`` with an InputError naming the file on a parse failure, a repeated header column
    (pandas would rename the second ``label`` to ``label.1`` and carry on) or a data line with more or
    fewer fields than the header, naming that line (pandas would silently shift a line with a trailing
    comma under a header without one, making its first field the index and every value land one column
    to the left).

    A trailing comma on *every* line, header included (the NIH ``Data_Entry_2017.csv`` has one), is an
    empty last column: it is read and dropped, so the table is the one without the commas.
    """
    from medaudit.audit.table_read import _check_delimited  # the audit table reader's line check

    sep = str(kw.get("sep", ","))
    try:
        if "header" not in kw:
            _check_delimited(path, sep)
        df = pd.read_csv(path, **kw)  # type: ignore[arg-type]
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(f"{path}: cannot read as CSV ({first})") from exc
    if "header" not in kw:
        while len(df.columns) and str(df.columns[-1]).startswith("Unnamed: ") and df.iloc[:, -1].isna().all():
            df = df.iloc[:, :-1]  # the empty column of a trailing comma (blank header, blank values)
    return df


def check_images(
    df: pd.DataFrame,
    column: str = "image",
    verify: bool = False,
    skip_bad: bool = False,
    origins: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Check that every image path exists (and, with ``verify``, decodes).

    A missing or unreadable image raises InputError naming its path and where the user listed it,
    unless ``skip_bad`` is set, in which case those rows are dropped and their paths listed in
    ``df.attrs['skipped']``. ``origins`` gives, per row of ``df``, that place in the user's files
    (``"row 3 of /data/valid.csv"``: the 1-based data row of the table that lists the image): ``df``
    is often combined from several tables or filtered, so its own row index would mislead. Without
    ``origins`` the row of ``df`` itself is named. The origins of the rows kept are recorded in
    ``df.attrs['origins']`` (case id -> place), for errors found later (an image that cannot be decoded
    while embedding).
    """
    if origins is not None and len(origins) != len(df):
        raise ValueError(f"check_images: {len(origins)} origins for {len(df)} rows")
    bad: list[tuple[int, str, str]] = []
    paths = df[column].astype(str).tolist()
    reader = None
    if verify:
        from medaudit.data.images import read_grayscale  # owned by the image-reading module

        reader = read_grayscale
    for i, p in enumerate(paths):
        if not Path(p).is_file():
            bad.append((i, p, missing_reason(p, "file")))
            continue
        if reader is not None:
            try:
                reader(p)
            except Exception as exc:
                bad.append((i, p, f"unreadable image ({exc})"))
    if bad and not skip_bad:
        i, p, why = bad[0]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        where = origins[i] if origins is not None else f"row {i + 1}"
        raise InputError(f"{p}: {why}, {where}{more}")
    drop = {i for i, _, _ in bad}
    out = df
    if bad:
        out = df.loc[[i not in drop for i in range(len(df))]].reset_index(drop=True)
        out.attrs = dict(df.attrs)
        out.attrs["skipped"] = [p for _, p, _ in bad]
    if origins is not None and "id" in df.columns:
        ids = df["id"].astype(str).tolist()
        out.attrs["origins"] = {ids[i]: o for i, o in enumerate(origins) if i not in drop}
    return out


def table_rows(path: str | Path, rows: Iterable[int]) -> list[str]:
    """``origins`` for :func:`check_images`: ``"row N of PATH"`` for 0-based data-row indices ``rows``."""
    return [f"row {int(i) + 1} of {path}" for i in rows]


def finalize(
    df: pd.DataFrame,
    label_columns: Sequence[str],
    target: str | None,
    uncertain: UncertainPolicy,
    source: str,
) -> pd.DataFrame:
    """Order columns (id, labels, image, report, metadata), check ids, apply ``target``."""
    if df.empty:
        raise InputError(f"{source}: no cases found")
    if df["id"].duplicated().any():
        dup = df.loc[df["id"].duplicated(), "id"].iloc[0]
        raise InputError(f"{source}: duplicate case id '{dup}'")
    front = ["id", *label_columns, "image", "report"]
    rest = [c for c in df.columns if c not in front]
    df = df[front + rest].reset_index(drop=True)
    df.attrs["label_columns"] = list(label_columns)
    df.attrs["source"] = source
    if target is not None:
        attrs = dict(df.attrs)
        df = select_target(df, target, label_columns, uncertain=uncertain)
        df.attrs.update({k: v for k, v in attrs.items() if k != "target"})
    return df
