"""The case table's embeddings, one array per modality (images first): in-memory arrays, precomputed
files (``--embeddings``), or the configured encoder through the on-disk embedding cache (or Ray). Images
that cannot be decoded are bad rows of the audit's table (``--skip-bad`` drops them, one warning)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from medaudit.audit import rule_audit
from medaudit.audit.config import DEFAULT_ENCODERS, AuditConfig
from medaudit.audit.table import CaseTable, load_embeddings
from medaudit.errors import InputError
from medaudit.faults import fault_point

__all__ = ["check_encoders", "encode_table"]


def _unreadable_images(table: CaseTable, config: AuditConfig, skipped: dict[int, str]) -> Any:
    """The ``on_unreadable`` callback of :func:`encode_cached`: one line naming the table, the image
    column and the row, or for a dataset the row of the dataset's own file that lists it (``--skip-bad``:
    the cases are recorded in ``skipped`` instead)."""

    def on_unreadable(positions: list[int], exc: Exception) -> None:
        if not config.skip_bad:
            raise InputError(f"{table.place(positions[0], config.columns.image)}: {exc}")
        for i in positions:
            skipped[i] = str(exc)

    return on_unreadable


def encode_table(
    table: CaseTable,
    config: AuditConfig,
    modalities: tuple[str, ...],
    progress: Any,
    precomputed: dict[str, np.ndarray] | None = None,
    memmap_dir: Path | None = None,
    audit_warnings: list[str] | None = None,
) -> tuple[dict[str, np.ndarray], CaseTable, np.ndarray | None]:
    """Embeddings per modality, images first: in-memory arrays (aligned with the table), precomputed
    files, else the encoder through the on-disk cache (into ``memmap_dir/<modality>.npy``, memory-mapped,
    when given). With ``audit_warnings`` (the audit's own table), images that cannot be decoded are bad
    rows: ``--skip-bad`` drops them (one warning) before the other modalities are embedded. Returns the
    embeddings, the table, and the positions kept (``None``: all)."""
    out: dict[str, np.ndarray] = {}
    kept: np.ndarray | None = None
    for m in sorted(modalities, key=lambda m: m != "image"):
        task = progress.add_task(f"embed {m}", total=1)
        if precomputed is not None and m in precomputed:
            out[m] = np.asarray(precomputed[m], dtype=np.float32)
        elif m in config.embeddings:
            out[m] = load_embeddings(
                config.embeddings[m], table.ids, ignore_ids=table.skipped_ids, columns=config.columns
            )
        else:
            emb = _encode_modality(m, table, config, progress, task, memmap_dir, audit_warnings)
            if isinstance(emb, tuple):  # --skip-bad dropped images that cannot be decoded
                emb, table, kept = emb
            out[m] = emb if isinstance(emb, np.memmap) else np.asarray(emb, dtype=np.float32)
        if out[m].shape[0] != len(table.ids):
            raise InputError(f"{m} embeddings have {out[m].shape[0]} rows for {len(table.ids)} cases")
        fault_point("audit:embed")
        progress.update(task, total=len(table.ids), completed=len(table.ids))
    return out, table, kept


def _encode_modality(
    m: str,
    table: CaseTable,
    config: AuditConfig,
    progress: Any,
    task: Any,
    memmap_dir: Path | None,
    audit_warnings: list[str] | None,
) -> Any:
    """One modality through its encoder and the cache (see :func:`_embed_cached`)."""
    encoder = _build_encoder(m, config)
    if m == "image":
        inputs: Any = table.df["image"].tolist()
    elif m == "report":
        inputs = [r if isinstance(r, str) else "" for r in table.df["report"].tolist()]
    else:
        inputs = table.meta
    progress.update(task, total=len(table.ids))

    def _on_batch(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)

    from medaudit.audit.encoders.report import ReportVocabularyError

    try:
        with _cache_errors(config.resolved_cache_dir()):
            return _embed_cached(
                encoder, m, table.ids, inputs, table, config, memmap_dir, audit_warnings, _on_batch
            )
    except ReportVocabularyError as exc:  # about the whole column: name the table and the column
        col = config.columns.report_path or config.columns.report
        raise InputError(f"{table.source or 'table'}: column '{col}': {exc}") from exc


def _build_encoder(m: str, config: AuditConfig) -> Any:
    """The configured encoder of modality ``m``, on ``config.device`` when it takes one."""
    from medaudit.audit.encoders import encoder_accepts, get_encoder

    name = config.encoders.get(m, DEFAULT_ENCODERS[m])
    kw = dict(config.encoder_kwargs.get(m, {}))
    if config.device is not None and "device" not in kw and encoder_accepts(m, name, "device"):
        kw["device"] = config.device  # encoders without a torch model (tf-idf, tabular) take none
    try:
        return get_encoder(m, name, **kw)  # an unknown name is an InputError
    except TypeError as exc:  # a keyword the encoder does not take (--encoder-opt)
        raise InputError(f"{m} encoder '{name}': {exc}") from exc


@contextlib.contextmanager
def _cache_errors(cache: Path) -> Iterator[None]:
    """A file of the embedding cache that cannot be written (permission denied, disk full) is named as
    being in the ``--cache-dir`` folder."""
    try:
        yield
    except OSError as exc:
        name = exc.filename
        where = Path(str(name)) if name is not None else None
        if where is None or not (_is_under(where, cache) or _is_under(cache, where)):  # or a parent
            raise
        from medaudit.io import cache_flag

        raise InputError(f"{cache_flag(cache)} {cache}: {name}: {exc.strerror or exc}") from exc


def _is_under(path: Path, folder: Path) -> bool:
    try:
        path.absolute().relative_to(folder.absolute())
    except ValueError:
        return False
    return True


def _embed_cached(
    encoder: Any,
    m: str,
    ids: list[str],
    inputs: Any,
    table: CaseTable,
    config: AuditConfig,
    memmap_dir: Path | None,
    audit_warnings: list[str] | None,
    on_batch: Any,
) -> Any:
    """One modality through the cache (or Ray); ``(emb, table, kept)`` when ``--skip-bad`` dropped
    cases whose image cannot be decoded."""
    skipped: dict[int, str] = {}
    on_unreadable = (
        _unreadable_images(table, config, skipped) if audit_warnings is not None and m == "image" else None
    )
    if config.ray_address and m == "image":
        from medaudit.audit.encoders.distributed import encode_with_ray

        emb = encode_with_ray(
            encoder,
            ids,
            inputs,
            config.resolved_cache_dir(),
            config.ray_address,
            content=config.cache_content,
            on_unreadable=on_unreadable,
        )
    else:
        from medaudit.audit.encoders import encode_cached

        emb = encode_cached(
            encoder,
            ids,
            inputs,
            config.resolved_cache_dir(),
            progress=False,
            on_batch=on_batch,
            content=config.cache_content,  # type: ignore[arg-type]
            out=memmap_dir / f"{m}.npy" if memmap_dir is not None else None,
            on_unreadable=on_unreadable,
        )
    if skipped:
        return _skip_unreadable(np.asarray(emb), table, skipped, audit_warnings)
    return emb


def _skip_unreadable(
    emb: np.ndarray, table: CaseTable, skipped: dict[int, str], audit_warnings: list[str] | None
) -> tuple[np.ndarray, CaseTable, np.ndarray]:
    """Drop the cases whose image cannot be decoded (``--skip-bad``) with one warning naming the first."""
    drop = sorted(skipped)
    dataset = table.source is None and bool(table.origins)  # places name the dataset's own files
    first = "; ".join(f"{table.place(i) if dataset else table.row(i)}: {skipped[i]}" for i in drop[:3])
    more = f"; and {len(drop) - 3} more" if len(drop) > 3 else ""
    where = str(table.source) if table.source is not None else "table"
    head = f"{len(drop)} image(s) of the dataset" if dataset else f"{where}: {len(drop)} image(s)"
    msg = f"{head} cannot be decoded; skipped (--skip-bad): {first}{more}"
    if audit_warnings is not None:
        audit_warnings.append(msg)
    rule_audit.warn(msg)
    keep = np.setdiff1d(np.arange(len(table)), drop)
    return emb[keep], table.without(drop, "unreadable image"), keep


def check_encoders(
    config: AuditConfig, modalities: tuple[str, ...], precomputed: dict[str, np.ndarray] | None = None
) -> None:
    """Every encoder the run will build exists and takes the options given (``--encoder-opt``), checked
    before any table is read or anything is embedded (option values are checked by :class:`AuditConfig`)."""
    todo = [m for m in modalities if m not in config.embeddings and m not in (precomputed or {})]
    if not todo:
        return
    from medaudit.audit.encoders import encoder_accepts, list_encoders

    for m in todo:
        name = config.encoders.get(m, DEFAULT_ENCODERS[m])
        known = list_encoders(m)[m]
        if name not in known:
            raise InputError(f"unknown {m} encoder '{name}' (registered: {', '.join(known)})")
        for key in config.encoder_kwargs.get(m, {}):
            if not encoder_accepts(m, name, key):
                raise InputError(f"--encoder-opt {m}.{key}: the {m} encoder '{name}' has no option '{key}'")
