"""Segment NIfTI volumes with a trained model and write label maps on the input's grid.

The input is normalised like the training data and, when the model was trained at a working
spacing, resampled to it; the predicted labels are resampled back (nearest neighbour) onto the
input's voxel grid, and written with the input's affine and header (integer dtype, atomic write).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from medaudit.data import mri as tdata
from medaudit.errors import InputError
from medaudit.progress import make_progress
from medaudit.texture.train import load_model, sliding_window_predict


def _out_name(path: Path) -> str:
    return f"{tdata._stem(path)}_seg.nii.gz"


def segment_image(
    model: torch.nn.Module, meta: dict, image_path: str | Path
) -> tuple[np.ndarray, nib.Nifti1Image]:
    """Labels ``(X,Y,Z)`` uint8/int16 on the input grid, and the input image (for its header)."""
    image_path = Path(image_path)
    img = tdata.load_nifti(image_path)
    case = tdata.VolumeCase(tdata._stem(image_path), image_path)
    cfg = meta["config"]
    vol = tdata.load_case(case, label_set=meta["label_set"], spacing=cfg.spacing)
    pred = sliding_window_predict(model, vol["image"], cfg.roi, meta["device"], cfg.sw_batch_size, cfg.amp)
    shape = tuple(int(s) for s in img.shape[:3])
    if tuple(pred.shape) != shape:  # trained at another spacing: back onto the input grid
        import torchio as tio

        lab = tio.LabelMap(tensor=pred[None], affine=vol["affine"])
        ref = tio.ScalarImage(
            tensor=torch.zeros((1, *shape)), affine=np.asarray(img.affine, dtype=np.float64)
        )
        pred = tio.Resample(ref)(tio.Subject(label=lab))["label"].data[0]
    n = int(meta["n_classes"])
    dtype = np.uint8 if n <= 255 else np.int16
    return pred.numpy().astype(dtype), img


def predict_files(
    checkpoint: str | Path,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    device: str | torch.device | None = None,
    overwrite: bool = True,
    progress: bool | None = None,
) -> list[Path]:
    """Segment each input NIfTI; write ``<out_dir>/<name>_seg.nii.gz``; return the written paths."""
    if not inputs:
        raise InputError("no input volumes given")
    out_dir = Path(out_dir)
    model, meta = load_model(checkpoint, device)
    outs = []
    names = [_out_name(Path(p)) for p in inputs]
    if len(set(names)) != len(names):
        raise InputError("two inputs have the same file name; their outputs would collide")
    with make_progress(disable=None if progress is None else not progress) as prog:
        task = prog.add_task("predict", total=len(inputs))
        for p, name in zip(inputs, names, strict=True):
            target = out_dir / name
            if target.exists() and not overwrite:
                raise InputError(f"{target}: exists (pass overwrite=True)")
            labels, img = segment_image(model, meta, p)
            header = img.header.copy()
            outs.append(tdata.save_nifti(labels, np.asarray(img.affine), target, header=header))
            prog.advance(task)
    return outs
