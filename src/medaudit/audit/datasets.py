"""A chest X-ray dataset joined with a model's predictions: the input of ``medaudit audit --dataset``.

``--dataset KIND:ROOT`` names one of the readers of :mod:`medaudit.data.cxr`:

* ``mimic-cxr:ROOT`` (MIMIC-CXR-JPG; reports from ``ROOT`` or ``--dataset-reports``), key ``dicom_id``;
* ``chexpert:ROOT`` (CheXpert ``train.csv`` / ``valid.csv``), key ``Path``;
* ``nih:ROOT`` (ChestX-ray14), key ``Image Index``;
* ``openi[:ROOT]`` (Open-i; ``ROOT`` is the images folder; reports from ``ROOT/ecgen-radiology``,
  ``ROOT/NLMCXR_reports.tgz``, ``--dataset-reports`` or torchxrayvision's copy; without ``ROOT`` the audit
  has reports and metadata but no images), key ``image_id``.

The predictions table (CSV / TSV / Parquet / JSON Lines) has one id column and one probability column per
finding. The id column is the dataset's own key (above), ``id`` (the case-table id), or ``image`` /
``path`` (an image path, absolute or relative to the predictions file, the dataset root or its parent).
Finding columns are matched to the dataset's label columns ignoring case, spaces and underscores, with an
optional ``prob_`` prefix or ``_prob`` suffix. Probabilities must lie in [0, 1]; a blank means "no
prediction for this finding on this image" (that image is left out of that finding's audit, counted).

Rows of either side that do not join are counted (:class:`JoinReport`) and never dropped silently.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medaudit.data.cxr.common import UncertainPolicy, plain, snake
from medaudit.errors import InputError
from medaudit.io import missing_reason

__all__ = [
    "DATASET_KINDS",
    "DatasetSpec",
    "JoinReport",
    "JoinedDataset",
    "join_predictions",
    "load_dataset",
    "parse_dataset",
    "read_predictions",
]

#: kind -> the dataset's own id column names accepted in a predictions table.
DATASET_KINDS: dict[str, tuple[str, ...]] = {
    "mimic-cxr": ("dicom_id",),
    "chexpert": ("Path",),
    "nih": ("Image Index",),
    "openi": ("image_id", "imageid"),
}
_ALIASES = {"mimic": "mimic-cxr", "mimic-cxr-jpg": "mimic-cxr", "chestx-ray14": "nih", "open-i": "openi"}
_GENERIC_ID = ("id",)
_PATH_ID = ("image", "path", "image_path")
#: the id columns a predictions table may have (detected, or chosen with ``--pred-id``).
_ID_COLUMNS: tuple[str, ...] = (*(c for k in DATASET_KINDS.values() for c in k), *_GENERIC_ID, *_PATH_ID)
#: metadata columns used by default when the dataset has them.
DEFAULT_META = ("sex", "age", "view_position", "frontal_lateral")
PROB_PREFIX = "prob__"


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed ``--dataset`` value."""

    kind: str
    root: Path | None


def parse_dataset(value: str) -> DatasetSpec:
    """``'mimic-cxr:/data/mimic'`` -> ``DatasetSpec('mimic-cxr', Path('/data/mimic'))``."""
    kind, _sep, root = value.partition(":")
    kind = _ALIASES.get(kind.strip().lower(), kind.strip().lower())
    if kind not in DATASET_KINDS:
        raise InputError(
            f"--dataset '{value}': unknown dataset '{kind}' (use mimic-cxr:ROOT, chexpert:ROOT, nih:ROOT "
            "or openi[:ROOT])"
        )
    if not root.strip():
        if kind != "openi":
            raise InputError(f"--dataset '{value}': give the dataset folder, e.g. {kind}:/data/{kind}")
        return DatasetSpec(kind, None)
    return DatasetSpec(kind, Path(root.strip()).expanduser())  # the shell leaves 'nih:~/data' as it is


def _openi_reports(root: Path | None, reports: Path | None) -> Path | None:
    if reports is not None:
        return reports
    if root is not None:
        for cand in (root / "ecgen-radiology", root / "NLMCXR_reports.tgz"):
            if cand.exists():
                return cand
    return None  # torchxrayvision's copy


def _openi_without_images(reports: Path | None, dicom_metadata: Path | None) -> pd.DataFrame:
    from medaudit.data.cxr.openi import OPENI_LABELS, load_openi_dicom_metadata, load_openi_reports

    rep = load_openi_reports(reports)
    meta = load_openi_dicom_metadata(dicom_metadata).set_index("image_id")
    rows = []
    for r in rep.itertuples(index=False):
        for iid in r.image_ids:
            row: dict[str, Any] = {"id": iid, **{k: getattr(r, k) for k in OPENI_LABELS}}
            row.update({"image": None, "report": r.report, "sex": r.sex})
            if iid in meta.index:
                m = meta.loc[iid]
                row.update({k: m[k] for k in ("view_position", "frontal_lateral", "age", "patient_id")})
            rows.append(row)
    df = pd.DataFrame(rows).drop_duplicates("id").reset_index(drop=True)
    df.attrs["label_columns"] = list(OPENI_LABELS)
    return df


def load_dataset(
    spec: DatasetSpec, reports: str | os.PathLike[str] | None = None, skip_bad: bool = False
) -> pd.DataFrame:
    """The dataset's multi-label case table (``df.attrs['label_columns']`` lists its findings)."""
    from medaudit.data import cxr

    rep = Path(reports) if reports is not None else None
    root = spec.root
    if root is not None and not root.is_dir():
        raise InputError(f"{root}: {missing_reason(root, f'{spec.kind} dataset folder')}")
    if spec.kind == "mimic-cxr":
        df = cxr.read_mimic_cxr(root, reports_root=rep, skip_bad=skip_bad)  # type: ignore[arg-type]
    elif spec.kind == "chexpert":
        df = cxr.read_chexpert(root, skip_bad=skip_bad)  # type: ignore[arg-type]
    elif spec.kind == "nih":
        df = cxr.read_nih(root, skip_bad=skip_bad)  # type: ignore[arg-type]
    else:
        dm = None
        if root is not None:
            dm = next((root / n for n in ("nlmcxr_dicom_metadata.csv.gz", "nlmcxr_dicom_metadata.csv")
                       if (root / n).is_file()), None)  # fmt: skip
        src = _openi_reports(root, rep)
        if root is None:
            df = _openi_without_images(src, dm)
        else:
            df = cxr.read_openi(src, root, dm, skip_bad=skip_bad)
    df.attrs["kind"] = spec.kind
    df.attrs["root"] = str(root) if root is not None else None
    return df


def _row(i: int) -> str:
    return f"row {i + 1}"


def read_predictions(path: str | os.PathLike[str], id_col: str | None = None) -> tuple[pd.DataFrame, str]:
    """Read a predictions table; returns it (id column as text) and the id column's name."""
    from medaudit.audit.table import read_table
    from medaudit.audit.table_read import delimiter_hint

    p = Path(path)
    probe = read_table(p) if id_col is None else None
    cols = list(probe.columns) if probe is not None else [id_col]
    if id_col is None:
        lower = {str(c).lower(): c for c in cols}
        found = list(dict.fromkeys(lower[k.lower()] for k in _ID_COLUMNS if k.lower() in lower))
        if not found:
            raise InputError(
                f"{p}: no id column (expected one of {', '.join(_ID_COLUMNS)}, or pass --pred-id); "
                f"columns: {', '.join(map(str, cols))}" + delimiter_hint(list(map(str, cols)), str(p))
            )
        if len(found) > 1:  # the other one was refused as "not a finding"
            raise InputError(
                f"{p}: more than one id column ({', '.join(repr(str(c)) for c in found)}); name the one "
                "to join on with --pred-id (the others are then ignored)"
            )
        id_col = found[0]
    df = read_table(p, text_columns=[id_col])
    if df.empty:  # a header alone: the join would say that no row matches an image
        raise InputError(f"{p}: holds no prediction rows, only the column names")
    if id_col not in df.columns:
        available = list(map(str, df.columns))
        raise InputError(
            f"{p}: missing id column '{id_col}'; columns: {', '.join(available)}"
            + delimiter_hint(available, str(p))
        )
    return df, str(id_col)


@dataclass
class JoinReport:
    """What joined and what did not. Example ids are the first few, in file order."""

    predictions_file: str
    id_column: str
    key_kind: str
    n_predictions: int
    n_dataset: int
    n_joined: int
    unjoined_predictions: int
    unjoined_examples: list[str] = field(default_factory=list)
    images_without_prediction: int = 0
    without_prediction_examples: list[str] = field(default_factory=list)
    findings: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def summary(self) -> str:
        return (
            f"{self.n_joined} of {self.n_predictions} prediction rows joined to {self.n_dataset} images; "
            f"{self.unjoined_predictions} prediction rows matched no image"
            + (f" (e.g. '{self.unjoined_examples[0]}')" if self.unjoined_examples else "")
            + f", {self.images_without_prediction} images have no prediction"
        )


@dataclass
class JoinedDataset:
    """Dataset rows that have a prediction, with ``prob__<finding>`` columns added.

    Attributes:
        df: the dataset's case-table columns plus one ``prob__<label column>`` per predicted finding.
        label_columns: all findings of the dataset.
        predicted: findings with a probability column (label column names).
        meta: metadata columns used by default.
        report: the join counts.
        origins: case id -> where the dataset lists it (``"row 3 of /data/valid.csv"``), when the
            reader records it (for errors found while embedding).
        empty_reports: joined images left out because their dataset report is empty (report modality).
    """

    df: pd.DataFrame
    label_columns: list[str]
    predicted: list[str]
    meta: list[str]
    report: JoinReport
    kind: str
    origins: dict[str, str] = field(default_factory=dict)
    empty_reports: int = 0


def _finding_for(column: str, labels: list[str]) -> str | None:
    key = snake(str(column))
    key = re.sub(r"^prob_+|_+prob$", "", key)
    for lab in labels:
        if snake(lab) == key:
            return lab
    return None


def _map_findings(pred: pd.DataFrame, id_col: str, labels: list[str], src: Path) -> dict[str, str]:
    """Probability column -> label column; raises on an unknown column or a bad probability."""
    out: dict[str, str] = {}
    ids = {k.lower() for k in _ID_COLUMNS}
    for col in pred.columns:
        if col == id_col or str(col).lower() in ids:  # another id column: --pred-id chose this one
            continue
        lab = _finding_for(col, labels)
        if lab is None:
            raise InputError(
                f"{src}: column '{col}' is not a finding of this dataset (findings: {', '.join(labels)})"
            )
        if lab in out.values():
            raise InputError(f"{src}: column '{col}' repeats finding '{lab}'")
        v = pd.to_numeric(pred[col], errors="coerce")
        bad_text = v.isna() & pred[col].notna() & (pred[col].astype(str).str.strip() != "")
        boolean = pred[col].map(lambda x: isinstance(x, (bool, np.bool_)))  # True is not a probability
        bad = bad_text | boolean | ~(v.isna() | ((v >= 0) & (v <= 1)))
        if bad.any():
            from medaudit.audit.table import percent_hint

            i = int(np.flatnonzero(bad.to_numpy())[0])
            what = "is not a number" if bad_text.iloc[i] else f"is not in [0, 1]{percent_hint(v.dropna())}"
            raise InputError(
                f"{src}: column '{col}' {_row(i)}: probability {plain(pred[col].iloc[i])} {what}"
            )
        out[str(col)] = lab
    if not out:
        raise InputError(f"{src}: no finding column besides '{id_col}' (findings: {', '.join(labels)})")
    return out


def _key_map(ds: pd.DataFrame, id_col: str, kind: str) -> tuple[str, dict[str, str]]:
    """How prediction keys map to dataset ids: ``(key kind, key -> id)``."""
    ids = ds["id"].astype(str).tolist()
    low = id_col.lower()
    if low == "id":
        return "id", {i: i for i in ids}
    if low == "dicom_id":
        return "dicom_id", {i: i for i in ids}
    if low == "image index":
        return "Image Index", {f"{i}.png": i for i in ids} | {i: i for i in ids}
    if low == "path" and kind == "chexpert":
        return "Path", {i: i for i in ids}
    if low in ("image_id", "imageid"):
        return "image_id", {i: i for i in ids}
    out: dict[str, str] = {}
    for i, img in zip(ids, ds["image"].tolist(), strict=True):
        if isinstance(img, str) and img:
            out[str(Path(img).resolve())] = i
    return "image path", out


def _normalise_key(key: str, key_kind: str, bases: list[Path]) -> str:
    key = key.strip()
    if key_kind == "Path":
        return re.sub(r"^.*?(patient\d+)", r"\1", key).removesuffix(".jpg")
    if key_kind != "image path":
        return key
    p = Path(key)
    if p.is_absolute():
        return str(p.resolve())
    for b in bases:
        cand = b / p
        if cand.exists():
            return str(cand.resolve())
    return key


def join_predictions(
    dataset: pd.DataFrame,
    predictions: str | os.PathLike[str],
    id_col: str | None = None,
    meta: list[str] | None = None,
) -> JoinedDataset:
    """Join a predictions table to a dataset case table (see the module docstring)."""
    src = Path(predictions)
    pred, id_col = read_predictions(src, id_col)
    labels = list(dataset.attrs.get("label_columns", []))
    kind = str(dataset.attrs.get("kind", ""))
    findings = _map_findings(pred, id_col, labels, src)
    raw_keys = pred[id_col]
    blank = raw_keys.isna() | (raw_keys.astype(str).str.strip() == "")
    if blank.any():
        raise InputError(
            f"{src}: column '{id_col}' {_row(int(np.flatnonzero(blank.to_numpy())[0]))}: empty id"
        )
    key_kind, key_to_id = _key_map(dataset, id_col, kind)
    root = dataset.attrs.get("root")
    bases = [src.parent] + ([Path(root), Path(root).parent] if root else [])
    keys = [_normalise_key(str(k), key_kind, bases) for k in raw_keys.tolist()]
    mapped = pd.Series([key_to_id.get(k) for k in keys], dtype=object)
    first: dict[str, int] = {}
    for i, (k, m) in enumerate(zip(raw_keys.astype(str).tolist(), mapped.tolist(), strict=True)):
        ident = m if m is not None else k
        if ident in first:
            raise InputError(
                f"{src}: column '{id_col}' {_row(i)}: duplicate id '{k}' (also {_row(first[ident])})"
            )
        first[ident] = i
    hit = mapped.notna().to_numpy()
    probs = pred.loc[hit, list(findings)].apply(pd.to_numeric, errors="coerce")
    probs.columns = [PROB_PREFIX + findings[c] for c in findings]
    probs.insert(0, "id", mapped[hit].to_numpy())
    joined = dataset.merge(probs, on="id", how="inner", sort=False)
    have = set(probs["id"])
    missing_ids = [i for i in dataset["id"].astype(str) if i not in have]
    report = JoinReport(
        predictions_file=str(src),
        id_column=id_col,
        key_kind=key_kind,
        n_predictions=len(pred),
        n_dataset=len(dataset),
        n_joined=len(joined),
        unjoined_predictions=int((~hit).sum()),
        unjoined_examples=[str(k) for k in raw_keys[~hit].head(5)],
        images_without_prediction=len(missing_ids),
        without_prediction_examples=missing_ids[:5],
        findings=dict(findings),
    )
    if joined.empty:
        ex = f" (e.g. '{report.unjoined_examples[0]}')" if report.unjoined_examples else ""
        raise InputError(f"{src}: no prediction row matches an image of the dataset{ex}")
    use_meta = list(meta) if meta is not None else [c for c in DEFAULT_META if c in joined.columns]
    for c in use_meta:
        if c not in joined.columns:
            raise InputError(f"--meta '{c}': not a column of the dataset ({', '.join(joined.columns)})")
    joined.attrs = {}
    known = dataset.attrs.get("origins") or {}
    origins = {i: known[i] for i in joined["id"].astype(str) if i in known}
    return JoinedDataset(joined, labels, list(findings.values()), use_meta, report, kind, origins)


def target_frame(
    joined: JoinedDataset, finding: str, uncertain: UncertainPolicy
) -> tuple[pd.DataFrame, dict[str, int]]:
    """One finding's audit table (``id, label, prob, image, report`` + metadata) and its drop counts.

    Raises InputError when the finding has no labels (all blank) or no predictions.
    """
    from medaudit.data.cxr.common import resolve_target, select_target

    col = resolve_target(finding, joined.label_columns)
    if col not in joined.predicted:
        raise InputError(f"finding '{col}': the predictions table has no column for it")
    df = joined.df
    if pd.to_numeric(df[col], errors="coerce").isna().all():
        raise InputError(f"finding '{col}': the dataset has no label for it on the joined images")
    pcol = PROB_PREFIX + col
    has_prob = df[pcol].notna()
    if not has_prob.any():
        src = next((k for k, v in joined.report.findings.items() if v == col), col)
        raise InputError(
            f"{joined.report.predictions_file}: column '{src}': every prediction is blank (finding '{col}')"
        )
    sub = df.loc[has_prob].reset_index(drop=True)
    sel = select_target(sub, col, joined.label_columns, uncertain=uncertain)
    drops = {"no prediction": int((~has_prob).sum()), "uncertain label (ignored)": len(sub) - len(sel)}
    out = pd.DataFrame(
        {
            "id": sel["id"].astype(str),
            "label": sel["label"],
            "prob": sel[pcol].astype(float),
            "image": sel["image"],
            "report": sel["report"].fillna("").astype(str),
        }
    )
    for m in joined.meta:
        out[m] = sel[m].to_numpy()
    return out, {k: v for k, v in drops.items() if v}
