"""Ninth sweep: a scan header that made nibabel print on every read, a finished training run trained
over with another config without a word, a scan beyond float32 called 'NaN or infinite', and
embedding columns that carried the answer into the slices. Each case failed before its fix."""

from __future__ import annotations

import gzip
import logging
import shutil
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from .conftest import make_table, run_sub, train_config, write_config
from .conftest import refused as _refused


def _negative_pixdims(src: Path, dst: Path) -> Path:
    """``src`` with the header's voxel sizes (pixdim[1..3]) made negative, the rest byte for byte."""
    raw = bytearray(gzip.decompress(src.read_bytes()))
    pixdim = list(struct.unpack("<8f", raw[76:108]))
    pixdim[1:4] = [-abs(v) for v in pixdim[1:4]]
    raw[76:108] = struct.pack("<8f", *pixdim)
    dst.write_bytes(gzip.compress(bytes(raw)))
    return dst


# -- 1. negative voxel sizes in a header -------------------------------------------------------------


def test_negative_pixdims_are_read_without_nibabel_noise(volumes, tmp_path, caplog):
    """nibabel logged 'pixdim[1,2,3] should be positive; setting to abs of pixdim values' on stderr
    each time medaudit read such a scan; its other messages are still logged."""
    from medaudit.data.mri import load_nifti

    scan = _negative_pixdims(volumes / "images" / "s0.nii.gz", tmp_path / "neg.nii.gz")
    with caplog.at_level(logging.WARNING, logger="nibabel.global"):
        img = load_nifti(scan)
        assert not caplog.records, [r.getMessage() for r in caplog.records]
        nib.load(scan)  # nibabel itself, outside medaudit's reads, still says it
        assert [r.getMessage() for r in caplog.records] == [
            "pixdim[1,2,3] should be positive; setting to abs of pixdim values"
        ]
    good = load_nifti(volumes / "images" / "s0.nii.gz")
    assert np.array_equal(img.affine, good.affine)
    assert np.array_equal(np.asanyarray(img.dataobj), np.asanyarray(good.dataobj))


def test_predict_on_negative_pixdims_is_quiet_and_unchanged(volumes, trained, tmp_path):
    scan = _negative_pixdims(volumes / "images" / "s0.nii.gz", tmp_path / "neg.nii.gz")
    model = trained / "model.pt"
    res = run_sub(["texture", "predict", "-m", model, scan, "--out", tmp_path / "a"])
    assert res.returncode == 0 and res.stderr == "", res.stderr
    ref = run_sub(
        ["texture", "predict", "-m", model, volumes / "images" / "s0.nii.gz", "--out", tmp_path / "b"]
    )
    assert ref.returncode == 0, ref.stderr
    a = nib.load(tmp_path / "a" / "neg_seg.nii.gz")
    b = nib.load(tmp_path / "b" / "s0_seg.nii.gz")
    assert np.array_equal(np.asanyarray(a.dataobj), np.asanyarray(b.dataobj))
    assert np.array_equal(a.affine, b.affine)


# -- 2. a finished run trained over with another config ------------------------------------------------


def test_finished_run_of_another_config_is_trained_over_with_a_warning(
    cli, volumes, trained, tmp_path, recwarn
):
    """A run folder holding a finished model.pt of another config was trained again and its model.pt
    replaced without a word; the same config still returns the finished model as is."""
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    same = write_config(tmp_path / "same.json", train_config(volumes))
    assert cli("texture", "train", "--config", same, "--out", run) == (0, "")
    assert not recwarn.list
    other = write_config(tmp_path / "other.json", train_config(volumes, iterations=4, lr=0.005))
    with pytest.warns(UserWarning) as warned:
        rc, err = cli("texture", "train", "--config", other, "--out", run)
    assert rc == 0 and err == "", err
    (message,) = [str(w.message) for w in warned]
    assert message.startswith(f"{run}: holds a finished run of another config"), message
    assert "(differs in: iterations, lr)" in message and "replaces its model.pt" in message, message


# -- 3. a scan beyond float32's range --------------------------------------------------------------------


def test_scan_beyond_float32_is_named_as_such(cli, volumes, trained, tmp_path):
    """A float64 scan holding 1e300 (finite) was refused as 'image contains NaN or infinite values'."""
    data = tmp_path / "data"
    shutil.copytree(volumes, data)
    img = nib.load(data / "images" / "s1.nii.gz")
    arr = np.asanyarray(img.dataobj).astype(np.float64)
    arr[3, 3, 3] = 1e300
    nib.save(nib.Nifti1Image(arr, img.affine), data / "images" / "s1.nii.gz")
    cfg = write_config(tmp_path / "t.json", train_config(data))
    train = ["texture", "train", "--config", cfg, "--out", tmp_path / "run"]
    line = _refused(cli, train, [tmp_path], "s1.nii.gz", "1e+300", "beyond the float32 range")
    assert "NaN" not in line and "non-finite" not in line, line
    predict = ["texture", "predict", "-m", trained / "model.pt", data / "images" / "s1.nii.gz"]
    line = _refused(cli, [*predict, "--out", tmp_path / "seg"], [tmp_path], "s1.nii.gz", "float32 range")
    assert "non-finite" not in line, line


# -- 4. embedding columns named as the answer ----------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "flags", "named"),
    [
        ("label", [], "label column (--label-col)"),
        ("prob", [], "probability column (--prob-col)"),
        ("pred", [], "prediction column (--pred-col)"),
        ("truth", ["--label-col", "truth"], "label column (--label-col)"),
        ("score", ["--prob-col", "score"], "probability column (--prob-col)"),
    ],
)
def test_embedding_column_named_as_the_answer_is_refused(cli, audit_args, tmp_path, column, flags, named):
    """``--embeddings report=E.parquet`` read every numeric column but 'id' as a feature: a 'label' or
    'prob' column (or the table's --label-col / --prob-col) put the answer into the slices, exit 0."""
    table = make_table(tmp_path / "data")
    df = pd.read_csv(table).rename(columns={"label": "truth"} if column == "truth" else {})
    df = df.rename(columns={"prob": "score"} if column == "score" else {})
    df.to_csv(table, index=False)
    emb = pd.DataFrame(np.random.default_rng(0).normal(size=(len(df), 4)), columns=["f0", "f1", "f2", "f3"])
    emb.insert(0, "id", df["id"])
    emb[column] = df["truth" if column == "truth" else "label"].astype(float)
    e = tmp_path / "data" / "emb.parquet"
    emb.to_parquet(e)
    args = audit_args(table, tmp_path / "out", "--embeddings", f"report={e}", *flags)
    _refused(cli, args, [tmp_path], "emb.parquet", f"column '{column}'", named)
