"""Sixth sweep of ``medaudit texture ...``: each case failed before its fix (a volume read several
times, a flag not named, a traceback or exit 1, a message without the valid choices) and is now read
once, or exit 2 with one line naming the flag, file or key, and nothing written."""

from __future__ import annotations

import collections
import shutil
from pathlib import Path

import pandas as pd
import pytest

from .conftest import finished_tiny_study
from .conftest import refused as _refused


def test_eval_reads_each_case_once(cli, trained, volumes, tmp_path, monkeypatch):
    """``texture eval`` read each volume three or four times (the check of every case, the scoring, the
    texture-bias probes and the report's slices); each is now read once, with the same results."""
    from medaudit.data import mri

    counts: collections.Counter[str] = collections.Counter()
    load = mri.load_nifti

    def counting(path):
        counts[Path(path).name if "images" in str(path) else f"label:{Path(path).name}"] += 1
        return load(path)

    monkeypatch.setattr(mri, "load_nifti", counting)
    args = ["texture", "eval", "-m", trained / "model.pt", "--data", "folder", "--data-path", volumes]
    args += ["--corruptions", "gaussian_noise", "--severities", "1", "--out", tmp_path / "e"]
    rc, err = cli(*args)
    assert rc == 0, err
    assert len(counts) == 10 and set(counts.values()) == {1}, counts
    rows = pd.read_csv(tmp_path / "e" / "results.csv")
    assert sorted(rows["case"].unique()) == [f"s{i}" for i in range(5)]
    assert (tmp_path / "e" / "texture_bias.csv").is_file() and (tmp_path / "e" / "report.html").is_file()


@pytest.mark.parametrize("command", ["eval", "train"])
def test_unknown_severity_version_names_the_flag_and_the_valid_versions(
    cli, trained, tconfig, tmp_path, command
):
    """``--severity-version 7`` said 'severity_version must be one of [1, 2]' (eval, after the models
    were loaded) or 'training config: ...' (train): neither named the flag given."""
    if command == "eval":
        args = ["texture", "eval", "-m", trained / "model.pt", "--no-texture-bias"]
    else:
        args = ["texture", "train", "--config", tconfig]
    line = _refused(cli, [*args, "--out", tmp_path / "o", "--severity-version", "7"], [tmp_path])
    assert line == "error: --severity-version 7: unknown severity table; valid versions: 1, 2", line
    assert not (tmp_path / "o").exists()


def _damaged_model(trained: Path, dst: Path, damage: str) -> Path:
    import torch

    st = torch.load(trained / "model.pt", weights_only=True)
    if damage == "no_class_names":
        del st["class_names"]
    elif damage == "short_class_names":
        st["class_names"] = ["background"]
    elif damage == "unknown_label_set":
        st["label_set"] = "nope"
    else:  # a diverged run's weights
        next(iter(st["state_dict"].values())).fill_(float("nan"))
    dst.mkdir()
    torch.save(st, dst / "model.pt")
    shutil.copy(trained / "split.json", dst / "split.json")
    return dst / "model.pt"


@pytest.mark.parametrize(
    ("damage", "what"),
    [
        ("no_class_names", "inconsistent contents"),  # was 'internal error: KeyError', exit 1
        ("short_class_names", "inconsistent contents"),  # was 'internal error: IndexError', exit 1
        ("unknown_label_set", "inconsistent contents"),  # was 'unknown label set', without the file
        ("nan_weights", "weights hold NaN or infinity"),  # was exit 0 with meaningless scores
    ],
)
@pytest.mark.parametrize("command", ["eval", "predict"])
def test_model_whose_labels_or_weights_are_unusable_is_named(
    cli, trained, volumes, tmp_path, damage, what, command
):
    model = _damaged_model(trained, tmp_path / "run", damage)
    if command == "eval":
        args = ["texture", "eval", "-m", model, "--corruptions", "gaussian_noise", "--severities", "1"]
    else:
        args = ["texture", "predict", "-m", model, volumes / "images" / "s0.nii.gz"]
    _refused(cli, [*args, "--out", tmp_path / "o"], [tmp_path], str(model), what)
    assert not (tmp_path / "o").exists()


def _with_spacing(trained: Path, dst: Path, spacing: float) -> Path:
    """A copy of ``trained``'s model as if trained at the working ``spacing`` (inputs are resampled)."""
    import json

    import torch

    st = torch.load(trained / "model.pt", weights_only=True)
    st["config"] = json.dumps({**json.loads(st["config"]), "spacing": spacing})
    dst.mkdir()
    torch.save(st, dst / "model.pt")
    return dst / "model.pt"


def test_volume_too_big_once_resampled_is_refused_naming_it(cli, trained, volumes, tmp_path):
    """A header with voxels of 3 km (a unit error) passed the voxel limit as read, then resampling to
    the model's 4 mm asked ITK for 10^21 voxels: 'internal error: RuntimeError' (exit 1)."""
    import nibabel as nib
    import numpy as np

    model = _with_spacing(trained, tmp_path / "run", 4.0)
    src = nib.load(str(volumes / "images" / "s0.nii.gz"))
    aff = src.affine.copy()
    aff[:3, :3] *= 1e6
    scan = tmp_path / "scans" / "km.nii.gz"
    scan.parent.mkdir()
    nib.save(nib.Nifti1Image(np.asarray(src.dataobj), aff), str(scan))
    args = ["texture", "predict", "-m", model, scan, "--out", tmp_path / "o"]
    line = _refused(cli, args, [tmp_path], str(scan), "working spacing 4x4x4 mm", "over the limit")
    assert "MEDAUDIT_MAX_VOLUME_VOXELS" in line
    assert not (tmp_path / "o").exists()


def test_predict_keeps_a_nifti2_input_as_nifti2_without_a_stray_line(trained, volumes, tmp_path):
    """A NIfTI-2 scan's label map was written as NIfTI-1 from the NIfTI-2 header, and nibabel logged
    'sizeof_hdr should be 348; set sizeof_hdr to 348' on stderr of a successful run."""
    import nibabel as nib
    import numpy as np

    from .conftest import run_sub

    src = nib.load(str(volumes / "images" / "s0.nii.gz"))
    scan = tmp_path / "scans" / "n2.nii.gz"
    scan.parent.mkdir()
    nib.save(nib.Nifti2Image(np.asarray(src.dataobj), src.affine), str(scan))
    r = run_sub(["texture", "predict", "-m", trained / "model.pt", scan, "--out", tmp_path / "o"])
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr
    seg = nib.load(str(tmp_path / "o" / "n2_seg.nii.gz"))
    assert isinstance(seg, nib.Nifti2Image) and seg.shape == src.shape
    assert np.allclose(seg.affine, src.affine)


@pytest.mark.parametrize(
    ("content", "what"),
    [
        (b"{not json", "not valid JSON"),  # these four were 'internal error: ...', exit 1
        (b"\xff\xfe{}", "not UTF-8 text"),
        (b'{"test": "abc"}', "split 'test': expected a list of cases"),
        (
            b'{"test": [{"image": "x.nii.gz"}]}',
            "split 'test', case 0: expected an object with text 'case_id'",
        ),
        (b'{"test": [], "test": []}', "duplicate key 'test'"),
    ],
)
def test_eval_damaged_split_json_is_one_line_naming_it(cli, trained, tmp_path, content, what):
    """``texture eval -m RUN/model.pt`` reads the test split from RUN/split.json; a damaged one was
    a JSONDecodeError, UnicodeDecodeError, TypeError or KeyError (exit 1)."""
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(trained / "model.pt", run / "model.pt")
    (run / "split.json").write_bytes(content)
    args = ["texture", "eval", "-m", run / "model.pt", "--out", tmp_path / "o"]
    _refused(cli, args, [tmp_path], str(run / "split.json"), what)
    assert not (tmp_path / "o").exists()


def test_eval_models_trained_at_different_spacings_are_refused(cli, trained, tmp_path):
    """The test scans are loaded at the first model's working spacing: a second model trained at 4 mm
    was silently scored on native-spacing scans (exit 0, misleading Dice)."""
    other = _with_spacing(trained, tmp_path / "run4", 4.0)
    args = ["texture", "eval", "-m", trained / "model.pt", "-m", other, "--out", tmp_path / "o"]
    _refused(cli, args, [tmp_path], str(other), "working spacing 4 mm differs", "separately")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("recipe", "options", "what"),
    [
        ("bigaug", '{"k": 2.5}', "k must be an integer"),  # was trained with k = 2
        ("bigaug", '{"k": true}', "k must be an integer"),  # was trained with k = 1
        ("mixed", '{"severity": [1.5, 3]}', "severity must be a level"),  # was levels 1..3
        ("mixed", '{"families": []}', "option 'families' must be a non-empty list"),  # was the default pool
        ("mixed", '{"filters": []}', "option 'filters' must be a non-empty list"),  # was the default pool
        ("gin", '{"alpha": [2, 3]}', "option 'alpha' must lie in [0, 1]"),  # was a mixing weight of 2..3
        ("mixed", '{"severity": [5, 1]}', "severity must be a level"),  # was named 'training config:'
    ],
)
def test_recipe_options_out_of_their_domain_name_the_flag(cli, tconfig, tmp_path, recipe, options, what):
    args = ["texture", "train", "--config", tconfig, "--out", tmp_path / "o", "--recipe", recipe]
    line = _refused(cli, [*args, "--recipe-options", options], [tmp_path], what)
    assert line.startswith(f"error: --recipe-options: recipe '{recipe}'"), line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("size", ["0", "7", "-5", "1024"])
def test_train_patch_size_flag_out_of_range_names_the_flag(cli, tconfig, tmp_path, size):
    """``--patch-size 7`` said 'training config: patch_size must be three sizes >= 8, got [7, 7, 7]'."""
    args = ["texture", "train", "--config", tconfig, "--out", tmp_path / "o", "--patch-size", size]
    line = _refused(cli, args, [tmp_path], f"--patch-size {size}", "8..512")
    assert "training config" not in line


def test_unknown_shipped_study_name_lists_the_shipped_configs(cli, tmp_path, monkeypatch):
    """``texture study study_smal`` said only 'study config not found'."""
    monkeypatch.chdir(tmp_path)
    line = _refused(
        cli, ["texture", "study", "study_smal", "--out", tmp_path / "o"], [tmp_path], "study_smal"
    )
    assert "not found; shipped configs: " in line and "study_small" in line and "study_full" in line


@pytest.mark.parametrize("damage", ["part", "marker"])
def test_study_resumes_past_a_damaged_result_part_or_train_marker(cli, volumes, tmp_path, damage):
    """A study folder whose result part is damaged (a truncated parquet) was 'internal error:
    ArrowInvalid' (exit 1) on every rerun; a train marker holding a JSON list was 'internal error:
    TypeError'. Now the damaged part is removed (a warning says so) and its evaluation, or the
    training, runs again: exit 0 with the same results."""
    cfg, out, before = finished_tiny_study(cli, volumes, tmp_path)
    if damage == "part":
        (part,) = (out / "parts").glob("*.parquet")
        part.write_bytes(part.read_bytes()[:100])
    else:
        (marker,) = (out / "train").glob("*/done.json")
        marker.write_text("[1]")
    rc, err = cli("texture", "study", cfg, "--out", out)
    assert rc == 0, err
    if damage == "part":
        assert "damaged result part removed" in err and str(part) in err
    pd.testing.assert_frame_equal(pd.read_parquet(out / "results.parquet"), before)


def test_train_rerun_rebuilds_a_damaged_model_from_its_checkpoint(cli, trained, tconfig, tmp_path):
    """A finished run folder whose model.pt was truncated could not be rerun: every ``texture train``
    on it said 'not a medaudit model, or unsafe to load: RUN/model.pt' (exit 2), although the run's
    final checkpoint was intact. It is now written again from the checkpoint, with the same weights."""
    import torch

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    (run / "model.pt").write_bytes((trained / "model.pt").read_bytes()[:500])
    with pytest.warns(UserWarning, match="model.pt: damaged; it is written again from the run"):
        rc, err = cli("texture", "train", "--config", tconfig, "--out", run)
    assert rc == 0, err
    a = torch.load(trained / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(run / "model.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_case_volumes_over_the_memory_budget_are_read_again_with_the_same_results(trained, volumes):
    """The fallback of :class:`CaseVolumes`: volumes beyond ``keep_bytes`` are not kept but read again
    when used; the scores do not change."""
    from medaudit.data import mri
    from medaudit.texture.evaluate import CaseVolumes, evaluate

    cases = mri.get_cases("folder", volumes)[:2]
    args = (["none", "gaussian_noise"], [1], 0, "cpu")
    kept = evaluate([trained / "model.pt"], CaseVolumes(cases), *args, progress=False)
    dropped = CaseVolumes(cases, keep_bytes=0)
    again = evaluate([trained / "model.pt"], dropped, *args, progress=False)
    assert dropped._kept == [None, None]
    pd.testing.assert_frame_equal(kept, again)


def test_train_too_few_cases_for_the_fractions_names_the_data(cli, volumes, tmp_path):
    """'only 5 case(s): not enough for the requested val/test fractions' named neither the data nor
    the fractions."""
    from .conftest import train_config, write_config

    cfg = write_config(tmp_path / "t.json", train_config(volumes, val_fraction=0.6, test_fraction=0.4))
    args = ["texture", "train", "--config", cfg, "--out", tmp_path / "o"]
    _refused(cli, args, [tmp_path], str(volumes), "only 5 case(s)", "val_fraction 0.6, test_fraction 0.4")
    assert not (tmp_path / "o").exists()
