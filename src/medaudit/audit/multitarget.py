"""Audit several findings of one dataset with shared embeddings, and rank their worst slices together.

:func:`audit_dataset` embeds every joined image / report / metadata row **once** (through the resumable
embedding cache), then runs :func:`medaudit.audit.pipeline.run_audit` per finding on that finding's rows,
reusing those embeddings. Output layout (the whole folder is replaced atomically)::

    OUT/index.html          worst slices across all findings, ranked by the lower Wilson 95% bound of
                            their error rate (comparable across findings of different prevalence)
    OUT/dataset.json        dataset, join counts, uncertain policy, per-finding cases / drops / skips
    OUT/<finding>/          slices.json, membership.parquet, report.html of that finding

With ``targets="all"`` a finding that cannot be audited (no labels, no predictions, too few cases) is
skipped with a warning and recorded in ``dataset.json``; a single named finding raises instead.
An interrupted run resumes from the embedding cache; its outputs equal an uninterrupted run's. The
shared embeddings are memory-mapped from a scratch folder ``.shared-embeddings-*`` in the cache, which
its run holds under an ``flock`` and removes at the end; one that a killed run (SIGKILL) left behind is
removed by the next dataset audit on that cache, never one a live run holds.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medaudit import __version__
from medaudit.audit.datasets import JoinedDataset, target_frame
from medaudit.audit.pipeline import AuditConfig, AuditResult, run_audit
from medaudit.audit.table import CaseTable, ColumnMap, load_case_table
from medaudit.data.cxr.common import UncertainPolicy, resolve_target, snake
from medaudit.errors import InputError
from medaudit.io import atomic_output_dir, atomic_write_json, atomic_write_text
from medaudit.progress import make_progress

__all__ = ["DATASET_FILE", "INDEX_FILE", "DatasetAuditResult", "audit_dataset", "rank_slices"]

INDEX_FILE = "index.html"
DATASET_FILE = "dataset.json"


@dataclass
class DatasetAuditResult:
    """Outcome of :func:`audit_dataset`: one :class:`AuditResult` per audited finding."""

    out_dir: Path
    results: dict[str, AuditResult]
    skipped: dict[str, str]
    ranking: pd.DataFrame
    summary: dict[str, Any]


def _targets(joined: JoinedDataset, targets: str | list[str]) -> list[str]:
    if isinstance(targets, str) and targets.strip().lower() == "all":
        return [c for c in joined.label_columns if c in joined.predicted]
    names = [targets] if isinstance(targets, str) else list(targets)
    found = list(dict.fromkeys(resolve_target(t, joined.label_columns) for t in names))
    for f in found:  # before any image is embedded
        if f not in joined.predicted:
            raise InputError(
                f"{joined.report.predictions_file}: no probability column for finding '{f}' (--target); "
                f"its findings: {', '.join(joined.predicted)}"
            )
    return found


def check_dataset_meta(meta: Sequence[str], findings: Sequence[str]) -> None:
    """A metadata column may be neither a prediction (``prob__<finding>``, added by the join) nor the
    label of a finding being audited: read as metadata, either leaks the answer into the slices
    (``prob__edema >= 0.64 ∧ label = 0``)."""
    from medaudit.audit.datasets import PROB_PREFIX

    for m in meta:
        if m.startswith(PROB_PREFIX):
            raise InputError(f"--meta '{m}': the predictions of a finding cannot also be metadata")
        if m in findings:
            raise InputError(
                f"--meta '{m}': the label of finding '{m}', which is audited (--target), cannot also be "
                "metadata"
            )


def _check_enough_joined(joined: JoinedDataset, config: AuditConfig) -> None:
    """Too few joined cases to audit is named with the predictions file, before any embedding (the
    shared report encoder failed first: 'tfidf-svd: need at least 2 reports to fit')."""
    need, n = config.min_cases(), len(joined.df)
    if n < need:
        rep = joined.report
        raise InputError(
            f"{rep.predictions_file}: {n} of its {rep.n_predictions} predictions joined the dataset's "
            f"cases (by {rep.id_column}); at least {need} are needed to audit"
        )


def _modalities(joined: JoinedDataset, config: AuditConfig) -> tuple[str, ...]:
    if config.modalities is not None:
        return config.resolved_modalities()
    df = joined.df
    mods = []
    if df["image"].notna().all():
        mods.append("image")
    if df["report"].fillna("").astype(str).str.strip().astype(bool).any():
        mods.append("report")
    if joined.meta:
        mods.append("metadata")
    if not mods:
        raise InputError("the dataset has neither images, reports nor metadata to embed")
    return tuple(mods)


def without_empty_reports(joined: JoinedDataset, modalities: Sequence[str]) -> JoinedDataset:
    """The joined rows whose dataset report is not empty, when the report modality is audited.

    Some images have no report text in the dataset itself (about 40 in Open-i): they cannot be embedded
    as reports, and they are not a fault of the user's predictions. They are left out with one warning
    (count and first ids) and counted in ``dataset.json`` (``empty_reports``), like prediction rows that
    match no image; ``--modalities image,metadata`` keeps them.
    """
    if "report" not in modalities:
        return joined
    empty = ~joined.df["report"].fillna("").astype(str).str.strip().astype(bool)
    if not empty.any():
        return joined
    ids = joined.df.loc[empty, "id"].astype(str).tolist()
    if empty.all():
        raise InputError(
            f"every one of the {len(ids)} joined images has an empty report in the dataset; "
            "audit it with --modalities image,metadata"
        )
    warnings.warn(
        f"{len(ids)} of {len(joined.df)} joined images have an empty report in the dataset "
        f"(e.g. '{ids[0]}'); they are left out of the audit (--modalities without report keeps them)",
        stacklevel=3,
    )
    df = joined.df.loc[~empty].reset_index(drop=True)
    return replace(joined, df=df, empty_reports=len(ids))


def shared_embeddings(
    joined: JoinedDataset, config: AuditConfig, modalities: tuple[str, ...], memmap_dir: Path | None = None
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Embed every joined row once per modality; computed embeddings are memory-mapped from
    ``memmap_dir/<modality>.npy`` when it is given. Returns the embeddings and the ids of their rows
    (``joined.df`` order).

    An image that cannot be decoded raises, naming the row of the dataset's own file that lists it (its
    id alone where the reader keeps no row), the case id and the image; with ``config.skip_bad`` it is
    skipped instead (one warning with the count and the first ones): its row is left out of every
    modality, so its id is not among those returned.
    """
    from medaudit.audit.embedding import encode_table as _encode_table

    df = joined.df
    n = len(df)
    canon = pd.DataFrame(
        {
            "id": df["id"].astype(str),
            "label": np.zeros(n, dtype=int),
            "prob": np.zeros(n),
            "pred": np.zeros(n, dtype=int),
            "image": df["image"],
            "report": df["report"].fillna("").astype(str),
        }
    )
    origins = [joined.origins.get(i, "") for i in canon["id"]]
    table = CaseTable(df=canon, meta=df[joined.meta].reset_index(drop=True), origins=origins)
    with make_progress() as progress:
        embs, table, _ = _encode_table(
            table, config, modalities, progress, memmap_dir=memmap_dir, audit_warnings=[]
        )
    return embs, table.ids


def _audit_one(
    joined: JoinedDataset,
    finding: str,
    config: AuditConfig,
    shared: tuple[dict[str, np.ndarray], tuple[pd.DataFrame | None, str | None]],
    row_of: dict[str, int],
    uncertain: UncertainPolicy,
    out: Path,
) -> tuple[AuditResult, dict[str, Any]]:
    embs, (concepts, concept_msg) = shared
    frame, drops = target_frame(joined, finding, uncertain)
    mods = config.resolved_modalities()
    min_cases = config.min_cases()
    table = load_case_table(
        frame,
        ColumnMap(),
        config.meta,
        skip_bad=config.skip_bad,
        require=tuple(m for m in mods if m != "metadata"),
        threshold=config.threshold,
        min_cases=min_cases,
    )
    drop = [k for k, i in enumerate(table.ids) if i not in row_of]
    if drop:  # --skip-bad left out cases whose image cannot be decoded (warned once, when embedding)
        table = table.without(drop, "unreadable image")
        if len(table) < min_cases:
            raise InputError(
                f"finding '{finding}': {len(table)} valid cases after skipping {table.n_skipped} bad rows; "
                f"at least {min_cases} are needed"
            )
    pos = np.fromiter((row_of[i] for i in table.ids), dtype=np.int64, count=len(table))
    given = (None if concepts is None else concepts.iloc[pos].reset_index(drop=True), concept_msg)
    result = run_audit(table, config, out, precomputed={m: e[pos] for m, e in embs.items()}, concepts=given)
    info = {
        "cases": len(table),
        "positives": int(table.df["label"].sum()),
        "error_rate": result.counts["error_rate"],
        "dropped": drops,
        "skipped_rows": table.n_skipped,
    }
    return result, info


def rank_slices(results: dict[str, AuditResult], top: int | None = None) -> pd.DataFrame:
    """All non-empty slices of all findings, worst first (lower Wilson bound of the error rate)."""
    rows = []
    for finding, res in results.items():
        overall = res.counts["error_rate"] or 0.0
        for s in res.slices:
            if not s["size"]:
                continue
            ng = s["explanation"]["ngrams"]
            rows.append(
                {
                    "finding": finding,
                    "slice": s["name"],
                    "rank_in_finding": s["rank"],
                    "size": s["size"],
                    "error_rate": s["error_rate"],
                    "error_lo": s["error_ci"][0],
                    "error_hi": s["error_ci"][1],
                    "finding_error_rate": overall,
                    "excess_errors": s["n_errors"] - s["size"] * overall,
                    "top_ngram": ng[0]["ngram"] if ng else "",
                }
            )
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df = df.sort_values(
        ["error_lo", "size", "finding", "rank_in_finding"], ascending=[False, False, True, True]
    )
    df = df.reset_index(drop=True)
    return df.head(top) if top else df


def _write_index(stage: Path, summary: dict[str, Any], ranking: pd.DataFrame, links: dict[str, str]) -> None:
    from medaudit.report.html import render

    rows = ranking.to_dict(orient="records")
    for r in rows:
        r["link"] = links.get(r["finding"])
    html = render("dataset_index.html", summary=summary, rows=rows, version=__version__)
    atomic_write_text(stage / INDEX_FILE, html)


def audit_dataset(
    joined: JoinedDataset,
    targets: str | list[str],
    config: AuditConfig | None = None,
    out_dir: str | os.PathLike[str] = "audit_out",
    uncertain: UncertainPolicy = "zeros",
    dataset: str = "",
    *,
    inputs: Sequence[str | os.PathLike[str] | None] = (),
    force: bool = False,
) -> DatasetAuditResult:
    """Audit ``targets`` (finding names, or ``"all"``) of a joined dataset; see the module docstring.

    ``out_dir`` follows :mod:`medaudit.outdir` (``inputs``: the dataset root and predictions table; the
    configuration's cache, lexicon and embeddings files are added).
    """
    from medaudit.outdir import check_output

    inputs = [*inputs, *(config or AuditConfig()).input_paths()]
    check_output(out_dir, "audit-dataset", inputs=inputs, force=force)
    config = (config or AuditConfig()).model_copy(update={"meta": list(joined.meta)})
    config = config.model_copy(update={"modalities": _modalities(joined, config)})
    joined = without_empty_reports(joined, config.resolved_modalities())
    findings = _targets(joined, targets)
    if not findings:
        raise InputError("no finding has both labels and a predictions column")
    check_dataset_meta(joined.meta, findings)
    _check_enough_joined(joined, config)
    many = isinstance(targets, str) and targets.strip().lower() == "all"
    bad: dict[str, str] = {}  # findings without labels or predictions: found before any image is embedded
    for f in findings:
        try:
            target_frame(joined, f, uncertain)
        except InputError as exc:
            if not many:
                raise
            bad[f] = str(exc)
    if len(bad) == len(findings):
        raise InputError("no finding could be audited: " + "; ".join(f"{k}: {v}" for k, v in bad.items()))
    from medaudit.device import seed_everything

    seed_everything(config.seed)  # encoders with random weights (tests) build the same model every run
    cache = config.resolved_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with _scratch(cache) as tmp:
        embs, ids = shared_embeddings(joined, config, config.resolved_modalities(), tmp)
        concepts = shared_concepts(joined, ids, config)
        return _audit_all(
            joined, findings, many, config, (embs, ids, concepts), uncertain, out_dir, dataset, inputs, force
        )


_SCRATCH = ".shared-embeddings-"


@contextlib.contextmanager
def _scratch(cache: Path) -> Iterator[Path]:
    """A scratch folder ``cache/.shared-embeddings-*`` for the memory-mapped shared embeddings, locked
    (``flock``) while this run uses it and removed at the end; scratch folders no run holds (left by a
    killed run) are removed first. It is made under another name and renamed once locked, so that a
    concurrent run's clean-up never sees it unlocked."""
    for old in cache.glob(f"{_SCRATCH}*"):
        with contextlib.suppress(OSError), _locked(old, wait=False):
            shutil.rmtree(old)
    new = Path(tempfile.mkdtemp(dir=cache, prefix=f".new{_SCRATCH}"))
    try:
        with _locked(new, wait=True):
            tmp = cache / new.name.removeprefix(".new")
            os.rename(new, tmp)
            new = tmp
            yield tmp
    finally:
        shutil.rmtree(new, ignore_errors=True)


@contextlib.contextmanager
def _locked(folder: Path, wait: bool) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``folder`` (not a link); without ``wait``, ``OSError`` if another
    process holds it."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        os.close(fd)


def shared_concepts(
    joined: JoinedDataset, ids: list[str], config: AuditConfig
) -> tuple[pd.DataFrame | None, str | None]:
    """The concept codes of the embedded rows' reports (``ids`` order), extracted once for every
    finding (:func:`medaudit.audit.rule_audit.report_concepts`; ``(None, warning)`` without usable text)."""
    from medaudit.audit.concepts import load_lexicon
    from medaudit.audit.rule_audit import report_concepts

    reports = joined.df.set_index(joined.df["id"].astype(str))["report"]
    texts = reports.reindex(ids).fillna("").astype(str).tolist()
    lexicon = load_lexicon(config.concepts) if config.concepts else None
    return report_concepts(
        texts, lexicon, qualified=config.concept_qualifiers, min_reports=config.rule_min_support
    )


def _audit_all(
    joined: JoinedDataset,
    findings: list[str],
    many: bool,
    config: AuditConfig,
    embedded: tuple[dict[str, np.ndarray], list[str], tuple[pd.DataFrame | None, str | None]],
    uncertain: UncertainPolicy,
    out_dir: str | os.PathLike[str],
    dataset: str,
    inputs: Sequence[str | os.PathLike[str] | None] = (),
    force: bool = False,
) -> DatasetAuditResult:
    embs, ids, concepts = embedded  # ids of the embedded rows (without images skipped as unreadable)
    row_of = {str(i): k for k, i in enumerate(ids)}
    out = Path(out_dir).absolute()
    with atomic_output_dir(out, kind="audit-dataset", inputs=inputs, force=force) as stage:
        results, per, skipped = _audit_findings(
            joined, findings, many, config, (embs, concepts), row_of, uncertain, out, stage
        )
        for f in joined.label_columns:
            if many and f not in joined.predicted:
                skipped.setdefault(f, "no predictions column")
        ranking = rank_slices(results)
        summary = _summary(joined, config, uncertain, dataset, len(ids), per, skipped)
        links = {f: f"{snake(f)}/report.html" for f in results} if config.write_report else {}
        atomic_write_json(stage / DATASET_FILE, summary)
        _write_index(stage, summary, ranking, links)
    return DatasetAuditResult(out, results, skipped, ranking, summary)


def _audit_findings(
    joined: JoinedDataset,
    findings: list[str],
    many: bool,
    config: AuditConfig,
    shared: tuple[dict[str, np.ndarray], tuple[pd.DataFrame | None, str | None]],
    row_of: dict[str, int],
    uncertain: UncertainPolicy,
    out: Path,
    stage: Path,
) -> tuple[dict[str, AuditResult], dict[str, Any], dict[str, str]]:
    """Audit each finding into ``stage``: the results (paths under ``out``), their summaries, and the
    findings skipped (``many``: one that cannot be audited is skipped with a warning; none audited fails)."""
    results: dict[str, AuditResult] = {}
    per: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for f in findings:
        try:
            res, info = _audit_one(joined, f, config, shared, row_of, uncertain, stage / snake(f))
        except InputError as exc:
            if not many:
                raise
            skipped[f] = str(exc)
            warnings.warn(f"skipping finding '{f}': {exc}", stacklevel=3)
            continue
        res.out_dir = out / snake(f)
        res.paths = {k: out / snake(f) / p.name for k, p in res.paths.items()}
        results[f], per[f] = res, info
    if not results:
        raise InputError("no finding could be audited: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    return results, per, skipped


def _summary(
    joined: JoinedDataset,
    config: AuditConfig,
    uncertain: UncertainPolicy,
    dataset: str,
    n_embedded: int,
    per: dict[str, Any],
    skipped: dict[str, str],
) -> dict[str, Any]:
    """The content of the dataset-level summary file (``DATASET_FILE``)."""
    return {
        "medaudit_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "dataset": dataset or joined.kind,
        "uncertain_policy": uncertain,
        "blank_labels": "negative (not mentioned)",
        "modalities": list(config.resolved_modalities()),
        "embedded_rows": n_embedded,
        "unreadable_images": len(joined.df) - n_embedded,
        "empty_reports": joined.empty_reports,
        "join": joined.report.to_dict(),
        "findings": per,
        "skipped": skipped,
        "ranking_rule": "lower Wilson 95% bound of the slice error rate, then size",
    }
