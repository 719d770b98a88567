"""One benchmark run (scenario × slice share × seed): build the scenario, train the audited classifier,
apply the accuracy-gap filter, fit the slicer on every variant × fusion × slicer config × seed and score it."""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medaudit.errors import InputError
from medaudit.studies.cxr_slices import scenarios as sc
from medaudit.studies.cxr_slices.bench_config import (
    MODALITIES,
    SLICER_CONFIGS,
    BenchConfig,
    RunTask,
    _config_from_json,
    scenario_params_for,
)
from medaudit.studies.cxr_slices.bench_domino import _read_peer, _run_domino_peer
from medaudit.studies.cxr_slices.bench_scoring import (
    _explanation_hit,
    _fuse,
    _score_rows,
    _variance_shares,
    modality_eta2,
)


@functools.lru_cache(maxsize=2)
def _load_state(state_dir: str) -> dict[str, Any]:
    """The cohort table, embeddings and config a run needs, loaded once per worker process."""
    d = Path(state_dir)
    return {
        "df": pd.read_parquet(d / "cohort.parquet"),
        "emb": {m: np.load(d / f"emb_{m}.npy") for m in MODALITIES if (d / f"emb_{m}.npy").exists()},
        "config": _config_from_json(json.loads((d / "config.json").read_text())),
        "kind": (d / "kind.txt").read_text().strip(),
        "peer_python": _read_peer(d),
        "concepts": pd.read_parquet(d / "concepts.parquet") if (d / "concepts.parquet").exists() else None,
    }


def train_classifier(
    config: BenchConfig, df: pd.DataFrame, emb: dict[str, np.ndarray], scenario: sc.Scenario
) -> np.ndarray:
    """Train the audited classifier on the manipulated training labels; return test P(class 1)."""
    from medaudit.studies.cxr_slices import classifier as clf_mod

    if config.classifier == "head":
        model = clf_mod.train_head(
            emb["image"][scenario.train_idx],
            scenario.train_labels,
            random_state=scenario.metadata.get("seed", 0),
            **config.classifier_params,
        )
        return _positive_proba(model, emb["image"][scenario.test_idx])
    if config.classifier == "cnn":
        paths = df["image"].astype(str).to_numpy()
        model = clf_mod.train_cnn(
            paths[scenario.train_idx].tolist(),
            scenario.train_labels,
            random_state=scenario.metadata.get("seed", 0),
            **config.classifier_params,
        )
        return _positive_proba(model, paths[scenario.test_idx].tolist())
    raise InputError(f"classifier '{config.classifier}': choose head or cnn")


def _positive_proba(model: Any, x: Any) -> np.ndarray:
    p = np.asarray(model.predict_proba(x), dtype=np.float64)
    return p[:, 1] if p.ndim == 2 else p


def run_one(
    config: BenchConfig,
    df: pd.DataFrame,
    emb: dict[str, np.ndarray],
    kind: str,
    task: RunTask,
    peer_python: str = "",
    concepts: pd.DataFrame | None = None,
) -> list[dict[str, Any]]:
    """Execute one run and return its rows (one per variant × fusion × slicer config × slicer seed × method)."""
    from medaudit.device import seed_everything

    seed_everything(task.seed)
    t0 = time.perf_counter()
    params = scenario_params_for(config, task.scenario, kind)
    scen = sc.build_scenario(task.scenario, df, seed=task.seed, slice_share=task.slice_share, **params)
    probs = train_classifier(config, df, emb, scen)
    base = _run_columns(config, task, scen, probs)
    base["train_s"] = time.perf_counter() - t0
    if not base["kept"]:
        return [base]
    pred_run = None  # (predicates, concept codes) of the test split, when rules or hits are measured
    if concepts is not None:
        from medaudit.studies.cxr_slices.bench_rules import run_predicates

        pred_run = run_predicates(concepts, df, scen.test_idx, scen.test_labels, config.rule_metadata_columns)
    test = {m: emb[m][scen.test_idx] for m in MODALITIES if m in emb}
    run = _Run(config, task, scen, probs, test, base, pred_run)
    rows, mix_scores = _embedding_rows(run, peer_python)
    if pred_run is not None:
        rows += _rule_rows(config, base, scen, probs, pred_run, mix_scores)
    return rows


def _run_columns(config: BenchConfig, task: RunTask, scen: sc.Scenario, probs: np.ndarray) -> dict[str, Any]:
    """The run's own columns, in each of its rows: sizes, training correlation, test accuracy, the in-slice
    accuracy gap and whether it passes ``min_gap`` (``kept``), the error-share baselines."""
    from medaudit.studies.cxr_slices import metrics

    preds = (probs >= 0.5).astype(np.int64)
    y = scen.test_labels
    gap = sc.in_slice_accuracy_gap(scen, preds)
    summ = scen.summary()
    return {
        "key": task.key,
        "scenario": task.scenario,
        "slice_share": task.slice_share,
        "seed": task.seed,
        "n_train": scen.n_train,
        "n_test": scen.n_test,
        "n_slice": int(scen.test_slice.sum()),
        "train_corr": summ["train_corr_label_attr"],
        "train_flipped": summ["train_flipped"],
        "accuracy": float((preds == y).mean()),
        "gap": gap,
        "kept": bool(np.isfinite(gap) and gap >= config.min_gap),
        "baseline": metrics.error_share_baseline(scen.test_attribute, y, preds),
        "baseline_slice": metrics.error_share_baseline(scen.test_slice, y, preds),
    }


@dataclass(frozen=True)
class _Run:
    """What every slicer fit of one kept run shares."""

    config: BenchConfig
    task: RunTask
    scen: sc.Scenario
    probs: np.ndarray  #: test P(class 1) of the audited classifier
    test: dict[str, np.ndarray]  #: test-split embeddings per modality
    base: dict[str, Any]  #: the run's own columns (:func:`_run_columns`)
    pred_run: tuple[pd.DataFrame, pd.DataFrame | None] | None  #: test predicates and concept codes


def _embedding_rows(run: _Run, peer_python: str) -> tuple[list[dict[str, Any]], np.ndarray | None]:
    """Rows of every embedding variant × fusion (slicer fits and the Domino peer), and the slice scores the
    ``rules+mixture`` variant merges (first slicer config, seed 0, of ``rules_mixture_variant``)."""
    config = run.config
    rows: list[dict[str, Any]] = []
    mix_scores: np.ndarray | None = None
    for variant in config.variants:
        missing = [m for m in variant if m not in run.test]
        if missing:
            raise InputError(f"variant {'+'.join(variant)}: no embeddings for {', '.join(missing)}")
        vname = "+".join(variant)
        for fusion in config.fusions if len(variant) > 1 else ("none",):
            z = _fuse({m: run.test[m] for m in variant}, fusion, config.fusion_dim, run.task.seed)
            fit_rows, first_scores = _slicer_rows(run, variant, fusion, z)
            rows += fit_rows
            mixed = vname == config.rules_mixture_variant and fusion in ("concat", "none")
            if mixed and mix_scores is None:
                mix_scores = first_scores
            peer_ok = vname in config.peer_variants and (fusion in config.peer_fusions or fusion == "none")
            if config.peer_domino and peer_python and peer_ok:
                rows.append(_domino_row(run, peer_python, z, vname, fusion))
    return rows, mix_scores


def _slicer_rows(
    run: _Run, variant: tuple[str, ...], fusion: str, z: np.ndarray
) -> tuple[list[dict[str, Any]], np.ndarray | None]:
    """One row per slicer config × slicer seed on the fused embedding ``z``, and the slice scores of the
    first config's seed 0 (``None`` without slicer configs)."""
    blocks = {m: run.test[m] for m in variant}
    vshare = _variance_shares(blocks, z, fusion, run.config.fusion_dim, run.task.seed)
    rows: list[dict[str, Any]] = []
    first: np.ndarray | None = None
    for cname in run.config.slicer_configs:
        for s_i in range(run.config.slicer_seeds):
            row, scores = _slicer_row(run, variant, fusion, z, cname, s_i)
            row.update({f"var_share_{m}": vshare.get(m, float("nan")) for m in MODALITIES})
            row.update(_explanation_hit(run.pred_run, scores, None, run.scen))
            rows.append(row)
            first = scores if first is None else first
    return rows, first


def _slicer_row(
    run: _Run, variant: tuple[str, ...], fusion: str, z: np.ndarray, cname: str, s_i: int
) -> tuple[dict[str, Any], np.ndarray]:
    """Fit the slicer (config ``cname``, seed ``s_i``) on ``z``; its row (scores, timing, eta²) and slice
    scores."""
    from medaudit.audit.slicers import get_slicer

    config, y, probs = run.config, run.scen.test_labels, run.probs
    t1 = time.perf_counter()
    kw = {**config.slicer_params, **SLICER_CONFIGS.get(cname, {})}
    if kw.get("n_pca_components"):
        kw["n_pca_components"] = int(min(kw["n_pca_components"], *z.shape))
    slicer = get_slicer(config.slicer, **kw, random_state=run.task.seed * 1000 + s_i)
    slicer.fit(z, y, probs)
    scores = np.asarray(slicer.predict_proba(z, y, probs), dtype=np.float64)
    row = {**run.base, "variant": "+".join(variant), "n_modalities": len(variant), "fusion": fusion}
    row.update({"slicer_config": cname, "slicer_seed": s_i, "method": "medaudit"})
    row.update(_score_rows(scores, run.scen, probs))
    row["fit_s"] = time.perf_counter() - t1
    eta = modality_eta2(scores.argmax(axis=1), {m: run.test[m] for m in variant})
    row.update({f"eta2_{m}": eta.get(m, float("nan")) for m in MODALITIES})
    return row, scores


def _domino_row(run: _Run, peer_python: str, z: np.ndarray, vname: str, fusion: str) -> dict[str, Any]:
    """The Domino 0.1.5 peer's row on the fused embedding ``z``."""
    y = run.scen.test_labels
    prow, pscores = _run_domino_peer(
        peer_python, z, y, run.probs, run.config, run.scen, run.task, vname, fusion
    )
    return {**run.base, **prow, **_explanation_hit(run.pred_run, pscores, None, run.scen)}


def _rule_rows(
    config: BenchConfig,
    base: dict[str, Any],
    scen: sc.Scenario,
    probs: np.ndarray,
    pred_run: tuple[pd.DataFrame, pd.DataFrame | None],
    mix_scores: np.ndarray | None,
) -> list[dict[str, Any]]:
    """Rows of the ``rules`` / ``rules+mixture`` variants and the ``sliceline`` peer."""
    from medaudit.studies.cxr_slices import bench_rules as br

    y, pred = scen.test_labels, pred_run[0]
    errors = (probs >= 0.5).astype(np.int64) != y
    k = int(config.slicer_params.get("n_slices", 5))
    rows: list[dict[str, Any]] = []
    t1 = time.perf_counter()
    r_scores, r_rules = br.fit_rules(pred, y, probs, k)
    r_s = time.perf_counter() - t1
    common = {"fusion": "none", "slicer_config": "study", "slicer_seed": 0, "n_predicates": pred.shape[1]}
    for v in config.rule_variants:
        scores, rules, fit_s = r_scores, r_rules, r_s
        if v == "rules+mixture":
            if mix_scores is None:
                raise InputError(f"rules+mixture needs the variant {config.rules_mixture_variant}")
            scores, rules = br.merge_ranked([r_scores, mix_scores], [r_rules, []], errors, y)
        row = {**base, **common, "variant": v, "n_modalities": 0, "method": "medaudit", "fit_s": fit_s}
        row.update(_score_rows(scores, scen, probs))
        row.update(_explanation_hit(pred_run, scores, rules[0], scen))
        rows.append(row)
    if config.peer_sliceline:
        from medaudit.studies.cxr_slices.peer_sliceline import run_sliceline

        t1 = time.perf_counter()
        res = run_sliceline(pred, errors.astype(float), k=k, **config.sliceline_params)
        row = {**base, **common, "variant": "rules", "n_modalities": 0, "method": "sliceline-0.3.0"}
        row.update(_score_rows(res.scores, scen, probs))
        row["fit_s"] = time.perf_counter() - t1
        row.update(_explanation_hit(pred_run, res.scores, None, scen))
        rows.append(row)
    return rows


def _execute_run(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """One benchmark run in any worker (serial, process pool or Ray): returns its result rows."""
    import torch

    torch.set_num_threads(int(payload.get("threads", 1)))
    st = _load_state(payload["state_dir"])
    task = RunTask(**payload["task"])
    return run_one(st["config"], st["df"], st["emb"], st["kind"], task, st["peer_python"], st["concepts"])
