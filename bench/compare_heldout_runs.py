"""Paired comparison of two sets of real-report runs (``bench/heldout_real_reports.py`` runs.csv files):
mean p@10 of each with percentile-bootstrap 95% CIs, the paired difference (after - before) with its
CI, and wins / ties / losses over the (split, failure, seed) cases both hold.

    python bench/compare_heldout_runs.py --method medaudit \\
        --pair bench/results/heldout_real_reports/fresh6_hard_pre13_runs.csv:bench/results/heldout_real_reports/fresh6_hard_v13_runs.csv \\
        --pair ...
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd


def _ci(x: np.ndarray, rng: np.random.Generator, n_boot: int = 2000) -> tuple[float, float]:
    means = rng.choice(x, (n_boot, len(x))).mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def _pair(before: str, after: str, method: str, method_after: str) -> pd.DataFrame:
    b, a = pd.read_csv(before), pd.read_csv(after)
    b, a = b[b["method"] == method], a[a["method"] == method_after]
    j = b.merge(a, on=["split", "failure", "seed"], suffixes=("_before", "_after"))
    return j.assign(regime="hard" if "hard" in after else "default")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pair", action="append", required=True, metavar="BEFORE.csv:AFTER.csv")
    ap.add_argument("--method", default="medaudit", help="method column value in BEFORE files")
    ap.add_argument("--method-after", default=None, help="method in AFTER files (default: --method)")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    runs = pd.concat(
        [_pair(*p.split(":", 1), args.method, args.method_after or args.method) for p in args.pair]
    )
    lines = ["| runs | cases | before | after | paired difference | W/T/L |", "|---|---|---|---|---|---|"]
    for name, g in [*runs.groupby("regime"), ("all", runs)]:
        b, a = g["p10_before"].to_numpy(), g["p10_after"].to_numpy()
        d = a - b
        (bl, bh), (al, ah), (dl, dh) = _ci(b, rng), _ci(a, rng), _ci(d, rng)
        lines.append(
            f"| {name} | {len(g)} | {b.mean():.3f} [{bl:.2f}, {bh:.2f}] | {a.mean():.3f} [{al:.2f}, {ah:.2f}] | "
            f"{d.mean():+.3f} [{dl:+.3f}, {dh:+.3f}] | {(d > 0).sum()}/{(d == 0).sum()}/{(d < 0).sum()} |"
        )
    print("\n".join(lines))
    changed = runs[runs["p10_after"] != runs["p10_before"]]
    print("\nchanged cases:")
    print(changed[["split", "regime", "failure", "seed", "p10_before", "p10_after"]].to_string(index=False))


if __name__ == "__main__":
    main()
