"""Tests for medaudit.data.images: DICOM display pipeline, Pillow formats, errors, resizing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from medaudit.data import assets
from medaudit.data.images import is_dicom, read_grayscale, resize_square
from medaudit.errors import InputError


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    signed: bool = False,
    **elements,
) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    for k, v in elements.items():
        setattr(ds, k, v)
    ds.PixelData = pixels.astype(np.int16 if signed else np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


RAMP = (np.arange(16 * 16).reshape(16, 16) * 16).astype(np.uint16)  # 0..4080, fits 12 bits


def test_real_radiograph_windowed_and_inverted():
    path = assets.pa_radiograph_dcm()
    img = read_grayscale(path)
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    assert img.dtype == np.float32 and img.shape == (ds.Rows, ds.Columns)
    assert 0.0 <= img.min() < img.max() <= 1.0
    # independent computation: linear window (PS3.3 C.11.2.1.2) over the 15-bit range, then inversion
    raw = ds.pixel_array.astype(np.float64)
    c, w = float(ds.WindowCenter), float(ds.WindowWidth)
    expected = 1.0 - np.clip((raw - (c - 0.5)) / (w - 1) + 0.5, 0, 1)
    np.testing.assert_allclose(img, expected, atol=1e-4)
    # anatomy: the mediastinum (centre) is brighter than both lung fields
    h, wd = img.shape
    centre = img[h // 2 - 100 : h // 2 + 100, wd // 2 - 50 : wd // 2 + 50].mean()
    left = img[h // 2 - 200 : h // 2, wd // 4 - 50 : wd // 4 + 50].mean()
    right = img[h // 2 - 200 : h // 2, 3 * wd // 4 - 50 : 3 * wd // 4 + 50].mean()
    assert centre > left + 0.1 and centre > right + 0.1


def test_monochrome1_is_inverted(tmp_path):
    a = read_grayscale(write_dicom(tmp_path / "m2.dcm", RAMP, "MONOCHROME2"))
    b = read_grayscale(write_dicom(tmp_path / "m1.dcm", RAMP, "MONOCHROME1"))
    np.testing.assert_allclose(a + b, 1.0, atol=1e-6)
    assert a[0, 0] == 0.0 and a[-1, -1] == 1.0  # no window: min-max


def test_window_center_width(tmp_path):
    img = read_grayscale(write_dicom(tmp_path / "w.dcm", RAMP, WindowCenter=1000, WindowWidth=400))
    flat, raw = img.ravel(), RAMP.ravel()
    assert np.all(flat[raw <= 800] == 0.0)
    assert np.all(flat[raw >= 1200] == 1.0)
    mid = flat[(raw > 800) & (raw < 1200)]
    assert mid.size > 0 and np.all(np.diff(mid) > 0)
    np.testing.assert_allclose(flat[raw == 992], (992 - 999.5) / 399 + 0.5, atol=1e-4)


def test_rescale_then_window_signed_ct(tmp_path):
    stored = np.array([[0, 1064, 2024, 3000]], dtype=np.int16)  # HU = stored - 1024
    img = read_grayscale(
        write_dicom(
            tmp_path / "ct.dcm",
            stored,
            signed=True,
            bits_stored=16,
            RescaleSlope=1,
            RescaleIntercept=-1024,
            WindowCenter=40,
            WindowWidth=400,
        )
    )
    hu = stored.astype(float) - 1024
    expected = np.clip((hu - 39.5) / 399 + 0.5, 0, 1)
    np.testing.assert_allclose(img, expected, atol=1e-4)


def test_voi_lut_sequence(tmp_path):
    pix = np.arange(256, dtype=np.uint16).reshape(16, 16)
    item = Dataset()
    item.LUTDescriptor = [256, 0, 16]
    item.LUTData = ((255 - np.arange(256)) * 257).astype(np.uint16).tobytes()  # OW: 16-bit words
    path = write_dicom(tmp_path / "lut.dcm", pix, bits_stored=8, VOILUTSequence=[item])
    np.testing.assert_allclose(read_grayscale(path), (255 - pix) / 255.0, atol=1e-6)


def test_pillow_formats(tmp_path):
    g8 = (np.arange(64 * 48) % 256).reshape(48, 64).astype(np.uint8)
    Image.fromarray(g8).save(tmp_path / "a.png")
    np.testing.assert_allclose(read_grayscale(tmp_path / "a.png"), g8 / 255.0, atol=1e-6)

    g16 = (np.arange(48 * 64) * 21).reshape(48, 64).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "b.png")
    np.testing.assert_allclose(read_grayscale(tmp_path / "b.png"), g16 / 65535.0, atol=1e-6)

    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 1] = 200
    Image.fromarray(rgb).save(tmp_path / "c.png")
    assert abs(float(read_grayscale(tmp_path / "c.png").mean()) - 0.587 * 200 / 255) < 0.01

    Image.fromarray(g8).save(tmp_path / "d.jpg", quality=95)
    out = read_grayscale(tmp_path / "d.jpg")
    assert out.shape == (48, 64) and out.dtype == np.float32 and np.abs(out - g8 / 255).mean() < 0.05
    assert not is_dicom(tmp_path / "d.jpg")


def test_dicom_detected_by_magic_without_suffix(tmp_path):
    p = write_dicom(tmp_path / "noext", RAMP)
    assert is_dicom(p)
    assert read_grayscale(p).shape == RAMP.shape


def test_bad_files_raise_input_error_naming_the_path(tmp_path):
    missing = tmp_path / "missing.png"
    with pytest.raises(InputError, match=r"missing\.png"):
        read_grayscale(missing)
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((64, 64), np.uint8) + 7).save(good)
    truncated = tmp_path / "trunc.png"
    truncated.write_bytes(good.read_bytes()[:60])
    with pytest.raises(InputError, match=r"trunc\.png"):
        read_grayscale(truncated)
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(InputError, match=r"text\.jpg"):
        read_grayscale(tmp_path / "text.jpg")
    (tmp_path / "bad.dcm").write_bytes(b"\x00" * 10)
    with pytest.raises(InputError, match=r"bad\.dcm"):
        read_grayscale(tmp_path / "bad.dcm")


def test_resize_square_modes():
    img = np.zeros((40, 20), np.float32)
    img[10:30, :] = 1.0  # the centred 20x20 square is all ones
    crop = resize_square(img, 10, "crop")
    assert crop.shape == (10, 10) and crop.dtype == np.float32
    np.testing.assert_allclose(crop, 1.0, atol=1e-6)
    pad = resize_square(img, 10, "pad")
    assert pad.shape == (10, 10)
    assert pad[:, 0].max() == 0.0 and pad[5, 5] == pytest.approx(1.0)  # padded columns stay 0
    stretch = resize_square(img, 8, "stretch")
    assert stretch.shape == (8, 8) and stretch[0, 0] == 0.0 and stretch[4, 4] == pytest.approx(1.0)
    assert stretch.flags.writeable
    with pytest.raises(InputError):
        resize_square(img, 8, "zoom")
    with pytest.raises(InputError):
        resize_square(np.zeros((2, 2, 2)), 8)
