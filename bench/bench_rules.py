"""Benchmark: RuleSlicer search time and peak memory at 10k, 100k and 1M cases x ~500 binary predicates.

Each size runs in its own subprocess, so peak memory (max RSS) is per run; the RSS right after the data
are built is reported too, so the search's own footprint is ``peak - data``. Data: ``p`` boolean
predicates with densities drawn from Beta(0.5, 6) (mean ~7%, like concept / metadata predicates),
10% scattered errors, and two planted failures: a level-3 rule (x3 ∧ x7 ∧ x11, each at density 0.3,
so ~2.7% of the cases, 70% errors) and, at
every size, a 20-case single predicate with 15 errors. Reported: fit wall and CPU seconds, rules
tested, and whether each planted rule is among the returned slices. Settings: RuleSlicer defaults
(max_level 3, min_support 10, alpha 0.05, beam 2,000 parents / 200,000 candidates), 1 thread.

Usage:
    python bench/bench_rules.py --sizes 10000 100000 1000000 --features 500 --out bench/results/rules_bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def make_data(n: int, p: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    dens = rng.beta(0.5, 6.0, p)
    dens[[3, 7, 11]] = 0.3  # the planted level-3 rule covers ~2.7% of the cases
    x = np.empty((n, p), dtype=bool)
    for j in range(p):
        x[:, j] = rng.random(n, dtype=np.float32) < dens[j]
    y = rng.integers(0, 2, n)
    err = rng.random(n, dtype=np.float32) < 0.10
    planted = x[:, 3] & x[:, 7] & x[:, 11]
    err[planted] = rng.random(int(planted.sum()), dtype=np.float32) < 0.70
    small = np.zeros(n, dtype=bool)
    small[rng.choice(n, 20, replace=False)] = True
    x[:, p - 1] = small
    err[small] = False
    err[np.flatnonzero(small)[:15]] = True
    pred = np.where(err, 1 - y, y)
    return x, y, pred


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child(n: int, p: int, seed: int) -> dict[str, object]:
    from medaudit.audit.slicers.rules import RuleSlicer

    x, y, pred = make_data(n, p, seed)
    rss_data = _rss_mib()
    t0, c0 = time.perf_counter(), time.process_time()
    s = RuleSlicer(n_slices=5).fit(x, y, pred)
    fit_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    t0 = time.perf_counter()
    s.predict_proba(x, y, pred)
    predict_s = time.perf_counter() - t0
    return {
        "n": n,
        "p": p,
        "fit_s": round(fit_s, 3),
        "fit_cpu_s": round(cpu_s, 3),
        "predict_s": round(predict_s, 3),
        "input_mib": round(x.nbytes / 2**20, 1),
        "rss_after_data_mib": round(rss_data, 1),
        "peak_rss_mib": round(_rss_mib(), 1),
        "rules_tested": s.n_rules_tested_,
        "search": s.search_stats_,
        "slices": s.rule_text_,
        "found_level3": "x3 ∧ x7 ∧ x11" in s.rule_text_,
        "found_small": f"x{p - 1}" in s.rule_text_,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--features", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "rules_bench.json")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child is not None:
        print(json.dumps(child(a.child, a.features, a.seed)))
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    runs = []
    for n in a.sizes:
        for r in range(a.repeats):
            cmd = [
                sys.executable,
                __file__,
                "--child",
                str(n),
                "--features",
                str(a.features),
                "--seed",
                str(a.seed),
            ]
            load = os.getloadavg()
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            run = json.loads(out.stdout.strip().splitlines()[-1])
            run["repeat"], run["load_avg_before"] = r, [round(v, 2) for v in load]
            runs.append(run)
            print(
                json.dumps(
                    {
                        k: run[k]
                        for k in ("n", "fit_s", "peak_rss_mib", "rules_tested", "found_level3", "found_small")
                    }
                )
            )
    result = {
        "command": "python " + " ".join(sys.argv),
        "host": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "runs": runs,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# RuleSlicer benchmark (search time and memory)",
        "",
        f"Command: `{result['command']}`; 1 thread; {platform.platform()}.",
        "",
        "| n | predicates | fit wall s | fit CPU s | input MiB | RSS after data MiB | peak RSS MiB | rules tested "
        "| planted level-3 found | 20-case slice found | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r['n']} | {r['p']} | {r['fit_s']} | {r['fit_cpu_s']} | {r['input_mib']} | {r['rss_after_data_mib']} "
            f"| {r['peak_rss_mib']} | {r['rules_tested']} | {r['found_level3']} | {r['found_small']} "
            f"| {r['load_avg_before'][0]} |"
        )
    a.out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
