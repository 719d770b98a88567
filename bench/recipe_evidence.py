"""Issue 12's evidence tables from study folders (``study_recipes`` and ``study_lofo``).

Usage::

    python bench/recipe_evidence.py --study /tmp/study-recipes [--lofo /tmp/study-lofo] --out bench/results/recipes.md

Reads the finished evaluation parts (``parts/*.parquet``, so a study still running can be read too).

- **Main table**, per training row (seeds paired with the clean baseline of the same seed, mean and
  percentile-bootstrap 95% CI over seeds): Dice on the held-out families (motion, k-space, resolution:
  no model of study_recipes trains on them) at severities 3-5 and its gain over the baseline; the corruption
  error ratio Σ(1 − Dice)/Σ(1 − Dice_baseline) over the same conditions (goal <= 0.6); the clean-Dice cost
  (goal <= 0.01); the same gain on the families the row did see; the texture-bias score if the study
  wrote ``texture_bias.csv``.
- **Leave-one-family-out**: for BigAug without family F, Dice on F's corruptions (severities 3-5) against
  the baseline and against the BigAug that saw F.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

HELD_OUT = ("motion", "kspace", "resolution")
SEVERITIES = (3, 4, 5)


def load_parts(study: Path) -> pd.DataFrame:
    parts = sorted((study / "parts").glob("*.parquet"))
    if not parts:
        raise SystemExit(f"{study}: no finished evaluation yet")
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)


def condition_dice(df: pd.DataFrame) -> pd.DataFrame:
    """Mean Dice per model x corruption x severity (classes averaged within a case, then cases)."""
    keys = ["model", "seed", "corruption", "family", "seen", "severity"]
    per_case = df.groupby([*keys, "case"], dropna=False)["dice"].mean().reset_index()
    out = per_case.groupby(keys, dropna=False)["dice"].mean().reset_index()
    out["row"] = out["model"].str.replace(r" seed=\d+$", "", regex=True)
    return out


def _ci(values: list[float]) -> tuple[float, float, float]:
    from medaudit.stats import bootstrap_ci

    return bootstrap_ci(values, n_boot=2000)


def _figures(c: pd.DataFrame, model: str, base: str, sel: pd.Series) -> tuple[float, float, float, float]:
    m = c[(c["model"] == model) & sel].set_index(["corruption", "severity"])["dice"]
    b = c[(c["model"] == base) & sel].set_index(["corruption", "severity"])["dice"]
    m, b = m.align(b, join="inner")
    if m.empty:
        return (np.nan,) * 4
    dm, db = float(m.groupby(level=0).mean().mean()), float(b.groupby(level=0).mean().mean())
    ce = float((1 - m).sum() / (1 - b).sum())
    return dm, dm - db, ce, db


def main_table(c: pd.DataFrame) -> pd.DataFrame:
    """Per training row: held-out-family Dice gain, CE ratio and clean cost, paired by seed."""
    held = c["family"].isin(HELD_OUT) & c["severity"].isin(SEVERITIES)
    clean = c[c["severity"] == 0].set_index("model")["dice"]
    rows = []
    for row, g in c.groupby("row", sort=False):
        per_seed = []
        for model, seed in g[["model", "seed"]].drop_duplicates().itertuples(index=False):
            base = f"none seed={seed}"
            if base not in set(c["model"]):
                continue
            d, gain, ce, _ = _figures(c, model, base, held)
            seen = set(c.loc[(c["model"] == model) & c["seen"].astype(bool), "corruption"])
            sel_seen = c["corruption"].isin(seen) & c["severity"].isin(SEVERITIES)
            _, gain_seen, _, _ = _figures(c, model, base, sel_seen)
            per_seed.append((d, gain, ce, float(clean[base] - clean[model]), gain_seen, float(clean[model])))
        if not per_seed:
            continue
        a = np.array(per_seed)
        gain, ce, cost = _ci(list(a[:, 1])), _ci(list(a[:, 2])), _ci(list(a[:, 3]))
        rows.append(
            {
                "row": row,
                "seeds": len(per_seed),
                "clean_dice": a[:, 5].mean(),
                "heldout_dice": a[:, 0].mean(),
                "heldout_gain": gain[0],
                "gain_ci": f"[{gain[1]:+.3f}, {gain[2]:+.3f}]",
                "ce_ratio": ce[0],
                "ce_ci": f"[{ce[1]:.2f}, {ce[2]:.2f}]",
                "clean_cost": cost[0],
                "cost_ci": f"[{cost[1]:+.3f}, {cost[2]:+.3f}]",
                "seen_gain": float(np.nanmean(a[:, 4])) if np.isfinite(a[:, 4]).any() else np.nan,
                "goals_met": int((gain[0] >= 0.05) + (ce[0] <= 0.6) + (cost[0] <= 0.01)),
            }
        )
    return pd.DataFrame(rows)


def lofo_table(c: pd.DataFrame) -> pd.DataFrame:
    """BigAug without family F vs the baseline and the full BigAug, on F's corruptions at 3-5."""
    rows = []
    full = [m for m in c["model"].unique() if m.startswith("bigaug seed=")]
    for model in sorted(m for m in c["model"].unique() if m.startswith("bigaug[-")):
        seed = model.rsplit("seed=", 1)[1]
        fam = model.split("[-", 1)[1].split("]", 1)[0]
        if "," in fam:  # several families left out together: not a leave-one-family-out model
            continue
        sel = (c["family"] == fam) & c["severity"].isin(SEVERITIES)
        d, gain, ce, db = _figures(c, model, f"none seed={seed}", sel)
        r = {
            "left_out": fam,
            "model": model,
            "dice_F": d,
            "baseline_dice_F": db,
            "gain": gain,
            "ce_ratio": ce,
        }
        if full:
            dfull = _figures(c, full[0], f"none seed={seed}", sel)[0]
            r["bigaug_seen_F_dice"] = dfull
        rows.append(r)
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", type=Path, required=True)
    ap.add_argument("--lofo", type=Path, default=None)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument(
        "--bias", type=Path, action="append", help="texture_bias.csv file(s) (default: the study's own)"
    )
    args = ap.parse_args()
    from hidden_artefacts import markdown

    c = condition_dice(load_parts(args.study))
    text = ["## Held-out families (motion, kspace, resolution), severities 3-5, paired by seed\n"]
    text.append(markdown(main_table(c)))
    biases = args.bias or [args.study / "texture_bias.csv"]
    if all(b.is_file() for b in biases):
        from medaudit.texture.bias import bias_by_row

        # several studies' tables (each run of a study writes its own models' rows): one row per model
        tb = pd.concat([pd.read_csv(b) for b in biases], ignore_index=True).drop_duplicates(
            "model", keep="last"
        )
        text += ["\n## Texture bias (mean over seeds)\n", markdown(bias_by_row(tb))]
    if args.lofo is not None:
        lc = condition_dice(load_parts(args.lofo))
        text += ["\n## Leave-one-family-out (BigAug without F, tested on F, severities 3-5)\n"]
        lofo = lofo_table(lc)
        text.append(markdown(lofo) if not lofo.empty else "(no leave-one-family-out model finished)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(text) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    main()
