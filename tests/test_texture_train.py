"""Training (resume determinism), evaluation end to end, prediction, report and CLI on a tiny dataset."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from medaudit.data import mri as td
from medaudit.errors import InputError
from medaudit.texture.train import TrainConfig, load_checkpoint, train

AFF = np.array([[0, 0, 3.0, -40.0], [-3.0, 0, 0, 25.0], [0, 3.0, 0, -12.0], [0, 0, 0, 1]])


def _dataset(root, n=5, shape=(20, 18, 16)):
    """Blobs: a WM core (3) in GM (2) in CSF (1), random centres and radii, noisy intensities."""
    rng = np.random.default_rng(7)
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    for i in range(n):
        c = np.array(shape) / 2 + rng.uniform(-2, 2, 3)
        r = np.sqrt((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2)
        r0 = rng.uniform(5.5, 7.0)
        lab = np.select([r < r0 - 3, r < r0 - 1.5, r < r0], [3, 2, 1], 0).astype(np.uint8)
        img = np.choose(lab, [0.0, 0.25, 0.55, 0.9]) + rng.normal(0, 0.03, shape)
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "labels").mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(img.astype(np.float32), AFF), str(root / "images" / f"s{i}.nii.gz"))
        nib.save(nib.Nifti1Image(lab, AFF), str(root / "labels" / f"s{i}.nii.gz"))
    return root


def _config(root, **kw):
    base = dict(
        data_source="folder",
        data_path=str(root),
        label_set="tissue4",
        val_fraction=0.2,
        test_fraction=0.2,
        channels=[4, 8],
        num_res_units=0,
        patch_size=[16, 16, 16],
        batch_size=2,
        iterations=6,
        lr=5e-3,
        val_every=3,
        checkpoint_every=2,
        seed=3,
        device="cpu",
    )
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return _dataset(tmp_path_factory.mktemp("vols"))


def test_config_validation():
    with pytest.raises(InputError, match="needs a filter_name"):
        TrainConfig(mode="filtered")
    with pytest.raises(InputError, match="unknown training mode"):
        TrainConfig(mode="bogus")
    with pytest.raises(InputError, match="filter_severity"):
        TrainConfig(mode="filtered", filter_name="gaussian_noise", filter_severity=7)
    with pytest.raises(InputError, match="'iterationz': unknown key"):
        TrainConfig.from_dict({"iterationz": 3})
    with pytest.raises(InputError, match="'lr'"):
        TrainConfig(lr="fast")
    assert TrainConfig.from_dict({"lr": "3e-3", "iterations": "500"}).iterations == 500


def test_resume_equals_uninterrupted(dataset, tmp_path):
    cfg = _config(
        dataset, mode="online", filter_name="gaussian_noise", filter_severity=[1, 3], filter_prob=0.7
    )
    full = train(cfg, tmp_path / "full", progress=False)
    part = train(cfg, tmp_path / "part", stop_after=3, progress=False)
    assert part.name == "checkpoint.pt" and not (tmp_path / "part" / "model.pt").exists()
    st = load_checkpoint(part)
    assert int(st["iteration"]) == 3
    mid = st["model"]
    resumed = train(cfg, tmp_path / "part", progress=False)
    a, b = load_checkpoint(full), load_checkpoint(resumed)
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    ha = json.loads((tmp_path / "full" / "history.json").read_text())
    hb = json.loads((tmp_path / "part" / "history.json").read_text())
    assert ha["loss"] == hb["loss"] and len(ha["loss"]) == 6
    # the weights changed after the interruption, so the equality above is not vacuous
    assert any(not torch.equal(mid[k], a["state_dict"][k]) for k in mid)
    # a finished run is reused as is
    assert train(cfg, tmp_path / "full", progress=False) == full


@pytest.fixture(scope="module")
def models(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    clean = train(_config(dataset, iterations=8), out / "none", progress=False)
    filt = train(
        _config(dataset, iterations=8, mode="filtered", filter_name="gaussian_blur", filter_severity=3),
        out / "blur",
        progress=False,
    )
    return {"clean": clean, "blur": filt}


def test_evaluate_end_to_end_and_report(models, tmp_path):
    from medaudit.texture.evaluate import COLUMNS, evaluate, example_slices
    from medaudit.texture.report import write_report

    split = json.loads((models["clean"].parent / "split.json").read_text())
    cases = [td.VolumeCase.from_dict(d) for d in split["test"]]
    assert len(cases) == 1
    corrs = ["none", "gaussian_noise", "gaussian_blur"]
    df = evaluate(list(models.values()), cases, corrs, (1, 5), seed=1, progress=False)
    assert list(df.columns) == COLUMNS
    # 2 models x (clean + 2 corruptions x 2 severities) x 1 case x 3 classes
    assert len(df) == 2 * 5 * 3
    assert set(df["model"]) == {"none", "gaussian_blur@3"}
    blur = df[(df["model"] == "gaussian_blur@3")]
    assert set(blur.loc[blur["seen"], "corruption"]) == {"gaussian_blur"}
    assert df.loc[df["corruption"] == "none", "severity"].eq(0).all()
    assert df["dice"].between(0, 1).all() and (df["hd95"] >= 0).all()
    # deterministic corruption per (case, corruption, severity)
    again = evaluate(list(models.values()), cases, corrs, (1, 5), seed=1, progress=False)
    pd.testing.assert_frame_equal(df, again)
    ex = example_slices(models, cases[0], ["gaussian_noise"], severity=5, seed=1)
    assert [r["corruption"] for r in ex["rows"]] == ["none", "gaussian_noise"]
    assert not np.allclose(ex["rows"][0]["image"], ex["rows"][1]["image"])
    df.loc[df["model"] == "none", "model"] = "<script>alert(1)</script>"
    bias = pd.DataFrame({"model": ["<script>alert(1)</script>"], "texture_bias": [0.61]})
    path = write_report(df, tmp_path / "report.html", ex, title="t <b>x</b>", texture_bias=bias)
    html = path.read_text()
    assert "<script>alert(1)" not in html and "&lt;script&gt;" in html
    assert "Texture bias" in html and "0.610" in html
    assert "&lt;b&gt;x&lt;/b&gt;" in html and html.count("data:image/png;base64,") >= 4


def test_predict_writes_input_grid(models, dataset, tmp_path):
    from medaudit.texture.predict import predict_files

    src = dataset / "images" / "s0.nii.gz"
    (out,) = predict_files(models["clean"], [src], tmp_path / "pred", progress=False)
    assert out.name == "s0_seg.nii.gz"
    seg, img = nib.load(str(out)), nib.load(str(src))
    assert seg.shape == img.shape
    assert np.allclose(seg.affine, AFF) and np.allclose(seg.affine, img.affine)
    assert seg.get_data_dtype() == np.uint8
    assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1, 2, 3}
    assert not list((tmp_path / "pred").glob(".*tmp"))


def test_cli_train_eval_predict(dataset, models, tmp_path, capsys):
    from medaudit.cli import main

    rc = main(
        [
            "texture",
            "train",
            "--out",
            str(tmp_path / "r"),
            "--data",
            "folder",
            "--data-path",
            str(dataset),
            "--iterations",
            "2",
            "--patch-size",
            "16",
            "--channels",
            "4,8",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0 and (tmp_path / "r" / "model.pt").is_file()
    rc = main(
        [
            "texture",
            "eval",
            "-m",
            str(models["clean"]),
            "-m",
            str(models["blur"]),
            "--out",
            str(tmp_path / "e"),
            "--corruptions",
            "gaussian_noise",
            "--severities",
            "2,4",
            "--no-report",
        ]
    )
    assert rc == 0
    res = pd.read_csv(tmp_path / "e" / "results.csv")
    assert sorted(res["severity"].unique()) == [0, 2, 4]
    bias = pd.read_csv(tmp_path / "e" / "texture_bias.csv")
    assert list(bias["model"]) == ["none", "gaussian_blur@3"]
    assert bias["texture_bias"].dropna().between(0, 1).all()
    rc = main(
        [
            "texture",
            "eval",
            "-m",
            str(models["clean"]),
            "--out",
            str(tmp_path / "e2"),
            "--corruptions",
            "no_such_filter",
        ]
    )
    assert rc == 2 and not (tmp_path / "e2").exists()
    rc = main(
        [
            "texture",
            "predict",
            "-m",
            str(tmp_path / "nope.pt"),
            str(dataset / "images" / "s1.nii.gz"),
            "--out-dir",
            str(tmp_path / "p"),
        ]
    )
    assert rc == 2
    assert "model file not found" in capsys.readouterr().err


def _verdict_rows(dice_f_unseen, dice_b_unseen, dice_f_seen=0.1, dice_b_seen=0.9):
    rows = []
    spec = [
        ("none", "clean", "none", "clean", False, 0.8, 0.8),
        ("gaussian_blur@3", "filtered", "gaussian_blur", "blur", True, dice_f_seen, dice_b_seen),
        ("gaussian_blur@3", "filtered", "ghosting", "kspace", False, dice_f_unseen, dice_b_unseen),
        ("gaussian_blur@3", "filtered", "motion", "motion", False, dice_f_unseen - 0.01, dice_b_unseen),
    ]
    for _, _, corr, fam, seen, df_, db_ in spec:
        for sev in [0] if corr == "none" else [1, 5]:
            for case in ("a", "b"):
                for k, cls in enumerate(("csf", "gm", "wm")):
                    for model, mode, d, s in (
                        ("gaussian_blur@3", "filtered", df_, seen),
                        ("none", "clean", db_, False),
                    ):
                        rows.append(
                            dict(
                                model=model,
                                train_mode=mode,
                                corruption=corr,
                                family=fam,
                                seen=s,
                                severity=sev,
                                case=case,
                                **{"class": cls},
                                dice=d + 0.01 * k,
                            )
                        )
    return pd.DataFrame(rows)


def test_demo_unseen_verdict_is_computed_from_unseen_conditions_only():
    from medaudit.studies.texture_robustness.demo import unseen_verdict

    # filtered better on both unseen corruptions; the (much worse) seen blur must not count
    v = unseen_verdict(_verdict_rows(0.7, 0.5))
    assert "'gaussian_blur@3' BEAT" in v and "(kspace, motion)" in v
    assert "0.705 vs 0.510 (+0.195)" in v and "higher on 2 of 2" in v
    v = unseen_verdict(_verdict_rows(0.5, 0.7, dice_f_seen=0.9, dice_b_seen=0.1))
    assert "did NOT beat" in v and "higher on 0 of 2" in v
    v = unseen_verdict(_verdict_rows(0.61, 0.608))
    assert "did NOT beat" in v and "higher on 1 of 2" in v


def test_demo_recipe_settings_are_valid():
    """The demo's robust model: a known recipe whose default options validate, trained with the same
    input normalisation as its baseline."""
    from medaudit.studies.texture_robustness import demo
    from medaudit.texture.preprocess import INPUT_NORMS
    from medaudit.texture.recipes import make_recipe

    opts = demo.DEMO_RECIPE_OPTIONS.get(demo.DEMO_RECIPE, {})
    recipe = make_recipe(demo.DEMO_RECIPE, {**opts, "exclude_families": ["motion", "kspace", "resolution"]})
    assert 0.0 < recipe.p < 1.0  # part of every batch stays clean
    assert demo.DEMO_INPUT_NORM in INPUT_NORMS
    cfg = TrainConfig(recipe=demo.DEMO_RECIPE, recipe_options=opts, input_norm=demo.DEMO_INPUT_NORM)
    assert cfg.input_norm == demo.DEMO_INPUT_NORM
