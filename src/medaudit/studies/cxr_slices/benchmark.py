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

The code lives in modules named for what they do; this module re-exports their public names (and the few
private ones the bench scripts use):

- :mod:`.bench_config`: modality variants, slicer configurations, :class:`BenchConfig`, :class:`RunTask`;
- :mod:`.bench_cohort`: loading, embedding and fingerprinting the cohort;
- :mod:`.bench_run`: one run (:func:`run_one`) and its worker entry point;
- :mod:`.bench_scoring`: fusion, precision@k, modality shares and explanation hits of one slicer fit;
- :mod:`.bench_domino`: the Domino 0.1.5 peer;
- :mod:`.bench_grid`: the resumable run grid (:func:`run_benchmark`, its :class:`RunOptions`);
- :mod:`.bench_tables`: aggregation with bootstrap CIs and markdown tables;
- :mod:`.bench_plot`, :mod:`.bench_summary`: the plot and the output files;
- :mod:`.bench_cli`: the ``bench-scenarios`` command.
"""

from __future__ import annotations

from medaudit.studies.cxr_slices.bench_cli import (
    _parse_sets,
    _parse_variants,
    bench_scenarios_command,
)
from medaudit.studies.cxr_slices.bench_cohort import (
    cohort_fingerprint,
    embed_cohort,
    load_cohort,
)
from medaudit.studies.cxr_slices.bench_config import (
    DEFAULT_METADATA_COLUMNS,
    DEFAULT_RULE_METADATA,
    DEFAULT_VARIANTS,
    KS,
    METRIC_COLUMNS,
    MODALITIES,
    PHANTOM_ENCODER_PARAMS,
    PHANTOM_SCENARIO_PARAMS,
    RULE_VARIANTS,
    SLICELINE_PARAMS,
    SLICER_CONFIGS,
    STUDY_SLICER,
    BenchConfig,
    RunTask,
    scenario_params_for,
)
from medaudit.studies.cxr_slices.bench_domino import (
    domino_python,
)
from medaudit.studies.cxr_slices.bench_grid import (
    CXR_CODE,
    RunOptions,
    make_tasks,
    run_benchmark,
)
from medaudit.studies.cxr_slices.bench_plot import (
    plot_results,
)
from medaudit.studies.cxr_slices.bench_run import (
    _load_state,
    run_one,
    train_classifier,
)
from medaudit.studies.cxr_slices.bench_scoring import (
    _fuse,
    modality_eta2,
)
from medaudit.studies.cxr_slices.bench_summary import (
    write_outputs,
)
from medaudit.studies.cxr_slices.bench_tables import (
    aggregate,
    contributions,
    frame_to_markdown,
    hit_rates,
    markdown_table,
    stability,
)

__all__ = [
    "CXR_CODE",
    "DEFAULT_METADATA_COLUMNS",
    "DEFAULT_RULE_METADATA",
    "DEFAULT_VARIANTS",
    "KS",
    "METRIC_COLUMNS",
    "MODALITIES",
    "PHANTOM_ENCODER_PARAMS",
    "PHANTOM_SCENARIO_PARAMS",
    "RULE_VARIANTS",
    "SLICELINE_PARAMS",
    "SLICER_CONFIGS",
    "STUDY_SLICER",
    "BenchConfig",
    "RunOptions",
    "RunTask",
    "_fuse",
    "_load_state",
    "_parse_sets",
    "_parse_variants",
    "aggregate",
    "bench_scenarios_command",
    "cohort_fingerprint",
    "contributions",
    "domino_python",
    "embed_cohort",
    "frame_to_markdown",
    "hit_rates",
    "load_cohort",
    "make_tasks",
    "markdown_table",
    "modality_eta2",
    "plot_results",
    "run_benchmark",
    "run_one",
    "scenario_params_for",
    "stability",
    "train_classifier",
    "write_outputs",
]
