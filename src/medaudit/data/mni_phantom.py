"""The embedded ``mni-phantom`` cohort: simulated subjects made from the MNI152 2009a T1 template and
its GM/WM probability maps (shipped by nilearn), cached as NIfTI and read back with :mod:`medaudit.data.mri`.

The template's maps become a 4-class tissue map (0 background, 1 CSF, 2 GM, 3 WM; CSF = brain mask minus
GM and WM, where the brain mask is the closed, hole-filled GM+WM support); distinct "subjects" are made
with seeded random affine + elastic deformations, resampled to a working resolution, and given mild
seeded intensity variation (global gamma and per-tissue contrast offsets).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medaudit.data.mri import VolumeCase, load_nifti, normalise_intensity, save_nifti
from medaudit.io import atomic_output_dir, atomic_write_json, default_cache_dir
from medaudit.outdir import held_lock, still_the_lock


def _mni_tissue_labels() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from scipy import ndimage

    from medaudit.data.assets import mni152_paths

    paths = mni152_paths()
    t1_img = load_nifti(paths["t1"])
    t1 = np.asarray(t1_img.get_fdata(), dtype=np.float32)
    gm = np.asarray(load_nifti(paths["gm"]).get_fdata(), dtype=np.float32)
    wm = np.asarray(load_nifti(paths["wm"]).get_fdata(), dtype=np.float32)
    gm, wm = gm / max(gm.max(), 1e-6), wm / max(wm.max(), 1e-6)
    support = (gm + wm) > 0.2
    support = ndimage.binary_closing(support, structure=np.ones((3, 3, 3)), iterations=3)
    brain = ndimage.binary_fill_holes(support)
    labels = np.zeros(t1.shape, dtype=np.int64)
    labels[brain] = 1  # CSF: inside the brain mask and neither GM nor WM
    tissue = (gm + wm) >= 0.5
    labels[brain & tissue & (gm >= wm)] = 2
    labels[brain & tissue & (wm > gm)] = 3
    # crop to the brain bounding box with a 6-voxel margin
    idx = np.argwhere(brain)
    lo = np.maximum(idx.min(0) - 6, 0)
    hi = np.minimum(idx.max(0) + 7, np.array(t1.shape))
    sl = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    aff = np.asarray(t1_img.affine, dtype=np.float64).copy()
    aff[:3, 3] = aff[:3, :3] @ lo + aff[:3, 3]
    t1c = t1[sl] * brain[sl]  # skull-stripped, like the dHCP restore images
    return t1c, labels[sl], aff


def build_mni_phantom(
    cache_dir: str | Path | None = None,
    n_subjects: int = 8,
    spacing: float = 2.5,
    seed: int = 0,
    max_displacement: float = 6.0,
    label_set: str | None = None,
) -> list[VolumeCase]:
    """Build (or reuse from cache) the simulated ``mni-phantom`` cohort; returns its cases.

    Each subject is the MNI152 2009a template, resampled to ``spacing`` mm, under a seeded random affine (±10% scale, ±8° rotation,
    ±4 mm shift) and elastic deformation (7 control points, ``max_displacement`` mm), with a seeded gamma (log-gamma ±0.15) and per-tissue contrast offsets (±4%).
    Labels use the ``tissue4`` set. Files are cached as NIfTI under
    ``cache_dir/mni-phantom-n{n}-sp{spacing}-s{seed}-d{max_displacement}/`` with a ``manifest.json`` written last.
    """
    del label_set  # always tissue4; accepted so configs can pass it through
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = f"mni-phantom-n{n_subjects}-sp{spacing:g}-s{seed}-d{max_displacement:g}"
    folder = cache_dir / key
    cached = _cached_phantom(folder)
    if cached is not None:
        return cached
    with _build_lock(cache_dir, key):  # another run building the same cohort: wait for it, then reuse it
        cached = _cached_phantom(folder, warn=True)
        if cached is not None:
            return cached
        return _build(folder, n_subjects, spacing, seed, max_displacement)


def _build(
    folder: Path, n_subjects: int, spacing: float, seed: int, max_displacement: float
) -> list[VolumeCase]:
    """Simulate the cohort into ``folder`` (staged, published whole); returns its cases."""
    with atomic_output_dir(folder, kind="mni-phantom", flag="cohort cache folder") as stage:
        t1, labels, aff = _mni_tissue_labels()  # once the folder is claimed: a bad cache path fails at once
        entries = [
            _write_phantom_subject(stage, i, t1, labels, aff, spacing, seed, max_displacement)
            for i in range(n_subjects)
        ]
        names = [Path(e[k]).name for e in entries for k in ("image", "label")]
        atomic_write_json(
            stage / "manifest.json",
            {
                "cohort": "mni-phantom",
                "simulated": True,
                "label_set": "tissue4",
                "spacing": spacing,
                "seed": seed,
                "max_displacement": max_displacement,
                "cases": entries,
                "sha256": {n: _sha256(stage / n) for n in names},
            },
        )
    return [
        VolumeCase(
            e["case_id"], folder / Path(e["image"]).name, folder / Path(e["label"]).name, None, e["meta"]
        )
        for e in entries
    ]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def _build_lock(cache_dir: Path, key: str) -> Iterator[None]:
    """Hold ``cache_dir/.KEY.build-lock`` (``flock``), waiting for a run that builds the same cohort:
    two runs sharing a cache made it at the same moment, and the second failed ('another medaudit run is
    writing it'). Where no lock can be made (a read-only place), the build itself names the folder."""
    lock = cache_dir / f".{key}.build-lock"
    while True:
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError:
            fd = -1
        if fd < 0:
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
            print(f"waiting for another run building the cohort cache {cache_dir / key}", file=sys.stderr)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except BaseException:
                os.close(fd)
                raise
        if still_the_lock(fd, lock):
            break
        os.close(fd)  # the previous holder removed the file between our open and flock: retry
    with held_lock(fd, lock):
        yield


def _cached_phantom(folder: Path, warn: bool = False) -> list[VolumeCase] | None:
    """The cohort cached in ``folder`` when its manifest reads and every file exists with the content the
    manifest records (a truncated or damaged file failed every training that read it); else ``None``,
    and the cohort is built again. With ``warn``, a damaged cache is named in a warning."""
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        return None
    try:
        data = json.loads(manifest.read_text())
        cases = [VolumeCase.from_dict(d) for d in data["cases"]]
        hashes = data["sha256"]  # a manifest written before the hashes were kept: built again, once
        if any(c.label is None for c in cases):  # a phantom case always has its label map
            return None
        for c in cases:
            c.image, c.label = folder / c.image.name, folder / c.label.name  # type: ignore[union-attr]
        for p in [f for c in cases for f in (c.image, c.label)]:
            if not p.is_file() or _sha256(p) != hashes[p.name]:  # type: ignore[union-attr]
                if warn:
                    warnings.warn(
                        f"{p}: the cached cohort file is missing or damaged; the cohort is built again",
                        stacklevel=3,
                    )
                return None
        return cases
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _write_phantom_subject(
    stage: Path,
    i: int,
    t1: np.ndarray,
    labels: np.ndarray,
    aff: np.ndarray,
    spacing: float,
    seed: int,
    max_displacement: float,
) -> dict[str, Any]:
    """Simulate subject ``i``, write its image and label under ``stage``; returns its manifest entry."""
    cid = f"phantom-{i:03d}"
    sseed = int.from_bytes(hashlib.sha256(f"{seed}:{i}".encode()).digest()[:4], "little")
    rng = np.random.default_rng(sseed)
    img, lab, a = _deform_template(t1, labels, aff, spacing, max_displacement, sseed)
    img, gamma = _vary_intensity(img, lab, rng)
    save_nifti(img, a, stage / f"{cid}_image.nii.gz")
    save_nifti(lab.astype(np.uint8), a, stage / f"{cid}_label.nii.gz")
    return VolumeCase(
        cid,
        Path(f"{cid}_image.nii.gz"),
        Path(f"{cid}_label.nii.gz"),
        None,
        {"simulated": True, "source": "MNI152 2009a (nilearn)", "gamma": round(gamma, 4)},
    ).to_dict()


def _deform_template(
    t1: np.ndarray,
    labels: np.ndarray,
    aff: np.ndarray,
    spacing: float,
    max_displacement: float,
    sseed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resample to ``spacing`` and apply a torch-seeded random affine + elastic deformation.

    Returns (image float32, label int64, affine); the global torch RNG state is left untouched.
    """
    import torchio as tio

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(sseed)
        subj = tio.Subject(
            image=tio.ScalarImage(tensor=torch.from_numpy(t1)[None], affine=aff),
            label=tio.LabelMap(tensor=torch.from_numpy(labels)[None], affine=aff),
        )
        tf = tio.Compose(
            [
                tio.Resample(float(spacing)),
                tio.RandomAffine(scales=0.1, degrees=8, translation=4, image_interpolation="linear"),
                tio.RandomElasticDeformation(num_control_points=7, max_displacement=max_displacement),
            ]
        )
        out = tf(subj)
    img = out["image"].data[0].numpy().astype(np.float32)
    lab = out["label"].data[0].numpy().astype(np.int64)
    return img, lab, np.asarray(out["image"].affine, dtype=np.float64)


def _vary_intensity(img: np.ndarray, lab: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Normalise, then a seeded gamma and per-tissue contrast offsets; returns (image, gamma)."""
    img = normalise_intensity(img)
    gamma = float(np.exp(rng.uniform(-0.15, 0.15)))
    img = np.power(img, gamma)
    for k in (1, 2, 3):
        img = img + (lab == k) * np.float32(rng.uniform(-0.04, 0.04))
    return np.clip(img, 0.0, None).astype(np.float32), gamma
