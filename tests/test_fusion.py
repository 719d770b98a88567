"""Tests for medaudit.audit.fusion."""

from __future__ import annotations

import numpy as np
import pytest

from medaudit.audit.fusion import MODALITY_VARIANTS, block_total_variance, fuse
from medaudit.errors import InputError


@pytest.fixture
def embeddings() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    n = 120
    return {
        "image": rng.normal(0, 3.0, (n, 200)) @ rng.normal(size=(200, 200)),  # wide, large scale
        "report": rng.normal(0, 0.1, (n, 24)),
        "metadata": rng.integers(0, 2, (n, 5)).astype(float),
    }


def test_modality_variants():
    assert len(MODALITY_VARIANTS) == 7 == len(set(MODALITY_VARIANTS))
    assert MODALITY_VARIANTS[0] == ("image",) and MODALITY_VARIANTS[-1] == ("image", "report", "metadata")
    assert all(v and set(v) <= {"image", "report", "metadata"} for v in MODALITY_VARIANTS)


def test_concat_is_plain_concatenation_and_unbalanced(embeddings):
    fused = fuse(embeddings, "concat")
    assert fused.dtype == np.float32 and fused.shape == (120, 229)
    np.testing.assert_allclose(fused[:, 200:224], embeddings["report"], rtol=1e-6, atol=1e-7)
    tv = block_total_variance(fused, [200, 24, 5])
    assert tv[0] > 1000 * tv[1]  # the wide image block dominates


def test_balanced_gives_each_modality_equal_total_variance(embeddings):
    fused = fuse(embeddings, "balanced", dim=16)
    widths = [16, 16, 5]  # min(dim, width)
    assert fused.shape == (120, sum(widths)) and fused.dtype == np.float32
    np.testing.assert_allclose(block_total_variance(fused, widths), [1.0, 1.0, 1.0], rtol=1e-4)
    np.testing.assert_allclose(fused.mean(axis=0), 0.0, atol=1e-5)

    weighted = fuse(embeddings, "balanced", dim=16, weights={"image": 4.0, "report": 0.25})
    np.testing.assert_allclose(block_total_variance(weighted, widths), [4.0, 0.25, 1.0], rtol=1e-4)
    np.testing.assert_array_equal(fuse(embeddings, "balanced", dim=16), fused)  # deterministic


def test_balanced_keeps_the_leading_structure():
    rng = np.random.default_rng(1)
    signal = rng.normal(size=(200, 1))
    x = signal @ rng.normal(size=(1, 50)) * 5 + rng.normal(size=(200, 50)) * 0.1
    fused = fuse({"image": x}, "balanced", dim=3)
    assert abs(np.corrcoef(fused[:, 0], signal[:, 0])[0, 1]) > 0.99


def test_constant_modality_and_bad_input(embeddings):
    out = fuse({"a": np.ones((10, 3)), "b": np.arange(10.0)[:, None]}, "balanced")
    assert np.all(out[:, :3] == 0) and out[:, 3].var() == pytest.approx(1.0, rel=1e-5)
    with pytest.raises(InputError, match="rows"):
        fuse({"a": np.zeros((3, 2)), "b": np.zeros((4, 2))})
    with pytest.raises(InputError, match="method"):
        fuse(embeddings, "sum")
    with pytest.raises(InputError, match="'audio'"):
        fuse(embeddings, weights={"audio": 1.0})
    with pytest.raises(InputError, match="non-negative"):
        fuse(embeddings, "balanced", weights={"image": -1.0})
    bad = dict(embeddings, report=np.full((120, 24), np.nan))
    with pytest.raises(InputError, match=r"'report'.*row 0"):
        fuse(bad)
    with pytest.raises(InputError):
        fuse({})
