"""A resumed ``encode_cached`` run reads each cached row once (it used to read every cached row twice:
once to check the shard for non-finite values, once to assemble the result), and still finds a shard
with non-finite rows, recomputes its items and repairs the cache."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from encoder_doubles import Counting
from medaudit.audit.encoders import cache_folder, encode_cached, get_encoder

WORDS = ["effusion tube", "clear lungs", "nodule", "edema", "pneumothorax apex", "cardiomegaly"]
TEXTS = [f"report {i} {w}" for i, w in enumerate(WORDS * 5)]
IDS = [f"c{i:02d}" for i in range(len(TEXTS))]


def _counting() -> Counting:
    return Counting(get_encoder("report", "tfidf-svd", dim=4))


class _CountingShard:
    """A loaded shard array that counts the rows fetched from it."""

    def __init__(self, arr: np.ndarray, fetched: list[int]) -> None:
        self._arr, self._fetched = arr, fetched

    def __getattr__(self, name: str) -> Any:
        return getattr(self._arr, name)

    def __getitem__(self, item: Any) -> Any:
        got = self._arr[item]
        self._fetched.append(int(np.asarray(got).reshape(-1, self._arr.shape[1]).shape[0]))
        return got


@pytest.fixture
def spy_shards(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[int]]:
    """``np.load`` of a cache shard, counted: shard file name -> rows fetched by each read."""
    reads: dict[str, list[int]] = {}
    real = np.load

    def load(file: Any, *a: Any, **kw: Any) -> Any:
        arr = real(file, *a, **kw)
        name = Path(str(file)).name
        if name.startswith("shard-") and name.endswith(".npy"):
            return _CountingShard(arr, reads.setdefault(name, []))
        return arr

    monkeypatch.setattr(np, "load", load)
    return reads


@pytest.mark.parametrize("to_file", [False, True], ids=["in-memory", "memory-mapped"])
def test_resumed_run_reads_each_cached_row_once(tmp_path, spy_shards, to_file):
    reference = np.asarray(encode_cached(_counting(), IDS, TEXTS, tmp_path / "ref", progress=False))
    cache = tmp_path / "cache"
    half = len(TEXTS) // 2
    encode_cached(_counting().fit(TEXTS), IDS[:half], TEXTS[:half], cache, batch_size=4, progress=False)
    folder = cache_folder(_counting().fit(TEXTS), cache)
    cached = {p.name for p in folder.glob("shard-*[0-9a-f].npy")}
    spy_shards.clear()

    enc = _counting()
    out = encode_cached(
        enc, IDS, TEXTS, cache, batch_size=4, progress=False, out=tmp_path / "e.npy" if to_file else None
    )
    np.testing.assert_allclose(np.asarray(out), reference, atol=1e-6)
    assert enc.encoded == len(TEXTS) - half  # the missing half only
    assert set(spy_shards) == cached, "a shard written by this run is read back, or a cached one is not read"
    assert all(len(reads) == 1 for reads in spy_shards.values()), spy_shards  # one read per shard ...
    assert sum(sum(reads) for reads in spy_shards.values()) == half  # ... of each cached row, once
    assert isinstance(out, np.memmap) == to_file


def test_duplicate_inputs_read_their_cached_row_once(tmp_path, spy_shards):
    texts, ids = [*TEXTS, TEXTS[0], TEXTS[0]], [*IDS, "dup1", "dup2"]
    ref = np.asarray(encode_cached(_counting(), ids, texts, tmp_path / "cache", batch_size=7, progress=False))
    np.testing.assert_array_equal(ref[-1], ref[0])
    spy_shards.clear()
    again = encode_cached(_counting(), ids, texts, tmp_path / "cache", batch_size=7, progress=False)
    np.testing.assert_array_equal(again, ref)
    assert sum(sum(reads) for reads in spy_shards.values()) == len(TEXTS)


def test_shard_with_nan_rows_is_recomputed_on_resume(tmp_path, caplog):
    """The finiteness check now runs on the rows as they are copied into the (memory-mapped) result."""
    reference = np.asarray(encode_cached(_counting(), IDS, TEXTS, tmp_path / "ref", progress=False))
    cache = tmp_path / "cache"
    encode_cached(_counting(), IDS, TEXTS, cache, batch_size=4, progress=False)
    folder = cache_folder(_counting().fit(TEXTS), cache)
    shards = sorted(folder.glob("shard-*[0-9a-f].npy"))
    bad = shards[len(shards) // 2]
    a = np.load(bad)
    a[[0, -1], 1] = [np.nan, np.inf]
    np.save(bad, a)

    enc = _counting()
    with caplog.at_level(logging.WARNING, logger="medaudit"):
        out = encode_cached(enc, IDS, TEXTS, cache, batch_size=4, progress=False, out=tmp_path / "e.npy")
    assert isinstance(out, np.memmap) and not out.flags.writeable
    np.testing.assert_allclose(np.asarray(out), reference, atol=1e-6)
    assert np.isfinite(out).all()
    assert enc.encoded == len(a)  # that shard's items only
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and str(bad) in warned[0] and "non-finite" in warned[0], warned
    assert "recomputed" in warned[0]

    caplog.clear()
    enc = _counting()
    with caplog.at_level(logging.WARNING, logger="medaudit"):  # the cache is repaired
        again = encode_cached(enc, IDS, TEXTS, cache, batch_size=4, progress=False, out=tmp_path / "e2.npy")
    np.testing.assert_array_equal(np.asarray(again), np.asarray(out))
    assert enc.encoded == 0 and not caplog.records
