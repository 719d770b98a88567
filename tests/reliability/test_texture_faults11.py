"""Eleventh sweep (texture faults and resource limits): configs that expand without bound, files that
never end, batches too big for memory, and a study whose finished model was damaged.

Every case here ran (or would run) into memory or a loop only after the data were read; each is now
refused with one line, exit 2, before any work, or recovers on the rerun with the same results.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd

from .conftest import SRC, finished_tiny_study, one_line, refused, train_config, write_config


def _bomb(width: int, depth: int) -> str:
    """A YAML flow list of ``width ** depth`` values written in ``depth`` short lines of aliases."""
    names = [f"a{i}" for i in range(depth)]
    levels = [f"&{names[0]} [{', '.join(['x'] * width)}]"]
    levels += [f"&{names[i]} [{', '.join([f'*{names[i - 1]}'] * width)}]" for i in range(1, depth)]
    return "[" + ", ".join(levels) + "]"


def test_a_yaml_config_whose_aliases_expand_without_bound_is_refused(cli, volumes, tmp_path):
    """Nine lines of YAML aliases (a "billion laughs") stand for 10**9 values: ``data_options: {x: ...}``
    was expanded while the config was validated and hashed (10**7 values took 1 GB and 20 s; 10**9 ran
    out of memory, ignoring SIGTERM for minutes). Now refused as the file is read; 2**21 values here."""
    cfg = tmp_path / "t.yaml"
    cfg.write_text(f"data_source: folder\ndata_path: {volumes}\ndata_options: {{x: {_bomb(2, 21)}}}\n")
    args = ["texture", "train", "--config", cfg, "--out", tmp_path / "run"]
    line = refused(cli, args, [tmp_path], "t.yaml", "1,000,000 values", "alias *name")
    assert line.startswith("error: "), line


def test_a_study_config_that_never_ends_is_refused_before_reading(tmp_path):
    """``texture study PIPE`` (or ``/dev/zero``) was read without end: a pipe blocked the command for
    ever, a device filled the memory. A path that is not a regular file is refused, naming it."""
    fifo = tmp_path / "s.yaml"
    os.mkfifo(fifo)
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "medaudit.cli", "texture", "study", str(fifo), "--dry-run"]
    try:
        r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise AssertionError("texture study blocked reading a pipe") from None
    assert r.returncode == 2, r.stderr
    assert one_line(r.stderr) == f"error: {fifo}: not a study config (not a regular file)"


def test_a_config_file_beyond_the_size_limit_is_refused_naming_it(cli, tmp_path):
    """A config file is read whole; one of gigabytes filled the memory before a key was checked."""
    cfg = tmp_path / "t.json"
    cfg.write_text(json.dumps({"comment": "x" * (17 * 2**20)}))
    args = ["texture", "train", "--config", cfg, "--out", tmp_path / "run"]
    refused(cli, args, [tmp_path], "t.json", "bytes, more than 16,777,216")


def test_a_study_whose_batches_cannot_fit_in_memory_is_refused_before_any_work(cli, volumes, tmp_path):
    """``train: {batch_size: 1000000}`` passed every check: each training task stacked 10**6 patches
    (tens of GB) on its first iteration, after the data were read. Now the study is refused at once
    (``--dry-run`` included), naming the key and the voxel count."""
    cfg = tmp_path / "s.yaml"
    cfg.write_text(
        f"data: {{source: folder, path: {volumes}}}\n"
        "train: {channels: [4, 8], num_res_units: 0, patch_size: [16, 16, 16], batch_size: 1000000}\n"
        "train_filters: [none]\ntest: {corruptions: [gaussian_noise], severities: [1]}\n"
    )
    args = ["texture", "study", cfg, "--out", tmp_path / "st", "--dry-run"]
    refused(cli, args, [tmp_path], "s.yaml", "batch_size 1000000", "4,096,000,000 voxels")


def test_a_sliding_window_batch_beyond_the_limit_is_refused_before_training(cli, volumes, tmp_path):
    """``sw_batch_size: 10**9`` (windows per inference batch) was accepted; it is bounded as
    ``batch_size`` is, before the data are read."""
    cfg = write_config(tmp_path / "t.json", train_config(volumes, sw_batch_size=10**9))
    args = ["texture", "train", "--config", cfg, "--out", tmp_path / "run"]
    refused(cli, args, [tmp_path], "sw_batch_size 1000000000", "inference_roi 16x16x16")
    assert not (tmp_path / "run").exists()


def test_a_study_rebuilds_a_damaged_model_of_a_finished_training(cli, volumes, tmp_path, recwarn):
    """A finished training whose ``model.pt`` was damaged (truncated) counted as done, so its evaluation
    failed on every rerun ('not a medaudit model', exit 1) and the study never finished. Its training
    now runs again, rebuilding the model from the run's checkpoint: the same results."""
    cfg, out, before = finished_tiny_study(cli, volumes, tmp_path)
    (model,) = (out / "train").glob("*/model.pt")
    model.write_bytes(model.read_bytes()[:500])
    for part in (out / "parts").glob("*.parquet"):
        part.unlink()
    rc, err = cli("texture", "study", cfg, "--out", out)
    assert rc == 0, err
    pd.testing.assert_frame_equal(pd.read_parquet(out / "results.parquet"), before)
    assert (model.parent / "model.pt.unreadable-1").stat().st_size == 500  # kept, as texture train does
