"""Real-size machinery: stat cache keys by default, memory-mapped output, resume, Ray Data embedding."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from medaudit.audit.encoders import encode_cached, get_encoder
from medaudit.audit.encoders.cache import item_keys
from test_cxr_readers import _img


def _images(tmp_path: Path, n: int = 12) -> list[str]:
    return [str(_img(tmp_path / "imgs" / f"im{i:03d}.png", i)) for i in range(n)]


def _encoder():
    import torch

    torch.manual_seed(0)
    return get_encoder("image", "efficientnet-lite0", weights=None, size=64, device="cpu")


def test_stat_keys_default_and_memmap_output(tmp_path, monkeypatch):
    paths = _images(tmp_path, 6)
    enc = _encoder()
    ids = [f"c{i}" for i in range(len(paths))]
    ref = encode_cached(enc, ids, paths, tmp_path / "cache", batch_size=4, progress=False, content="bytes")
    # a resumed run with the default stat keys never opens an image file
    opened: list[str] = []
    real_open = open

    def spy(file, *a, **kw):
        if str(file) in paths:
            opened.append(str(file))
        return real_open(file, *a, **kw)

    monkeypatch.setattr("builtins.open", spy)
    enc2 = enc
    first = encode_cached(enc2, ids, paths, tmp_path / "cache2", batch_size=4, progress=False)
    opened.clear()
    again = encode_cached(
        enc2, ids, paths, tmp_path / "cache2", batch_size=4, progress=False, out=tmp_path / "e.npy"
    )
    assert opened == []
    assert isinstance(again, np.memmap) and not again.flags.writeable
    np.testing.assert_array_equal(np.asarray(again), first)
    np.testing.assert_allclose(first, ref, rtol=1e-5, atol=1e-6)
    # a rewritten file (new mtime) gets a new key and is recomputed
    before = item_keys(enc2, paths[:1], "stat")
    st = os.stat(paths[0])
    os.utime(paths[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert item_keys(enc2, paths[:1], "stat") != before


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("MEDAUDIT_TEST_RAY") != "1",
    reason="starts a local Ray cluster (~60 s on 2 shared cores); set MEDAUDIT_TEST_RAY=1",
)
def test_ray_two_workers_match_local(tmp_path):
    pytest.importorskip("ray")
    from medaudit.audit.encoders.distributed import encode_with_ray

    paths = _images(tmp_path, 12)
    ids = [f"c{i}" for i in range(len(paths))]
    enc = _encoder()
    local = encode_cached(enc, ids, paths, tmp_path / "local", batch_size=4, progress=False)
    dist = encode_with_ray(enc, ids, paths, tmp_path / "shared", "local", num_workers=2, batch_size=4)
    np.testing.assert_allclose(dist, local, rtol=1e-4, atol=1e-5)
    shards = list((tmp_path / "shared").rglob("shard-*.keys.parquet"))
    assert len(shards) == 3  # written by the actors, 4 images each
    import ray

    assert not ray.is_initialized()  # the local cluster it started is shut down


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("MEDAUDIT_TEST_RAY") != "1", reason="starts a local Ray cluster; set MEDAUDIT_TEST_RAY=1"
)
def test_audit_with_ray_address_matches_local(tmp_path):
    pytest.importorskip("ray")
    import pandas as pd

    from medaudit.audit.pipeline import AuditConfig, run_audit

    paths = _images(tmp_path, 16)
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"id": [f"c{i}" for i in range(16)], "label": rng.integers(0, 2, 16),
                       "prob": rng.random(16), "image": paths})  # fmt: skip

    def cfg(**kw):
        return AuditConfig(modalities=("image",), n_components=4, n_slices=2, pca=4, write_report=False,
                           encoder_kwargs={"image": {"weights": None, "size": 64}}, **kw)  # fmt: skip

    local = run_audit(df, cfg(cache_dir=tmp_path / "c1"), tmp_path / "o1")
    dist = run_audit(df, cfg(cache_dir=tmp_path / "c2", ray_address="local"), tmp_path / "o2")
    np.testing.assert_allclose(dist.embedding, local.embedding, rtol=1e-4, atol=1e-5)
    assert [s["member_ids"] for s in dist.slices] == [s["member_ids"] for s in local.slices]
