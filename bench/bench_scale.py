"""Streaming embedding at scale, simulating a 377k-image dataset with phantom radiographs.

Usage::

    python bench/bench_scale.py --sizes 500 2000 --size 224 --workers 1 --out bench/results/scale_embed.json

For each n, a fresh child process embeds n distinct image files (hard links to the rendered phantom
cohort, so each has its own path and stat key) with the default image encoder (EfficientNet-Lite0,
shipped ImageNet weights) through ``encode_cached(..., out=<.npy>)``: a DataLoader streams batches and
the result is a memory-mapped file. The child reports wall time, images/s and its peak RSS (ru_maxrss).
A second child re-runs the same call (resume: every item cached, stat keys) and times it, and the
byte-hash keying of the same files is timed for comparison. The JSON also holds linear extrapolations
to 50k and 377k images. Torch threads: --threads (default 1, the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    from medaudit.audit.encoders import encode_cached, get_encoder
    from medaudit.audit.encoders.cache import item_keys

    paths = sorted(str(p) for p in (Path(args.work) / "links").glob("*.png"))[: args.n]
    enc = get_encoder("image", "efficientnet-lite0", size=args.size, num_workers=args.workers, device="cpu")
    enc.cache_key()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = r0.ru_utime + r0.ru_stime
    t = time.perf_counter()
    if args.mode == "bytes-keys":
        item_keys(enc, paths, "bytes")
    else:
        encode_cached(enc, paths, paths, Path(args.work) / f"cache-{args.n}", batch_size=64, progress=False,
                      out=Path(args.work) / f"emb-{args.n}.npy")  # fmt: skip
    wall = time.perf_counter() - t
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime - cpu0
    rss = me.ru_maxrss / 1024
    print(json.dumps({"wall_s": wall, "process_cpu_s": cpu, "peak_rss_mib": rss, "rss_after_model_mib": rss0,
                      "dataloader_worker_peak_rss_mib": kids.ru_maxrss / 1024}))  # fmt: skip


def _run_child(args: argparse.Namespace, n: int, mode: str) -> dict:
    cmd = [sys.executable, __file__, "--_child", "--mode", mode, "--n", str(n), "--work", str(args.work),
           "--size", str(args.size), "--workers", str(args.workers), "--threads", str(args.threads)]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def _prepare(work: Path, n_max: int, size: int) -> int:
    from medaudit.data.phantom_cxr import build_cohort

    df = build_cohort(work / "phantom", n=min(n_max, 3927), image_size=size, progress=False)
    links = work / "links"
    links.mkdir(parents=True, exist_ok=True)
    src = df["image"].tolist()
    for k in range(n_max):
        dst = links / f"im{k:07d}.png"
        if not dst.exists():
            os.link(src[k % len(src)], dst)
    return len(src)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[500, 2000])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--workers", type=int, default=1, help="DataLoader worker processes")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", type=Path, default=Path("/tmp/medaudit-bench-scale"))
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scale_embed.json")
    ap.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="embed")
    ap.add_argument("--n", type=int, default=0)
    args = ap.parse_args()
    os.environ.setdefault("MEDAUDIT_QUIET", "1")
    if args._child:
        return _child(args)
    unique = _prepare(args.work, max(args.sizes), args.size)
    rows = []
    for n in args.sizes:
        first = _run_child(args, n, "embed")
        resume = _run_child(args, n, "embed")
        byte_keys = _run_child(args, n, "bytes-keys")
        rate = n / first["wall_s"]
        rows.append({"n": n, "embed": first, "images_per_s": rate, "resume_stat_keys": resume,
                     "bytes_keying": byte_keys, "load_avg": os.getloadavg()[0]})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    rate = rows[-1]["images_per_s"]
    per_img_resume = rows[-1]["resume_stat_keys"]["wall_s"] / rows[-1]["n"]
    per_img_bytes = rows[-1]["bytes_keying"]["wall_s"] / rows[-1]["n"]
    extra = {
        f"{k}": {"embed_hours_cpu": k / rate / 3600, "resume_stat_keys_s": k * per_img_resume,
                 "bytes_rekeying_s": k * per_img_bytes, "output_array_gib": k * 1280 * 4 / 2**30}
        for k in (50_000, 377_000)
    }  # fmt: skip
    payload = {
        "command": "python bench/bench_scale.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared)",
        "encoder": "efficientnet-lite0 (shipped ImageNet weights), 224 px, batch 64, CPU",
        "unique_rendered_images": unique,
        "threads": args.threads,
        "dataloader_workers": args.workers,
        "runs": rows,
        "extrapolation_linear_from_largest_n": extra,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2))
    print(json.dumps(extra, indent=2))


if __name__ == "__main__":
    main()
