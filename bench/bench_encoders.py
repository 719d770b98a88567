"""Encoder throughput and cache speed-up.

Measures, on this machine:
  * efficientnet-lite0 images/s at batch 32: model only (preprocessed tensors) and end to end
    (JPEG files read, resized and encoded through the DataLoader);
  * tfidf-svd reports/s (fit + transform) and minilm reports/s;
  * encode_cached: cold run vs. fully cached re-run (speed-up).

Usage:
    MEDAUDIT_QUIET=1 python bench/bench_encoders.py --n-images 64 --n-reports 2000 --threads 2

Prints one JSON object; the load average is recorded with it because machines may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from medaudit.audit.encoders import encode_cached, get_encoder
from medaudit.data import assets
from medaudit.data.images import read_grayscale, resize_square

SENTENCES = [
    "The lungs are clear.",
    "There is no pleural effusion or pneumothorax.",
    "The heart size is enlarged.",
    "Cardiomediastinal silhouette is within normal limits.",
    "Right internal jugular central line terminates in the SVC.",
    "Endotracheal tube is 4 cm above the carina.",
    "Left lower lobe opacity concerning for pneumonia.",
    "Mild pulmonary vascular congestion.",
    "Small bilateral pleural effusions.",
    "Degenerative changes of the thoracic spine.",
]


def make_reports(n: int, rng: np.random.Generator) -> list[str]:
    out = []
    for _ in range(n):
        f = rng.choice(SENTENCES, size=rng.integers(2, 5), replace=False)
        i = rng.choice(SENTENCES, size=1)
        out.append("FINDINGS: " + " ".join(f) + "\nIMPRESSION: " + " ".join(i))
    return out


def make_images(folder: Path, n: int, size: int, rng: np.random.Generator) -> list[str]:
    """JPEGs derived from the real radiograph (random crops + noise), so each file differs."""
    base = read_grayscale(assets.pa_radiograph_dcm())
    paths = []
    for k in range(n):
        h, w = base.shape
        top, left = rng.integers(0, h // 8), rng.integers(0, w // 8)
        crop = base[top : top + 7 * h // 8, left : left + 7 * w // 8]
        img = resize_square(crop, size, "stretch") + rng.normal(0, 0.01, (size, size))
        p = folder / f"img{k:05d}.jpg"
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(p, quality=90)
        paths.append(str(p))
    return paths


def timed(fn, *a, **kw):
    t0 = time.perf_counter()
    out = fn(*a, **kw)
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-images", type=int, default=64)
    ap.add_argument("--image-size", type=int, default=1024, help="side of the generated JPEG files")
    ap.add_argument("--n-reports", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    res: dict[str, object] = {
        "load_avg_start": os.getloadavg(),
        "threads": args.threads,
        "device": args.device,
        "n_images": args.n_images,
        "n_reports": args.n_reports,
    }

    enc = get_encoder("image", "efficientnet-lite0", batch_size=32, device=args.device)
    model = enc.model
    x = torch.rand(32, 1, 224, 224, device=enc.torch_device)
    with torch.inference_mode():
        enc._features(model, enc._preprocess(x))  # warm-up
        reps = max(1, args.n_images // 32)
        t0 = time.perf_counter()
        for _ in range(reps):
            enc._features(model, enc._preprocess(x))
        res["effnet_model_only_img_per_s"] = round(32 * reps / (time.perf_counter() - t0), 1)

    with tempfile.TemporaryDirectory() as tmp:
        paths = make_images(Path(tmp), args.n_images, args.image_size, rng)
        _, dt = timed(enc.encode, paths)
        res["effnet_end_to_end_img_per_s"] = round(len(paths) / dt, 1)

        ids = list(range(len(paths)))
        cache = Path(tmp) / "cache"
        kw = {"batch_size": 32, "progress": False, "content": "bytes"}  # stat keys are the default
        _, cold = timed(encode_cached, enc, ids, paths, cache, **kw)
        _, warm = timed(encode_cached, enc, ids, paths, cache, **kw)
        # content="stat" keys items by path+size+mtime (no file hashing): a separate set of keys, so the
        # first stat run is cold again; time the second one
        encode_cached(enc, ids, paths, cache, batch_size=32, progress=False, content="stat")
        _, warm_stat = timed(
            encode_cached, enc, ids, paths, cache, batch_size=32, progress=False, content="stat"
        )
        res["cache_cold_s"] = round(cold, 3)
        res["cache_hit_s"] = round(warm, 3)
        res["cache_hit_speedup"] = round(cold / warm, 1)
        res["cache_hit_stat_s"] = round(warm_stat, 3)

    reports = make_reports(args.n_reports, rng)
    tfidf = get_encoder("report", "tfidf-svd", dim=128)
    _, dt = timed(lambda: tfidf.fit(reports).encode(reports))
    res["tfidf_svd_fit_encode_reports_per_s"] = round(len(reports) / dt, 1)

    mini = get_encoder("report", "minilm", device=args.device)
    mini.encode(reports[:8])  # load + warm-up
    _, dt = timed(mini.encode, reports)
    res["minilm_reports_per_s"] = round(len(reports) / dt, 1)
    res["load_avg_end"] = os.getloadavg()
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
