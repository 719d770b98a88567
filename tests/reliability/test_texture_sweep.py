"""An adversarial sweep of ``medaudit texture ...`` and the MRI readers: each case failed before its fix
(a traceback, exit 1, a message naming the wrong value, or a run folder left behind) and is now exit 2
with one line naming the file and the key, and nothing written."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from .conftest import AFF, train_config, write_config
from .conftest import refused as _refused


def _copy(volumes: Path, dst: Path) -> Path:
    shutil.copytree(volumes, dst)
    return dst


def _train(tmp_path: Path, cfg: Path) -> list[object]:
    return ["texture", "train", "-o", tmp_path / "r", "--config", cfg]


# -- NIfTI ------------------------------------------------------------------------------------------


def test_header_declaring_a_huge_volume_is_refused_before_reading(tmp_path):
    """A few bytes of gzip whose header declares 2000^3 voxels: refused from the header, naming the
    limit (it used to try to allocate the array: a MemoryError, or gigabytes of memory taken)."""
    from medaudit.data.mri import VolumeCase, load_case
    from medaudit.errors import InputError

    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.uint8)
    hdr.set_data_shape((2000, 2000, 2000))
    hdr.set_qform(AFF)
    (tmp_path / "bomb.nii.gz").write_bytes(gzip.compress(hdr.binaryblock + b"\0" * 4))
    with pytest.raises(InputError, match=r"bomb\.nii\.gz: header declares .* over the limit"):
        load_case(VolumeCase("b", tmp_path / "bomb.nii.gz"))


def test_voxel_limit_applies_to_predict(cli, trained, volumes, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDAUDIT_MAX_VOLUME_VOXELS", "1000")
    args = ["texture", "predict", "-m", trained / "model.pt", volumes / "images" / "s0.nii.gz"]
    _refused(cli, [*args, "-o", tmp_path / "seg"], [tmp_path], "s0.nii.gz", "MEDAUDIT_MAX_VOLUME_VOXELS")


def test_float_label_beyond_int64_is_named_by_its_value(cli, volumes, tmp_path):
    """A float label map holding 1e30: the message gives that value (it printed the int64 wrap-around
    -9223372036854775808, after a RuntimeWarning from the cast)."""
    data = _copy(volumes, tmp_path / "data")
    nib.save(
        nib.Nifti1Image(np.full((20, 18, 16), 1e30, np.float32), AFF), str(data / "labels" / "s1.nii.gz")
    )
    cfg = write_config(tmp_path / "c.json", train_config(data))
    line = _refused(cli, _train(tmp_path, cfg), [tmp_path], "s1.nii.gz", "outside the declared set")
    assert "-9223372036854775808" not in line and "[1000000015047466219876688855040]" in line


@pytest.mark.parametrize(
    ("options", "what"),
    [
        ({"bogus": 1}, "data option 'bogus' is not an option of the folder reader"),
        ({"image_pattern": 5}, "data option 'image_pattern': expected str, got 5"),
        ({"require_label": "yes"}, "data option 'require_label': expected bool"),
    ],
)
def test_train_bad_reader_options(cli, volumes, tmp_path, options, what):
    """``data_options`` the reader does not take (a TypeError: 'internal error', exit 1) or of the
    wrong kind (an AttributeError deep in the reader)."""
    cfg = write_config(tmp_path / "c.json", train_config(volumes, data_options=options))
    _refused(cli, _train(tmp_path, cfg), [tmp_path], what)


# -- demo -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "what"),
    [
        (["--n-subjects", "2"], "--n-subjects 2: the demo tests on a quarter of the subjects"),
        (["--corruptions", "motion,bogus"], "--corruptions 'motion,bogus': unknown corruption 'bogus'"),
    ],
)
def test_demo_flags_checked_before_any_work(cli, tmp_path, flags, what):
    """Two phantom subjects leave no test subject: the demo built the cohort and trained both models,
    then failed at the evaluation; an unknown corruption was named without its flag."""
    args = ["texture", "demo", "-o", tmp_path / "d", "--cache-dir", tmp_path / "cache", "--iterations", "1"]
    _refused(cli, [*args, *flags], [tmp_path], what)


# -- training settings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "what"),
    [
        ("label_set", "bogus", "unknown label set 'bogus'"),
        ("data_source", "bogus", "unknown value 'bogus'"),
        ("small_policy", "bogus", "unknown value 'bogus'"),
        ("seed", 2**64, "less than 18446744073709551616"),
        ("split_seed", -1, "greater than or equal to 0"),
    ],
)
def test_train_config_names_checked_by_key(cli, volumes, tmp_path, key, value, what):
    """Unknown names were refused only when the data were read, without the file or key; a seed of
    2**64 or a negative split seed was an internal error (numpy / torch overflow)."""
    cfg = write_config(tmp_path / "c.json", train_config(volumes, **{key: value}))
    _refused(cli, _train(tmp_path, cfg), [tmp_path], "c.json", f"key '{key}'", what)


@pytest.mark.parametrize(
    ("settings", "what"),
    [
        ({"channels": [4, 8, 16, 32, 64]}, "patch_size [16, 16, 16]: with 5 channel levels"),
        ({"channels": [4, 8, 16], "patch_size": [20, 20, 18]}, "each size must be a multiple of 4"),
        ({"inference_roi": [10, 10, 10], "channels": [4, 8, 16]}, "inference_roi [10, 10, 10]"),
        ({"patch_size": [100000, 16, 16]}, "each size must be at most 512"),
    ],
)
def test_train_patch_the_unet_cannot_take(cli, volumes, tmp_path, settings, what):
    """A patch the U-Net cannot halve and rejoin failed inside the first training step (a RuntimeError
    or 'more than 1 spatial element', exit 1); a huge one padded every volume to petabytes."""
    cfg = write_config(tmp_path / "c.json", train_config(volumes, **settings))
    _refused(cli, _train(tmp_path, cfg), [tmp_path], "c.json", what)


@pytest.mark.parametrize("command", ["train", "demo"])
def test_seed_flag_out_of_range_names_the_flag(cli, tconfig, tmp_path, command):
    args = {
        "train": ["texture", "train", "-o", tmp_path / "r", "--config", tconfig],
        "demo": ["texture", "demo", "-o", tmp_path / "d", "--cache-dir", tmp_path / "c"],
    }[command]
    _refused(cli, [*args, "--seed", str(2**64)], [tmp_path], "--seed", "less than")


# -- study ------------------------------------------------------------------------------------------

_STUDY_REST = (
    "train: {iterations: 1, channels: [4, 8], patch_size: [16, 16, 16], num_res_units: 0}\n"
    "train_filters: [none]\ntest: {corruptions: [gaussian_noise], severities: [1]}\n"
)


@pytest.mark.parametrize(
    ("data", "key", "what"),
    [
        ("{source: folder, path: VOLS, options: {bogus: 1}}", "data.options", "data option 'bogus'"),
        ("{source: folder, path: VOLS, options: {image_pattern: x.nii.gz}}", "data", "'{id}'"),
        ("{source: folder, path: VOLS/nowhere}", "data", "NIfTI folder not found"),
        ("{source: csv, path: VOLS}", "data", "is a folder, not a CSV file"),
        ("{source: folder, path: VOLS, label_set: bogus}", "data.label_set", "unknown label set"),
    ],
)
def test_study_bad_data_is_exit_2_before_the_folder_is_claimed(cli, volumes, tmp_path, data, key, what):
    """Data the readers refuse failed every training task: exit 1, with the output folder and its
    study.json left behind (an unknown reader option as a TypeError; a data field named 'train')."""
    cfg = tmp_path / "s.yaml"
    cfg.write_text(f"data: {data.replace('VOLS', str(volumes))}\n{_STUDY_REST}")
    args = ["texture", "study", cfg, "--out", tmp_path / "st"]
    _refused(cli, args, [tmp_path], "s.yaml", f"key '{key}'", what)


@pytest.mark.parametrize("kind", ["binary", "folder"])
def test_study_config_that_is_not_text(cli, tmp_path, kind):
    """A binary file was 'internal error: UnicodeDecodeError' (exit 1); a folder an IsADirectoryError."""
    cfg = tmp_path / "s.yaml"
    if kind == "binary":
        cfg.write_bytes(bytes(range(128, 256)) * 4)
    else:
        cfg.mkdir()
    line = _refused(cli, ["texture", "study", cfg, "--out", tmp_path / "st"], [tmp_path], "s.yaml")
    assert "not a readable YAML file" in line


# -- eval -------------------------------------------------------------------------------------------

_EVAL_FAST = ["--corruptions", "gaussian_noise", "--severities", "1", "--no-report", "--no-texture-bias"]


def test_eval_same_model_twice_is_refused(cli, trained, tmp_path):
    """The same model.pt given twice was scored twice: every row duplicated under one label."""
    args = ["texture", "eval", "-m", trained / "model.pt", "-m", trained / ".." / trained.name / "model.pt"]
    _refused(cli, [*args, "-o", tmp_path / "e", *_EVAL_FAST], [tmp_path], "--model", "given twice")


def test_eval_runs_with_the_same_folder_name_are_told_apart(cli, trained, tmp_path):
    """``a/run/model.pt`` and ``b/run/model.pt`` (both clean): their rows were merged as 'none[run]'."""
    import pandas as pd

    for d in ("a", "b"):
        shutil.copytree(trained, tmp_path / d / "run")
    models = ["-m", tmp_path / "a" / "run" / "model.pt", "-m", tmp_path / "b" / "run" / "model.pt"]
    rc, err = cli("texture", "eval", *models, "-o", tmp_path / "e", *_EVAL_FAST)
    assert rc == 0, err
    res = pd.read_csv(tmp_path / "e" / "results.csv")
    assert res["model"].nunique() == 2 and not res.duplicated().any()


def test_study_name_with_brackets_is_printed_as_text(tmp_path, capsys):
    """A study named '[/x]' (or a path or error message with brackets) was read as rich markup: a
    MarkupError, exit 1, after the run; 'none[run]' in the eval tables printed as 'none'."""
    from medaudit.cli import main

    cfg = tmp_path / "s.yaml"
    cfg.write_text(f"name: '[/x] [bold]'\ndata: {{source: mni-phantom, n_subjects: 4}}\n{_STUDY_REST}")
    capsys.readouterr()
    assert main(["texture", "study", str(cfg), "--out", str(tmp_path / "st"), "--dry-run"]) == 0
    assert "study [/x] [bold]:" in capsys.readouterr().out
