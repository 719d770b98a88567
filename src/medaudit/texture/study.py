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
    OUT/report.html          the study report (:mod:`medaudit.texture.study_report`)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from medaudit import __version__
from medaudit.errors import InputError
from medaudit.io import atomic_save, atomic_write_json
from medaudit.texture.recipe_grid import parse_recipes, recipe_train_specs

__all__ = [
    "DataSpec",
    "FilterSpec",
    "ResultStore",
    "StudyConfig",
    "StudyRun",
    "Task",
    "build_tasks",
    "canonical_json",
    "code_fingerprint",
    "execute_task",
    "load_config",
    "parse_config",
    "run_study",
    "study_command",
    "task_key",
]

BASELINE = "none"
SEVERITIES = (1, 2, 3, 4, 5)
_CONFIG_DIR = Path(__file__).with_name("configs")

# --------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataSpec:
    """Where the volumes come from.

    ``source`` is a reader name of :mod:`medaudit.texture.data` (``mni-phantom``, ``dhcp``,
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


_TOP_KEYS = {"name", "data", "train", "train_filters", "recipes", "seeds", "test", "report", "resources"}


def load_config(path: str | os.PathLike[str]) -> StudyConfig:
    """Read and validate a study YAML file.

    ``path`` may also be the name of a shipped config (``study_small``, ``study_full``).
    Raises :class:`InputError` naming the file and the key at fault.
    """
    import yaml

    p = Path(path)
    if not p.exists() and not p.suffix and (_CONFIG_DIR / f"{p.name}.yaml").exists():
        p = _CONFIG_DIR / f"{p.name}.yaml"
    if not p.exists():
        raise InputError(f"{p}: study config not found")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise InputError(f"{p}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    return parse_config(raw, source=str(p))


def _err(source: str, key: str, msg: str) -> InputError:
    return InputError(f"{source}: key '{key}': {msg}")


def _as_int_list(value: Any, source: str, key: str, lo: int, hi: int) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value:
        raise _err(source, key, "expected a non-empty list of integers")
    out: list[int] = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int):
            raise _err(source, key, f"expected integers, got {v!r}")
        if not lo <= v <= hi:
            raise _err(source, key, f"{v} is outside {lo}..{hi}")
        if v in out:
            raise _err(source, key, f"{v} is listed twice")
        out.append(v)
    return tuple(out)


def _known_corruptions() -> set[str] | None:
    """Names in the corruption registry, or None while :mod:`medaudit.texture.filters` is absent."""
    try:
        from medaudit.texture import filters
    except ImportError:
        return None
    if not hasattr(filters, "list_corruptions"):
        return None
    return set(filters.list_corruptions())


def _train_config_fields() -> set[str] | None:
    try:
        from medaudit.texture.train import TrainConfig
    except ImportError:
        return None
    return {f.name for f in dataclasses.fields(TrainConfig)}


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
_DATA_FIELDS = (
    "label_set",
    "spacing",
    "n_subjects",
    "phantom_spacing",
    "cache_dir",
    "val_fraction",
    "test_fraction",
    "split_seed",
    "small_policy",
)
_SOURCES = ("mni-phantom", "dhcp", "folder", "csv")


def parse_config(raw: Any, source: str = "<config>") -> StudyConfig:
    """Validate a config mapping (the parsed YAML) and return a :class:`StudyConfig`."""
    if not isinstance(raw, Mapping):
        raise InputError(f"{source}: a study config must be a mapping of keys (name, data, train, ...)")
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise _err(source, unknown[0], f"unknown key; allowed: {', '.join(sorted(_TOP_KEYS))}")
    for key in ("data", "train_filters", "test"):
        if key not in raw:
            raise _err(source, key, "required key is missing")

    name = raw.get("name", Path(source).stem)
    if not isinstance(name, str) or not name.strip():
        raise _err(source, "name", "expected a non-empty string")

    # data
    d = raw["data"]
    if not isinstance(d, Mapping):
        raise _err(source, "data", "expected a mapping with 'source' (and 'path' / 'options')")
    allowed = {"source", "path", "options", *_DATA_FIELDS}
    bad = sorted(set(d) - allowed)
    if bad:
        raise _err(source, f"data.{bad[0]}", f"unknown key; allowed: {', '.join(sorted(allowed))}")
    src = d.get("source")
    if src not in _SOURCES:
        raise _err(source, "data.source", f"expected one of {', '.join(_SOURCES)}, got {src!r}")
    dpath = d.get("path")
    if dpath is not None and not isinstance(dpath, str):
        raise _err(source, "data.path", "expected a path string")
    if src != "mni-phantom" and not dpath:
        raise _err(source, "data.path", f"data source '{src}' needs a path (set it to your dataset root)")
    if dpath and "CHANGE_ME" in dpath:
        raise _err(source, "data.path", f"placeholder '{dpath}' not set; point it at your dataset root")
    opts = d.get("options") or {}
    if not isinstance(opts, Mapping):
        raise _err(source, "data.options", "expected a mapping of reader options")
    data = DataSpec(
        source=src, path=dpath, options=dict(opts), settings={k: d[k] for k in _DATA_FIELDS if k in d}
    )

    # train (model + budget): keyword arguments of TrainConfig
    train = raw.get("train") or {}
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
        if fields is not None and k not in fields:
            allowed_t = sorted(fields - set(_STUDY_OWNED_TRAIN_FIELDS) - set(_DATA_FIELDS))
            raise _err(source, f"train.{k}", f"not a TrainConfig field; allowed: {', '.join(allowed_t)}")
    if train.get("mode", "filtered") not in ("filtered", "online"):
        raise _err(source, "train.mode", "expected 'filtered' (the study's protocol) or 'online'")

    known = _known_corruptions()

    # training filters
    tf = raw["train_filters"]
    if not isinstance(tf, list) or not tf:
        raise _err(source, "train_filters", "expected a non-empty list of {name, severities}")
    filters: list[FilterSpec] = []
    for i, item in enumerate(tf):
        key = f"train_filters[{i}]"
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, Mapping) or "name" not in item:
            raise _err(source, key, "expected a mapping with 'name' and 'severities'")
        bad = sorted(set(item) - {"name", "severities"})
        if bad:
            raise _err(source, f"{key}.{bad[0]}", "unknown key; allowed: name, severities")
        fname = item["name"]
        if not isinstance(fname, str):
            raise _err(source, f"{key}.name", "expected a string")
        if fname == BASELINE:
            if item.get("severities") not in (None, [0], 0):
                raise _err(source, f"{key}.severities", "the 'none' baseline has no strength")
            sev: tuple[int, ...] = (0,)
        else:
            if known is not None and fname not in known:
                raise _err(
                    source, f"{key}.name", f"unknown filter '{fname}'; known: {', '.join(sorted(known))}"
                )
            if "severities" not in item:
                raise _err(source, f"{key}.severities", "required key is missing (strengths 1..5)")
            sev = _as_int_list(item["severities"], source, f"{key}.severities", 1, 5)
        if any(f.name == fname for f in filters):
            raise _err(source, f"{key}.name", f"filter '{fname}' is listed twice")
        filters.append(FilterSpec(fname, sev))
    if not any(f.name == BASELINE for f in filters):
        filters.insert(0, FilterSpec(BASELINE, (0,)))  # the clean baseline is always part of a study

    seeds = _as_int_list(raw.get("seeds", [0]), source, "seeds", 0, 2**31 - 1)

    # test grid
    t = raw["test"]
    if not isinstance(t, Mapping):
        raise _err(source, "test", "expected a mapping with 'corruptions' and 'severities'")
    bad = sorted(set(t) - {"corruptions", "severities", "seed", "group", "severity_version"})
    if bad:
        raise _err(
            source,
            f"test.{bad[0]}",
            "unknown key; allowed: corruptions, severities, seed, group, severity_version",
        )
    sver = t.get("severity_version", 2)
    if sver not in (1, 2):
        raise _err(source, "test.severity_version", "expected 1 (the old table) or 2 (physical levels)")
    corr = t.get("corruptions")
    if not isinstance(corr, list) or not corr or not all(isinstance(c, str) for c in corr):
        raise _err(source, "test.corruptions", "expected a non-empty list of corruption names")
    if len(set(corr)) != len(corr):
        raise _err(source, "test.corruptions", "a corruption is listed twice")
    for c in corr:
        if c == BASELINE:
            raise _err(source, "test.corruptions", "'none' (clean) is always evaluated; do not list it")
        if known is not None and c not in known:
            raise _err(
                source, "test.corruptions", f"unknown corruption '{c}'; known: {', '.join(sorted(known))}"
            )
    tsev = _as_int_list(t.get("severities", list(SEVERITIES)), source, "test.severities", 1, 5)
    eseed = t.get("seed", 0)
    if isinstance(eseed, bool) or not isinstance(eseed, int) or eseed < 0:
        raise _err(source, "test.seed", "expected a non-negative integer")
    group = t.get("group", "model")
    if group not in ("model", "corruption"):
        raise _err(source, "test.group", "expected 'model' (one task per model) or 'corruption'")

    rep = raw.get("report") or {}
    if not isinstance(rep, Mapping) or set(rep) - {"bootstrap"}:
        raise _err(source, "report", "expected a mapping with 'bootstrap' only")
    boot = rep.get("bootstrap", 2000)
    if isinstance(boot, bool) or not isinstance(boot, int) or boot < 1:
        raise _err(source, "report.bootstrap", "expected a positive integer")

    res = raw.get("resources") or {}
    if not isinstance(res, Mapping) or set(res) - {"cpus_per_task", "gpus_per_task"}:
        raise _err(source, "resources", "expected a mapping with 'cpus_per_task' / 'gpus_per_task'")
    cpus, gpus = res.get("cpus_per_task", 1.0), res.get("gpus_per_task", 0.0)
    for k, v in (("cpus_per_task", cpus), ("gpus_per_task", gpus)):
        if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
            raise _err(source, f"resources.{k}", "expected a non-negative number")

    cfg = StudyConfig(
        name=name.strip(),
        data=data,
        train=dict(train),
        train_filters=tuple(filters),
        seeds=seeds,
        test_corruptions=tuple(corr),
        test_severities=tsev,
        eval_seed=int(eseed),
        eval_group=group,
        recipes=parse_recipes(raw.get("recipes"), source),
        severity_version=int(sver),
        bootstrap=int(boot),
        cpus_per_task=float(cpus),
        gpus_per_task=float(gpus),
        source=source,
    )
    if fields is not None:  # let TrainConfig check the values too, once per kind of model
        for t in build_tasks(cfg):
            if t.kind == "train" and (t.spec["seed"] == cfg.seeds[0]):
                try:
                    _make_train_config(t.spec)
                except InputError as exc:
                    raise _err(source, "train", str(exc)) from None
                except (TypeError, ValueError) as exc:
                    raise _err(source, "train", f"invalid value ({exc})") from None
    return cfg


# --------------------------------------------------------------------------------------------------
# Tasks and keys
# --------------------------------------------------------------------------------------------------


def canonical_json(obj: Any) -> str:
    """Canonical JSON: sorted keys, no whitespace, tuples as lists; raises on non-JSON values."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


# The code a task's result depends on (a change to any of these files changes every key).
_CODE_MODULES = (
    "filters",
    "train.py",
    "evaluate.py",
    "data.py",
    "metrics.py",
    "severity.py",
    "recipes.py",
    "preprocess.py",
)
_FINGERPRINT: str | None = None


def code_fingerprint() -> str:
    """SHA-256 of the source of the texture code that tasks run (filters, train, evaluate, data, metrics).

    Part of every task key, so results computed with other code (e.g. a changed filter during
    development) are never mixed into a study. Constant for an installed release.
    """
    global _FINGERPRINT
    if _FINGERPRINT is None:
        root = Path(__file__).parent
        h = hashlib.sha256()
        for name in _CODE_MODULES:
            p = root / name
            files = sorted(p.rglob("*.py")) if p.is_dir() else [p] if p.exists() else []
            for f in files:
                h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
        _FINGERPRINT = h.hexdigest()
    return _FINGERPRINT


def task_key(
    kind: str,
    spec: Mapping[str, Any],
    upstream: Sequence[str] = (),
    version: str = __version__,
    code: str | None = None,
) -> str:
    """SHA-256 (hex, 64 chars) of everything that determines a task's result.

    ``upstream`` are the keys of the tasks this one consumes, so a change anywhere upstream changes
    every key downstream. ``version`` is the medaudit version and ``code`` the
    :func:`code_fingerprint` (default: the installed code's).
    """
    payload = {
        "kind": kind,
        "spec": spec,
        "upstream": list(upstream),
        "medaudit": version,
        "code": code if code is not None else code_fingerprint(),
    }
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Task:
    """One unit of work: a training (``kind='train'``) or an evaluation (``kind='eval'``)."""

    kind: Literal["train", "eval"]
    key: str
    spec: Mapping[str, Any]
    upstream: tuple[str, ...] = ()
    label: str = ""


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
        key = task_key("train", spec)
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
            ekey = task_key("eval", espec, upstream=[key])
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
    from medaudit.texture.train import TrainConfig

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
    from medaudit.texture.data import VolumeCase

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


# --------------------------------------------------------------------------------------------------
# The results table
# --------------------------------------------------------------------------------------------------


class ResultStore:
    """One Parquet table fed by part files.

    :meth:`append` writes ``parts/<key>.parquet`` atomically (the part is the marker that the task is
    done) and then rewrites ``results.parquet`` atomically from the previous table plus the part, so
    readers only ever see a complete table. :meth:`compact` rebuilds the table from the parts alone
    (done at the start and end of every run, which also heals a crash between part and compaction).
    """

    def __init__(self, out_dir: str | os.PathLike[str]) -> None:
        self.out_dir = Path(out_dir)
        self.parts_dir = self.out_dir / "parts"
        self.table_path = self.out_dir / "results.parquet"

    def part_path(self, key: str) -> Path:
        return self.parts_dir / f"{key}.parquet"

    def has(self, key: str) -> bool:
        return self.part_path(key).exists()

    def append(self, key: str, rows: Any) -> Path:
        """Add one task's rows (a DataFrame); the task key is stored in column ``task_key``.

        Parts are immutable: if ``key`` already has a part, that part is kept and ``rows`` ignored.
        """
        import pandas as pd
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.has(key):
            table = pq.read_table(self.part_path(key))
        else:
            df = pd.DataFrame(rows).copy()
            df["task_key"] = key
            table = pa.Table.from_pandas(df, preserve_index=False)
            with atomic_save(self.part_path(key)) as tmp:
                pq.write_table(table, tmp)
        if self.table_path.exists():
            old = pq.read_table(self.table_path)
            if key in set(old.column("task_key").to_pylist()):
                return self.table_path
            table = pa.concat_tables([old, table], promote_options="default")
        with atomic_save(self.table_path) as tmp:
            pq.write_table(table, tmp)
        return self.table_path

    def compact(self, keys: Iterable[str] | None = None) -> Path | None:
        """Rebuild ``results.parquet`` from the parts (only ``keys`` if given, in that order)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if keys is None:
            paths = sorted(self.parts_dir.glob("*.parquet")) if self.parts_dir.exists() else []
        else:
            paths = [self.part_path(k) for k in keys if self.has(k)]
        if not paths:  # nothing of this study is finished: no table (not a stale one from another config)
            self.table_path.unlink(missing_ok=True)
            return None
        table = pa.concat_tables([pq.read_table(p) for p in paths], promote_options="default")
        with atomic_save(self.table_path) as tmp:
            pq.write_table(table, tmp)
        return self.table_path

    def read(self) -> Any:
        import pandas as pd

        if not self.table_path.exists():
            return pd.DataFrame()
        return pd.read_parquet(self.table_path)


# --------------------------------------------------------------------------------------------------
# Runners
# --------------------------------------------------------------------------------------------------


class _Backend:
    """Minimal future-style interface: submit(fn, payload) -> handle; wait() -> [(handle, result|exc)]."""

    def submit(self, fn: Callable[[Mapping[str, Any]], dict[str, Any]], payload: Mapping[str, Any]) -> Any:
        raise NotImplementedError

    def wait(self, handles: list[Any]) -> list[tuple[Any, Any, BaseException | None]]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _Deferred:
    """A call to make later (hashable by identity)."""

    def __init__(self, fn: Callable[[Mapping[str, Any]], dict[str, Any]], payload: Mapping[str, Any]) -> None:
        self.fn, self.payload = fn, payload


class _SerialBackend(_Backend):
    def submit(self, fn: Callable[[Mapping[str, Any]], dict[str, Any]], payload: Mapping[str, Any]) -> Any:
        return _Deferred(fn, payload)

    def wait(self, handles: list[Any]) -> list[tuple[Any, Any, BaseException | None]]:
        h = handles[0]
        try:
            return [(h, h.fn(h.payload), None)]
        except Exception as exc:
            return [(h, None, exc)]


class _PoolBackend(_Backend):
    def __init__(self, workers: int) -> None:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        # spawn: torch and forked OpenMP thread pools do not mix.
        self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"))

    def submit(self, fn: Callable[[Mapping[str, Any]], dict[str, Any]], payload: Mapping[str, Any]) -> Any:
        return self._pool.submit(fn, payload)

    def wait(self, handles: list[Any]) -> list[tuple[Any, Any, BaseException | None]]:
        from concurrent.futures import FIRST_COMPLETED
        from concurrent.futures import wait as fwait

        done, _ = fwait(handles, return_when=FIRST_COMPLETED)
        out = []
        for h in done:
            exc = h.exception()
            out.append((h, None if exc else h.result(), exc))
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class _RayBackend(_Backend):
    def __init__(self, address: str, workers: int, cpus: float, gpus: float) -> None:
        try:
            import ray
        except ImportError:
            raise InputError(
                "--ray-address needs Ray; install it with: pip install 'medaudit[scale]'"
            ) from None
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address == "local":
                ray.init(num_cpus=max(1, workers), **kw)
            else:
                ray.init(address=address, **kw)
            self._started = True
        self._remote_cache: dict[Any, Any] = {}
        self._opts = {"num_cpus": cpus, "num_gpus": gpus, "max_retries": 0}

    def submit(self, fn: Callable[[Mapping[str, Any]], dict[str, Any]], payload: Mapping[str, Any]) -> Any:
        rf = self._remote_cache.get(fn)
        if rf is None:
            rf = self._remote_cache[fn] = self._ray.remote(fn).options(**self._opts)
        return rf.remote(dict(payload))

    def wait(self, handles: list[Any]) -> list[tuple[Any, Any, BaseException | None]]:
        ready, _ = self._ray.wait(handles, num_returns=1)
        out = []
        for h in ready:
            try:
                out.append((h, self._ray.get(h), None))
            except Exception as exc:
                cause = getattr(exc, "cause", None)
                out.append((h, None, cause if isinstance(cause, BaseException) else exc))
        return out

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()


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
        except (ValueError, KeyError):
            return False
        return (_train_dir(out_dir, task.key) / rel).exists()
    return store.has(task.key)


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
) -> StudyRun:
    """Run every unfinished task of ``config`` and write ``results.parquet`` (and the report).

    ``workers`` > 1 uses a local process pool; ``ray_address`` (``"local"`` to start a private Ray
    instance with ``workers`` CPUs, or ``"auto"`` / ``"ray://host:port"``) runs tasks on Ray. The
    output folder must be visible to every worker (a shared filesystem on a cluster); the driver
    alone writes the results table. ``executor`` replaces :func:`execute_task` (for tests: it must
    keep its contract). Failed tasks are recorded in ``StudyRun.failed`` and their dependants skipped;
    with ``keep_going=False`` the first failure is re-raised.
    """
    from medaudit.progress import make_progress

    t0 = time.perf_counter()
    out = Path(out_dir).absolute()
    out.mkdir(parents=True, exist_ok=True)
    tasks = build_tasks(config)
    store = ResultStore(out)
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
    eval_keys = [t.key for t in tasks if t.kind == "eval"]
    store.compact(eval_keys)  # heal an interrupted append; keep only this study's parts

    run = StudyRun(out_dir=out, tasks=tasks)
    pending: list[Task] = []
    for t in tasks:
        if _is_done(t, out, store):
            run.skipped.append(t.key)
        else:
            pending.append(t)
    fn = executor or execute_task
    workers = max(1, int(workers))
    if ray_address:
        backend: _Backend = _RayBackend(ray_address, workers, config.cpus_per_task, config.gpus_per_task)
    elif workers > 1:
        backend = _PoolBackend(workers)
    else:
        backend = _SerialBackend()
    threads = (
        max(1, (os.cpu_count() or 1) // workers) if not ray_address else max(1, int(config.cpus_per_task))
    )

    done_train = {t.key for t in tasks if t.kind == "train" and t.key in set(run.skipped)}
    waiting = list(pending)
    in_flight: dict[Any, Task] = {}
    limit = workers if (ray_address or workers > 1) else 1

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

    progress = make_progress()
    try:
        with progress:
            bar = progress.add_task(f"study {config.name}", total=len(tasks), completed=len(run.skipped))
            while waiting or in_flight:
                # submit every ready task (dependencies finished), up to the worker limit
                blocked: list[Task] = []
                for t in waiting:
                    if any(u in run.failed for u in t.upstream):
                        run.failed[t.key] = "upstream task failed"
                        progress.advance(bar)
                    elif len(in_flight) < limit and all(u in done_train for u in t.upstream):
                        in_flight[backend.submit(fn, payload(t))] = t
                    else:
                        blocked.append(t)
                waiting = blocked
                if not in_flight:
                    if waiting:  # cannot happen with a well-formed task list
                        raise RuntimeError("study scheduler stalled: tasks wait on unknown upstream tasks")
                    break
                for handle, result, exc in backend.wait(list(in_flight)):
                    t = in_flight.pop(handle)
                    if exc is not None:
                        if not keep_going:
                            raise exc
                        run.failed[t.key] = f"{type(exc).__name__}: {exc}"
                        progress.console.print(f"[red]failed[/red] {t.label}: {type(exc).__name__}: {exc}")
                    elif t.kind == "train":
                        done_train.add(t.key)
                        run.executed.append(t.key)
                    else:
                        rows = _annotate(result["rows"], t)
                        store.append(t.key, rows)
                        run.executed.append(t.key)
                    progress.update(bar, advance=1, description=f"study {config.name}: {t.label}")
    finally:
        backend.close()
    run.results_path = store.compact(eval_keys)
    if report and run.results_path is not None:
        from medaudit.texture.bias import write_study_texture_bias
        from medaudit.texture.study_report import write_study_report

        results = store.read()
        bias = write_study_texture_bias(out, results)
        run.report_path = write_study_report(results, config, out / "report.html", texture_bias=bias)
    run.wall_s = time.perf_counter() - t0
    return run


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


def study_command(
    config: Annotated[Path, typer.Argument(help="Study YAML (or a shipped name: study_small, study_full).")],
    out: Annotated[Path | None, typer.Option("--out", help="Output folder (default: study-<name>).")] = None,
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
) -> None:
    """Run a texture-robustness study (training filters x seeds, tested on unseen corruptions); resumable."""
    from rich.console import Console
    from rich.table import Table

    cfg = load_config(config)
    out_dir = out or Path(f"study-{cfg.name}")
    tasks = build_tasks(cfg)
    console = Console()
    if dry_run:
        store = ResultStore(out_dir)
        table = Table(title=f"study {cfg.name}: {len(tasks)} tasks")
        for col in ("kind", "key", "task", "status"):
            table.add_column(col)
        for t in tasks:
            done = _is_done(t, out_dir.absolute(), store)
            table.add_row(t.kind, t.key[:16], t.label, "done" if done else "pending")
        console.print(table)
        n_tr = sum(t.kind == "train" for t in tasks)
        console.print(f"{n_tr} training tasks, {len(tasks) - n_tr} evaluation tasks; output folder {out_dir}")
        return
    run = run_study(cfg, out_dir, ray_address=ray_address, workers=workers)
    console.print(
        f"study {cfg.name}: {len(run.executed)} tasks run, {len(run.skipped)} already done, "
        f"{len(run.failed)} failed in {run.wall_s:.1f} s"
    )
    if run.results_path:
        console.print(f"results: {run.results_path}")
    if run.report_path:
        console.print(f"report:  {run.report_path}")
    if run.failed:
        for k, msg in list(run.failed.items())[:10]:
            console.print(f"[red]failed[/red] {k[:16]}: {msg}")
        raise typer.Exit(1)
