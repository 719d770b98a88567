"""Eleventh sweep (faults and resume, audit side): a killed dataset audit's scratch folder in the cache,
SIGHUP (a closed terminal), stale staging under a clock set back, and ``medaudit demo`` files written
outside its output claim."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medaudit.outdir import MARKER

from .conftest import AUDIT_FAST, SRC, make_table, one_line, run_sub


def _dataset_args(tmp: Path, out: Path, cache: Path) -> list[object]:
    from test_dataset_audit import FAST, _mimic_n, _predictions

    root, reports = _mimic_n(tmp, n_studies=12)
    pred = _predictions(root, tmp / "pred.csv")
    return [
        "audit",
        "--dataset",
        f"mimic-cxr:{root}",
        "--dataset-reports",
        reports,
        "--predictions",
        pred,
        "--target",
        "all",
        "--uncertain",
        "ignore",
        "--out",
        out,
        "--cache-dir",
        cache,
        "--no-report",
        *FAST,
    ]


def _scratch(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if "shared-embeddings" in p.name)


def test_a_killed_dataset_audit_leaves_no_scratch_embeddings_in_the_cache(tmp_path):
    """SIGKILL after the shared embeddings are memory-mapped left ``cache/.shared-embeddings-*`` (as large
    as every modality's embeddings of the dataset) for ever; the next run on the cache removes it."""
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = _dataset_args(tmp_path, out, cache)
    r = run_sub(args, {"MEDAUDIT_FAULT": "audit:embed"})
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert _scratch(cache)  # what the kill left
    r = run_sub(args)
    assert r.returncode == 0, r.stderr
    assert _scratch(cache) == []
    assert json.loads((out / MARKER).read_text())["state"] == "complete"


def test_a_live_runs_scratch_embeddings_are_never_removed(tmp_path):
    """Two dataset audits sharing a cache: the clean-up removes only scratch folders no run holds."""
    from medaudit.audit.multitarget import _scratch as scratch

    dead = tmp_path / ".shared-embeddings-dead"
    dead.mkdir()
    (dead / "image.npy").write_bytes(b"left by a killed run")
    with scratch(tmp_path) as live:
        (live / "image.npy").write_bytes(b"in use")
        with scratch(tmp_path) as other:
            assert live.is_dir() and (live / "image.npy").exists() and other.is_dir()
            assert not dead.exists()
        assert not other.exists() and live.is_dir()
    assert _scratch(tmp_path) == []


def _audit(table: Path, out: Path, cache: Path) -> list[object]:
    return ["audit", "--table", table, "--out", out, *AUDIT_FAST, "--cache-dir", cache, "--no-report"]


def _leftovers(folder: Path, name: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(f".{name}."))


def test_sighup_unwinds_like_sigterm_and_nohup_is_respected(tmp_path):
    """A closed terminal (SIGHUP) killed the run where it stood: a staging folder and the lock were left,
    exit 129. It is now an interruption (exit 130, one line, nothing left); under ``nohup`` (SIGHUP
    ignored) the run goes on to the end."""
    table = make_table(tmp_path / "data", n=40, seed=2)
    out, cache = tmp_path / "out", tmp_path / "cache"
    r = run_sub(_audit(table, out, cache), {"MEDAUDIT_FAULT": "audit:write@HUP"})
    assert r.returncode == 130, r.stderr
    assert one_line(r.stderr) == f"interrupted: nothing was written to {out}"
    assert not out.exists() and _leftovers(tmp_path, "out") == []
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "MEDAUDIT_FAULT": "audit:write@HUP"}
    r = subprocess.run(
        [sys.executable, "-m", "medaudit.cli", *map(str, _audit(table, out, cache))],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),  # as nohup starts it
    )
    assert r.returncode == 0, r.stderr
    assert (out / "slices.json").exists() and _leftovers(tmp_path, "out") == []


def test_stale_staging_is_removed_even_when_the_clock_was_set_back(cli, audit_args, tmp_path):
    """A killed run's staging folder whose time lies after the next run's start (the clock was set back
    in between, e.g. by NTP) was kept for ever; the lock, not the time, says that no run is using it."""
    table = make_table(tmp_path / "data", n=40, seed=3)
    stale = tmp_path / ".out.staging-killed"
    stale.mkdir()
    (stale / MARKER).write_text(json.dumps({"kind": "audit", "state": "staging"}))
    (stale / "slices.json").write_text("{}")
    future = time.time() + 3600
    os.utime(stale, (future, future))
    rc, err = cli(*audit_args(table, tmp_path / "out"))
    assert rc == 0, err
    assert _leftovers(tmp_path, "out") == []


def test_a_live_run_of_a_similar_name_keeps_its_staging(cli, audit_args, tmp_path):
    """An audit on ``--out w`` removed the staging folder of a live audit on ``--out w.old-1``
    (``.w.old-1.staging-XXXX`` began like ``w``'s own ``.w.old-*``), which then published an output
    without ``slices.json`` and exit 0. Only the names ``tempfile`` makes for ``w`` are ``w``'s."""
    import fcntl

    table = make_table(tmp_path / "data", n=40, seed=4)
    live = tmp_path / ".w.old-1.staging-abcd1234"  # as a run on --out w.old-1 holds it, lock and all
    live.mkdir()
    (live / MARKER).write_text(json.dumps({"kind": "audit", "state": "staging"}))
    (live / "slices.json").write_text("{}")
    with open(tmp_path / ".w.old-1.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        rc, err = cli(*audit_args(table, tmp_path / "w"))
        assert rc == 0, err
        assert (live / "slices.json").exists()


def test_a_run_killed_between_the_two_renames_of_a_publish_gets_its_earlier_output_back(tmp_path):
    """The earlier output sat only in '.OUT.old-*/x' and the next run deleted it."""
    from medaudit.io import atomic_write_text
    from medaudit.outdir import claim_output

    out = tmp_path / "out"
    with claim_output(out, "k") as c:
        atomic_write_text(c.stage / "slices.json", "earlier")
    old = tmp_path / ".out.old-abcd1234"
    old.mkdir()
    os.replace(out, old / "x")  # what a SIGKILL between the renames leaves
    with pytest.raises(RuntimeError), claim_output(out, "k"):
        raise RuntimeError("this run fails")
    assert (out / "slices.json").read_text() == "earlier"
    assert not old.exists()
