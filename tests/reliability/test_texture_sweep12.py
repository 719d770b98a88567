"""Twelfth sweep of ``medaudit texture ...`` (a neuroimaging user's NIfTI files and runs): each case failed
before its fix (a study with one bad scan failed every training, exit 1, its folder left behind; a demo
without test corruptions trained both models for a verdict on nothing; ``--corruptions none,motion``
named the wrong flag; a clean-only evaluation printed a matplotlib warning; a verdict called 0.50 vs 0.50
"LESS"; a scan whose name lies about its gzip compression, or a folder of ``.nii`` scans, could not be
read, with no hint; a full disk named a hidden staging file that no longer exists)."""

from __future__ import annotations

import errno
import json
import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from medaudit.errors import InputError

from .conftest import refused, train_config, write_config

# -- 1. a study whose data hold one bad scan --------------------------------------------------------


def _study(tmp_path: Path, data: Path) -> Path:
    cfg = tmp_path / "s.yaml"
    cfg.write_text(
        f"data: {{source: folder, path: {data}, label_set: tissue4}}\n"
        "train: {iterations: 1, channels: [4, 8], patch_size: [16, 16, 16], num_res_units: 0, device: cpu}\n"
        "train_filters: [none]\ntest: {corruptions: [gaussian_noise], severities: [1]}\nreport: {bootstrap: 5}\n"
    )
    return cfg


@pytest.mark.parametrize("fault", ["nan", "4d", "label-affine"])
def test_a_study_with_a_bad_scan_is_refused_before_its_folder_is_made(cli, volumes, tmp_path, fault):
    """A NaN voxel, a real time series or a label map on another grid in one scan of the data: one line
    naming the config and the file, exit 2, no study folder (every training task failed, exit 1, and
    the folder with its study.json was left)."""
    data = tmp_path / "data"
    shutil.copytree(volumes, data)
    img = nib.load(data / "images" / "s2.nii.gz")
    x = np.asarray(img.dataobj).copy()
    if fault == "nan":
        x[0, 0, 0] = np.nan
        nib.save(nib.Nifti1Image(x, img.affine), data / "images" / "s2.nii.gz")
    elif fault == "4d":
        nib.save(nib.Nifti1Image(np.stack([x, x], -1), img.affine), data / "images" / "s2.nii.gz")
    else:
        lab = nib.load(data / "labels" / "s2.nii.gz")
        nib.save(
            nib.Nifti1Image(np.asarray(lab.dataobj), np.diag([1.0, 1, 1, 1])), data / "labels" / "s2.nii.gz"
        )
    out = tmp_path / "st"
    refused(
        cli, ["texture", "study", _study(tmp_path, data), "--out", out], [tmp_path], "s.yaml", "s2.nii.gz"
    )
    assert not out.exists()


# -- 2. texture demo flags --------------------------------------------------------------------------


@pytest.fixture
def no_demo_training(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """Replace the demo's trainings and evaluation by a recorder (the flags are what is tested)."""
    from medaudit.studies.texture_robustness import demo

    seen: dict[str, object] = {}

    def record(out, runs, corruptions, seed, device, t0):
        seen["runs"] = runs

    monkeypatch.setattr(demo, "_demo_run", record)
    return seen


@pytest.mark.parametrize("corruptions", ["", "none", ",,"])
def test_a_demo_without_test_corruptions_is_refused(cli, tmp_path, no_demo_training, corruptions):
    args = [
        "texture",
        "demo",
        "--out",
        tmp_path / "d",
        "--cache-dir",
        tmp_path / "c",
        "--corruptions",
        corruptions,
    ]
    refused(cli, args, [tmp_path], "--corruptions")
    assert "runs" not in no_demo_training


def test_a_demo_with_none_among_its_corruptions_holds_out_only_real_families(cli, tmp_path, no_demo_training):
    """'none' (the clean scans) is no family: it was held out as family 'clean', refused as an unknown
    family under --recipe bigaug."""
    rc, err = cli(
        "texture",
        "demo",
        "--out",
        tmp_path / "d",
        "--cache-dir",
        tmp_path / "c",
        "--corruptions",
        "none,motion",
    )
    assert rc == 0, err
    robust = no_demo_training["runs"]["bigaug"]  # type: ignore[index]
    assert robust.recipe_options["exclude_families"] == ["motion"]


# -- 3. what a clean-only evaluation and the demo's verdicts print ----------------------------------


def test_a_clean_only_severity_figure_warns_nothing():
    from medaudit.texture.report import severity_figure

    rows = [
        {"model": m, "corruption": "none", "family": "clean", "severity": 0, "case": c, "dice": 0.5}
        for m in ("none", "bigaug")
        for c in ("a", "b")
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib's 'No artists with labels found' reached stderr
        severity_figure(pd.DataFrame(rows))


def test_the_demo_verdicts_follow_the_printed_numbers():
    from medaudit.studies.texture_robustness.demo import _bias_verdict

    bias = pd.DataFrame(
        [{"model": "none", "texture_bias": 0.5004}, {"model": "bigaug", "texture_bias": 0.4996}]
    )
    line = _bias_verdict(bias)
    assert "0.50 vs baseline 0.50" in line and "about AS texture-biased as" in line, line
    bias.loc[1, "texture_bias"] = 0.41
    assert "is LESS texture-biased than" in _bias_verdict(bias)


# -- 4. a scan whose name lies about its compression; a folder of .nii scans -------------------------


@pytest.mark.parametrize(
    ("name", "gz", "hint"), [("v.nii", True, "rename it .nii.gz"), ("v.nii.gz", False, "rename it .nii")]
)
def test_a_scan_whose_name_lies_about_gzip_says_so(cli, trained, volumes, tmp_path, name, gz, hint):
    src = volumes / "images" / "s0.nii.gz"
    raw = src.read_bytes() if gz else nib.load(src).to_bytes()
    (tmp_path / name).write_bytes(raw)
    args = ["texture", "predict", "-m", trained / "model.pt", tmp_path / name, "--out", tmp_path / "p"]
    line = refused(cli, args, [tmp_path], name)
    assert line.endswith(f"{hint})"), line


def test_a_text_file_named_nii_gz_gets_no_rename_hint(cli, trained, tmp_path):
    (tmp_path / "t.nii.gz").write_text("hello")
    args = ["texture", "predict", "-m", trained / "model.pt", tmp_path / "t.nii.gz", "--out", tmp_path / "p"]
    assert "rename" not in refused(cli, args, [tmp_path], "t.nii.gz")


def test_a_folder_of_uncompressed_nii_scans_is_read(volumes, tmp_path):
    """`--data folder` takes no patterns: a folder of images/*.nii + labels/*.nii could not be read."""
    from medaudit.data.mri import get_cases, read_nifti_folder

    for sub in ("images", "labels"):
        (tmp_path / sub).mkdir()
        for p in (volumes / sub).glob("*.nii.gz"):
            nib.save(nib.load(p), tmp_path / sub / p.name.replace(".nii.gz", ".nii"))
    cases = get_cases("folder", tmp_path)
    assert [c.case_id for c in cases] == ["s0", "s1", "s2", "s3", "s4"]
    assert all(c.image.suffix == ".nii" and c.label is not None and c.label.suffix == ".nii" for c in cases)
    with pytest.raises(InputError, match="no image matches"):  # patterns given: as written
        read_nifti_folder(tmp_path, "images/{id}.nii.gz", "labels/{id}.nii")


# -- 5. a full disk under the staging folder --------------------------------------------------------


def test_a_full_disk_in_the_staging_folder_names_the_published_file(tmp_path):
    from medaudit.outdir import claim_output

    out = tmp_path / "ev"
    with pytest.raises(OSError) as err, claim_output(out, "texture-eval") as c:
        (c.stage / "report.html").write_text("partial")
        raise OSError(errno.ENOSPC, "No space left on device", str(c.stage / "report.html"))
    assert err.value.filename == str(out / "report.html")  # was .ev.staging-XXXX/report.html, removed
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_while_predicting_is_one_line_naming_the_label_map(
    cli, trained, volumes, tmp_path, monkeypatch
):
    from medaudit.data import mri

    def full(data, affine, path, header=None):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(mri, "save_nifti", full)
    out = tmp_path / "p"
    args = ["texture", "predict", "-m", trained / "model.pt", volumes / "images" / "s0.nii.gz", "--out", out]
    refused(cli, args, [tmp_path], f"{out / 's0_seg.nii.gz'}: No space left on device")


# -- 6. a dHCP release whose participants.tsv has a ragged row --------------------------------------


def test_a_ragged_dhcp_tsv_row_is_named_by_its_line(volumes, tmp_path):
    """A row with more fields than the header went into every case's meta as {None: [...]} ('null' in
    split.json), unnoticed; the CSV reader already refused such a row."""
    from medaudit.data.mri import read_dhcp

    anat = tmp_path / "derivatives" / "dhcp_anat_pipeline" / "sub-CC1" / "ses-1" / "anat"
    anat.mkdir(parents=True)
    shutil.copy(volumes / "images" / "s0.nii.gz", anat / "sub-CC1_ses-1_desc-restore_T2w.nii.gz")
    shutil.copy(volumes / "labels" / "s0.nii.gz", anat / "sub-CC1_ses-1_desc-drawem9_dseg.nii.gz")
    tsv = tmp_path / "participants.tsv"
    tsv.write_text("participant_id\tsex\nCC1\tmale\n")
    assert read_dhcp(tmp_path)[0].meta["sex"] == "male"
    tsv.write_text("participant_id\tsex\nCC1\tmale\t39\n")
    with pytest.raises(
        InputError, match=r"participants.tsv: line 2 has 3 tab-separated fields, the header has 2"
    ):
        read_dhcp(tmp_path)


# -- 7. reader options the data source would drop, or that are not the reader's ---------------------


def test_mni_phantom_reader_options_are_refused_not_dropped(cli, tmp_path):
    """`data_options: {n_subjects: 3}` for the simulated cohort was dropped without a word (load_data
    builds it from n_subjects / phantom_spacing / cache_dir): a run of 8 subjects, not 3."""
    cfg = tmp_path / "t.json"
    cfg.write_text(json.dumps({"data_source": "mni-phantom", "data_options": {"n_subjects": 3}}))
    line = refused(cli, ["texture", "train", "--out", tmp_path / "r", "--config", cfg], [tmp_path], "t.json")
    assert "key 'data_options'" in line and "n_subjects" in line


def test_a_study_names_mni_phantom_reader_options_as_data_options(cli, tmp_path):
    cfg = tmp_path / "s.yaml"
    cfg.write_text(
        "data: {source: mni-phantom, options: {max_displacement: 1.0}}\n"
        "train: {iterations: 1, channels: [4, 8], patch_size: [16, 16, 16], num_res_units: 0, device: cpu}\n"
        "train_filters: [none]\ntest: {corruptions: [gaussian_noise], severities: [1]}\n"
    )
    args = ["texture", "study", cfg, "--out", tmp_path / "st", "--dry-run"]
    refused(cli, args, [tmp_path], "s.yaml", "key 'data.options'", "max_displacement")


def test_an_unknown_reader_option_in_a_train_config_names_the_file_and_key(cli, volumes, tmp_path):
    cfg = write_config(tmp_path / "t.json", train_config(volumes, data_options={"imag_pattern": "{id}.nii"}))
    line = refused(cli, ["texture", "train", "--out", tmp_path / "r", "--config", cfg], [tmp_path], "t.json")
    assert "key 'data_options'" in line and "'imag_pattern'" in line
