"""``medaudit texture train | eval | predict | demo`` (and ``study`` when that module is present)."""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from medaudit.errors import InputError
from medaudit.io import missing_reason
from medaudit.texture.options import DataSource, InputNorm, RecipeName, TrainMode

if TYPE_CHECKING:
    from medaudit.texture.train_config import TrainConfig

app = typer.Typer(
    help="Texture robustness of 3D segmentation: train on filtered scans, evaluate under corruptions.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

#: ``--force`` of the commands that claim an output folder (train, eval)
_Force = Annotated[
    bool,
    typer.Option("--force", help="Use an --out folder holding files medaudit did not write; they are kept."),
]


def _ints(
    text: str,
    what: str,
    lo: int | None = None,
    hi: int | None = None,
    unique: bool = False,
    ranges: bool = True,
) -> list[int]:
    """The integers of a flag value like ``1,2,3``, ``1-5`` or ``1-3,5`` (in the order given).

    Each item is a non-negative integer or (with ``ranges``) an increasing range ``a-b``; values must
    lie in ``lo..hi`` when given and (with ``unique``) appear once. Anything else (an empty value or
    item, a reversed range, a sign, a word) is one :class:`InputError` line naming ``--what``.
    """
    flag = f"--{what}"
    example = "'1,2,3' or '1-5'" if ranges else "'8,16,32'"
    compact = text.replace(" ", "")
    if not compact:
        raise InputError(f"{flag} {text!r}: empty; expected integers like {example}")
    out: list[int] = []
    for part in compact.split(","):
        m = re.fullmatch(r"(\d+)-(\d+)" if ranges and "-" in part else r"(\d+)", part)
        if m is None:
            kind = "an integer or a range" if ranges else "an integer"
            what_is = "an empty item" if not part else f"'{part}' is not {kind}"
            raise InputError(f"{flag} {text!r}: {what_is}; expected integers like {example}")
        a, b = int(m.group(1)), int(m.group(m.lastindex or 1))
        if b < a:
            raise InputError(f"{flag} {text!r}: range must go up (e.g. {b}-{a})")
        for v in (a, b):
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                bounds = f"outside {lo}..{hi}" if lo is not None and hi is not None else f"below {lo}"
                raise InputError(f"{flag} {text!r}: {v} is {bounds}")
        for v in range(a, b + 1):
            if unique and v in out:
                raise InputError(f"{flag} {text!r}: {v} is listed twice")
            out.append(v)
    return out


def _json_mapping(text: str | None, what: str) -> dict[str, Any] | None:
    if text is None:
        return None

    def no_constant(name: str) -> Any:
        raise InputError(f"--{what}: {name} is not a number medaudit accepts (give a finite value)")

    try:
        value = json.loads(text, parse_constant=no_constant)
    except InputError:
        raise
    except ValueError as exc:
        raise InputError(f"--{what}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise InputError(f"--{what}: expected a JSON object, got {text!r}")
    return value


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _print_table(df: Any, title: str) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    # escaped: a label such as 'none[run]' is text, not rich markup (it printed as 'none', and a
    # bracket holding a path, '[/data/run]', was a MarkupError after the results were written)
    t = Table(title=escape(title))
    for c in df.columns:
        t.add_column(escape(str(c)))
    for row in df.itertuples(index=False):
        t.add_row(*[f"{v:.3f}" if isinstance(v, float) else escape(str(v)) for v in row])
    Console().print(t)


@app.command("train")
def train_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder (checkpoints, model.pt, split.json).")],
    config: Annotated[
        Path | None, typer.Option(help="YAML/JSON TrainConfig; the flags below override it.")
    ] = None,
    data: Annotated[DataSource | None, typer.Option(help="Data source.")] = None,
    data_path: Annotated[str | None, typer.Option(help="Root folder or CSV for dhcp/folder/csv.")] = None,
    label_set: Annotated[
        str | None, typer.Option(help="tissue4 | drawem9 | drawem9-tissue | drawem87.")
    ] = None,
    spacing: Annotated[float | None, typer.Option(help="Resample to this spacing (mm) on load.")] = None,
    mode: Annotated[TrainMode | None, typer.Option(help="Legacy training mode (see --recipe).")] = None,
    filter_name: Annotated[
        str | None, typer.Option("--filter", help="Training filter (medaudit.texture.filters).")
    ] = None,
    severity: Annotated[str | None, typer.Option(help="Filter severity 1..5 or a range like 1-5.")] = None,
    recipe: Annotated[RecipeName | None, typer.Option(help="Training recipe (docs/texture.md).")] = None,
    recipe_options: Annotated[
        str | None,
        typer.Option(help='Recipe options as JSON, e.g. \'{"p": 0.5, "exclude_families": ["noise"]}\'.'),
    ] = None,
    input_norm: Annotated[InputNorm | None, typer.Option(help="Model input normalisation.")] = None,
    severity_version: Annotated[
        int | None, typer.Option(help="Severity table of the levels (2 = physical; 1 = the old one).")
    ] = None,
    iterations: Annotated[int | None, typer.Option(help="Training iterations.")] = None,
    patch_size: Annotated[int | None, typer.Option(help="Cubic patch size (voxels).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Patches per iteration.")] = None,
    channels: Annotated[str | None, typer.Option(help="U-Net channels, e.g. 8,16,32,64.")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu | cuda (default: cuda when present).")] = None,
    cache_dir: Annotated[str | None, typer.Option(help="Cache folder for the mni-phantom cohort.")] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue from an existing checkpoint of the same config.")
    ] = True,
    force: _Force = False,
) -> None:
    """Train a 3D U-Net (clean, on a filtered copy of the training scans, or with on-the-fly filtering)."""
    from medaudit.device import check_device

    checked_device = check_device(device, flag="--device")  # first: before the config, data or model
    over: dict[str, Any] = {  # the flags given override the config
        "data_source": data,
        "data_path": data_path,
        "label_set": label_set,
        "spacing": spacing,
        "mode": mode,
        "filter_name": filter_name,
        "recipe": recipe,
        "recipe_options": recipe_options,  # JSON text, parsed after the config is read
        "input_norm": input_norm,
        "severity_version": severity_version,
        "iterations": iterations,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "cache_dir": cache_dir,
    }
    cfg = _train_config(config, over, severity, patch_size, channels)
    if device is not None:  # the flag wins over the config's device ('auto' included)
        cfg.device = checked_device
    elif cfg.device is not None:
        cfg.device = check_device(cfg.device, flag=f"{config}: key 'device'")
    _run_train(cfg, out, config, resume, force)


#: numeric flags of ``texture train`` by TrainConfig key, checked (finite, in range) before the config
_NUMERIC_FLAGS = {
    "spacing": "--spacing",
    "severity_version": "--severity-version",
    "iterations": "--iterations",
    "batch_size": "--batch-size",
    "lr": "--lr",
    "seed": "--seed",
}


def _train_config(
    config: Path | None,
    over: dict[str, Any],
    severity: str | None,
    patch_size: int | None,
    channels: str | None,
) -> TrainConfig:
    """The TrainConfig of ``config`` (or the defaults) with the flags given (not ``None``) applied.

    ``over`` maps config keys to flag values; its ``recipe_options`` is the JSON text of the flag.
    ``--filter`` without ``--mode`` turns a clean, recipe-less config into ``mode="filtered"``.
    """
    from medaudit.texture.severity import check_version
    from medaudit.texture.train_config import MAX_CHANNELS, MAX_PATCH, TrainConfig, check_field, load_config

    base = load_config(config).to_dict() if config is not None else TrainConfig().to_dict()
    _check_filter_flag(over["filter_name"])
    over = {**over, "recipe_options": _json_mapping(over["recipe_options"], "recipe-options")}
    if severity is not None:
        if "," in severity:  # training draws a severity from one range; a list would read as one
            raise InputError(f"--severity {severity!r}: give one level (3) or one range (1-3), not a list")
        sv = _ints(severity, "severity", lo=1, hi=5, unique=True)  # 0 would train on the clean scans
        over["filter_severity"] = sv[0] if len(sv) == 1 else [min(sv), max(sv)]
    if patch_size is not None:
        if not 8 <= patch_size <= MAX_PATCH:  # named here: the merged config's error named no flag
            raise InputError(f"--patch-size {patch_size}: must lie in 8..{MAX_PATCH} (voxels per side)")
        over["patch_size"] = [patch_size] * 3
    if channels is not None:
        over["channels"] = _ints(channels, "channels", lo=1, ranges=False)
        if max(over["channels"]) > MAX_CHANNELS:  # a U-Net of that width fails inside torch (exit 1)
            raise InputError(f"--channels {channels!r}: {max(over['channels'])} is above {MAX_CHANNELS}")
    for key, flag in _NUMERIC_FLAGS.items():  # a bad number names its flag, not the merged config
        if over.get(key) is not None:
            over[key] = check_field(key, over[key], flag)
    if over.get("severity_version") is not None:
        over["severity_version"] = check_version(over["severity_version"], "--severity-version")
    base.update({k: v for k, v in over.items() if v is not None})
    if (
        over["filter_name"]
        and over["mode"] is None
        and base["mode"] == "clean"
        and base.get("recipe") is None
    ):
        base["mode"] = "filtered"
    if over["recipe_options"] is not None:  # the rest first: an error left is the flag's, named so
        TrainConfig.from_dict({**base, "recipe_options": {}})
        return TrainConfig.from_dict(base, "--recipe-options")
    return TrainConfig.from_dict(base)


def _check_filter_flag(name: str | None) -> None:
    """``--filter`` names a registered filter (the merged config's error named no flag)."""
    from medaudit.texture.filters.registry import FILTERS, is_clean

    if name is not None and not is_clean(name) and name not in FILTERS:
        raise InputError(f"--filter {name!r}: unknown filter; known: {', '.join(sorted(FILTERS))}")


def _run_train(cfg: TrainConfig, out: Path, config: Path | None, resume: bool, force: bool) -> None:
    """Train ``cfg`` into the claimed ``out`` folder and print the model path and the time taken."""
    from medaudit.texture.train import train

    t0 = time.perf_counter()
    from medaudit.outdir import claim_output

    with claim_output(
        out,
        "texture-train",
        inputs=[config, cfg.data_path, cfg.cache_dir],
        force=force,
        in_place=True,
        keep_if=("checkpoint.pt", "model.pt"),
        writes=("split.json", "config.json", "checkpoint.pt", "history.json", "model.pt"),
    ) as claim:
        path = train(cfg, claim.path, resume=resume)
    typer.echo(f"model: {path} ({time.perf_counter() - t0:.1f} s)")


def _check_models(models: list[Path]) -> None:
    """Fail with one line naming the model file before anything else is read."""
    from medaudit.texture.checkpoint import check_model_meta, load_checkpoint

    if not models:
        raise InputError("--model: give at least one model.pt")
    resolved = [os.path.realpath(m) for m in models]  # a symlink loop is named below, not raised here
    for i, r in enumerate(resolved):  # its rows would be scored, and counted, twice
        if r in resolved[:i]:
            raise InputError(f"--model {models[i]}: the same model is given twice")
    for m in models:
        st = load_checkpoint(m)
        if "state_dict" not in st or "config" not in st:
            raise InputError(
                f"not a medaudit model, or unsafe to load: {m} (use the model.pt written by train)"
            )
        try:
            check_model_meta(st)
        except ValueError:
            raise InputError(
                f"not a medaudit model, or unsafe to load: {m} (inconsistent contents)"
            ) from None


def _cases_for_eval(models: list[Path], data: str | None, data_path: str | None, split: str) -> list[Any]:
    from medaudit.data import mri as tdata

    if data is None and data_path is not None:  # it was ignored: split.json's cases were evaluated
        raise InputError(
            f"--data-path {data_path}: give --data too (folder, csv or dhcp); without --data the run's "
            "split.json is evaluated"
        )
    _check_models(models)
    if data is not None:
        return tdata.get_cases(data, data_path)
    sp = models[0].parent / "split.json"
    if not sp.is_file():
        raise InputError(f"{sp}: no split.json next to the model; pass --data/--data-path")
    splits = _read_split_json(sp)
    if split not in splits:
        raise InputError(f"--split {split!r}: {sp} has the splits {', '.join(map(repr, splits))}")
    cases = [_split_case(sp, d) for d in splits[split]]
    if not cases:
        raise InputError(f"{sp}: the '{split}' split is empty")
    return cases


def _read_split_json(sp: Path) -> dict[str, list[dict[str, Any]]]:
    """``split.json``: an object of splits, each a list of cases with a text ``case_id`` and ``image``
    (and optional text ``label`` / ``mask``); one line naming the file and the entry otherwise."""
    from medaudit.configfile import load_json_strict

    try:
        splits = load_json_strict(sp.read_text(encoding="utf-8"), str(sp))
    except InputError:  # a duplicate key, named
        raise
    except UnicodeDecodeError:
        raise InputError(f"{sp}: not UTF-8 text (expected the split.json written by train)") from None
    except ValueError as exc:
        raise InputError(f"{sp}: not valid JSON ({exc})") from None
    if not isinstance(splits, dict):
        raise InputError(f'{sp}: expected an object of splits like {{"test": [...]}}')
    for name, cases in splits.items():
        if not isinstance(cases, list):
            raise InputError(f"{sp}: split '{name}': expected a list of cases")
        for i, d in enumerate(cases):
            ok = isinstance(d, dict) and isinstance(d.get("case_id"), str) and isinstance(d.get("image"), str)
            ok = ok and all(d.get(k) is None or isinstance(d[k], str) for k in ("label", "mask"))
            if not ok or not isinstance(d.get("meta") or {}, dict):
                raise InputError(
                    f"{sp}: split '{name}', case {i}: expected an object with text 'case_id' and 'image' "
                    "(and text 'label' / 'mask', an object 'meta')"
                )
    return splits


def _split_case(split_json: Path, d: dict[str, Any]) -> Any:
    """A case of ``split.json`` whose files exist. Runs written before split.json held absolute paths
    hold paths relative to the folder train ran in: such a path is used as is when it exists from here,
    else against the run folder when the file is there; a file found nowhere is one line naming it."""
    from medaudit.data import mri as tdata

    case = tdata.VolumeCase.from_dict(d)
    found: dict[str, Path | None] = {}
    for key in ("image", "label", "mask"):
        p: Path | None = getattr(case, key)
        if p is not None and not p.is_absolute() and not p.exists():
            p = split_json.parent / p if (split_json.parent / p).is_file() else p
        if p is not None and not p.is_file():
            raise InputError(f"{split_json}: case '{case.case_id}': {missing_reason(p, f'{key} file')}: {p}")
        found[key] = p
    return replace(case, **found)


@app.command("eval")
def eval_command(
    model: Annotated[
        list[Path], typer.Option("--model", "-m", help="model.pt of a run (repeat for several).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (results, summary, report.html).")],
    corruptions: Annotated[
        str, typer.Option(help="Comma-separated corruption names.")
    ] = "gaussian_noise,gaussian_blur,bias_field",
    severities: Annotated[str, typer.Option(help="Severity levels, e.g. 1-5.")] = "1-5",
    data: Annotated[
        str | None, typer.Option(help="Test data source (default: the first run's test split).")
    ] = None,
    data_path: Annotated[str | None, typer.Option(help="Test data path.")] = None,
    split: Annotated[
        str, typer.Option(help="Split of split.json to evaluate when --data is not given.")
    ] = "test",
    seed: Annotated[int, typer.Option(help="Corruption seed.")] = 0,
    severity_version: Annotated[
        int, typer.Option(help="Severity table: 2 = physical levels (docs/severities.md), 1 = the old one.")
    ] = 2,
    clean: Annotated[bool, typer.Option(help="Also evaluate the clean scans (severity 0).")] = True,
    device: Annotated[str | None, typer.Option(help="cpu | cuda.")] = None,
    report: Annotated[bool, typer.Option(help="Write report.html.")] = True,
    force: _Force = False,
    texture_bias: Annotated[
        bool, typer.Option(help="Also measure the texture-bias score (medaudit.texture.bias).")
    ] = True,
) -> None:
    """Evaluate models on clean and corrupted test scans; write results, summary and an HTML report."""
    from medaudit.device import check_device

    device = check_device(device, flag="--device")  # first: before any model or data is read
    from medaudit.outdir import claim_output
    from medaudit.texture.evaluate import CaseVolumes, evaluate, example_slices
    from medaudit.texture.report import format_table, write_report
    from medaudit.texture.severity import check_version

    corrs = _eval_corruptions(corruptions, clean)
    levels_in = _ints(severities, "severities", lo=1, hi=5, unique=True)
    severity_version = check_version(severity_version, "--severity-version")
    cases = _cases_for_eval(model, data, data_path, split)
    inputs = [*model, data_path, *(c.image for c in cases), *(c.label for c in cases)]
    with claim_output(out, "texture-eval", inputs=inputs, force=force) as claim:
        stage = claim.stage
        vols = CaseVolumes(cases)  # each case read once, for the scores, the bias probes and the report
        df = evaluate(
            model, vols, (["none"] if clean else []) + corrs, levels_in, seed, device,
            severity_version=severity_version,
        )  # fmt: skip
        summary = format_table(df)
        bias = _texture_bias(model, vols, seed, device) if texture_bias else None
        df.to_csv(stage / "results.csv", index=False)
        summary.to_csv(stage / "summary.csv", index=False)
        if bias is not None:
            bias.to_csv(stage / "texture_bias.csv", index=False)
        if report:
            ex = example_slices(model, vols, corrs, 3, seed, device=device, severity_version=severity_version)
            write_report(df, stage / "report.html", ex, texture_bias=bias)
    _print_eval_summary(df, summary, bias)
    typer.echo(f"results: {out / 'results.csv'}")


def _eval_corruptions(text: str, clean: bool) -> list[str]:
    """The ``--corruptions`` of ``texture eval``: registered names, each once (a clean spelling such as
    ``none`` only adds the clean scans, as ``--clean`` does); one line naming the flag otherwise, and
    when nothing at all would be evaluated."""
    from medaudit.texture.filters.registry import FILTERS, is_clean

    names = _names(text)
    seen: list[str] = []
    for n in names:
        if not is_clean(n) and n not in FILTERS:
            raise InputError(
                f"--corruptions {text!r}: unknown corruption '{n}'; known: {', '.join(sorted(FILTERS))}"
            )
        if n in seen:
            raise InputError(f"--corruptions {text!r}: '{n}' is listed twice")
        seen.append(n)
    corrs = [n for n in seen if not is_clean(n)]
    if len(corrs) < len(seen) and not clean:
        corrs.insert(0, "none")  # the clean scans, asked for by name
    if not corrs and not clean:
        raise InputError(f"--corruptions {text!r}: names no corruption, and --no-clean: nothing to evaluate")
    return corrs


#: summary columns printed by ``texture eval``, in this order, when present
_SUMMARY_COLUMNS = (
    "model",
    "clean_dice",
    "corrupted_dice",
    "mCE",
    "mRCE",
    "dice_overall",
    "dice_degradation",
    "dice_seen",
    "dice_unseen",
)


def _print_eval_summary(df: Any, summary: Any, bias: Any) -> None:
    """Print the robustness summary, the mean Dice per corruption and (when measured) the texture bias."""
    from medaudit.texture.metrics import mean_dice_table

    keep = [c for c in _SUMMARY_COLUMNS if c in summary.columns]
    _print_table(summary[keep], "robustness summary (mean Dice over foreground classes and cases)")
    sev = sorted(int(v) for v in df.loc[df["severity"] > 0, "severity"].unique()) if "severity" in df else []
    levels = ",".join(map(str, sev)) if sev else "none"
    _print_table(mean_dice_table(df).reset_index(), f"mean Dice per test corruption (severities {levels})")
    if bias is not None:
        _print_table(bias, "texture bias (0 = shape only, 1 = texture only; medaudit.texture.bias)")


def _texture_bias(models: list[Path], cases: Any, seed: int, device: str | None) -> Any:
    from medaudit.texture.bias import evaluate_texture_bias, summarise

    return summarise(evaluate_texture_bias(models, cases, seed=seed, device=device))


@app.command("predict")
def predict_command(
    model: Annotated[Path, typer.Option("--model", "-m", help="model.pt of a run.")],
    inputs: Annotated[list[Path], typer.Argument(help="NIfTI volumes to segment.")],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Output folder for <name>_seg.nii.gz (replaced atomically)."),
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out-dir", hidden=True, help="Deprecated alias of --out.")
    ] = None,
    device: Annotated[str | None, typer.Option(help="cpu | cuda.")] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Use an --out folder holding files medaudit did not write; they are kept."
        ),
    ] = False,
) -> None:
    """Segment NIfTI volumes; label maps keep the input's affine and header.

    Every input is validated before anything is written; the label maps are then written as one batch
    (an output folder replaced atomically), so a bad input leaves no output at all.
    """
    from medaudit.device import check_device
    from medaudit.texture.predict import predict_files

    device = check_device(device, flag="--device")  # first: before the model or any input is read
    if out is not None and out_dir is not None and out != out_dir:
        raise InputError(f"--out {out} and --out-dir {out_dir}: give only --out")
    target = out if out is not None else out_dir
    if target is None:
        raise InputError("--out: missing; give the output folder with --out/-o")
    flag = "--out" if out is not None else "--out-dir"
    for p in predict_files(model, inputs, target, device, force=force, flag=flag):
        typer.echo(str(p))
    if out_dir is not None:  # after the work, so that an error stays a single line
        typer.secho("warning: --out-dir is deprecated; use --out/-o", err=True, fg="yellow")
