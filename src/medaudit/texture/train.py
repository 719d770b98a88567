"""3D U-Net training for texture robustness (Chai, Rueckert & Fetit, MIUA 2021).

Modes:

- ``clean``: train on the scans as they are (the baseline).
- ``filtered``: the study's protocol: a filtered copy of the training scans *is* the training set
  (each scan filtered once, with a per-case seed and, for a severity range, a per-case severity).
- ``online``: the filter is applied on the fly, with probability ``filter_prob`` per sampled patch
  (since recipes: the ``mixed`` recipe with that one filter).

``recipe`` (with ``recipe_options``) supersedes ``mode``: ``clean``, ``filtered``, ``mixed``, ``bigaug``,
``synthseg``, ``gin`` (:mod:`medaudit.texture.recipes`); the recipe's transforms run batched on the
training device inside the training loop. ``input_norm`` is the model's own pre-processing (applied
to every patch / sliding window in training, validation, evaluation and prediction).

Determinism: every random choice at iteration ``i`` (which volumes, which patches, online filter
parameters) is drawn from generators seeded by ``(seed, i)``, and checkpoints hold the model,
optimizer, AMP scaler and RNG states (as tensors, loadable with ``weights_only=True``). A run
interrupted and resumed from its last checkpoint therefore equals an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from medaudit.data import mri as tdata
from medaudit.device import default_device, seed_everything
from medaudit.errors import InputError
from medaudit.faults import fault_point
from medaudit.io import atomic_write_json
from medaudit.progress import make_progress
from medaudit.texture.checkpoint import (
    check_model_meta,
    load_checkpoint,
    load_model,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from medaudit.texture.filters.registry import is_clean
from medaudit.texture.preprocess import normalise_input
from medaudit.texture.severity import SEVERITY_VERSION, wm_label_of
from medaudit.texture.train_config import (
    MAX_CHANNELS,
    MAX_PATCH,
    MODES,
    TrainConfig,
    check_field,
    load_config,
    refuse_bool_number,
    severity_range,
)
from medaudit.texture.unet import build_model, sliding_window_predict

__all__ = [
    "MAX_CHANNELS",
    "MAX_PATCH",
    "MODES",
    "TrainConfig",
    "absolute_case",
    "absolute_data_path",
    "apply_corruption",
    "build_model",
    "check_field",
    "check_model_meta",
    "check_test_cases",
    "derive_seed",
    "family_of",
    "load_checkpoint",
    "load_config",
    "load_data",
    "load_model",
    "read_split",
    "refuse_bool_number",
    "save_checkpoint",
    "set_aside",
    "sliding_window_predict",
    "split_cases",
    "train",
    "train_step",
    "training_batch",
    "validate",
]


# --------------------------------------------------------------------------------------------------
# helpers shared with evaluation


def derive_seed(*parts: Any) -> int:
    """A stable 31-bit seed from any printable parts (independent of PYTHONHASHSEED)."""
    h = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


def family_of(name: str | None) -> str:
    """Corruption family of a filter name (``clean`` for no corruption)."""
    if is_clean(name):
        return "clean"
    from medaudit.texture import filters

    return str(filters.family_of(name))


def apply_corruption(
    name: str | None,
    severity: int,
    image: torch.Tensor,
    label: torch.Tensor | None,
    seed: int,
    version: int = SEVERITY_VERSION,
    spacing: Sequence[float] | None = None,
    wm_label: int | None = None,
) -> torch.Tensor:
    """Apply corruption ``name`` at ``severity`` of severity table ``version`` to an image ``(1,D,H,W)``.

    Version 2 (physical levels, :mod:`medaudit.texture.severity`) resolves the filter parameters from
    the scan's ``spacing`` (mm), its WM label ``wm_label`` in ``label`` (else the head's median) and
    its size; version 1 is ``filters.get_corruption(name, severity, seed)``.

    Severity 0 or name ``clean``/``none`` is the identity. Transforms that need the label map (the
    SynthSeg-style per-tissue re-mapping) take it as ``fn(image, label=label)``; MONAI-style dictionary
    transforms (with ``keys``) get ``{"image", "label"}``.
    """
    if is_clean(name) or int(severity) == 0:
        return image
    from medaudit.texture import severity as sv

    fn = sv.get_corruption(name, int(severity), int(seed), version, spacing, wm_label)
    try:
        takes_label = "label" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        takes_label = False
    if takes_label:
        out = fn(image, label=label)
    elif getattr(fn, "keys", None) is not None and not callable(getattr(fn, "keys", None)):
        if label is None:
            raise InputError(f"corruption '{name}' needs a label map")
        out = fn({"image": image, "label": label})
        out = out["image"] if isinstance(out, dict) else out
    else:
        out = fn(image)
    out = torch.as_tensor(out, dtype=torch.float32)
    if not torch.all(torch.isfinite(out)):
        raise RuntimeError(f"corruption '{name}' at severity {severity} produced non-finite values")
    return out


def split_cases(
    cases: Sequence[tdata.VolumeCase], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[tdata.VolumeCase]]:
    """Deterministic train/val/test split by case id (at least one training case)."""
    ids = sorted(c.case_id for c in cases)
    if len(set(ids)) != len(ids):
        raise InputError("duplicate case ids in the data source")
    order = np.random.default_rng(seed).permutation(len(ids))
    by_id = {c.case_id: c for c in cases}
    n = len(ids)
    n_test = round(test_fraction * n)
    n_val = round(val_fraction * n)
    if n - n_test - n_val < 1:
        raise InputError(f"only {n} case(s): not enough for the requested val/test fractions")
    perm = [by_id[ids[i]] for i in order]
    return {"test": perm[:n_test], "val": perm[n_test : n_test + n_val], "train": perm[n_test + n_val :]}


def load_data(config: TrainConfig) -> list[tdata.VolumeCase]:
    """Cases of the configured data source."""
    if config.data_source == "mni-phantom":
        return tdata.build_mni_phantom(
            cache_dir=config.cache_dir,
            n_subjects=config.n_subjects,
            spacing=config.phantom_spacing,
            seed=config.split_seed,
        )
    return tdata.get_cases(config.data_source, config.data_path, **config.data_options)


# --------------------------------------------------------------------------------------------------
# training


def _prepare_volumes(
    config: TrainConfig, cases: Sequence[tdata.VolumeCase], training: bool
) -> list[dict[str, Any]]:
    vols = tdata.load_cases(
        cases,
        label_set=config.label_set,
        spacing=config.spacing,
        min_shape=config.patch_size,
        small_policy=config.small_policy,
    )
    for v, c in zip(vols, cases, strict=True):
        if v["label"] is None:
            raise InputError(f"{c.image}: training and validation need a label map")
    if vols and not any(bool((v["label"] > 0).any()) for v in vols):  # Dice is undefined (MONAI says 0.0)
        where = config.data_path or config.data_source
        split = "training" if training else "validation"
        raise InputError(
            f"{where}: every label map of the {len(vols)} {split} case(s) is all background (no "
            f"'{config.label_set}' foreground label), e.g. {cases[0].label}; check the label files"
        )
    if training and config.recipe_name == "filtered":
        lo, hi = severity_range(config)
        for v in vols:
            rng = np.random.default_rng(derive_seed(config.seed, "filtered", v["case_id"]))
            sev = int(rng.integers(lo, hi + 1))
            v["image"] = apply_corruption(
                config.filter_name,
                sev,
                v["image"],
                v["label"],
                derive_seed(config.seed, "filter", v["case_id"]),
                config.severity_version,
                v["spacing"],
                wm_label_of(config.label_set),
            )
            v["filter_severity"] = sev
    if training:
        from monai.transforms import FgBgToIndicesd

        idx = FgBgToIndicesd(keys="label", image_key=None)
        for v in vols:
            v.update(idx({"label": v["label"]}))
    return vols


def check_test_cases(config: TrainConfig, cases: Sequence[tdata.VolumeCase]) -> None:
    """Read and validate the test cases (readable 3D NIfTI, finite image, a label map of the same grid
    with values in the label set) one at a time, keeping nothing: ``texture eval`` scores them later,
    so a bad one fails now, with one line naming its file, and not after the run is written."""
    for c in cases:
        vol = tdata.load_case(c, label_set=config.label_set, normalise=False)
        if vol["label"] is None:
            raise InputError(f"{c.image}: test cases need a label map (texture eval scores them)")


def absolute_case(case: tdata.VolumeCase) -> tdata.VolumeCase:
    """``case`` with absolute (resolved) paths, as ``split.json`` stores them: readable from any folder."""
    from dataclasses import replace

    def absolute(p: Path | None) -> Path | None:
        return None if p is None else Path(p).resolve()

    return replace(case, image=absolute(case.image), label=absolute(case.label), mask=absolute(case.mask))


def absolute_data_path(config: TrainConfig) -> TrainConfig:
    """``config`` with ``data_path`` absolute and resolved (as ``config.json`` and ``model.pt`` store it),
    so that a later ``eval`` or a resume from another working folder finds the data. A relative path is
    read against the current folder, as the readers always did; a path that cannot be resolved (a
    symlink loop) is left for the reader to name."""
    if config.data_path is None or not str(config.data_path).strip():
        return config
    try:
        absolute = str(Path(config.data_path).resolve())
    except (OSError, RuntimeError):
        return config
    if absolute == config.data_path:
        return config
    return TrainConfig.from_dict({**config.to_dict(), "data_path": absolute})


def _relative_path_key(config: TrainConfig, out_dir: Path) -> list[str]:
    """The content key of a run folder written before ``config.json`` held an absolute ``data_path``,
    when that run is ``config`` (its relative path, read against the current folder, names the same
    data: the only base such a run allows, as it recorded no working folder); else nothing. Lets such
    a run resume (or its finished model be reused) instead of training again."""
    p = out_dir / "config.json"
    try:
        old = json.loads(p.read_text()) if p.is_file() else None
    except (OSError, ValueError):
        return []
    rel = old.get("data_path") if isinstance(old, dict) else None
    if not isinstance(rel, str) or not rel.strip() or Path(rel).is_absolute():
        return []
    try:
        if str(Path(rel).resolve()) != config.data_path:
            return []
        if TrainConfig.from_dict({**old, "data_path": config.data_path}).key() != config.key():
            return []
        return [TrainConfig.from_dict(old).key()]
    except (OSError, RuntimeError, InputError):
        return []


def _sample_batch(
    config: TrainConfig, vols: list[dict[str, Any]], iteration: int
) -> tuple[torch.Tensor, torch.Tensor]:
    from monai.transforms import RandCropByPosNegLabeld

    rng = np.random.default_rng(derive_seed(config.seed, "batch", iteration))
    images, labels = [], []
    for b in range(config.batch_size):
        v = vols[int(rng.integers(len(vols)))]
        img = v["image"]
        crop = RandCropByPosNegLabeld(
            keys=["image", "label"],
            label_key="label",
            spatial_size=tuple(int(p) for p in config.patch_size),
            pos=config.pos_neg_ratio,
            neg=1.0,
            num_samples=1,
            fg_indices_key="label_fg_indices",
            bg_indices_key="label_bg_indices",
            allow_smaller=False,
        )
        crop.set_random_state(seed=derive_seed(config.seed, "crop", iteration, b))
        out = crop(
            {
                "image": img,
                "label": v["label"],
                "label_fg_indices": v["label_fg_indices"],
                "label_bg_indices": v["label_bg_indices"],
            }
        )[0]
        images.append(torch.as_tensor(out["image"]).float())
        labels.append(torch.as_tensor(out["label"]).long())
    return torch.stack(images), torch.stack(labels)


def training_batch(
    config: TrainConfig, recipe: Any, vols: list[dict[str, Any]], iteration: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Patch batch of ``iteration`` on ``device`` with the recipe's transforms applied there (batched).

    The recipe's randomness is seeded by ``(seed, "recipe", iteration)``: reproducible and resumable.
    """
    x, y = _sample_batch(config, vols, iteration)
    x, y = x.to(device), y.to(device)
    return recipe(x, y, derive_seed(config.seed, "recipe", iteration)), y


def validate(
    model: torch.nn.Module,
    vols: Sequence[dict[str, Any]],
    n_classes: int,
    config: TrainConfig,
    device: torch.device,
) -> float:
    """Mean foreground Dice over validation volumes (sliding-window inference)."""
    from monai.metrics import DiceMetric
    from monai.networks.utils import one_hot

    if not vols:
        return float("nan")
    metric = DiceMetric(include_background=False, reduction="mean", ignore_empty=True)
    for v in vols:
        pred = sliding_window_predict(model, v["image"], config.roi, device, config.sw_batch_size, config.amp)
        metric(one_hot(pred[None, None], n_classes), one_hot(v["label"][None], n_classes))
    out = float(metric.aggregate().item())
    metric.reset()
    return out


def train_step(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    loss_fn: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
    use_amp: bool,
) -> torch.Tensor:
    """One optimisation step on a patch batch (mixed precision when ``use_amp``); returns the loss."""
    x, y = x.to(device), y.to(device)
    x = normalise_input(x, str(getattr(model, "input_norm", "none")))
    opt.zero_grad(set_to_none=True)
    with torch.autocast(device_type=device.type, enabled=use_amp):
        loss = loss_fn(model(x), y)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    return loss


def train(
    config: TrainConfig,
    out_dir: str | Path,
    resume: bool = True,
    stop_after: int | None = None,
    progress: bool | None = None,
    on_iteration: Callable[[int, float], None] | None = None,
) -> Path:
    """Train a model; return the path of ``model.pt`` in ``out_dir``.

    ``out_dir`` receives ``checkpoint.pt`` (every ``checkpoint_every`` iterations, atomic),
    ``split.json``, ``config.json``, ``history.json`` and finally ``model.pt`` (weights + config +
    label set + training families). With ``resume`` an existing checkpoint of the same config is
    continued, and a finished run is returned as is. ``stop_after`` stops after that many iterations
    (in total) leaving a checkpoint, as an interruption would; the path returned is then the checkpoint.
    """
    out_dir = Path(out_dir)
    model_path, ckpt_path = out_dir / "model.pt", out_dir / "checkpoint.pt"
    config = absolute_data_path(config)  # config.json and model.pt name the data from any folder
    key = config.key()
    keys = {key, *_relative_path_key(config, out_dir)}  # a run written with a relative data_path
    _check_no_foreign_history(out_dir, model_path)
    meta = _finished_run(model_path) if resume else {}
    if meta.get("config_key") in keys:
        _restore_split(config, out_dir)
        return model_path
    previous = _read_text(out_dir / "config.json")  # before the run writes its own
    run = _setup_run(config, out_dir)  # the data are good: a warning now is not followed by an error
    if meta.get("config_key") is not None:  # a finished run of another config, trained over
        warnings.warn(
            f"{out_dir}: holds a finished run of another config ({_config_change(meta, config)}); "
            "training again replaces its model.pt (to keep it, use another folder)",
            stacklevel=2,
        )
    resumed = _resume(run, ckpt_path, keys) if resume and ckpt_path.is_file() else None
    if resumed is False and not meta:
        warnings.warn(  # an interrupted run of another config: its progress is not silently lost
            f"{out_dir}: holds an interrupted run of another config "
            f"({_config_change({'config': previous}, config)}); training starts over and replaces its "
            "checkpoint.pt (to keep it, use another folder)",
            stacklevel=2,
        )
    elif resumed == "data":
        warnings.warn(  # resumed, it would be a model trained partly on other data than the run reports
            f"{out_dir}: holds an interrupted run whose data have changed since (a scan or label map of "
            "its training or validation cases differs); training starts over and replaces its checkpoint.pt",
            stacklevel=2,
        )
    end = config.iterations if stop_after is None else min(config.iterations, int(stop_after))
    t0 = time.perf_counter()
    with make_progress(disable=None if progress is None else not progress) as prog:
        task = prog.add_task(f"train {config.train_filter}", total=config.iterations, completed=run.start)
        for it in range(run.start, end):
            lv = _iteration(run, config, it)
            if on_iteration is not None:
                on_iteration(it, lv)
            done = it + 1
            if run.val_vols and (done % config.val_every == 0 or done == config.iterations):
                val = validate(run.model, run.val_vols, run.label_set.n_classes, config, run.device)
                run.history["val_dice"].append([done, val])
            if done % config.checkpoint_every == 0 or done == end:
                _checkpoint(run, ckpt_path, done, key)
                fault_point("train:checkpoint")
            prog.update(task, completed=done, description=f"train {config.train_filter} loss {lv:.3f}")
    if end < config.iterations:
        return ckpt_path
    _save_final(run, config, key, model_path)
    atomic_write_json(
        out_dir / "history.json",
        {
            "loss": run.history["loss"],
            "val_dice": run.history["val_dice"],
            "seconds_this_call": time.perf_counter() - t0,
            "train_cases": [c.case_id for c in run.split["train"]],
        },
    )
    return model_path


def read_split(path: Path) -> dict[str, list[tdata.VolumeCase]] | None:
    """The splits of a run's ``split.json`` (``train``, ``val``, ``test``: lists of cases), or ``None``
    when it is missing or does not read as one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        splits = {k: [tdata.VolumeCase.from_dict(c) for c in data[k]] for k in ("train", "val", "test")}
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return splits


def _restore_split(config: TrainConfig, out_dir: Path) -> None:
    """A finished run's ``split.json`` that is missing or damaged (``texture eval`` and a study's
    evaluations read its test cases: they failed on every rerun, a study with a JSONDecodeError) is
    written again from the data, split as the run split them; a damaged one is kept as
    ``split.json.unreadable-N``."""
    path = out_dir / "split.json"
    if read_split(path) is not None:
        return
    cases = load_data(config)
    split = split_cases(cases, config.val_fraction, config.test_fraction, config.split_seed)
    if path.exists() or path.is_symlink():
        kept = set_aside(path)
        warnings.warn(f"{path}: damaged; written again from the data (kept as {kept.name})", stacklevel=3)
    atomic_write_json(path, {k: [absolute_case(c).to_dict() for c in v] for k, v in split.items()})


def _finished_run(model_path: Path) -> dict[str, Any]:
    """The contents of a run folder's ``model.pt`` (``{}`` when there is none). A damaged one, or one
    that is not this run's, is kept under another name and rebuilt from the run, with a warning."""
    if not model_path.is_file():
        return {}
    try:
        return load_checkpoint(model_path)
    except InputError:
        kept = set_aside(model_path)
        warnings.warn(
            f"{model_path}: damaged; it is written again from the run (the unreadable file is kept as "
            f"{kept.name})",
            stacklevel=3,
        )
        return {}


def set_aside(path: Path) -> Path:
    """Rename ``path`` to the first free ``NAME.unreadable-N`` beside it (a file medaudit may not have
    written is never overwritten or deleted); returns the new path."""
    i = 1
    while (kept := path.with_name(f"{path.name}.unreadable-{i}")).exists() or kept.is_symlink():
        i += 1
    from medaudit.outdir import note_write

    note_write(kept)  # kept in the run folder, and listed so that a resume does not refuse it
    os.replace(path, kept)
    return kept


def _check_no_foreign_history(out_dir: Path, model_path: Path) -> None:
    """``history.json`` is written only after ``model.pt``: one in a run folder without a model was put
    there by someone else, and the run would replace it when it ends."""
    history = out_dir / "history.json"
    if (history.exists() or history.is_symlink()) and not model_path.exists():
        raise InputError(
            f"{history}: a run folder without model.pt holds a history.json that medaudit did not write "
            "(it writes one only with the model); move it away, or use another --out"
        )


def _config_change(meta: dict[str, Any], config: TrainConfig) -> str:
    """``differs in: iterations, lr``: the keys (but the device) in which the config stored in a finished
    ``model.pt`` differs from ``config`` (or why they cannot be named)."""
    try:
        old = json.loads(meta["config"])
    except (KeyError, TypeError, ValueError):
        old = None
    new = config.to_dict()
    if not isinstance(old, dict):
        return "its config cannot be read"
    keys = sorted(k for k in old.keys() | new.keys() if k != "device" and old.get(k) != new.get(k))
    return f"differs in: {', '.join(keys)}" if keys else "its config key differs"


@dataclass
class _Run:
    """The state of one training run: data, model, optimiser and history."""

    device: torch.device
    label_set: Any
    split: dict[str, list[Any]]
    train_vols: list[dict[str, Any]]
    val_vols: list[dict[str, Any]]
    recipe: Any
    model: torch.nn.Module
    loss_fn: Any
    opt: torch.optim.Optimizer
    scaler: Any
    use_amp: bool
    start: int = 0
    history: dict[str, list[Any]] = field(default_factory=lambda: {"loss": [], "val_dice": []})

    data_key: str = ""  # _data_key of train_vols and val_vols, as read


def _data_key(*splits: list[dict[str, Any]]) -> str:
    """SHA-256 of the volumes of a run as read (case ids, voxels, labels), stored in its checkpoints: a
    checkpoint of other data (a scan changed on disk since) is not resumed; the config key names the data
    by path only."""
    h = hashlib.sha256()
    for vols in splits:
        for v in vols:
            h.update(str(v["case_id"]).encode() + b"\0")
            for k in ("image", "label"):
                t = v.get(k)
                if t is not None:
                    h.update(str((k, t.dtype, tuple(t.shape))).encode())
                    h.update(t.detach().cpu().contiguous().numpy().tobytes())
        h.update(b"\1")
    return h.hexdigest()


def _setup_run(config: TrainConfig, out_dir: Path) -> _Run:
    """Load and split the data (before anything is written), then build the model, loss and optimiser."""
    device = default_device(config.device)
    seed_everything(config.seed)
    cases = load_data(config)
    ls = tdata.get_label_set(config.label_set)
    try:
        split = split_cases(cases, config.val_fraction, config.test_fraction, config.split_seed)
    except InputError as exc:  # name the data the cases came from
        where = config.data_path or config.data_source
        raise InputError(
            f"{where}: {exc} (val_fraction {config.val_fraction}, test_fraction {config.test_fraction})"
        ) from None
    train_vols = _prepare_volumes(config, split["train"], training=True)
    val_vols = _prepare_volumes(config, split["val"], training=False)
    check_test_cases(config, split["test"])  # every case of every split, before anything is written
    out_dir.mkdir(parents=True, exist_ok=True)  # only once the data are known to be good
    atomic_write_json(
        out_dir / "split.json", {k: [absolute_case(c).to_dict() for c in v] for k, v in split.items()}
    )
    atomic_write_json(out_dir / "config.json", config.to_dict())
    recipe = config.make_recipe(train_vols[0]["spacing"], wm_label_of(ls))
    torch.manual_seed(config.seed)
    model = build_model(
        ls.n_classes, config.channels, config.num_res_units, config.dropout, config.input_norm
    ).to(device)
    from monai.losses import DiceCELoss

    use_amp = config.amp and device.type == "cuda"
    return _Run(
        device=device,
        label_set=ls,
        split=split,
        train_vols=train_vols,
        val_vols=val_vols,
        recipe=recipe,
        model=model,
        loss_fn=DiceCELoss(to_onehot_y=True, softmax=True),
        opt=torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay),
        scaler=torch.amp.GradScaler("cuda", enabled=use_amp),
        use_amp=use_amp,
        data_key=_data_key(train_vols, val_vols),
    )


def _read_text(path: Path) -> str | None:
    """The text of ``path``, or ``None`` when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _resume(run: _Run, ckpt_path: Path, keys: set[str]) -> bool | Literal["data"]:
    """Continue from a checkpoint of the same config (weights, optimiser, scaler, RNG states, history);
    ``False`` when the checkpoint is of another config, ``"data"`` when of the same config but other
    data (a scan changed on disk since it was written): the run starts over."""
    try:
        st = load_checkpoint(ckpt_path)
    except InputError:  # truncated, garbled, not a dict: the run's own file, damaged
        if not ckpt_path.is_file():
            raise
        raise InputError(
            f"{ckpt_path}: a damaged checkpoint (it cannot be loaded); delete it to start the run over"
        ) from None
    if st.get("config_key") not in keys:
        return False
    if st.get("data_key", run.data_key) != run.data_key:  # a checkpoint written before data keys: resumed
        return "data"
    try:
        run.model.load_state_dict(st["model"])
        run.opt.load_state_dict(st["optimizer"])
        run.scaler.load_state_dict(st["scaler"])
        set_rng_state(st["rng"])
        run.start = int(st["iteration"])
        run.history = {"loss": list(st["history_loss"]), "val_dice": [list(x) for x in st["history_val"]]}
    except Exception:  # a torch file of this config with missing keys, wrong shapes or wrong types
        raise InputError(
            f"{ckpt_path}: a damaged checkpoint (inconsistent contents); delete it to start the run over"
        ) from None
    return True


def _iteration(run: _Run, config: TrainConfig, it: int) -> float:
    run.model.train()
    x, y = training_batch(config, run.recipe, run.train_vols, it, run.device)
    loss = train_step(run.model, run.opt, run.scaler, run.loss_fn, x, y, run.device, run.use_amp)
    lv = float(loss.detach().cpu())
    _check_finite_weights(run.model, config, it, lv)
    run.history["loss"].append(lv)
    return lv


def _check_finite_weights(model: torch.nn.Module, config: TrainConfig, it: int, loss: float) -> None:
    """Stop a diverged run before it is checkpointed: NaN or infinite weights make a model that eval and
    predict refuse, and it was saved as a finished model.pt (exit 0). Under AMP the scaler skips a step
    whose gradients overflow, so a non-finite loss alone is not a divergence."""
    if bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all()):
        return
    raise InputError(
        f"training diverged at iteration {it + 1}: the weights became NaN or infinite (loss {loss:.3g}); "
        f"lower 'lr' ({config.lr:g}) or 'weight_decay' ({config.weight_decay:g})"
    )


def _checkpoint(run: _Run, ckpt_path: Path, it: int, key: str) -> None:
    save_checkpoint(
        ckpt_path,
        {
            "model": run.model.state_dict(),
            "optimizer": run.opt.state_dict(),
            "scaler": run.scaler.state_dict(),
            "rng": rng_state(),
            "iteration": it,
            "config_key": key,
            "data_key": run.data_key,
            "history_loss": [float(x) for x in run.history["loss"]],
            "history_val": [[float(a), float(b)] for a, b in run.history["val_dice"]],
        },
    )


def _save_final(run: _Run, config: TrainConfig, key: str, model_path: Path) -> None:
    """``model.pt``: weights, config, label set, recipe and the corruption families it trained on."""
    ls = run.label_set
    final = {
        "state_dict": run.model.state_dict(),
        "config": json.dumps(config.to_dict()),
        "config_key": key,
        "n_classes": ls.n_classes,
        "class_names": list(ls.class_names),
        "label_set": ls.name,
        "train_filter": config.train_filter,
        "train_mode": config.mode if config.recipe is None else config.recipe,
        "recipe": config.recipe_name,
        "severity_version": int(config.severity_version),
        "filter_name": config.filter_name
        or ("none" if config.recipe_name == "clean" else config.train_filter),
        "train_severity": severity_range(config)[1] if config.filter_name else 0,
        "train_families": list(run.recipe.train_families()),
        "val_dice": [[float(a), float(b)] for a, b in run.history["val_dice"]],
    }
    save_checkpoint(model_path, final)
