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
from medaudit.texture.checkpoint import load_model
from medaudit.texture.unet import sliding_window_predict


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


def validate_inputs(inputs: Sequence[str | Path]) -> list[str]:
    """Check every input volume (readable NIfTI, real-valued, 3D, finite, not constant, non-singular
    affine, unique output name) before anything is written; return the output file names. Raises a
    one-line InputError."""
    if not inputs:
        raise InputError("no input volumes given")
    names: dict[str, Path] = {}
    for p in map(Path, inputs):
        name = _out_name(p)
        if name in names:
            raise InputError(f"{p}: same file name as {names[name]}; their outputs would collide")
        names[name] = p
        data = tdata._read_data(tdata.load_nifti(p), p)
        tdata.check_image_values(data, p)  # NaN, infinite, beyond float32, or constant: named
    return list(names)


def predict_files(
    checkpoint: str | Path,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    device: str | torch.device | None = None,
    overwrite: bool = True,
    progress: bool | None = None,
    force: bool = False,
    flag: str = "--out",
) -> list[Path]:
    """Segment each input NIfTI; write ``<out_dir>/<name>_seg.nii.gz``; return the written paths.

    Validation policy: the model and every input are checked first; the label maps are then written
    to a staging folder that replaces ``out_dir`` atomically (see :mod:`medaudit.outdir`: ``out_dir``
    must be absent, empty or an earlier ``predict`` output; ``force`` allows a foreign folder that holds
    no input). A bad input therefore leaves no output at all. ``overwrite=False`` refuses an existing
    ``out_dir``.
    """
    from medaudit.outdir import check_output, claim_output

    if not overwrite and Path(out_dir).exists():
        raise InputError(f"{flag} {out_dir}: exists (pass overwrite=True)")
    srcs = [checkpoint, *inputs]
    check_output(out_dir, "texture-predict", inputs=srcs, force=force, flag=flag)
    names = validate_inputs(inputs)
    model, meta = load_model(checkpoint, device)
    outs = []
    with (
        claim_output(out_dir, "texture-predict", inputs=srcs, force=force, flag=flag) as claim,
        make_progress(disable=None if progress is None else not progress) as prog,
    ):
        task = prog.add_task("predict", total=len(inputs))
        for p, name in zip(inputs, names, strict=True):
            labels, img = segment_image(model, meta, p)
            tdata.save_nifti(labels, np.asarray(img.affine), claim.stage / name, header=img.header.copy())
            outs.append(claim.path / name)
            prog.advance(task)
    return outs
