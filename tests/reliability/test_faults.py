"""Faults on the real command line (subprocesses): SIGKILL in the embedding phase, the write phase and
training, then a rerun that must equal an uninterrupted run; SIGINT / SIGTERM give exit 130 and one line."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pandas as pd
import pytest
import torch

from medaudit.outdir import MARKER

from .conftest import AUDIT_FAST, make_table, one_line, run_sub, snapshot


def _audit(table: Path, out: Path, cache: Path, **env: str):
    return run_sub(
        ["audit", "--table", table, "--out", out, *AUDIT_FAST, "--cache-dir", cache, "--no-report"], env
    )


def _result(out: Path) -> tuple[dict, pd.DataFrame]:
    s = json.loads((out / "slices.json").read_text())
    s.pop("created")
    s["config"].pop("cache_dir", None)
    return s, pd.read_parquet(out / "membership.parquet")


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory):
    """An uninterrupted audit (its own cache) and the table it ran on."""
    root = tmp_path_factory.mktemp("faults")
    table = make_table(root / "data", n=48, seed=5)
    r = _audit(table, root / "ref", root / "ref-cache")
    assert r.returncode == 0, r.stderr
    return table, _result(root / "ref")


def _same(out: Path, ref: tuple[dict, pd.DataFrame]) -> None:
    got = _result(out)
    assert got[0] == ref[0]
    pd.testing.assert_frame_equal(got[1], ref[1])


def _leftovers(folder: Path, name: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(f".{name}."))


def test_audit_kills_interrupts_and_reruns(reference, tmp_path):
    """One output folder through every fault, in order (each step would be a test of its own; run as one
    sequence to keep the number of interpreter start-ups small)."""
    table, ref = reference
    out, cache = tmp_path / "out", tmp_path / "cache"
    # 1. SIGKILL in the embedding phase: no output; the first modality's embeddings are cached
    r = _audit(table, out, cache, MEDAUDIT_FAULT="audit:embed")
    assert r.returncode == -signal.SIGKILL
    assert not out.exists() and any(cache.rglob("*.npy"))
    # 2. the rerun equals an uninterrupted run and removes the killed run's staging folder
    r = _audit(table, out, cache)
    assert r.returncode == 0, r.stderr
    _same(out, ref)
    assert _leftovers(tmp_path, "out") == []
    # 3. SIGINT and SIGTERM in the write phase: exit 130, one line, the earlier output untouched
    old = snapshot(tmp_path)
    for sig in ("INT", "TERM"):
        r = _audit(table, out, cache, MEDAUDIT_FAULT=f"audit:write@{sig}")
        assert r.returncode == 130, r.stderr
        line = one_line(r.stderr)
        assert line.startswith("interrupted:") and str(out) in line and "left as it was" in line
        assert snapshot(tmp_path) == old
    # 4. SIGKILL in the write phase: the earlier output is untouched, a staging folder is left ...
    old_out = snapshot(out)
    r = _audit(table, out, cache, MEDAUDIT_FAULT="audit:write")
    assert r.returncode == -signal.SIGKILL
    assert snapshot(out) == old_out
    assert any("staging" in n for n in _leftovers(tmp_path, "out"))
    # 5. ... which the next run removes; its result equals the uninterrupted run
    r = _audit(table, out, cache)
    assert r.returncode == 0, r.stderr
    assert _leftovers(tmp_path, "out") == []
    _same(out, ref)


def test_training_interrupted_killed_and_resumed_equals_uninterrupted(trained, tconfig, tmp_path):
    run = tmp_path / "run"
    args = ["texture", "train", "-o", run, "--config", tconfig]
    # 1. SIGINT right after the first checkpoint: exit 130, one line, the checkpoint is kept
    r = run_sub(args, {"MEDAUDIT_FAULT": "train:checkpoint@INT"})
    assert r.returncode == 130, r.stderr
    line = one_line(r.stderr)
    assert "kept" in line and "resume" in line and str(run) in line
    assert torch.load(run / "checkpoint.pt", weights_only=True)["iteration"] == 1
    # 2. resumed, then SIGKILL right after the next checkpoint
    r = run_sub(args, {"MEDAUDIT_FAULT": "train:checkpoint"})
    assert r.returncode == -signal.SIGKILL
    assert torch.load(run / "checkpoint.pt", weights_only=True)["iteration"] == 2
    assert not (run / "model.pt").exists()
    # 3. resumed to the end: the same weights as the uninterrupted run
    r = run_sub(args)
    assert r.returncode == 0, r.stderr
    a = torch.load(trained / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(run / "model.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((run / MARKER).read_text())["kind"] == "texture-train"
    assert _leftovers(tmp_path, "run") == []


@pytest.mark.parametrize("point", ["audit:slice", "audit:report"])
def test_audit_ctrl_c_while_slicing_or_writing_the_report(reference, tmp_path, point):
    """SIGINT in the slicing phase and right after report.html is staged: 130, one line, nothing left."""
    table, _ = reference
    out = tmp_path / "out"
    r = run_sub(
        ["audit", "--table", table, "--out", out, *AUDIT_FAST, "--cache-dir", tmp_path / "cache"],
        {"MEDAUDIT_FAULT": f"{point}@INT"},
    )
    assert r.returncode == 130, r.stderr
    assert one_line(r.stderr).startswith("interrupted: nothing was written to")
    assert not out.exists() and _leftovers(tmp_path, "out") == []
