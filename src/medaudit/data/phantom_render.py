"""Renderer of the phantom chest radiographs (numpy / scipy only, ~2-5 ms per 128 px image).

Anatomy comes from real data: the PA chest radiograph shipped by pydicom-data (``RG1_UNCR.dcm``: ribs,
spine, mediastinum, diaphragm) and the 500-odd hand-drawn lung masks of the v7labs set bundled with
torchxrayvision (per-case lung-field shape). Everything else is simulated: a smooth random deformation,
scale, rotation, exposure (gamma, contrast), blur and noise, and the findings a report describes:

* ``cardiomegaly``: the cardiac silhouette drawn wider (cardiothoracic ratio ~0.55-0.65 vs 0.40-0.48);
* ``pleural_effusion``: fluid density filling a lung base with a meniscus, blunting the costophrenic angle;
* ``opacity`` / ``atelectasis`` / ``edema`` / ``nodule`` / ``pneumothorax`` / ``emphysema``: blobs, plate-like
  bands, perihilar haze, a small dense nodule, an apical lucency without markings, darker lungs;
* ``support_devices``: metal-bright hardware of the kinds the report names (pacemaker box and leads,
  central lines / PICC, endotracheal and nasogastric tubes, sternotomy wires and clips, ports);
* ``AP`` views: magnified heart, shallower inspiration, a bright "portable" side marker, noisier exposure;
* ``LATERAL`` views: a distinct lateral geometry (spine posterior, sternum anterior, one overlapped lung
  field, heart anterior-inferior, posterior costophrenic sulcus).

Severity follows the report's wording (small/mild vs large/severe); by design about 15% of findings are
rendered faint, so the image carries real but imperfect signal.
"""

from __future__ import annotations

import functools
import io
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from medaudit.errors import InputError

# The canonical frame: where the lung fields sit in every frontal image (fractions of the side).
_LUNG_BOX = (0.10, 0.76, 0.12, 0.88)  # top, bottom, left, right


def _resize(a: np.ndarray, shape: tuple[int, int], order: int = 1) -> np.ndarray:
    f = (shape[0] / a.shape[0], shape[1] / a.shape[1])
    out = ndimage.zoom(a, f, order=order, prefilter=False)
    return out[: shape[0], : shape[1]]


@functools.lru_cache(maxsize=4)
def base_radiograph(size: int) -> np.ndarray:
    """The real PA radiograph, MONOCHROME2 (bone bright), cropped so its lungs fill the canonical box."""
    import pydicom

    from medaudit.data.assets import pa_radiograph_dcm

    ds = pydicom.dcmread(pa_radiograph_dcm())
    a = ds.pixel_array.astype(np.float32)
    if str(getattr(ds, "PhotometricInterpretation", "")) == "MONOCHROME1":
        a = a.max() - a
    lo, hi = np.percentile(a, [1, 99])
    a = np.clip((a - lo) / (hi - lo), 0, 1)
    # In RG1_UNCR the lungs span rows ~0.07-0.75 and columns ~0.10-0.92 of the film; map to _LUNG_BOX.
    h, w = a.shape
    src = (0.07 * h, 0.75 * h, 0.10 * w, 0.92 * w)
    t, b, left, r = _LUNG_BOX
    sy = (src[1] - src[0]) / ((b - t) * size)
    sx = (src[3] - src[2]) / ((r - left) * size)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    coords = np.stack([src[0] + (yy - t * size) * sy, src[2] + (xx - left * size) * sx])
    small = ndimage.gaussian_filter(a, sigma=max(0.5, 0.4 * min(sy, sx)))
    return ndimage.map_coordinates(small, coords, order=1, mode="nearest").astype(np.float32)


@functools.lru_cache(maxsize=4)
def lung_mask_bank(size: int) -> np.ndarray:
    """Real lung masks (v7labs), binarised, cropped to their lungs and resampled into the canonical box."""
    from PIL import Image

    from medaudit.data.assets import lung_masks_zip

    t, b, left, r = _LUNG_BOX
    hh, ww = round((b - t) * size), round((r - left) * size)
    out = []
    with zipfile.ZipFile(lung_masks_zip()) as z:
        for name in sorted(z.namelist()):
            if name.endswith("/"):
                continue
            try:
                im = Image.open(io.BytesIO(z.read(name)))
                im.draft("L", (256, 256))  # JPEG: decode at reduced scale
                im = im.convert("L")
                if max(im.size) > 320:
                    im.thumbnail((320, 320), Image.Resampling.NEAREST)
                m = np.asarray(im) > 127
            except Exception:
                continue
            if m.mean() < 0.05:
                continue
            ys, xs = np.nonzero(m)
            crop = m[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
            if crop.shape[0] < 20 or crop.shape[1] < 20:
                continue
            small = Image.fromarray(crop.astype(np.uint8) * 255).resize((ww, hh), Image.Resampling.BILINEAR)
            full = np.zeros((size, size), np.float32)
            full[round(t * size) : round(t * size) + hh, round(left * size) : round(left * size) + ww] = (
                np.asarray(small) > 127
            )
            out.append(full)
    if not out:
        raise InputError(f"{lung_masks_zip()}: no usable lung masks")
    return np.stack(out)


def _blob(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, sy: float, sx: float) -> np.ndarray:
    return np.exp(-0.5 * (((yy - cy) / sy) ** 2 + ((xx - cx) / sx) ** 2)).astype(np.float32)


def _polyline(img: np.ndarray, pts: np.ndarray, value: float, width: float = 0.6) -> None:
    """Draw a smooth anti-aliased curve through control points (max-blend) into ``img``."""
    n = img.shape[0]
    t = np.linspace(0, 1, len(pts))
    tt = np.linspace(0, 1, 6 * n)
    ys = np.interp(tt, t, pts[:, 0])
    xs = np.interp(tt, t, pts[:, 1])
    ys = ndimage.gaussian_filter1d(ys, 8, mode="nearest")
    xs = ndimage.gaussian_filter1d(xs, 8, mode="nearest")
    canvas = np.zeros_like(img)
    iy, ix = np.clip(np.round(ys).astype(int), 0, n - 1), np.clip(np.round(xs).astype(int), 0, n - 1)
    canvas[iy, ix] = 1.0
    canvas = ndimage.gaussian_filter(canvas, width)
    canvas /= max(canvas.max(), 1e-6)
    np.maximum(img, value * canvas, out=img)


def _side_cols(side: str, rng: np.random.Generator) -> list[str]:
    if side in ("left", "right"):
        return [side]
    if side == "both":
        return ["left", "right"]
    return [rng.choice(["left", "right"])]


def _amp(severity: int, rng: np.random.Generator) -> float:
    base = (0.55, 0.8, 1.0)[int(np.clip(severity, 0, 2))]
    faint = 0.3 if rng.random() < 0.15 else 1.0
    return base * faint * rng.uniform(0.8, 1.2)


@dataclass
class _Canvas:
    """What every rendering step of one case shares (the random generator is consumed in step order)."""

    case: Mapping[str, Any]
    rng: np.random.Generator
    n: int
    s: float
    yy: np.ndarray
    xx: np.ndarray
    box: tuple[float, float, float, float]
    mid: float
    mask: np.ndarray
    base: np.ndarray
    heart_ctr: float

    def flag(self, key: str) -> int:
        v = self.case.get(key, 0)
        try:
            return int(v) if v == v else 0
        except (TypeError, ValueError):
            return 0


def render_case(case: Mapping[str, Any], size: int = 128, seed: int = 0) -> np.ndarray:
    """Render one phantom radiograph (``uint8``, ``size`` x ``size``) for a cohort row.

    ``case`` holds the label columns (``cardiomegaly`` ...), ``view_position`` (PA / AP / LATERAL) and the
    report hints from :func:`medaudit.data.cxr.openi.finding_details`; ``case['render_seed']`` (int) makes
    each image reproducible.
    """
    rng = np.random.default_rng([int(seed), int(case.get("render_seed", 0))])
    view = str(case.get("view_position", "PA")).upper()
    lateral, ap = view == "LATERAL", view == "AP"
    c = _canvas(case, rng, size, ap)
    img = _lateral_view(c) if lateral else _frontal_view(c)
    if c.flag("support_devices"):
        img = _devices(c, img, lateral)
    img = _geometry(c, img, ap)
    if ap:
        _ap_marker(c, img)
    return _exposure(c, img, ap)


def _canvas(case: Mapping[str, Any], rng: np.random.Generator, n: int, ap: bool) -> _Canvas:
    s = n / 128.0
    masks = lung_mask_bank(n)
    mask = masks[int(rng.integers(len(masks)))]
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    t, b, left, r = (v * n for v in _LUNG_BOX)
    c = _Canvas(case, rng, n, s, yy, xx, (t, b, left, r), 0.5 * (left + r), mask, base_radiograph(n), 0.0)
    heart_ctr = rng.uniform(0.40, 0.48)
    if c.flag("cardiomegaly"):
        heart_ctr = rng.uniform(0.54, 0.60) + 0.03 * int(case.get("cardiomegaly_severity", 1) or 0)
    if ap:
        heart_ctr *= 1.12  # AP magnification of the anterior heart
    c.heart_ctr = heart_ctr
    return c


def _frontal_view(c: _Canvas) -> np.ndarray:
    """PA/AP geometry: lungs, cardiac silhouette and the frontal findings."""
    n, s, yy, xx, rng, hints, g = c.n, c.s, c.yy, c.xx, c.rng, c.case, c.flag
    t, b, left, r = c.box
    img, lung_s, lungmap = _frontal_anatomy(c)
    lcx = {"right": left + 0.22 * (r - left), "left": left + 0.78 * (r - left)}  # image columns
    if g("pleural_effusion"):
        img = _frontal_effusion(c, img, lcx)
    if g("opacity"):
        img = _frontal_opacity(c, img, lcx, lungmap)
    if g("atelectasis"):
        img = _frontal_atelectasis(c, img, lcx, lungmap)
    if g("edema"):
        a = _amp(1, rng)
        for cx in (c.mid - 0.13 * n, c.mid + 0.13 * n):
            img = img + 0.18 * a * _blob(yy, xx, t + 0.45 * (b - t), cx, 0.16 * n, 0.09 * n) * lungmap
    if g("nodule"):
        cy, cx = rng.uniform(t + 0.15 * (b - t), b - 0.3 * (b - t)), lcx[rng.choice(["left", "right"])]
        img = img + 0.4 * _amp(1, rng) * _blob(yy, xx, cy, cx + rng.uniform(-6, 6) * s, 1.8 * s, 1.8 * s)
    if g("emphysema"):
        img = img - 0.08 * lungmap
    if g("pneumothorax"):
        side = _side_cols(str(hints.get("pneumothorax_side", "")), rng)[0]
        cx = left + 0.05 * n if side == "right" else r - 0.05 * n
        ptx = _blob(yy, xx, t + 0.12 * (b - t), cx, 0.12 * n, 0.06 * n) * lung_s
        img = img * (1 - 0.5 * ptx) + 0.0
    return img


def _frontal_anatomy(c: _Canvas) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The frontal film before findings: the radiograph darkened over the smoothed lung mask and the
    cardiac silhouette (an ellipse left of centre, patient's left = image right). Returns the image, the
    smoothed lung mask and the lung map outside the heart."""
    n, s, yy, xx, mid = c.n, c.s, c.yy, c.xx, c.mid
    _, b, left, r = c.box
    lung_s = ndimage.gaussian_filter(c.mask, 1.5 * s)
    img = c.base * (1.0 - 0.30 * lung_s) + 0.08 * (1.0 - lung_s)
    hw = 0.5 * c.heart_ctr * (r - left)
    hcy, hcx = b - 0.16 * n, mid + 0.06 * n
    heart = ((yy - hcy) / (0.14 * n)) ** 2 + ((xx - hcx) / hw) ** 2 < 1.0
    heart = ndimage.gaussian_filter(heart.astype(np.float32), 1.2 * s)
    img = np.maximum(img, 0.62 * heart + img * (1 - heart))
    return img, lung_s, lung_s * (1 - heart)


def _frontal_effusion(c: _Canvas, img: np.ndarray, lcx: dict[str, float]) -> np.ndarray:
    """Pleural effusion: fluid filling the base of the named side(s), with a meniscus toward the wall."""
    s, yy, xx, rng, hints, mid = c.s, c.yy, c.xx, c.rng, c.case, c.mid
    t, b, left, r = c.box
    a = _amp(int(hints.get("pleural_effusion_severity", 1) or 0), rng)
    for side in _side_cols(str(hints.get("pleural_effusion_side", "")), rng):
        cx = lcx[side]
        height = (0.10 + 0.10 * a) * (b - t)
        outer = left if side == "right" else r
        level = b - height - 0.6 * height * (np.abs(xx - cx) / max(abs(outer - cx), 1)) ** 2
        fluid = 1.0 / (1.0 + np.exp(-(yy - level) / (1.2 * s)))
        half = (xx < mid) if side == "right" else (xx >= mid)
        reg = fluid * half * ndimage.binary_dilation(c.mask > 0.5, iterations=max(1, round(2 * s)))
        img = img + 0.45 * a * ndimage.gaussian_filter(reg.astype(np.float32), 1.0 * s)
    return img


def _frontal_opacity(c: _Canvas, img: np.ndarray, lcx: dict[str, float], lungmap: np.ndarray) -> np.ndarray:
    """Opacity: one or two blobs per named side, in the upper or the lower lung zone."""
    n, s, yy, xx, rng, hints = c.n, c.s, c.yy, c.xx, c.rng, c.case
    t, b, _, _ = c.box
    a = _amp(int(hints.get("opacity_severity", 1) or 0), rng)
    upper = int(hints.get("opacity_upper", 0) or 0)
    for side in _side_cols(str(hints.get("opacity_side", "")), rng):
        for _ in range(int(rng.integers(1, 3))):
            cy = t + (b - t) * (rng.uniform(0.15, 0.4) if upper else rng.uniform(0.5, 0.85))
            cx = lcx[side] + rng.uniform(-0.08, 0.08) * n
            sig = rng.uniform(4, 9) * s
            img = img + 0.35 * a * _blob(yy, xx, cy, cx, sig, sig * rng.uniform(0.8, 1.4)) * lungmap
    return img


def _frontal_atelectasis(
    c: _Canvas, img: np.ndarray, lcx: dict[str, float], lungmap: np.ndarray
) -> np.ndarray:
    """Atelectasis: a tilted plate-like band in the lower zone of each named side."""
    n, s, yy, xx, rng, hints = c.n, c.s, c.yy, c.xx, c.rng, c.case
    t, b, _, _ = c.box
    a = _amp(int(hints.get("atelectasis_severity", 1) or 0), rng)
    for side in _side_cols(str(hints.get("atelectasis_side", "")), rng):
        cy = t + (b - t) * rng.uniform(0.65, 0.85)
        ang = rng.uniform(-0.25, 0.25)
        d = (yy - cy) - ang * (xx - lcx[side])
        band = np.exp(-0.5 * (d / (1.2 * s)) ** 2) * (np.abs(xx - lcx[side]) < 0.12 * n)
        img = img + 0.3 * a * ndimage.gaussian_filter(band.astype(np.float32), 0.8 * s) * lungmap
    return img


def _lateral_view(c: _Canvas) -> np.ndarray:
    """Lateral geometry: body ellipse, spine posterior (image right), sternum anterior, one lung field."""
    n, s, yy, xx, rng, hints, g, mask, base, heart_ctr = (
        c.n,
        c.s,
        c.yy,
        c.xx,
        c.rng,
        c.case,
        c.flag,
        c.mask,
        c.base,
        c.heart_ctr,
    )
    body = ((yy - 0.5 * n) / (0.52 * n)) ** 2 + ((xx - 0.5 * n) / (0.40 * n)) ** 2 < 1.0
    img = 0.35 * ndimage.gaussian_filter(body.astype(np.float32), 2 * s)
    lm = np.fliplr(mask) if rng.random() < 0.5 else mask
    half = lm[:, : n // 2] if lm[:, : n // 2].sum() > 0 else lm
    field = _resize(np.maximum(half, np.fliplr(half)), (n, n // 2)) > 0.5
    lungfield = np.zeros((n, n), np.float32)
    c0 = int(0.22 * n)
    lungfield[:, c0 : c0 + field.shape[1]] = field[:, : n - c0]
    lungfield = ndimage.gaussian_filter(lungfield, 1.5 * s)
    ribs = np.fliplr(base).T if rng.random() < 0.5 else base
    img = img + 0.35 * ribs * body - 0.22 * lungfield
    spine = np.exp(-0.5 * ((xx - 0.74 * n - 0.04 * (yy - 0.5 * n)) / (0.045 * n)) ** 2) * (yy > 0.05 * n)
    img = img + 0.45 * spine * body
    sternum = np.exp(-0.5 * ((xx - 0.16 * n) / (0.012 * n)) ** 2) * (yy > 0.2 * n) * (yy < 0.6 * n)
    img = img + 0.25 * sternum
    hw = 0.75 * heart_ctr * 0.5 * n * 0.6
    heart = ((yy - 0.62 * n) / (0.16 * n)) ** 2 + ((xx - (0.22 * n + hw)) / hw) ** 2 < 1.0
    heart = ndimage.gaussian_filter(heart.astype(np.float32), 1.2 * s)
    img = np.maximum(img, 0.55 * heart + img * (1 - heart))
    dome = yy > (0.80 * n + 0.004 * ((xx - 0.5 * n) ** 2) / s)
    img = img + 0.25 * ndimage.gaussian_filter(dome.astype(np.float32) * body, 1.5 * s)
    if g("pleural_effusion"):
        a = _amp(int(hints.get("pleural_effusion_severity", 1) or 0), rng)
        sulcus = _blob(yy, xx, 0.80 * n, 0.68 * n, (0.05 + 0.05 * a) * n, 0.10 * n)
        img = img + 0.45 * a * sulcus
    if g("opacity") or g("atelectasis") or g("edema"):
        a = _amp(1, rng)
        cy, cx = rng.uniform(0.3, 0.7) * n, rng.uniform(0.35, 0.6) * n
        img = img + 0.3 * a * _blob(yy, xx, cy, cx, 7 * s, 9 * s) * lungfield
    return img


def _devices(c: _Canvas, img: np.ndarray, lateral: bool) -> np.ndarray:
    """Support devices: metal-bright hardware (pacemaker and leads, central lines, tubes, sternotomy
    wires and clips, ports)."""
    n, s, yy, xx, rng, hints, mid = c.n, c.s, c.yy, c.xx, c.rng, c.case, c.mid
    kinds = [k for k in str(hints.get("device_kinds", "") or "").split("|") if k] or [
        str(rng.choice(["line", "pacemaker", "tube"]))
    ]
    metal = np.zeros((n, n), np.float32)
    for kind in kinds:
        if kind == "pacemaker":
            if lateral:
                py, px = 0.22 * n, 0.2 * n
            else:
                py, px = rng.uniform(0.12, 0.2) * n, rng.uniform(0.68, 0.8) * n
            hh, ww = rng.uniform(3.5, 5) * s, rng.uniform(5, 7) * s
            box = (np.abs(yy - py) < hh) & (np.abs(xx - px) < ww)
            metal = np.maximum(metal, ndimage.gaussian_filter(box.astype(np.float32), 0.5 * s))
            for _ in range(int(rng.integers(1, 3))):
                end = (
                    rng.uniform(0.58, 0.72) * n,
                    (mid if not lateral else 0.35 * n) + rng.uniform(-6, 8) * s,
                )
                pts = np.array([[py, px], [py + 0.05 * n, px - 0.15 * n], [0.40 * n, mid - 0.02 * n], end])
                _polyline(metal, pts + rng.normal(0, 1.5 * s, pts.shape), 0.95, 0.6 * s)
        elif kind == "line":
            from_right = rng.random() < 0.5
            x0 = 0.04 * n if from_right else 0.96 * n
            x1 = mid - 0.03 * n
            pts = np.array(
                [[0.22 * n, x0], [0.20 * n, 0.5 * (x0 + x1)], [0.27 * n, x1 + 0.04 * n], [0.42 * n, x1]]
            )
            _polyline(metal, pts + rng.normal(0, 1.5 * s, pts.shape), 0.85, 0.55 * s)
        elif kind == "tube":
            x0 = mid + rng.uniform(-2, 2) * s
            pts = np.array([[0.0, x0], [0.15 * n, x0], [0.30 * n, x0 + 1 * s]])
            _polyline(metal, pts, 0.8, 0.7 * s)
            if rng.random() < 0.5:  # nasogastric tube down to the stomach
                pts = np.array([[0.0, x0 + 3 * s], [0.5 * n, x0 + 4 * s], [0.85 * n, mid + 0.15 * n]])
                _polyline(metal, pts, 0.75, 0.5 * s)
        elif kind == "wires":
            _sternal_wires(c, metal, lateral)
        elif kind == "port":
            _port(c, metal)
    img = np.maximum(img, metal * rng.uniform(0.85, 1.05) + img * (1 - metal) * 0.3)
    return img


def _sternal_wires(c: _Canvas, metal: np.ndarray, lateral: bool) -> None:
    """Median sternotomy wires (a column of small loops over the sternum) and a few surgical clips."""
    n, s, yy, xx, rng, mid = c.n, c.s, c.yy, c.xx, c.rng, c.mid
    x0 = 0.2 * n if lateral else mid + rng.uniform(-1.5, 1.5) * s
    for k in range(int(rng.integers(4, 7))):
        cy = (0.24 + 0.065 * k) * n + rng.normal(0, 0.5 * s)
        ring = np.abs(np.hypot((yy - cy) / (1.8 * s), (xx - x0) / (3.0 * s)) - 1.0) < 0.45
        metal[ring] = 1.0
    # clips: bright dashes along the heart borders and the hila, where the lungs give them contrast
    # (the wires themselves project over the spine and mediastinum and barely show on a frontal film)
    for _ in range(int(rng.integers(5, 10))):
        side = 1.0 if rng.random() < 0.5 else -1.0
        cy, cx = rng.uniform(0.25, 0.65) * n, x0 + side * rng.uniform(0.1, 0.22) * n
        ang = rng.uniform(0, np.pi)
        pts = np.array([[cy, cx], [cy + 4.0 * s * np.sin(ang), cx + 4.0 * s * np.cos(ang)]])
        _polyline(metal, pts, 1.0, 0.8 * s)


def _port(c: _Canvas, metal: np.ndarray) -> None:
    """A chest port: a round reservoir below the clavicle with its catheter to the cava."""
    n, s, yy, xx, rng, mid = c.n, c.s, c.yy, c.xx, c.rng, c.mid
    right = rng.random() < 0.5
    py, px = rng.uniform(0.2, 0.27) * n, (0.25 if right else 0.75) * n
    disc = np.hypot(yy - py, xx - px) < 3.5 * s
    metal[disc] = np.maximum(metal[disc], 0.9)
    pts = np.array([[py, px], [0.2 * n, 0.5 * (px + mid)], [0.38 * n, mid - 0.03 * n]])
    _polyline(metal, pts + rng.normal(0, 1.0 * s, pts.shape), 0.85, 0.5 * s)


def _geometry(c: _Canvas, img: np.ndarray, ap: bool) -> np.ndarray:
    """Global geometry: smooth deformation + affine (AP: shallower inspiration)."""
    n, s, yy, xx, rng = c.n, c.s, c.yy, c.xx, c.rng
    grid = 4
    disp = rng.normal(0, 1.6 * s, (2, grid, grid)).astype(np.float32)
    dy, dx = (_resize(d, (n, n), order=3) for d in disp)
    scale = rng.uniform(0.93, 1.07)
    sy = scale * (1.08 if ap else 1.0)
    ang = np.deg2rad(rng.uniform(-4, 4))
    cy0, cx0 = 0.5 * n + rng.uniform(-3, 3) * s, 0.5 * n + rng.uniform(-3, 3) * s
    y0, x0 = yy - 0.5 * n, xx - 0.5 * n
    src_y = cy0 + sy * (np.cos(ang) * y0 - np.sin(ang) * x0) + dy
    src_x = cx0 + scale * (np.sin(ang) * y0 + np.cos(ang) * x0) + dx
    img = ndimage.map_coordinates(img, np.stack([src_y, src_x]), order=1, mode="constant", cval=0.0)
    return img


def _ap_marker(c: _Canvas, img: np.ndarray) -> None:
    """AP portable marker: a bright lettered tag in a top corner, burnt in after the geometry."""
    n, rng = c.n, c.rng
    my, mx = round(0.04 * n), round((0.05 if rng.random() < 0.5 else 0.80) * n)
    h, w = max(3, round(0.06 * n)), max(5, round(0.14 * n))
    img[my : my + h, mx : mx + w] = 0.95
    img[my + 1 : my + h - 1, mx + 1 : mx + w - 1 : 2] = 0.35


def _exposure(c: _Canvas, img: np.ndarray, ap: bool) -> np.ndarray:
    """Exposure: gamma, contrast, blur, noise."""
    rng, s = c.rng, c.s
    img = np.clip(img, 0, None)
    img = img / max(float(np.percentile(img, 99.5)), 1e-3)
    img = np.clip(img, 0, 1) ** rng.uniform(0.8, 1.25)
    img = rng.uniform(0.85, 1.1) * img + rng.uniform(-0.05, 0.05)
    img = ndimage.gaussian_filter(img, rng.uniform(0.2, 0.8) * s)
    noise = rng.uniform(0.01, 0.035) * (1.6 if ap else 1.0)
    img = img + rng.normal(0, noise, img.shape)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
