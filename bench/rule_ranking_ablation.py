"""Ablation of the rule slicer's ranking on the scenario benchmark's runs (issue 11).

Re-creates every run of a ``bench-scenarios`` grid from its worker state (cohort, embeddings, concepts:
``OUT/cache/state``), trains the same classifier, and fits the rule slicer twice on the same predicates:
ranked against the cohort's error rate (``stratify=False``) and against the members' classes
(``stratify=True``, the default), and merges each with the mixture slices (``rules+mixture``) under
both nulls for the merged ranking (``_mclass``: members' classes, the audit's default; ``_mcohort``: the
overall error rate). Prints p@10 (dcbench) and the top slice's explanation hit, per scenario.

Usage::

    python bench/rule_ranking_ablation.py /tmp/b/s4/cache/state --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import itertools
import warnings

import numpy as np
import pandas as pd

from medaudit.audit.slicers import get_slicer
from medaudit.audit.slicers.rules import RuleSlicer
from medaudit.studies.cxr_slices import bench_rules as br
from medaudit.studies.cxr_slices import benchmark as b
from medaudit.studies.cxr_slices import scenarios as sc
from medaudit.studies.cxr_slices.metrics import precision_at_k_dcbench

SETTINGS = {"cohort": {"stratify": False}, "class": {"stratify": True}}


def _mixture(cfg: b.BenchConfig, emb: dict, scen: sc.Scenario, y: np.ndarray, probs: np.ndarray, seed: int):
    test = {m: emb[m][scen.test_idx] for m in ("image", "report", "metadata")}
    z = b._fuse(test, "concat", cfg.fusion_dim, seed)
    kw = {**cfg.slicer_params, **b.SLICER_CONFIGS.get("study", {})}
    kw["n_pca_components"] = int(min(kw.get("n_pca_components") or 0, *z.shape)) or None
    mix = get_slicer(cfg.slicer, **kw, random_state=seed * 1000).fit(z, y, probs)
    return np.asarray(mix.predict_proba(z, y, probs))


def one_run(st: dict, name: str, share: float, seed: int) -> dict | None:
    cfg, df = st["config"], st["df"]
    params = b.scenario_params_for(cfg, name, st["kind"])
    scen = sc.build_scenario(name, df, seed=seed, slice_share=share, **params)
    probs = b.train_classifier(cfg, df, st["emb"], scen)
    y = scen.test_labels
    err = (probs >= 0.5).astype(int) != y
    if sc.in_slice_accuracy_gap(scen, (probs >= 0.5).astype(int)) < cfg.min_gap:
        return None
    pred, codes = br.run_predicates(st["concepts"], df, scen.test_idx, y, cfg.rule_metadata_columns)
    mix = _mixture(cfg, st["emb"], scen, y, probs, seed)
    row: dict = {"scenario": name, "share": share, "seed": seed}
    attr = str(scen.metadata["attribute"])
    for label, kw in SETTINGS.items():
        rs = RuleSlicer(n_slices=5, **kw).fit(pred, y, probs)
        scores = np.zeros((len(y), 5))
        got = rs.predict_proba(pred, y, probs)
        scores[:, : got.shape[1]] = got
        rules = [list(r) for r in rs.rules_] + [[]] * (5 - len(rs.rules_))
        row[f"rules_{label}"] = precision_at_k_dcbench(scores, scen.test_slice, k=10)
        t = br.slice_terms(pred, codes, scores[:, 0] > 0.5, rules[0] or None)
        row[f"hit_rules_{label}"] = float(bool(rules[0]) and br.names_attribute(t["terms"], attr))
        for merge, labels in (("class", y), ("cohort", None)):  # the merged list's ranking null
            merged, mrules = br.merge_ranked([scores, mix], [rules, []], err, labels)
            t = br.slice_terms(pred, codes, merged[:, 0] > 0.5, mrules[0] or None)
            row[f"both_{label}_m{merge}"] = precision_at_k_dcbench(merged, scen.test_slice, k=10)
            row[f"hit_{label}_m{merge}"] = float(br.names_attribute(t["terms"], attr))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("state")
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    st = b._load_state(args.state)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    for name, share, seed in itertools.product(("spurious", "rare", "noisy"), (0.05, 0.1, 0.2), seeds):
        r = one_run(st, name, share, seed)
        if r is not None:
            rows.append(r)
            print(r, flush=True)
    res = pd.DataFrame(rows).drop(columns=["share", "seed"])
    print(f"{len(res)} kept runs")
    print(b.frame_to_markdown(res.groupby("scenario").mean().reset_index(), 2))
    print(b.frame_to_markdown(res.drop(columns="scenario").mean().to_frame("all").T, 2))


if __name__ == "__main__":
    main()
