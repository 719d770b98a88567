"""``medaudit texture train | eval | predict``: bad inputs and unsafe outputs fail with exit 2, one line,
and nothing changed; the outputs of earlier runs of the same kind are reused or replaced."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from medaudit.outdir import MARKER, claim_output

from .conftest import AFF, train_config, write_config
from .conftest import refused as _refused

UNSAFE = "not a medaudit model, or unsafe to load"


def _copy_volumes(volumes: Path, dst: Path) -> Path:
    shutil.copytree(volumes, dst)
    return dst


def _save(path: Path, data: np.ndarray, affine: np.ndarray = AFF) -> Path:
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


class _Boom:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


@pytest.fixture
def bad_models(tmp_path: Path) -> dict[str, Path]:
    """Model files that are not ours: random bytes, a pickle bomb, a plain dict, a folder, nothing."""
    d = tmp_path / "models"
    d.mkdir()
    (d / "random_bytes.pt").write_bytes(os.urandom(2000))
    with open(d / "bomb.pt", "wb") as fh:
        pickle.dump({"state_dict": _Boom()}, fh)
    torch.save({"state_dict": _Boom()}, d / "bomb_torch.pt")
    torch.save({"weights": torch.zeros(3)}, d / "plain.pt")
    torch.save({"state_dict": {"w": torch.zeros(3)}, "config": "{}", "n_classes": 4}, d / "lookalike.pt")
    (d / "folder.pt").mkdir()
    (d / "empty.pt").write_bytes(b"")
    return {p.name: p for p in d.iterdir()} | {"nope.pt": d / "nope.pt"}


# -- train ------------------------------------------------------------------------------------------


def test_train_out_is_a_file(cli, tconfig, tmp_path):
    f = tmp_path / "run.txt"
    f.write_text("x")
    _refused(cli, ["texture", "train", "--out", f, "--config", tconfig], [tmp_path], "run.txt", "is a file")


def test_train_out_under_a_file(cli, tconfig, tmp_path):
    f = tmp_path / "run.txt"
    f.write_text("x")
    _refused(cli, ["texture", "train", "-o", f / "r", "--config", tconfig], [tmp_path], "run.txt")


def test_train_out_foreign_folder(cli, tconfig, tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "thesis.tex").write_text("x")
    _refused(cli, ["texture", "train", "-o", tmp_path / "r", "--config", tconfig], [tmp_path], "--force")
    (tmp_path / "r" / "model.pt").write_text("mine")  # a run folder is written in place: even --force
    args = ["texture", "train", "-o", tmp_path / "r", "--config", tconfig, "--force"]
    _refused(cli, args, [tmp_path], "--force does not apply")
    assert (tmp_path / "r" / "model.pt").read_text() == "mine"
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["model.pt", "thesis.tex"]


def test_train_out_is_the_data_folder_even_with_force(cli, volumes, tmp_path):
    data = _copy_volumes(volumes, tmp_path / "data")
    cfg = write_config(tmp_path / "c.json", train_config(data))
    args = ["texture", "train", "-o", data, "--config", cfg, "--force"]
    _refused(cli, args, [tmp_path], "--out", str(data))


def test_train_missing_data_path_leaves_no_run_folder(cli, tmp_path):
    cfg = write_config(tmp_path / "c.json", train_config(tmp_path / "nowhere"))
    _refused(cli, ["texture", "train", "-o", tmp_path / "r", "--config", cfg], [tmp_path], "nowhere")


def test_train_nan_image_leaves_nothing(cli, volumes, tmp_path):
    data = _copy_volumes(volumes, tmp_path / "data")
    img = nib.load(str(data / "images" / "s2.nii.gz"))
    arr = np.asarray(img.dataobj).copy()
    arr[3, 3, 3] = np.nan
    _save(data / "images" / "s2.nii.gz", arr)
    cfg = write_config(tmp_path / "c.json", train_config(data, val_fraction=0.0, test_fraction=0.0))
    _refused(cli, ["texture", "train", "-o", tmp_path / "r", "--config", cfg], [tmp_path], "s2.nii.gz")


def test_train_singular_affine(cli, volumes, tmp_path):
    data = _copy_volumes(volumes, tmp_path / "data")
    arr = np.asarray(nib.load(str(data / "images" / "s1.nii.gz")).dataobj)
    sing = AFF.copy()
    sing[:3, 2] = sing[:3, 0]  # two voxel axes along the same direction
    _save(data / "images" / "s1.nii.gz", arr, sing)
    cfg = write_config(tmp_path / "c.json", train_config(data, val_fraction=0.0, test_fraction=0.0))
    _refused(
        cli, ["texture", "train", "-o", tmp_path / "r", "--config", cfg], [tmp_path], "s1.nii.gz", "singular"
    )


def test_train_fractional_labels(cli, volumes, tmp_path):
    data = _copy_volumes(volumes, tmp_path / "data")
    lab = np.asarray(nib.load(str(data / "labels" / "s0.nii.gz")).dataobj).astype(np.float32) + 0.5
    _save(data / "labels" / "s0.nii.gz", lab)
    cfg = write_config(tmp_path / "c.json", train_config(data, val_fraction=0.0, test_fraction=0.0))
    _refused(cli, ["texture", "train", "-o", tmp_path / "r", "--config", cfg], [tmp_path], "s0.nii.gz")


@pytest.mark.parametrize(
    ("flags", "name"),
    [
        (["--filter", "no_such_filter"], "no_such_filter"),
        (["--mode", "filtered", "--filter", "gaussian_blur", "--severity", "9"], "severity"),
        (["--mode", "bogus"], "bogus"),
        (["--severity", "x-y"], "--severity"),
    ],
    ids=["unknown-filter", "severity-9", "unknown-mode", "severity-garbage"],
)
def test_train_bad_flags(cli, tconfig, tmp_path, flags, name):
    _refused(cli, ["texture", "train", "-o", tmp_path / "r", "--config", tconfig, *flags], [tmp_path], name)


@pytest.mark.parametrize(
    ("flags", "what"),
    [
        (["--lr", "nan"], "--lr: Input should be a finite number"),
        (["--lr", "inf"], "--lr: Input should be a finite number"),
        (["--lr", "-1"], "--lr: Input should be greater than 0"),
        (["--lr", "0"], "--lr: Input should be greater than 0"),
        (["--spacing", "nan"], "--spacing: Input should be a finite number"),
        (["--iterations", "0"], "--iterations"),
        (["--batch-size", "0"], "--batch-size"),
        (["--recipe", "mixed", "--recipe-options", '{"p": NaN}'], "--recipe-options: NaN"),
        (["--recipe", "synthseg", "--recipe-options", '{"noise": [0, 1e999]}'], "option 'noise'"),
    ],
    ids=["lr-nan", "lr-inf", "lr-negative", "lr-zero", "spacing-nan", "iterations-0", "batch-0",
         "recipe-nan", "recipe-inf"],
)  # fmt: skip
def test_train_non_finite_or_out_of_range_numbers(cli, tconfig, tmp_path, flags, what):
    _refused(cli, ["texture", "train", "-o", tmp_path / "r", "--config", tconfig, *flags], [tmp_path], what)


@pytest.mark.parametrize(("key", "value"), [("lr", "NaN"), ("weight_decay", "Infinity"), ("dropout", "1.5")])
def test_train_config_file_numbers_checked(cli, volumes, tmp_path, key, value):
    text = json.dumps(train_config(volumes)).replace('"seed": 3', f'"seed": 3, "{key}": {value}')
    cfg = tmp_path / "c.json"
    cfg.write_text(text)
    _refused(
        cli, ["texture", "train", "-o", tmp_path / "r", "--config", cfg], [tmp_path], "c.json", f"'{key}'"
    )


def test_study_config_non_finite_train_value(cli, tmp_path):
    cfg = tmp_path / "s.yaml"
    cfg.write_text(
        "data: {source: mni-phantom, n_subjects: 4}\ntrain: {lr: .nan, iterations: 2}\n"
        "train_filters: [none]\ntest: {corruptions: [gaussian_noise], severities: [1]}\n"
    )
    args = ["texture", "study", cfg, "--out", tmp_path / "st"]
    _refused(cli, args, [tmp_path], "s.yaml", "train.lr", "finite")
    cfg.write_text(cfg.read_text().replace("lr: .nan", "lr: 0.01").replace("n_subjects: 4", "spacing: .inf"))
    _refused(cli, args, [tmp_path], "s.yaml", "data.spacing", "finite")


def _csv_data(volumes: Path, dst: Path) -> tuple[Path, str]:
    """A copy of ``volumes`` with a ``pairs.csv`` of relative paths, and the case id of the test split."""
    from medaudit.data.mri import read_csv_pairs
    from medaudit.texture.train import TrainConfig, split_cases

    data = _copy_volumes(volumes, dst)
    rows = ["id,image,label"] + [
        f"{p.name[:-7]},images/{p.name},labels/{p.name}" for p in sorted(data.glob("images/*"))
    ]
    (data / "pairs.csv").write_text("\n".join(rows) + "\n")
    cfg = TrainConfig.from_dict(train_config(data))
    split = split_cases(
        read_csv_pairs(data / "pairs.csv"), cfg.val_fraction, cfg.test_fraction, cfg.split_seed
    )
    assert len(split["test"]) == 1
    return data, split["test"][0].case_id


@pytest.mark.parametrize("fault", ["label-shape", "image-nan"])
def test_train_bad_case_of_the_test_split_leaves_nothing(cli, volumes, tmp_path, fault):
    data, test_id = _csv_data(volumes, tmp_path / "data")
    kind = "labels" if fault == "label-shape" else "images"
    arr = np.asarray(nib.load(str(data / kind / f"{test_id}.nii.gz")).dataobj).astype(np.float32)
    if fault == "label-shape":
        arr = arr[:-2]
    else:
        arr[2, 2, 2] = np.nan
    _save(data / kind / f"{test_id}.nii.gz", arr)
    cfg = write_config(tmp_path / "c.json", train_config(data / "pairs.csv", data_source="csv"))
    args = ["texture", "train", "-o", tmp_path / "r", "--config", cfg]
    _refused(cli, args, [tmp_path], f"{kind}/{test_id}.nii.gz", "shape" if fault == "label-shape" else "NaN")


def test_train_bad_config_files(cli, tmp_path):
    _refused(
        cli,
        ["texture", "train", "-o", tmp_path / "r", "--config", tmp_path / "no.yaml"],
        [tmp_path],
        "no.yaml",
    )
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"iterationz": 3}))
    _refused(cli, ["texture", "train", "-o", tmp_path / "r", "--config", bad], [tmp_path], "iterationz")


def test_train_unwritable_out(cli, tconfig, tmp_path):
    _refused(
        cli,
        ["texture", "train", "-o", "/proc/medaudit-run", "--config", tconfig],
        [tmp_path],
        "--out",
        "/proc",
    )


def test_train_output_of_another_kind(cli, tconfig, tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / MARKER).write_text(json.dumps({"kind": "texture-eval"}))
    _refused(cli, ["texture", "train", "-o", tmp_path / "r", "--config", tconfig], [tmp_path], "texture-eval")


def test_train_concurrent_run(cli, tconfig, tmp_path):
    with claim_output(tmp_path / "r", "texture-train", in_place=True):
        line = _refused(
            cli, ["texture", "train", "-o", tmp_path / "r", "--config", tconfig], [tmp_path / "r"], "--out"
        )
    assert "another medaudit run" in line


def test_train_resumes_in_its_own_run_folder(cli, trained, tconfig):
    before = (trained / "model.pt").stat().st_mtime_ns
    rc, err = cli("texture", "train", "-o", trained, "--config", tconfig)
    assert rc == 0, err
    assert (trained / "model.pt").stat().st_mtime_ns == before  # a finished run is reused as is
    assert json.loads((trained / MARKER).read_text())["kind"] == "texture-train"
    assert not (trained.parent / f".{trained.name}.lock").exists()


# -- eval -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "what"),
    [
        ("nope.pt", "model file not found"),
        ("random_bytes.pt", UNSAFE),
        ("bomb.pt", UNSAFE),
        ("bomb_torch.pt", UNSAFE),
        ("plain.pt", UNSAFE),
        ("empty.pt", UNSAFE),
        ("folder.pt", "is not a file"),
    ],
)
def test_eval_bad_model_names_the_model(cli, bad_models, tmp_path, model, what):
    line = _refused(
        cli, ["texture", "eval", "-m", bad_models[model], "--out", tmp_path / "e"], [tmp_path], model, what
    )
    assert "weights_only" not in line and "split.json" not in line and len(line) < 300


def test_eval_lookalike_model(cli, bad_models, volumes, tmp_path):
    args = ["texture", "eval", "-m", bad_models["lookalike.pt"], "--data", "folder", "--data-path", volumes]
    _refused(cli, [*args, "--out", tmp_path / "e"], [tmp_path], "lookalike.pt", UNSAFE)


def test_eval_out_is_the_run_folder_even_with_force(cli, trained, tmp_path):
    args = ["texture", "eval", "-m", trained / "model.pt", "--out", trained, "--force"]
    _refused(cli, args, [trained.parent], "--out", "model.pt")


def test_eval_out_is_a_file_or_under_one(cli, trained, tmp_path):
    f = tmp_path / "f.txt"
    f.write_text("x")
    _refused(cli, ["texture", "eval", "-m", trained / "model.pt", "--out", f], [tmp_path, trained], "f.txt")
    _refused(
        cli, ["texture", "eval", "-m", trained / "model.pt", "--out", f / "e"], [tmp_path, trained], "f.txt"
    )


def test_eval_out_foreign_folder(cli, trained, tmp_path):
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "keep.txt").write_text("x")
    _refused(
        cli,
        ["texture", "eval", "-m", trained / "model.pt", "--out", tmp_path / "e"],
        [tmp_path, trained],
        "--force",
    )


@pytest.mark.parametrize(
    ("flags", "name"),
    [
        (["--corruptions", "no_such_corruption"], "no_such_corruption"),
        (["--severities", "a-b"], "--severities"),
        (["--split", "nosplit"], "split.json has the splits"),
        (["--data", "folder", "--data-path", "/nonexistent/medaudit"], "/nonexistent/medaudit"),
    ],
    ids=["unknown-corruption", "bad-severities", "empty-split", "missing-data"],
)
def test_eval_bad_flags(cli, trained, tmp_path, flags, name):
    args = ["texture", "eval", "-m", trained / "model.pt", "--out", tmp_path / "e", *flags]
    _refused(cli, args, [tmp_path, trained], name)


@pytest.mark.parametrize(
    ("value", "what"),
    [
        ("5-1", "range must go up (e.g. 1-5)"),
        ("", "empty"),
        ("3-", "'3-' is not an integer"),
        ("a", "'a' is not an integer"),
        ("0", "0 is outside 1..5"),
        ("-1", "'-1' is not an integer"),
        ("1,,2", "an empty item"),
        ("1,1", "1 is listed twice"),
        ("1-3,2", "2 is listed twice"),
        ("2-6", "6 is outside 1..5"),
    ],
)
def test_eval_malformed_severities_refused_at_parse_time(cli, bad_models, tmp_path, value, what):
    # the model is not even read: the flag is checked first
    args = ["texture", "eval", "-m", bad_models["nope.pt"], "--out", tmp_path / "e", "--severities", value]
    _refused(cli, args, [tmp_path], f"--severities '{value}'", what)


def test_train_malformed_severity_and_channels(cli, tconfig, tmp_path):
    base = ["texture", "train", "-o", tmp_path / "r", "--config", tconfig]
    _refused(cli, [*base, "--severity", "4-2"], [tmp_path], "--severity '4-2'", "range must go up")
    _refused(cli, [*base, "--severity", "1,3"], [tmp_path], "--severity '1,3'", "not a list")
    _refused(cli, [*base, "--channels", "4,,8"], [tmp_path], "--channels '4,,8'", "empty item")
    _refused(cli, [*base, "--channels", "0,8"], [tmp_path], "--channels '0,8'", "0 is below 1")


def test_train_relative_csv_then_eval_from_another_folder(cli, volumes, tmp_path, monkeypatch):
    data, _ = _csv_data(volumes, tmp_path / "data")
    monkeypatch.chdir(data)
    args = ["--data", "csv", "--data-path", "pairs.csv", "--iterations", "1", "--patch-size", "16"]
    rc, err = cli("texture", "train", "-o", tmp_path / "r", *args, "--channels", "4,8", "--device", "cpu")
    assert rc == 0, err
    split = json.loads((tmp_path / "r" / "split.json").read_text())
    paths = [c[k] for cases in split.values() for c in cases for k in ("image", "label")]
    assert paths and all(Path(p).is_absolute() and Path(p).is_file() for p in paths)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    rc, err = cli(
        "texture", "eval", "-m", tmp_path / "r" / "model.pt", "-o", "e", "--corruptions", "gaussian_noise",
        "--severities", "1", "--no-report", "--no-texture-bias",
    )  # fmt: skip
    assert rc == 0, err


def _old_run(trained: Path, run: Path, prefix: str) -> Path:
    """A copy of ``trained`` whose split.json holds relative paths ``prefix/images/...`` (as written by
    runs from before split.json held absolute paths)."""
    run.mkdir()
    shutil.copy(trained / "model.pt", run / "model.pt")
    split = json.loads((trained / "split.json").read_text())
    for cases in split.values():
        for c in cases:
            for k in ("image", "label"):
                c[k] = f"{prefix}/{Path(c[k]).parent.name}/{Path(c[k]).name}"
    (run / "split.json").write_text(json.dumps(split))
    return run


def test_eval_old_relative_split_paths(cli, trained, volumes, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    missing = _old_run(trained, tmp_path / "old", "gone")  # relative to a folder that is not here
    args = ["--corruptions", "gaussian_noise", "--severities", "1", "--no-report", "--no-texture-bias"]
    line = _refused(
        cli, ["texture", "eval", "-m", missing / "model.pt", "-o", "e", *args], [tmp_path], "split.json"
    )
    assert "file not found" in line and "gone/images/" in line
    run = _old_run(trained, tmp_path / "old2", "data")  # found against the run folder
    shutil.copytree(volumes, run / "data")
    rc, err = cli("texture", "eval", "-m", run / "model.pt", "-o", "e", *args)
    assert rc == 0, err


def test_eval_writes_then_replaces_its_own_output(cli, trained, tmp_path):
    args = ["texture", "eval", "-m", trained / "model.pt", "--out", tmp_path / "e"]
    args += ["--corruptions", "gaussian_noise", "--severities", "1", "--no-report"]
    assert cli(*args)[0] == 0
    assert cli(*args)[0] == 0
    listing = sorted(p.name for p in (tmp_path / "e").iterdir())
    assert listing == [MARKER, "results.csv", "summary.csv", "texture_bias.csv"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e"]


# -- predict ----------------------------------------------------------------------------------------


@pytest.fixture
def scans(volumes: Path, tmp_path: Path) -> Path:
    d = tmp_path / "scans"
    d.mkdir()
    shutil.copy(volumes / "images" / "s0.nii.gz", d / "good.nii.gz")
    shutil.copy(volumes / "images" / "s1.nii.gz", d / "good2.nii.gz")
    arr = np.asarray(nib.load(str(d / "good.nii.gz")).dataobj).copy()
    bad = arr.copy()
    bad[1, 1, 1] = np.nan
    _save(d / "nan.nii.gz", bad)
    sing = AFF.copy()
    sing[:3, 2] = sing[:3, 0]
    _save(d / "singular.nii.gz", arr, sing)
    nanaff = AFF.copy()
    nanaff[0, 3] = np.nan
    _save(d / "nanaffine.nii.gz", arr, nanaff)
    _save(d / "fourd.nii.gz", np.stack([arr] * 3, axis=-1))
    (d / "text.nii.gz").write_text("not a volume")
    _save(d / "complex.nii.gz", arr.astype(np.complex64))
    _save(d / "blank.nii.gz", np.zeros_like(arr))
    (d / "sub").mkdir()
    shutil.copy(d / "good.nii.gz", d / "sub" / "good.nii.gz")
    return d


@pytest.mark.parametrize(
    ("bad", "name"),
    [
        ("nan.nii.gz", "non-finite"),
        ("singular.nii.gz", "singular"),
        ("nanaffine.nii.gz", "affine"),
        ("fourd.nii.gz", "3D"),
        ("text.nii.gz", "NIfTI"),
        ("complex.nii.gz", "real-valued"),
        ("blank.nii.gz", "constant"),
        ("missing.nii.gz", "not found"),
        ("sub/good.nii.gz", "same file name"),
    ],
)
def test_predict_good_then_bad_writes_nothing(cli, trained, scans, tmp_path, bad, name):
    args = ["texture", "predict", "-m", trained / "model.pt", scans / "good.nii.gz", scans / bad]
    _refused(cli, [*args, "--out", tmp_path / "seg"], [tmp_path], Path(bad).name, name)


def test_predict_out_is_a_file(cli, trained, scans, tmp_path):
    f = tmp_path / "seg.txt"
    f.write_text("x")
    for flag in ("--out-dir", "--out"):
        args = ["texture", "predict", "-m", trained / "model.pt", scans / "good.nii.gz", flag, f]
        _refused(cli, args, [tmp_path], flag, "seg.txt")


def test_predict_out_holds_the_inputs_even_with_force(cli, trained, scans, tmp_path):
    args = ["texture", "predict", "-m", trained / "model.pt", scans / "good.nii.gz", "-o", scans, "--force"]
    _refused(cli, args, [tmp_path], "--out", "good.nii.gz")


def test_predict_bad_model(cli, bad_models, scans, tmp_path):
    args = ["texture", "predict", "-m", bad_models["bomb.pt"], scans / "good.nii.gz", "-o", tmp_path / "seg"]
    _refused(cli, args, [tmp_path], "bomb.pt", UNSAFE)


def test_predict_needs_out(cli, trained, scans, tmp_path):
    _refused(
        cli, ["texture", "predict", "-m", trained / "model.pt", scans / "good.nii.gz"], [tmp_path], "--out"
    )


def test_predict_foreign_folder_refused_then_forced(cli, trained, scans, tmp_path):
    seg = tmp_path / "seg"
    seg.mkdir()
    (seg / "mine.nii.gz").write_text("x")
    args = ["texture", "predict", "-m", trained / "model.pt", scans / "good.nii.gz", "-o", seg]
    _refused(cli, args, [tmp_path], "--force")
    rc, err = cli(*args, "--force")
    assert rc == 0, err
    assert sorted(p.name for p in seg.iterdir()) == [MARKER, "good_seg.nii.gz", "mine.nii.gz"]
    assert (seg / "mine.nii.gz").read_text() == "x"  # --force writes beside a user's file, never over it


def test_predict_batch_and_deprecated_alias(cli, trained, scans, tmp_path):
    seg = tmp_path / "seg"
    rc, err = cli(
        "texture",
        "predict",
        "-m",
        trained / "model.pt",
        scans / "good.nii.gz",
        scans / "good2.nii.gz",
        "--out-dir",
        seg,
    )
    assert rc == 0 and "deprecated" in err
    assert sorted(p.name for p in seg.iterdir()) == [MARKER, "good2_seg.nii.gz", "good_seg.nii.gz"]
    out = nib.load(str(seg / "good_seg.nii.gz"))
    assert np.allclose(out.affine, AFF)
    rc, err = cli("texture", "predict", "-m", trained / "model.pt", scans / "good2.nii.gz", "-o", seg)
    assert rc == 0, err
    assert sorted(p.name for p in seg.iterdir()) == [MARKER, "good2_seg.nii.gz"]  # replaced as a batch


# -- --device ---------------------------------------------------------------------------------------

NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


def _device_args(command: str, tmp_path: Path) -> list[object]:
    """``command`` with inputs that do not exist: a --device error must come before any is read."""
    nope = tmp_path / "nope.pt"
    return {
        "train": ["train", "-o", tmp_path / "r", "--data", "folder", "--data-path", tmp_path / "nodata"],
        "eval": ["eval", "-m", nope, "-o", tmp_path / "e"],
        "predict": ["predict", "-m", nope, "-o", tmp_path / "seg", tmp_path / "none.nii.gz"],
        "demo": ["demo", "-o", tmp_path / "d", "--cache-dir", tmp_path / "cache"],
    }[command]


@pytest.mark.parametrize("command", ["train", "eval", "predict", "demo"])
@pytest.mark.parametrize(
    ("device", "what"),
    [
        ("bogus", "not a device"),
        ("cuda", "no CUDA GPU"),
        ("cuda:7", "no CUDA GPU"),
    ],
)
def test_bad_device_refused_before_anything_is_read(cli, tmp_path, command, device, what):
    if device.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    args = ["texture", *_device_args(command, tmp_path), "--device", device]
    line = _refused(cli, args, [tmp_path], f"--device '{device}'", what)
    assert "nope.pt" not in line and "nodata" not in line


@NO_GPU
def test_train_config_device_checked(cli, volumes, tmp_path):
    cfg = write_config(tmp_path / "c.json", train_config(volumes, device="cuda"))
    args = ["texture", "train", "-o", tmp_path / "r", "--config", cfg]
    _refused(cli, args, [tmp_path], "c.json", "'device'", "no CUDA GPU")


@NO_GPU
def test_model_trained_on_cuda_predicts_on_cpu(cli, trained, scans, tmp_path):
    st = torch.load(trained / "model.pt", weights_only=True)
    st["config"] = json.dumps({**json.loads(st["config"]), "device": "cuda"})
    (tmp_path / "gpu").mkdir()
    torch.save(st, tmp_path / "gpu" / "model.pt")
    rc, err = cli(
        "texture", "predict", "-m", tmp_path / "gpu" / "model.pt", scans / "good.nii.gz", "-o", tmp_path / "s"
    )
    assert rc == 0, err


def test_symlink_loops_as_inputs_are_named_as_such(cli, tmp_path):
    """A model, a data folder, a pairs CSV or a config that is a symlink loop: one line saying so."""
    loops = {}
    for name in ("model.pt", "data", "pairs.csv", "train.json"):
        loops[name] = tmp_path / name
        loops[name].symlink_to(name)
    out = tmp_path / "o"
    for args, path in [
        (["texture", "eval", "-m", loops["model.pt"], "--out", out], loops["model.pt"]),
        (["texture", "train", "--out", out, "--data", "folder", "--data-path", loops["data"]], loops["data"]),
        (
            ["texture", "train", "--out", out, "--data", "csv", "--data-path", loops["pairs.csv"]],
            loops["pairs.csv"],
        ),
        (["texture", "train", "--out", out, "--config", loops["train.json"]], loops["train.json"]),
    ]:
        line = _refused(cli, args, [tmp_path], str(path), "symlink loop")
        assert "not found" not in line


@pytest.mark.parametrize(
    ("bad", "what"),
    [
        ("shape", "does not match image shape"),
        ("values", "outside the declared set"),
        ("nan", "NaN or infinite"),
        ("corrupt", "unreadable NIfTI"),
        ("no_label", "no label matching"),
    ],
)
def test_eval_bad_third_case_fails_before_any_case_is_evaluated(
    cli, trained, volumes, tmp_path, monkeypatch, bad, what
):
    """``texture eval --data folder --data-path DIR``: a bad third case is found before the first is
    scored (it used to fail only after evaluating the first two), and nothing is written."""
    import medaudit.texture.evaluate as ev

    data = _copy_volumes(volumes, tmp_path / "data")
    img, lab = data / "images" / "s2.nii.gz", data / "labels" / "s2.nii.gz"
    if bad == "shape":
        _save(lab, np.zeros((20, 18, 15), np.uint8))
    elif bad == "values":
        _save(lab, np.full((20, 18, 16), 9, np.uint8))
    elif bad == "nan":
        _save(img, np.full((20, 18, 16), np.nan, np.float32))
    elif bad == "corrupt":
        img.write_bytes(img.read_bytes()[:100])
    else:
        lab.unlink()

    def never(*a, **k):
        raise AssertionError("a case was evaluated")

    monkeypatch.setattr(ev, "_predict_and_score", never)
    args = ["texture", "eval", "-m", trained / "model.pt", "--data", "folder", "--data-path", data]
    args += ["--corruptions", "gaussian_noise", "--severities", "1", "--out", tmp_path / "e"]
    _refused(cli, args, [tmp_path], "s2.nii.gz", what)
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize(("device", "what"), [("tpu", "not a device"), ("mps", "MPS is not available")])
def test_study_train_device_checked_before_any_training(cli, tmp_path, monkeypatch, device, what):
    """The study's ``train.device`` is checked like ``texture train --device``: one line naming the
    study file and the key, exit 2, before any task runs (it used to fail inside every training task)."""
    import medaudit.texture.train as tr

    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")

    def never(*a, **k):
        raise AssertionError("training started")

    monkeypatch.setattr(tr, "train", never)
    cfg = tmp_path / "s.yaml"
    cfg.write_text(
        f"data: {{source: mni-phantom, n_subjects: 4}}\ntrain: {{device: {device}, iterations: 2}}\n"
        "train_filters: [none]\ntest: {corruptions: [gaussian_noise], severities: [1]}\n"
    )
    args = ["texture", "study", cfg, "--out", tmp_path / "st"]
    _refused(cli, args, [tmp_path], "s.yaml", "train.device", what)
    if not torch.cuda.is_available():
        cfg.write_text(cfg.read_text().replace(f"device: {device}", "device: cuda:3"))
        _refused(cli, args, [tmp_path], "s.yaml", "train.device", "no CUDA GPU")


def test_study_train_device_auto_and_cpu_are_accepted(tmp_path):
    from medaudit.studies.texture_robustness.study import parse_config

    base = {
        "data": {"source": "mni-phantom", "n_subjects": 4},
        "train_filters": ["none"],
        "test": {"corruptions": ["gaussian_noise"], "severities": [1]},
    }
    assert parse_config({**base, "train": {"device": "CPU"}}, "s.yaml").train["device"] == "cpu"
    assert "device" not in parse_config({**base, "train": {"device": "auto"}}, "s.yaml").train


def test_train_config_json_stores_the_absolute_data_path(cli, volumes, tmp_path, monkeypatch):
    """``--data-path data`` (relative) is stored resolved in config.json and model.pt, so a copy of the
    run's config.json given back to ``texture train`` from another folder finds the data (and the
    finished model is reused as is, not trained again)."""
    _copy_volumes(volumes, tmp_path / "work" / "data")
    monkeypatch.chdir(tmp_path / "work")
    args = ["--data", "folder", "--data-path", "data", "--iterations", "1", "--patch-size", "16"]
    rc, err = cli("texture", "train", "-o", tmp_path / "r", *args, "--channels", "4,8", "--device", "cpu")
    assert rc == 0, err
    stored = json.loads((tmp_path / "r" / "config.json").read_text())["data_path"]
    assert stored == str((tmp_path / "work" / "data").resolve())
    model = torch.load(tmp_path / "r" / "model.pt", weights_only=True)
    assert json.loads(model["config"])["data_path"] == stored
    mtime = (tmp_path / "r" / "model.pt").stat().st_mtime_ns
    (tmp_path / "elsewhere").mkdir()
    shutil.copy(tmp_path / "r" / "config.json", tmp_path / "elsewhere" / "again.json")
    monkeypatch.chdir(tmp_path / "elsewhere")
    rc, err = cli("texture", "train", "-o", tmp_path / "r", "--config", "again.json")
    assert rc == 0, err
    assert (tmp_path / "r" / "model.pt").stat().st_mtime_ns == mtime


def test_train_run_with_an_old_relative_data_path_is_reused(cli, volumes, tmp_path, monkeypatch):
    """A run folder written when config.json stored the relative data_path (and the key was computed
    from it): the same command from the same folder reuses its model instead of training again (a
    guard for the change above: the key of an absolute data_path differs)."""
    from medaudit.texture.train import TrainConfig

    _copy_volumes(volumes, tmp_path / "work" / "data")
    monkeypatch.chdir(tmp_path / "work")
    args = ["--data", "folder", "--data-path", "data", "--iterations", "1", "--patch-size", "16"]
    args += ["--channels", "4,8", "--device", "cpu"]
    rc, err = cli("texture", "train", "-o", tmp_path / "r", *args)
    assert rc == 0, err
    run = tmp_path / "r"
    old = {**json.loads((run / "config.json").read_text()), "data_path": "data"}  # as old runs wrote it
    (run / "config.json").write_text(json.dumps(old))
    st = torch.load(run / "model.pt", weights_only=True)
    st["config_key"] = TrainConfig.from_dict(old).key()
    torch.save(st, run / "model.pt")
    mtime = (run / "model.pt").stat().st_mtime_ns
    rc, err = cli("texture", "train", "-o", run, *args)
    assert rc == 0, err
    assert (run / "model.pt").stat().st_mtime_ns == mtime, "the finished run was trained again"


@pytest.mark.parametrize(
    ("flags", "what"),
    [
        (["--corruptions", "nope"], "unknown corruption 'nope'"),
        (["--corruptions", "gaussian_noise,gaussian_noise"], "'gaussian_noise' is listed twice"),
        (["--corruptions", ",", "--no-clean"], "nothing to evaluate"),
    ],
)
def test_eval_bad_corruptions_name_the_flag(cli, trained, tmp_path, flags, what):
    args = ["texture", "eval", "-m", trained / "model.pt", "--out", tmp_path / "e", *flags]
    _refused(cli, args, [tmp_path], "--corruptions", what)


def test_eval_of_the_clean_scans_only(cli, trained, tmp_path):
    """``--corruptions none``: the clean scans once (it crashed printing the summary, exit 1, after
    writing; and 'none' with --clean evaluated them twice)."""
    args = ["texture", "eval", "-m", trained / "model.pt", "--out", tmp_path / "e", "--corruptions", "none"]
    rc, err = cli(*args, "--no-report", "--no-texture-bias")
    assert rc == 0, err
    res = pd.read_csv(tmp_path / "e" / "results.csv")
    assert set(res["corruption"]) == {"none"} and not res.duplicated().any()


def test_study_cuda_device_left_to_ray_workers(tmp_path):
    """A study sent to a Ray cluster may ask for ``cuda`` from a CPU-only driver: the config is read
    with the spelling checked only; availability is checked where the tasks run (locally: by the CLI)."""
    from medaudit.device import check_device
    from medaudit.errors import InputError
    from medaudit.studies.texture_robustness.study import parse_config

    base = {
        "data": {"source": "mni-phantom", "n_subjects": 4},
        "train_filters": ["none"],
        "test": {"corruptions": ["gaussian_noise"], "severities": [1]},
    }
    assert parse_config({**base, "train": {"device": "cuda:1"}}, "s.yaml").train["device"] == "cuda:1"
    with pytest.raises(InputError, match="not a device"):
        parse_config({**base, "train": {"device": "tpu"}}, "s.yaml")
    assert check_device("cuda:7", here=False) == "cuda:7"
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA GPU"):
            check_device("cuda:7")
