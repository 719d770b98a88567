"""Seventh sweep of ``medaudit texture ...``: each case failed before its fix (an internal error, a run
folder left behind, a value silently read as another, a message naming neither file nor flag) and is
now exit 2 with one line naming the file, key or flag, and nothing written."""

from __future__ import annotations

import pytest

from .conftest import refused as _refused
from .conftest import train_config, write_config


@pytest.mark.parametrize(
    ("extra", "names"),
    [
        # was 'internal error: ValueError: low >= high' after the data were read
        ({"mode": "filtered", "filter_name": "gaussian_noise", "filter_severity": [4, 2]}, ["[4, 2]"]),
        # was 'unknown filter' after checkpoint.pt, split.json and config.json were written (kept)
        ({"mode": "filtered", "filter_name": "none"}, ["filter_name 'none'"]),
        # was 'unknown corruption' naming neither the file nor the key
        ({"mode": "filtered", "filter_name": "nope"}, ["filter_name 'nope'"]),
        # the filtered copy used filter_name while the model's seen families came from this option
        (
            {"recipe": "filtered", "filter_name": "gaussian_noise", "recipe_options": {"filter": "gibbs"}},
            ["filter_name / filter_severity"],
        ),
        # true was read as 1: one iteration, or the old severity table
        ({"iterations": True}, ["'iterations'"]),
        ({"severity_version": True}, ["'severity_version'"]),
        ({"channels": [4, True]}, ["'channels'"]),
    ],
)
def test_train_config_values_refused_by_key(cli, volumes, tmp_path, extra, names):
    cfg = write_config(tmp_path / "t.json", train_config(volumes, **extra))
    _refused(
        cli, ["texture", "train", "--config", cfg, "--out", tmp_path / "run"], [tmp_path], "t.json", *names
    )
    assert not (tmp_path / "run").exists()


def test_train_config_whose_train_key_is_not_a_mapping(cli, tmp_path):
    """``train:`` left empty said 'Input should be a valid dictionary or instance of TrainConfig'."""
    cfg = tmp_path / "t.yaml"
    cfg.write_text("train:\n")
    line = _refused(cli, ["texture", "train", "--config", cfg, "--out", tmp_path / "run"], [tmp_path])
    assert line == f"error: {cfg}: key 'train': expected a mapping of training keys, got None", line


def test_train_unknown_filter_flag_is_named(cli, tconfig, tmp_path):
    """``--filter nope`` said 'unknown corruption' without the flag (once the data were read)."""
    args = ["texture", "train", "--config", tconfig, "--out", tmp_path / "run", "--filter", "nope"]
    line = _refused(cli, args, [tmp_path], "--filter 'nope'", "gaussian_noise")
    assert not (tmp_path / "run").exists(), line


@pytest.mark.parametrize(
    ("setting", "key"),
    [
        ("train: {iterations: true}", "train.iterations"),  # was one iteration per model
        ("test: {corruptions: [gaussian_noise], seed: yes}", "test.seed"),  # was seed 1
        ("data: {source: mni-phantom, n_subjects: true}", "data.n_subjects"),  # was one subject
    ],
)
def test_study_config_true_for_a_number_is_refused(cli, tmp_path, setting, key):
    blocks = {
        "data": "data: {source: mni-phantom}",
        "train": "train: {iterations: 2}",
        "test": "test: {corruptions: [gaussian_noise], severities: [1]}",
    }
    blocks[setting.split(":")[0]] = setting
    cfg = tmp_path / "s.yaml"
    cfg.write_text("\n".join([*blocks.values(), "train_filters: [{name: none}]"]) + "\n")
    args = ["texture", "study", cfg, "--out", tmp_path / "st", "--dry-run"]
    _refused(cli, args, [tmp_path], "s.yaml", f"key '{key}'", "not true/false")
