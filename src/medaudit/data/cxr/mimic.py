"""MIMIC-CXR-JPG 2.x reader (images, labels, metadata) joined with MIMIC-CXR free-text reports.

Layout (PhysioNet):

* ``<root>/files/pXX/pXXXXXXXX/sXXXXXXXX/<dicom_id>.jpg``
* ``<root>/mimic-cxr-2.0.0-metadata.csv[.gz]`` (``dicom_id, subject_id, study_id, ViewPosition,
  PatientOrientationCodeSequence_CodeMeaning, StudyDate, StudyTime, Rows, Columns`` ...)
* ``<root>/mimic-cxr-2.0.0-chexpert.csv[.gz]`` or ``-negbio.csv[.gz]`` (``subject_id, study_id`` and the 14
  observations, 1 / 0 / -1 / blank, per study)
* ``<root>/mimic-cxr-2.0.0-split.csv[.gz]`` (optional; ``dicom_id, split``)
* reports (MIMIC-CXR, a separate download): ``<reports_root>/files/pXX/pXXXXXXXX/sXXXXXXXX.txt`` (also
  accepted directly under ``<reports_root>/pXX/...``); ``reports_root`` defaults to ``root``.

One row per image; labels are per study (snake case, CheXpert values; see
:func:`medaudit.data.cxr.common.select_target` for the uncertain policy); the report is the study's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from medaudit.data.cxr.common import (
    CHEXPERT_LABELS,
    UncertainPolicy,
    check_images,
    check_label_values,
    finalize,
    find_one,
    plain,
    read_csv,
    require_columns,
    require_dir,
    snake,
    table_rows,
)
from medaudit.errors import InputError

PREFIX = "mimic-cxr-2.0.0"
_META_ROW = "__metadata_row"  # 0-based data row of an image in the metadata table
META_COLUMNS = ("dicom_id", "subject_id", "study_id", "ViewPosition")
OPTIONAL_META = {
    "PatientOrientationCodeSequence_CodeMeaning": "patient_orientation",
    "ViewCodeSequence_CodeMeaning": "view_code",
    "PerformedProcedureStepDescription": "procedure",
    "StudyDate": "study_date",
    "StudyTime": "study_time",
    "Rows": "rows",
    "Columns": "columns",
}


def _csv(root: Path, stem: str, what: str) -> Path:
    return find_one(root, [f"{PREFIX}-{stem}.csv", f"{PREFIX}-{stem}.csv.gz"], what)


def _report_path(reports_root: Path, subject: int, study: int) -> Path | None:
    rel = Path(f"p{str(subject)[:2]}") / f"p{subject}" / f"s{study}.txt"
    for base in (reports_root / "files", reports_root):
        if (base / rel).is_file():
            return base / rel
    return None


def read_mimic_cxr(
    root: str | Path,
    reports_root: str | Path | None = None,
    labeler: Literal["chexpert", "negbio"] = "chexpert",
    split: str | None = None,
    target: str | None = None,
    uncertain: UncertainPolicy = "zeros",
    require_reports: bool = True,
    verify_images: bool = False,
    skip_bad: bool = False,
) -> pd.DataFrame:
    """Case table of a MIMIC-CXR-JPG folder (see the module docstring for the layout).

    ``split`` keeps one split (``train`` / ``validate`` / ``test``) when the split table is present.
    ``require_reports`` raises InputError naming the first study without a report file (set it to
    ``False`` to keep such images with an empty report). Images listed in the metadata but absent on disk
    raise InputError (or are dropped with ``skip_bad``).
    """
    root = require_dir(root, "MIMIC-CXR-JPG")
    if not (root / "files").is_dir():
        raise InputError(f"{root}: missing files/ folder (expected files/pXX/pXXXXXXXX/sXXXXXXXX/*.jpg)")
    df = _images_with_labels(root, labeler)
    if split is not None:
        df = _keep_split(df, root, split)
    rr = Path(reports_root) if reports_root is not None else root
    if reports_root is not None:
        require_dir(rr, "MIMIC-CXR reports")
    reports = _read_reports(df, rr, require_reports)
    out = _case_table(df, root, reports)
    meta_p = _csv(root, "metadata", "image metadata table")  # images are listed there, one per row
    origins = table_rows(meta_p, df[_META_ROW].to_numpy())
    out = check_images(out, verify=verify_images, skip_bad=skip_bad, origins=origins)
    return finalize(out, [snake(x) for x in CHEXPERT_LABELS], target, uncertain, f"MIMIC-CXR-JPG {root}")


def _images_with_labels(root: Path, labeler: str) -> pd.DataFrame:
    """The image metadata table, ids as int64, left-joined with its study's ``labeler`` labels."""
    meta_p = _csv(root, "metadata", "image metadata table")
    lab_p = _csv(root, labeler, f"{labeler} label table")
    meta = read_csv(meta_p, dtype={"dicom_id": str})
    require_columns(meta, META_COLUMNS, meta_p)
    meta[_META_ROW] = np.arange(len(meta))  # survives the joins: the image's data row, for messages
    labels = read_csv(lab_p)
    require_columns(labels, ["subject_id", "study_id", *CHEXPERT_LABELS], lab_p)
    check_label_values(labels, CHEXPERT_LABELS, lab_p)
    _check_dicom_ids(meta, meta_p)
    for c in ("subject_id", "study_id"):
        for name, frame in ((meta_p, meta), (lab_p, labels)):
            v = pd.to_numeric(frame[c], errors="coerce")
            bad = (v.isna() | (v != v.round())).to_numpy()  # 1.5 would be truncated to another id
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise InputError(f"{name}: column '{c}' row {i + 1}: not an integer id")
            frame[c] = v.astype(np.int64)
    labels = _one_label_row_per_study(labels, lab_p).set_index("study_id")
    return meta.merge(labels[list(CHEXPERT_LABELS)], left_on="study_id", right_index=True, how="left")


def _check_dicom_ids(meta: pd.DataFrame, meta_p: Path) -> None:
    """A ``dicom_id`` names an image file: not blank, no path separator, not ``.`` / ``..``."""
    for i, d in enumerate(meta["dicom_id"].tolist()):
        text = d.strip() if isinstance(d, str) else ""
        if not text:
            raise InputError(f"{meta_p}: column 'dicom_id' row {i + 1}: empty image id")
        if "/" in text or "\\" in text or text in (".", ".."):
            raise InputError(f"{meta_p}: column 'dicom_id' row {i + 1}: {plain(d)} is not an image id")


def _one_label_row_per_study(labels: pd.DataFrame, lab_p: Path) -> pd.DataFrame:
    """The label table without repeated rows; a study listed twice with different labels is refused
    (keeping the first, as before, silently chose one of two answers)."""
    unique = labels.drop_duplicates(["study_id", *CHEXPERT_LABELS])
    dup = unique["study_id"].duplicated(keep=False).to_numpy()
    if dup.any():
        rows = np.flatnonzero(labels["study_id"].isin(unique["study_id"][dup]).to_numpy())[:2]
        study = labels["study_id"].iloc[rows[0]]
        raise InputError(
            f"{lab_p}: column 'study_id' rows {rows[0] + 1} and {rows[1] + 1}: study {study} has two "
            "different label rows"
        )
    return unique


def _keep_split(df: pd.DataFrame, root: Path, split: str) -> pd.DataFrame:
    """Rows of ``df`` in ``split`` per the split table (joined as a ``split`` column)."""
    try:
        split_p = _csv(root, "split", "split table")
    except InputError as exc:
        raise InputError(f"{root}: split '{split}' requested but the split table is missing") from exc
    sp = read_csv(split_p, dtype={"dicom_id": str})
    require_columns(sp, ["dicom_id", "split"], split_p)
    df = df.merge(sp[["dicom_id", "split"]], on="dicom_id", how="left")
    df = df[df["split"] == split]
    if df.empty:
        raise InputError(f"{split_p}: no image in split '{split}'")
    return df


def _read_reports(df: pd.DataFrame, rr: Path, require_reports: bool) -> dict[int, str]:
    """Whitespace-normalised report text by study id ("" for a missing one unless ``require_reports``)."""
    reports: dict[int, str] = {}
    for subj, study in df[["subject_id", "study_id"]].drop_duplicates().itertuples(index=False):
        p = _report_path(rr, int(subj), int(study))
        if p is None:
            if require_reports:
                raise InputError(
                    f"{rr}: report of study s{study} not found (expected files/p{str(subj)[:2]}/p{subj}/s{study}.txt)"
                )
            reports[int(study)] = ""
            continue
        try:
            reports[int(study)] = " ".join(p.read_text(encoding="utf-8", errors="replace").split())
        except OSError as exc:
            raise InputError(f"{p}: cannot read report ({exc})") from exc
    return reports


def _case_table(df: pd.DataFrame, root: Path, reports: dict[int, str]) -> pd.DataFrame:
    """One row per image: id, snake-case labels, image path, report, view and optional metadata."""
    out = pd.DataFrame({"id": df["dicom_id"].astype(str).to_numpy()})
    for lab in CHEXPERT_LABELS:
        out[snake(lab)] = pd.to_numeric(df[lab], errors="coerce").to_numpy()
    out["image"] = [
        str((root / "files" / f"p{str(s)[:2]}" / f"p{s}" / f"s{t}" / f"{d}.jpg").absolute())
        for s, t, d in df[["subject_id", "study_id", "dicom_id"]].itertuples(index=False)
    ]
    out["report"] = [reports[int(t)] for t in df["study_id"]]
    out["view_position"] = df["ViewPosition"].fillna("UNKNOWN").astype(str).str.upper().to_numpy()
    out["frontal_lateral"] = np.where(
        out["view_position"].isin(["LATERAL", "LL", "RL"]), "Lateral", "Frontal"
    )
    for src, dst in OPTIONAL_META.items():
        if src in df.columns:
            out[dst] = df[src].to_numpy()
    out["patient_id"] = df["subject_id"].astype(str).to_numpy()
    out["study_id"] = df["study_id"].astype(str).to_numpy()
    if "split" in df.columns:
        out["split"] = df["split"].to_numpy()
    return out
