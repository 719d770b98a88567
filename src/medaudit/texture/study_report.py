"""Analysis and HTML report of a texture-robustness study's ``results.parquet``.

Input: the long table written by :func:`medaudit.texture.study.run_study` (one row per model x
corruption x severity x case x class, from :func:`medaudit.texture.evaluate.evaluate`, plus the
study's columns ``train_filter``, ``train_severity``, ``seed``, ``train_key``).

* :func:`model_scores` averages Dice over cases and foreground classes, per model and test condition;
* :func:`heatmap_table` gives the train x test matrix of mean Dice (clean column first);
* :func:`corruption_errors` gives each model's corruption error (CE) and relative CE per test
  corruption against the clean-trained baseline of the same seed (ImageNet-C style, summed over
  severities; :mod:`medaudit.texture.metrics`);
* :func:`family_ratios` averages CE per corruption family, with bootstrap CIs over seeds, and marks
  whether the family was *seen* in training (the training filter's own family) or not;
* :func:`clean_cost` is the clean Dice of each filter minus the baseline's (bootstrap CI over seeds);
* :func:`robustness_ranking` ranks filters by mean CE on *unseen* families (seen families apart);
* :func:`write_study_report` renders all of it into ``templates/study.html``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medaudit import __version__
from medaudit.errors import InputError
from medaudit.io import atomic_write_text

__all__ = [
    "bootstrap_ci",
    "clean_cost",
    "corruption_errors",
    "family_ratios",
    "heatmap_table",
    "model_scores",
    "robustness_ranking",
    "unseen_dice_gain",
    "write_study_report",
]

BASELINE = "none"
_MODEL = ["train_filter", "train_severity", "seed"]
_REQUIRED = ("train_filter", "train_severity", "seed", "corruption", "severity", "dice")


def _check(results: pd.DataFrame) -> None:
    missing = [c for c in _REQUIRED if c not in results.columns]
    if missing:
        raise InputError(f"results table: missing column(s) {missing}")


def _is_foreground(cls: pd.Series) -> pd.Series:
    s = cls.astype(str).str.lower()
    return ~s.isin({"0", "background", "bg", "outside"})


def _family(name: str) -> str:
    if name == BASELINE:
        return "clean"
    try:
        from medaudit.texture.filters import family_of

        return str(family_of(name))
    except (ImportError, KeyError, ValueError):
        return name


def model_scores(results: pd.DataFrame) -> pd.DataFrame:
    """Mean Dice (and HD95 when present) over cases and foreground classes.

    One row per ``train_filter, train_severity, seed, corruption, family, severity``.
    """
    _check(results)
    df = results
    if "class" in df.columns:
        df = df[_is_foreground(df["class"])]
    df = df.copy()
    if "family" not in df.columns:
        df["family"] = df["corruption"].map(_family)
    df["family"] = df["family"].fillna("clean").astype(str)
    cols = ["dice"] + (["hd95"] if "hd95" in df.columns else [])
    keys = [*_MODEL, "corruption", "family", "severity"]
    if "train_families" in df.columns:  # the families a model's recipe covers (constant per model)
        df["train_families"] = df["train_families"].fillna("").astype(str)
        keys.append("train_families")
    # mean over classes within a case first, then over cases (each case weighs the same)
    case_key = ["case"] if "case" in df.columns else []
    per_case = df.groupby(keys + case_key, dropna=False)[cols].mean().reset_index()
    out = per_case.groupby(keys, dropna=False)[cols].mean().reset_index()
    out["train_severity"] = out["train_severity"].astype(int)
    out["seed"] = out["seed"].astype(int)
    out["severity"] = out["severity"].astype(int)
    return out


def _clean_mask(ms: pd.DataFrame) -> pd.Series:
    return (ms["severity"] == 0) | (ms["corruption"] == BASELINE)


def _model_label(f: str, s: int) -> str:
    if f == BASELINE or int(s) == 0:  # the baseline, or a recipe model (no filter strength)
        return f
    return f"{f}@{s}"


def heatmap_table(scores: pd.DataFrame, corruptions: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean Dice (over seeds and severities 1..5): rows ``filter@strength``, columns ``clean`` + corruptions."""
    clean = scores[_clean_mask(scores)]
    corr = scores[~_clean_mask(scores)]
    cols = list(corruptions) if corruptions is not None else sorted(corr["corruption"].unique())
    rows = []
    order = _filter_order(scores)
    for f, s in order:
        r: dict[str, Any] = {"model": _model_label(f, s)}
        sel = (clean["train_filter"] == f) & (clean["train_severity"] == s)
        r["clean"] = float(clean.loc[sel, "dice"].mean()) if sel.any() else np.nan
        for c in cols:
            sel = (corr["train_filter"] == f) & (corr["train_severity"] == s) & (corr["corruption"] == c)
            r[c] = float(corr.loc[sel, "dice"].mean()) if sel.any() else np.nan
        rows.append(r)
    return pd.DataFrame(rows).set_index("model")


def _filter_order(scores: pd.DataFrame) -> list[tuple[str, int]]:
    pairs = scores[["train_filter", "train_severity"]].drop_duplicates()
    pairs = sorted(
        ((str(f), int(s)) for f, s in pairs.itertuples(index=False)), key=lambda p: (p[0] != BASELINE, p)
    )
    return pairs


def _ce(model: np.ndarray, base: np.ndarray, model_clean: float, base_clean: float) -> tuple[float, float]:
    """CE and relative CE of one corruption (arrays over the same severities), by :mod:`~medaudit.texture.metrics`."""
    from medaudit.texture.metrics import corruption_error, relative_corruption_error

    return corruption_error(model, base), relative_corruption_error(model_clean, model, base_clean, base)


def corruption_errors(scores: pd.DataFrame) -> pd.DataFrame:
    """CE and relative CE of every model on every test corruption, vs the ``none`` model of the same seed.

    Columns: ``train_filter, train_severity, seed, corruption, family, train_family, seen, dice, ce, rce``
    (``dice`` = mean over severities). Seeds without a baseline model use the baseline averaged over seeds.
    """
    clean = scores[_clean_mask(scores)]
    corr = scores[~_clean_mask(scores)]
    base = corr[corr["train_filter"] == BASELINE]
    if base.empty:
        raise InputError("results table: no rows of the 'none' (clean-trained) baseline model; CE needs it")
    base_clean = clean[clean["train_filter"] == BASELINE]
    rows = []
    for (f, s, seed, c), g in corr.groupby(["train_filter", "train_severity", "seed", "corruption"]):
        g = g.sort_values("severity")
        b = base[(base["seed"] == seed) & (base["corruption"] == c)]
        bc = base_clean[base_clean["seed"] == seed]
        if b.empty:
            b = base[base["corruption"] == c].groupby("severity", as_index=False)["dice"].mean()
            bc = base_clean
        b = b.set_index("severity")["dice"]
        sev = [v for v in g["severity"] if v in b.index]
        if not sev:
            continue
        mdice = g.set_index("severity").loc[sev, "dice"].to_numpy(dtype=float)
        bdice = b.loc[sev].to_numpy(dtype=float)
        mc = clean[(clean["train_filter"] == f) & (clean["train_severity"] == s) & (clean["seed"] == seed)]
        m_clean = float(mc["dice"].mean()) if not mc.empty else np.nan
        b_clean = float(bc["dice"].mean()) if not bc.empty else np.nan
        ce, rce = _ce(mdice, bdice, m_clean, b_clean)
        fam = str(g["family"].iloc[0])
        tfams = (
            [t for t in str(g["train_families"].iloc[0]).split(",") if t]
            if "train_families" in g.columns
            else [_family(str(f))]
        )
        tfam = ",".join(tfams)
        rows.append(
            {
                "train_filter": f,
                "train_severity": int(s),
                "seed": int(seed),
                "corruption": c,
                "family": fam,
                "train_family": tfam,
                "seen": f != BASELINE and fam in tfams,
                "dice": float(mdice.mean()),
                "ce": ce,
                "rce": rce,
            }
        )
    return pd.DataFrame(rows)


def bootstrap_ci(
    values: Sequence[float], n_boot: int = 2000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float, float]:
    """Mean and percentile bootstrap CI of the mean (resampling the values, e.g. seeds, with replacement).

    With one value the interval collapses to it (no spread can be estimated from one seed).
    """
    x = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    if x.size == 0:
        return (np.nan, np.nan, np.nan)
    if x.size == 1:
        return (float(x[0]), float(x[0]), float(x[0]))
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(x.mean()), float(lo), float(hi)


def family_ratios(ce: pd.DataFrame, n_boot: int = 2000) -> pd.DataFrame:
    """Mean CE / relative CE per filter@strength x test family, with bootstrap CIs over seeds."""
    rows = []
    per_seed = ce.groupby(["train_filter", "train_severity", "family", "seen", "seed"], as_index=False)[
        ["ce", "rce"]
    ].mean()
    for (f, s, fam, seen), g in per_seed.groupby(["train_filter", "train_severity", "family", "seen"]):
        m, lo, hi = bootstrap_ci(g["ce"].tolist(), n_boot)
        rm, rlo, rhi = bootstrap_ci(g["rce"].tolist(), n_boot)
        rows.append(
            {
                "model": _model_label(f, int(s)),
                "train_filter": f,
                "train_severity": int(s),
                "family": fam,
                "seen": bool(seen),
                "n_seeds": len(g),
                "ce": m,
                "ce_lo": lo,
                "ce_hi": hi,
                "rce": rm,
                "rce_lo": rlo,
                "rce_hi": rhi,
            }
        )
    return pd.DataFrame(rows)


def clean_cost(scores: pd.DataFrame, n_boot: int = 2000) -> pd.DataFrame:
    """Clean Dice of each filter@strength minus the baseline's (paired by seed), with bootstrap CIs."""
    clean = scores[_clean_mask(scores)]
    per = clean.groupby(_MODEL, as_index=False)["dice"].mean()
    base = per[per["train_filter"] == BASELINE].set_index("seed")["dice"]
    if base.empty:
        raise InputError("results table: no clean rows of the 'none' baseline model")
    rows = []
    for (f, s), g in per.groupby(["train_filter", "train_severity"]):
        deltas = [
            d - (base[sd] if sd in base.index else base.mean())
            for sd, d in zip(g["seed"], g["dice"], strict=True)
        ]
        m, lo, hi = bootstrap_ci(deltas, n_boot)
        dm = bootstrap_ci(g["dice"].tolist(), n_boot)
        rows.append(
            {
                "model": _model_label(f, int(s)),
                "train_filter": f,
                "train_severity": int(s),
                "n_seeds": len(g),
                "clean_dice": dm[0],
                "delta": m,
                "delta_lo": lo,
                "delta_hi": hi,
            }
        )
    out = pd.DataFrame(rows)
    return out.sort_values(
        ["train_filter", "train_severity"],
        key=lambda c: c if c.name != "train_filter" else c.ne(BASELINE).astype(str) + c,
    )


def unseen_dice_gain(ce: pd.DataFrame, n_boot: int = 2000) -> pd.DataFrame:
    """Mean Dice on test corruptions from families the filter did NOT see, minus the baseline's on the
    same corruptions (paired by seed), with bootstrap CIs; ``seen_delta`` is the same on seen families."""
    base = ce[ce["train_filter"] == BASELINE].set_index(["seed", "corruption"])["dice"]
    base_mean = ce[ce["train_filter"] == BASELINE].groupby("corruption")["dice"].mean()
    rows = []
    for (f, s), g in ce[ce["train_filter"] != BASELINE].groupby(["train_filter", "train_severity"]):
        out: dict[str, Any] = {"model": _model_label(f, int(s)), "train_filter": f, "train_severity": int(s)}
        for part, sel in (("unseen", ~g["seen"]), ("seen", g["seen"])):
            gg = g[sel]
            per_seed = []
            for seed, h in gg.groupby("seed"):
                b = [base.get((seed, c), base_mean.get(c, np.nan)) for c in h["corruption"]]
                per_seed.append(float(np.nanmean(h["dice"].to_numpy() - np.asarray(b, dtype=float))))
            m, lo, hi = bootstrap_ci(per_seed, n_boot)
            out.update(
                {
                    f"{part}_delta": m,
                    f"{part}_lo": lo,
                    f"{part}_hi": hi,
                    f"n_{part}": int(gg["corruption"].nunique()),
                }
            )
        rows.append(out)
    cols = ["model", "train_filter", "train_severity"]
    for part in ("unseen", "seen"):
        cols += [f"{part}_delta", f"{part}_lo", f"{part}_hi", f"n_{part}"]
    return pd.DataFrame(rows, columns=cols)


def robustness_ranking(fam: pd.DataFrame, cost: pd.DataFrame, gain: pd.DataFrame) -> pd.DataFrame:
    """Filters ranked by mean CE over *unseen* families (lower = more robust); seen-family CE apart."""
    rows = []
    for (f, s), g in fam.groupby(["train_filter", "train_severity"]):
        un, se = g[~g["seen"]], g[g["seen"]]
        c = cost[(cost["train_filter"] == f) & (cost["train_severity"] == s)]
        gn = gain[(gain["train_filter"] == f) & (gain["train_severity"] == s)]
        rows.append(
            {
                "model": _model_label(f, int(s)),
                "train_filter": f,
                "train_severity": int(s),
                "train_family": _family(str(f)),
                "unseen_ce": float(un["ce"].mean()) if len(un) else np.nan,
                "unseen_families": len(un),
                "seen_ce": float(se["ce"].mean()) if len(se) else np.nan,
                "unseen_dice_delta": float(gn["unseen_delta"].iloc[0]) if len(gn) else 0.0,
                "clean_delta": float(c["delta"].iloc[0]) if len(c) else np.nan,
            }
        )
    out = pd.DataFrame(rows).sort_values(["unseen_ce", "model"]).reset_index(drop=True)
    out.insert(0, "rank", np.arange(1, len(out) + 1))
    return out


# --------------------------------------------------------------------------------------------------
# Figures and HTML


def _heatmap_figure(table: pd.DataFrame) -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    vals = table.to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * vals.shape[1], 0.9 + 0.38 * vals.shape[0]))
    im = ax.imshow(
        vals, cmap="viridis", vmin=np.nanmin(vals) if np.isfinite(vals).any() else 0, vmax=1.0, aspect="auto"
    )
    ax.set_xticks(range(vals.shape[1]), labels=list(table.columns), rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(vals.shape[0]), labels=list(table.index), fontsize=8)
    if vals.size <= 600:
        for i in range(vals.shape[0]):
            for j in range(vals.shape[1]):
                if np.isfinite(vals[i, j]):
                    ax.text(j, i, f"{vals[i, j]:.2f}", ha="center", va="center", fontsize=6, color="w")
    ax.set_xlabel("test condition (mean over severities)")
    ax.set_ylabel("training filter @ strength")
    fig.colorbar(im, ax=ax, label="mean Dice", shrink=0.8)
    return fig


def _family_figure(fam: pd.DataFrame) -> Any:
    import matplotlib.pyplot as plt

    f = fam[fam["train_filter"] != BASELINE]
    models = list(dict.fromkeys(f["model"]))
    fams = sorted(f["family"].unique())
    fig, ax = plt.subplots(figsize=(max(5.0, 0.5 * len(models) * max(1, len(fams)) / 2 + 2), 3.6))
    width = 0.8 / max(1, len(fams))
    for k, fa in enumerate(fams):
        g = f[f["family"] == fa].set_index("model").reindex(models)
        x = np.arange(len(models)) + k * width
        err = np.vstack([(g["ce"] - g["ce_lo"]).to_numpy(), (g["ce_hi"] - g["ce"]).to_numpy()])
        ax.bar(x, g["ce"], width, yerr=np.nan_to_num(err), capsize=2, label=fa)
        seen = g["seen"].fillna(False).to_numpy(dtype=bool)
        ax.scatter(x[seen], g["ce"].to_numpy()[seen] + 0.02, marker="*", color="k", s=18)
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    top = float(np.nanmax(f["ce_hi"].to_numpy(dtype=float), initial=1.0))
    ax.set_ylim(0, max(1.2, top) * 1.35)  # room for the legend above the bars
    ax.set_xticks(
        np.arange(len(models)) + 0.4 - width / 2, labels=models, rotation=45, ha="right", fontsize=8
    )
    ax.set_ylabel("CE ratio vs clean-trained baseline")
    ax.legend(
        fontsize=7, ncols=min(4, len(fams)), title="test family (★ = seen in training)", title_fontsize=7
    )
    return fig


def _records(df: pd.DataFrame, digits: int = 3) -> list[dict[str, Any]]:
    out = []
    for r in df.to_dict("records"):
        out.append(
            {
                k: (
                    f"{v:.{digits}f}"
                    if isinstance(v, float) and np.isfinite(v)
                    else ("–" if isinstance(v, float) else v)
                )
                for k, v in r.items()
            }
        )
    return out


def write_study_report(
    results: pd.DataFrame,
    config: Any,
    path: str | os.PathLike[str],
    n_boot: int | None = None,
    texture_bias: pd.DataFrame | None = None,
) -> Path:
    """Analyse ``results`` and write the self-contained HTML report to ``path`` (atomically).

    ``texture_bias``: per-model table of :func:`medaudit.texture.bias.study_texture_bias`, shown
    averaged over seeds when given.
    """
    from medaudit.report.html import figure_to_data_uri, render
    from medaudit.texture.severity import with_version

    n_boot = int(n_boot or getattr(config, "bootstrap", 2000))
    results = with_version(results)  # results from before versioned severities: table v1
    scores = model_scores(results)
    corruptions = list(
        getattr(config, "test_corruptions", None)
        or sorted(scores.loc[~_clean_mask(scores), "corruption"].unique())
    )
    heat = heatmap_table(scores, [c for c in corruptions if c in set(scores["corruption"])])
    ce = corruption_errors(scores)
    fam = family_ratios(ce, n_boot)
    cost = clean_cost(scores, n_boot)
    gain = unseen_dice_gain(ce, n_boot)
    rank = robustness_ranking(fam, cost, gain)
    fam_tab = fam.copy()
    fam_tab["seen"] = fam_tab["seen"].map({True: "seen", False: "unseen"})
    html = render(
        "study.html",
        version=__version__,
        name=str(getattr(config, "name", "study")),
        source=str(getattr(config, "source", "")),
        n_rows=len(results),
        severity_versions=sorted(int(v) for v in results["severity_version"].unique()),
        n_models=int(scores[_MODEL].drop_duplicates().shape[0]),
        seeds=sorted(int(s) for s in scores["seed"].unique()),
        n_boot=n_boot,
        heatmap_uri=figure_to_data_uri(_heatmap_figure(heat)),
        heat_columns=list(heat.columns),
        heat_rows=[
            {"model": i, "values": [("–" if not np.isfinite(v) else f"{v:.3f}") for v in r]}
            for i, r in zip(heat.index, heat.to_numpy(dtype=float), strict=True)
        ],
        family_uri=figure_to_data_uri(_family_figure(fam))
        if (fam["train_filter"] != BASELINE).any()
        else None,
        unseen_families=_records(
            fam_tab[fam_tab["seen"] == "unseen"].drop(columns=["train_filter", "train_severity", "seen"])
        ),
        seen_families=_records(
            fam_tab[fam_tab["seen"] == "seen"].drop(columns=["train_filter", "train_severity", "seen"])
        ),
        clean_cost=_records(cost.drop(columns=["train_filter", "train_severity"])),
        gain=_records(gain.drop(columns=["train_filter", "train_severity"])),
        ranking=_records(rank.drop(columns=["train_filter", "train_severity"])),
        texture_bias=_texture_bias_records(texture_bias),
    )
    return atomic_write_text(path, html)


def _texture_bias_records(table: pd.DataFrame | None) -> list[dict[str, Any]] | None:
    if table is None or table.empty:
        return None
    from medaudit.texture.bias import bias_by_row

    return _records(bias_by_row(table))


def main_tables(results: pd.DataFrame, n_boot: int = 2000) -> dict[str, pd.DataFrame]:
    """All analysis tables at once (``heatmap``, ``ce``, ``families``, ``clean_cost``, ``gain``, ``ranking``)."""
    scores = model_scores(results)
    ce = corruption_errors(scores)
    fam = family_ratios(ce, n_boot)
    cost = clean_cost(scores, n_boot)
    gain = unseen_dice_gain(ce, n_boot)
    return {
        "heatmap": heatmap_table(scores),
        "ce": ce,
        "families": fam,
        "clean_cost": cost,
        "gain": gain,
        "ranking": robustness_ranking(fam, cost, gain),
    }
