"""Training throughput (patches/s) and peak memory per training recipe, on CPU (or CUDA if present).

Usage::

    python bench/bench_train.py [--iterations 20] [--patch 48] [--batch 2] [--threads 2]
                                [--recipes clean,mixed,bigaug,synthseg,gin] [--repeats 3] [--out FILE.md]

Builds (or reuses) the mni-phantom cohort, loads the training volumes, runs 2 warm-up iterations per
recipe, then times ``--iterations`` full training steps (patch sampling + the recipe's transforms on the
training device + forward + backward + optimizer) per recipe, interleaved (ABAB...) over ``--repeats``
rounds; reports the median patches/s per recipe and its ratio to ``clean``. Prints wall time, CPU
time, peak resident memory (ru_maxrss) and, on CUDA, peak GPU memory, next to the load average (the
machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time
from pathlib import Path

import torch


def _setup(cfg, recipe_name, vols, dev):
    from monai.losses import DiceCELoss

    from medaudit.texture.severity import wm_label_of
    from medaudit.texture.train import TrainConfig, build_model

    rcfg = TrainConfig.from_dict({**cfg.to_dict(), "recipe": recipe_name})
    recipe = rcfg.make_recipe(vols[0]["spacing"], wm_label_of(rcfg.label_set))
    torch.manual_seed(0)
    model = build_model(4, cfg.channels, cfg.num_res_units).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    use_amp = cfg.amp and dev.type == "cuda"
    return (
        rcfg,
        recipe,
        model,
        opt,
        torch.amp.GradScaler("cuda", enabled=use_amp),
        DiceCELoss(to_onehot_y=True, softmax=True),
        use_amp,
    )


def _time(state, vols, dev, start, n):
    from medaudit.texture.train import train_step, training_batch

    rcfg, recipe, model, opt, scaler, loss_fn, use_amp = state
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(start, start + n):
        x, y = training_batch(rcfg, recipe, vols, i, dev)
        train_step(model, opt, scaler, loss_fn, x, y, dev, use_amp)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--patch", type=int, default=None, help="cubic patch size (default: TrainConfig's)")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--recipes", default="clean", help="comma-separated recipe names")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", default=None, help="also write a Markdown table here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from medaudit.device import default_device
    from medaudit.texture.train import TrainConfig, _prepare_volumes, load_data, split_cases

    cfg = TrainConfig(cache_dir=args.cache_dir, device=args.device)
    if args.patch:
        cfg.patch_size = [args.patch] * 3
    if args.batch:
        cfg.batch_size = args.batch
    dev = default_device(cfg.device)
    split = split_cases(load_data(cfg), cfg.val_fraction, cfg.test_fraction, cfg.split_seed)
    vols = _prepare_volumes(cfg, split["train"], training=True)
    names = [r.strip() for r in args.recipes.split(",") if r.strip()]
    states = {r: _setup(cfg, r, vols, dev) for r in names}
    for r in names:
        _time(states[r], vols, dev, 0, 2)  # warm-up
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    walls: dict[str, list[float]] = {r: [] for r in names}
    cpus: dict[str, list[float]] = {r: [] for r in names}
    for rep in range(args.repeats):
        for r in names:  # interleaved: clean, mixed, ..., clean, mixed, ...
            w, c = _time(states[r], vols, dev, 2 + rep * args.iterations, args.iterations)
            walls[r].append(w)
            cpus[r].append(c)
    rates = {r: [args.iterations * cfg.batch_size / w for w in walls[r]] for r in names}
    med = {r: statistics.median(v) for r, v in rates.items()}
    cpu_rates = {r: [args.iterations * cfg.batch_size / c for c in cpus[r]] for r in names}
    cmed = {r: statistics.median(v) for r, v in cpu_rates.items()}
    ref = med.get("clean")
    out = {
        "device": str(dev),
        "threads": args.threads,
        "patch_size": cfg.patch_size,
        "batch_size": cfg.batch_size,
        "channels": cfg.channels,
        "volume_shape": list(vols[0]["image"].shape[1:]),
        "iterations": args.iterations,
        "repeats": args.repeats,
        "patches_per_s_median": {r: round(v, 3) for r, v in med.items()},
        "patches_per_s_all": {r: [round(x, 3) for x in v] for r, v in rates.items()},
        "ratio_to_clean": {r: round(v / ref, 3) for r, v in med.items()} if ref else None,
        "patches_per_cpu_s_median": {r: round(v, 3) for r, v in cmed.items()},
        "cpu_ratio_to_clean": {r: round(v / cmed["clean"], 3) for r, v in cmed.items()} if ref else None,
        "cpu_s": {r: round(sum(v), 2) for r, v in cpus.items()},
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }
    if dev.type == "cuda":
        out["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    print(json.dumps(out, indent=2))
    if args.out:
        lines = [
            f"Training throughput per recipe ({out['device']}, {args.threads} thread(s), patch {cfg.patch_size}, "
            f"batch {cfg.batch_size}, {args.iterations} iterations x {args.repeats} interleaved repeats; "
            f"load average at the end {out['load_avg']})",
            "",
            "| recipe | patches/s (median) | per repeat | ratio to clean | patches per CPU-s (median) | ratio |",
            "|---|---|---|---|---|---|",
        ]
        for r in names:
            ratio = f"{med[r] / ref:.2f}" if ref else "–"
            cratio = f"{cmed[r] / cmed['clean']:.2f}" if ref else "–"
            per = ", ".join(f"{x:.3f}" for x in rates[r])
            lines.append(f"| {r} | {med[r]:.3f} | {per} | {ratio} | {cmed[r]:.2f} | {cratio} |")
        lines += [
            "",
            "patches/s is wall-clock; on a shared machine the CPU-time rate (process CPU time, 1 thread)",
            "is the steadier measure of what each recipe costs.",
        ]
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
