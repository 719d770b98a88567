"""``medaudit bench-scenarios``: option parsing and the typer command."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer

from medaudit.errors import InputError
from medaudit.rungrid import check_ray_address
from medaudit.studies.cxr_slices import scenarios as sc
from medaudit.studies.cxr_slices.bench_config import (
    DEFAULT_VARIANTS,
    MODALITIES,
    RULE_VARIANTS,
    SLICER_CONFIGS,
    BenchConfig,
)
from medaudit.studies.cxr_slices.bench_grid import run_benchmark


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
    params = _scenario_params(set_, scenarios, n_train, n_test)  # --set errors first
    _check_numbers(shares, runs, (n_train, n_test, slicer_seeds), min_gap, classifier, workers)
    _check_scale(n_cases, n_train, n_test, ray_address)
    cfg = BenchConfig(
        scenarios=_names(scenarios),
        slice_shares=_floats(shares),
        n_runs=runs,
        seed=seed,
        scenario_params=params,
        variants=_parse_variants(",".join(_embedding_tokens(variants)) or "image+report+metadata"),
        rule_variants=_rule_tokens(variants),
        peer_sliceline=peer_sliceline,
        fusions=_names(fusions),
        slicer_configs=_names(slicer_configs),
        slicer_seeds=slicer_seeds,
        min_gap=min_gap,
        classifier=classifier,
        peer_domino=peer_domino,
        peer_variants=tuple("+".join(v) for v in _parse_variants(peer_variants)),
    )
    _check_config(cfg)
    res = run_benchmark(
        cfg, out, cohort=cohort, cache_dir=cache_dir, workers=workers, n_cases=n_cases,
        ray_address=ray_address, peers_dir=peers_dir, force=force,
    )  # fmt: skip
    _echo_result(res, out)


def _names(s: str) -> tuple[str, ...]:
    """The non-empty names of a comma-separated list."""
    return tuple(x.strip() for x in s.split(",") if x.strip())


def _scenario_params(
    sets: Sequence[str], scenarios: str, n_train: int, n_test: int
) -> dict[str, dict[str, Any]]:
    """The ``--set`` overrides, with ``n_train`` and ``n_test`` for every scenario named."""
    params = _parse_sets(sets)
    for s in scenarios.split(","):
        params.setdefault(s.strip(), {}).update({"n_train": n_train, "n_test": n_test})
    return params


def _check_numbers(
    shares: str, runs: int, counts: tuple[int, int, int], min_gap: float, classifier: str, workers: int
) -> None:
    """The numbers and the classifier, before the output folder is claimed or the cohort embedded, one
    line naming the flag: ``--runs 0`` looped for ever, ``--shares ''``, ``--slicer-seeds 0`` and
    ``--min-gap nan`` were internal errors, and ``--shares 1.5``, ``--n-train 0`` and an unknown
    ``--classifier`` were refused only after the cohort was embedded into ``--out``."""
    if runs < 1:
        raise InputError(f"--runs {runs}: must be at least 1")
    values = _floats(shares)
    if not values:
        raise InputError(f"--shares '{shares}': give at least one test-slice share in (0, 1)")
    for v in values:
        if not (math.isfinite(v) and 0.0 < v < 1.0):
            raise InputError(f"--shares {v:g}: a test-slice share must lie in (0, 1)")
    for flag, v in zip(("--n-train", "--n-test", "--slicer-seeds"), counts, strict=True):
        if v < 1:
            raise InputError(f"{flag} {v}: must be at least 1")
    if not math.isfinite(min_gap):
        raise InputError(f"--min-gap {min_gap}: must be a finite accuracy gap")
    if classifier not in ("head", "cnn"):
        raise InputError(f"--classifier '{classifier}': choose head or cnn")
    if workers < 0:
        raise InputError(f"--workers {workers}: must be 0 or more")


def _check_scale(n_cases: int | None, n_train: int, n_test: int, ray_address: str | None) -> None:
    """``--n-cases`` and ``--ray-address``, before the output folder is claimed: ``--n-cases 3`` was
    refused only after the cohort was built and embedded into ``OUT/cache`` (a run draws ``--n-train``
    and ``--n-test`` cases from disjoint pools), and ``--ray-address bogus://x`` was ``internal error:
    RuntimeError`` (Ray took ``bogus`` for a module to import)."""
    if n_cases is not None and n_cases < n_train + n_test:
        raise InputError(
            f"--n-cases {n_cases}: must be at least --n-train + --n-test ({n_train + n_test}): a run "
            "draws its training and test cases from disjoint parts of the cohort"
        )
    check_ray_address(ray_address)


def _check_config(cfg: BenchConfig) -> None:
    """Reject unknown slicer configs and fusions, and ``rules+mixture`` without the variant it merges."""
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


def _echo_result(res: dict[str, Any], out: Path) -> None:
    """Print the run counts, wall time, where the results are, and the notes."""
    typer.echo(
        f"{res['runs_kept']} kept / {res['runs_total']} runs ({res['n_cached']} cached) in {res['wall_s']:.1f}s; "
        f"results in {out}/results.csv, summary in {out}/summary.md"
    )
    for n in res["notes"]:
        typer.echo(n)
