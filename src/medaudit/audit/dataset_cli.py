"""The ``--dataset`` branch of ``medaudit audit``: join predictions to a dataset, audit its findings."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import typer

from medaudit.audit.config import ColumnMap, check_meta_columns
from medaudit.audit.pipeline import AuditConfig
from medaudit.data.cxr.common import UNCERTAIN_POLICIES
from medaudit.errors import InputError

__all__ = ["run_dataset_audit"]


def run_dataset_audit(
    cfg: AuditConfig,
    dataset: str,
    predictions: Path | None,
    target: str | None,
    uncertain: str,
    out: Path,
    reports: Path | None = None,
    pred_id: str | None = None,
    meta: list[str] | None = None,
    force: bool = False,
) -> None:
    """Read the dataset, join the predictions, audit ``target`` (a finding or ``all``), print a summary."""
    from medaudit.audit.datasets import join_predictions, load_dataset, parse_dataset
    from medaudit.audit.multitarget import audit_dataset

    _check_dataset_flags(cfg, predictions, target, uncertain)
    if meta:  # the dataset's own default metadata columns never take another role
        check_meta_columns(meta, ColumnMap())  # the audit tables' columns: id, label, prob, image, report
    spec = parse_dataset(dataset)
    from medaudit.outdir import check_output

    inputs = [spec.root, predictions, reports, *cfg.input_paths()]
    check_output(out, "audit-dataset", inputs=inputs, force=force)  # before the long work
    df = load_dataset(spec, reports=reports, skip_bad=cfg.skip_bad)
    joined = join_predictions(df, predictions, id_col=pred_id, meta=meta or None)
    _echo_join(joined, predictions)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = audit_dataset(
            joined,
            target,
            cfg,
            out,
            uncertain=uncertain,
            dataset=dataset,
            inputs=inputs,
            force=force,  # type: ignore[arg-type]
        )
    for w in caught:
        typer.secho(f"warning: {w.message}", err=True, fg="yellow")
    _echo_results(res)


def _check_dataset_flags(
    cfg: AuditConfig, predictions: Path | None, target: str | None, uncertain: str
) -> None:
    """The flags ``--dataset`` needs, checked before any work (also the device, which fails now, not
    after the embedding)."""
    if predictions is None:
        raise InputError("--dataset needs --predictions PRED.csv (one probability column per finding)")
    if not target:
        raise InputError("--dataset needs --target FINDING or --target all")
    if uncertain not in UNCERTAIN_POLICIES:
        raise InputError(f"--uncertain '{uncertain}': choose one of {', '.join(UNCERTAIN_POLICIES)}")
    if cfg.device is not None:  # a device this machine lacks fails now, not after the embedding
        from medaudit.device import check_device

        cfg.device = check_device(cfg.device, flag="--device")


def _echo_join(joined: Any, predictions: Path) -> None:
    """The join summary; prediction rows that matched no image are counted, on stderr too (also with -q)."""
    typer.echo(joined.report.summary())
    if joined.report.unjoined_predictions:
        ex = joined.report.unjoined_examples
        typer.secho(
            f"warning: {predictions}: {joined.report.unjoined_predictions} prediction rows matched no image "
            f"of the dataset and are not audited" + (f" (e.g. '{ex[0]}')" if ex else ""),
            err=True,
            fg="yellow",
        )


def _echo_results(res: Any) -> None:
    """One line per finding audited or skipped, and where the index page is."""
    from medaudit.audit.multitarget import INDEX_FILE

    for f, r in res.results.items():
        c = r.counts
        typer.echo(f"  {f}: {c['cases']} cases, error rate {c['error_rate']:.3f}, {len(r.slices)} slices")
    for f, why in res.skipped.items():
        if why == "no predictions column":
            continue
        typer.echo(f"  {f}: skipped ({why})")
    typer.echo(f"{len(res.results)} finding(s) audited; index: {res.out_dir / INDEX_FILE}")
