"""Why a scenario goal is or is not met: how strong the planted failure is in each kept run.

Reads a ``bench-scenarios`` output folder (``runs.parquet``) and, per kept run, reconstructs the planted
slice's own error evidence from the recorded columns: its size (``n_slice``), its errors
(``baseline_slice`` × all errors, where all errors = (1 − accuracy) × ``n_test``), its error rate against
the run's overall error rate, and the exact one-sided binomial p-value of its errors (the test the rule
slicer applies to every rule, :func:`medaudit.audit.rule_audit.slice_evidence`). A planted slice whose own
errors are not significant cannot be reported by any error-driven slicer, however it searches; its
members are still findable only by chance. Output: a markdown table per scenario × slice share, and
p@10 (dcbench) of each method split by whether the planted slice was significant (BH is not applied here;
p < 0.05 on the planted slice alone is a necessary, not a sufficient, condition for a rule to pass).

Usage::

    python bench/scenario_diagnosis.py /tmp/bench-out > bench/results/scenario_diagnosis.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from medaudit.studies.cxr_slices.benchmark import frame_to_markdown


def planted_evidence(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per kept run: planted slice size, errors, error rates and binomial p-value."""
    per = runs[runs["kept"]].drop_duplicates("key").copy()
    n_err = np.rint((1 - per["accuracy"]) * per["n_test"]).astype(int)
    k = np.rint(per["baseline_slice"] * n_err).astype(int)
    rate = n_err / per["n_test"]
    per["all_errors"] = n_err
    per["slice_errors"] = k
    per["slice_error_rate"] = k / per["n_slice"]
    per["base_error_rate"] = rate
    per["slice_p"] = stats.binom.sf(k - 1, per["n_slice"], rate)
    return per[["key", "scenario", "slice_share", "seed", "n_test", "n_slice", "all_errors", "slice_errors",
                "slice_error_rate", "base_error_rate", "slice_p"]]  # fmt: skip


def main(out_dir: str) -> None:
    runs = pd.read_parquet(Path(out_dir) / "runs.parquet")
    ev = planted_evidence(runs)
    g = ev.groupby(["scenario", "slice_share"])
    tab = g.agg(
        runs=("key", "size"),
        n_slice=("n_slice", "mean"),
        slice_errors=("slice_errors", "mean"),
        slice_error_rate=("slice_error_rate", "mean"),
        base_error_rate=("base_error_rate", "mean"),
        significant=("slice_p", lambda p: float((p < 0.05).mean())),
    ).reset_index()
    print("## Planted slice evidence per scenario × share (kept runs)\n")
    print(frame_to_markdown(tab, digits=2))
    rows = runs[runs["kept"] & runs["variant"].notna()].merge(ev[["key", "slice_p"]], on="key")
    rows["planted_significant"] = rows["slice_p"] < 0.05
    piv = rows.pivot_table(
        index=["scenario", "variant", "method"],
        columns="planted_significant",
        values="p10_dcbench",
        aggfunc="mean",
    )
    print("\n## p@10 dcbench by whether the planted slice's own errors are significant (p < 0.05)\n")
    piv = piv.rename(columns={False: "not significant", True: "significant"}).reset_index()
    piv.columns = [str(c) for c in piv.columns]
    print(frame_to_markdown(piv, digits=2))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Why a scenario goal is or is not met: reads OUT_DIR/runs.parquet of a bench-scenarios "
        "run and prints (markdown, on stdout) the planted slice's own error evidence per scenario x slice "
        "share (size, errors, error rates, share of runs where its errors are significant, binomial "
        "p < 0.05), and p@10 (dcbench) of each method split by whether the planted slice was significant. "
        "Writes no files.",
    )
    parser.add_argument("out_dir", help="bench-scenarios output folder (holds runs.parquet)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args().out_dir)
