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

import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medaudit.audit.encoders.base import Encoder
from medaudit.audit.encoders.cache import ContentMode, _load_index, cache_folder, encode_cached, item_keys
from medaudit.errors import InputError
from medaudit.io import atomic_save, atomic_write_json

__all__ = ["encode_with_ray"]


class _ShardWriter:
    """Ray Data actor: embeds a batch of ``x`` items and writes it as one cache shard."""

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
        emb = np.asarray(self.encoder.encode(batch["x"].tolist()), dtype=np.float32)
        if emb.ndim != 2 or emb.shape[0] != len(batch) or not np.isfinite(emb).all():
            raise InputError(
                f"encoder {self.encoder.name!r}: bad embeddings for cases {batch['id'].iloc[0]!r}..."
            )
        shard = f"shard-{uuid.uuid4().hex[:16]}"
        with atomic_save(self.folder / f"{shard}.npy") as tmp, open(tmp, "wb") as fh:
            np.save(fh, emb)
        keys = pd.DataFrame({"item": batch["key"].tolist(), "id": batch["id"].astype(str).tolist()})
        with atomic_save(self.folder / f"{shard}.keys.parquet") as tmp:
            keys.to_parquet(tmp, index=False)
        return pd.DataFrame({"shard": [shard], "rows": [len(batch)]})


def _connect(address: str, num_workers: int | None) -> bool:
    """Connect to (or start) Ray; returns whether this call started it (and must shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    kw: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": False, "include_dashboard": False}
    if address == "local":
        ray.init(num_cpus=num_workers or os.cpu_count() or 1, **kw)
    else:
        try:
            ray.init(address=address, **kw)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise InputError(f"--ray-address '{address}': cannot connect to a Ray cluster ({exc})") from exc
    return True


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
) -> np.ndarray:
    """Embed ``inputs`` (image paths or report strings) on a Ray cluster through the shared cache.

    ``num_workers`` actors (default: the cluster's CPU count) each embed ``batch_size`` items at a time.
    Returns the ``(n, dim)`` float32 array, identical to :func:`encode_cached`'s up to float round-off.
    """
    if isinstance(inputs, pd.DataFrame):
        raise InputError("encode_with_ray: metadata tables are embedded locally (encode_cached)")
    ids = list(ids)
    items = list(inputs)
    if getattr(encoder, "requires_fit", False) and not getattr(encoder, "is_fitted", True):
        encoder.fit(items)
    folder = cache_folder(encoder, cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "meta.json").is_file():
        atomic_write_json(
            folder / "meta.json",
            {"encoder": encoder.name, "modality": encoder.modality, "key": encoder.cache_key()},
        )
    keys = item_keys(encoder, items, content)
    done = set(_load_index(folder)["item"])
    todo: dict[str, int] = {}
    for pos, k in enumerate(keys):
        if k not in done and k not in todo:
            todo[k] = pos
    if todo:
        _run_actors(encoder, ids, items, todo, folder, address, num_workers, batch_size, threads_per_worker)
    return encode_cached(
        encoder, ids, items, cache_dir, batch_size=batch_size, progress=False, content=content
    )


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
) -> None:
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
        written = sum(int(r) for r in out.to_pandas()["rows"])
        if written != len(rows):
            raise InputError(f"Ray embedding wrote {written} of {len(rows)} items")
    finally:
        if started:
            ray.shutdown()
