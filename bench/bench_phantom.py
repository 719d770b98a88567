"""Phantom-cohort rendering speed: images/s of the renderer alone and of the cached, resumable build.

Usage: python bench/bench_phantom.py [--size 128] [--n 200]
Prints the load average next to the timing (the machine may be shared).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--n", type=int, default=200)
    args = ap.parse_args()
    os.environ.setdefault("MEDAUDIT_QUIET", "1")
    from medaudit.data.phantom_cxr import build_cohort, cohort_table
    from medaudit.data.phantom_render import base_radiograph, lung_mask_bank, render_case

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        df = cohort_table(tmp, seed=0, image_size=args.size)
        t_table = time.perf_counter() - t
        t = time.perf_counter()
        lung_mask_bank(args.size)
        base_radiograph(args.size)
        t_assets = time.perf_counter() - t
        rows = df.iloc[: args.n].to_dict("records")
        c0, t = time.process_time(), time.perf_counter()
        imgs = [render_case(r, size=args.size, seed=0) for r in rows]
        wall, cpu = time.perf_counter() - t, time.process_time() - c0
        assert all(i.shape == (args.size, args.size) and i.dtype == np.uint8 for i in imgs)
        t = time.perf_counter()
        build_cohort(tmp, n=args.n, image_size=args.size, seed=0, progress=False)
        t_build = time.perf_counter() - t
        t = time.perf_counter()
        build_cohort(tmp, n=args.n, image_size=args.size, seed=0, progress=False)
        t_cached = time.perf_counter() - t
    load = os.getloadavg()
    print(f"size {args.size}px, {args.n} images, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"cohort table (parse 3,955 Open-i reports + DICOM metadata): {t_table:.1f} s")
    print(f"lung-mask bank + base radiograph: {t_assets:.1f} s")
    print(f"render only: {args.n / wall:.1f} images/s wall, {args.n / cpu:.1f} images/s per CPU second")
    print(f"build_cohort (render + PNG + atomic rename): {args.n / t_build:.1f} images/s")
    print(f"build_cohort again (all cached): {t_cached:.2f} s")


if __name__ == "__main__":
    main()
