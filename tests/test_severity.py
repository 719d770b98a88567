"""Physical severity levels (table v2): each level means what docs/severities.md says it means."""

from __future__ import annotations

import itertools
import math

import pandas as pd
import pytest
import torch

from medaudit.errors import InputError
from medaudit.texture import filters as tf
from medaudit.texture import severity as sv


def _head(shape=(24, 28, 20)):
    """A head-like phantom: label 3 (WM) core at 0.8, label 2 shell at 0.5, label 1 rim at 0.25."""
    r = [torch.linspace(-1, 1, n) for n in shape]
    zz, yy, xx = torch.meshgrid(*r, indexing="ij")
    rad = (zz**2 + yy**2 + xx**2).sqrt()
    lab = torch.bucketize(-rad, torch.tensor([-0.9, -0.7, -0.45]))
    img = torch.tensor([0.0, 0.25, 0.5, 0.8])[lab]
    return img[None], lab[None]


def test_reference_intensity_is_the_wm_median_else_the_head_median():
    x, lab = _head()
    assert sv.reference_intensity(x, lab, wm_label=3) == pytest.approx(0.8)
    assert sv.reference_intensity(x, lab, wm_label=None) == float(x[lab > 0].median())
    assert sv.reference_intensity(x) == float(x[x > 0.08].median())  # no labels: robust foreground
    assert sv.wm_label_of("tissue4") == 3 and sv.wm_label_of("drawem87") is None


@pytest.mark.parametrize("name", ["gaussian_noise", "rician_noise"])
def test_noise_levels_are_snr_relative_to_wm(name):
    x, lab = _head()
    for level, snr in enumerate(sv.PHYSICAL[name].values, start=1):
        fn = sv.get_corruption(name, level, seed=0, wm_label=3)
        fn(x, label=lab)
        assert fn.last_records[0]["params"]["std"] == pytest.approx(0.8 / snr)
    y = sv.get_corruption("gaussian_noise", 5, seed=0, wm_label=3)(x, label=lab)
    assert float((y - x).std()) == pytest.approx(0.8 / 4, rel=0.05)


def test_blur_low_resolution_and_motion_are_in_mm():
    x, lab = _head()
    ctx = sv.scan_context(x, lab, spacing=(2.0, 1.0, 4.0), wm_label=3)
    sigma = sv.physical_params("gaussian_blur", 5, ctx)["sigma"]
    assert sigma == pytest.approx([10 / 2.3548 / s for s in (2.0, 1.0, 4.0)], rel=1e-3)
    assert sv.physical_params("low_resolution", 5, ctx)["factor"] == pytest.approx(10 / 2.0)
    assert sv.physical_params("low_resolution", 1, ctx)["factor"] == 1.0  # 2 mm slices on a 2 mm grid
    m = sv.physical_params("motion", 5, ctx, seed=0)
    assert m["degrees"] == 10 and m["translation"] == pytest.approx(10 / (7.0 / 3))


def test_bias_field_peak_range_and_ghost_ratio():
    x = torch.ones(1, 16, 20, 18)
    for level, rng in enumerate(sv.PHYSICAL["bias_field"].values, start=1):
        y = sv.get_corruption("bias_field", level, seed=level)(x)
        assert float(y.max() / y.min()) == pytest.approx(rng, rel=1e-4)
    head, lab = _head()  # with a label map the range is measured inside the head (label > 0)
    y = sv.get_corruption("bias_field", 5, seed=1)(head, label=lab)
    ratio = (y / head)[lab > 0]
    assert float(ratio.max() / ratio.min()) == pytest.approx(2.5, rel=1e-4)
    half = torch.zeros(1, 32, 8, 8)
    half[:, 4:12] = 1.0  # object in the first half along axis 0: the N/2 ghost lands in empty space
    for level, ratio in enumerate(sv.PHYSICAL["ghosting"].values, start=1):
        y = sv.get_corruption("ghosting", level)(half)
        ghost = float(y[:, 20:28].abs().mean())
        main = float(y[:, 4:12].mean())
        assert ghost / main == pytest.approx(ratio, rel=0.1), level


@pytest.mark.parametrize("name", sorted(sv.PHYSICAL))
def test_v2_distortion_grows_with_level(name):
    x, lab = _head()
    errs = []  # mean squared error against the clean scan, averaged over 3 seeds
    for level in range(6):
        err = 0.0
        for seed in (0, 1, 2):
            fn = sv.get_corruption(name, level, seed=seed, spacing=(1.5, 1.5, 1.5), wm_label=3)
            y = fn(x, label=lab) if level and tf.FILTERS[name].needs_label else fn(x)
            err += float(((y - x) ** 2).mean()) / 3
        errs.append(err)
    assert errs[0] == 0.0
    assert all(b > a for a, b in itertools.pairwise(errs)), errs
    assert set(sv.PHYSICAL) == set(tf.FILTERS)


def test_versions():
    x, _ = _head()
    assert torch.equal(sv.get_corruption("gibbs", 3, version=1)(x), tf.get_corruption("gibbs", 3)(x))
    with pytest.raises(InputError, match="severity_version"):
        sv.get_corruption("gibbs", 3, version=3)
    old = pd.DataFrame({"dice": [0.5]})
    assert sv.with_version(old)["severity_version"].tolist() == [1]
    rows = sv.describe(2)
    assert len(rows) == len(tf.FILTERS) and all(len(r["levels"]) == 5 for r in rows)
    assert math.isclose(sv.PHYSICAL["gaussian_noise"].values[-1], 4)


def test_old_study_results_are_read_and_labelled_as_version_1(tmp_path):
    from medaudit.texture.study_report import write_study_report

    rows = []
    for f, s in (("none", 0), ("gaussian_blur", 3)):
        for corr, sev in (("none", 0), ("gaussian_noise", 1), ("gaussian_noise", 5)):
            rows.append(
                {"train_filter": f, "train_severity": s, "seed": 0, "corruption": corr, "severity": sev,
                 "case": "c1", "class": "WM", "dice": 0.8 - 0.05 * sev - (0.02 if f == "none" else 0),
                 "hd95": 1.0, "family": "clean" if corr == "none" else "noise",
                 "train_families": "" if f == "none" else "blur"}
            )  # fmt: skip
    old = pd.DataFrame(rows)  # written before severity_version existed
    html = write_study_report(old, None, tmp_path / "old.html", n_boot=20).read_text()
    assert "severity table v1 (old" in html
    new = old.assign(severity_version=2)
    assert (
        "v2 (physical levels)" in write_study_report(new, None, tmp_path / "new.html", n_boot=20).read_text()
    )
