"""3D volume readers for texture-robustness work: dHCP, a NIfTI folder, a CSV of pairs, and the
embedded ``mni-phantom`` cohort.

Every reader returns a list of :class:`VolumeCase` (paths and metadata only); :func:`load_case`
reads, validates and pre-processes one case into tensors. Sizes, spacings and affines are always
read from the NIfTI headers.

The ``mni-phantom`` cohort is **simulated** (:mod:`medaudit.data.mni_phantom`); ``get_cases`` and
``mri.build_mni_phantom`` reach it from here.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import gzip
import inspect
import logging
import math
import os
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

from medaudit.errors import InputError
from medaudit.io import (
    atomic_write_bytes,
    missing_reason,
)

# --------------------------------------------------------------------------------------------------
# Label sets


@dataclass(frozen=True)
class LabelSet:
    """A declared set of label values, optionally merged into fewer output classes.

    ``source_values``: values allowed in the label files. ``merge``: source value -> output class
    (identity when ``None``). ``class_names``: output class index -> name; class 0 is background.
    """

    name: str
    source_values: tuple[int, ...]
    class_names: tuple[str, ...]
    merge: Mapping[int, int] | None = None

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def lookup_table(self) -> np.ndarray:
        """Array mapping source value -> output class (-1 for undeclared values)."""
        lut = np.full(max(self.source_values) + 1, -1, dtype=np.int64)
        for v in self.source_values:
            lut[v] = self.merge[v] if self.merge is not None else v
        return lut


_DRAWEM9_NAMES = (
    "outside",
    "CSF",
    "cortical GM",
    "WM",
    "background",
    "ventricles",
    "cerebellum",
    "deep GM",
    "brainstem",
    "hippocampi+amygdala",
)

LABEL_SETS: dict[str, LabelSet] = {
    "tissue4": LabelSet("tissue4", (0, 1, 2, 3), ("background", "CSF", "GM", "WM")),
    "drawem9": LabelSet("drawem9", tuple(range(10)), _DRAWEM9_NAMES),
    # dHCP tissues merged to CSF / GM / WM / other: 0,4 -> background; 1,5 -> CSF; 2 -> GM; 3 -> WM;
    # cerebellum, deep GM, brainstem, hippocampi+amygdala -> other.
    "drawem9-tissue": LabelSet(
        "drawem9-tissue",
        tuple(range(10)),
        ("background", "CSF", "GM", "WM", "other"),
        {0: 0, 4: 0, 1: 1, 5: 1, 2: 2, 3: 3, 6: 4, 7: 4, 8: 4, 9: 4},
    ),
    "drawem87": LabelSet("drawem87", tuple(range(88)), tuple(f"label{i}" for i in range(88))),
}


def get_label_set(name: str | LabelSet) -> LabelSet:
    """Label set by name (``tissue4``, ``drawem9``, ``drawem9-tissue``, ``drawem87``)."""
    if isinstance(name, LabelSet):
        return name
    try:
        return LABEL_SETS[name]
    except KeyError:
        raise InputError(f"unknown label set '{name}'; choose one of {sorted(LABEL_SETS)}") from None


# --------------------------------------------------------------------------------------------------
# Cases and readers


@dataclass
class VolumeCase:
    """One image/label pair (paths) with metadata; nothing is read until :func:`load_case`."""

    case_id: str
    image: Path
    label: Path | None = None
    mask: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "case_id": self.case_id,
            "image": str(self.image),
            "label": None if self.label is None else str(self.label),
            "mask": None if self.mask is None else str(self.mask),
            "meta": {
                k: (v if isinstance(v, (int, float, str, bool)) or v is None else str(v))
                for k, v in self.meta.items()
            },
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> VolumeCase:
        return cls(
            case_id=str(d["case_id"]),
            image=Path(d["image"]),
            label=None if d.get("label") is None else Path(d["label"]),
            mask=None if d.get("mask") is None else Path(d["mask"]),
            meta=dict(d.get("meta") or {}),
        )


def _read_tsv(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:  # a BOM (Excel) is not a name
            reader = csv.DictReader(fh, delimiter="\t")
            rows = []
            for row in reader:
                if None in row:  # more fields than the header: the values were kept under the key None
                    n = len(row) - 1 + len(row[None])  # type: ignore[arg-type]
                    raise InputError(
                        f"{path}: line {reader.line_num} has {n} tab-separated fields, the header has {len(row) - 1}"
                    )
                rows.append(row)
            return rows
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read TSV ({exc})") from None


def read_dhcp(
    root: str | Path,
    modality: str = "T2w",
    label_set: str = "drawem9",
    prefer_restore: bool = True,
    require_label: bool = True,
) -> list[VolumeCase]:
    """Cases from a dHCP structural-pipeline release.

    ``root`` is the release root (holding ``derivatives/dhcp_anat_pipeline``) or that pipeline folder
    itself. Per session: image ``*_desc-restore_{modality}.nii.gz`` (preferred) or ``*_{modality}.nii.gz``,
    labels ``*_desc-drawem9_dseg.nii.gz`` (or drawem87 when ``label_set`` starts with ``drawem87``),
    brain mask ``*_desc-brain_mask.nii.gz``. ``participants.tsv`` and per-subject ``*_sessions.tsv`` /
    root ``sessions.tsv`` fill ``meta``. Sessions without the image (e.g. no T1w) are skipped.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: {missing_reason(root, 'dHCP root folder')}")
    pipe = root / "derivatives" / "dhcp_anat_pipeline"
    if not pipe.is_dir():
        pipe = root
    subjects = sorted(p for p in pipe.glob("sub-*") if p.is_dir())
    if not subjects:
        raise InputError(
            f"{pipe}: no sub-* folders (expected derivatives/dhcp_anat_pipeline/sub-*/ses-*/anat)"
        )
    seg = "drawem87" if label_set.startswith("drawem87") else "drawem9"
    participants = _dhcp_participants(pipe, root)
    sessions = _dhcp_sessions(pipe, root)
    cases: list[VolumeCase] = []
    for sub in subjects:
        for ses in sorted(p for p in sub.glob("ses-*") if p.is_dir()):
            files = _dhcp_session_files(ses / "anat", modality, seg, prefer_restore, require_label)
            if files is None:
                continue
            meta: dict[str, Any] = {"subject": sub.name, "session": ses.name, "modality": modality}
            for k, v in participants.get(sub.name, {}).items():
                meta.setdefault(k, v)
            for k, v in sessions.get((sub.name, ses.name), {}).items():
                meta.setdefault(k, v)
            cases.append(VolumeCase(f"{sub.name}_{ses.name}", *files, meta))
    if not cases:
        raise InputError(f"{pipe}: no session has a *_{modality}.nii.gz image")
    return cases


def _dhcp_participants(pipe: Path, root: Path) -> dict[str, dict[str, str]]:
    """``participants.tsv`` rows by ``sub-`` id, from the pipeline folder or else the release root."""
    participants: dict[str, dict[str, str]] = {}
    for tsv in (pipe / "participants.tsv", root / "participants.tsv"):
        if tsv.is_file():
            for row in _read_tsv(tsv):
                pid = row.get("participant_id", "")
                participants[pid if pid.startswith("sub-") else f"sub-{pid}"] = row
            break
    return participants


def _dhcp_sessions(pipe: Path, root: Path) -> dict[tuple[str, str], dict[str, str]]:
    """Session rows by ``(sub-, ses-)`` from the root and per-subject ``*_sessions.tsv`` files."""
    sessions: dict[tuple[str, str], dict[str, str]] = {}
    for tsv in [pipe / "sessions.tsv", root / "sessions.tsv", *pipe.glob("sub-*/*_sessions.tsv")]:
        if not tsv.is_file():
            continue
        sub_from_name = tsv.name.split("_")[0] if tsv.name != "sessions.tsv" else None
        for row in _read_tsv(tsv):
            sub = row.get("participant_id") or sub_from_name or ""
            sub = sub if sub.startswith("sub-") else f"sub-{sub}"
            ses = row.get("session_id", "")
            ses = ses if ses.startswith("ses-") else f"ses-{ses}"
            sessions[(sub, ses)] = row
    return sessions


def _dhcp_session_files(
    anat: Path, modality: str, seg: str, prefer_restore: bool, require_label: bool
) -> tuple[Path, Path | None, Path | None] | None:
    """(image, label, brain mask) of one session's ``anat`` folder; ``None`` without the image."""
    if not anat.is_dir():
        return None
    image = _first(anat, [f"*_desc-restore_{modality}.nii*"] if prefer_restore else [])
    if image is None:
        image = next((p for p in sorted(anat.glob(f"*_{modality}.nii*")) if "_desc-" not in p.name), None)
    if image is None:
        return None
    label = _first(anat, [f"*_desc-{seg}_dseg.nii*"])
    if label is None and require_label:
        raise InputError(f"{anat}: no *_desc-{seg}_dseg.nii.gz label file for {image.name}")
    mask = _first(anat, ["*_desc-brain_mask.nii*"])
    return image, label, mask


def _first(folder: Path, patterns: Sequence[str]) -> Path | None:
    for pat in patterns:
        hits = sorted(folder.glob(pat))
        if hits:
            return hits[0]
    return None


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    if pattern.count("{id}") != 1:
        raise InputError(f"pattern '{pattern}' must contain '{{id}}' exactly once")
    parts = [re.escape(p).replace(r"\*", "[^/]*") for p in pattern.split("{id}")]
    return re.compile("^" + parts[0] + "(?P<id>[^/]+?)" + parts[1] + "$")


def read_nifti_folder(
    folder: str | Path,
    image_pattern: str = "images/{id}.nii.gz",
    label_pattern: str = "labels/{id}.nii.gz",
    require_label: bool = True,
) -> list[VolumeCase]:
    """Cases from a folder whose images and labels are matched by name patterns.

    Patterns are relative to ``folder``, contain ``{id}`` once and may contain ``*``; e.g. the defaults
    ``images/{id}.nii.gz`` + ``labels/{id}.nii.gz``, or ``{id}_img.nii.gz`` + ``{id}_seg.nii.gz``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: {missing_reason(folder, 'NIfTI folder')}")
    rx = _pattern_regex(image_pattern)
    _pattern_regex(label_pattern)
    image_glob = image_pattern.replace("{id}", "*")
    cases = []
    scans: dict[str, str] = {}  # resolved image path -> case id (a symlink to another image of the folder)
    for p in sorted(folder.glob(image_glob)):
        m = rx.match(p.relative_to(folder).as_posix())
        if not m:
            continue
        cid = m.group("id")
        lab_glob = label_pattern.replace("{id}", cid)
        labs = sorted(folder.glob(label_pattern.replace("{id}", glob.escape(cid))))  # 'scan[1]' is a name
        if not labs and require_label:
            raise InputError(f"{p}: no label matching '{lab_glob}' in {folder}")
        real = os.path.realpath(p)
        if real in scans:
            raise InputError(
                f"{p}: case '{cid}' is the same scan as case '{scans[real]}' ({real}); list each scan once"
            )
        scans[real] = cid
        cases.append(VolumeCase(cid, p, labs[0] if labs else None))
    if not cases:
        if (image_pattern, label_pattern) == _FOLDER_PATTERNS and any(folder.glob("images/*.nii")):
            # the default names, uncompressed (as many tools write them): `--data folder` has no way to
            # give patterns, so a folder of .nii scans could not be read at all
            return read_nifti_folder(folder, "images/{id}.nii", "labels/{id}.nii", require_label)
        raise InputError(f"{folder}: no image matches '{image_pattern}'")
    return cases


#: the default patterns of :func:`read_nifti_folder`; a folder whose scans are all ``.nii`` is read as
#: ``images/{id}.nii`` + ``labels/{id}.nii``
_FOLDER_PATTERNS = ("images/{id}.nii.gz", "labels/{id}.nii.gz")


def read_csv_pairs(
    path: str | Path,
    image_col: str = "image",
    label_col: str = "label",
    id_col: str | None = "id",
    require_label: bool = True,
) -> list[VolumeCase]:
    """Cases from a CSV of image/label paths (relative paths are relative to the CSV's folder).

    Other columns go to ``meta``. A missing ``id`` column falls back to the image file stem.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {missing_reason(path, 'CSV file')}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:  # a BOM (Excel) is not a name
            reader = csv.DictReader(fh)
            rows, lines = [], []
            for row in reader:  # the physical line each record ends on (blank and multi-line rows counted)
                rows.append(row)
                lines.append(reader.line_num)
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read CSV ({exc})") from None
    if not rows:
        raise InputError(f"{path}: CSV has no rows")
    cols = set(rows[0])
    if image_col not in cols:
        raise InputError(f"{path}: missing column '{image_col}'")
    if require_label and label_col not in cols:
        raise InputError(f"{path}: missing column '{label_col}'")
    cases, seen = [], set()
    scans: dict[str, tuple[int, str]] = {}  # resolved image path -> (line, case id)
    for i, row in zip(lines, rows, strict=True):
        if None in row:  # more fields than the header (a trailing comma the header lacks, a shifted line)
            n = len(row) - 1 + len(row[None])  # type: ignore[arg-type]
            raise InputError(f"{path}: line {i} has {n} fields, the header has {len(row) - 1}")
        img = (row.get(image_col) or "").strip()
        if not img:
            raise InputError(f"{path}: line {i}: empty '{image_col}'")
        img_p = Path(img) if Path(img).is_absolute() else path.parent / img
        lab = (row.get(label_col) or "").strip()
        if require_label and not lab:
            raise InputError(f"{path}: line {i}: empty '{label_col}'")
        lab_p = None if not lab else (Path(lab) if Path(lab).is_absolute() else path.parent / lab)
        for p in (img_p, lab_p):
            if p is not None and not p.is_file():
                raise InputError(f"{path}: line {i}: {missing_reason(p, 'file')}: {p}")
        cid = (row.get(id_col) or "").strip() if id_col and id_col in cols else ""
        cid = cid or _stem(img_p)
        if cid in seen:
            raise InputError(f"{path}: line {i}: duplicate case id '{cid}'")
        seen.add(cid)
        real = os.path.realpath(img_p)
        if real in scans:  # one scan under two ids could land in both the training and the test split
            j, other = scans[real]
            raise InputError(
                f"{path}: line {i}: case '{cid}' has the same image as case '{other}' (line {j}): {real}; "
                "list each scan once"
            )
        scans[real] = (i, cid)
        meta = {k: v for k, v in row.items() if k not in {image_col, label_col, id_col}}
        cases.append(VolumeCase(cid, img_p, lab_p, None, meta))
    return cases


def _stem(p: Path) -> str:
    name = p.name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return p.stem


def get_cases(source: str, path: str | Path | None = None, **kwargs: Any) -> list[VolumeCase]:
    """Dispatch on ``source``: ``mni-phantom`` | ``dhcp`` | ``folder`` | ``csv``."""
    from medaudit.data.mni_phantom import build_mni_phantom

    readers: dict[str, Any] = {
        "mni-phantom": build_mni_phantom,
        "dhcp": read_dhcp,
        "folder": read_nifti_folder,
        "csv": read_csv_pairs,
    }
    if source not in readers:
        raise InputError(f"unknown data source '{source}'; choose mni-phantom, dhcp, folder or csv")
    check_reader_options(source, kwargs)
    if source == "mni-phantom":
        return build_mni_phantom(**kwargs)
    if path is None:
        raise InputError(f"data source '{source}' needs a path")
    return readers[source](path, **kwargs)  # type: ignore[no-any-return]


#: the reader's own first argument (the data path), not an option
_PATH_PARAMS = ("root", "folder", "path")


def check_reader_options(source: str, options: Mapping[str, Any]) -> None:
    """Refuse an option the reader of ``source`` does not take, or a value of the wrong kind (text
    for a name or pattern, true/false for a switch, a number for a count), with one line naming it."""
    from medaudit.data.mni_phantom import build_mni_phantom

    reader = {
        "mni-phantom": build_mni_phantom,
        "dhcp": read_dhcp,
        "folder": read_nifti_folder,
        "csv": read_csv_pairs,
    }[source]
    params = {n: p for n, p in inspect.signature(reader).parameters.items() if n not in _PATH_PARAMS}
    for name, value in options.items():
        if name not in params:
            raise InputError(
                f"data option '{name}' is not an option of the {source} reader; "
                f"its options: {', '.join(params)}"
            )
        default = params[name].default
        kind: tuple[type, ...] = (int, float) if isinstance(default, float) else (type(default),)
        if default is None or isinstance(default, Path):
            kind = (str,)
        ok = isinstance(value, kind) and (isinstance(default, bool) or not isinstance(value, bool))
        if not ok and not (default is None and value is None):
            want = " or ".join(k.__name__ for k in kind)
            raise InputError(f"data option '{name}': expected {want}, got {value!r:.60}")


# --------------------------------------------------------------------------------------------------
# Loading and validation


def load_nifti(path: str | Path) -> nib.Nifti1Image:
    """Load a NIfTI image (header only until data is read); InputError naming the file if unreadable."""
    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"{path}: {'a folder, not a NIfTI file' if path.is_dir() else missing_reason(path, 'file')}"
        )
    try:
        with _quiet_negative_pixdims():
            img = nib.load(str(path))
        _ = img.shape  # header access
    except Exception as exc:  # nibabel raises many types for corrupt files
        hint = _extension_hint(path)
        detail = hint or f"{type(exc).__name__}: {exc}"
        raise InputError(f"{path}: unreadable NIfTI ({detail})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(f"{path}: not a NIfTI image")
    _check_affine(np.asarray(img.affine, dtype=np.float64), path)
    return img


_GZIP_MAGIC = b"\x1f\x8b"
#: the first field of an uncompressed NIfTI-1 / NIfTI-2 header, ``sizeof_hdr`` (348 / 540), either byte order
_NIFTI_HEADS = tuple(n.to_bytes(4, order) for n in (348, 540) for order in ("little", "big"))


def _extension_hint(path: Path) -> str | None:
    """Why nibabel could not read a NIfTI whose name lies about its compression (it goes by the name:
    ``Cannot work out file type`` for gzip named ``.nii``, ``not a gzip file`` for ``.nii`` named
    ``.nii.gz``), or ``None``."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError:
        return None
    name = path.name.lower()
    if head[:2] == _GZIP_MAGIC and name.endswith(".nii"):
        return "the file is gzip-compressed but named .nii; rename it .nii.gz"
    if head in _NIFTI_HEADS and name.endswith(".nii.gz"):
        return "the file is not gzip-compressed but named .nii.gz; rename it .nii"
    return None


#: what nibabel logs (on stderr, each time such a file is read) for a header whose voxel sizes are
#: negative; it takes their absolute values, and the affine comes from the sform/qform either way
_NEGATIVE_PIXDIM_MESSAGE = "pixdim[1,2,3] should be positive; setting to abs of pixdim values"


def _drop_negative_pixdim_record(record: logging.LogRecord) -> bool:
    return record.getMessage() != _NEGATIVE_PIXDIM_MESSAGE


@contextlib.contextmanager
def _quiet_negative_pixdims() -> Iterator[None]:
    """Drop nibabel's negative-pixdim log record (only that one) while a scan's header is read."""
    logger = logging.getLogger("nibabel.global")
    logger.addFilter(_drop_negative_pixdim_record)
    try:
        yield
    finally:
        logger.removeFilter(_drop_negative_pixdim_record)


def _check_affine(affine: np.ndarray, path: Path) -> None:
    """A voxel-to-world affine must be finite and invertible (spacing and orientation defined)."""
    lin = affine[:3, :3]
    if not np.all(np.isfinite(affine)):
        raise InputError(f"{path}: the NIfTI affine has non-finite entries")
    sv = np.linalg.svd(lin, compute_uv=False)
    if not sv[0] > 0.0 or sv[-1] <= 1e-6 * sv[0]:
        raise InputError(f"{path}: the NIfTI affine is singular (zero voxel size or degenerate axes)")


#: Largest volume (voxels, as its header declares) that medaudit reads: 2**28 = 268 million voxels,
#: 1 GiB as float32, fifteen times a dHCP scan (290 x 290 x 203). A file that declares more is refused
#: before its data are read: a few MB of gzip can declare a volume of tens of GB (a decompression
#: bomb). Override with the environment variable ``MEDAUDIT_MAX_VOLUME_VOXELS``.
MAX_VOLUME_VOXELS = 2**28


def max_volume_voxels() -> int:
    """The voxel limit in force: ``$MEDAUDIT_MAX_VOLUME_VOXELS`` or :data:`MAX_VOLUME_VOXELS`."""
    raw = os.environ.get("MEDAUDIT_MAX_VOLUME_VOXELS", "").strip()
    if not raw:
        return MAX_VOLUME_VOXELS
    if not raw.isdigit() or int(raw) < 1:
        raise InputError(f"MEDAUDIT_MAX_VOLUME_VOXELS={raw!r}: expected a positive integer")
    return int(raw)


def _read_data(img: nib.Nifti1Image, path: Path) -> np.ndarray:
    if 0 in tuple(img.shape):
        raise InputError(f"{path}: empty volume, shape {tuple(img.shape)}")
    n, limit = math.prod(int(s) for s in img.shape), max_volume_voxels()
    if n > limit:
        raise InputError(
            f"{path}: header declares {tuple(int(s) for s in img.shape)} = {n:,} voxels, over the limit of "
            f"{limit:,} (a decompression bomb or a damaged header; raise MEDAUDIT_MAX_VOLUME_VOXELS to allow it)"
        )
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as exc:
        raise InputError(f"{path}: unreadable NIfTI data ({type(exc).__name__}: {exc})") from None
    if data.dtype.kind not in "biuf":  # complex, RGB (structured) or other non-real voxels
        raise InputError(f"{path}: voxel type {data.dtype} is not real-valued (give a magnitude image)")
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(f"{path}: expected a 3D volume, got shape {data.shape}")
    return data


def check_image_values(data: np.ndarray, path: Path) -> None:
    """Refuse NaN or infinite voxels, finite ones beyond the float32 range that medaudit computes in
    (float64 data such as 1e300: the cast made them infinite, and they were called NaN or infinite),
    and a constant scan (a failed export: scored or trained on, it is noise)."""
    if not np.all(np.isfinite(data)):
        raise InputError(f"{path}: image contains non-finite values (NaN or infinite)")
    limit = float(np.finfo(np.float32).max)
    if data.dtype.kind == "f" and data.size and (top := float(np.max(np.abs(data)))) > limit:
        raise InputError(
            f"{path}: image values reach {top:.3g}, beyond the float32 range (±{limit:.2g}) that "
            "medaudit computes in; rescale the image"
        )
    if data.size and np.ptp(data) == 0:
        raise InputError(f"{path}: image is constant (every voxel {data.flat[0]:g}); nothing to segment")


def spacing_of(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel spacing (mm) from an affine's column norms."""
    return tuple(float(x) for x in np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0)))  # type: ignore[return-value]


def normalise_intensity(image: np.ndarray, lower: float = 0.5, upper: float = 99.5) -> np.ndarray:
    """Robust min-max scaling to [0, 1] between the given percentiles of non-zero voxels."""
    x = np.asarray(image, dtype=np.float32)
    fg = x[x > 0] if np.any(x > 0) else x.ravel()
    lo, hi = np.percentile(fg, [lower, upper]) if fg.size else (0.0, 1.0)
    lo = min(float(lo), 0.0) if np.any(x > 0) else float(lo)
    if hi <= lo:
        return np.zeros_like(x)
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def load_case(
    case: VolumeCase,
    label_set: str | LabelSet = "tissue4",
    spacing: float | Sequence[float] | None = None,
    min_shape: Sequence[int] | None = None,
    small_policy: str = "pad",
    normalise: bool = True,
    affine_atol: float = 1e-3,
) -> dict[str, Any]:
    """Read, validate and pre-process one case.

    Returns ``{"case_id", "image": float32 tensor (1,D,H,W), "label": int64 tensor (1,D,H,W) or None,
    "affine": (4,4) array of the returned grid, "spacing"}``. Labels are mapped through ``label_set``.
    ``spacing`` resamples (image linear, label nearest) with TorchIO. Volumes smaller than
    ``min_shape`` are zero-padded (``small_policy="pad"``, with a warning) or rejected (``"error"``).
    """
    ls = get_label_set(label_set)
    img = load_nifti(case.image)
    image = _read_data(img, case.image)
    check_image_values(image, case.image)
    image = image.astype(np.float32)
    affine = np.asarray(img.affine, dtype=np.float64)
    label = None
    if case.label is not None:
        limg = load_nifti(case.label)
        ldata = _read_data(limg, case.label)
        if ldata.shape != image.shape:
            raise InputError(
                f"{case.label}: label shape {ldata.shape} does not match image shape {image.shape} ({case.image.name})"
            )
        if not np.allclose(limg.affine, affine, atol=affine_atol):
            raise InputError(
                f"{case.label}: label affine does not match the image affine of {case.image.name}"
            )
        if np.issubdtype(ldata.dtype, np.floating) and (
            not np.all(np.isfinite(ldata)) or np.any(ldata != np.round(ldata))
        ):
            raise InputError(f"{case.label}: label map has non-integer values")
        lut = ls.lookup_table()
        # the values as stored: a float label far outside int64 must not wrap around when cast
        bad = [int(v) for v in np.unique(ldata) if not 0 <= v < lut.size or lut[int(v)] < 0]
        if bad:
            raise InputError(
                f"{case.label}: label value(s) {bad[:5]} outside the declared set '{ls.name}' {list(ls.source_values)[:12]}"
            )
        label = lut[ldata.astype(np.int64)]
    if normalise:
        image = normalise_intensity(image)
    if spacing is not None:
        _check_resampled_size(image.shape, affine, spacing, case.image)
        shape, native = image.shape, affine
        image, label, affine = _resample(image, label, affine, spacing)
        _check_min_resampled(shape, image.shape, native, spacing_of(affine), case.image)  # as made
    if min_shape is not None:
        image, label = _ensure_min_shape(
            image, label, tuple(int(s) for s in min_shape), small_policy, case.image
        )
    return {
        "case_id": case.case_id,
        "image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None],
        "label": None
        if label is None
        else torch.from_numpy(np.ascontiguousarray(label, dtype=np.int64))[None],
        "affine": affine,
        "spacing": spacing_of(affine),
    }


def check_case(
    case: VolumeCase, label_set: str | LabelSet = "tissue4", spacing: float | Sequence[float] | None = None
) -> None:
    """Read and validate one case as :func:`load_case` does (header, voxel values, label map on the same
    grid with values in ``label_set``, and the size at the working ``spacing``), keeping nothing and
    resampling nothing: one :class:`InputError` line naming the file otherwise. A case without a label
    map is refused (training and scoring need one)."""
    if case.label is None:
        raise InputError(
            f"{case.image}: case '{case.case_id}' has no label map (training and scoring need one)"
        )
    vol = load_case(case, label_set=label_set, normalise=False)
    if spacing is not None:
        _check_resampled_size(tuple(vol["image"].shape[1:]), vol["affine"], spacing, case.image)


def _check_resampled_size(
    shape: Sequence[int], affine: np.ndarray, spacing: float | Sequence[float], path: Path
) -> None:
    """The voxel limit (:func:`max_volume_voxels`) applies to the volume resampled to ``spacing`` too: a
    header with voxels of metres (or a unit error) would otherwise ask for terabytes when resampled."""
    sp = (float(spacing),) * 3 if np.isscalar(spacing) else tuple(float(s) for s in spacing)  # type: ignore[arg-type]
    new = [math.ceil(n * old / s) for n, old, s in zip(shape, spacing_of(affine), sp, strict=True)]
    # TorchIO keeps floor(n * old / new) voxels per axis (an axis of one voxel stays one)
    kept = [
        1 if n == 1 else math.floor(n * old / s)
        for n, old, s in zip(shape, spacing_of(affine), sp, strict=True)
    ]
    _check_min_resampled(shape, kept, affine, sp, path)
    limit = max_volume_voxels()
    if math.prod(new) > limit:
        size, work = ("x".join(f"{v:.4g}" for v in vs) for vs in (spacing_of(affine), sp))
        raise InputError(
            f"{path}: voxels of {size} mm resampled to the working spacing {work} mm would make "
            f"{math.prod(new):,} voxels, over the limit of {limit:,} (check the header's voxel size; "
            "raise MEDAUDIT_MAX_VOLUME_VOXELS to allow it)"
        )


def _check_min_resampled(
    shape: Sequence[int], new: Sequence[int], affine: np.ndarray, sp: Sequence[float], path: Path
) -> None:
    """A volume resampled to the working spacing keeps at least two voxels along each axis that had
    them: an empty (or one-voxel) volume would be trained on padding, or segmented as background."""
    if any(m < 1 or (m < 2 <= n) for n, m in zip(shape, new, strict=True)):
        size, work = ("x".join(f"{v:.4g}" for v in vs) for vs in (spacing_of(affine), sp))
        raise InputError(
            f"{path}: shape {tuple(int(n) for n in shape)} with voxels of {size} mm resampled to the working "
            f"spacing {work} mm would leave shape {tuple(int(m) for m in new)}, too few voxels (check the "
            "header's voxel size, or the working spacing)"
        )


def _resample(
    image: np.ndarray, label: np.ndarray | None, affine: np.ndarray, spacing: float | Sequence[float]
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    import torchio as tio

    sp = (float(spacing),) * 3 if np.isscalar(spacing) else tuple(float(s) for s in spacing)  # type: ignore[arg-type]
    if np.allclose(spacing_of(affine), sp, atol=1e-3):
        return image, label, affine
    subj = {"image": tio.ScalarImage(tensor=torch.from_numpy(image)[None], affine=affine)}
    if label is not None:
        subj["label"] = tio.LabelMap(tensor=torch.from_numpy(label)[None], affine=affine)
    out = tio.Resample(sp)(tio.Subject(**subj))
    new_img = out["image"].data[0].numpy().astype(np.float32)
    new_lab = None if label is None else out["label"].data[0].numpy().astype(np.int64)
    return new_img, new_lab, np.asarray(out["image"].affine, dtype=np.float64)


def _ensure_min_shape(
    image: np.ndarray, label: np.ndarray | None, min_shape: tuple[int, ...], policy: str, path: Path
) -> tuple[np.ndarray, np.ndarray | None]:
    if all(s >= m for s, m in zip(image.shape, min_shape, strict=True)):
        return image, label
    if policy == "error":
        raise InputError(f"{path}: volume shape {image.shape} is smaller than the patch {min_shape}")
    if policy != "pad":
        raise InputError(f"unknown small-volume policy '{policy}'; use 'pad' or 'error'")
    warnings.warn(
        f"{path}: volume shape {image.shape} smaller than patch {min_shape}; zero-padding", stacklevel=3
    )
    pad = [(0, max(0, m - s)) for s, m in zip(image.shape, min_shape, strict=True)]
    pad = [(p[1] // 2, p[1] - p[1] // 2) for p in pad]
    image = np.pad(image, pad)
    if label is not None:
        label = np.pad(label, pad)
    return image, label


def load_cases(cases: Sequence[VolumeCase], **kwargs: Any) -> list[dict[str, Any]]:
    """:func:`load_case` over a list."""
    return [load_case(c, **kwargs) for c in cases]


def save_nifti(data: np.ndarray, affine: np.ndarray, path: str | Path, header: Any = None) -> Path:
    """Write a NIfTI file atomically (``.nii`` or ``.nii.gz`` by extension)."""
    path = Path(path)
    # a NIfTI-2 input's header gives a NIfTI-2 label map (as a NIfTI-1 image nibabel logged a line and
    # dropped the format; NIfTI-1 cannot hold a dimension over 32767)
    kind = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    img = kind(data, affine, header=header)
    if header is not None:
        img.set_data_dtype(data.dtype)
        img.header.set_slope_inter(1.0, 0.0)
    raw = img.to_bytes()
    return atomic_write_bytes(
        path, gzip.compress(raw, compresslevel=6, mtime=0) if path.name.endswith(".gz") else raw
    )


def __getattr__(name: str) -> Any:
    """``mri.build_mni_phantom``: the embedded cohort lives in :mod:`medaudit.data.mni_phantom`, which
    reads its files with this module."""
    if name == "build_mni_phantom":
        from medaudit.data.mni_phantom import build_mni_phantom

        return build_mni_phantom
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
