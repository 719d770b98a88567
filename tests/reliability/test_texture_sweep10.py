"""Tenth sweep of ``medaudit texture ...``: each case failed before its fix (a diverged run saved as a
finished model, exit 0; a U-Net size that failed inside torch, exit 1; a report setting accepted that
could only fail after the whole study ran; an interrupted run of another config dropped without a
word) and is now exit 2 with one line naming the key or flag, or a one-line warning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import one_line, refused, train_config, write_config

# -- 1. a diverged run ------------------------------------------------------------------------------


def test_a_run_whose_weights_diverge_at_once_is_refused_and_nothing_is_left(cli, volumes, tmp_path):
    cfg = write_config(tmp_path / "t.json", train_config(volumes, weight_decay=1e300))
    run = tmp_path / "run"
    line = refused(cli, ["texture", "train", "--out", run, "--config", cfg], [tmp_path], "weight_decay")
    assert "diverged at iteration 1" in line
    assert not run.exists()


def test_a_diverged_run_writes_no_model(cli, volumes, tmp_path):
    """lr 1e12 diverges at the second step: exit 2 naming 'lr', no model.pt or history.json (it was
    saved with NaN weights, exit 0, and eval and predict then refused it); the last finite checkpoint
    is kept, as after any failure."""
    cfg = write_config(tmp_path / "t.json", train_config(volumes, lr=1e12))
    run = tmp_path / "run"
    rc, err = cli("texture", "train", "--out", run, "--config", cfg)
    assert rc == 2, err
    assert "'lr'" in one_line(err) and "diverged" in err
    assert not (run / "model.pt").exists() and not (run / "history.json").exists()


# -- 2. channels no U-Net can be built with --------------------------------------------------------


def test_channels_beyond_the_limit_in_a_config_name_the_key(cli, volumes, tmp_path):
    cfg = write_config(tmp_path / "t.json", train_config(volumes, channels=[4, 2**34]))
    line = refused(
        cli, ["texture", "train", "--out", tmp_path / "run", "--config", cfg], [tmp_path], "t.json"
    )
    assert "'channels'" in line


def test_channels_flag_beyond_the_limit_names_the_flag(cli, tconfig, tmp_path):
    args = ["texture", "train", "--out", tmp_path / "run", "--config", tconfig, "--channels", "4,17179869184"]
    assert "--channels" in refused(cli, args, [tmp_path])


# -- 3. a study report setting that fails only at the end -------------------------------------------


def test_study_bootstrap_beyond_the_limit_is_refused_before_any_work(cli, volumes, tmp_path):
    cfg = tmp_path / "s.yaml"
    cfg.write_text(
        f"data: {{source: folder, path: {volumes}}}\n"
        "train: {channels: [4, 8], num_res_units: 0, patch_size: [16, 16, 16], iterations: 1, device: cpu}\n"
        "train_filters: [none]\n"
        "seeds: [0, 1]\n"
        "report: {bootstrap: 1000000000000}\n"
        "test: {corruptions: [gaussian_noise], severities: [1]}\n"
    )
    args = ["texture", "study", cfg, "--out", tmp_path / "st", "--dry-run"]
    refused(cli, args, [tmp_path], "s.yaml", "report.bootstrap")
    assert not (tmp_path / "st").exists()


# -- 4. an interrupted run of another config --------------------------------------------------------


def _interrupted_run(cli, tconfig: Path, run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDAUDIT_FAULT", "train:checkpoint@INT")  # Ctrl-C after the first checkpoint
    assert cli("texture", "train", "-o", run, "--config", tconfig)[0] == 130
    monkeypatch.delenv("MEDAUDIT_FAULT", raising=False)
    assert (run / "checkpoint.pt").is_file() and not (run / "model.pt").exists()


def test_training_over_an_interrupted_run_of_another_config_warns(
    cli, volumes, tconfig, tmp_path, monkeypatch
):
    """A checkpoint of another config was dropped silently (the run started over); now one warning
    names the folder and the keys that differ, as for a finished run of another config."""
    run = tmp_path / "run"
    _interrupted_run(cli, tconfig, run, monkeypatch)
    cfg = write_config(tmp_path / "t.json", train_config(volumes, lr=1e-3))
    with pytest.warns(UserWarning) as warned:
        rc, err = cli("texture", "train", "--out", run, "--config", cfg)
    assert rc == 0 and err == "", err
    (message,) = [str(w.message) for w in warned]
    assert message.startswith(f"{run}: holds an interrupted run of another config (differs in: lr)"), message
    assert "replaces its checkpoint.pt" in message, message
    assert json.loads((run / "config.json").read_text())["lr"] == pytest.approx(1e-3)


def test_resuming_the_same_config_does_not_warn(cli, tconfig, tmp_path, monkeypatch, recwarn):
    run = tmp_path / "run"
    _interrupted_run(cli, tconfig, run, monkeypatch)
    recwarn.clear()
    assert cli("texture", "train", "--out", run, "--config", tconfig) == (0, "")
    assert not [w for w in recwarn.list if "another config" in str(w.message)]
