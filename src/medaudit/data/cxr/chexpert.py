"""CheXpert (v1.0, full or ``-small``) reader.

Layout: a folder with ``train.csv`` and/or ``valid.csv`` (columns ``Path, Sex, Age, Frontal/Lateral,
AP/PA`` and the 14 observations of :data:`~medaudit.data.cxr.common.CHEXPERT_LABELS`) and the images the
``Path`` column names (``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``, relative to
the folder *above* the dataset folder; paths relative to the dataset folder itself also work).

Labels are written in snake case (``support_devices``, ``pleural_effusion`` ...) with CheXpert's values:
``1`` positive, ``0`` negative, ``-1`` uncertain, blank not mentioned. With ``target=`` the uncertain
values follow ``uncertain``: ``zeros`` (U-Zeros: uncertain -> negative), ``ones`` (U-Ones: -> positive) or
``ignore`` (rows uncertain for the target are dropped); blanks count as negative. CheXpert ships no
reports, so ``report`` is empty.
"""

from __future__ import annotations

import os
import re
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
    read_csv,
    require_columns,
    require_dir,
    snake,
    table_rows,
)
from medaudit.errors import InputError

CHEXPERT_META = ("Sex", "Age", "Frontal/Lateral", "AP/PA")


def _resolve(root: Path, rel: str) -> Path:
    rel_p = Path(rel)
    for base in (root.parent, root):
        cand = base / rel_p
        if cand.exists():
            return cand.absolute()
    if len(rel_p.parts) > 1:  # "CheXpert-v1.0-small/train/..." under a renamed dataset folder
        cand = root / Path(*rel_p.parts[1:])
        if cand.exists():
            return cand.absolute()
    return (root.parent / rel_p).absolute()


def _check_paths(paths: pd.Series, root: Path, src: Path) -> None:
    """Every ``Path`` cell is a non-empty path inside the folder above the dataset folder (the base the
    release's paths are relative to): a blank cell, ``../../etc/passwd`` or ``/etc/passwd`` is refused,
    naming the file, the column and the 1-based data row."""
    base = os.path.normpath(root.parent.absolute())
    for i, rel in enumerate(paths.tolist()):
        if not isinstance(rel, str) or not rel.strip():
            raise InputError(f"{src}: column 'Path' row {i + 1}: empty image path")
        full = os.path.normpath(os.path.join(base, rel.strip()))
        if os.path.commonpath([base, full]) != base:
            raise InputError(f"{src}: column 'Path' row {i + 1}: image path {rel!r} is outside {base}")


def read_chexpert(
    root: str | Path,
    split: Literal["train", "valid", "both"] = "both",
    target: str | None = None,
    uncertain: UncertainPolicy = "zeros",
    verify_images: bool = False,
    skip_bad: bool = False,
) -> pd.DataFrame:
    """Case table of a CheXpert folder (see the module docstring for layout, labels and policies)."""
    root = require_dir(root, "CheXpert")
    names = {"train": ["train.csv"], "valid": ["valid.csv"], "both": ["train.csv", "valid.csv"]}.get(split)
    if names is None:
        raise InputError(f"split '{split}': choose train, valid or both")
    frames = []
    origins: list[str] = []  # per case: its data row in train.csv / valid.csv, for messages
    for name in names:
        p = root / name
        if not p.is_file():
            if split == "both" and any((root / x).is_file() for x in names):
                continue
            raise InputError(f"{root}: missing {name} (not a CheXpert folder?)")
        raw = read_csv(p)
        require_columns(raw, ["Path", *CHEXPERT_META, *CHEXPERT_LABELS], p)
        check_label_values(raw, CHEXPERT_LABELS, p)
        _check_paths(raw["Path"], root, p)
        raw["split"] = name.removesuffix(".csv")
        origins += table_rows(p, range(len(raw)))
        frames.append(raw)
    raw = pd.concat(frames, ignore_index=True)
    paths = raw["Path"].astype(str)
    pid = paths.str.extract(r"(patient\d+)", expand=False)
    study = paths.str.extract(r"(study\d+)", expand=False)
    view = raw["AP/PA"].fillna("").astype(str).str.upper()
    lateral = raw["Frontal/Lateral"].astype(str).str.lower() == "lateral"
    df = pd.DataFrame({"id": paths.map(lambda s: re.sub(r"^.*?(patient\d+)", r"\1", s).removesuffix(".jpg"))})
    for lab in CHEXPERT_LABELS:
        df[snake(lab)] = pd.to_numeric(raw[lab], errors="coerce")
    df["image"] = [str(_resolve(root, r)) for r in paths]
    df["report"] = ""
    df["sex"] = raw["Sex"]
    df["age"] = pd.to_numeric(raw["Age"], errors="coerce")
    df["frontal_lateral"] = raw["Frontal/Lateral"]
    df["view_position"] = np.where(lateral, "LATERAL", view.replace({"": "UNKNOWN"}))
    df["patient_id"] = pid
    df["study_id"] = pid + "/" + study
    df["split"] = raw["split"]
    df = check_images(df, verify=verify_images, skip_bad=skip_bad, origins=origins)
    return finalize(df, [snake(x) for x in CHEXPERT_LABELS], target, uncertain, f"CheXpert {root}")
