"""Failure-scenario benchmark (``medaudit bench-scenarios``): reproduces the multimodal slice-discovery study.

For each scenario (spurious correlation, rare slice, noisy labels; :mod:`medaudit.studies.cxr_slices.scenarios`), each
test-slice share and each seed ("run"):

1. build the scenario (manipulated training split, test split with the planted slice);
2. train the audited classifier on the manipulated training labels: by default a logistic head on frozen
   image features (EfficientNet-Lite0; fast on CPU), optionally a fine-tuned CNN (``classifier="cnn"``,
   the study's ImageNet ResNet-18, for GPU users);
3. keep the run only if test accuracy outside the slice exceeds accuracy inside it by ``min_gap`` (0.10),
   as the study did; discarded runs are recorded with ``kept=False``;
4. for each modality variant (image, report, metadata and their 4 combinations) and each fusion
   (``concat``, ``balanced``), fit the error-aware mixture slicer with the study's setting (label and
   prediction weights 10, 20 components, 5 slices, PCA) on the test embeddings, true labels and predicted
   probabilities; optionally run the published Domino 0.1.5 on the same embeddings as a peer;
5. score precision@10/@25 under both definitions (:mod:`medaudit.studies.cxr_slices.metrics`) next to the study's
   baseline (the attribute's share among misclassified cases), and record which modality drives the
   clustering (``eta2_<modality>``: between-slice share of that modality's variance under the hard slice
   assignment).

Embeddings of every modality are computed once per cohort and cached. Each run's rows are written
atomically to ``runs/<key>.parquet`` under a content key of everything that determines them, so a rerun
skips finished runs; runs execute in a process pool (``workers``). Outputs in ``out_dir``: ``runs.parquet``
(raw rows), ``results.csv``/``results.parquet`` (mean, std and bootstrap 95% CI per scenario × variant ×
fusion × slicer config), ``stability.csv`` (slicer-seed disagreement per run, the noisy-label fix),
``contributions.csv`` (modality contribution per fusion), ``precision.png`` and ``summary.md``/``summary.html``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import typer

from medaudit.audit.datasets import DEFAULT_META as DATASET_META
from medaudit.errors import InputError
from medaudit.io import atomic_save, atomic_write_json, atomic_write_text
from medaudit.progress import make_progress
from medaudit.rungrid import (
    ResultStore,
    Task,
    code_fingerprint,
    make_backend,
    run_grid,
    task_key,
    worker_threads,
)
from medaudit.studies.cxr_slices import scenarios as sc

MODALITIES: tuple[str, ...] = ("image", "report", "metadata")
#: The study's 7 modality variants, unimodal first.
DEFAULT_VARIANTS: tuple[tuple[str, ...], ...] = (
    ("image",),
    ("report",),
    ("metadata",),
    ("image", "report"),
    ("image", "metadata"),
    ("report", "metadata"),
    ("image", "report", "metadata"),
)
#: The study's slicer setting (Domino: label and prediction weights 10, 20 components, 5 slices, PCA).
STUDY_SLICER: dict[str, Any] = {
    "n_slices": 5,
    "n_mixture_components": 20,
    "y_log_likelihood_weight": 10.0,
    "y_hat_log_likelihood_weight": 10.0,
    "n_pca_components": 128,
    "n_init": 1,
    "rank_by": "error",  # the study's (Domino's) ranking; the product's default is excess_errors
}
#: Named slicer configurations (overrides of :data:`STUDY_SLICER`). ``restarts`` is the instability fix.
SLICER_CONFIGS: dict[str, dict[str, Any]] = {
    "study": {},
    "restarts": {"n_init": 10},
}
DEFAULT_METADATA_COLUMNS: tuple[str, ...] = ("view_position", "age", "sex")
DEFAULT_RULE_METADATA: tuple[str, ...] = DATASET_META
#: The sliceline peer: the package's defaults except k (= slices), lattice level and alpha (0.95, as in the
#: package's README; its default 0.6 penalises small slices so hard that it returns none here).
SLICELINE_PARAMS: dict[str, Any] = {"alpha": 0.95, "max_l": 2, "min_sup": 10}
RULE_VARIANTS: tuple[str, ...] = ("rules", "rules+mixture")
KS: tuple[int, ...] = (10, 25)
METRIC_COLUMNS: tuple[str, ...] = tuple(f"p{k}_{d}" for d in ("study", "dcbench") for k in KS)

#: Defaults on the embedded phantom cohort (Open-i reports). Pneumothorax is in 31 of 3,955 cases, so the
#: spurious task there is cardiomegaly (a finding the rendered image shows) against support devices, with
#: matched marginals at 10% prevalence and 70% of the cohort in the training pool (69 cases have both). With
#: "any finding" the frozen-feature classifier is too weak outside the slice and most runs fail the gap filter.
PHANTOM_SCENARIO_PARAMS: dict[str, dict[str, Any]] = {
    "spurious": {
        "task": "cardiomegaly",
        "attribute": "support_devices",
        "label_prevalence": 0.10,
        "test_fraction": 0.3,
    },
    # only 32 of the 3,955 phantom cases are cardiomegaly on a lateral view: the rare slice needs ~2% of
    # the training positives (a handful), so 70% of the cohort goes to the test pool
    "rare": {"task": "cardiomegaly", "attribute": f"view_position={sc.LATERAL_VIEWS}", "test_fraction": 0.7},
    "noisy": {"task": "!no_finding", "attribute": f"view_position={sc.FRONTAL_VIEWS}"},
}
#: On the phantom cohort the image encoder reads the rendered 128-px images at their native size.
PHANTOM_ENCODER_PARAMS: dict[str, dict[str, Any]] = {"image": {"size": 128}}


@dataclass
class BenchConfig:
    """Everything that determines the benchmark's numbers (and hence each run's content key)."""

    scenarios: tuple[str, ...] = ("spurious", "rare", "noisy")
    slice_shares: tuple[float, ...] = (0.05, 0.10, 0.20)
    n_runs: int = 5  #: seeds per scenario × slice share
    seed: int = 0  #: first seed
    scenario_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    variants: tuple[tuple[str, ...], ...] = DEFAULT_VARIANTS
    fusions: tuple[str, ...] = ("concat", "balanced")
    fusion_dim: int = 64
    slicer: str = "mixture"
    slicer_params: dict[str, Any] = field(default_factory=lambda: dict(STUDY_SLICER))
    slicer_configs: tuple[str, ...] = ("study",)
    slicer_seeds: int = 1  #: slicer random states per fit (>1 measures slicer instability)
    min_gap: float = 0.10
    classifier: str = "head"  #: ``head`` (frozen image features) or ``cnn`` (fine-tuned)
    classifier_params: dict[str, Any] = field(default_factory=dict)
    encoders: dict[str, str] = field(default_factory=dict)  #: modality -> encoder name (defaults otherwise)
    encoder_params: dict[str, dict[str, Any]] = field(default_factory=dict)  #: modality -> encoder kwargs
    metadata_columns: tuple[str, ...] = DEFAULT_METADATA_COLUMNS
    #: metadata of the rule predicates: the audit's dataset defaults (``view_position`` and the
    #: ``frontal_lateral`` grouping the dataset readers write, age, sex), as ``medaudit audit`` uses them
    rule_metadata_columns: tuple[str, ...] = DEFAULT_RULE_METADATA
    peer_domino: bool = False
    peer_fusions: tuple[str, ...] = ("concat",)
    peer_variants: tuple[str, ...] = ("image", "image+report+metadata")  #: variants the Domino peer runs on
    rule_variants: tuple[str, ...] = ()  #: ``rules`` and/or ``rules+mixture`` (:mod:`.bench_rules`)
    rules_mixture_variant: str = "image+report+metadata"  #: the embedding slices merged in ``rules+mixture``
    peer_sliceline: bool = False  #: the ``sliceline`` package on the rule slicer's predicates
    sliceline_params: dict[str, Any] = field(default_factory=lambda: dict(SLICELINE_PARAMS))

    def key_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("n_runs", "seed", "scenarios", "slice_shares"):
            d.pop(k)
        return d


@dataclass(frozen=True)
class RunTask:
    """One benchmark run: scenario × slice share × seed."""

    scenario: str
    slice_share: float
    seed: int
    key: str


# ----------------------------------------------------------------------------------------------- cohort


def load_cohort(cohort: str, cache_dir: Path, n_cases: int | None = None) -> tuple[pd.DataFrame, str]:
    """Load the benchmark cohort as a case table; returns ``(df, kind)``.

    ``cohort`` is ``phantom`` (the embedded Open-i phantom, built under ``cache_dir``), ``mimic:<root>``,
    ``chexpert:<root>`` or a path to a case-table CSV/parquet (columns ``id``, ``image``, ``report``, labels
    and metadata).
    """
    if cohort == "phantom":
        from medaudit.data import phantom_cxr

        kw: dict[str, Any] = {}
        if n_cases is not None:
            kw["n"] = n_cases
        df = phantom_cxr.build_cohort(cache_dir, **kw)
        return df.reset_index(drop=True), "phantom"
    if ":" in cohort and not Path(cohort).exists():
        kind, root = cohort.split(":", 1)
        from medaudit.data import cxr

        readers = {"mimic": "read_mimic_cxr", "chexpert": "read_chexpert"}
        if kind not in readers or not hasattr(cxr, readers[kind]):
            raise InputError(
                f"cohort '{cohort}': expected phantom, mimic:<root>, chexpert:<root> or a table path"
            )
        df = getattr(cxr, readers[kind])(root)
        return _subsample(df, n_cases), kind
    path = Path(cohort)
    if not path.is_file():
        raise InputError(
            f"{path}: cohort table not found (or use 'phantom', 'mimic:<root>', 'chexpert:<root>')"
        )
    df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    for col in ("id", "image"):
        if col not in df.columns:
            raise InputError(f"{path}: missing column '{col}'")
    return _subsample(df, n_cases), "table"


def _subsample(df: pd.DataFrame, n: int | None) -> pd.DataFrame:
    if n is not None and n < len(df):
        df = df.sample(n=n, random_state=0)
    return df.reset_index(drop=True)


def embed_cohort(
    df: pd.DataFrame,
    cache_dir: Path,
    encoders: dict[str, str] | None = None,
    metadata_columns: Sequence[str] = DEFAULT_METADATA_COLUMNS,
    modalities: Sequence[str] = MODALITIES,
    encoder_params: dict[str, dict[str, Any]] | None = None,
) -> dict[str, np.ndarray]:
    """Embed every case of ``df`` in each modality once (cached on disk by content).

    ``encoders`` maps a modality to a registered encoder name (default: the modality's default encoder),
    ``encoder_params`` to its keyword arguments.

    Fitted encoders (TF-IDF, tabular) are fitted on the whole cohort: unsupervised, no labels are seen.
    """
    from medaudit.audit.encoders import encode_cached, get_encoder

    encoders = encoders or {}
    ids = df["id"].astype(str).tolist()
    out: dict[str, np.ndarray] = {}
    meta_cols = [c for c in metadata_columns if c in df.columns]
    with make_progress() as prog:
        task = prog.add_task("embedding cohort", total=len(modalities))
        for m in modalities:
            enc = get_encoder(m, encoders.get(m), **(encoder_params or {}).get(m, {}))
            if m == "image":
                inputs: Any = df["image"].astype(str).tolist()
            elif m == "report":
                inputs = df["report"].fillna("").astype(str).tolist()
            else:
                if not meta_cols:
                    raise InputError(f"cohort has none of the metadata columns {', '.join(metadata_columns)}")
                inputs = df[meta_cols].reset_index(drop=True)
            if getattr(enc, "requires_fit", False):
                enc.fit(inputs)
            out[m] = np.asarray(encode_cached(enc, ids, inputs, cache_dir / "embeddings"), dtype=np.float32)
            prog.advance(task)
    return out


# ------------------------------------------------------------------------------------------------ tasks


#: The code a benchmark run executes (a change to any of these files changes every run key).
CXR_CODE = ("studies/cxr_slices", "audit/slicers", "audit/fusion.py", "stats.py")
#: peer python -> its ``run_domino.py`` (filled by :func:`domino_python` and by the worker state)
_PEER_SCRIPTS: dict[str, Path] = {}


def cohort_fingerprint(df: pd.DataFrame, embeddings: dict[str, np.ndarray]) -> str:
    """Hash of the case ids, label/metadata columns and embeddings (what a run's numbers depend on)."""
    h = hashlib.sha256()
    h.update(
        pd.util.hash_pandas_object(
            df.drop(columns=["image"], errors="ignore").astype(str), index=False
        ).values
    )
    for m in sorted(embeddings):
        h.update(m.encode())
        h.update(np.ascontiguousarray(embeddings[m]).tobytes())
    return h.hexdigest()[:20]


def scenario_params_for(config: BenchConfig, name: str, kind: str) -> dict[str, Any]:
    """Scenario parameters: cohort defaults (phantom or the study's) overridden by ``config``."""
    base = dict(
        PHANTOM_SCENARIO_PARAMS.get(name, {}) if kind == "phantom" else sc.STUDY_DEFAULTS.get(name, {})
    )
    base.update(config.scenario_params.get(name, {}))
    return base


def make_tasks(config: BenchConfig, kind: str, fingerprint: str) -> list[RunTask]:
    """The run grid with a content key per run."""
    tasks = []
    for name in config.scenarios:
        if name not in sc.SCENARIOS:
            raise InputError(f"scenario '{name}': choose from {', '.join(sc.SCENARIOS)}")
        params = scenario_params_for(config, name, kind)
        for share in config.slice_shares:
            for i in range(config.n_runs):
                seed = config.seed + i
                spec = {"cohort": fingerprint, "config": config.key_dict(), "scenario": name}
                spec.update({"params": params, "share": float(share), "seed": seed})
                key = task_key("scenario-run", spec, code=code_fingerprint(*CXR_CODE))
                tasks.append(RunTask(name, float(share), seed, key))
    return tasks


# ------------------------------------------------------------------------------------------- one run


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


def _read_peer(state: Path) -> str:
    """The peer python recorded in the worker state (and where its ``run_domino.py`` lies)."""
    if not (state / "peer_python.txt").exists():
        return ""
    python, _, script = (state / "peer_python.txt").read_text().strip().partition("\n")
    if python and script:
        _PEER_SCRIPTS[python] = Path(script)
    return python


def _config_from_json(d: dict[str, Any]) -> BenchConfig:
    d = dict(d)
    for k in (
        "scenarios",
        "slice_shares",
        "fusions",
        "slicer_configs",
        "metadata_columns",
        "rule_metadata_columns",
        "peer_fusions",
        "peer_variants",
        "rule_variants",
    ):
        if k in d:
            d[k] = tuple(d[k])
    d["variants"] = tuple(tuple(v) for v in d["variants"])
    return BenchConfig(**d)


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


def modality_eta2(assign: np.ndarray, blocks: dict[str, np.ndarray]) -> dict[str, float]:
    """Share of each modality's (standardised) variance explained by the hard slice assignment.

    ``eta² = trace(between-slice scatter) / trace(total scatter)`` of the modality's z-scored embedding. A
    clustering driven by one modality separates that modality's space (high eta²) and not the others.
    """
    out = {}
    labels = np.unique(assign)
    for m, x in blocks.items():
        x = np.asarray(x, dtype=np.float64)
        sd = x.std(axis=0)
        keep = sd > 1e-12
        if not keep.any():
            out[m] = float("nan")
            continue
        z = (x[:, keep] - x[:, keep].mean(axis=0)) / sd[keep]
        total = float((z**2).sum())
        between = sum(
            float((assign == g).sum()) * float((z[assign == g].mean(axis=0) ** 2).sum()) for g in labels
        )
        out[m] = between / total if total > 0 else float("nan")
    return out


def _score_rows(
    scores: np.ndarray,
    scenario: sc.Scenario,
    probs: np.ndarray,
) -> dict[str, float]:
    from medaudit.studies.cxr_slices import metrics

    y = scenario.test_labels
    row: dict[str, float] = {}
    for k in KS:
        kk = min(k, len(y))
        row[f"p{k}_study"] = metrics.precision_at_k_study(
            scores, scenario.test_attribute, y, scenario.target_class, kk
        )
        row[f"p{k}_dcbench"] = metrics.precision_at_k_dcbench(scores, scenario.test_slice, kk)
    return row


def _variance_shares(
    blocks: dict[str, np.ndarray], fused: np.ndarray, method: str, dim: int, seed: int
) -> dict[str, float]:
    """Each modality's share of the total variance of the fused matrix (what PCA and the mixture see)."""
    from medaudit.audit.fusion import block_total_variance

    if len(blocks) == 1:
        return {next(iter(blocks)): 1.0}
    widths = [_fuse({m: b}, method, dim, seed).shape[1] if method == "concat" else
              np.asarray(_fuse_single_balanced(b, dim, seed)).shape[1] for m, b in blocks.items()]  # fmt: skip
    if sum(widths) != fused.shape[1]:
        return {}
    var = np.asarray(block_total_variance(fused, widths), dtype=np.float64)
    tot = var.sum()
    return {m: float(v / tot) if tot > 0 else float("nan") for m, v in zip(blocks, var, strict=True)}


def _fuse_single_balanced(x: np.ndarray, dim: int, seed: int) -> np.ndarray:
    from medaudit.audit.fusion import fuse

    return fuse({"x": x}, method="balanced", dim=dim, random_state=seed)


def _fuse(blocks: dict[str, np.ndarray], method: str, dim: int, seed: int) -> np.ndarray:
    from medaudit.audit.fusion import fuse

    if len(blocks) == 1:  # fusion is moot for one modality: its embedding as is
        return np.asarray(next(iter(blocks.values())), dtype=np.float32)
    return np.asarray(fuse(blocks, method=method, dim=dim, random_state=seed), dtype=np.float32)


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
    from medaudit.audit.slicers import get_slicer
    from medaudit.device import seed_everything
    from medaudit.studies.cxr_slices import metrics

    seed_everything(task.seed)
    t0 = time.perf_counter()
    params = scenario_params_for(config, task.scenario, kind)
    scen = sc.build_scenario(task.scenario, df, seed=task.seed, slice_share=task.slice_share, **params)
    probs = train_classifier(config, df, emb, scen)
    preds = (probs >= 0.5).astype(np.int64)
    y = scen.test_labels
    gap = sc.in_slice_accuracy_gap(scen, preds)
    summ = scen.summary()
    base = {
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
    if not base["kept"]:
        return [{**base, "train_s": time.perf_counter() - t0}]
    base["train_s"] = time.perf_counter() - t0
    test = {m: emb[m][scen.test_idx] for m in MODALITIES if m in emb}
    rows: list[dict[str, Any]] = []
    pred_run = None  # (predicates, concept codes) of the test split, when rules or hits are measured
    if concepts is not None:
        from medaudit.studies.cxr_slices.bench_rules import run_predicates

        pred_run = run_predicates(concepts, df, scen.test_idx, y, config.rule_metadata_columns)
    mix_scores: np.ndarray | None = None
    for variant in config.variants:
        missing = [m for m in variant if m not in test]
        if missing:
            raise InputError(f"variant {'+'.join(variant)}: no embeddings for {', '.join(missing)}")
        fusions = config.fusions if len(variant) > 1 else ("none",)
        for fusion in fusions:
            z = _fuse({m: test[m] for m in variant}, fusion, config.fusion_dim, task.seed)
            vname = "+".join(variant)
            vshare = _variance_shares({m: test[m] for m in variant}, z, fusion, config.fusion_dim, task.seed)
            for cname in config.slicer_configs:
                kw = {**config.slicer_params, **SLICER_CONFIGS.get(cname, {})}
                for s_i in range(config.slicer_seeds):
                    t1 = time.perf_counter()
                    kw_eff = dict(kw)
                    if kw_eff.get("n_pca_components"):
                        kw_eff["n_pca_components"] = int(min(kw_eff["n_pca_components"], *z.shape))
                    slicer = get_slicer(config.slicer, **kw_eff, random_state=task.seed * 1000 + s_i)
                    slicer.fit(z, y, probs)
                    scores = np.asarray(slicer.predict_proba(z, y, probs), dtype=np.float64)
                    row = {**base, "variant": vname, "n_modalities": len(variant), "fusion": fusion}
                    row.update({"slicer_config": cname, "slicer_seed": s_i, "method": "medaudit"})
                    row.update(_score_rows(scores, scen, probs))
                    row["fit_s"] = time.perf_counter() - t1
                    eta = modality_eta2(scores.argmax(axis=1), {m: test[m] for m in variant})
                    row.update({f"eta2_{m}": eta.get(m, float("nan")) for m in MODALITIES})
                    row.update({f"var_share_{m}": vshare.get(m, float("nan")) for m in MODALITIES})
                    row.update(_explanation_hit(pred_run, scores, None, scen))
                    rows.append(row)
                    if vname == config.rules_mixture_variant and fusion in ("concat", "none") and s_i == 0:
                        mix_scores = scores if mix_scores is None else mix_scores
            peer_ok = vname in config.peer_variants and (fusion in config.peer_fusions or fusion == "none")
            if config.peer_domino and peer_python and peer_ok:
                prow, pscores = _run_domino_peer(peer_python, z, y, probs, config, scen, task, vname, fusion)
                rows.append({**base, **prow, **_explanation_hit(pred_run, pscores, None, scen)})
    if pred_run is not None:
        rows += _rule_rows(config, base, scen, probs, pred_run, mix_scores)
    return rows


def _explanation_hit(
    pred_run: tuple[pd.DataFrame, pd.DataFrame | None] | None,
    scores: np.ndarray | None,
    rule: list[str] | None,
    scen: sc.Scenario,
) -> dict[str, Any]:
    """Whether the top-ranked slice's rule (own or best-matching) or top concept names the attribute."""
    if pred_run is None or scores is None or scores.shape[1] == 0:
        return {}
    from medaudit.studies.cxr_slices.bench_rules import names_attribute, slice_terms

    members = scores[:, 0] > 0.5
    if not members.any():  # a soft slice with no member above 0.5: its 10 highest-scoring cases
        members = np.zeros(len(scores), dtype=bool)
        members[np.argsort(-scores[:, 0], kind="stable")[:10]] = True
    t = slice_terms(pred_run[0], pred_run[1], members, rule)
    attr = str(scen.metadata.get("attribute", ""))
    return {
        "hit": float(names_attribute(t["terms"], attr)),
        "top_rule": t["rule"],
        "top_concept": t["concept"],
    }


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


def _run_domino_peer(
    python: str,
    z: np.ndarray,
    y: np.ndarray,
    probs: np.ndarray,
    config: BenchConfig,
    scen: sc.Scenario,
    task: RunTask,
    vname: str,
    fusion: str,
) -> tuple[dict[str, Any], np.ndarray | None]:
    """Run the published Domino 0.1.5 (separate Python 3.9 env) on the same arrays; one row and its
    membership scores (``None`` when it failed)."""
    script = _peer_script(python)
    p = config.slicer_params
    row: dict[str, Any] = {"variant": vname, "n_modalities": vname.count("+") + 1, "fusion": fusion}
    row.update({"slicer_config": "study", "slicer_seed": 0, "method": "domino-0.1.5"})
    with tempfile.TemporaryDirectory(prefix="medaudit-domino-") as td:
        d = Path(td)
        np.save(d / "e.npy", z.astype(np.float32))
        np.save(d / "y.npy", y.astype(np.int64))
        np.save(d / "p.npy", np.stack([1 - probs, probs], axis=1).astype(np.float32))
        cmd = [
            python, str(script), str(d / "e.npy"), str(d / "y.npy"), str(d / "p.npy"), str(d / "o.npy"),
            "--n-slices", str(p["n_slices"]), "--n-mixture-components", str(p["n_mixture_components"]),
            "--y-weight", str(p["y_log_likelihood_weight"]), "--y-hat-weight", str(p["y_hat_log_likelihood_weight"]),
            "--n-pca", str(int(min(p.get("n_pca_components") or 0, *z.shape))), "--seed", str(task.seed),
        ]  # fmt: skip
        t1 = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        if res.returncode != 0 or not (d / "o.npy").exists():
            row["error"] = (res.stderr.strip().splitlines() or ["domino failed"])[-1][:300]
            return row, None
        scores = np.load(d / "o.npy").astype(np.float64)
    row.update(_score_rows(scores, scen, probs))
    row["fit_s"] = time.perf_counter() - t1
    return row, scores


def _execute_run(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """One benchmark run in any worker (serial, process pool or Ray): returns its result rows."""
    import torch

    torch.set_num_threads(int(payload.get("threads", 1)))
    st = _load_state(payload["state_dir"])
    task = RunTask(**payload["task"])
    return run_one(st["config"], st["df"], st["emb"], st["kind"], task, st["peer_python"], st["concepts"])


# ------------------------------------------------------------------------------------------- driver


def _peer_script(python: str) -> Path:
    """``run_domino.py`` of the peers folder that built ``python``."""
    return _PEER_SCRIPTS[python]


def domino_python(peers: str | os.PathLike[str] | None = None) -> tuple[str, str]:
    """The python of the Domino 0.1.5 environment (``bash PEERS/domino_env.sh``), or ``("", reason)``.

    ``peers`` is found by :func:`medaudit.peers.peers_dir` (flag, ``MEDAUDIT_PEERS``, or
    ``../shared/peers`` beside the repository).
    """
    from medaudit.peers import PEERS_ENV, peers_dir

    folder = peers_dir(peers)
    if folder is None:
        return "", f"no peers folder (set --peers-dir or {PEERS_ENV})"
    script = folder / "domino_env.sh"
    if not script.is_file():
        return "", f"{script} not found"
    try:
        res = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=1800, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return "", f"domino env: {exc}"
    py = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""
    if res.returncode != 0 or not py or not Path(py).exists():
        return "", (res.stderr.strip().splitlines() or ["domino env failed"])[-1]
    _PEER_SCRIPTS[py] = folder / "run_domino.py"
    return py, ""


def _write_state(
    state: Path,
    df: pd.DataFrame,
    embeddings: dict[str, np.ndarray],
    config: BenchConfig,
    kind: str,
    peer_py: str,
) -> Path:
    """Write what every worker loads once: the cohort (plain columns), embeddings, config, peer python."""
    state.mkdir(parents=True, exist_ok=True)
    plain = [c for c in df.columns if df[c].map(lambda v: isinstance(v, (list, dict, np.ndarray))).sum() == 0]
    with atomic_save(state / "cohort.parquet") as tmp:
        df[plain].to_parquet(tmp, index=False)
    for m, e in embeddings.items():
        with atomic_save(state / f"emb_{m}.npy") as tmp, open(tmp, "wb") as fh:
            np.save(fh, np.asarray(e, dtype=np.float32))
    atomic_write_json(state / "config.json", dataclasses.asdict(config))
    atomic_write_text(state / "kind.txt", kind)
    atomic_write_text(state / "peer_python.txt", f"{peer_py}\n{_PEER_SCRIPTS[peer_py]}" if peer_py else "")
    if config.rule_variants or config.peer_sliceline:
        from medaudit.studies.cxr_slices.bench_rules import cohort_concepts

        with atomic_save(state / "concepts.parquet") as tmp:
            cohort_concepts(df).to_parquet(tmp, index=False)
    else:
        (state / "concepts.parquet").unlink(missing_ok=True)
    _load_state.cache_clear()
    return state


def run_benchmark(
    config: BenchConfig,
    out_dir: str | Path,
    cohort: str | pd.DataFrame = "phantom",
    cache_dir: str | Path | None = None,
    workers: int = 1,
    n_cases: int | None = None,
    embeddings: dict[str, np.ndarray] | None = None,
    kind: str | None = None,
    n_boot: int = 1000,
    ray_address: str | None = None,
    peers_dir: str | os.PathLike[str] | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Claim ``out_dir`` as a resumable ``bench-scenarios`` folder (see :mod:`medaudit.outdir`; ``force``
    accepts a folder medaudit did not write), then run :func:`_run_benchmark` in it."""
    from medaudit.outdir import claim_output

    with claim_output(
        out_dir, "bench-scenarios", force=force, in_place=True, keep_if=("runs", "cache")
    ) as claim:
        return _run_benchmark(
            config,
            claim.path,
            cohort,
            cache_dir,
            workers,
            n_cases,
            embeddings,
            kind,
            n_boot,
            ray_address,
            peers_dir,
        )


def _run_benchmark(
    config: BenchConfig,
    out_dir: str | Path,
    cohort: str | pd.DataFrame = "phantom",
    cache_dir: str | Path | None = None,
    workers: int = 1,
    n_cases: int | None = None,
    embeddings: dict[str, np.ndarray] | None = None,
    kind: str | None = None,
    n_boot: int = 1000,
    ray_address: str | None = None,
    peers_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Run (or resume) the benchmark and write all outputs to ``out_dir``; returns a summary dict.

    ``cohort`` may be a ready case-table DataFrame (then ``kind`` names its defaults: ``phantom`` or the
    study's); ``embeddings`` may be given precomputed (``{modality: (n, d)}`` aligned with the table).
    """
    out = Path(out_dir)
    cache = Path(cache_dir) if cache_dir else out / "cache"
    t_start = time.perf_counter()
    for name in config.scenarios:
        if name not in sc.SCENARIOS:
            raise InputError(f"scenario '{name}': choose from {', '.join(sc.SCENARIOS)}")
    if isinstance(cohort, pd.DataFrame):
        df, kind = cohort.reset_index(drop=True), kind or "table"
    else:
        df, kind = load_cohort(cohort, cache, n_cases)
    out.mkdir(parents=True, exist_ok=True)
    if embeddings is None:
        needed = sorted({m for v in config.variants for m in v} | {"image"}, key=MODALITIES.index)
        enc_params = {**(PHANTOM_ENCODER_PARAMS if kind == "phantom" else {}), **config.encoder_params}
        embeddings = embed_cohort(df, cache, config.encoders, config.metadata_columns, needed, enc_params)
    for m, e in embeddings.items():
        if len(e) != len(df):
            raise InputError(f"embeddings '{m}': {len(e)} rows but the cohort has {len(df)}")
    notes: list[str] = []
    peer_py = ""
    if config.peer_domino:
        peer_py, why = domino_python(peers_dir)
        if not peer_py:
            notes.append(f"Domino 0.1.5 peer skipped: {why}")
            config = dataclasses.replace(config, peer_domino=False)
    fp = cohort_fingerprint(df, embeddings)
    tasks = make_tasks(config, kind, fp)
    store = ResultStore(out, parts="runs", table="runs.parquet")
    state = _write_state(out / "cache" / "state", df, embeddings, config, kind, peer_py)
    t_runs = time.perf_counter()
    threads = worker_threads(workers, ray_address) if ray_address else 1  # runs are single-threaded
    grid = run_grid(
        [
            Task(
                "scenario-run",
                t.key,
                dataclasses.asdict(t),
                (),
                f"{t.scenario} {t.slice_share} seed={t.seed}",
            )
            for t in tasks
        ],
        _execute_run,
        lambda t: {"state_dir": str(state), "task": dict(t.spec), "threads": threads},
        lambda t, rows: store.append(t.key, rows),
        is_done=lambda t: store.has(t.key),
        backend=make_backend(workers, ray_address),
        label="benchmark runs",
        keep_going=False,
    )
    todo = grid.executed
    runs_wall = time.perf_counter() - t_runs
    store.compact([t.key for t in tasks])
    runs = store.read()
    summary = write_outputs(runs, out, config, notes, n_boot=n_boot)
    summary.update(
        {
            "n_tasks": len(tasks),
            "n_run_now": len(todo),
            "n_cached": len(tasks) - len(todo),
            "runs_wall_s": runs_wall,
            "wall_s": time.perf_counter() - t_start,
            "kind": kind,
            "n_cases": len(df),
        }
    )
    atomic_write_json(out / "summary.json", summary)
    return summary


# ------------------------------------------------------------------------------------------ outputs


def aggregate(runs: pd.DataFrame, n_boot: int = 1000, by_share: bool = False) -> pd.DataFrame:
    """Mean, std and bootstrap 95% CI of each metric over kept runs, per scenario × variant × fusion ×
    slicer config × method (and slice share when ``by_share``). Slicer seeds are averaged within a run
    first, so the CI is over runs."""
    from medaudit.stats import bootstrap_ci

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
            v = g[c].dropna().to_numpy()
            if len(v) == 0:
                rec.update({c: np.nan, f"{c}_lo": np.nan, f"{c}_hi": np.nan, f"{c}_std": np.nan})
                continue
            mean, lo, hi = bootstrap_ci(v, n_boot=n_boot, seed=0)
            rec.update(
                {
                    c: mean,
                    f"{c}_lo": lo,
                    f"{c}_hi": hi,
                    f"{c}_std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
                }
            )
        for c in eta_cols:
            rec[c] = float(g[c].mean()) if g[c].notna().any() else np.nan
        out.append(rec)
    res = pd.DataFrame(out)
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


def plot_results(
    results: pd.DataFrame,
    path: Path,
    metrics: Sequence[tuple[str, str]] = (("p10_study", "baseline"), ("p10_dcbench", "baseline_slice")),
) -> None:
    """Grouped bars: one column per scenario, one row per (metric, baseline); variants × fusion with 95%
    CI error bars, the baseline as a dashed line. Medaudit rows of the ``study`` slicer config only."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = results[(results["method"] == "medaudit")]
    if "slicer_config" in r and (r["slicer_config"] == "study").any():
        r = r[r["slicer_config"] == "study"]
    scen = list(dict.fromkeys(r["scenario"]))
    nc, nr = max(1, len(scen)), len(metrics)
    fig, axes = plt.subplots(nr, nc, figsize=(5.0 * nc, 3.6 * nr), squeeze=False)
    colors = {"none": "#7f8c8d", "concat": "#2980b9", "balanced": "#c0392b"}
    for row_i, (metric, base_col) in enumerate(metrics):
        for ax, s in zip(axes[row_i], scen, strict=False):
            g = r[r["scenario"] == s]
            variants = list(dict.fromkeys(g["variant"]))
            w = 0.4
            for i, v in enumerate(variants):
                gv = g[g["variant"] == v]
                fs = [f for f in ("none", "concat", "balanced") if f in set(gv["fusion"])]
                for j, f in enumerate(fs):
                    row = gv[gv["fusion"] == f].iloc[0]
                    x = i + (j - (len(fs) - 1) / 2) * w
                    err = [[row[metric] - row[f"{metric}_lo"]], [row[f"{metric}_hi"] - row[metric]]]
                    ax.bar(
                        x,
                        row[metric],
                        width=w * 0.95,
                        color=colors.get(f, "#999"),
                        yerr=err,
                        capsize=2,
                        label=f,
                    )
            if base_col in g:
                ax.axhline(g[base_col].mean(), ls="--", color="k", lw=1, label=base_col)
            ax.set_xticks(range(len(variants)))
            short = [
                v.replace("image", "img").replace("report", "rep").replace("metadata", "meta")
                for v in variants
            ]
            ax.set_xticklabels(short, rotation=35, ha="right", fontsize=8)
            ax.set_ylim(0, 1.05)
            ax.set_title(f"{s}: {metric}", fontsize=10)
    uniq: dict[str, Any] = {}
    for ax in axes.ravel():
        handles, labels = ax.get_legend_handles_labels()
        uniq.update(zip(labels, handles, strict=False))
    fig.legend(uniq.values(), uniq.keys(), fontsize=8, loc="upper center", ncol=len(uniq), frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    with atomic_save(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


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


_HTML = """{% extends "base.html" %}
{% block title %}medaudit bench-scenarios{% endblock %}
{% block body %}
<h1>Failure-scenario benchmark</h1>
<p class="muted">{{ runs_kept }} kept / {{ runs_total }} runs; precision@k mean [bootstrap 95% CI] over kept runs.</p>
{% for n in notes %}<p class="note">{{ n }}</p>{% endfor %}
<img src="{{ plot }}" alt="precision plot" style="max-width:100%">
<h2>Results</h2>
<table><tr>{% for h in header %}<th>{{ h }}</th>{% endfor %}</tr>
{% for row in rows %}<tr>{% for c in row %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}
</table>
<h2>Discarded runs (accuracy gap &lt; {{ min_gap }})</h2>
<table><tr><th>scenario</th><th>kept</th><th>discarded</th><th>mean gap</th></tr>
{% for r in discards %}<tr><td>{{ r.scenario }}</td><td>{{ r.kept }}</td><td>{{ r.discarded }}</td><td>{{ "%.3f"|format(r.gap) }}</td></tr>{% endfor %}
</table>
{% for t in extra %}<h2>{{ t.title }}</h2>
<table><tr>{% for h in t.header %}<th>{{ h }}</th>{% endfor %}</tr>
{% for row in t.rows %}<tr>{% for c in row %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}
</table>
{% endfor %}
{% endblock %}
"""


_EXTRA_TITLES = (
    ("hit_rate", "Explanation hit rate (top slice's rule or top concept names the attribute)"),
    ("stability", "Slicer instability (spread of p@10 across slicer seeds, mean over runs)"),
    ("contributions", "Modality contribution: fused-variance share and eta² per fusion"),
)
_HTML_HEADER = ["scenario", "variant", "fusion", "slicer", "method", "runs", "p@10 study", "p@25 study",
                "p@10 dcbench", "p@25 dcbench", "hit", "baseline"]  # fmt: skip


def write_outputs(
    runs: pd.DataFrame, out: Path, config: BenchConfig, notes: Sequence[str] = (), n_boot: int = 1000
) -> dict[str, Any]:
    """Write results.csv/parquet, stability.csv, contributions.csv, plot and summaries (``runs.parquet`` is
    the run grid's result table, written by :class:`medaudit.rungrid.ResultStore`)."""
    results = aggregate(runs, n_boot=n_boot)
    frames = {
        "hit_rate": hit_rates(runs, n_boot=n_boot),
        "results": results,
        "results_by_share": aggregate(runs, n_boot=n_boot, by_share=True),
        "stability": stability(runs),
        "contributions": contributions(results),
    }
    for name, frame in frames.items():
        with atomic_save(out / f"{name}.csv") as tmp:
            frame.to_csv(tmp, index=False)
    with atomic_save(out / "results.parquet") as tmp:
        results.to_parquet(tmp, index=False)
    per_run = runs.drop_duplicates("key")
    summary = {
        "runs_kept": int(per_run["kept"].sum()),
        "runs_total": len(per_run),
        "discarded": _discards(per_run),
        "notes": list(notes),
    }
    extra = [(title, frames[name]) for name, title in _EXTRA_TITLES if not frames[name].empty]
    atomic_write_text(out / "summary.md", _summary_markdown(results, extra, summary, config))
    plot_uri = _plot_uri(results, out / "precision.png")
    atomic_write_text(out / "summary.html", _summary_html(results, extra, summary, config, plot_uri))
    return summary


def _discards(per_run: pd.DataFrame) -> list[dict[str, Any]]:
    """Per scenario: runs kept, runs discarded by the accuracy-gap rule, and the mean gap."""
    agg = per_run.groupby("scenario").agg(
        kept=("kept", "sum"), discarded=("kept", lambda s: int((~s).sum())), gap=("gap", "mean")
    )
    return agg.reset_index().to_dict("records")


def _plot_uri(results: pd.DataFrame, path: Path) -> str:
    """Write the precision plot and return it as a data URI (empty without results)."""
    if results.empty:
        return ""
    import base64

    plot_results(results, path)
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _summary_markdown(
    results: pd.DataFrame, extra: list[tuple[str, pd.DataFrame]], summary: dict[str, Any], config: BenchConfig
) -> str:
    md = [
        "# Failure-scenario benchmark\n",
        f"{summary['runs_kept']} kept / {summary['runs_total']} runs (min accuracy gap {config.min_gap}).\n",
        *[f"> {n}\n" for n in summary["notes"]],
        markdown_table(results),
    ]
    for title, frame in extra:
        md += [f"\n## {title}\n", frame_to_markdown(frame), "\n"]
    return "\n".join(md)


def _summary_html(
    results: pd.DataFrame,
    extra: list[tuple[str, pd.DataFrame]],
    summary: dict[str, Any],
    config: BenchConfig,
    plot_uri: str,
) -> str:
    from medaudit import __version__
    from medaudit.report.html import environment

    metrics = ("p10_study", "p25_study", "p10_dcbench", "p25_dcbench", "hit")
    keys = ("scenario", "variant", "fusion", "slicer_config", "method")
    rows = [
        [*(r[k] for k in keys), int(r["n_runs"]), *(_fmt(r, m) for m in metrics), f"{r['baseline']:.2f}"]
        for _, r in results.iterrows()
    ]
    return (
        environment()
        .from_string(_HTML)
        .render(
            version=__version__,
            notes=summary["notes"],
            plot=plot_uri,
            header=_HTML_HEADER,
            rows=rows,
            discards=summary["discarded"],
            min_gap=config.min_gap,
            runs_kept=summary["runs_kept"],
            runs_total=summary["runs_total"],
            extra=[
                {"title": t, "header": list(map(str, f.columns)), "rows": _html_rows(f)} for t, f in extra
            ],
        )
    )


def _html_rows(frame: pd.DataFrame) -> list[list[str]]:
    return [
        [f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in frame.itertuples(index=False)
    ]


def frame_to_markdown(frame: pd.DataFrame, digits: int = 3) -> str:
    """A data frame as a GitHub markdown table (floats rounded to ``digits``)."""
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in frame.itertuples(index=False):
        cells = [f"{v:.{digits}f}" if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------- CLI


def _floats(s: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in s.split(",") if x.strip())
    except ValueError:
        raise InputError(f"'{s}': expected comma-separated numbers") from None


def _parse_variants(s: str) -> tuple[tuple[str, ...], ...]:
    if s.strip() == "all":
        return DEFAULT_VARIANTS
    out = []
    for v in s.split(","):
        mods = tuple(m.strip() for m in v.split("+") if m.strip())
        bad = [m for m in mods if m not in MODALITIES]
        if bad or not mods:
            raise InputError(f"variant '{v}': modalities must be among {', '.join(MODALITIES)} joined by '+'")
        out.append(mods)
    return tuple(out)


def _rule_tokens(s: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in s.split(",") if t.strip() in RULE_VARIANTS)


def _embedding_tokens(s: str) -> list[str]:
    return [t.strip() for t in s.split(",") if t.strip() and t.strip() not in RULE_VARIANTS]


def _parse_sets(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for it in items:
        if "=" not in it or "." not in it.split("=", 1)[0]:
            raise InputError(f"--set '{it}': expected SCENARIO.PARAM=VALUE (e.g. spurious.corr=0.6)")
        lhs, val = it.split("=", 1)
        scen, param = lhs.split(".", 1)
        if scen not in sc.SCENARIOS:
            raise InputError(f"--set '{it}': unknown scenario '{scen}'")
        if param not in sc.scenario_params(scen):
            raise InputError(
                f"--set '{it}': '{scen}' has no parameter '{param}' ({', '.join(sc.scenario_params(scen))})"
            )
        v: Any = val
        with contextlib.suppress(ValueError):
            v = float(val) if any(ch in val for ch in ".e") else int(val)
        out.setdefault(scen, {})[param] = v
    return out


def bench_scenarios_command(
    out: Path = typer.Option(Path("bench-scenarios"), "--out", "-o", help="Output folder (resumable)."),
    cohort: str = typer.Option(
        "phantom", help="phantom | mimic:<root> | chexpert:<root> | case-table CSV/parquet."
    ),
    scenarios: str = typer.Option("spurious,rare,noisy", help="Comma-separated scenarios."),
    shares: str = typer.Option("0.05,0.10,0.20", help="Test-slice shares."),
    runs: int = typer.Option(5, help="Runs (seeds) per scenario × share."),
    seed: int = typer.Option(0, help="First seed."),
    n_train: int = typer.Option(1000, help="Training cases per run."),
    n_test: int = typer.Option(500, help="Test cases per run."),
    variants: str = typer.Option(
        "all", help="'all' or e.g. image,report,image+report+metadata; also rules, rules+mixture."
    ),
    fusions: str = typer.Option("concat,balanced", help="Fusions for multimodal variants."),
    slicer_configs: str = typer.Option(
        "study", help="Slicer configs: study (n_init=1), restarts (n_init=10)."
    ),
    slicer_seeds: int = typer.Option(1, help="Slicer random states per fit (>1 measures instability)."),
    min_gap: float = typer.Option(
        0.10, help="Keep a run only if the in-slice accuracy gap is at least this."
    ),
    classifier: str = typer.Option(
        "head", help="head (frozen EfficientNet-Lite0 features) | cnn (fine-tuned)."
    ),
    workers: int = typer.Option(1, help="Parallel worker processes."),
    peer_domino: bool = typer.Option(False, "--peer-domino", help="Also run Domino 0.1.5 as a peer row."),
    peer_sliceline: bool = typer.Option(
        False, "--peer-sliceline", help="Also run the sliceline package on the rule predicates."
    ),
    peer_variants: str = typer.Option(
        "image,image+report+metadata", help="Variants the Domino peer runs on."
    ),
    set_: list[str] = typer.Option([], "--set", help="Scenario parameter override, SCENARIO.PARAM=VALUE."),
    n_cases: int | None = typer.Option(None, help="Use a random subset of the cohort."),
    cache_dir: Path | None = typer.Option(None, help="Cache folder (default OUT/cache)."),
    ray_address: str | None = typer.Option(
        None, "--ray-address", help="Run on Ray ('local' starts a private instance, 'auto' joins one)."
    ),
    peers_dir: Path | None = typer.Option(
        None,
        "--peers-dir",
        help="Peers folder with domino_env.sh (default: $MEDAUDIT_PEERS or ../shared/peers).",
    ),
    force: bool = typer.Option(
        False,
        "--force",
        help="Use an --out folder holding files medaudit did not write; they are kept.",
    ),
) -> None:
    """Benchmark multimodal slice discovery on the study's failure scenarios (resumable, parallel)."""
    params = _parse_sets(set_)
    for s in scenarios.split(","):
        params.setdefault(s.strip(), {}).update({"n_train": n_train, "n_test": n_test})
    cfg = BenchConfig(
        scenarios=tuple(s.strip() for s in scenarios.split(",") if s.strip()),
        slice_shares=_floats(shares),
        n_runs=runs,
        seed=seed,
        scenario_params=params,
        variants=_parse_variants(",".join(_embedding_tokens(variants)) or "image+report+metadata"),
        rule_variants=_rule_tokens(variants),
        peer_sliceline=peer_sliceline,
        fusions=tuple(f.strip() for f in fusions.split(",") if f.strip()),
        slicer_configs=tuple(c.strip() for c in slicer_configs.split(",") if c.strip()),
        slicer_seeds=slicer_seeds,
        min_gap=min_gap,
        classifier=classifier,
        peer_domino=peer_domino,
        peer_variants=tuple("+".join(v) for v in _parse_variants(peer_variants)),
    )
    for c in cfg.slicer_configs:
        if c not in SLICER_CONFIGS:
            raise InputError(f"slicer config '{c}': choose from {', '.join(SLICER_CONFIGS)}")
    for f in cfg.fusions:
        if f not in ("concat", "balanced"):
            raise InputError(f"fusion '{f}': choose concat or balanced")
    if "rules+mixture" in cfg.rule_variants and cfg.rules_mixture_variant not in {
        "+".join(v) for v in cfg.variants
    }:
        raise InputError(f"--variants: rules+mixture needs {cfg.rules_mixture_variant} as well")
    res = run_benchmark(
        cfg, out, cohort=cohort, cache_dir=cache_dir, workers=workers, n_cases=n_cases,
        ray_address=ray_address, peers_dir=peers_dir, force=force,
    )  # fmt: skip
    typer.echo(
        f"{res['runs_kept']} kept / {res['runs_total']} runs ({res['n_cached']} cached) in {res['wall_s']:.1f}s; "
        f"results in {out}/results.csv, summary in {out}/summary.md"
    )
    for n in res["notes"]:
        typer.echo(n)


__all__ = [
    "DEFAULT_VARIANTS",
    "SLICER_CONFIGS",
    "STUDY_SLICER",
    "BenchConfig",
    "RunTask",
    "aggregate",
    "bench_scenarios_command",
    "contributions",
    "embed_cohort",
    "load_cohort",
    "make_tasks",
    "modality_eta2",
    "run_benchmark",
    "run_one",
    "stability",
]
