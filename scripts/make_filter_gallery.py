"""Render one PNG per filter: axial mid-slice of the MNI152 T1 template, clean and at severities 1, 3, 5.

    python scripts/make_filter_gallery.py --out docs/img/filters

The template ships with nilearn (``medaudit.data.assets.mni152_paths()``).  Intensities are scaled to
[0, 1] (0.5th-99.5th percentile); ``label_remap`` uses tissue labels from the template's GM / WM maps.
Panels are 8-bit greyscale, downsized to ``--width`` pixels, so each PNG stays small.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from PIL import Image, ImageDraw

from medaudit.data.assets import mni152_paths
from medaudit.io import atomic_write_bytes
from medaudit.progress import make_progress
from medaudit.texture import filters as tf

SEVERITIES = (1, 3, 5)


def load_mni() -> tuple[torch.Tensor, torch.Tensor]:
    """The T1 template as ``(1, X, Y, Z)`` in [0, 1] and a label map (0 background, 1 CSF/other, 2 GM, 3 WM)."""
    paths = mni152_paths()
    t1 = np.asarray(nib.load(paths["t1"]).get_fdata(), dtype=np.float32)
    lo, hi = np.percentile(t1, [0.5, 99.5])
    t1 = np.clip((t1 - lo) / (hi - lo), 0, 1)
    gm = np.asarray(nib.load(paths["gm"]).get_fdata(), dtype=np.float32)
    wm = np.asarray(nib.load(paths["wm"]).get_fdata(), dtype=np.float32)
    label = np.where(t1 > 0.05, 1, 0)
    label = np.where((gm > 0.5) & (gm >= wm), 2, label)
    label = np.where((wm > 0.5) & (wm > gm), 3, label)
    return torch.from_numpy(t1)[None], torch.from_numpy(label.astype(np.int64))[None]


def to_panel(vol: torch.Tensor, z: int, width: int, title: str) -> Image.Image:
    sl = vol[0, :, :, z].clamp(0, 1).numpy().T[::-1]  # axial slice, anterior up
    img = Image.fromarray((np.round(sl * 63) * 4).astype(np.uint8), mode="L")
    height = round(img.height * width / img.width)
    img = img.resize((width, height), Image.Resampling.BILINEAR)
    img = Image.fromarray((np.asarray(img) // 4 * 4).astype(np.uint8), mode="L")
    canvas = Image.new("L", (width, height + 14), 255)
    canvas.paste(img, (0, 14))
    ImageDraw.Draw(canvas).text((2, 1), title, fill=0)
    return canvas


def render(name: str, vol: torch.Tensor, label: torch.Tensor, z: int, width: int) -> bytes:
    panels = [to_panel(vol, z, width, f"clean ({name})")]
    for s in SEVERITIES:
        f = tf.get_corruption(name, s, seed=0)
        out = f(vol, label) if name == "label_remap" else f(vol)  # type: ignore[call-arg]
        panels.append(to_panel(out, z, width, f"severity {s}"))
    strip = Image.new("L", (sum(p.width for p in panels) + 3 * (len(panels) - 1), panels[0].height), 255)
    x = 0
    for p in panels:
        strip.paste(p, (x, 0))
        x += p.width + 3
    buf = io.BytesIO()
    strip.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/img/filters")
    ap.add_argument("--width", type=int, default=180, help="panel width in pixels")
    ap.add_argument("--filters", nargs="*", default=None)
    args = ap.parse_args()
    torch.set_num_threads(2)
    vol, label = load_mni()
    z = vol.shape[-1] // 2 + 8
    names = args.filters or tf.list_corruptions()
    out_dir = Path(args.out)
    with make_progress() as progress:
        task = progress.add_task("gallery", total=len(names))
        for name in names:
            data = render(name, vol, label, z, args.width)
            atomic_write_bytes(out_dir / f"{name}.png", data)
            print(f"{name}: {len(data) / 1024:.1f} KB")
            progress.advance(task)


if __name__ == "__main__":
    main()
