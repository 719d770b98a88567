"""Resumable on-disk embedding cache.

Layout of ``cache_dir/<encoder-name>-<key16>/`` (``key16`` = first 16 hex digits of the encoder's
``cache_key()``)::

    meta.json                    full cache key, encoder name, embedding width
    shard-<uid>.npy              float32 (rows, dim), one per computed batch
    shard-<uid>.keys.parquet     item key (and case id) of each row of that shard; written last
    index.parquet                consolidated (item, shard, row) table, rewritten at the end of a run

Every file is written atomically (``medaudit.io``), and a shard counts only once its keys file exists, so a
run killed at any point resumes with exactly the batches it had finished. A damaged cache (a truncated or garbled
shard, an index or keys file that cannot be read, a shard with non-finite values or too few rows) is
never used: the index is rebuilt from the shards' keys files, the damaged shard's items are recomputed
into a new shard (one warning line names the file), and the rewritten index no longer refers to it. Items are keyed by content
(text; metadata row values; image files by resolved path + size + modification time in nanoseconds,
``content="stat"``, the default, or by a SHA-256 of the file's bytes with ``content="bytes"``), so
duplicates are computed once and a changed file is recomputed.

Why stat keys are safe enough (and the default): resuming a 377k-image run with byte keys re-reads
every image (hundreds of GB for MIMIC-CXR-JPG) before computing anything; stat keys cost one ``stat``
per file. Any write through the file system updates the modification time, so an edited, re-exported or
re-downloaded image gets a new key and is recomputed; a dataset moved or mounted elsewhere changes the
resolved path, which only costs a recomputation, never a wrong hit. The one miss is a file rewritten
with the *same size* and its *mtime deliberately restored* (``touch -r``, ``rsync -t`` over a same-size
file) or rewritten within the timestamp granularity of a coarse file system (FAT: 2 s); public datasets
are read-only releases, so this does not happen in practice. Use ``content="bytes"`` (CLI
``--cache-content bytes``) when images may be edited in place.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from medaudit.audit.encoders.base import Encoder, as_list
from medaudit.errors import InputError, UnreadableImage
from medaudit.io import atomic_save, atomic_write_json
from medaudit.progress import make_progress

ContentMode = Literal["bytes", "stat"]

log = logging.getLogger("medaudit")

# what a damaged cache file raises when read (pyarrow's errors are ValueError / OSError subclasses)
_READ_ERRORS = (OSError, ValueError, EOFError, KeyError, TypeError)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_key(path: str, content: ContentMode) -> str:
    p = Path(path)
    try:
        if content == "stat":
            st = p.stat()
            return _sha(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
        return h.hexdigest()
    except OSError as exc:
        raise InputError(f"{p}: cannot read image file ({exc.strerror or exc})") from exc


def item_keys(encoder: Encoder, inputs: Any, content: ContentMode = "bytes") -> list[str]:
    """Content key of each input item for ``encoder``'s modality (see module docstring)."""
    if encoder.modality == "image":
        return [_file_key(str(p), content) for p in as_list(inputs, "image inputs")]
    if encoder.modality == "report":
        out = []
        for t in as_list(inputs, "report inputs"):
            s = "" if t is None or (isinstance(t, float) and np.isnan(t)) else str(t)
            out.append(_sha(s.encode("utf-8")))
        return out
    if encoder.modality == "metadata":
        if not isinstance(inputs, pd.DataFrame):
            raise InputError(f"metadata inputs: expected a pandas DataFrame, got {type(inputs).__name__}")
        cols = _sha("\x1f".join(map(str, inputs.columns)).encode())
        rows = pd.util.hash_pandas_object(inputs.astype(object), index=False).to_numpy()
        return [_sha(f"{cols}|{int(r)}".encode()) for r in rows]
    raise InputError(
        f"encoder {getattr(encoder, 'name', encoder)!r} has unknown modality {encoder.modality!r}"
    )


def _subset(inputs: Any, positions: list[int]) -> Any:
    if isinstance(inputs, pd.DataFrame):
        return inputs.iloc[positions]
    if isinstance(inputs, (pd.Series, pd.Index)):
        return inputs[positions].tolist() if isinstance(inputs, pd.Index) else inputs.iloc[positions].tolist()
    return [inputs[i] for i in positions]


def _embedding_batches(
    encoder: Encoder,
    inputs: Any,
    positions: list[int],
    batch_size: int,
    on_unreadable: Callable[[int, UnreadableImage], None] | None = None,
) -> Iterator[tuple[list[int], int, np.ndarray]]:
    """Yield ``(indices, consumed, embeddings)``: the rows of ``embeddings`` are ``positions[j]`` for ``j``
    in ``indices``, in shards of ~``batch_size`` rows; ``consumed`` counts the positions done so far.

    Encoders with an ``iter_encode`` generator (the image encoders) stream all missing items through one
    DataLoader; others are called once per shard. An image the stream cannot decode
    (:class:`~medaudit.errors.UnreadableImage`) is passed to ``on_unreadable(j, error)``, which raises
    or lets it be skipped: the stream then restarts after it (the embeddings before it are kept, so
    only the images its DataLoader had read ahead are read again).
    """
    if not positions:
        return
    stream = getattr(encoder, "iter_encode", None)
    if stream is None:
        for start in range(0, len(positions), batch_size):
            stop = min(len(positions), start + batch_size)
            emb = np.asarray(encoder.encode(_subset(inputs, positions[start:stop])), np.float32)
            yield list(range(start, stop)), stop, emb
        return
    buf: list[np.ndarray] = []
    idx: list[int] = []
    base = 0  # index in positions of the current stream's first input
    while base < len(positions):
        got = 0
        try:
            for emb in stream(_subset(inputs, positions[base:])):
                emb = np.asarray(emb, np.float32)
                buf.append(emb)
                idx += range(base + got, base + got + len(emb))
                got += len(emb)
                while len(idx) >= batch_size:
                    block = np.concatenate(buf)
                    yield idx[:batch_size], base + got, block[:batch_size]
                    buf, idx = [block[batch_size:]], idx[batch_size:]
        except UnreadableImage as exc:
            if exc.index != got or on_unreadable is None:
                raise
            on_unreadable(base + got, exc)
            base += got + 1
            continue
        base += got
        break
    if idx:
        yield idx, base, np.concatenate(buf)
    if base != len(positions):
        raise InputError(f"encoder {encoder.name!r} yielded {base} embeddings for {len(positions)} inputs")


def cache_folder(encoder: Encoder, cache_dir: str | os.PathLike[str]) -> Path:
    """The folder holding ``encoder``'s cached embeddings under ``cache_dir`` (fit the encoder first)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(encoder.name))
    return Path(cache_dir) / f"{safe}-{encoder.cache_key()[:16]}"


def _load_index(folder: Path, damaged: list[str] | None = None) -> pd.DataFrame:
    """The cache's (item, shard, row) table: ``index.parquet`` plus the keys files of shards it does not
    cover. An unreadable index or keys file is skipped (its shards' items are then recomputed) and
    named in ``damaged``."""
    parts = []
    covered: set[str] = set()
    idx_path = folder / "index.parquet"
    if idx_path.is_file():
        try:
            idx = pd.read_parquet(idx_path, columns=["item", "shard", "row"])
            idx = idx.astype({"item": str, "shard": str, "row": np.int64})
        except _READ_ERRORS:
            _damaged(idx_path, "cannot be read; rebuilt from the shards' keys files", damaged)
        else:
            parts.append(idx)
            covered = set(idx["shard"].unique())
    for kf in sorted(folder.glob("shard-*.keys.parquet")):
        shard = kf.name[: -len(".keys.parquet")]
        if shard in covered or not (folder / f"{shard}.npy").is_file():
            continue
        try:
            keys = pd.read_parquet(kf, columns=["item"])["item"].astype(str)
        except _READ_ERRORS:
            _damaged(kf, "cannot be read; its items are recomputed", damaged)
            continue
        parts.append(pd.DataFrame({"item": keys, "shard": shard, "row": np.arange(len(keys))}))
    if not parts:
        return pd.DataFrame({"item": pd.Series(dtype=str), "shard": pd.Series(dtype=str), "row": []})
    df = pd.concat(parts, ignore_index=True)
    return df.drop_duplicates("item", keep="first").reset_index(drop=True)


def _damaged(path: Path, why: str, damaged: list[str] | None) -> None:
    log.warning("embedding cache: %s is damaged (%s)", path, why)
    if damaged is not None:
        damaged.append(str(path))


def _read_rows(path: Path, rows: np.ndarray, dim: int | None = None) -> tuple[np.ndarray | None, str | None]:
    """The ``rows`` of the shard at ``path`` (read once), or ``(None, why)`` it cannot serve them:
    unreadable, not a 2D float32 array, not ``dim`` wide (the encoder's width, kept in meta.json), too
    few rows, or non-finite values in those rows (a shard is written only when finite)."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        return None, "missing"
    except _READ_ERRORS:
        return None, "cannot be read"
    try:
        if arr.ndim != 2 or arr.dtype != np.float32:
            return None, f"holds a {arr.dtype} array of shape {arr.shape}, not (rows, dim) float32"
        if dim is not None and arr.shape[1] != dim:
            return None, f"holds embeddings of width {arr.shape[1]}, the encoder's width is {dim}"
        if len(rows) and int(rows.max()) >= arr.shape[0]:
            return None, f"has {arr.shape[0]} rows, the index refers to row {int(rows.max())}"
        block = np.asarray(arr[rows])
    except _READ_ERRORS:  # a file shorter than its header says
        return None, "cannot be read"
    finally:
        del arr
    if not np.isfinite(block).all():
        return None, "holds non-finite values"
    return block, None


class _Output:
    """The ``(n, dim)`` result, created when its first rows arrive (their width is its width): in memory,
    or memory-mapped at a temporary file that ``stack`` publishes onto ``path`` when the run succeeds
    (and removes when it fails)."""

    def __init__(self, n: int, path: Path | None, stack: contextlib.ExitStack) -> None:
        self.n, self.path, self.stack = n, path, stack
        self.array: np.ndarray | None = None

    def put(self, positions: np.ndarray, block: np.ndarray, source: Path) -> None:
        """Write ``block`` into the rows ``positions``; ``source`` (its shard) is named if its width differs
        from the earlier rows'."""
        if self.array is None:
            shape = (self.n, int(block.shape[1]))
            if self.path is None:
                self.array = np.zeros(shape, dtype=np.float32)
            else:
                self.array = _open_out(self.stack.enter_context(atomic_save(self.path)), shape, self.path)
        elif block.shape[1] != self.array.shape[1]:
            raise InputError(
                f"{source}: width {block.shape[1]} differs from {self.array.shape[1]}; clear the cache"
            )
        self.array[positions] = block

    def finish(self, copies: list[tuple[int, int]]) -> np.ndarray:
        """Fill the rows of duplicate inputs, ``(position, position of its first copy)``, and flush."""
        assert self.array is not None
        if copies:  # of a computed item (one skipped as unreadable: zeros, as its first input)
            c = np.asarray(copies, dtype=np.int64)
            self.array[c[:, 0]] = self.array[c[:, 1]]
        if isinstance(self.array, np.memmap):
            self.array.flush()
        return self.array


def _copy_cached(
    folder: Path, keys: list[str], index: pd.DataFrame, result: _Output, damaged: list[str], dim: int | None
) -> pd.DataFrame:
    """Copy the cached rows of ``keys`` into ``result``, reading each row once, shard by shard; returns
    ``index`` without the shards that cannot serve them (:func:`_read_rows`: their items are then
    recomputed, and the rewritten index no longer refers to them), each named in ``damaged``."""
    need = pd.DataFrame({"item": keys, "pos": np.arange(len(keys), dtype=np.int64)}).merge(index, on="item")
    codes, shards = pd.factorize(need["shard"], sort=True)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(shards) + 1))
    all_rows, all_pos = (
        need["row"].to_numpy(dtype=np.int64)[order],
        need["pos"].to_numpy(dtype=np.int64)[order],
    )
    bad = []
    for s, shard in enumerate(shards):
        path, part = folder / f"{shard}.npy", slice(bounds[s], bounds[s + 1])
        rows, which = np.unique(all_rows[part], return_inverse=True)
        block, why = _read_rows(path, rows, dim)
        if block is None:
            _damaged(path, f"{why}; its items are recomputed", damaged)
            bad.append(shard)
        else:
            result.put(all_pos[part], block[which.reshape(-1)], path)
    return index[~index["shard"].isin(bad)].reset_index(drop=True) if bad else index


def encode_cached(
    encoder: Encoder,
    ids: Sequence[Any],
    inputs: Any,
    cache_dir: str | os.PathLike[str],
    batch_size: int = 64,
    progress: bool = True,
    content: ContentMode = "stat",
    on_batch: Callable[[int, int], None] | None = None,
    out: str | os.PathLike[str] | None = None,
    on_unreadable: Callable[[list[int], UnreadableImage], None] | None = None,
) -> np.ndarray:
    """Embed ``inputs`` with ``encoder``, reusing and extending an on-disk cache; ``(n, dim)`` float32.

    Args:
        encoder: any registered/user encoder. One that ``requires_fit`` and is not fitted is first
            fitted on all ``inputs`` (so its cache key covers the fitted state).
        ids: one case id per input (unique); stored with the shards and used in error messages.
        inputs: image paths, report strings, or a metadata DataFrame, aligned with ``ids``.
        cache_dir: root cache folder (one subfolder per encoder configuration).
        batch_size: items per computed shard; a killed run loses at most one batch.
        progress: show a rich progress bar (also silenced by ``MEDAUDIT_QUIET=1``).
        content: image item key: ``"stat"`` (path + size + mtime, default; see the module docstring
            for why that is safe) or ``"bytes"`` (hash of the file's bytes, re-read on every run).
        on_batch: called as ``on_batch(done, total)`` after each shard is safely on disk.
        out: write the ``(n, dim)`` result to this ``.npy`` file (atomically) and return it memory-mapped
            read-only, so memory stays bounded by one batch and one shard, whatever ``n``.
        on_unreadable: called as ``on_unreadable(positions, error)`` for an image that cannot be decoded
            (``positions``: the inputs holding it); it raises, or returns to skip them: their rows
            of the result are then zeros, nothing is cached for them. Without it the error is raised,
            naming the image and its case id.

    The cached rows are copied into the result first, shard by shard (each memory-mapped once, each row
    read once, checked finite as it is copied); then only the items whose key is missing (or whose shard
    is damaged) are computed, and each batch is written both as a shard and into the result.
    """
    ids = list(ids)
    _check_ids(ids, len(inputs), batch_size)
    if getattr(encoder, "requires_fit", False) and not getattr(encoder, "is_fitted", True):
        encoder.fit(inputs)
    folder, width = _prepare_folder(encoder, cache_dir)
    with contextlib.ExitStack() as stack:
        result = _Output(len(ids), None if out is None else Path(out), stack)
        with make_progress(disable=None if progress else True) as prog:
            keys = _hash_inputs(encoder, inputs, content, prog)
            damaged: list[str] = []
            index = _copy_cached(folder, keys, _load_index(folder, damaged), result, damaged, width)
            todo, copies = _missing(keys, set(index["item"]))
            run = _Run(encoder, ids, inputs, keys, folder, result)
            new_rows = run.encode(todo, batch_size, prog, on_batch, on_unreadable)
        _save_index(folder, index, new_rows, damaged)
        if result.array is None:  # no input, or every one skipped as unreadable
            return np.zeros((len(keys), int(encoder.dim)), dtype=np.float32)
        array = result.finish(copies)
    return array if out is None else np.load(out, mmap_mode="r")


def _save_index(folder: Path, index: pd.DataFrame, new_rows: list[pd.DataFrame], damaged: list[str]) -> None:
    """Rewrite ``index.parquet`` when this run added shards, found damaged files, or found none."""
    if new_rows or damaged or not (folder / "index.parquet").is_file():
        full = pd.concat([index, *new_rows], ignore_index=True) if new_rows else index
        with atomic_save(folder / "index.parquet") as tmp:
            full.to_parquet(tmp, index=False)


def _missing(keys: list[str], cached: set[str]) -> tuple[list[tuple[str, int]], list[tuple[int, int]]]:
    """The items to compute, as ``(key, position of its first input)``, and the other inputs holding one
    of them, as ``(position, position of the first)``."""
    first: dict[str, int] = {}
    copies: list[tuple[int, int]] = []
    for pos, k in enumerate(keys):
        if k not in cached:
            f = first.setdefault(k, pos)
            if f != pos:
                copies.append((pos, f))
    return list(first.items()), copies


class _Run:
    """The missing items of one :func:`encode_cached` call, computed in batches, each written as a shard
    and into the result."""

    def __init__(
        self, encoder: Encoder, ids: list[Any], inputs: Any, keys: list[str], folder: Path, result: _Output
    ) -> None:
        self.encoder, self.ids, self.inputs, self.keys = encoder, ids, inputs, keys
        self.folder, self.result = folder, result

    def encode(
        self,
        todo: list[tuple[str, int]],
        batch_size: int,
        prog: Any,
        on_batch: Callable[[int, int], None] | None,
        on_unreadable: Callable[[list[int], UnreadableImage], None] | None,
    ) -> list[pd.DataFrame]:
        """Compute ``todo`` (``(key, position)``); returns the index rows of the shards written."""
        task = prog.add_task(f"{self.encoder.name}: encoding", total=len(todo))
        new_rows: list[pd.DataFrame] = []
        dim: int | None = None

        def _unreadable(j: int, exc: UnreadableImage) -> None:
            same = [pos for pos, k in enumerate(self.keys) if k == todo[j][0]]
            if on_unreadable is None:
                raise InputError(f"{exc} (case {self.ids[same[0]]!r})") from None
            on_unreadable(same, exc)

        positions = [p for _, p in todo]
        for idx, consumed, emb in _embedding_batches(
            self.encoder, self.inputs, positions, batch_size, _unreadable
        ):
            chunk = [todo[j] for j in idx]
            emb = np.asarray(emb, dtype=np.float32)
            dim = _check_batch(self.encoder, emb, chunk, self.ids, dim)
            shard, rows = _write_shard(self.folder, emb, chunk, self.ids)
            new_rows.append(rows)
            self.result.put(
                np.asarray([p for _, p in chunk], dtype=np.int64), emb, self.folder / f"{shard}.npy"
            )
            prog.update(task, completed=consumed)
            if on_batch is not None:
                on_batch(consumed, len(todo))
        return new_rows


def _check_ids(ids: list[Any], n: int, batch_size: int) -> None:
    if len(ids) != n:
        raise InputError(f"encode_cached: {len(ids)} ids but {n} inputs")
    seen: set[Any] = set()
    for i in ids:
        if i in seen:
            raise InputError(f"encode_cached: duplicate case id {i!r}")
        seen.add(i)
    if batch_size < 1:
        raise InputError(f"encode_cached: batch_size must be positive, got {batch_size}")


def _prepare_folder(encoder: Encoder, cache_dir: str | os.PathLike[str]) -> tuple[Path, int | None]:
    """The encoder configuration's cache folder, with its ``meta.json`` (which holds the embedding
    width, ``dim``); and that width (``None``: the encoder cannot tell it). A meta.json that cannot be
    read, or gives another width, is rewritten with one warning naming it."""
    import json

    folder = cache_folder(encoder, cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    meta_path = folder / "meta.json"
    try:
        dim: int | None = int(encoder.dim)
    except Exception:  # an encoder that cannot tell its width before encoding (checked per batch)
        dim = None
    meta = {"encoder": encoder.name, "modality": encoder.modality, "key": encoder.cache_key(), "dim": dim}
    if meta_path.is_file():
        try:
            old = json.loads(meta_path.read_text(encoding="utf-8"))
            stored = old.get("dim") if isinstance(old, dict) else "?"
        except (*_READ_ERRORS, json.JSONDecodeError):
            stored = "?"
        if stored == dim:
            return folder, dim
        if stored is not None:  # None: written before meta.json held the width
            why = "cannot be read" if stored == "?" else f"gives width {stored}, the encoder's is {dim}"
            _damaged(meta_path, f"{why}; rewritten", None)
    atomic_write_json(meta_path, meta)
    return folder, dim


def _hash_inputs(encoder: Encoder, inputs: Any, content: ContentMode, prog: Any) -> list[str]:
    """One cache key per input, in blocks of 4096 with progress."""
    n = len(inputs)
    task = prog.add_task(f"{encoder.name}: hashing inputs", total=n)
    keys: list[str] = []
    for start in range(0, n, 4096):
        keys += item_keys(encoder, _subset(inputs, list(range(start, min(n, start + 4096)))), content)
        prog.update(task, completed=len(keys))
    return keys


def _check_batch(
    encoder: Encoder, emb: np.ndarray, chunk: list[tuple[str, int]], ids: list[Any], dim: int | None
) -> int:
    """A batch's embeddings must be (len(chunk), dim), finite, and as wide as the earlier batches."""
    positions = [p for _, p in chunk]
    if emb.ndim != 2 or emb.shape[0] != len(chunk):
        raise InputError(
            f"encoder {encoder.name!r} returned shape {emb.shape} for {len(chunk)} inputs "
            f"(cases {ids[positions[0]]!r}..{ids[positions[-1]]!r})"
        )
    bad = ~np.isfinite(emb).all(axis=1)
    if bad.any():
        raise InputError(
            f"encoder {encoder.name!r} gave non-finite values for case {ids[positions[int(np.argmax(bad))]]!r}"
        )
    if dim is not None and emb.shape[1] != dim:
        raise InputError(f"encoder {encoder.name!r} changed width from {dim} to {emb.shape[1]}")
    return int(emb.shape[1])


def _write_shard(
    folder: Path, emb: np.ndarray, chunk: list[tuple[str, int]], ids: list[Any]
) -> tuple[str, pd.DataFrame]:
    """Write one computed batch as a shard (atomically); its name and index rows."""
    positions = [p for _, p in chunk]
    shard = f"shard-{uuid.uuid4().hex[:16]}"
    with atomic_save(folder / f"{shard}.npy") as tmp, open(tmp, "wb") as fh:
        np.save(fh, emb)
    keys_df = pd.DataFrame({"item": [k for k, _ in chunk], "id": [str(ids[p]) for p in positions]})
    with atomic_save(folder / f"{shard}.keys.parquet") as tmp:
        keys_df.to_parquet(tmp, index=False)
    return shard, pd.DataFrame({"item": keys_df["item"], "shard": shard, "row": np.arange(len(chunk))})


def _open_out(path: Path, shape: tuple[int, int], name: Path) -> np.memmap:
    """A memory-mapped ``.npy`` output (at ``path``, published as ``name``) whose disk blocks are reserved
    up front: a full disk is one error naming the file now, not a SIGBUS when a page of the sparse file
    is first written."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
    if hasattr(os, "posix_fallocate"):
        try:
            with open(path, "r+b") as fh:
                os.posix_fallocate(fh.fileno(), 0, os.fstat(fh.fileno()).st_size)
        except OSError as exc:
            del out
            path.unlink(missing_ok=True)  # written just now by this function
            need = shape[0] * shape[1] * 4 / 2**20
            raise InputError(f"{name}: {exc.strerror or exc} (the embeddings need {need:.0f} MiB)") from None
    return out
