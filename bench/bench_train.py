"""Training throughput (patches/s) and peak memory of the default TrainConfig on CPU (or CUDA if present).

Usage::

    /tmp/venv/bin/python bench/bench_train.py [--iterations 20] [--patch 48] [--batch 2] [--threads 2]

Builds (or reuses) the mni-phantom cohort, loads the training volumes, runs 2 warm-up iterations,
then times ``--iterations`` full training steps (patch sampling + forward + backward + optimizer).
Prints wall time, CPU time, patches/s, peak resident memory (ru_maxrss) and, on CUDA, peak GPU memory,
next to the load average (the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--patch", type=int, default=None, help="cubic patch size (default: TrainConfig's)")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--recipe", default="clean", help="training recipe (medaudit.texture.recipes)")
    ap.add_argument("--recipe-options", default="{}", help="recipe options as JSON")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from monai.losses import DiceCELoss

    from medaudit.device import default_device
    from medaudit.texture.severity import wm_label_of
    from medaudit.texture.train import (
        TrainConfig,
        _prepare_volumes,
        build_model,
        load_data,
        split_cases,
        train_step,
        training_batch,
    )

    cfg = TrainConfig(
        cache_dir=args.cache_dir,
        device=args.device,
        recipe=args.recipe,
        recipe_options=json.loads(args.recipe_options),
    )
    if args.patch:
        cfg.patch_size = [args.patch] * 3
    if args.batch:
        cfg.batch_size = args.batch
    dev = default_device(cfg.device)
    split = split_cases(load_data(cfg), cfg.val_fraction, cfg.test_fraction, cfg.split_seed)
    vols = _prepare_volumes(cfg, split["train"], training=True)
    model = build_model(4, cfg.channels, cfg.num_res_units).to(dev)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    use_amp = cfg.amp and dev.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    recipe = cfg.make_recipe(vols[0]["spacing"], wm_label_of("tissue4"))

    def step(i: int) -> None:
        x, y = training_batch(cfg, recipe, vols, i, dev)
        train_step(model, opt, scaler, loss_fn, x, y, dev, use_amp)

    for i in range(2):
        step(i)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(2, 2 + args.iterations):
        step(i)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    out = {
        "device": str(dev),
        "recipe": args.recipe,
        "threads": args.threads,
        "patch_size": cfg.patch_size,
        "batch_size": cfg.batch_size,
        "channels": cfg.channels,
        "volume_shape": list(vols[0]["image"].shape[1:]),
        "iterations": args.iterations,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "patches_per_s": round(args.iterations * cfg.batch_size / wall, 3),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }
    if dev.type == "cuda":
        out["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
