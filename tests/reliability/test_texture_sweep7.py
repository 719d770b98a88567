"""Seventh sweep of ``medaudit texture ...``: each case failed before its fix (an internal error, a run
folder left behind, a value silently read as another, a message naming neither file nor flag) and is
now exit 2 with one line naming the file, key or flag, and nothing written."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medaudit.errors import InputError

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


def _copy(volumes: Path, dst: Path) -> Path:
    shutil.copytree(volumes, dst)
    return dst


def test_constant_scan_is_refused_by_train_and_eval(cli, volumes, trained, tmp_path):
    """An all-zero scan (a failed export) was trained on, and scored by eval with a meaningless Dice
    (predict alone refused it); both now refuse it naming the file, before anything is written."""
    data = _copy(volumes, tmp_path / "data")
    img = nib.load(data / "images" / "s1.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros(img.shape, np.float32), img.affine), data / "images" / "s1.nii.gz")
    cfg = write_config(tmp_path / "t.json", train_config(data))
    train = ["texture", "train", "--config", cfg, "--out", tmp_path / "run"]
    _refused(cli, train, [tmp_path], "s1.nii.gz", "image is constant (every voxel 0)")
    evaluate = ["texture", "eval", "-m", trained / "model.pt", "--data", "folder", "--data-path", data]
    evaluate += ["--corruptions", "gaussian_noise", "--severities", "1", "--out", tmp_path / "e"]
    _refused(cli, evaluate, [tmp_path], "s1.nii.gz", "image is constant")
    assert not (tmp_path / "run").exists() and not (tmp_path / "e").exists()


def test_folder_case_ids_with_glob_characters_find_their_labels(cli, volumes, tmp_path):
    """A case named 'scan[1]' was 'no label matching labels/scan[1].nii.gz' (its id was read as a glob
    pattern, [1] a character class); its label map is now found by name."""
    from medaudit.data.mri import read_nifti_folder

    data = _copy(volumes, tmp_path / "data")
    for sub in ("images", "labels"):
        (data / sub / "s1.nii.gz").rename(data / sub / "scan[1] é.nii.gz")
        (data / sub / "s2.nii.gz").rename(data / sub / "a*b?.nii.gz")
    cases = {c.case_id: c for c in read_nifti_folder(data)}
    assert cases["scan[1] é"].label == data / "labels" / "scan[1] é.nii.gz"
    assert cases["a*b?"].label == data / "labels" / "a*b?.nii.gz"
    (data / "labels" / "scan[1] é.nii.gz").rename(data / "labels" / "scan1 é.nii.gz")  # not a match
    with pytest.raises(InputError, match=r"no label matching 'labels/scan\[1\] é.nii.gz'"):
        read_nifti_folder(data)


@pytest.mark.parametrize("header", ["id,image,label", "image,label,id"])
def test_csv_pairs_with_a_byte_order_mark(volumes, tmp_path, header):
    """A CSV saved by Excel starts with a UTF-8 byte-order mark: its first column was '\\ufeffid' (the
    ids silently replaced by file stems, the id kept as metadata) or '\\ufeffimage' ('missing column
    'image'', a name that printed like the header's)."""
    from medaudit.data.mri import read_csv_pairs

    cells = {"id": "A", "image": str(volumes / "images" / "s0.nii.gz")}
    cells["label"] = str(volumes / "labels" / "s0.nii.gz")
    row = ",".join(cells[c] for c in header.split(","))
    (tmp_path / "p.csv").write_bytes(b"\xef\xbb\xbf" + f"{header}\n{row}\n".encode())
    (case,) = read_csv_pairs(tmp_path / "p.csv")
    assert (case.case_id, case.meta) == ("A", {})


def test_study_name_with_a_path_separator_needs_out(cli, tmp_path, monkeypatch):
    """Without --out a study named '../x' was written to ./study-../x (a folder 'study-..' created on the
    way) and 'a/b' to ./study-a/b; the name is refused naming the key, and --out still works."""
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "s.yaml"
    cfg.write_text(
        "name: ../x\ndata: {source: mni-phantom}\ntrain: {iterations: 2}\n"
        "train_filters: [{name: none}]\ntest: {corruptions: [gaussian_noise], severities: [1]}\n"
    )
    line = _refused(cli, ["texture", "study", cfg, "--dry-run"], [tmp_path], "key 'name'", "--out")
    assert "'../x'" in line
    rc, err = cli("texture", "study", cfg, "--dry-run", "--out", tmp_path / "st")
    assert rc == 0, err


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--recipe", "nope"], "error: --recipe nope: unknown training recipe 'nope'"),
        (["--recipe-options", '{"p": 2}'], "error: --recipe bigaug --recipe-options: recipe 'bigaug': p"),
    ],
)
def test_demo_recipe_errors_name_the_flags(cli, tmp_path, flags, named):
    """The demo's recipe errors said 'TrainConfig: ...', a name the user never typed."""
    args = ["texture", "demo", "--out", tmp_path / "d", "--cache-dir", tmp_path / "c", *flags]
    line = _refused(cli, args, [tmp_path])
    assert line.startswith(named), line
