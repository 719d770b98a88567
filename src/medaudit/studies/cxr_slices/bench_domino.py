"""The Domino 0.1.5 peer: finding its separate Python environment and running it on a run's arrays."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from medaudit.studies.cxr_slices import scenarios as sc
from medaudit.studies.cxr_slices.bench_config import BenchConfig, RunTask
from medaudit.studies.cxr_slices.bench_scoring import _score_rows

#: peer python -> its ``run_domino.py`` (filled by :func:`domino_python` and by the worker state)
_PEER_SCRIPTS: dict[str, Path] = {}


def _read_peer(state: Path) -> str:
    """The peer python recorded in the worker state (and where its ``run_domino.py`` lies)."""
    if not (state / "peer_python.txt").exists():
        return ""
    python, _, script = (state / "peer_python.txt").read_text().strip().partition("\n")
    if python and script:
        _PEER_SCRIPTS[python] = Path(script)
    return python


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
