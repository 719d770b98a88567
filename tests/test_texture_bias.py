"""Texture-bias probes and score: defining properties on a synthetic head with known tissues."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medaudit.errors import InputError
from medaudit.texture import bias as tb

LEVELS = (0.0, 0.2, 0.5, 0.85)  # background, CSF, GM, WM means


def _head(shape=(32, 32, 32), seed=0):
    """Concentric shells (WM core, GM, CSF rim) with small texture noise; image and label (1,D,H,W)."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    c = np.array(shape) / 2 - 0.5
    r = np.sqrt((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2)
    lab = np.select([r < 7, r < 11, r < 14], [3, 2, 1], 0)
    img = np.choose(lab, LEVELS) + rng.normal(0, 0.02, shape) * (lab > 0)
    return torch.tensor(img, dtype=torch.float32)[None], torch.tensor(lab)[None]


def threshold_model(x: torch.Tensor) -> torch.Tensor:
    """Texture only: each voxel gets the tissue whose clean intensity level is nearest."""
    levels = torch.tensor(LEVELS)
    return (x[0][..., None] - levels).abs().argmin(-1)


def atlas_model(reference: torch.Tensor):
    """Shape only: always predicts the clean anatomy, whatever the intensities."""
    return lambda x: reference[0]


def _score(predict, img, lab):
    rows = pd.DataFrame(tb.probe_rows(predict, img, lab, 4)).assign(model="m", case="c")
    return tb.summarise(rows).iloc[0]


def test_threshold_model_is_texture_biased_and_atlas_is_shape_biased():
    img, lab = _head()
    thr, atl = _score(threshold_model, img, lab), _score(atlas_model(lab), img, lab)
    assert thr["dice_clean"] == pytest.approx(1.0)
    assert thr["texture_retention"] == pytest.approx(1.0)  # shuffling cubes keeps every voxel's value
    assert thr["shape_retention"] < 0.4  # moved tissue levels fool a threshold
    assert atl["shape_retention"] == pytest.approx(1.0)  # remapping keeps every tissue's voxels
    assert atl["texture_retention"] < 0.6
    assert thr["texture_bias"] > 0.7 > 0.4 > atl["texture_bias"]


def test_identical_models_get_identical_scores_and_score_is_deterministic():
    img, lab = _head()
    a = _score(threshold_model, img, lab)
    b = _score(lambda x: threshold_model(x.clone()), img, lab)
    assert a["texture_bias"] == b["texture_bias"]
    rows = pd.DataFrame(
        [
            r | {"model": m, "case": "c"}
            for m in ("a", "b")
            for r in tb.probe_rows(threshold_model, img, lab, 4)
        ]
    )
    s = tb.summarise(rows)
    assert s["texture_bias"].nunique() == 1


def test_remap_keeps_shape_and_moves_levels():
    img, lab = _head()
    assert torch.equal(tb.remap_tissues(img, lab, 0.0), img)
    inv = tb.remap_tissues(img, lab, 1.0)
    med = {t: float(inv[lab == t].median()) for t in (1, 2, 3)}
    assert med[1] > med[2] > med[3]  # CSF now brightest, WM darkest: contrast inversion
    assert torch.equal(inv[lab == 0], img[lab == 0])  # outside the head untouched
    one = tb.remap_tissues(img, lab, 1 / 3, seed=4)
    moved = [t for t in (1, 2, 3) if abs(float(one[lab == t].median()) - LEVELS[t]) > 0.05]
    assert len(moved) == 2  # one adjacent pair swapped
    with pytest.raises(InputError):
        tb.remap_tissues(img, lab, 1.5)


def test_shuffle_is_a_joint_permutation_inside_the_head():
    img, lab = _head()
    si, sl = tb.shuffle_patches(img, lab, 4, seed=1)
    assert torch.equal(torch.sort(si.flatten()).values, torch.sort(img.flatten()).values)
    assert not torch.equal(si, img)
    # every voxel keeps its (intensity, label) pair: a threshold model is unaffected
    assert torch.equal(threshold_model(si), sl[0])
    assert torch.equal(si[:, :4, :4, :4], img[:, :4, :4, :4])  # a corner cube outside the head stays


@settings(max_examples=60, deadline=None)
@given(st.floats(0, 1), st.floats(0, 2), st.floats(0, 2))
def test_score_is_bounded(clean, shape_kept, texture_kept):
    s = tb.texture_bias_score(clean, shape_kept, texture_kept)
    assert np.isnan(s) or 0.0 <= s <= 1.0
    if clean > 0 and shape_kept > 0 and texture_kept > 0:
        # more texture survival (or less shape survival) never lowers the score
        assert tb.texture_bias_score(clean, shape_kept, texture_kept * 1.5) >= s - 1e-12
        assert tb.texture_bias_score(clean, shape_kept * 1.5, texture_kept) <= s + 1e-12
