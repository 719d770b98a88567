"""Is the planted failure a slice or a class-level failure? (issue 11, the noisy scenario)

Re-creates kept runs of a ``bench-scenarios`` grid from its worker state (``OUT/cache/state``), trains the
same classifier, and reports per run the planted slice's error rate, the error rate of the *other*
members of its class (the planted slices are one class: negatives with devices, positives on laterals,
positives on frontals) and two p-values of its errors: against the run's overall error rate (binomial)
and against the rest of its class (Fisher's exact one-sided test, the audit's ranking null,
:func:`medaudit.audit.rule_audit.slice_evidence`). A planted slice that fails no more than the rest of
its class is a class-level failure: the audit reports it in its per-class error rates, and its rules
rank after slices that fail more than their class.

Usage::

    python bench/planted_vs_class.py /tmp/b/s1/cache/state --scenarios noisy,rare,spurious --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import pandas as pd

from medaudit.audit.rule_audit import slice_evidence
from medaudit.studies.cxr_slices import benchmark as b
from medaudit.studies.cxr_slices import scenarios as sc


def one_run(st: dict, name: str, share: float, seed: int) -> dict:
    cfg, df = st["config"], st["df"]
    params = b.scenario_params_for(cfg, name, st["kind"])
    scen = sc.build_scenario(name, df, seed=seed, slice_share=share, **params)
    probs = b.train_classifier(cfg, df, st["emb"], scen)
    y, pred = scen.test_labels, (probs >= 0.5).astype(int)
    err = pred != y
    s = scen.test_slice.astype(bool)
    cls = int(np.bincount(y[s]).argmax())
    rest = (y == cls) & ~s
    return {
        "scenario": name,
        "share": share,
        "seed": seed,
        "kept": sc.in_slice_accuracy_gap(scen, pred) >= cfg.min_gap,
        "n_slice": int(s.sum()),
        "slice_err": float(err[s].mean()),
        "class_rest_n": int(rest.sum()),
        "class_rest_err": float(err[rest].mean()) if rest.any() else np.nan,
        "log10_p_cohort": slice_evidence(s, err)["log10_p"],
        "log10_p_class": slice_evidence(s, err, y)["log10_p"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("state")
    ap.add_argument("--scenarios", default="noisy,rare,spurious")
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    st = b._load_state(args.state)
    rows = [
        one_run(st, name, share, int(seed))
        for name in args.scenarios.split(",")
        for share in (0.05, 0.1, 0.2)
        for seed in args.seeds.split(",")
    ]
    df = pd.DataFrame(rows)
    kept = df[df["kept"]]
    print(b.frame_to_markdown(df.round(3)))
    summ = kept.groupby("scenario").agg(
        runs=("seed", "size"),
        slice_err=("slice_err", "mean"),
        class_rest_err=("class_rest_err", "mean"),
        significant_vs_cohort=("log10_p_cohort", lambda v: float((v < np.log10(0.05)).mean())),
        significant_vs_class=("log10_p_class", lambda v: float((v < np.log10(0.05)).mean())),
    )
    print("\n## Kept runs, per scenario\n")
    print(b.frame_to_markdown(summ.reset_index().round(3)))


if __name__ == "__main__":
    main()
