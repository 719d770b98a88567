"""Precision@10 of the audit's best slice and of its top-ranked slice on real-report failures.

Variant ``C`` is the shipped ranking (exploratory rule leads picked with the layered Bonferroni factor,
the merged list ranked on the evidence). Variant ``E`` (tried 2026-12-02, not kept) also adds to every
slice's log10 p the size of the search that produced it: the layered factor for every rule slice and
log10(n_components) for every mixture slice. Failures and cohorts are those of
``bench/heldout_real_reports.py``.

Usage::

    OMP_NUM_THREADS=1 python bench/top_slice_precision.py C heldout 0.15 0.4
    OMP_NUM_THREADS=1 python bench/top_slice_precision.py E heldout 0.15 0.4
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

import heldout_real_reports as h
import medaudit.audit.pipeline as pl
from medaudit.audit import rule_audit
from medaudit.audit.slicers.rules import RuleSlicer
from medaudit.studies.cxr_slices.metrics import precision_at_k_dcbench

CTX: dict[str, Any] = {}


def _patch(variant: str) -> None:
    """Variant E: every rule slice carries its layered factor, every mixture slice log10(K)."""
    if variant != "E":
        return
    store, merge, rank = RuleSlicer._store, rule_audit.merge_ranked, pl._rank_slices

    def store_all(self: RuleSlicer, picked: list[int], rules: np.ndarray, *a: Any, **k: Any) -> None:
        store(self, picked, rules, *a, **k)
        self.slice_search_penalty_ = self.search_penalty(rules[picked]) if picked else np.zeros(0)

    def merge_pen(masks: list[np.ndarray], logp: list[float], *a: Any, **k: Any) -> Any:
        sl, n_comp = CTX["slices"], CTX["K"]
        pen = [
            s.get("search_penalty_log10", 0.0) if s.get("family") == "rules" else np.log10(n_comp) for s in sl
        ]
        return merge(masks, [lp + p for lp, p in zip(logp, pen, strict=True)], *a, **k)

    def rank_ctx(
        slices: list[dict[str, Any]], scores: np.ndarray, table: Any, config: Any, family: str
    ) -> Any:
        CTX["slices"], CTX["K"] = slices, config.n_components
        return rank(slices, scores, table, config, family)

    RuleSlicer._store = store_all  # type: ignore[method-assign]
    rule_audit.merge_ranked = merge_pen
    pl._rank_slices = rank_ctx


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Precision@10 of the audit's best slice and of its top-ranked slice on the real-report "
        "failures of bench/heldout_real_reports.py (seeds 0-2, 1,000 cases each), under ranking variant C "
        "(shipped) or E (search size added to every slice's log10 p). Prints the mean p@10 and top-slice "
        "p@10, then per failure, on stdout; writes no files.",
    )
    parser.add_argument("variant", help="ranking variant: E (search size added; not kept), else C (shipped)")
    parser.add_argument("split", help="failure split of heldout_real_reports.FAILURES (e.g. heldout)")
    parser.add_argument("bg", type=float, help="injected error rate outside the group (bg_error, e.g. 0.15)")
    parser.add_argument("ge", type=float, help="injected error rate inside the group (group_error, e.g. 0.4)")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    variant, split, bg, ge = args.variant, args.split, args.bg, args.ge
    _patch(variant)
    df = h.load_table()
    rows = []
    for f in (f for f in h.FAILURES if f.split == split):
        mask = h.group_mask(df, f)
        for seed in (0, 1, 2):
            t, gt = h.make_case(df, mask, seed, 1000, bg, ge)
            with tempfile.TemporaryDirectory() as td:
                s = h.run_medaudit(t, seed, Path(td))
            top = np.argsort(-s[:, 0], kind="stable")[:10]
            rows.append((f.name, seed, precision_at_k_dcbench(s, gt, 10), float(gt[top].mean())))
    r = pd.DataFrame(rows, columns=["failure", "seed", "p10", "top1_p10"])
    print(
        f"{variant} {split} bg={bg} group={ge}: p10 {r.p10.mean():.2f}, top slice p10 {r.top1_p10.mean():.2f}"
    )
    print(r.groupby("failure")[["p10", "top1_p10"]].mean().round(2).to_string())


if __name__ == "__main__":
    main()
