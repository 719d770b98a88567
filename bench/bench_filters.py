"""Throughput (volumes/s) of every medaudit filter vs its TorchIO / MONAI counterpart on the same input.

    python bench/bench_filters.py --sizes 128 217x290x290 --device cpu --out bench/results/filters_cpu.md

Each measurement: one warm-up call, then ``--repeats`` timed calls (median).  The input is a smooth
random volume in [0, 1] (float32, one channel).  On CUDA, ``--batch`` volumes go through one batched
call and the rate is per volume; counterparts run on CPU-side objects, so they are timed on CPU only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from medaudit.io import atomic_write_json, atomic_write_text
from medaudit.progress import make_progress
from medaudit.texture import filters as tf


def counterparts() -> dict[str, tuple[str, Callable[[], Callable]]]:
    """Filter name -> (label, factory of a callable taking a (C, D, H, W) tensor)."""
    import monai.transforms as mt
    import torchio as tio

    def tio_call(t: Callable) -> Callable:
        return lambda x: t(tio.ScalarImage(tensor=x)).data

    return {
        "gaussian_noise": (
            "tio.RandomNoise",
            lambda: tio_call(tio.RandomNoise(std=(0.06, 0.06), copy=False)),
        ),
        "rician_noise": ("monai.RandRicianNoise", lambda: mt.RandRicianNoise(prob=1.0, std=0.06)),
        "gaussian_blur": ("tio.RandomBlur", lambda: tio_call(tio.RandomBlur(std=(1.0, 1.0), copy=False))),
        "unsharp_mask": ("monai.RandGaussianSharpen", lambda: mt.RandGaussianSharpen(prob=1.0)),
        "gibbs": ("monai.GibbsNoise", lambda: mt.GibbsNoise(alpha=0.5)),
        "spike": (
            "tio.RandomSpike",
            lambda: tio_call(tio.RandomSpike(num_spikes=(1, 1), intensity=(0.7, 0.7), copy=False)),
        ),
        "ghosting": ("tio.RandomGhosting", lambda: tio_call(tio.RandomGhosting(copy=False))),
        "motion": ("tio.RandomMotion", lambda: tio_call(tio.RandomMotion(num_transforms=2, copy=False))),
        "bias_field": ("tio.RandomBiasField", lambda: tio_call(tio.RandomBiasField(copy=False))),
        "gamma": ("tio.RandomGamma", lambda: tio_call(tio.RandomGamma(copy=False))),
        "contrast": ("monai.AdjustContrast", lambda: mt.AdjustContrast(gamma=1.7)),
        "low_resolution": ("tio.RandomAnisotropy", lambda: tio_call(tio.RandomAnisotropy(copy=False))),
    }


def ours(name: str) -> Callable:
    """The registry corruption at severity 3 (label_remap falls back to intensity classes)."""
    return tf.get_corruption(name, 3, seed=0)


def timed(fn: Callable, x: torch.Tensor, repeats: int, sync: bool) -> float:
    """Median seconds per call."""
    fn(x)
    times = []
    for _ in range(repeats):
        if sync:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn(x)
        if sync:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def parse_size(s: str) -> tuple[int, int, int]:
    parts = [int(v) for v in s.lower().split("x")]
    return (parts[0],) * 3 if len(parts) == 1 else (parts[0], parts[1], parts[2])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["128", "217x290x290"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=1, help="volumes per call (ours); rate is per volume")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("BENCH_THREADS", "2")))
    ap.add_argument("--filters", nargs="*", default=None)
    ap.add_argument("--out", default="bench/results/filters_cpu.md")
    ap.add_argument(
        "--cache", default=None, help="JSON of finished rows (default: <out>.json); reruns resume"
    )
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    names = args.filters or tf.list_corruptions()
    others = counterparts() if dev.type == "cpu" else {}
    load_before = os.getloadavg()
    cache_path = Path(args.cache or f"{args.out}.json")
    done: dict[str, dict] = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    with make_progress() as progress:
        task = progress.add_task("bench filters", total=len(names) * len(args.sizes))
        for size in args.sizes:
            shape = parse_size(size)
            g = torch.Generator().manual_seed(0)
            vol = tf.GaussianBlur(sigma=2.0)(torch.rand(1, *shape, generator=g))
            vol = (vol - vol.min()) / (vol.max() - vol.min())
            xb = vol[None].expand(args.batch, *vol.shape).contiguous().to(dev)
            x_in = xb if args.batch > 1 else xb[0]
            for name in names:
                key = f"{dev.type}|{args.batch}|{'x'.join(map(str, shape))}|{name}"
                if key not in done:
                    t_ours = timed(ours(name), x_in, args.repeats, dev.type == "cuda") / args.batch
                    label, t_other = "-", None
                    if name in others:
                        label, factory = others[name]
                        t_other = timed(factory(), vol, args.repeats, False)
                    done[key] = {
                        "name": name,
                        "shape": list(shape),
                        "ours_s": t_ours,
                        "counterpart": label,
                        "counterpart_s": t_other,
                        "load": os.getloadavg()[0],
                    }
                    atomic_write_json(cache_path, done)
                progress.advance(task)
    rows = []
    for size in args.sizes:
        shape = parse_size(size)
        for name in names:
            r = done.get(f"{dev.type}|{args.batch}|{'x'.join(map(str, shape))}|{name}")
            if r is None:
                continue
            t_ours, t_other = r["ours_s"], r["counterpart_s"]
            other = f"{1 / t_other:.2f}" if t_other else "-"
            ratio = f"{t_other / t_ours:.2f}x" if t_other else "-"
            rows.append(
                f"| {name} | {'x'.join(map(str, shape))} | {1 / t_ours:.2f} | {r['counterpart']} | {other} | {ratio} "
                f"| {r['load']:.1f} |"
            )
    load_after = os.getloadavg()
    header = [
        f"# Filter throughput on {dev.type.upper()}",
        "",
        f"Command: `python bench/bench_filters.py --sizes {' '.join(args.sizes)} --device {args.device} "
        f"--batch {args.batch} --repeats {args.repeats} --threads {args.threads}`",
        "",
        f"torch {torch.__version__}, {args.threads} threads, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} logical CPUs (shared machine). Load average before: "
        f"{load_before[0]:.2f} / {load_before[1]:.2f} / {load_before[2]:.2f}, after: "
        f"{load_after[0]:.2f} / {load_after[1]:.2f} / {load_after[2]:.2f}.",
        "",
        "Ours = `get_corruption(name, 3, seed=0)`; the counterpart runs on the same float32 volume with its",
        "defaults (TorchIO with `copy=False`).  Median of the timed calls after one warm-up.",
        "Speed-up = counterpart time / our time (> 1: we are faster).  'load avg' is the 1-minute load",
        "average when the row finished; rows are cached in the JSON next to this file and reruns resume.",
        "",
        "| filter | size | ours (vol/s) | counterpart | counterpart (vol/s) | speed-up | load avg |",
        "|---|---|---|---|---|---|---|",
    ]
    atomic_write_text(args.out, "\n".join(header + rows) + "\n")
    print("\n".join(header + rows))


if __name__ == "__main__":
    main()
