"""NIH ChestX-ray14 reader.

Layout: a folder with ``Data_Entry_2017*.csv`` (``Data_Entry_2017.csv`` or ``Data_Entry_2017_v2020.csv``,
possibly gzipped; columns ``Image Index, Finding Labels, Follow-up #, Patient ID, Patient Age, Patient
Gender, View Position``) and the PNGs in ``images/`` or in the release's ``images_001/images/`` ...
``images_012/images/`` folders. Optional ``train_val_list.txt`` / ``test_list.txt`` fill a ``split`` column.

Labels: the 14 findings of ``Finding Labels`` (pipe-separated) as 0/1 snake-case columns
(:data:`NIH_LABELS`) plus ``no_finding``. ChestX-ray14 ships no reports, so ``report`` is empty.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medaudit.data.cxr.common import (
    UncertainPolicy,
    check_images,
    finalize,
    read_csv,
    require_columns,
    require_dir,
    table_rows,
)
from medaudit.errors import InputError

NIH_FINDINGS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)
NIH_LABELS: tuple[str, ...] = ("no_finding", *(f.lower() for f in NIH_FINDINGS))
NIH_COLUMNS = (
    "Image Index",
    "Finding Labels",
    "Follow-up #",
    "Patient ID",
    "Patient Age",
    "Patient Gender",
    "View Position",
)


def _find_table(root: Path) -> Path:
    cands = sorted(root.glob("Data_Entry_2017*.csv")) + sorted(root.glob("Data_Entry_2017*.csv.gz"))
    if not cands:
        raise InputError(f"{root}: missing Data_Entry_2017*.csv (not a ChestX-ray14 folder?)")
    return cands[0]


def _image_index(root: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    folders = [root / "images"] if (root / "images").is_dir() else []
    folders += sorted(p / "images" for p in root.glob("images_*") if (p / "images").is_dir())
    folders += sorted(p for p in root.glob("images_*") if p.is_dir() and not (p / "images").is_dir())
    if not folders:
        raise InputError(f"{root}: no image folder (expected images/ or images_0XX/images/)")
    for f in folders:
        for p in f.glob("*.png"):
            found.setdefault(p.name, p.absolute())
    return found


def read_nih(
    root: str | Path,
    target: str | None = None,
    uncertain: UncertainPolicy = "zeros",
    require_all_images: bool = False,
    verify_images: bool = False,
    skip_bad: bool = False,
) -> pd.DataFrame:
    """Case table of a ChestX-ray14 folder: one row per table entry whose image is present.

    ``require_all_images=True`` raises InputError naming the first table entry without an image
    (default: entries without an image, e.g. a partial download, are left out and counted in
    ``df.attrs['n_missing_images']``).
    """
    root = require_dir(root, "ChestX-ray14")
    table = _find_table(root)
    raw = read_csv(table)
    require_columns(raw, NIH_COLUMNS, table)
    index = _image_index(root)
    names = raw["Image Index"].astype(str).str.strip()
    findings = raw["Finding Labels"].fillna("").astype(str).str.split("|")
    known = {f.lower() for f in NIH_FINDINGS} | {"no finding"}
    present = names.map(lambda s: s in index).to_numpy()
    for i, fs in enumerate(findings):  # rows whose image is present; 1-based data rows of the file
        if not present[i]:
            continue
        unknown = [f for f in fs if f.strip().lower() not in known]
        if unknown:
            raise InputError(
                f"{table}: column 'Finding Labels' row {i + 1}: unknown finding label {unknown[0]!r}"
            )
    if require_all_images and not present.all():
        i = int(np.flatnonzero(~present)[0])
        raise InputError(f"{table}: row {i + 1}: image '{names.iloc[i]}' not found under {root}")
    if not present.any():
        raise InputError(f"{root}: none of the {len(raw)} images listed in {table.name} was found")
    origins = table_rows(table, np.flatnonzero(present))  # data rows of the table, for messages
    raw, names = raw.loc[present].reset_index(drop=True), names[present].reset_index(drop=True)
    findings = findings[present].reset_index(drop=True)
    df = pd.DataFrame({"id": names.str.removesuffix(".png")})
    sets = [{f.strip().lower() for f in fs} for fs in findings]
    for f in NIH_FINDINGS:
        df[f.lower()] = [float(f.lower() in s) for s in sets]
    df.insert(1, "no_finding", [float(s == {"no finding"}) for s in sets])
    df["image"] = [str(index[n]) for n in names]
    df["report"] = ""
    df["age"] = pd.to_numeric(raw["Patient Age"], errors="coerce")
    df["sex"] = raw["Patient Gender"]
    df["view_position"] = raw["View Position"].astype(str).str.upper()
    df["frontal_lateral"] = "Frontal"
    df["follow_up"] = pd.to_numeric(raw["Follow-up #"], errors="coerce")
    df["patient_id"] = raw["Patient ID"].astype(str)
    split = pd.Series("", index=df.index)
    for name, lab in (("train_val_list.txt", "train_val"), ("test_list.txt", "test")):
        if (root / name).is_file():
            try:
                ids = set((root / name).read_text(encoding="utf-8").split())
            except (OSError, UnicodeDecodeError) as exc:
                raise InputError(f"{root / name}: not a readable list of image names ({exc})") from exc
            split[names.isin(ids).to_numpy()] = lab
    df["split"] = split
    df = check_images(df, verify=verify_images, skip_bad=skip_bad, origins=origins)
    out = finalize(df, list(NIH_LABELS), target, uncertain, f"ChestX-ray14 {root}")
    out.attrs["n_missing_images"] = int((~present).sum())
    return out
