"""``medaudit audit``: find the slices of a case table where a classifier fails, and explain them.

The command only maps its flags onto an :class:`~medaudit.audit.config.AuditConfig` (defaults come
from the model; ``--config FILE`` reads the same model, and flags given on the command line win) and
calls :func:`medaudit.audit.pipeline.run_audit`. Heavy imports wait until the input has been checked.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from medaudit.audit.config import DEFAULT_ENCODERS, MODALITIES, AuditConfig, Fusion, RankRule, SlicerName
from medaudit.errors import InputError
from medaudit.io import missing_reason
from medaudit.rungrid import check_ray_address

__all__ = ["audit_command", "parse_embeddings", "parse_encoder_opts", "split_list"]

_D = AuditConfig()
_C = _D.columns


def split_list(values: list[str] | None) -> list[str]:
    """Flatten repeated and comma-separated option values: ``["a,b", "c"] -> ["a", "b", "c"]``."""
    out: list[str] = []
    for v in values or []:
        out.extend(p.strip() for p in v.split(",") if p.strip())
    return list(dict.fromkeys(out))


def _split_meta(values: list[str] | None) -> list[str]:
    """``--meta`` values as given, repeats kept (a column named twice is refused, not merged)."""
    return [p.strip() for v in values or [] for p in v.split(",") if p.strip()]


def _modality(option: str, value: str, mod: str) -> str:
    mod = mod.strip().lower()
    if mod not in MODALITIES:
        raise InputError(
            f"{option} '{value}': unknown modality '{mod}' (choose from {', '.join(MODALITIES)})"
        )
    return mod


def parse_embeddings(values: list[str] | None) -> dict[str, Path]:
    """Parse ``modality=PATH`` options."""
    out: dict[str, Path] = {}
    for v in values or []:
        if "=" not in v:
            raise InputError(
                f"--embeddings '{v}': expected MODALITY=PATH (modality one of {', '.join(MODALITIES)})"
            )
        mod, path = v.split("=", 1)
        mod = _modality("--embeddings", v, mod)
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
        if not sep or not dot or not name.strip():
            raise InputError(f"--encoder-opt '{v}': expected MODALITY.KEY=VALUE, e.g. image.size=224")
        mod = _modality("--encoder-opt", v, mod)
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(mod, {})[name.strip()] = value
    return out


def _explicit(ctx: typer.Context, values: dict[str, Any]) -> dict[str, Any]:
    """The options the user gave (not defaults), so that they override a ``--config`` file."""
    return {k: v for k, v in values.items() if getattr(ctx.get_parameter_source(k), "name", "") != "DEFAULT"}


def _config_fields(p: dict[str, Any]) -> dict[str, Any]:
    """Map CLI parameter values onto AuditConfig fields (only those present in ``p``)."""
    cols = {"id_col": "id", "label_col": "label", "prob_col": "prob", "pred_col": "pred"}
    cols |= {"image_col": "image", "report_col": "report", "report_path_col": "report_path"}
    enc = {"image_encoder": "image", "report_encoder": "report", "meta_encoder": "metadata"}
    out: dict[str, Any] = {}
    for k, v in p.items():
        if k in cols:
            out.setdefault("columns", {})[cols[k]] = v
        elif k in enc:
            out.setdefault("encoders", {})[enc[k]] = v  # merged over the config's and the defaults
        elif k == "meta":
            out["meta"] = _split_meta(v)
        elif k == "modalities":
            out["modalities"] = tuple(split_list([v])) if v else None
        elif k == "encoder_opt":
            out["encoder_kwargs"] = parse_encoder_opts(v)
        elif k == "embeddings":
            out["embeddings"] = parse_embeddings(v)
        elif k == "pca":
            out["pca"] = v or None
        elif k == "no_report":
            out["write_report"] = not v
        elif k not in ("table", "out", "config"):
            out[k] = v
    return out


#: AuditConfig fields whose flag is not ``--`` + the field name with dashes
_FLAGS = {
    "encoders.image": "--image-encoder",
    "encoders.report": "--report-encoder",
    "encoders.metadata": "--meta-encoder",
    "encoder_kwargs": "--encoder-opt",
    "write_report": "--no-report",
    "columns.report_path": "--report-path-col",
}


def _flag(loc: tuple[Any, ...]) -> str:
    """The command-line flag of a config field (``('y_weight',)`` -> ``--y-weight``)."""
    top = str(loc[0]) if loc else ""
    two = ".".join(map(str, loc[:2]))
    if two in _FLAGS:
        return _FLAGS[two]
    if top == "columns" and len(loc) > 1:
        return f"--{loc[1]}-col"
    return _FLAGS.get(top, "--" + top.replace("_", "-"))


def _option_error(exc: Any) -> InputError:
    """One line naming the flag whose value the config refused, e.g. ``--y-weight nan: must be a
    finite number``."""
    err = exc.errors()[0]
    loc = tuple(err.get("loc", ()))
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    msg = msg.replace("Input should be", "must be")
    inner = getattr((err.get("ctx") or {}).get("error"), "validation", None)
    if loc == ("columns",) and inner is not None:  # a rule over several column flags: the line names them
        from medaudit.configfile import validation_error

        return validation_error(inner, "command line")
    if loc and loc[0] == "encoder_kwargs":  # the message names MODALITY.KEY
        return InputError(f"--encoder-opt {msg}")
    value = err.get("input")
    shown = "" if isinstance(value, (dict, list, tuple)) or value is None else f" {value}"
    return InputError(f"{_flag(loc)}{shown}: {msg}")


def _check_fields(given: dict[str, Any], base: dict[str, Any], config_file: Path | None) -> None:
    """Validate each key on its own, so that a bad value is named by its flag (given on the command
    line) or by its key in the config file."""
    from pydantic import ValidationError

    from medaudit.configfile import validation_error

    probe = AuditConfig()
    for source, values in ((config_file, base), (None, given)):
        for key, value in values.items():
            if key not in AuditConfig.model_fields:
                continue  # an unknown key: the whole-model check names it
            try:
                setattr(probe, key, value)
            except ValidationError as exc:
                if source is None:
                    raise _option_error(exc) from None
                raise validation_error(exc, str(source)) from None


def _build_config(ctx: typer.Context, config_file: Path | None, values: dict[str, Any]) -> AuditConfig:
    from pydantic import ValidationError

    from medaudit.configfile import read_mapping, validation_error

    given = _config_fields(_explicit(ctx, values))
    if config_file is None:
        base: dict[str, Any] = {}
        given = _config_fields(values)
    else:
        base = read_mapping(config_file)
    _check_fields(given, base, config_file)
    merged = {**base, **given}
    if "columns" in base and "columns" in given:
        merged["columns"] = {**base["columns"], **given["columns"]}
    if "encoders" in given:  # --report-encoder keeps the config's image encoder (it reset it to the default)
        from_file = base.get("encoders") if isinstance(base.get("encoders"), dict) else {}
        merged["encoders"] = {**DEFAULT_ENCODERS, **from_file, **given["encoders"]}
    try:
        return AuditConfig.model_validate(merged)
    except ValidationError as exc:
        raise validation_error(exc, str(config_file) if config_file else "command line") from None


_DATASET_FLAGS = ("dataset", "predictions", "target", "uncertain", "dataset_reports", "pred_id", "workers")

# The options of ``medaudit audit``, one alias each (the defaults sit in the signature of audit_command).
_O = typer.Option
_Table = Annotated[
    Path | None, _O("--table", help="Case table: .csv, .tsv, .parquet or .jsonl (or use --dataset).")
]
_Out = Annotated[
    Path,
    _O("--out", "-o", help="Output folder: absent, empty or an earlier audit output; replaced atomically."),
]
_Config = Annotated[
    Path | None, _O("--config", help="AuditConfig as YAML/JSON; flags given here override it.")
]
_IdCol = Annotated[str, _O("--id-col", help="Case id column.")]
_LabelCol = Annotated[str, _O("--label-col", help="Binary ground-truth label column (0/1).")]
_ProbCol = Annotated[str, _O("--prob-col", help="Predicted probability of class 1.")]
_PredCol = Annotated[str | None, _O("--pred-col", help="Hard 0/1 prediction (instead of --prob-col).")]
_ImageCol = Annotated[str, _O("--image-col", help="Image path column (DICOM, PNG, JPEG).")]
_ReportCol = Annotated[str, _O("--report-col", help="Report text column.")]
_ReportPathCol = Annotated[
    str | None, _O("--report-path-col", help="Column of report text file paths (instead of --report-col).")
]
_Meta = Annotated[
    list[str] | None,
    _O(
        "--meta",
        help="Metadata column(s), each once; repeat or comma-separate. Not the id, label, prob/pred, "
        "image or report column.",
    ),
]
_Modalities = Annotated[
    str | None,
    _O(
        "--modalities",
        help="Any subset of image,report,metadata (default: image,report[,metadata if --meta]).",
    ),
]
_ImageEncoder = Annotated[str, _O("--image-encoder", help="See `medaudit list encoders`.")]
_ReportEncoder = Annotated[str, _O("--report-encoder")]
_MetaEncoder = Annotated[str, _O("--meta-encoder")]
_EncoderOpt = Annotated[
    list[str] | None,
    _O("--encoder-opt", help="Encoder argument MODALITY.KEY=VALUE (e.g. image.size=224); repeatable."),
]
_Fusion = Annotated[Fusion, _O("--fusion", help="How modalities are combined.")]
_FusionDim = Annotated[int, _O("--fusion-dim", help="Per-modality dimension for balanced fusion.")]
_Slicer = Annotated[
    SlicerName,
    _O(
        "--slicer",
        help="mixture (embedding slices) | rules (readable rules) | both (one ranked list) | kmeans.",
    ),
]
_Concepts = Annotated[
    Path | None, _O("--concepts", help="Concept lexicon (YAML, docs/concepts.md; default: built-in).")
]
_NSlices = Annotated[int, _O("--n-slices", min=1)]
_NComponents = Annotated[int, _O("--n-components", min=1, help="Mixture components.")]
_YWeight = Annotated[float, _O("--y-weight", help="Label log-likelihood weight.")]
_YHatWeight = Annotated[float, _O("--y-hat-weight", help="Prediction log-likelihood weight.")]
_Pca = Annotated[int, _O("--pca", min=0, help="PCA dimensions before the mixture (0: none).")]
_RankBy = Annotated[RankRule, _O("--rank-by", help="Slice ranking (error = Domino's, the study's).")]
_MinSliceSize = Annotated[
    float, _O("--min-slice-size", min=0.0, help="Rank mixture components with fewer cases last.")
]
_Embeddings = Annotated[
    list[str] | None,
    _O(
        "--embeddings",
        help="Precomputed embeddings MODALITY=PATH (.npy + .ids.txt, or .parquet); repeatable.",
    ),
]
_CacheDir = Annotated[Path | None, _O("--cache-dir", help="Embedding cache (default ~/.cache/medaudit).")]
_SkipBad = Annotated[bool, _O("--skip-bad", help="Drop bad rows (counted) instead of failing.")]
_Seed = Annotated[int, _O("--seed")]
_Device = Annotated[str | None, _O("--device", help="cpu, cuda, cuda:1 ... (default: CUDA when present).")]
_NoReport = Annotated[bool, _O("--no-report", help="Skip report.html.")]
_Force = Annotated[
    bool, _O("--force", help="Use an --out folder holding files medaudit did not write; they are kept.")
]
_Dataset = Annotated[
    str | None,
    _O("--dataset", help="mimic-cxr:ROOT | chexpert:ROOT | nih:ROOT | openi[:ROOT] (instead of --table)."),
]
_Predictions = Annotated[
    Path | None,
    _O("--predictions", help="With --dataset: predictions table, one probability column per finding."),
]
_Target = Annotated[str | None, _O("--target", help="With --dataset: a finding, or 'all'.")]
_Uncertain = Annotated[
    str, _O("--uncertain", help="With --dataset: uncertain labels -> zeros | ones | ignore (dropped).")
]
_DatasetReports = Annotated[
    Path | None,
    _O("--dataset-reports", help="MIMIC-CXR reports folder / Open-i reports (default: under ROOT)."),
]
_PredId = Annotated[str | None, _O("--pred-id", help="Id column of --predictions (default: detected).")]
_Workers = Annotated[int, _O("--workers", min=0, help="DataLoader worker processes reading images.")]
_RayAddress = Annotated[
    str | None, _O("--ray-address", help="Embed images on this Ray cluster (auto, ray://HOST:10001, local).")
]
_CacheContent = Annotated[
    str, _O("--cache-content", help="Image cache keys: stat (path+size+mtime, fast) | bytes (hash).")
]


def audit_command(
    ctx: typer.Context,
    table: _Table = None,
    out: _Out = ...,  # required
    config: _Config = None,
    id_col: _IdCol = _C.id,
    label_col: _LabelCol = _C.label,
    prob_col: _ProbCol = _C.prob,
    pred_col: _PredCol = _C.pred,
    image_col: _ImageCol = _C.image,
    report_col: _ReportCol = _C.report,
    report_path_col: _ReportPathCol = _C.report_path,
    meta: _Meta = None,
    modalities: _Modalities = None,
    image_encoder: _ImageEncoder = _D.encoders["image"],
    report_encoder: _ReportEncoder = _D.encoders["report"],
    meta_encoder: _MetaEncoder = _D.encoders["metadata"],
    encoder_opt: _EncoderOpt = None,
    fusion: _Fusion = _D.fusion,
    fusion_dim: _FusionDim = _D.fusion_dim,
    slicer: _Slicer = _D.slicer,
    concepts: _Concepts = _D.concepts,
    n_slices: _NSlices = _D.n_slices,
    n_components: _NComponents = _D.n_components,
    y_weight: _YWeight = _D.y_weight,
    y_hat_weight: _YHatWeight = _D.y_hat_weight,
    pca: _Pca = _D.pca or 0,
    rank_by: _RankBy = _D.rank_by,
    min_slice_size: _MinSliceSize = _D.min_slice_size,
    embeddings: _Embeddings = None,
    cache_dir: _CacheDir = None,
    skip_bad: _SkipBad = _D.skip_bad,
    seed: _Seed = _D.seed,
    device: _Device = _D.device,
    no_report: _NoReport = False,
    force: _Force = False,
    dataset: _Dataset = None,
    predictions: _Predictions = None,
    target: _Target = None,
    uncertain: _Uncertain = "zeros",
    dataset_reports: _DatasetReports = None,
    pred_id: _PredId = None,
    workers: _Workers = 0,
    ray_address: _RayAddress = _D.ray_address,
    cache_content: _CacheContent = _D.cache_content,
) -> None:
    """Audit a classifier: discover and explain the slices of cases where it fails.

    Writes OUT/slices.json, OUT/membership.parquet and OUT/report.html (schema in docs/audit.md).
    """
    params = dict(locals())
    values = {k: v for k, v in params.items() if k not in ("ctx", "config", "force", *_DATASET_FLAGS)}
    _check_table_or_dataset(table, dataset)
    _check_mode_flags(ctx, dataset is not None)
    cfg = _audit_config(ctx, config, values, workers)
    check_ray_address(cfg.ray_address, "--ray-address" if ray_address else f"{config}: key 'ray_address'")
    if dataset is not None:
        return _run_dataset(cfg, params)
    from medaudit.audit.pipeline import run_audit

    _print_result(run_audit(table, cfg, out, force=force))


def _check_table_or_dataset(table: Path | None, dataset: str | None) -> None:
    """Exactly one of ``--table`` (an existing file) and ``--dataset``."""
    if dataset is not None and table is not None:
        raise InputError("give either --table or --dataset, not both")
    if dataset is None and table is None:
        raise InputError("give --table CASES.csv, or --dataset KIND:ROOT with --predictions")
    if table is not None and table.is_dir():
        raise InputError(f"--table {table}: is a folder, not a table file")
    if table is not None and not table.is_file():
        raise InputError(f"{table}: {missing_reason(table, 'table file')}")


#: flags of one mode that the other ignores: given there, they were dropped without a word
_TABLE_ONLY = ("id_col", "label_col", "prob_col", "pred_col", "image_col", "report_col", "report_path_col")
_DATASET_ONLY = ("predictions", "target", "uncertain", "dataset_reports", "pred_id")


def _check_mode_flags(ctx: typer.Context, with_dataset: bool) -> None:
    """Refuse a flag given on the command line that the chosen mode would ignore: a column flag with
    ``--dataset`` (its columns are the dataset's own), a ``--dataset`` flag with ``--table``."""
    for name in _TABLE_ONLY if with_dataset else _DATASET_ONLY:
        if getattr(ctx.get_parameter_source(name), "name", "") in ("COMMANDLINE", "ENVIRONMENT"):
            flag = "--" + name.replace("_", "-")
            if with_dataset:
                raise InputError(
                    f"{flag}: a column of --table, not used with --dataset (its columns are known)"
                )
            raise InputError(
                f"{flag}: used only with --dataset; a --table holds its own labels and predictions"
            )


def _audit_config(
    ctx: typer.Context, config: Path | None, values: dict[str, Any], workers: int
) -> AuditConfig:
    """The checked AuditConfig of the flags ``values`` over the ``--config`` file."""
    cfg = _build_config(ctx, config, values)
    _check_device(cfg, ctx, config)
    _check_null_encoder_opts(cfg, values.get("encoder_opt"), config)
    if workers:
        cfg.encoder_kwargs.setdefault("image", {}).setdefault("num_workers", workers)
    return cfg


def _run_dataset(cfg: AuditConfig, p: dict[str, Any]) -> None:
    """``--dataset``: audit a public dataset joined with a predictions table."""
    from medaudit.audit.dataset_cli import run_dataset_audit

    return run_dataset_audit(
        cfg,
        p["dataset"],
        p["predictions"],
        p["target"],
        p["uncertain"],
        p["out"],
        p["dataset_reports"],
        p["pred_id"],
        _split_meta(p["meta"]),
        p["force"],
    )


def _check_device(cfg: AuditConfig, ctx: typer.Context, config_file: Path | None) -> None:
    """Refuse a device this machine lacks (``tpu:7``, ``cuda`` without a GPU) before any work; ``auto``
    becomes ``None`` (CUDA when present)."""
    if cfg.device is None:
        return
    from medaudit.device import check_device

    given = getattr(ctx.get_parameter_source("device"), "name", "") != "DEFAULT" or config_file is None
    cfg.device = check_device(cfg.device, flag="--device" if given else f"{config_file}: key 'device'")


def _check_null_encoder_opts(cfg: AuditConfig, flag_opts: list[str] | None, config_file: Path | None) -> None:
    """An encoder option set to null (``image.size: null``) is refused, naming the flag or the config
    file and key, unless that encoder takes ``None`` there (open-clip's ``size``: the model's own input
    size). The image encoders that resize to a fixed square (efficientnet-lite0, xrv-densenet121,
    torch-module) need a number; they used to fail only while embedding."""
    nulls = [(m, k) for m, opts in cfg.encoder_kwargs.items() for k, v in opts.items() if v is None]
    if not nulls:
        return
    from medaudit.audit.encoders import list_encoders
    from medaudit.audit.encoders.base import encoder_takes_none

    from_flags = parse_encoder_opts(flag_opts)
    for m, key in nulls:
        name = cfg.encoders.get(m, DEFAULT_ENCODERS[m])
        if encoder_takes_none(m, name, key):
            continue
        ok = [n for n in list_encoders(m)[m] if encoder_takes_none(m, n, key)]
        hint = f"; null is only for {', '.join(ok)}" if ok else ""
        where = (
            f"--encoder-opt {m}.{key}=null"
            if key in from_flags.get(m, {}) or config_file is None
            else f"{config_file}: key 'encoder_kwargs.{m}.{key}'"
        )
        raise InputError(f"{where}: the {m} encoder '{name}' needs a value, not null{hint}")


def _print_result(result: Any) -> None:
    c = result.counts
    typer.echo(
        f"audited {c['cases']} cases ({c['skipped_rows']} rows skipped), error rate {c['error_rate']:.3f}; "
        f"{len(result.slices)} slices written to {result.out_dir}"
    )
    for s in result.slices:
        er = "-" if s["error_rate"] is None else f"{s['error_rate']:.3f}"
        top = s["explanation"]["ngrams"][0]["ngram"] if s["explanation"]["ngrams"] else ""
        typer.echo(
            f"  slice {s['rank']}: {s['size']} members, error rate {er}"
            + (f", top n-gram '{top}'" if top else "")
        )
