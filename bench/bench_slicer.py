"""Benchmark: medaudit's ErrorAwareMixtureSlicer against the published Domino 0.1.5 slicer.

Both run on the same simulated planted-slice embeddings (medaudit.studies.cxr_slices.synthetic), each in
its own subprocess, so that peak memory (max RSS, from ``/usr/bin/time -v`` or getrusage) is per run.
Domino runs in its own Python 3.9 environment (``$MEDAUDIT_PEERS/domino_env.sh``, default ``../shared/peers``) through
``run_domino.py``. Both use the study setting: 5 slices, 20 mixture components, label and prediction
weights 10, PCA to 128 dimensions, confusion initialisation, seed 0.

Reported per n: fit time, predict time, fit-time ratio (Domino / ours), peak RSS, and agreement:
precision@10 (dcbench and study definitions) of each slicer on the planted slice, plus the
correlation of the two top-slice membership vectors.

Usage:
    python bench/bench_slicer.py --sizes 10000 100000 1000000 --dim 512 \
        --domino-timeout 900 --out bench/results/slicer_bench.json

Sizes at which Domino exceeds ``--domino-timeout`` are reported as ``timeout`` (with the limit).
Data are written once to ``--data-dir`` and reused.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PEERS = Path(os.environ.get("MEDAUDIT_PEERS", ROOT.parent / "shared" / "peers"))


def _data_paths(data_dir: Path, n: int, d: int, seed: int) -> dict[str, Path]:
    base = data_dir / f"n{n}_d{d}_s{seed}"
    return {k: base / f"{k}.npy" for k in ("emb", "targets", "pred_probs", "in_slice")}


def ensure_data(data_dir: Path, n: int, d: int, seed: int) -> dict[str, Path]:
    """Write the planted-slice arrays for (n, d, seed) unless they are already there."""
    from medaudit.studies.cxr_slices.synthetic import make_planted_slice_data

    paths = _data_paths(data_dir, n, d, seed)
    if all(p.exists() for p in paths.values()):
        return paths
    tmp_emb = paths["emb"].with_name(".emb.tmp.npy")
    data = make_planted_slice_data(n, d, slice_frac=0.05, random_state=seed, out_path=tmp_emb)
    del data.embeddings
    np.save(paths["targets"], data.targets)
    np.save(paths["pred_probs"], data.pred_probs)
    np.save(paths["in_slice"], data.in_slice)
    os.replace(tmp_emb, paths["emb"])
    return paths


def _timed_subprocess(cmd: list[str], timeout: float | None, env: dict[str, str]) -> dict:
    """Run ``cmd``; return its last JSON stdout line, wall time, peak RSS (MiB) and status."""
    use_time = Path("/usr/bin/time").exists()
    full = (["/usr/bin/time", "-v", *cmd]) if use_time else cmd
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(full, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "timeout_s": timeout, "wall_s": round(time.perf_counter() - t0, 2)}
    wall = time.perf_counter() - t0
    out: dict = {"status": "ok" if proc.returncode == 0 else f"failed rc={proc.returncode}"}
    for line in reversed(proc.stdout.strip().splitlines()):
        if line.startswith("{"):
            out.update(json.loads(line))
            break
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    if m:
        out["peak_rss_mib"] = round(int(m.group(1)) / 1024, 1)
    cpu = [re.search(rf"{k} time \(seconds\): ([\d.]+)", proc.stderr) for k in ("User", "System")]
    if all(cpu):
        out["process_cpu_s"] = round(sum(float(c.group(1)) for c in cpu), 2)
    out["wall_s"] = round(wall, 2)
    if proc.returncode != 0:
        out["stderr_tail"] = proc.stderr[-2000:]
    return out


def run_ours_child(a: argparse.Namespace) -> None:
    """Child process: fit our slicer on the .npy files and print one JSON line."""
    import torch

    from medaudit.audit.slicers import ErrorAwareMixtureSlicer

    if a.threads:
        torch.set_num_threads(a.threads)
    emb = np.load(a.emb, mmap_mode="r")
    y = np.load(a.targets)
    p = np.load(a.pred_probs)
    s = ErrorAwareMixtureSlicer(
        n_slices=5,
        n_mixture_components=a.n_mixture_components,
        n_pca_components=a.n_pca,
        n_init=a.n_init,
        device=a.device,
        random_state=a.seed,
    )
    t0 = time.perf_counter()
    c0 = time.process_time()
    s.fit(emb, y, p)
    t1 = time.perf_counter()
    fit_cpu = time.process_time() - c0
    probs = s.predict_proba(emb, y, p)
    t2 = time.perf_counter()
    np.save(a.out, probs.astype(np.float32))
    print(
        json.dumps(
            {
                "fit_s": round(t1 - t0, 3),
                "fit_cpu_s": round(fit_cpu, 3),
                "predict_s": round(t2 - t1, 3),
                "n_iter": int(s.n_iter_),
                "converged": bool(s.converged_),
                "lower_bound": float(s.lower_bound_),
                "device": str(s.device_),
                "threads": torch.get_num_threads(),
            }
        )
    )


def _agreement(probs: np.ndarray, paths: dict[str, Path]) -> dict:
    from medaudit.studies.cxr_slices.metrics import precision_at_k_dcbench, precision_at_k_study

    gt = np.load(paths["in_slice"])
    y = np.load(paths["targets"])
    return {
        "p@10_dcbench": round(precision_at_k_dcbench(probs, gt, k=10), 3),
        "p@25_dcbench": round(precision_at_k_dcbench(probs, gt, k=25), 3),
        "p@10_study": round(precision_at_k_study(probs, gt, y, target_class=0, k=10), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10000, 100000])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-mixture-components", type=int, default=20)
    ap.add_argument("--n-pca", type=int, default=128)
    ap.add_argument("--n-init", type=int, default=3, help="restarts for ours (Domino always does 1)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for ours")
    ap.add_argument("--device", default=None)
    ap.add_argument("--data-dir", type=Path, default=Path("/tmp/medaudit-bench"))
    ap.add_argument("--domino-python", default=None, help="python of the Domino env (default: build it)")
    ap.add_argument("--domino-timeout", type=float, default=900.0)
    ap.add_argument("--domino-max-n", type=int, default=None, help="skip Domino above this n")
    ap.add_argument("--skip-domino", action="store_true")
    ap.add_argument("--skip-ours", action="store_true")
    ap.add_argument("--render-only", action="store_true", help="rewrite the .md table from the JSON and exit")
    ap.add_argument(
        "--import-baseline",
        action="store_true",
        help="also time each environment's imports alone (CPU s, peak RSS), to read process figures against",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "slicer_bench.json")
    # child mode
    ap.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--emb")
    ap.add_argument("--targets")
    ap.add_argument("--pred-probs")
    ap.add_argument("--probs-out", dest="out_probs")
    a = ap.parse_args()

    if a._child:
        a.out = a.out_probs
        run_ours_child(a)
        return
    if a.render_only:
        _write(json.loads(a.out.read_text()), a.out)
        return

    env = dict(
        os.environ,
        OMP_NUM_THREADS=str(a.threads),
        MKL_NUM_THREADS=str(a.threads),
        OPENBLAS_NUM_THREADS=str(a.threads),
        MEDAUDIT_QUIET="1",
    )
    dom_py = None
    if not a.skip_domino:
        dom_py = (
            a.domino_python
            or subprocess.run(
                ["bash", str(PEERS / "domino_env.sh")], capture_output=True, text=True, check=True
            )
            .stdout.strip()
            .splitlines()[-1]
        )

    results: dict = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "host": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "settings": {
            "dim": a.dim,
            "n_slices": 5,
            "n_mixture_components": a.n_mixture_components,
            "n_pca": a.n_pca,
            "weights": 10,
            "init": "confusion",
            "seed": a.seed,
            "ours_n_init": a.n_init,
            "threads": a.threads,
        },
        "runs": [],
    }
    old_rows: dict[int, dict] = {}
    old_doc: dict = {}
    if a.out.exists():  # merge: a run with --skip-domino keeps the Domino figures already recorded
        try:
            old_doc = json.loads(a.out.read_text())
            old_rows = {r["n"]: r for r in old_doc.get("runs", [])}
        except (json.JSONDecodeError, OSError, KeyError):
            old_rows, old_doc = {}, {}

    if a.import_baseline:
        if dom_py is None:
            dom_py_base = subprocess.run(
                ["bash", str(PEERS / "domino_env.sh")], capture_output=True, text=True, check=True
            ).stdout.strip()
            dom_py_base = dom_py_base.splitlines()[-1]
        else:
            dom_py_base = dom_py
        base = {"ours": _timed_subprocess([sys.executable, "-c", "import medaudit.audit.slicers"], None, env)}
        if dom_py_base:
            code = f"import sys; sys.path.insert(0, {str(PEERS)!r}); import run_domino; run_domino._load_domino_slicer()"
            base["domino"] = _timed_subprocess([dom_py_base, "-c", code], None, env)
        results["import_baseline"] = base
        print(f"import baseline: {base}", flush=True)
    elif isinstance(old_doc.get("import_baseline"), dict):
        results["import_baseline"] = old_doc["import_baseline"]

    for n in a.sizes:
        paths = ensure_data(a.data_dir, n, a.dim, a.seed)
        row: dict = dict(old_rows.pop(n, {}))
        row.update({"n": n, "d": a.dim, "load_avg_before": os.getloadavg()})
        work = paths["emb"].parent
        if not a.skip_ours:
            cmd = [
                sys.executable,
                __file__,
                "--_child",
                "--emb",
                str(paths["emb"]),
                "--targets",
                str(paths["targets"]),
                "--pred-probs",
                str(paths["pred_probs"]),
                "--probs-out",
                str(work / "ours_probs.npy"),
                "--threads",
                str(a.threads),
                "--n-mixture-components",
                str(a.n_mixture_components),
                "--n-pca",
                str(a.n_pca),
                "--n-init",
                str(a.n_init),
                "--seed",
                str(a.seed),
            ]
            if a.device:
                cmd += ["--device", a.device]
            r = _timed_subprocess(cmd, None, env)
            if r["status"] == "ok":
                r.update(_agreement(np.load(work / "ours_probs.npy"), paths))
            row["ours"] = r
            print(f"n={n} ours: {r}", flush=True)
        if dom_py and (a.domino_max_n is None or n <= a.domino_max_n):
            cmd = [
                dom_py,
                str(PEERS / "run_domino.py"),
                str(paths["emb"]),
                str(paths["targets"]),
                str(paths["pred_probs"]),
                str(work / "domino_probs.npy"),
                "--n-mixture-components",
                str(a.n_mixture_components),
                "--n-pca",
                str(a.n_pca),
                "--seed",
                str(a.seed),
            ]
            r = _timed_subprocess(cmd, a.domino_timeout, env)
            if r["status"] == "ok":
                r.update(_agreement(np.load(work / "domino_probs.npy"), paths))
            row["domino"] = r
            print(f"n={n} domino: {r}", flush=True)
        ours, dom = row.get("ours", {}), row.get("domino", {})
        if ours.get("status") == "ok" and dom.get("status") == "ok":
            row["fit_ratio_domino_over_ours"] = round(dom["fit_s"] / ours["fit_s"], 2)
            po, pd_ = np.load(work / "ours_probs.npy"), np.load(work / "domino_probs.npy")
            row["top_slice_membership_corr"] = round(float(np.corrcoef(po[:, 0], pd_[:, 0])[0, 1]), 4)
        elif ours.get("status") == "ok" and dom.get("status") == "timeout":
            row["fit_ratio_domino_over_ours"] = (
                f"> {round(a.domino_timeout / ours['fit_s'], 2)} (Domino timed out)"
            )
        row["load_avg_after"] = os.getloadavg()
        rows = {**old_rows, **{r["n"]: r for r in results["runs"]}, n: row}
        results["runs"] = [rows[k] for k in sorted(rows)]
        _write(results, a.out)


def _write(results: dict, out: Path) -> None:
    from medaudit.io import atomic_write_json, atomic_write_text

    atomic_write_json(out, results)
    lines = [
        "# Slicer benchmark: ErrorAwareMixtureSlicer vs Domino 0.1.5",
        "",
        f"Command: `{results['command']}`",
        "",
        f"Import-only baseline (CPU s / peak RSS MiB): {json.dumps(results.get('import_baseline', {}))}",
        "",
        "Wall times are under the shared machine's load (load average noted); process CPU time "
        "(user + system, whole subprocess incl. imports, PCA, fit and predict) is the steadier measure.",
        "",
        "| n | d | ours fit wall s | Domino fit wall s | ratio wall (Domino/ours) | ours process CPU s "
        "| Domino process CPU s | ours peak RSS MiB | Domino peak RSS MiB | ours p@10 dcb/study "
        "| Domino p@10 dcb/study | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        o, dm = r.get("ours", {}), r.get("domino", {})

        def f(x: dict, key: str) -> str:
            return str(x.get(key, x.get("status", "-"))) if x else "-"

        lines.append(
            f"| {r['n']} | {r['d']} | {f(o, 'fit_s')} | {f(dm, 'fit_s')} | {r.get('fit_ratio_domino_over_ours', '-')} "
            f"| {o.get('process_cpu_s', '-')} | {dm.get('process_cpu_s', '-')} "
            f"| {o.get('peak_rss_mib', '-')} | {dm.get('peak_rss_mib', '-')} "
            f"| {o.get('p@10_dcbench', '-')}/{o.get('p@10_study', '-')} "
            f"| {dm.get('p@10_dcbench', '-')}/{dm.get('p@10_study', '-')} "
            f"| {r['load_avg_before'][0]:.2f} |"
        )
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
