"""Embedding over a Ray cluster with Ray Data, writing into the shared on-disk embedding cache.

:func:`encode_with_ray` finds the items missing from the cache (the same keys as
:func:`~medaudit.audit.encoders.cache.encode_cached`), spreads them over a pool of Ray actors with
``ray.data.Dataset.map_batches``, and each actor writes its batches as cache shards straight into the
cache folder, atomically (``.npy`` first, then the keys file that makes the shard count). The cache folder
must therefore sit on a path every node sees (NFS, Lustre, a shared volume). The driver then assembles the
result from the cache with ``encode_cached`` (which finds nothing left to compute), so a killed run
resumes with every finished shard, and everything downstream (fusion, the slicer) runs on the driver.

``address``: ``"local"`` starts a private local Ray instance with ``num_workers`` CPUs (tests, bench);
anything else goes to ``ray.init(address=...)`` (``"auto"``, ``"ray://head:10001"``).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medaudit.audit.encoders.base import Encoder
from medaudit.audit.encoders.cache import (
    ContentMode,
    _embedding_batches,
    _load_index,
    _prepare_folder,
    encode_cached,
    item_keys,
)
from medaudit.errors import InputError, UnreadableImage
from medaudit.io import atomic_save
from medaudit.rungrid import connect_ray

__all__ = ["encode_with_ray"]


class _ShardWriter:
    """Ray Data actor: embeds a batch of ``x`` items and writes it as one cache shard.

    An image that cannot be decoded is left out of the shard and returned as ``bad`` (JSON
    ``[[key, reason], ...]``): the driver names it or skips it (an exception raised in the actor would
    lose its type and reach the driver as a Ray traceback).
    """

    def __init__(self, encoder: Encoder, folder: str, threads: int = 1) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        self.encoder = encoder
        model = getattr(encoder, "_model", None)
        if model is not None and hasattr(encoder, "device"):
            encoder.device = "cuda" if torch.cuda.is_available() else "cpu"  # type: ignore[attr-defined]
            encoder._model = model.to(encoder.torch_device)  # type: ignore[attr-defined]
        self.folder = Path(folder)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        xs = batch["x"].tolist()
        bad: dict[int, str] = {}
        got: list[int] = []
        parts: list[np.ndarray] = []

        def _unreadable(j: int, exc: UnreadableImage) -> None:
            bad[j] = str(exc)

        for idx, _, e in _embedding_batches(
            self.encoder, xs, list(range(len(xs))), max(1, len(xs)), _unreadable
        ):
            got += idx
            parts.append(np.asarray(e, dtype=np.float32))
        good = batch.iloc[got]
        why = json.dumps([[str(batch["key"].iloc[j]), bad[j]] for j in sorted(bad)])
        if good.empty:
            return pd.DataFrame({"shard": [""], "rows": [0], "bad": [why]})
        emb = np.concatenate(parts)
        if emb.ndim != 2 or emb.shape[0] != len(good) or not np.isfinite(emb).all():
            raise InputError(
                f"encoder {self.encoder.name!r}: bad embeddings for cases {good['id'].iloc[0]!r}..."
            )
        shard = f"shard-{uuid.uuid4().hex[:16]}"
        with atomic_save(self.folder / f"{shard}.npy") as tmp, open(tmp, "wb") as fh:
            np.save(fh, emb)
        keys = pd.DataFrame({"item": good["key"].tolist(), "id": good["id"].astype(str).tolist()})
        with atomic_save(self.folder / f"{shard}.keys.parquet") as tmp:
            keys.to_parquet(tmp, index=False)
        return pd.DataFrame({"shard": [shard], "rows": [len(good)], "bad": [why]})


def _connect(address: str, num_workers: int | None) -> bool:
    """Connect to (or start) Ray; returns whether this call started it (and must shut it down)."""
    return connect_ray(address, num_workers or os.cpu_count() or 1)


def encode_with_ray(
    encoder: Encoder,
    ids: Sequence[Any],
    inputs: Any,
    cache_dir: str | os.PathLike[str],
    address: str = "auto",
    num_workers: int | None = None,
    batch_size: int = 64,
    content: ContentMode = "stat",
    threads_per_worker: int = 1,
    on_unreadable: Callable[[list[int], UnreadableImage], None] | None = None,
) -> np.ndarray:
    """Embed ``inputs`` (image paths or report strings) on a Ray cluster through the shared cache.

    ``num_workers`` actors (default: the cluster's CPU count) each embed ``batch_size`` items at a time.
    Returns the ``(n, dim)`` float32 array, identical to :func:`encode_cached`'s up to float round-off.
    An image that cannot be decoded is handled as by :func:`encode_cached` (``on_unreadable``: raise,
    or return to skip it, its rows then zeros; without it the error names the image and its case id),
    in the order of ``inputs``; it is decoded once, by the actor.
    """
    if isinstance(inputs, pd.DataFrame):
        raise InputError("encode_with_ray: metadata tables are embedded locally (encode_cached)")
    ids = list(ids)
    items = list(inputs)
    if getattr(encoder, "requires_fit", False) and not getattr(encoder, "is_fitted", True):
        encoder.fit(items)
    folder = _cache_folder(encoder, cache_dir)
    keys = item_keys(encoder, items, content)
    done = set(_load_index(folder)["item"])
    todo: dict[str, int] = {}
    for pos, k in enumerate(keys):
        if k not in done and k not in todo:
            todo[k] = pos
    bad: dict[str, str] = {}
    if todo:
        bad = _run_actors(
            encoder, ids, items, todo, folder, address, num_workers, batch_size, threads_per_worker
        )
    if not bad:
        return encode_cached(
            encoder, ids, items, cache_dir, batch_size=batch_size, progress=False, content=content
        )
    return _without_unreadable(
        encoder, ids, items, keys, bad, todo, cache_dir, batch_size, content, on_unreadable
    )


def _cache_folder(encoder: Encoder, cache_dir: str | os.PathLike[str]) -> Path:
    """The encoder's cache folder, created with its ``meta.json`` when new, as :func:`encode_cached`
    writes it (with the embedding width ``dim`` when the encoder can tell it)."""
    return _prepare_folder(encoder, cache_dir)[0]


def _without_unreadable(
    encoder: Encoder,
    ids: list[Any],
    items: list[Any],
    keys: list[str],
    bad: dict[str, str],
    todo: dict[str, int],
    cache_dir: str | os.PathLike[str],
    batch_size: int,
    content: ContentMode,
    on_unreadable: Callable[[list[int], UnreadableImage], None] | None,
) -> np.ndarray:
    """The images the actors could not decode (``bad``: key -> why), in the order of ``inputs``, raised
    or passed to ``on_unreadable``; the result from the cache with zero rows for them."""
    for k in sorted(bad, key=todo.__getitem__):
        same = [p for p, key in enumerate(keys) if key == k]
        if on_unreadable is None:
            raise InputError(f"{bad[k]} (case {str(ids[same[0]])!r})")
        on_unreadable(same, UnreadableImage(bad[k], str(items[same[0]]), same[0]))
    keep = [p for p, key in enumerate(keys) if key not in bad]
    sub = encode_cached(
        encoder,
        [ids[p] for p in keep],
        [items[p] for p in keep],
        cache_dir,
        batch_size=batch_size,
        progress=False,
        content=content,
    )
    out = np.zeros((len(keys), sub.shape[1]), dtype=np.float32)
    out[keep] = sub
    return out


def _run_actors(
    encoder: Encoder,
    ids: list[Any],
    items: list[Any],
    todo: dict[str, int],
    folder: Path,
    address: str,
    num_workers: int | None,
    batch_size: int,
    threads: int,
) -> dict[str, str]:
    """Embed the ``todo`` items on Ray actors; returns the images that cannot be decoded (key -> why)."""
    import ray

    started = _connect(address, num_workers)
    try:
        workers = num_workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        rows = [{"key": k, "id": str(ids[p]), "x": str(items[p])} for k, p in todo.items()]
        ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows) // batch_size, 4 * workers)))
        out = ds.map_batches(
            _ShardWriter,
            fn_constructor_kwargs={"encoder": encoder, "folder": str(folder), "threads": threads},
            batch_size=batch_size,
            batch_format="pandas",
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=threads,
        )
        res = out.to_pandas()
        written = sum(int(r) for r in res["rows"])
        bad = {k: why for b in res["bad"] for k, why in json.loads(b)}
        if written + len(bad) != len(rows):
            raise InputError(f"Ray embedding wrote {written} of {len(rows)} items")
        return bad
    finally:
        if started:
            ray.shutdown()
