"""Does severity level 5 mean something? Dice loss of a clean-trained baseline under every corruption.

Issue 12's check: at level 5, a clean-trained baseline should lose at least 0.15 Dice under at least 8
corruptions of the severity table. For each corruption of ``medaudit.texture.filters`` this evaluates
the model on its run's test split at levels 1..5 of table ``--version`` (the same seeded corruption
per case as ``medaudit texture eval``), and writes mean foreground Dice per level, the loss at level 5
against clean, and whether it reaches ``--threshold``.

Usage::

    OMP_NUM_THREADS=1 python bench/severity_check.py -m RUN/model.pt --out bench/results/severity_check_v2.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import torch


def run(model_path: Path, version: int, levels: tuple[int, ...], seed: int = 0) -> pd.DataFrame:
    """Rows ``corruption, family, level, case, dice`` (level 0 = clean)."""
    from medaudit.data import mri as tdata
    from medaudit.texture import filters
    from medaudit.texture.bias import mean_dice
    from medaudit.texture.severity import wm_label_of
    from medaudit.texture.train import apply_corruption, derive_seed, load_model, sliding_window_predict

    model, meta = load_model(model_path)
    cfg = meta["config"]
    split = json.loads((model_path.parent / "split.json").read_text())
    cases = [tdata.VolumeCase.from_dict(d) for d in split["test"]]
    wm = wm_label_of(meta["label_set"])
    rows = []
    for case in cases:
        vol = tdata.load_case(case, label_set=meta["label_set"], spacing=cfg.spacing)
        img, lab = vol["image"], vol["label"]

        def dice(x: torch.Tensor, lab: torch.Tensor = lab) -> float:
            pred = sliding_window_predict(model, x, cfg.roi, meta["device"], cfg.sw_batch_size, cfg.amp)
            return mean_dice(pred, lab, int(meta["n_classes"]))

        rows.append(
            {"corruption": "none", "family": "clean", "level": 0, "case": case.case_id, "dice": dice(img)}
        )
        for name in filters.list_corruptions():
            for lv in levels:
                s = derive_seed(seed, case.case_id, name, lv)
                x = apply_corruption(
                    name, lv, img, lab, s, version=version, spacing=vol["spacing"], wm_label=wm
                )
                d = dice(x)
                rows.append(
                    {"corruption": name, "family": filters.family_of(name), "level": lv, "case": case.case_id}
                    | {"dice": d}
                )
    return pd.DataFrame(rows)


def summary(df: pd.DataFrame, threshold: float) -> pd.DataFrame:
    clean = float(df.loc[df["level"] == 0, "dice"].mean())
    t = df[df["level"] > 0].groupby(["corruption", "family", "level"])["dice"].mean().unstack("level")
    t.columns = [f"L{c}" for c in t.columns]
    t["loss_at_5"] = clean - t["L5"]
    t[f"loses>={threshold}"] = t["loss_at_5"] >= threshold
    return t.sort_values("loss_at_5", ascending=False).reset_index().assign(clean=clean)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--version", type=int, default=2)
    ap.add_argument("--threshold", type=float, default=0.15)
    ap.add_argument("--levels", default="1,2,3,4,5")
    args = ap.parse_args()
    torch.set_num_threads(1)
    df = run(args.model, args.version, tuple(int(v) for v in args.levels.split(",")))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out.with_suffix(".csv"), index=False)
    t = summary(df, args.threshold)
    from hidden_artefacts import markdown  # same folder

    n = int(t[f"loses>={args.threshold}"].sum())
    head = (
        f"severity table v{args.version}; model {args.model}; clean Dice {t['clean'].iloc[0]:.3f}; "
        f"{n} of {len(t)} corruptions lose >= {args.threshold} Dice at level 5\n\n"
    )
    args.out.write_text(head + markdown(t.drop(columns="clean")) + "\n")
    print(head + markdown(t.drop(columns="clean")))


if __name__ == "__main__":
    main()
