"""The benchmark's run grid: one content-keyed task per run, the worker state every run loads, and the
resumable driver that runs what is missing and writes the outputs."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medaudit.errors import InputError
from medaudit.io import atomic_save, atomic_write_json, atomic_write_text
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
from medaudit.studies.cxr_slices.bench_cohort import cohort_fingerprint, embed_cohort, load_cohort
from medaudit.studies.cxr_slices.bench_config import (
    MODALITIES,
    PHANTOM_ENCODER_PARAMS,
    BenchConfig,
    RunTask,
    scenario_params_for,
)
from medaudit.studies.cxr_slices.bench_domino import _PEER_SCRIPTS, domino_python
from medaudit.studies.cxr_slices.bench_run import _execute_run, _load_state
from medaudit.studies.cxr_slices.bench_summary import write_outputs

#: The code a benchmark run executes (a change to any of these files changes every run key).
CXR_CODE = ("studies/cxr_slices", "audit/slicers", "audit/fusion.py", "stats.py")


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


@dataclasses.dataclass(frozen=True, eq=False)
class RunOptions:
    """How :func:`run_benchmark` runs a config, apart from the output folder: the cohort (a name or a ready
    case table, with its ``kind``, optional precomputed ``embeddings`` and an ``n_cases`` subset), the
    cache, the parallelism (``workers``, ``ray_address``), the bootstrap size and the peers folder.

    ``eq=False``: a field may hold a DataFrame or arrays, which have no single truth value.
    """

    cohort: str | pd.DataFrame = "phantom"
    cache_dir: str | Path | None = None
    workers: int = 1
    n_cases: int | None = None
    embeddings: dict[str, np.ndarray] | None = None
    kind: str | None = None
    n_boot: int = 1000
    ray_address: str | None = None
    peers_dir: str | os.PathLike[str] | None = None


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
    accepts a folder medaudit did not write), then run :func:`_run_benchmark` in it with the other
    arguments as :class:`RunOptions`."""
    from medaudit.outdir import claim_output

    opts = RunOptions(
        cohort=cohort,
        cache_dir=cache_dir,
        workers=workers,
        n_cases=n_cases,
        embeddings=embeddings,
        kind=kind,
        n_boot=n_boot,
        ray_address=ray_address,
        peers_dir=peers_dir,
    )
    with claim_output(
        out_dir,
        "bench-scenarios",
        force=force,
        in_place=True,
        keep_if=("runs", "cache"),
        owns=("runs", "cache"),
    ) as claim:
        return _run_benchmark(config, claim.path, opts)


def _run_benchmark(config: BenchConfig, out_dir: str | Path, opts: RunOptions) -> dict[str, Any]:
    """Run (or resume) the benchmark and write all outputs to ``out_dir``; returns a summary dict.

    ``opts.cohort`` may be a ready case-table DataFrame (then ``opts.kind`` names its defaults: ``phantom``
    or the study's); ``opts.embeddings`` may be given precomputed (``{modality: (n, d)}`` aligned with the
    table).
    """
    out = Path(out_dir)
    cache = Path(opts.cache_dir) if opts.cache_dir else out / "cache"
    t_start = time.perf_counter()
    df, kind = _cohort_table(config, opts.cohort, cache, opts.n_cases, opts.kind)
    out.mkdir(parents=True, exist_ok=True)
    embeddings = _cohort_embeddings(config, df, kind, cache, opts.embeddings)
    config, peer_py, notes = _with_domino_peer(config, opts.peers_dir)
    tasks = make_tasks(config, kind, cohort_fingerprint(df, embeddings))
    store = ResultStore(out, parts="runs", table="runs.parquet")
    state = _write_state(out / "cache" / "state", df, embeddings, config, kind, peer_py)
    t_runs = time.perf_counter()
    n_run_now = _run_tasks(tasks, store, state, opts.workers, opts.ray_address)
    runs_wall = time.perf_counter() - t_runs
    store.compact([t.key for t in tasks])
    summary = write_outputs(store.read(), out, config, notes, n_boot=opts.n_boot)
    summary.update(
        {
            "n_tasks": len(tasks),
            "n_run_now": n_run_now,
            "n_cached": len(tasks) - n_run_now,
            "runs_wall_s": runs_wall,
            "wall_s": time.perf_counter() - t_start,
            "kind": kind,
            "n_cases": len(df),
        }
    )
    atomic_write_json(out / "summary.json", summary)
    return summary


def _cohort_table(
    config: BenchConfig, cohort: str | pd.DataFrame, cache: Path, n_cases: int | None, kind: str | None
) -> tuple[pd.DataFrame, str]:
    """Check the scenario names, then the cohort's case table and kind (a given table is ``kind`` or
    ``table``)."""
    for name in config.scenarios:
        if name not in sc.SCENARIOS:
            raise InputError(f"scenario '{name}': choose from {', '.join(sc.SCENARIOS)}")
    if isinstance(cohort, pd.DataFrame):
        return cohort.reset_index(drop=True), kind or "table"
    return load_cohort(cohort, cache, n_cases)


def _cohort_embeddings(
    config: BenchConfig,
    df: pd.DataFrame,
    kind: str,
    cache: Path,
    embeddings: dict[str, np.ndarray] | None,
) -> dict[str, np.ndarray]:
    """The given embeddings, or every modality the variants need (and the image one) embedded now; each
    must have one row per case."""
    if embeddings is None:
        needed = sorted({m for v in config.variants for m in v} | {"image"}, key=MODALITIES.index)
        enc_params = {**(PHANTOM_ENCODER_PARAMS if kind == "phantom" else {}), **config.encoder_params}
        embeddings = embed_cohort(df, cache, config.encoders, config.metadata_columns, needed, enc_params)
    for m, e in embeddings.items():
        if len(e) != len(df):
            raise InputError(f"embeddings '{m}': {len(e)} rows but the cohort has {len(df)}")
    return embeddings


def _with_domino_peer(
    config: BenchConfig, peers_dir: str | os.PathLike[str] | None
) -> tuple[BenchConfig, str, list[str]]:
    """The config, the Domino peer's python and the notes: without a usable peer environment the peer is
    turned off and a note says why."""
    notes: list[str] = []
    peer_py = ""
    if config.peer_domino:
        peer_py, why = domino_python(peers_dir)
        if not peer_py:
            notes.append(f"Domino 0.1.5 peer skipped: {why}")
            config = dataclasses.replace(config, peer_domino=False)
    return config, peer_py, notes


def _run_tasks(
    tasks: list[RunTask], store: ResultStore, state: Path, workers: int, ray_address: str | None
) -> int:
    """Run the tasks ``store`` does not hold yet (serially, in a process pool or on Ray), appending each
    run's rows to it; returns how many ran now."""
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
    return len(grid.executed)
