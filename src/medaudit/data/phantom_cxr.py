"""The embedded *phantom cohort*: real Open-i reports, labels and metadata, one rendered radiograph each.

Real: the 3,955 Indiana University (Open-i) radiology reports bundled with torchxrayvision (the 3,927 with FINDINGS or IMPRESSION text; FINDINGS,
IMPRESSION, MeSH), the labels read from them by the audit's concept extractor OR-ed with their MeSH
headings (:mod:`medaudit.data.phantom_labels`), and each study's DICOM
metadata (view position, age from birth and study dates, patient id) for one of its images chosen under
the seed. Simulated: the pixels, rendered by :mod:`medaudit.data.phantom_render` from a real PA radiograph
and real lung masks so that what the report says can be seen. See ``docs/phantom_cxr.md``.

The cohort is built once into ``cache_dir`` and reused: the case table is a parquet file, images are
PNGs written atomically one by one in chunks, so an interrupted build resumes where it stopped and never
leaves a half-written image behind. Everything is deterministic under ``seed``.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medaudit.audit.concepts import extract_concepts
from medaudit.data.cxr.openi import OPENI_LABELS, load_openi_dicom_metadata, load_openi_reports
from medaudit.data.phantom_labels import concept_device_kinds, concept_labels
from medaudit.errors import InputError
from medaudit.io import atomic_save
from medaudit.progress import make_progress

COHORT_VERSION = "v3"  # v3: labels and device kinds from the concept extractor (phantom_labels)
#: Metadata columns of the cohort (what a metadata encoder may see).
METADATA_COLUMNS: tuple[str, ...] = ("view_position", "frontal_lateral", "age", "sex")
LABEL_COLUMNS: tuple[str, ...] = OPENI_LABELS


def cohort_dir(cache_dir: str | Path, image_size: int = 128, seed: int = 0) -> Path:
    """Folder holding one cohort build (table + images) for this size and seed."""
    return Path(cache_dir) / f"phantom_cxr_{COHORT_VERSION}_s{image_size}_seed{seed}"


def cohort_table(cache_dir: str | Path, seed: int = 0, image_size: int = 128) -> pd.DataFrame:
    """The cohort's case table without rendering (parsed once, then read from ``cohort.parquet``).

    Columns: ``id``, the labels of :data:`LABEL_COLUMNS`, ``image`` (PNG path, may not exist yet),
    ``report``, the metadata of :data:`METADATA_COLUMNS`, and provenance / rendering hints
    (``report_id``, ``source_image_id``, ``view_source``, ``device_kinds``, ``*_side``, ``*_severity``,
    ``render_seed``).
    """
    root = cohort_dir(cache_dir, image_size, seed)
    table = root / "cohort.parquet"
    if table.is_file():
        df = pd.read_parquet(table)
        df["image"] = [str(root / "images" / f"{i}.png") for i in df["id"]]
        return df
    df = _build_table(root, seed)
    root.mkdir(parents=True, exist_ok=True)
    with atomic_save(table) as tmp:
        df.drop(columns=["image"]).to_parquet(tmp, index=False)
    return df


#: The per-image columns :func:`_pick_images` reads from the Open-i DICOM metadata, in its order.
_IMAGE_COLUMNS = ("source_image_id", "view_position", "view_source", "age", "frontal_lateral", "patient_id")


def _build_table(root: Path, seed: int) -> pd.DataFrame:
    """Parse the case table from the Open-i reports and DICOM metadata (see :func:`cohort_table`)."""
    rep = load_openi_reports()
    # 28 reports carry neither FINDINGS nor IMPRESSION text: nothing to render or audit, so excluded.
    rep = rep[rep["report"].str.strip().str.len() > 0].reset_index(drop=True)
    img = _pick_images(rep["image_ids"], seed)
    df = pd.DataFrame({"id": "openi-" + rep["report_id"].astype(str)})
    codes = extract_concepts(rep["report"].tolist())
    labels = concept_labels(codes, rep["mesh_major"].tolist())
    for lab in LABEL_COLUMNS:
        df[lab] = labels[lab].to_numpy()
    df["image"] = [str(root / "images" / f"{i}.png") for i in df["id"]]
    df["report"] = rep["report"]
    df["view_position"] = img["view_position"]
    df["frontal_lateral"] = img["frontal_lateral"]
    df["age"] = pd.to_numeric(pd.Series(img["age"]), errors="coerce")
    df["sex"] = rep["sex"]
    df["report_id"] = rep["report_id"]
    df["patient_id"] = [
        p if p and p != "nan" else f"report-{r}"
        for p, r in zip(img["patient_id"], rep["report_id"], strict=True)
    ]
    df["source_image_id"] = img["source_image_id"]
    df["view_source"] = img["view_source"]
    hint_cols = [
        c for c in rep.columns if c == "device_kinds" or c.endswith(("_side", "_severity", "_upper"))
    ]
    for c in hint_cols:
        df[c] = rep[c]
    df["device_kinds"] = concept_device_kinds(codes, rep["mesh_major"].tolist())
    df["render_seed"] = np.arange(len(df), dtype=np.int64)
    return df


def _pick_images(image_ids: pd.Series, seed: int) -> dict[str, list[Any]]:
    """For each report (its ``image_ids``), one image chosen under ``seed`` among those with a DICOM
    header, and that header's metadata: the columns of :data:`_IMAGE_COLUMNS`."""
    meta = load_openi_dicom_metadata().set_index("image_id")
    rng = np.random.default_rng(seed)
    cols: dict[str, list[Any]] = {c: [] for c in _IMAGE_COLUMNS}
    for ids in image_ids:
        known = [i for i in ids if i in meta.index]
        if known:
            iid = known[int(rng.integers(len(known)))]
            m = meta.loc[iid]
            row = (
                iid,
                m["view_position"],
                m["view_source"],
                m["age"],
                m["frontal_lateral"],
                str(m["patient_id"]),
            )
        else:  # a report without any image header: rendered as PA, recorded as assumed
            row = (ids[0] if len(ids) else "", "PA", "assumed", np.nan, "Frontal", "")
        for c, v in zip(_IMAGE_COLUMNS, row, strict=True):
            cols[c].append(v)
    return cols


def _png_bytes(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", optimize=False, compress_level=3)
    return buf.getvalue()


def render_images(
    df: pd.DataFrame, image_size: int = 128, seed: int = 0, chunk_size: int = 256, progress: bool = True
) -> int:
    """Render the PNG of every row whose image file is missing; returns how many were rendered."""
    from medaudit.data.phantom_render import render_case

    todo = [i for i, p in enumerate(df["image"]) if not os.path.isfile(p)]
    if not todo:
        return 0
    records = df.to_dict("records")
    with make_progress(disable=None if progress else True) as prog:
        task = prog.add_task("rendering phantom radiographs", total=len(todo))
        for start in range(0, len(todo), chunk_size):
            chunk = todo[start : start + chunk_size]
            # Each chunk is rendered into a staging folder, then every finished PNG is moved into place
            # with an atomic rename: an interrupted build leaves only whole images and resumes from them.
            folder = Path(records[chunk[0]]["image"]).parent
            folder.mkdir(parents=True, exist_ok=True)
            stage = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".render-"))
            try:
                for i in chunk:
                    arr = render_case(records[i], size=image_size, seed=seed)
                    tmp = stage / Path(records[i]["image"]).name
                    tmp.write_bytes(_png_bytes(arr))
                    os.replace(tmp, records[i]["image"])
                    prog.advance(task)
            finally:
                shutil.rmtree(stage, ignore_errors=True)
    return len(todo)


def select_cases(df: pd.DataFrame, n: int | None, seed: int = 0) -> pd.DataFrame:
    """A deterministic subset of ``n`` cases (all when ``None``), in cohort order."""
    if n is None or n >= len(df):
        return df
    if n <= 0:
        raise InputError(f"n={n}: the cohort needs at least one case")
    rng = np.random.default_rng([seed, 7])
    keep = np.sort(rng.permutation(len(df))[:n])
    return df.iloc[keep].reset_index(drop=True)


def build_cohort(
    cache_dir: str | Path,
    n: int | None = None,
    image_size: int = 128,
    seed: int = 0,
    progress: bool = True,
    ids: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Build (or reuse) the phantom cohort and return its case table with rendered images.

    ``n`` picks a deterministic subset (``None``: all 3,927 cases); ``ids`` renders exactly those cases.
    Images already in the cache are reused, so an interrupted build resumes cleanly.
    """
    if image_size < 64 or image_size > 512:
        raise InputError(f"image_size={image_size}: choose between 64 and 512 pixels")
    df = cohort_table(cache_dir, seed=seed, image_size=image_size)
    if ids is not None:
        want = set(ids)
        missing = want - set(df["id"])
        if missing:
            raise InputError(f"case id '{sorted(missing)[0]}': not in the phantom cohort")
        df = df[df["id"].isin(want)].reset_index(drop=True)
    else:
        df = select_cases(df, n, seed)
    (cohort_dir(cache_dir, image_size, seed) / "images").mkdir(parents=True, exist_ok=True)
    render_images(df, image_size=image_size, seed=seed, progress=progress)
    df.attrs["label_columns"] = list(LABEL_COLUMNS)
    df.attrs["metadata_columns"] = list(METADATA_COLUMNS)
    df.attrs["source"] = "phantom cohort (Open-i reports, rendered images)"
    return df
