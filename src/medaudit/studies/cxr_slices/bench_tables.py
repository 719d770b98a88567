"""Result tables of the benchmark: mean, std and bootstrap 95% CI per cell, slicer instability, explanation
hit rates, modality contributions, and their markdown rendering."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from medaudit.studies.cxr_slices.bench_config import DEFAULT_VARIANTS, METRIC_COLUMNS, RULE_VARIANTS


def aggregate(runs: pd.DataFrame, n_boot: int = 1000, by_share: bool = False) -> pd.DataFrame:
    """Mean, std and bootstrap 95% CI of each metric over kept runs, per scenario × variant × fusion ×
    slicer config × method (and slice share when ``by_share``). Slicer seeds are averaged within a run
    first, so the CI is over runs."""
    kept = runs[runs["kept"] & runs["variant"].notna()] if "variant" in runs else runs.iloc[:0]
    if kept.empty:
        return pd.DataFrame()
    keys = [
        "scenario",
        *(["slice_share"] if by_share else []),
        "variant",
        "fusion",
        "slicer_config",
        "method",
    ]
    metric_cols = [c for c in (*METRIC_COLUMNS, "hit", "baseline", "baseline_slice") if c in kept]
    eta_cols = [c for c in kept.columns if c.startswith(("eta2_", "var_share_"))]
    per_run = kept.groupby([*keys, "key"], dropna=False)[[*metric_cols, *eta_cols]].mean().reset_index()
    out = []
    for gkey, g in per_run.groupby(keys, dropna=False):
        rec: dict[str, Any] = dict(zip(keys, gkey, strict=True))
        rec["n_runs"] = len(g)
        rec["n_failed"] = int(g["p10_dcbench"].isna().sum()) if "p10_dcbench" in g else 0
        for c in metric_cols:
            rec.update(_metric_stats(g[c].dropna().to_numpy(), c, n_boot))
        for c in eta_cols:
            rec[c] = float(g[c].mean()) if g[c].notna().any() else np.nan
        out.append(rec)
    return _sort_results(pd.DataFrame(out), by_share)


def _metric_stats(v: np.ndarray, c: str, n_boot: int) -> dict[str, float]:
    """Mean, bootstrap 95% CI and std of metric ``c`` over runs (NaN without values)."""
    from medaudit.stats import bootstrap_ci

    if len(v) == 0:
        return {c: np.nan, f"{c}_lo": np.nan, f"{c}_hi": np.nan, f"{c}_std": np.nan}
    mean, lo, hi = bootstrap_ci(v, n_boot=n_boot, seed=0)
    return {
        c: mean,
        f"{c}_lo": lo,
        f"{c}_hi": hi,
        f"{c}_std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
    }


def _sort_results(res: pd.DataFrame, by_share: bool) -> pd.DataFrame:
    """Per scenario (and share): medaudit rows first, then by method, the study's variant order, fusion."""
    order = {"+".join(v): i for i, v in enumerate(DEFAULT_VARIANTS)}
    res["_o"] = res["variant"].map(order).fillna(99)
    res["_m"] = (res["method"] != "medaudit").astype(int)
    return (
        res.sort_values(["scenario", *(["slice_share"] if by_share else []), "_m", "method", "_o", "fusion"])
        .drop(columns=["_o", "_m"])
        .reset_index(drop=True)
    )


def stability(runs: pd.DataFrame) -> pd.DataFrame:
    """Slicer instability: per run, the spread of precision@10 (study) across slicer seeds; averaged per
    scenario × variant × fusion × slicer config. Needs ``slicer_seeds > 1``."""
    kept = runs[runs["kept"] & (runs.get("method") == "medaudit")] if "method" in runs else runs.iloc[:0]
    if kept.empty or kept["slicer_seed"].nunique() < 2:
        return pd.DataFrame()
    keys = ["scenario", "variant", "fusion", "slicer_config"]
    per = kept.groupby([*keys, "key"])[["p10_study", "p10_dcbench"]].agg(["std", lambda s: s.max() - s.min()])
    per.columns = [
        "p10_study_seed_std",
        "p10_study_seed_range",
        "p10_dcbench_seed_std",
        "p10_dcbench_seed_range",
    ]
    return per.groupby(keys).mean().reset_index()


def hit_rates(runs: pd.DataFrame, n_boot: int = 1000) -> pd.DataFrame:
    """Explanation hit rate over all scenarios: the share of kept runs whose top-ranked slice's rule or
    top concept names the planted attribute, with a bootstrap 95% CI, per variant × fusion × method."""
    from medaudit.stats import bootstrap_ci

    if "hit" not in runs:
        return pd.DataFrame()
    kept = runs[runs["kept"] & runs["hit"].notna()]
    kept = kept[kept["slicer_seed"] == 0] if "slicer_seed" in kept else kept
    out = []
    for (v, f, m), g in kept.groupby(["variant", "fusion", "method"]):
        mean, lo, hi = bootstrap_ci(g["hit"].to_numpy(dtype=float), n_boot=n_boot, seed=0)
        rec = {
            "variant": v,
            "fusion": f,
            "method": m,
            "n_runs": len(g),
            "hit": mean,
            "hit_lo": lo,
            "hit_hi": hi,
        }
        for scen, gs in g.groupby("scenario"):
            rec[f"hit_{scen}"] = float(gs["hit"].mean())
        out.append(rec)
    return pd.DataFrame(out)


def contributions(results: pd.DataFrame) -> pd.DataFrame:
    """Per multimodal variant and fusion: each modality's share of the fused variance (``var_share_*``, what
    PCA and the mixture see), its eta² under the slice assignment and that eta²'s share of the total
    (``eta_share_*``): the concatenation-bias check."""
    if results.empty:
        return results
    multi = results["variant"].str.contains("+", regex=False) & ~results["variant"].isin(RULE_VARIANTS)
    r = results[(results["method"] == "medaudit") & multi].copy()
    eta = [c for c in r.columns if c.startswith("eta2_")]
    vs = [c for c in r.columns if c.startswith("var_share_")]
    tot = r[eta].sum(axis=1, min_count=1)
    for c in eta:
        r[c.replace("eta2_", "eta_share_")] = r[c] / tot
    shares = [c.replace("eta2_", "eta_share_") for c in eta]
    cols = ["scenario", "variant", "fusion", "slicer_config", *vs, *eta, *shares, "p10_study", "p10_dcbench"]
    return r[[c for c in cols if c in r.columns]].reset_index(drop=True)


def _fmt(row: pd.Series, c: str) -> str:
    if c not in row or pd.isna(row[c]):
        return "–"
    return f"{row[c]:.2f} [{row[f'{c}_lo']:.2f}, {row[f'{c}_hi']:.2f}]"


def markdown_table(
    results: pd.DataFrame, metrics: Sequence[str] = ("p10_study", "p25_study", "p10_dcbench", "p25_dcbench")
) -> str:
    """Results as a markdown table: mean [95% CI] per metric."""
    if results.empty:
        return "_no kept runs_\n"
    metrics = [*metrics, *(["hit"] if "hit" in results else [])]
    head = ["scenario", "variant", "fusion", "slicer", "method", "runs", *metrics, "baseline"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in results.iterrows():
        cells = [
            r["scenario"],
            r["variant"],
            r["fusion"],
            r["slicer_config"],
            r["method"],
            f"{int(r['n_runs'])}" + (f" ({int(r['n_failed'])} failed)" if r.get("n_failed", 0) else ""),
        ]
        cells += [_fmt(r, m) for m in metrics] + [f"{r['baseline']:.2f}"]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines) + "\n"


def frame_to_markdown(frame: pd.DataFrame, digits: int = 3) -> str:
    """A data frame as a GitHub markdown table (floats rounded to ``digits``)."""
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in frame.itertuples(index=False):
        cells = [f"{v:.{digits}f}" if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
