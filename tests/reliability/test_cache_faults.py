"""A damaged embedding cache (truncated, garbled or deleted shard, unreadable index or keys file, a shard
with non-finite values or too few rows) is never used: its items are recomputed, one warning line names
the file, and the result equals a run on an intact cache."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from encoder_doubles import Counting
from medaudit.audit.encoders import cache_folder, encode_cached, get_encoder

TEXTS = [f"report {i} {w}" for i, w in enumerate(["effusion tube", "clear lungs", "nodule", "edema"] * 3)]
IDS = [f"c{i:02d}" for i in range(len(TEXTS))]


def _counting() -> Counting:
    """A tf-idf encoder that counts the items it encodes."""
    return Counting(get_encoder("report", "tfidf-svd", dim=3))


def _run(cache: Path) -> tuple[np.ndarray, int]:
    enc = _counting()
    out = encode_cached(enc, IDS, TEXTS, cache, batch_size=5, progress=False)
    return np.asarray(out), enc.encoded


def _truncate(p: Path) -> None:
    os.truncate(p, p.stat().st_size // 2)


def _empty(p: Path) -> None:
    p.write_bytes(b"")


def _garble(p: Path) -> None:
    p.write_bytes(np.random.default_rng(0).bytes(600))


def _nan(p: Path) -> None:
    a = np.load(p)
    a[1] = np.nan
    np.save(p, a)


def _few_rows(p: Path) -> None:
    a = np.load(p)
    np.save(p, a[: len(a) // 2])


def _ints(p: Path) -> None:
    np.save(p, (np.load(p) * 100).astype(np.int64))


def _wide(p: Path) -> None:
    """A valid shard of the wrong width (it was used silently: meta.json did not hold the width)."""
    a = np.load(p)
    np.save(p, np.ones((a.shape[0], a.shape[1] + 2), np.float32))


DAMAGE = {
    "wrong-width": _wide,
    "truncated": _truncate,
    "empty": _empty,
    "garbled": _garble,
    "non-finite": _nan,
    "too-few-rows": _few_rows,
    "not-float32": _ints,
    "deleted": Path.unlink,
}


@pytest.fixture
def reference(tmp_path: Path) -> np.ndarray:
    return _run(tmp_path / "ref")[0]


@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_damaged_shard_is_recomputed(tmp_path, reference, how, caplog):
    cache = tmp_path / "cache"
    _run(cache)
    folder = cache_folder(_counting().fit(TEXTS), cache)
    shard = sorted(folder.glob("shard-*[0-9a-f].npy"))[0]
    n_items = len(np.load(shard))
    DAMAGE[how](shard)
    with caplog.at_level(logging.WARNING, logger="medaudit"):
        out, encoded = _run(cache)
    np.testing.assert_array_equal(out, reference)
    assert encoded == n_items  # that shard's items only
    assert [r.getMessage() for r in caplog.records if str(shard) in r.getMessage()], caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="medaudit"):  # the new index no longer refers to it
        out, encoded = _run(cache)
    np.testing.assert_array_equal(out, reference)
    assert encoded == 0 and not caplog.records


@pytest.mark.parametrize("damage", [_empty, _garble, "drop-column", "row-out-of-range"])
def test_damaged_index_is_rebuilt(tmp_path, reference, damage, caplog):
    cache = tmp_path / "cache"
    _run(cache)
    index = cache_folder(_counting().fit(TEXTS), cache) / "index.parquet"
    if damage == "drop-column":
        pd.read_parquet(index).drop(columns=["row"]).to_parquet(index)
    elif damage == "row-out-of-range":
        df = pd.read_parquet(index)
        df["row"] += 1000
        df.to_parquet(index)
    else:
        damage(index)
    with caplog.at_level(logging.WARNING, logger="medaudit"):
        out, encoded = _run(cache)
    np.testing.assert_array_equal(out, reference)
    assert str(index) in caplog.text or "refers to row" in caplog.text, caplog.text
    out, encoded = _run(cache)  # the rewritten index is whole again
    np.testing.assert_array_equal(out, reference)
    assert encoded == 0


def test_unreadable_keys_file_without_index(tmp_path, reference, caplog):
    cache = tmp_path / "cache"
    _run(cache)
    folder = cache_folder(_counting().fit(TEXTS), cache)
    (folder / "index.parquet").unlink()
    keys = sorted(folder.glob("shard-*.keys.parquet"))[0]
    n_items = len(pd.read_parquet(keys))
    _garble(keys)
    with caplog.at_level(logging.WARNING, logger="medaudit"):
        out, encoded = _run(cache)
    np.testing.assert_array_equal(out, reference)
    assert encoded == n_items and str(keys) in caplog.text


def test_meta_json_holds_the_width_and_a_wrong_one_is_rewritten(tmp_path, reference, caplog):
    import json

    cache = tmp_path / "cache"
    _run(cache)
    meta = cache_folder(_counting().fit(TEXTS), cache) / "meta.json"
    assert json.loads(meta.read_text())["dim"] == reference.shape[1]
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "dim": 7}))
    with caplog.at_level(logging.WARNING, logger="medaudit"):
        out, _ = _run(cache)
    np.testing.assert_array_equal(out, reference)
    assert str(meta) in caplog.text and "width 7" in caplog.text
    assert json.loads(meta.read_text())["dim"] == reference.shape[1]
