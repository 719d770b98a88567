"""Ray Data embedding: a local Ray cluster with 2 worker actors against 1, on the phantom cohort.

Usage::

    python bench/bench_ray.py --n 240 --repeats 3 --out bench/results/ray_embed.json

Starts one local Ray instance with 2 CPUs, embeds the first n phantom radiographs with the default image
encoder (EfficientNet-Lite0, shipped weights, 224 px) through ``encode_with_ray`` into a fresh shared
cache per run, interleaving 1 and 2 workers (ABAB ...), each actor with 1 torch thread. Every run's
embeddings are compared with a local ``encode_cached`` run (max absolute difference). Times include
actor start-up (model unpickling) but not the cluster's start-up, which is timed separately.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=240)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--cohort-cache", type=Path, default=Path.home() / ".cache" / "medaudit")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ray_embed.json")
    args = ap.parse_args()
    os.environ.setdefault("MEDAUDIT_QUIET", "1")
    import ray
    import torch

    torch.set_num_threads(1)
    from medaudit.audit.encoders import encode_cached, get_encoder
    from medaudit.audit.encoders.distributed import encode_with_ray
    from medaudit.data.phantom_cxr import build_cohort

    df = build_cohort(args.cohort_cache, n=args.n, image_size=128, progress=False)
    paths, ids = df["image"].tolist(), df["id"].astype(str).tolist()
    enc = get_encoder("image", "efficientnet-lite0", size=224, device="cpu")
    tmp = Path(tempfile.mkdtemp(prefix="medaudit-ray-"))
    t = time.perf_counter()
    ref = encode_cached(enc, ids, paths, tmp / "local", batch_size=args.batch_size, progress=False)
    local_s = time.perf_counter() - t
    t = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    startup_s = time.perf_counter() - t
    runs = []
    for rep in range(args.repeats):
        for w in (1, 2):
            cache = tmp / f"shared-{rep}-{w}"
            t = time.perf_counter()
            emb = encode_with_ray(enc, ids, paths, cache, "local", num_workers=w, batch_size=args.batch_size)
            wall = time.perf_counter() - t
            diff = float(np.abs(np.asarray(emb) - ref).max())
            runs.append({"repeat": rep, "workers": w, "wall_s": wall, "max_abs_diff_vs_local": diff,
                         "load_avg": os.getloadavg()[0]})  # fmt: skip
            print(json.dumps(runs[-1]), flush=True)
    ray.shutdown()
    med = {w: statistics.median(r["wall_s"] for r in runs if r["workers"] == w) for w in (1, 2)}
    payload = {
        "command": "python bench/bench_ray.py " + " ".join(sys.argv[1:]),
        "n_images": len(paths),
        "encoder": "efficientnet-lite0 (shipped weights), 224 px, CPU, 1 torch thread per actor",
        "local_encode_cached_s": local_s,
        "ray_cluster_startup_s": startup_s,
        "median_wall_s": {f"{w}_workers": v for w, v in med.items()},
        "speedup_2_vs_1": med[1] / med[2],
        "max_abs_diff_vs_local": max(r["max_abs_diff_vs_local"] for r in runs),
        "embedding_scale_abs_max": float(np.abs(ref).max()),
        "runs": runs,
    }
    args.out.write_text(json.dumps(payload, indent=2))
    print(json.dumps({k: v for k, v in payload.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
