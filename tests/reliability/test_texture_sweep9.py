"""Ninth sweep of ``medaudit texture ...``: each case failed before its fix (an internal error, a value
silently read as another, a clean model labelled as a filtered or augmented one, an option ignored, a
scan counted twice, an undefined score reported as 0) and is now exit 2 with one line naming the file,
key or flag, and nothing written."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medaudit.errors import InputError

from .conftest import refused as _refused
from .conftest import train_config, write_config


def _study(tmp_path: Path, volumes: Path, recipe: str) -> Path:
    cfg = tmp_path / "s.yaml"
    cfg.write_text(
        f"data: {{source: folder, path: {volumes}}}\n"
        "train: {channels: [4, 8], num_res_units: 0, patch_size: [16, 16, 16], iterations: 1, device: cpu}\n"
        "train_filters: [none]\n"
        f"recipes: [{recipe}]\n"
        "test: {corruptions: [gaussian_noise], severities: [1]}\n"
    )
    return cfg


def _study_refused(cli, tmp_path: Path, cfg: Path, *names: str) -> str:
    args = ["texture", "study", cfg, "--out", tmp_path / "st", "--dry-run"]
    line = _refused(cli, args, [tmp_path], "s.yaml", *names)
    assert not (tmp_path / "st").exists()
    return line


# -- 1. exclude_families of another type ----------------------------------------------------------


@pytest.mark.parametrize("value", ["5", '{"noise": 1}', '"noise"'])
def test_recipe_option_exclude_families_not_a_list(cli, tconfig, tmp_path, value):
    """``5`` was 'internal error: TypeError'; a string was split into letters (or read as one family in
    some places and as letters in others)."""
    args = ["texture", "train", "--config", tconfig, "--out", tmp_path / "run", "--recipe", "mixed"]
    args += ["--recipe-options", f'{{"exclude_families": {value}}}']
    _refused(cli, args, [tmp_path], "--recipe-options", "exclude_families", "list of family names")
    assert not (tmp_path / "run").exists()


def test_study_recipe_option_exclude_families_not_a_list(cli, volumes, tmp_path):
    cfg = _study(tmp_path, volumes, "{name: mixed, options: {exclude_families: 5}}")
    _study_refused(cli, tmp_path, cfg, "key 'recipes[0]'", "exclude_families")


# -- 2. recipes[i].options not a mapping ------------------------------------------------------------


@pytest.mark.parametrize("options", ["[1, 2]", "abc"])
def test_study_recipe_options_not_a_mapping(cli, volumes, tmp_path, options):
    """Was 'internal error: TypeError / ValueError' (dict() of a list or a string)."""
    cfg = _study(tmp_path, volumes, f"{{name: mixed, options: {options}}}")
    _study_refused(cli, tmp_path, cfg, "key 'recipes[0].options'", "expected a mapping")


# -- 3. leave-one-family-out errors name the file and the entry -------------------------------------


@pytest.mark.parametrize(
    ("recipe", "names"),
    [
        # the merge split 'noise' into letters: 'unknown famil(ies) ['e', 'i', ...]' without file or key
        (
            "{name: mixed, options: {exclude_families: noise}, leave_one_family_out: true}",
            ["key 'recipes[0]'", "exclude_families"],
        ),
        # the pool's only family left out: 'no corruption left' without file or key
        (
            "{name: mixed, options: {filters: [gaussian_noise]}, leave_one_family_out: true}",
            ["key 'recipes[0].leave_one_family_out (noise)'", "no corruption left"],
        ),
    ],
)
def test_study_leave_one_family_out_errors_name_the_entry(cli, volumes, tmp_path, recipe, names):
    _study_refused(cli, tmp_path, _study(tmp_path, volumes, recipe), *names)


# -- 4. gin without its only family -----------------------------------------------------------------


def test_gin_without_texture_is_refused(cli, tconfig, volumes, tmp_path):
    """It trained a clean model labelled 'gin[-texture]' (every sample returned unchanged)."""
    args = ["texture", "train", "--config", tconfig, "--out", tmp_path / "run", "--recipe", "gin"]
    args += ["--recipe-options", '{"exclude_families": ["texture"]}']
    _refused(cli, args, [tmp_path], "--recipe-options", "recipe 'gin'", "no corruption left")
    assert not (tmp_path / "run").exists()
    cfg = _study(tmp_path, volumes, "{name: gin, leave_one_family_out: true}")
    _study_refused(cli, tmp_path, cfg, "key 'recipes[0].leave_one_family_out (texture)'", "recipe 'gin'")


# -- 5. a filter at severity 0 ----------------------------------------------------------------------


def test_filter_severity_zero_is_refused(cli, volumes, tconfig, tmp_path):
    """``--severity 0`` trained the clean model, labelled 'gaussian_noise@0' with the noise family 'seen'."""
    args = ["texture", "train", "--config", tconfig, "--out", tmp_path / "run"]
    _refused(
        cli, [*args, "--filter", "gaussian_noise", "--severity", "0"], [tmp_path], "--severity '0'", "1..5"
    )
    cfg = write_config(
        tmp_path / "t.json",
        train_config(volumes, mode="filtered", filter_name="gaussian_noise", filter_severity=[0, 2]),
    )
    _refused(
        cli, ["texture", "train", "--config", cfg, "--out", tmp_path / "run"], [tmp_path], "t.json", "1..5"
    )
    assert not (tmp_path / "run").exists()
    from medaudit.texture.recipes import make_recipe

    with pytest.raises(InputError, match=r"levels are 1\.\.5"):
        make_recipe("filtered", {"filter": "gaussian_noise", "severity": [0, 0]})
    make_recipe("filtered", {"filter": "gaussian_noise", "severity": [1, 1]})  # still fine
    from medaudit.texture.train import TrainConfig

    assert TrainConfig(mode="clean", filter_severity=0).train_filter == "none"  # a study's clean model


# -- 6. a volume that resamples to (next to) nothing ------------------------------------------------


def test_volume_resampled_to_nothing_is_refused(cli, tconfig, volumes, tmp_path):
    """``--spacing 100`` trained on zero padding (shape (0, 0, 0)), eval crashed on an empty quantile and
    predict wrote an all-background map; the file and the spacing are now named."""
    args = ["texture", "train", "--config", tconfig, "--out", tmp_path / "run", "--spacing", "100"]
    _refused(cli, args, [tmp_path], ".nii.gz", "working spacing 100x100x100 mm", "(0, 0, 0)")
    assert not (tmp_path / "run").exists()
    from medaudit.data.mri import VolumeCase, load_case

    case = VolumeCase("s0", volumes / "images" / "s0.nii.gz", volumes / "labels" / "s0.nii.gz")
    with pytest.raises(InputError, match=r"s0\.nii\.gz.*too few voxels"):
        load_case(case, spacing=40.0)  # (1, 1, 1): one voxel left of 18 or 16
    assert load_case(case, spacing=6.0)["image"].shape[1:] == (10, 9, 8)  # coarser is fine


# -- 7. eval --data-path without --data ---------------------------------------------------------------


def test_eval_data_path_without_data_is_refused(cli, trained, volumes, tmp_path):
    """It was ignored: the run's split.json test cases were scored instead of the folder given."""
    args = ["texture", "eval", "-m", trained / "model.pt", "--out", tmp_path / "e", "--data-path", volumes]
    args += ["--corruptions", "gaussian_noise", "--severities", "1", "--no-report", "--no-texture-bias"]
    _refused(cli, args, [tmp_path, trained], "--data-path", "--data")
    assert not (tmp_path / "e").exists()


# -- 8. one scan listed twice -------------------------------------------------------------------------


def test_csv_listing_a_scan_twice_is_refused(cli, volumes, tconfig, tmp_path):
    """The copies were split between train and test (leakage) without a word."""
    rows = ["id,image,label"]
    for i in range(5):
        rows.append(f"s{i},{volumes}/images/s{i}.nii.gz,{volumes}/labels/s{i}.nii.gz")
    rows.append(f"copy2,{volumes}/images/s2.nii.gz,{volumes}/labels/s2.nii.gz")
    (tmp_path / "cases.csv").write_text("\n".join(rows) + "\n")
    args = ["texture", "train", "--config", tconfig, "--out", tmp_path / "run", "--data", "csv"]
    args += ["--data-path", tmp_path / "cases.csv"]
    _refused(cli, args, [tmp_path], "cases.csv", "line 7", "'copy2'", "'s2'", "line 4")
    assert not (tmp_path / "run").exists()


def test_folder_with_a_symlinked_duplicate_scan_is_refused(volumes, tmp_path):
    from medaudit.data.mri import read_nifti_folder

    data = tmp_path / "data"
    shutil.copytree(volumes, data)
    os.symlink(data / "images" / "s1.nii.gz", data / "images" / "t1.nii.gz")
    shutil.copy(data / "labels" / "s1.nii.gz", data / "labels" / "t1.nii.gz")
    with pytest.raises(InputError, match=r"t1.nii.gz: case 't1' is the same scan as case 's1'"):
        read_nifti_folder(data)


# -- 9. model.pt metadata of the wrong type -------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        lambda st: st.pop("train_filter"),
        lambda st: st.update(train_families=5),
        lambda st: st.update(train_severity="x"),
        lambda st: st.update(train_families=["noise", 3]),
    ],
)
def test_model_with_bad_metadata_is_not_a_medaudit_model(cli, trained, volumes, tmp_path, change):
    """Was 'internal error: KeyError / TypeError' while scoring."""
    import torch

    st = torch.load(trained / "model.pt", weights_only=True)
    change(st)
    torch.save(st, tmp_path / "m.pt")
    args = ["texture", "eval", "-m", tmp_path / "m.pt", "--out", tmp_path / "e", "--data", "folder"]
    args += ["--data-path", volumes, "--corruptions", "gaussian_noise", "--severities", "1", "--no-report"]
    _refused(cli, args, [tmp_path], "not a medaudit model, or unsafe to load", "m.pt")
    from medaudit.texture.train import load_model

    with pytest.raises(InputError, match="inconsistent contents"):
        load_model(tmp_path / "m.pt")
    load_model(trained / "model.pt")  # the model as written is fine


# -- 11. label maps without any foreground --------------------------------------------------------------


def _background_only(volumes: Path, dst: Path) -> Path:
    shutil.copytree(volumes, dst)
    for p in sorted((dst / "labels").glob("*.nii.gz")):
        lab = nib.load(p)
        nib.save(nib.Nifti1Image(np.zeros(lab.shape, np.uint8), lab.affine), p)
    return dst


def test_label_maps_without_foreground_are_refused(cli, trained, volumes, tmp_path):
    """Train reported validation Dice 0.0 (MONAI's mean of nothing) and eval wrote all-NaN scores."""
    data = _background_only(volumes, tmp_path / "data")
    cfg = write_config(tmp_path / "t.json", train_config(data))
    train = ["texture", "train", "--config", cfg, "--out", tmp_path / "run"]
    _refused(cli, train, [tmp_path], str(data), "all background", "training case")
    assert not (tmp_path / "run").exists()
    evaluate = ["texture", "eval", "-m", trained / "model.pt", "--data", "folder", "--data-path", data]
    evaluate += ["--corruptions", "gaussian_noise", "--severities", "1", "--out", tmp_path / "e"]
    _refused(cli, evaluate, [tmp_path], "labels/s0.nii.gz", "all background", "test case")
    assert not (tmp_path / "e").exists()
    assert json.loads((trained / "history.json").read_text())["val_dice"]  # the good run is untouched


# -- user files in an interrupted run folder ----------------------------------------------------------


def _interrupted(volumes: Path, out: Path):
    from medaudit.texture.train import TrainConfig, train

    config = TrainConfig.from_dict(train_config(volumes, iterations=4))
    train(config, out, stop_after=1, progress=False)  # a checkpoint, no model: as after Ctrl-C
    assert (out / "checkpoint.pt").is_file() and not (out / "model.pt").exists()
    return config, train


def test_a_user_history_json_in_an_interrupted_run_is_kept(volumes, tmp_path):
    """The rerun replaced it at the end without a word (medaudit writes history.json only with model.pt)."""
    config, train = _interrupted(volumes, tmp_path / "run")
    mine = tmp_path / "run" / "history.json"
    mine.write_text("my notes\n")
    with pytest.raises(InputError, match=r"history\.json that medaudit did not write"):
        train(config, tmp_path / "run", progress=False)
    assert mine.read_text() == "my notes\n" and not (tmp_path / "run" / "model.pt").exists()


def test_an_unreadable_model_pt_in_a_run_folder_is_kept_aside(volumes, tmp_path):
    """It was overwritten ("damaged; it is written again"): now it is renamed, never lost."""
    config, train = _interrupted(volumes, tmp_path / "run")
    (tmp_path / "run" / "model.pt").write_text("my own model\n")
    with pytest.warns(UserWarning, match=r"kept as model\.pt\.unreadable-1"):
        train(config, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "model.pt.unreadable-1").read_text() == "my own model\n"
    assert (tmp_path / "run" / "model.pt").read_bytes()[:2] == b"PK"  # a torch archive, the run's model
