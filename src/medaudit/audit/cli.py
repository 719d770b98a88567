"""``medaudit audit``: find the slices of a case table where a classifier fails, and explain them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from medaudit.audit.pipeline import DEFAULT_ENCODERS, AuditConfig, run_audit
from medaudit.audit.table import MODALITIES, ColumnMap
from medaudit.errors import InputError

__all__ = ["audit_command", "parse_embeddings", "parse_encoder_opts", "split_list"]


def split_list(values: list[str] | None) -> list[str]:
    """Flatten repeated and comma-separated option values: ``["a,b", "c"] -> ["a", "b", "c"]``."""
    out: list[str] = []
    for v in values or []:
        out.extend(p.strip() for p in v.split(",") if p.strip())
    return list(dict.fromkeys(out))


def parse_embeddings(values: list[str] | None) -> dict[str, Path]:
    """Parse ``modality=PATH`` options."""
    out: dict[str, Path] = {}
    for v in values or []:
        if "=" not in v:
            raise InputError(
                f"--embeddings '{v}': expected MODALITY=PATH (modality one of {', '.join(MODALITIES)})"
            )
        mod, path = v.split("=", 1)
        mod = mod.strip().lower()
        if mod not in MODALITIES:
            raise InputError(
                f"--embeddings '{v}': unknown modality '{mod}' (choose from {', '.join(MODALITIES)})"
            )
        if mod in out:
            raise InputError(f"--embeddings: modality '{mod}' given twice")
        out[mod] = Path(path.strip())
    return out


def parse_encoder_opts(values: list[str] | None) -> dict[str, dict[str, Any]]:
    """Parse ``MODALITY.KEY=VALUE`` options into per-modality encoder keyword arguments.

    VALUE is read as JSON when it parses (``64``, ``true``, ``null``, ``[1, 2]``), else kept as a string.
    """
    out: dict[str, dict[str, Any]] = {}
    for v in values or []:
        key, sep, raw = v.partition("=")
        mod, dot, name = key.partition(".")
        mod = mod.strip().lower()
        if not sep or not dot or not name.strip():
            raise InputError(f"--encoder-opt '{v}': expected MODALITY.KEY=VALUE, e.g. image.size=224")
        if mod not in MODALITIES:
            raise InputError(
                f"--encoder-opt '{v}': unknown modality '{mod}' (choose from {', '.join(MODALITIES)})"
            )
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(mod, {})[name.strip()] = value
    return out


def config_family(cfg: AuditConfig) -> str:
    return "rules" if cfg.slicer == "rules" else "mixture"


def audit_command(
    table: Path = typer.Option(..., "--table", help="Case table: .csv, .tsv, .parquet or .jsonl."),
    out: Path = typer.Option(..., "--out", help="Output folder (replaced atomically)."),
    id_col: str = typer.Option("id", "--id", help="Case id column."),
    label_col: str = typer.Option("label", "--label", help="Binary ground-truth label column (0/1)."),
    prob_col: str = typer.Option("prob", "--prob", help="Predicted probability of class 1."),
    pred_col: str | None = typer.Option(
        None, "--pred", help="Hard 0/1 prediction column (instead of --prob)."
    ),
    image_col: str = typer.Option("image", "--image", help="Image path column (DICOM, PNG, JPEG)."),
    report_col: str = typer.Option("report", "--report", help="Report text column."),
    report_path_col: str | None = typer.Option(
        None, "--report-path", help="Column of report text file paths (instead of --report)."
    ),
    meta: list[str] | None = typer.Option(
        None, "--meta", help="Metadata column(s); repeat or comma-separate."
    ),
    modalities: str | None = typer.Option(
        None,
        "--modalities",
        help="Any subset of image,report,metadata (default: image,report[,metadata if --meta]).",
    ),
    image_encoder: str = typer.Option(DEFAULT_ENCODERS["image"], "--image-encoder"),
    report_encoder: str = typer.Option(DEFAULT_ENCODERS["report"], "--report-encoder"),
    meta_encoder: str = typer.Option(DEFAULT_ENCODERS["metadata"], "--meta-encoder"),
    encoder_opt: list[str] | None = typer.Option(
        None, "--encoder-opt", help="Encoder argument MODALITY.KEY=VALUE (e.g. image.size=224); repeatable."
    ),
    fusion: str = typer.Option("concat", "--fusion", help="concat | balanced"),
    fusion_dim: int = typer.Option(64, "--fusion-dim", help="Per-modality dimension for balanced fusion."),
    slicer: str = typer.Option(
        "both",
        "--slicer",
        help="mixture (embedding slices) | rules (readable rule slices) | both (one ranked list) | kmeans.",
    ),
    concepts: Path | None = typer.Option(
        None, "--concepts", help="Concept lexicon (YAML, docs/concepts.md; default: built-in)."
    ),
    n_slices: int = typer.Option(5, "--n-slices", min=1),
    n_components: int = typer.Option(20, "--n-components", min=1, help="Mixture components."),
    y_weight: float = typer.Option(10.0, "--y-weight", help="Label log-likelihood weight."),
    y_hat_weight: float = typer.Option(10.0, "--y-hat-weight", help="Prediction log-likelihood weight."),
    pca: int = typer.Option(128, "--pca", min=0, help="PCA dimensions before the mixture (0: none)."),
    rank_by: str = typer.Option(
        "excess_errors",
        "--rank-by",
        help="Slice ranking: excess_errors | error_lcb | error (Domino's raw error, the study's rule).",
    ),
    min_slice_size: float = typer.Option(
        0.0, "--min-slice-size", min=0.0, help="Rank mixture components with fewer cases than this last."
    ),
    embeddings: list[str] | None = typer.Option(
        None,
        "--embeddings",
        help="Precomputed embeddings MODALITY=PATH (.npy + .ids.txt, or .parquet); repeatable.",
    ),
    cache: Path | None = typer.Option(
        None, "--cache", help="Embedding cache folder (default ~/.cache/medaudit)."
    ),
    skip_bad: bool = typer.Option(
        False, "--skip-bad", help="Drop bad rows (counted in the outputs) instead of failing."
    ),
    seed: int = typer.Option(0, "--seed"),
    device: str | None = typer.Option(
        None, "--device", help="cpu, cuda, cuda:1 ... (default: CUDA when present)."
    ),
    no_report: bool = typer.Option(False, "--no-report", help="Skip report.html."),
) -> None:
    """Audit a classifier: discover and explain the slices of cases where it fails.

    Writes OUT/slices.json, OUT/membership.parquet and OUT/report.html (schema in docs/audit.md).
    """
    if fusion not in ("concat", "balanced"):
        raise InputError(f"--fusion '{fusion}': choose concat or balanced")
    mods = tuple(split_list([modalities])) if modalities else None
    cfg = AuditConfig(
        columns=ColumnMap(
            id=id_col,
            label=label_col,
            prob=prob_col,
            pred=pred_col,
            image=image_col,
            report=report_col,
            report_path=report_path_col,
        ),
        meta=split_list(meta),
        modalities=mods,
        encoders={"image": image_encoder, "report": report_encoder, "metadata": meta_encoder},
        encoder_kwargs=parse_encoder_opts(encoder_opt),
        fusion=fusion,
        fusion_dim=fusion_dim,
        slicer=slicer,
        concepts=concepts,
        n_slices=n_slices,
        n_components=n_components,
        y_weight=y_weight,
        y_hat_weight=y_hat_weight,
        pca=pca or None,
        rank_by=rank_by,
        min_slice_size=min_slice_size,
        cache_dir=cache,
        skip_bad=skip_bad,
        seed=seed,
        device=device,
        embeddings=parse_embeddings(embeddings),
        write_report=not no_report,
    )
    result = run_audit(table, cfg, out)
    c = result.counts
    typer.echo(
        f"audited {c['cases']} cases ({c['skipped_rows']} rows skipped), error rate {c['error_rate']:.3f}; "
        f"{len(result.slices)} slices written to {result.out_dir}"
    )
    for w in result.payload.get("warnings", []):
        typer.echo(f"warning: {w}", err=True)
    for s in result.slices:
        er = "-" if s["error_rate"] is None else f"{s['error_rate']:.3f}"
        top = s["explanation"]["ngrams"][0]["ngram"] if s["explanation"]["ngrams"] else ""
        head = s["explanation"].get("headline", "")
        typer.echo(
            f"  slice {s['rank']} ({s.get('family', config_family(cfg))}): {s['size']} members, error rate {er}"
            + (f"; {head}" if head else (f", top n-gram '{top}'" if top else ""))
        )
