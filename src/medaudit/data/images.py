"""Read chest radiographs (DICOM, JPEG, PNG) as float32 grayscale in [0, 1], and resize them square.

DICOM follows the display pipeline of PS3.3 C.11: stored values -> Modality LUT / rescale -> VOI LUT or
Window Center/Width -> [0, 1], inverted for MONOCHROME1 so that higher always means brighter.
JPEG and PNG (8- and 16-bit) are read with Pillow.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np

from medaudit.errors import InputError
from medaudit.io import missing_reason

DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
ResizeMode = Literal["crop", "pad", "stretch"]

#: Largest image (width x height, all frames of a DICOM counted) that medaudit decodes: 64 megapixels,
#: twice the area of the largest digital chest radiograph detectors (~43 x 43 cm at 0.1 mm ~ 18.5 MP)
#: with room to spare. A file that declares more is refused before its pixels are decoded (a
#: "decompression bomb": a few KB of PNG can declare 10^8 pixels). Override with the environment
#: variable ``MEDAUDIT_MAX_IMAGE_PIXELS``.
MAX_IMAGE_PIXELS = 64_000_000


def max_image_pixels() -> int:
    """The pixel limit in force: ``$MEDAUDIT_MAX_IMAGE_PIXELS`` or :data:`MAX_IMAGE_PIXELS`."""
    raw = os.environ.get("MEDAUDIT_MAX_IMAGE_PIXELS", "").strip()
    if not raw:
        return MAX_IMAGE_PIXELS
    try:
        value = int(raw)
    except ValueError:
        raise InputError(f"MEDAUDIT_MAX_IMAGE_PIXELS={raw!r}: expected a positive integer") from None
    if value < 1:
        raise InputError(f"MEDAUDIT_MAX_IMAGE_PIXELS={raw!r}: expected a positive integer")
    return value


def declared_pixels(path: str | os.PathLike[str]) -> int:
    """Pixels an image file declares in its header (DICOM: rows x columns x frames), read without
    decoding the pixel data. Raises InputError if the header cannot be read or the file is empty."""
    p = Path(path)
    if p.is_file() and p.stat().st_size == 0:  # Pillow's line would be 'cannot identify image file'
        raise InputError(f"{p}: empty file (0 bytes)")
    try:
        if is_dicom(p):
            ds = _dcmread(p, stop_before_pixels=True)
            frames = int(ds.get("NumberOfFrames", 1) or 1)
            return int(ds.get("Rows", 0) or 0) * int(ds.get("Columns", 0) or 0) * max(frames, 1)
        from PIL import Image

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL's own bomb warning: we apply our limit instead
            with Image.open(p) as im:
                w, h = im.size
                return int(w) * int(h) * max(int(getattr(im, "n_frames", 1) or 1), 1)
    except Exception as exc:  # pydicom / Pillow raise many types for corrupt headers
        from PIL import Image

        if isinstance(exc, Image.DecompressionBombError):  # over PIL's own hard limit: a lower bound
            return 2 * int(Image.MAX_IMAGE_PIXELS or 0) + 1
        raise InputError(f"{p}: cannot read image header ({_why(exc, p)})") from None


def _why(exc: BaseException, path: Path) -> str:
    """``Type: message`` of a reader's error, without the path it repeats (the line names it first)."""
    msg = str(exc)
    for form in (repr(str(path)), f'"{path}"', str(path)):
        msg = msg.replace(form, "")
    msg = " ".join(msg.split()).strip(" :,")
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def check_pixel_limit(path: str | os.PathLike[str]) -> None:
    """Raise a one-line InputError if the image declares more pixels than :func:`max_image_pixels`."""
    n, limit = declared_pixels(path), max_image_pixels()
    if n > limit:
        raise InputError(
            f"{path}: image declares {n:,} pixels, over the limit of {limit:,} "
            "(a decompression bomb or an unusually large image; raise MEDAUDIT_MAX_IMAGE_PIXELS to allow it)"
        )


def is_dicom(path: str | os.PathLike[str]) -> bool:
    """True if ``path`` has a DICOM suffix or the ``DICM`` magic at byte 128."""
    p = Path(path)
    if p.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(p, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def read_grayscale(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as a 2-D float32 array in [0, 1] (higher = brighter).

    DICOM: Modality LUT / rescale, then the VOI LUT sequence or Window Center/Width when present
    (otherwise, or with a Window Width of 0 or less, min-max), MONOCHROME1 inverted; multi-frame files
    give their first frame, colour files their luminance. JPEG/PNG/other Pillow formats: 8-bit divided
    by 255, 16-bit by 65535, colour converted to luminance.

    Raises:
        InputError: the file is missing, unreadable, empty or corrupt (the message names the path).
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: {missing_reason(p, 'image file')}")
    try:
        check_pixel_limit(p)
        img = _read_dicom(p) if is_dicom(p) else _read_pillow(p)
    except InputError:
        raise
    except Exception as exc:  # pydicom / Pillow raise many different types for corrupt files
        raise InputError(f"{p}: cannot read image ({_why(exc, p)})") from exc
    if img.ndim != 2 or img.size == 0:
        raise InputError(f"{p}: expected a 2-D image, got shape {img.shape}")
    if not np.isfinite(img).all():
        raise InputError(f"{p}: image contains non-finite values")
    return np.clip(img, 0.0, 1.0).astype(np.float32, copy=False)


def _minmax(arr: np.ndarray) -> np.ndarray:
    arr = arr.astype(np.float64, copy=False)
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.float32)
    return ((arr - lo) / (hi - lo)).astype(np.float32)


def _window_output_range(ds) -> tuple[float, float]:
    """Output range of pydicom's ``apply_windowing`` (mirrors PS3.3 C.11.2.1.2 as pydicom implements it)."""
    if ds.get("ModalityLUTSequence"):
        bits = int(ds.ModalityLUTSequence[0].LUTDescriptor[2])
        return 0.0, float(2**bits - 1)
    bits = int(ds.BitsStored)
    if int(ds.get("PixelRepresentation", 0)) == 0:
        y_min, y_max = 0.0, float(2**bits - 1)
    else:
        y_min, y_max = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    slope = ds.get("RescaleSlope", None)
    intercept = ds.get("RescaleIntercept", None)
    if slope is not None and intercept is not None:
        y_min, y_max = y_min * float(slope) + float(intercept), y_max * float(slope) + float(intercept)
    return y_min, y_max


#: the VOI LUT Functions of PS3.3 C.11.2.1.3 (pydicom applies these and refuses any other)
_VOI_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")


def _usable_window(ds) -> bool:
    """Whether the file has a Window Center and a first Window Width that the VOI function can use:
    at least 1 for LINEAR (the default), above 0 otherwise. Real files carry a width of 0 or none;
    those are shown min-max scaled, as a file without a window."""
    if ds.get("WindowCenter") is None or ds.get("WindowWidth") is None:
        return False
    try:
        width, center = (
            float(elem.value[0] if elem.VM > 1 else elem.value)
            for elem in (ds["WindowWidth"], ds["WindowCenter"])
        )
    except (TypeError, ValueError, IndexError):  # a center such as 'abc' (TypeError in pydicom)
        return False
    func = str(ds.get("VOILUTFunction", "LINEAR")).strip().upper()
    if func not in _VOI_FUNCTIONS or not math.isfinite(center):  # pydicom refuses other functions
        return False
    return math.isfinite(width) and (width >= 1 if func == "LINEAR" else width > 0)


def _dcmread(p: Path, stop_before_pixels: bool = False) -> Any:
    """pydicom's dataset of ``p``. A file named as DICOM without the 128-byte preamble and the meta
    header (an ACR-NEMA file, or a bare dataset written by an older tool) is read as well, and a
    missing Transfer Syntax UID is taken from the encoding the dataset was read in (pydicom could
    not decode its pixels without one)."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    try:
        ds = pydicom.dcmread(p, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=stop_before_pixels, force=True)
        except Exception:
            ds = None
        if ds is None or "Rows" not in ds:  # pydicom's line ends 'Use force=True', which users cannot
            raise InvalidDicomError(
                "not a DICOM file (no 'DICM' prefix or meta header, nor an image dataset)"
            ) from None
    if "TransferSyntaxUID" not in ds.file_meta:
        implicit, little = ds.original_encoding
        if implicit is not None:
            ds.file_meta.TransferSyntaxUID = (
                ImplicitVRLittleEndian
                if implicit
                else ExplicitVRLittleEndian
                if little
                else ExplicitVRBigEndian
            )
    return ds


def _read_dicom(p: Path) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = _dcmread(p)
    except Exception as exc:
        raise InputError(f"{p}: not a readable DICOM file ({_why(exc, p)})") from exc
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise InputError(f"{p}: DICOM file has no pixel data")
    arr = ds.pixel_array
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if frames > 1:
        arr = arr[0]
    if samples > 1:
        if photometric.startswith("YBR"):
            from pydicom.pixels import convert_color_space

            arr = convert_color_space(arr, photometric, "RGB")
        rgb = arr.astype(np.float64)
        maxval = float(2 ** int(ds.get("BitsStored", 8)) - 1)
        return (rgb @ np.array([0.299, 0.587, 0.114]) / maxval).astype(np.float32)

    arr = apply_modality_lut(arr, ds)
    has_lut = bool(ds.get("VOILUTSequence")) and all(
        ds.VOILUTSequence[0].get(k) is not None for k in ("LUTDescriptor", "LUTData")
    )
    has_window = _usable_window(ds)
    if has_lut:
        out = apply_voi_lut(arr, ds)
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        img = (out.astype(np.float64) / float(2**bits - 1)).astype(np.float32)
    elif has_window:
        out = apply_voi_lut(arr.astype(np.float64), ds)
        y_min, y_max = _window_output_range(ds)
        img = ((out - y_min) / (y_max - y_min)).astype(np.float32)
    else:
        img = _minmax(arr)
    img = np.clip(img, 0.0, 1.0)
    if photometric == "MONOCHROME1":
        img = 1.0 - img
    return img.astype(np.float32)


def _read_pillow(p: Path) -> np.ndarray:
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit is checked before
        im = Image.open(p)
        im.load()
    with im:
        mode = im.mode
        if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
            return (np.asarray(im, dtype=np.float64) / 65535.0).astype(np.float32)
        if mode == "I":
            arr = np.asarray(im, dtype=np.float64)
            if arr.min() >= 0 and arr.max() <= 65535 and im.format == "PNG":
                return (arr / 65535.0).astype(np.float32)
            return _minmax(arr)
        if mode == "F":
            return _minmax(np.asarray(im, dtype=np.float64))
        if mode != "L":
            if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA").convert("RGB")
            im = im.convert("L")
        return (np.asarray(im, dtype=np.float32) / 255.0).astype(np.float32)


def resize_square(img: np.ndarray, size: int, mode: ResizeMode = "crop") -> np.ndarray:
    """Resize a 2-D image to ``size x size`` (bilinear, antialiased) as float32.

    ``mode``: ``"crop"`` takes the centred square first (as torchxrayvision does), ``"pad"`` pads the
    short side with zeros (keeps the whole field of view), ``"stretch"`` ignores the aspect ratio.
    """
    from PIL import Image

    if img.ndim != 2:
        raise InputError(f"resize_square expects a 2-D image, got shape {img.shape}")
    if size < 1:
        raise InputError(f"resize_square: size must be positive, got {size}")
    arr = np.asarray(img, dtype=np.float32)
    h, w = arr.shape
    if mode == "crop":
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        arr = arr[top : top + s, left : left + s]
    elif mode == "pad":
        s = max(h, w)
        out = np.zeros((s, s), dtype=np.float32)
        top, left = (s - h) // 2, (s - w) // 2
        out[top : top + h, left : left + w] = arr
        arr = out
    elif mode != "stretch":
        raise InputError(f"resize_square: unknown mode {mode!r} (expected crop, pad or stretch)")
    if arr.shape == (size, size):
        return np.ascontiguousarray(arr)
    pil = Image.fromarray(np.ascontiguousarray(arr))
    return np.array(pil.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)
