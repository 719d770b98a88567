"""Where the words that name a held-out failure group rank in the rule search's n-gram vocabulary.

For each failure of a split of ``bench/heldout_real_reports.py`` (seed 0 cohort), list the n-grams
most enriched in the group, with their document frequency and their rank by frequency among all
n-grams in at least 10 reports: ranks above the audit's ``rule_ngrams`` cap are never offered to the
rule search.

Usage: ``python bench/ngram_rank_probe.py --split fresh4``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from heldout_real_reports import FAILURES, group_mask, load_table, make_case
from medaudit.audit.concepts.ngrams import ngram_features


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--split", default="fresh4")
    ap.add_argument("--top", type=int, default=5)
    args = ap.parse_args(argv)
    df = load_table()
    for f in (f for f in FAILURES if f.split == args.split):
        t, gt = make_case(df, group_mask(df, f), 0, 1000, 0.1, 0.7)
        x = ngram_features(t["report"].tolist(), min_df=10, max_df=0.5, max_features=None)
        dfreq = x.sum().sort_values(ascending=False)
        rank = {c: i + 1 for i, c in enumerate(dfreq.index)}
        inside, outside = x[gt].mean(), x[~gt].mean()
        lift = ((inside + 1e-3) / (outside + 1e-3)).sort_values(ascending=False)
        cells = [f"{c[13:-1]} (df {int(dfreq[c])}, rank {rank[c]}, in {inside[c]:.0%} of the group)"
                 for c in lift.index[: args.top]]  # fmt: skip
        print(f"{f.name}: {x.shape[1]} n-grams; " + "; ".join(cells))


if __name__ == "__main__":
    main()
