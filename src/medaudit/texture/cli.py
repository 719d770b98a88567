"""``medaudit texture train | eval | predict | demo`` (and ``study`` when that module is present)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from medaudit.errors import InputError

app = typer.Typer(
    help="Texture robustness of 3D segmentation: train on filtered scans, evaluate under corruptions.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _ints(text: str, what: str) -> list[int]:
    try:
        out: list[int] = []
        for part in text.replace(" ", "").split(","):
            if "-" in part:
                a, b = part.split("-")
                out.extend(range(int(a), int(b) + 1))
            elif part:
                out.append(int(part))
        return out
    except ValueError:
        raise InputError(f"--{what}: expected integers like '1,2,3' or '1-5', got '{text}'") from None


def _json_mapping(text: str | None, what: str) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InputError(f"--{what}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise InputError(f"--{what}: expected a JSON object, got {text!r}")
    return value


#: the robust model of ``texture demo``: the best recipe of the study_recipes evidence (docs/study.md);
#: at 500 iterations BigAug, SynthSeg and GIN underfit and lose clean Dice, mixed sampling ties the baseline
DEMO_RECIPE = "mixed"
DEMO_RECIPE_OPTIONS: dict[str, dict[str, Any]] = {}


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _print_table(df: Any, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for c in df.columns:
        t.add_column(str(c))
    for row in df.itertuples(index=False):
        t.add_row(*[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row])
    Console().print(t)


@app.command("train")
def train_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder (checkpoints, model.pt, split.json).")],
    config: Annotated[
        Path | None, typer.Option(help="YAML/JSON TrainConfig; the flags below override it.")
    ] = None,
    data: Annotated[str | None, typer.Option(help="mni-phantom | dhcp | folder | csv.")] = None,
    data_path: Annotated[str | None, typer.Option(help="Root folder or CSV for dhcp/folder/csv.")] = None,
    label_set: Annotated[
        str | None, typer.Option(help="tissue4 | drawem9 | drawem9-tissue | drawem87.")
    ] = None,
    spacing: Annotated[float | None, typer.Option(help="Resample to this spacing (mm) on load.")] = None,
    mode: Annotated[str | None, typer.Option(help="clean | filtered | online.")] = None,
    filter_name: Annotated[
        str | None, typer.Option("--filter", help="Training filter (medaudit.texture.filters).")
    ] = None,
    severity: Annotated[str | None, typer.Option(help="Filter severity 1..5 or a range like 1-5.")] = None,
    recipe: Annotated[
        str | None, typer.Option(help="Training recipe: clean | filtered | mixed | bigaug | synthseg | gin.")
    ] = None,
    recipe_options: Annotated[
        str | None,
        typer.Option(help='Recipe options as JSON, e.g. \'{"p": 0.5, "exclude_families": ["noise"]}\'.'),
    ] = None,
    input_norm: Annotated[
        str | None, typer.Option(help="Model input normalisation: none | zscore | percentile.")
    ] = None,
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
) -> None:
    """Train a 3D U-Net (clean, on a filtered copy of the training scans, or with on-the-fly filtering)."""
    from medaudit.texture.train import TrainConfig, load_config, train

    base = load_config(config).to_dict() if config is not None else TrainConfig().to_dict()
    over: dict[str, Any] = {
        "data_source": data,
        "data_path": data_path,
        "label_set": label_set,
        "spacing": spacing,
        "mode": mode,
        "filter_name": filter_name,
        "recipe": recipe,
        "recipe_options": _json_mapping(recipe_options, "recipe-options"),
        "input_norm": input_norm,
        "severity_version": severity_version,
        "iterations": iterations,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "device": device,
        "cache_dir": cache_dir,
    }
    if severity is not None:
        sv = _ints(severity, "severity")
        over["filter_severity"] = sv[0] if len(sv) == 1 else [min(sv), max(sv)]
    if patch_size is not None:
        over["patch_size"] = [patch_size] * 3
    if channels is not None:
        over["channels"] = _ints(channels, "channels")
    base.update({k: v for k, v in over.items() if v is not None})
    if filter_name and mode is None and base["mode"] == "clean" and base.get("recipe") is None:
        base["mode"] = "filtered"
    cfg = TrainConfig.from_dict(base)
    t0 = time.perf_counter()
    path = train(cfg, out, resume=resume)
    typer.echo(f"model: {path} ({time.perf_counter() - t0:.1f} s)")


def _cases_for_eval(models: list[Path], data: str | None, data_path: str | None, split: str) -> list[Any]:
    from medaudit.texture import data as tdata

    if data is not None:
        return tdata.get_cases(data, data_path)
    sp = models[0].parent / "split.json"
    if not sp.is_file():
        raise InputError(f"{sp}: no split.json next to the model; pass --data/--data-path")
    cases = [tdata.VolumeCase.from_dict(d) for d in json.loads(sp.read_text()).get(split, [])]
    if not cases:
        raise InputError(f"{sp}: the '{split}' split is empty")
    return cases


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
    texture_bias: Annotated[
        bool, typer.Option(help="Also measure the texture-bias score (medaudit.texture.bias).")
    ] = True,
) -> None:
    """Evaluate models on clean and corrupted test scans; write results, summary and an HTML report."""
    from medaudit.io import atomic_output_dir
    from medaudit.texture.evaluate import evaluate, example_slices
    from medaudit.texture.report import format_table, write_report

    corrs = _names(corruptions)
    cases = _cases_for_eval(model, data, data_path, split)
    df = evaluate(
        model,
        cases,
        (["none"] if clean else []) + corrs,
        _ints(severities, "severities"),
        seed,
        device,
        severity_version=severity_version,
    )
    summary = format_table(df)
    bias = _texture_bias(model, cases, seed, device) if texture_bias else None
    with atomic_output_dir(out) as stage:
        df.to_csv(stage / "results.csv", index=False)
        summary.to_csv(stage / "summary.csv", index=False)
        if bias is not None:
            bias.to_csv(stage / "texture_bias.csv", index=False)
        if report:
            ex = example_slices(
                model, cases[0], corrs, 3, seed, device=device, severity_version=severity_version
            )
            write_report(df, stage / "report.html", ex, texture_bias=bias)
    from medaudit.texture.metrics import mean_dice_table

    keep = [
        c
        for c in (
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
        if c in summary.columns
    ]
    _print_table(summary[keep], "robustness summary (mean Dice over foreground classes and cases)")
    sev = sorted(int(v) for v in df.loc[df["severity"] > 0, "severity"].unique()) if "severity" in df else []
    levels = ",".join(map(str, sev)) if sev else "none"
    _print_table(mean_dice_table(df).reset_index(), f"mean Dice per test corruption (severities {levels})")
    if bias is not None:
        _print_table(bias, "texture bias (0 = shape only, 1 = texture only; medaudit.texture.bias)")
    typer.echo(f"results: {out / 'results.csv'}")


def _texture_bias(models: list[Path], cases: list[Any], seed: int, device: str | None) -> Any:
    from medaudit.texture.bias import evaluate_texture_bias, summarise

    return summarise(evaluate_texture_bias(models, cases, seed=seed, device=device))


@app.command("predict")
def predict_command(
    model: Annotated[Path, typer.Option("--model", "-m", help="model.pt of a run.")],
    inputs: Annotated[list[Path], typer.Argument(help="NIfTI volumes to segment.")],
    out_dir: Annotated[Path, typer.Option("--out-dir", "-o", help="Folder for <name>_seg.nii.gz.")],
    device: Annotated[str | None, typer.Option(help="cpu | cuda.")] = None,
) -> None:
    """Segment NIfTI volumes; label maps keep the input's affine and header."""
    from medaudit.texture.predict import predict_files

    for p in predict_files(model, inputs, out_dir, device):
        typer.echo(str(p))


@app.command("demo")
def demo_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("texture-demo"),
    cache_dir: Annotated[str | None, typer.Option(help="Cache for the mni-phantom cohort.")] = None,
    n_subjects: Annotated[int, typer.Option(help="Simulated subjects.")] = 8,
    iterations: Annotated[int, typer.Option(help="Training iterations per model.")] = 600,
    recipe: Annotated[str, typer.Option(help="Training recipe of the robust model.")] = DEMO_RECIPE,
    recipe_options: Annotated[
        str | None, typer.Option(help="Recipe options as JSON (the test families are always excluded).")
    ] = None,
    corruptions: Annotated[
        str, typer.Option(help="Test corruptions; their families are held out of the recipe.")
    ] = "motion,ghosting,gibbs,spike,low_resolution",
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    device: Annotated[str | None, typer.Option(help="cpu | cuda.")] = None,
) -> None:
    """Small end-to-end run on the simulated mni-phantom cohort: clean baseline vs a training recipe."""
    from medaudit.texture.train import TrainConfig, family_of, train

    t0 = time.perf_counter()
    common = {
        "cache_dir": cache_dir,
        "n_subjects": n_subjects,
        "phantom_spacing": 3.0,
        "val_fraction": 0.0,
        "test_fraction": 0.25,
        "iterations": iterations,
        "patch_size": [32, 32, 32],
        "batch_size": 2,
        "channels": [8, 16, 32, 64],
        "lr": 5e-3,
        "val_every": iterations,
        "checkpoint_every": 40,
        "seed": seed,
        "device": device,
    }
    held_out = sorted({family_of(c) for c in _names(corruptions)})
    opts = dict(DEMO_RECIPE_OPTIONS.get(recipe, {})) | (_json_mapping(recipe_options, "recipe-options") or {})
    opts["exclude_families"] = sorted({*opts.get("exclude_families", []), *held_out})
    robust = TrainConfig(recipe=recipe, recipe_options=opts, **common)
    typer.echo(f"robust model: recipe '{recipe}' {json.dumps(opts)} (test families held out: {held_out})")
    paths = {"none": train(TrainConfig(mode="clean", **common), out / "runs" / "none")}
    paths[recipe] = train(robust, out / "runs" / recipe)
    typer.echo(f"trained in {time.perf_counter() - t0:.1f} s")
    eval_command(
        model=list(paths.values()),
        out=out / "eval",
        corruptions=corruptions,
        severities="1-5",
        data=None,
        data_path=None,
        split="test",
        seed=seed,
        clean=True,
        device=device,
        report=True,
        texture_bias=True,
    )
    import pandas as pd

    from medaudit.texture.verdict import goal_verdict

    results = pd.read_csv(out / "eval" / "results.csv")
    typer.echo(unseen_verdict(results))
    typer.echo(goal_verdict(results))
    typer.echo(_bias_verdict(pd.read_csv(out / "eval" / "texture_bias.csv")))
    typer.echo(f"report: {out / 'eval' / 'report.html'}")
    typer.echo(f"demo wall time: {time.perf_counter() - t0:.1f} s")


def _bias_verdict(bias: Any) -> str:
    """Which model is more texture-biased, from the texture-bias table (first row: the baseline)."""
    if len(bias) < 2:
        return "texture bias: needs two models"
    b, r = bias.iloc[0], bias.iloc[1]
    word = "LESS" if r["texture_bias"] < b["texture_bias"] else "NOT less"
    return (
        f"texture bias: '{r['model']}' {r['texture_bias']:.2f} vs baseline {b['texture_bias']:.2f}: "
        f"the recipe is {word} texture-biased than the baseline (0 = shape only, 1 = texture only)."
    )


def unseen_verdict(results: Any) -> str:
    """One plain sentence: did each non-baseline model beat the clean baseline on unseen corruption families?

    ``results`` is the long table of :func:`medaudit.texture.evaluate.evaluate`. Unseen corruptions are the
    corrupted conditions (severity > 0) whose family is not among the model's training families
    (the ``seen`` column); both models are compared on exactly those conditions, averaging Dice over classes,
    cases, severities and corruptions as in the mean-Dice table.
    """
    from medaudit.texture.metrics import condition_scores

    base_models = sorted(set(results.loc[results["train_mode"] == "clean", "model"]))
    others = sorted(set(results.loc[results["train_mode"] != "clean", "model"]))
    if not base_models or not others:
        return "verdict: needs one clean baseline and one other model"
    base = base_models[0]
    sc = condition_scores(results)
    lines = []
    for m in others:
        rows = results[(results["model"] == m) & (results["severity"] > 0) & ~results["seen"].astype(bool)]
        unseen = sorted(set(rows["corruption"]))
        if not unseen:
            lines.append(f"verdict: no test corruption is from a family unseen by '{m}'")
            continue
        sel = sc[(sc["severity"] > 0) & sc["corruption"].isin(unseen)]
        per = sel.groupby(["model", "corruption"])["dice"].mean().unstack("corruption")
        d_f, d_b = float(per.loc[m].mean()), float(per.loc[base].mean())
        wins = int((per.loc[m] > per.loc[base]).sum())
        fams = ", ".join(sorted(set(rows["family"])))
        word = "BEAT" if d_f > d_b else "did NOT beat"
        lines.append(
            f"verdict: the model '{m}' {word} the clean baseline on unseen corruption families "
            f"({fams}): mean Dice {d_f:.3f} vs {d_b:.3f} ({d_f - d_b:+.3f}); higher on {wins} of "
            f"{len(unseen)} unseen corruptions."
        )
    return "\n".join(lines)


def _register_study() -> None:
    try:
        from medaudit.texture.study import study_command
    except ModuleNotFoundError:
        return
    app.command("study")(study_command)


_register_study()
