"""The texture-robustness study as one declarative config: tasks with content keys, a resumable runner.

A study (Chai, Rueckert & Fetit, MIUA 2021) trains one segmentation model per *training filter* x
*strength* x *seed* (always including ``none``, the clean baseline) and tests every model on
*test corruptions* x *severities* it never saw in training. This module turns a YAML config into
that grid:

* :func:`load_config` validates the YAML and returns a :class:`StudyConfig` (every problem is an
  :class:`~medaudit.errors.InputError` naming the config file and the key at fault);
* :func:`build_tasks` expands it into :class:`Task` objects. Every training and every evaluation is
  a task whose ``key`` is the SHA-256 of the canonical JSON of everything that determines its
  result (its parameters, the keys of the tasks it depends on and the package version), so a
  changed parameter gives a new key and an unchanged one is found again;
* :func:`run_study` runs the tasks that are not finished yet, locally (sequentially or in a
  process pool) or on Ray, shows progress with an ETA, and appends each evaluation's rows to ONE
  Parquet table, ``results.parquet``, through :class:`ResultStore` (part file written atomically,
  then an atomic compaction: the table on disk is always complete);
* :func:`study_command` is the typer command ``medaudit texture study CONFIG``.

Training, evaluation, filters and data loading are *not* implemented here: the tasks call
:func:`medaudit.texture.train.train`, :func:`medaudit.texture.evaluate.evaluate` and the corruption
registry :mod:`medaudit.texture.filters`.

Output folder layout::

    OUT/study.json           the resolved config and the task list (keys)
    OUT/train/<key>/         one folder per training task (checkpoint + ``done.json`` marker)
    OUT/parts/<key>.parquet  one part per finished evaluation task (the marker that it is done)
    OUT/results.parquet      all parts of this study, compacted
    OUT/report.html          the study report (:mod:`medaudit.studies.texture_robustness.report`)
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from medaudit import __version__
from medaudit.errors import InputError
from medaudit.io import atomic_write_json, missing_reason
from medaudit.rungrid import (
    ResultStore,
    Task,
    check_ray_address,
    code_fingerprint,
    make_backend,
    run_grid,
    task_key,
    worker_threads,
)
from medaudit.studies.texture_robustness.config import DATA_FIELDS
from medaudit.studies.texture_robustness.recipe_grid import parse_recipes, recipe_train_specs
from medaudit.texture.filters.registry import CLEAN

__all__ = [
    "TEXTURE_CODE",
    "DataSpec",
    "FilterSpec",
    "StudyConfig",
    "StudyRun",
    "build_tasks",
    "execute_task",
    "load_config",
    "parse_config",
    "run_study",
    "study_command",
    "study_task_key",
]

BASELINE = CLEAN  # the clean baseline: one name, from the corruption registry
_CONFIG_DIR = Path(__file__).with_name("configs")

# --------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataSpec:
    """Where the volumes come from.

    ``source`` is a reader name of :mod:`medaudit.data.mri` (``mni-phantom``, ``dhcp``,
    ``folder``, ``csv``); ``path`` its root folder or table (``None`` for the embedded phantom
    cohort); ``options`` extra keyword arguments for the reader; ``settings`` the data fields of
    :class:`~medaudit.texture.train.TrainConfig` (``label_set``, ``spacing``, ``n_subjects``,
    ``phantom_spacing``, ``cache_dir``, ``val_fraction``, ``test_fraction``, ``split_seed``,
    ``small_policy``). Every model of a study shares the same data and the same test split.
    """

    source: str
    path: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "path": self.path,
            "options": dict(self.options),
            **{k: self.settings[k] for k in sorted(self.settings)},
        }


@dataclass(frozen=True)
class FilterSpec:
    """One training filter and the strengths (severity levels 1..5) it is trained at."""

    name: str
    severities: tuple[int, ...]


@dataclass(frozen=True)
class StudyConfig:
    """A validated study config (see ``configs/study_small.yaml`` for a commented example)."""

    name: str
    data: DataSpec
    train: Mapping[str, Any]
    train_filters: tuple[FilterSpec, ...]
    seeds: tuple[int, ...]
    test_corruptions: tuple[str, ...]
    test_severities: tuple[int, ...]
    eval_seed: int = 0
    recipes: tuple[Any, ...] = ()  # recipe_grid.RecipeEntry: recipe models next to train_filters
    severity_version: int = 2  # severity table of the test levels (medaudit.texture.severity)
    eval_group: Literal["model", "corruption"] = "model"
    bootstrap: int = 2000
    cpus_per_task: float = 1.0
    gpus_per_task: float = 0.0
    source: str = "<config>"

    def as_json(self) -> dict[str, Any]:
        """The config as plain JSON (what :func:`parse_config` reads back)."""
        return {
            "name": self.name,
            "data": self.data.as_json(),
            "train": dict(self.train),
            "train_filters": [{"name": f.name, "severities": list(f.severities)} for f in self.train_filters],
            "seeds": list(self.seeds),
            "recipes": [
                {"name": r.name, "options": dict(r.options), "label": r.label, "left_out": r.left_out}
                for r in self.recipes
            ],
            "test": {
                "corruptions": list(self.test_corruptions),
                "severities": list(self.test_severities),
                "seed": self.eval_seed,
                "group": self.eval_group,
                "severity_version": self.severity_version,
            },
            "report": {"bootstrap": self.bootstrap},
            "resources": {"cpus_per_task": self.cpus_per_task, "gpus_per_task": self.gpus_per_task},
        }


def load_config(path: str | os.PathLike[str]) -> StudyConfig:
    """Read and validate a study YAML file.

    ``path`` may also be the name of a shipped config (``study_small``, ``study_full``).
    Raises :class:`InputError` naming the file and the key at fault.
    """
    import yaml

    from medaudit.configfile import load_yaml_strict, read_config_text

    p = Path(path)
    if not p.exists() and not p.suffix and (_CONFIG_DIR / f"{p.name}.yaml").exists():
        p = _CONFIG_DIR / f"{p.name}.yaml"
    if not p.exists():
        shipped = ", ".join(sorted(c.stem for c in _CONFIG_DIR.glob("*.yaml")))
        hint = f"; shipped configs: {shipped}" if not p.suffix and len(p.parts) == 1 else ""
        raise InputError(f"{p}: {missing_reason(p, 'study config')}{hint}")
    try:
        raw = load_yaml_strict(read_config_text(p, "study config"), str(p))
    except (OSError, UnicodeDecodeError) as exc:  # a folder, a binary file, an unreadable file
        raise InputError(f"{p}: not a readable YAML file ({type(exc).__name__}: {exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise InputError(f"{p}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    return parse_config(raw, source=str(p))


def _err(source: str, key: str, msg: str) -> InputError:
    return InputError(f"{source}: key '{key}': {msg}")


def _typed_train(train: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The study's ``train`` block with every value validated (and coerced) by its TrainConfig field,
    constraints included (a NaN or negative ``lr`` is refused here, naming ``train.lr``)."""
    from medaudit.texture.train_config import check_field

    return {k: check_field(k, v, f"{source}: key 'train.{k}'") for k, v in train.items()}


def _train_config_fields() -> set[str]:
    from medaudit.texture.train_config import TrainConfig

    return set(TrainConfig.model_fields)


# TrainConfig fields the study sets itself for every task (the user may not set them under 'train').
_STUDY_OWNED_TRAIN_FIELDS = (
    "filter_name",
    "filter_severity",
    "recipe",
    "recipe_options",
    "seed",
    "data_source",
    "data_path",
    "data_options",
)
# TrainConfig fields that describe the data: they go under 'data' (shared by every task).
_DATA_FIELDS = DATA_FIELDS  # one home: the config schema


def parse_config(raw: Any, source: str = "<config>") -> StudyConfig:
    """Validate a config mapping (the parsed YAML) with :class:`.config.StudyFile`; a :class:`StudyConfig`."""
    from pydantic import ValidationError

    from medaudit.configfile import validation_error
    from medaudit.studies.texture_robustness.config import StudyFile

    if not isinstance(raw, Mapping):
        raise InputError(f"{source}: a study config must be a mapping of keys (name, data, train, ...)")
    try:
        f = StudyFile.model_validate(dict(raw))
    except ValidationError as exc:
        raise validation_error(exc, source) from None
    filters = [FilterSpec(m.name, tuple(m.severities)) for m in f.train_filters]
    if not any(x.name == BASELINE for x in filters):
        filters.insert(0, FilterSpec(BASELINE, (0,)))  # the clean baseline is always part of a study
    data = DataSpec(
        source=str(f.data.source), path=f.data.path, options=dict(f.data.options), settings=f.data.settings()
    )
    cfg = StudyConfig(
        name=(f.name or Path(source).stem).strip(),
        data=data,
        train=_parse_train(f.train, source),
        train_filters=tuple(filters),
        seeds=tuple(f.seeds),
        test_corruptions=tuple(f.test.corruptions),
        test_severities=tuple(f.test.severities),
        eval_seed=f.test.seed,
        eval_group=f.test.group,
        recipes=parse_recipes(f.recipes, source),
        severity_version=int(f.test.severity_version),
        bootstrap=f.report.bootstrap,
        cpus_per_task=f.resources.cpus_per_task,
        gpus_per_task=f.resources.gpus_per_task,
        source=source,
    )
    _check_trainable(cfg, source)
    _check_reader_options(cfg, source)
    return cfg


def _check_reader_options(cfg: StudyConfig, source: str) -> None:
    """``data.options`` the reader takes, each of the right kind (an unknown one was a TypeError in
    every training task)."""
    from medaudit.data.mri import check_reader_options

    try:
        check_reader_options(cfg.data.source, cfg.data.options)
    except InputError as exc:
        raise _err(source, "data.options", str(exc)) from None


def check_study_data(cfg: StudyConfig, read_volumes: bool = True) -> None:
    """List the cases of the study's data (the simulated cohort excepted: its first task builds it),
    so that a missing path, a wrong layout or a case without its label map is one line naming the
    config key, exit 2, before the output folder is claimed (it failed every training task instead:
    exit 1, with the folder and its study.json left behind). With ``read_volumes`` (a study with tasks
    still to run) every case is also read and checked once, one at a time, as a training reads it
    (:func:`medaudit.data.mri.check_case`): a NaN, constant, 4D or misaligned scan failed every
    training task the same way."""
    from medaudit.data.mri import check_case, get_cases

    if cfg.data.source == "mni-phantom":
        if read_volumes:  # build (or check) the cached cohort: a cache path under a file, or one that
            _build_cohort(cfg)  # cannot be made, failed every training task (exit 1, folder left)
        return
    try:
        cases = get_cases(cfg.data.source, cfg.data.path, **cfg.data.options)
        if read_volumes:
            label_set = cfg.data.settings.get("label_set") or _train_config_default("label_set")
            for case in cases:
                check_case(case, label_set, cfg.data.settings.get("spacing"))
    except InputError as exc:
        raise _err(cfg.source, "data", str(exc)) from None


def _build_cohort(cfg: StudyConfig) -> None:
    """Build the simulated cohort of the study's first training, as that training would, or verify its
    cache (a damaged cached file is built again); an error names the config's ``data`` key."""
    from medaudit.texture.train import load_data

    first = next(t for t in build_tasks(cfg) if t.kind == "train")
    try:
        load_data(_make_train_config(first.spec))
    except InputError as exc:
        raise _err(cfg.source, "data", str(exc)) from None


def _train_config_default(name: str) -> Any:
    from medaudit.texture.train_config import TrainConfig

    return getattr(TrainConfig(), name)


def _parse_train(train: Any, source: str) -> dict[str, Any]:
    """The ``train`` block: TrainConfig fields the study does not set itself, each value type-checked."""
    if not isinstance(train, Mapping):
        raise _err(source, "train", "expected a mapping of training settings (model, budget)")
    fields = _train_config_fields()
    for k in train:
        if k in _STUDY_OWNED_TRAIN_FIELDS:
            raise _err(
                source, f"train.{k}", "set by the study for each task; use train_filters / recipes / seeds"
            )
        if k in _DATA_FIELDS:
            raise _err(source, f"train.{k}", "a data setting; put it under 'data'")
        if k not in fields:
            allowed_t = sorted(fields - set(_STUDY_OWNED_TRAIN_FIELDS) - set(_DATA_FIELDS))
            raise _err(source, f"train.{k}", f"not a TrainConfig field; allowed: {', '.join(allowed_t)}")
    if train.get("mode", "filtered") not in ("filtered", "online"):
        raise _err(source, "train.mode", "expected 'filtered' (the study's protocol) or 'online'")
    typed = _typed_train(train, source)
    if typed.get("device") is not None:  # spelling now; availability where the tasks run (check_study_device)
        from medaudit.device import check_device

        device = check_device(typed["device"], flag=f"{source}: key 'train.device'", here=False)
        if device is None:  # auto: each task picks CUDA when present
            del typed["device"]
        else:
            typed["device"] = device
    return typed


def _check_trainable(cfg: StudyConfig, source: str) -> None:
    """Let TrainConfig check the values too, once per kind of model."""
    for t in build_tasks(cfg):
        if t.kind == "train" and (t.spec["seed"] == cfg.seeds[0]):
            try:
                _make_train_config(t.spec)
            except InputError as exc:
                raise _trainconfig_error(source, str(exc)) from None
            except (TypeError, ValueError) as exc:
                raise _err(source, "train", f"invalid value ({exc})") from None


def _trainconfig_error(source: str, msg: str) -> InputError:
    """A TrainConfig error under the study's key of that field: ``data.label_set`` for a data field
    (it was named ``train``), ``train.<field>`` otherwise."""
    m = re.match(r"TrainConfig: key '(\w+)': (.*)", msg)
    if m is None:
        return _err(source, "train", msg)
    field = m.group(1)
    if field == "data_options":  # the study's data.options
        return _err(source, "data.options", m.group(2))
    return _err(source, f"{'data' if field in _DATA_FIELDS else 'train'}.{field}", m.group(2))


# --------------------------------------------------------------------------------------------------
# Tasks and keys
# --------------------------------------------------------------------------------------------------


#: The code a study task runs (a change to any of these files changes every key).
TEXTURE_CODE = ("texture", "data/mri.py", "stats.py")


def study_task_key(kind: str, spec: Mapping[str, Any], upstream: Sequence[str] = ()) -> str:
    """:func:`medaudit.rungrid.task_key` with the texture code's fingerprint."""
    return task_key(kind, spec, upstream, code=code_fingerprint(*TEXTURE_CODE))


def build_tasks(config: StudyConfig) -> list[Task]:
    """Expand a config into training and evaluation tasks (each training followed by its evaluations).

    Training: one per filter x strength x seed (``none`` once per seed). Evaluation: per model, the
    clean test set (severity 0) plus every test corruption x severity; ``test.group: corruption``
    splits that into one task per corruption (finer resume / more parallelism).
    """
    tasks: list[Task] = []
    data = config.data.as_json()
    # seed-major order: a partly finished run has every filter at the first seed(s)
    combos = [(seed, f, sev) for seed in config.seeds for f in config.train_filters for sev in f.severities]
    specs = [
        {
            "data": data,
            "train": dict(sorted(config.train.items())),
            "train_filter": f.name,
            "train_severity": int(sev),
            "seed": int(seed),
        }
        for seed, f, sev in combos
    ]
    specs += recipe_train_specs(config.recipes, config.seeds, data, config.train)
    for spec in sorted(specs, key=lambda sp: sp["seed"]):  # stable: filters before recipes per seed
        f, sev, seed = FilterSpec(spec["train_filter"], ()), spec["train_severity"], spec["seed"]
        key = study_task_key("train", spec)
        model = f.name if "recipe" in spec else f"{f.name}@{sev}"
        label = f"train {model} seed={seed}"
        tasks.append(Task("train", key, spec, (), label))
        groups: list[tuple[str, list[str]]]
        if config.eval_group == "model":
            groups = [("all", list(config.test_corruptions))]
        else:
            groups = [(BASELINE, [])] + [(c, [c]) for c in config.test_corruptions]
        for gname, corrs in groups:
            espec = {
                "data": data,
                "clean": gname in ("all", BASELINE),
                "corruptions": corrs,
                "severities": list(config.test_severities),
                "eval_seed": config.eval_seed,
                "severity_version": config.severity_version,
                "train_filter": f.name,
                "train_severity": int(sev),
                "seed": int(seed),
                **{k: spec[k] for k in ("recipe", "left_out") if k in spec},
            }
            ekey = study_task_key("eval", espec, upstream=[key])
            tasks.append(Task("eval", ekey, espec, (key,), f"eval {model} seed={seed} on {gname}"))
    return tasks


# --------------------------------------------------------------------------------------------------
# Executing one task (runs in the driver, in a pool worker or on a Ray worker)
# --------------------------------------------------------------------------------------------------


def _train_dir(out_dir: Path, key: str) -> Path:
    return out_dir / "train" / key


def _train_marker(out_dir: Path, key: str) -> Path:
    return _train_dir(out_dir, key) / "done.json"


def _make_train_config(spec: Mapping[str, Any]) -> Any:
    """The :class:`~medaudit.texture.train.TrainConfig` of a training task's spec."""
    from medaudit.texture.train_config import TrainConfig

    d = dict(spec["data"])
    train = dict(spec["train"])
    clean = spec["train_filter"] == BASELINE
    kw: dict[str, Any] = {
        **train,
        **{k: d[k] for k in _DATA_FIELDS if k in d},
        "data_source": d["source"],
        "data_path": d.get("path"),
        "data_options": dict(d.get("options") or {}),
        "mode": "clean" if clean or "recipe" in spec else train.get("mode", "filtered"),
        "filter_name": None if clean or "recipe" in spec else spec["train_filter"],
        "filter_severity": 0 if clean or "recipe" in spec else int(spec["train_severity"]),
        **(
            {"recipe": spec["recipe"], "recipe_options": dict(spec["recipe_options"])}
            if "recipe" in spec
            else {}
        ),
        "seed": int(spec["seed"]),
    }
    return TrainConfig(**kw)


def _test_cases(checkpoint: Path) -> list[Any]:
    """The held-out test cases of a training run (its ``split.json``; the same for every model)."""
    from medaudit.data.mri import VolumeCase

    split = json.loads((checkpoint.parent / "split.json").read_text())
    return [VolumeCase.from_dict(c) for c in split["test"]]


def execute_task(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Run one task and return its result (picklable; runs anywhere that sees ``out_dir``).

    ``payload``: ``kind``, ``key``, ``spec``, ``out_dir``, ``threads`` and, for an evaluation,
    ``checkpoint`` (the path its training task produced). A training returns ``{"checkpoint": str}``
    after writing its ``done.json`` marker; an evaluation returns ``{"rows": DataFrame}`` (the
    driver appends it to the results table).
    """
    import torch

    threads = int(payload.get("threads") or 0)
    if threads > 0:
        torch.set_num_threads(threads)
    out_dir = Path(payload["out_dir"])
    spec = payload["spec"]
    key = payload["key"]
    if payload["kind"] == "train":
        from medaudit.texture.train import train

        tdir = _train_dir(out_dir, key)
        _set_aside_damaged_checkpoint(tdir / "checkpoint.pt")
        ckpt = Path(train(_make_train_config(spec), tdir, resume=True))
        atomic_write_json(
            _train_marker(out_dir, key),
            {"key": key, "checkpoint": os.path.relpath(ckpt, tdir), "spec": spec, "medaudit": __version__},
        )
        return {"checkpoint": str(ckpt)}
    if payload["kind"] == "eval":
        from medaudit.texture.evaluate import evaluate

        ckpt = Path(payload["checkpoint"])
        cases = _test_cases(ckpt)
        if not cases:
            raise InputError(
                f"{ckpt.parent / 'split.json'}: the test split is empty; raise data.test_fraction"
            )
        corrs = ([BASELINE] if spec["clean"] else []) + list(spec["corruptions"])
        df = evaluate(
            [ckpt],
            cases,
            corrs,
            list(spec["severities"]),
            spec["eval_seed"],
            severity_version=int(spec.get("severity_version", 1)),
        )
        return {"rows": df}
    raise ValueError(f"unknown task kind {payload['kind']!r}")


def _set_aside_damaged_checkpoint(ckpt: Path) -> None:
    """A training's ``checkpoint.pt`` in the study's own folder that cannot be loaded (a disk fault: it
    is written atomically) failed the task on every rerun, asking the user to delete a file inside the
    study; it is kept as ``checkpoint.pt.unreadable-N`` and the training starts over (the same result,
    training being deterministic), with a warning."""
    import warnings

    from medaudit.texture.checkpoint import load_checkpoint
    from medaudit.texture.train import set_aside

    if not ckpt.is_file():
        return
    try:
        load_checkpoint(ckpt)
    except InputError:
        kept = set_aside(ckpt)
        warnings.warn(
            f"{ckpt}: damaged; the training starts over (the unreadable file is kept as {kept.name})",
            stacklevel=2,
        )


@dataclass
class StudyRun:
    """What :func:`run_study` did."""

    out_dir: Path
    tasks: list[Task]
    executed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    results_path: Path | None = None
    report_path: Path | None = None
    wall_s: float = 0.0


def _is_done(task: Task, out_dir: Path, store: ResultStore) -> bool:
    if task.kind == "train":
        marker = _train_marker(out_dir, task.key)
        if not marker.exists():
            return False
        try:
            rel = json.loads(marker.read_text())["checkpoint"]
            return _loadable(_train_dir(out_dir, task.key) / rel) and _has_split(out_dir, task.key)
        except (ValueError, KeyError, TypeError):  # a damaged marker: the task is run again
            return False
    return store.has(task.key)


def _has_split(out_dir: Path, key: str) -> bool:
    """Whether a finished training's ``split.json`` (its test cases, read by its evaluations) reads: a
    missing or damaged one failed every evaluation on every rerun; the training task writes it again."""
    from medaudit.texture.train import read_split

    return read_split(_train_dir(out_dir, key) / "split.json") is not None


def _loadable(model: Path) -> bool:
    """Whether a finished training's model loads: a damaged one (truncated, garbled) makes its task run
    again, and training rebuilds it from the run's checkpoint (its evaluations failed on every rerun)."""
    from medaudit.texture.checkpoint import load_checkpoint

    try:
        load_checkpoint(model)
    except InputError:
        return False
    return True


def _drop_damaged_parts(store: ResultStore, keys: Sequence[str]) -> None:
    """Remove the result parts of ``keys`` that cannot be read (a damaged file in medaudit's own
    ``parts`` folder), so that their evaluations run again instead of failing every compaction."""
    import pyarrow.parquet as pq

    for key in keys:
        part = store.part_path(key)
        if not part.is_file():
            continue
        try:
            pq.read_metadata(part)
        except Exception:  # pyarrow raises ArrowInvalid, OSError, ... for a damaged file
            part.unlink()
            typer.secho(f"warning: {part}: damaged result part removed; its evaluation runs again", err=True)


def _checkpoint_of(out_dir: Path, train_key: str) -> Path:
    rel = json.loads(_train_marker(out_dir, train_key).read_text())["checkpoint"]
    return _train_dir(out_dir, train_key) / rel


def run_study(
    config: StudyConfig,
    out_dir: str | os.PathLike[str],
    *,
    ray_address: str | None = None,
    workers: int = 1,
    executor: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None,
    report: bool = True,
    keep_going: bool = True,
    force: bool = False,
) -> StudyRun:
    """Claim ``out_dir`` as a resumable ``texture-study`` folder (see :mod:`medaudit.outdir`; ``force``
    accepts a folder medaudit did not write), then run :func:`_run_study` in it."""
    from medaudit.outdir import claim_output

    with claim_output(
        out_dir,
        "texture-study",
        force=force,
        in_place=True,
        keep_if=("parts", "train"),
        owns=("parts", "train"),
        writes=("study.json", "results.parquet", "texture_bias.csv", "report.html"),
    ) as c:
        return _run_study(
            config,
            c.path,
            ray_address=ray_address,
            workers=workers,
            executor=executor,
            report=report,
            keep_going=keep_going,
        )


def _run_study(
    config: StudyConfig,
    out_dir: str | os.PathLike[str],
    *,
    ray_address: str | None = None,
    workers: int = 1,
    executor: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None,
    report: bool = True,
    keep_going: bool = True,
) -> StudyRun:
    """Run every unfinished task of ``config`` and write ``results.parquet`` (and the report).

    ``workers`` > 1 uses a local process pool; ``ray_address`` (``"local"`` to start a private Ray
    instance with ``workers`` CPUs, or ``"auto"`` / ``"ray://host:port"``) runs tasks on Ray. The
    output folder must be visible to every worker (a shared filesystem on a cluster); the driver
    alone writes the results table. ``executor`` replaces :func:`execute_task` (for tests: it must
    keep its contract). Failed tasks are recorded in ``StudyRun.failed`` and their dependants skipped;
    with ``keep_going=False`` the first failure is re-raised.
    """
    t0 = time.perf_counter()
    out = Path(out_dir).absolute()
    out.mkdir(parents=True, exist_ok=True)
    tasks = build_tasks(config)
    store = ResultStore(out)
    _write_study_json(out, config, tasks)
    eval_keys = [t.key for t in tasks if t.kind == "eval"]
    _drop_damaged_parts(store, eval_keys)
    store.compact(eval_keys)  # heal an interrupted append; keep only this study's parts
    threads = worker_threads(workers, ray_address, config.cpus_per_task)

    def payload(t: Task) -> dict[str, Any]:
        p: dict[str, Any] = {
            "kind": t.kind,
            "key": t.key,
            "spec": t.spec,
            "out_dir": str(out),
            "threads": threads,
        }
        if t.kind == "eval":
            p["checkpoint"] = str(_checkpoint_of(out, t.upstream[0]))
        return p

    def on_result(t: Task, result: Any) -> None:
        if t.kind == "eval":
            store.append(t.key, _annotate(result["rows"], t))

    grid = run_grid(
        tasks,
        executor or execute_task,
        payload,
        on_result,
        is_done=lambda t: _is_done(t, out, store),
        backend=make_backend(workers, ray_address, config.cpus_per_task, config.gpus_per_task),
        label=f"study {config.name}",
        keep_going=keep_going,
    )
    run = StudyRun(out_dir=out, tasks=tasks, executed=grid.executed, skipped=grid.skipped, failed=grid.failed)
    run.results_path = store.compact(eval_keys)
    if report and run.results_path is not None:
        from medaudit.studies.texture_robustness.report import write_study_report
        from medaudit.texture.bias import write_study_texture_bias

        results = store.read()
        bias = write_study_texture_bias(out, results)
        run.report_path = write_study_report(results, config, out / "report.html", texture_bias=bias)
    run.wall_s = time.perf_counter() - t0
    return run


def _write_study_json(out: Path, config: StudyConfig, tasks: Sequence[Task]) -> None:
    atomic_write_json(
        out / "study.json",
        {
            "config": config.as_json(),
            "source": config.source,
            "medaudit": __version__,
            "tasks": [
                {"kind": t.kind, "key": t.key, "label": t.label, "upstream": list(t.upstream)} for t in tasks
            ],
        },
    )


def _annotate(rows: Any, task: Task) -> Any:
    """Add the study's own columns (strength, seed, keys) to an evaluation's rows."""
    import pandas as pd

    df = pd.DataFrame(rows).copy()
    f, sev, seed = task.spec["train_filter"], int(task.spec["train_severity"]), int(task.spec["seed"])
    recipe = task.spec.get("recipe")
    df["model"] = f"{f if f == BASELINE or recipe else f'{f}@{sev}'} seed={seed}"
    df["recipe"] = recipe or ("clean" if f == BASELINE else "filtered")
    df["left_out"] = task.spec.get("left_out") or ""
    df["train_filter"] = task.spec["train_filter"]
    df["train_severity"] = int(task.spec["train_severity"])
    df["seed"] = int(task.spec["seed"])
    df["train_key"] = task.upstream[0]
    return df


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------


def _default_out(cfg: StudyConfig, config: Path) -> Path:
    """``study-<name>`` in the current folder: a name holding a path separator (``a/b``, ``../x``) would
    make it a folder elsewhere (``study-..`` created on the way), so it needs ``--out``."""
    if "/" in cfg.name or "\\" in cfg.name or any(ord(c) < 32 for c in cfg.name):
        raise InputError(
            f"{config}: key 'name': {cfg.name!r} holds a path separator or a control character, and "
            "names the default output folder study-<name>; change it, or give --out"
        )
    return Path(f"study-{cfg.name}")


def study_command(
    config: Annotated[Path, typer.Argument(help="Study YAML (or a shipped name: study_small, study_full).")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output folder (default: study-<name>).")
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address", help="Run on Ray: 'local' (private instance), 'auto' or ray://host:port."
        ),
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="Parallel tasks (process pool or Ray).")
    ] = 1,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List the tasks, their keys and status; run nothing.")
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Use an --out folder holding files medaudit did not write; they are kept."
        ),
    ] = False,
) -> None:
    """Run a texture-robustness study (training filters x seeds, tested on unseen corruptions); resumable."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    check_ray_address(ray_address)
    cfg = load_config(config)
    if not ray_address and cfg.train.get("device"):  # local tasks: this machine must have the device
        from medaudit.device import check_device

        check_device(cfg.train["device"], flag=f"{config}: key 'train.device'")
    out_dir = out or _default_out(cfg, config)
    tasks = build_tasks(cfg)
    console = Console()
    if dry_run:
        store = ResultStore(out_dir)
        table = Table(title=escape(f"study {cfg.name}: {len(tasks)} tasks"))
        for col in ("kind", "key", "task", "status"):
            table.add_column(col)
        for t in tasks:
            done = _is_done(t, out_dir.absolute(), store)
            table.add_row(t.kind, t.key[:16], escape(t.label), "done" if done else "pending")
        console.print(table)
        n_tr = sum(t.kind == "train" for t in tasks)
        console.print(
            escape(f"{n_tr} training tasks, {len(tasks) - n_tr} evaluation tasks; output folder {out_dir}")
        )
        return
    store = ResultStore(out_dir)
    check_study_data(cfg, read_volumes=not all(_is_done(t, out_dir.absolute(), store) for t in tasks))
    run = run_study(cfg, out_dir, ray_address=ray_address, workers=workers, force=force)
    console.print(
        escape(
            f"study {cfg.name}: {len(run.executed)} tasks run, {len(run.skipped)} already done, "
            f"{len(run.failed)} failed in {run.wall_s:.1f} s"
        )
    )
    if run.results_path:
        console.print(escape(f"results: {run.results_path}"))
    if run.report_path:
        console.print(escape(f"report:  {run.report_path}"))
    if run.failed:
        for k, msg in list(run.failed.items())[:10]:
            # one line whatever the terminal's width (rich wrapped a long message over three)
            console.print(f"[red]failed[/red] {k[:16]}: {escape(' '.join(msg.split()))}", soft_wrap=True)
        raise typer.Exit(1)
