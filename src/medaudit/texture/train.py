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
import random
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import Field, PositiveInt, ValidationError, field_validator, model_validator

from medaudit.configfile import Config
from medaudit.data import mri as tdata
from medaudit.device import default_device, seed_everything
from medaudit.errors import InputError
from medaudit.faults import fault_point
from medaudit.io import atomic_save, atomic_write_json, missing_reason
from medaudit.progress import make_progress
from medaudit.texture.filters.registry import is_clean
from medaudit.texture.preprocess import INPUT_NORMS, normalise_input
from medaudit.texture.severity import SEVERITY_VERSION, wm_label_of

MODES = ("clean", "filtered", "online")

#: most feature channels of one U-Net level: a 3D convolution between two levels of ``c`` channels holds
#: ``27 c^2`` weights, so ``channels: [4, 2**34]`` asked for terabytes and failed inside torch (exit 1)
MAX_CHANNELS = 1024


def refuse_bool_number(value: Any, annotation: Any) -> Any:
    """``value`` unless it is true / false (or a list holding one) for a field of numbers: pydantic
    reads ``iterations: yes`` as 1 and ``severity_version: true`` as the old table."""
    kind = str(annotation)
    items = value if isinstance(value, list) else [value]
    if ("int" in kind or "float" in kind) and any(isinstance(x, bool) for x in items):
        raise ValueError("expected a number, not true/false")
    return value


class TrainConfig(Config):
    """Everything that defines a training run (JSON/YAML-serialisable; validated by pydantic).

    Values are coerced where unambiguous (``iterations: "500"`` is 500, ``lr: 3e-3`` is 0.003) and
    refused otherwise, with one line naming the key; numbers must be finite (no NaN or inf) and in range
    (``lr > 0``, fractions in ``[0, 1)``, counts ``>= 1``).
    """

    # data
    data_source: str = "mni-phantom"  # mni-phantom | dhcp | folder | csv
    data_path: str | None = None
    data_options: dict[str, Any] = Field(default_factory=dict)  # passed to the reader
    label_set: str = "tissue4"
    spacing: float | None = Field(None, gt=0, allow_inf_nan=False)  # resample on load (mm); None: native
    n_subjects: int = Field(8, ge=1)  # mni-phantom only
    phantom_spacing: float = Field(2.5, gt=0, allow_inf_nan=False)  # mni-phantom only
    cache_dir: str | None = None
    val_fraction: float = Field(0.2, ge=0, lt=1, allow_inf_nan=False)
    test_fraction: float = Field(0.2, ge=0, lt=1, allow_inf_nan=False)
    split_seed: int = Field(0, ge=0, lt=2**64)  # numpy's generators take no negative seed
    small_policy: str = "pad"  # pad | error
    # training filter
    mode: str = "clean"
    filter_name: str | None = None
    filter_severity: int | list[int] = 3  # a level 1..5, or [lo, hi] sampled uniformly (inclusive)
    filter_prob: float = Field(0.5, ge=0, le=1, allow_inf_nan=False)  # online mode only
    recipe: str | None = None  # clean | filtered | mixed | bigaug | synthseg | gin (None: from ``mode``)
    recipe_options: dict[str, Any] = Field(default_factory=dict)
    severity_version: int = 2  # severity table of filter_severity / recipe levels (1 = the old table)
    input_norm: str = "none"  # none | zscore | percentile: per-patch / per-window input normalisation
    # model
    channels: list[Annotated[int, Field(ge=1, le=MAX_CHANNELS)]] = Field(
        default_factory=lambda: [8, 16, 32, 64], min_length=2
    )
    num_res_units: int = Field(1, ge=0)
    dropout: float = Field(0.0, ge=0, lt=1, allow_inf_nan=False)
    # optimisation
    patch_size: list[int] = Field(default_factory=lambda: [48, 48, 48])
    batch_size: int = Field(2, ge=1)
    pos_neg_ratio: float = Field(2.0, ge=0, allow_inf_nan=False)  # RandCropByPosNegLabeld pos:neg
    iterations: int = Field(300, ge=1)
    lr: float = Field(2e-3, gt=0, allow_inf_nan=False)
    weight_decay: float = Field(1e-5, ge=0, allow_inf_nan=False)
    seed: int = Field(0, ge=-(2**63), lt=2**64)  # the range torch.manual_seed takes
    amp: bool = True  # used on CUDA only
    val_every: int = Field(100, ge=1)
    checkpoint_every: int = Field(50, ge=1)
    sw_batch_size: int = Field(2, ge=1)
    inference_roi: list[PositiveInt] | None = Field(None, min_length=3, max_length=3)  # default: patch_size
    device: str | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, v: Any, info: Any) -> Any:
        return refuse_bool_number(v, cls.model_fields[info.field_name].annotation)

    @field_validator("data_source", "label_set", "small_policy")
    @classmethod
    def _known_name(cls, v: str, info: Any) -> str:
        """A data source, label set or small-volume policy medaudit knows (named by its key here, not
        only once the data are read)."""
        from medaudit.texture.options import DataSource

        if info.field_name == "label_set":
            tdata.get_label_set(v)
        known = {"data_source": [d.value for d in DataSource], "small_policy": ["pad", "error"]}
        if v not in known.get(info.field_name, [v]):
            raise InputError(f"unknown value '{v}'; choose one of {known[info.field_name]}")
        return v

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.mode not in MODES:
            raise InputError(f"unknown training mode '{self.mode}'; choose one of {list(MODES)}")
        if self.mode != "clean" and not self.filter_name:
            raise InputError(f"training mode '{self.mode}' needs a filter_name")
        if self.recipe is not None and self.mode not in ("clean", self.recipe):
            raise InputError(
                f"set either recipe ('{self.recipe}') or the legacy mode ('{self.mode}'), not both"
            )
        if self.recipe == "filtered" and not self.filter_name:
            raise InputError("recipe 'filtered' needs a filter_name")
        if self.input_norm not in INPUT_NORMS:
            raise InputError(f"unknown input_norm '{self.input_norm}'; choose one of {list(INPUT_NORMS)}")
        sev = self.filter_severity
        levels = [sev] if isinstance(sev, int) else list(sev)
        if not levels or any(not (0 <= int(s) <= 5) for s in levels) or len(levels) > 2:
            raise InputError(f"filter_severity must be a level 0..5 or a [lo, hi] range, got {sev!r}")
        uses_filter = self.recipe == "filtered" or (self.recipe is None and self.mode != "clean")
        if uses_filter and any(int(s) < 1 for s in levels):  # level 0 is the identity: a clean model
            raise InputError(
                f"filter_severity must be a level 1..5 (or a [lo, hi] range of them) with a filter, got {sev!r}"
            )
        if len(self.patch_size) != 3 or any(int(p) < 8 for p in self.patch_size):
            raise InputError(f"patch_size must be three sizes >= 8, got {self.patch_size!r}")
        _check_unet_sizes(self.patch_size, self.inference_roi, len(self.channels))
        if not 0 <= self.val_fraction < 1 or not 0 <= self.test_fraction < 1:
            raise InputError("val_fraction and test_fraction must lie in [0, 1)")
        if self.iterations < 1 or self.batch_size < 1:
            raise InputError("iterations and batch_size must be >= 1")
        self.make_recipe()  # validates the recipe name and options
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    @property
    def roi(self) -> list[int]:
        """Sliding-window size used at inference."""
        return list(self.inference_roi or self.patch_size)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "training config") -> TrainConfig:
        """Validate a mapping; a bad key or value is one :class:`InputError` line naming ``source``."""
        from medaudit.configfile import validation_error

        try:
            return cls.model_validate(d)
        except ValidationError as exc:
            raise validation_error(exc, source) from None

    @property
    def recipe_name(self) -> str:
        """The recipe this config trains with (legacy ``mode`` mapped: ``online`` -> ``mixed``)."""
        if self.recipe is not None:
            return self.recipe
        return {"clean": "clean", "filtered": "filtered", "online": "mixed"}[self.mode]

    def make_recipe(self, spacing: Sequence[float] | None = None, wm_label: int | None = None) -> Any:
        """The :class:`~medaudit.texture.recipes.Recipe` of this config."""
        from medaudit.texture.recipes import make_recipe

        opts = dict(self.recipe_options)
        if self.recipe is None and self.mode == "online":
            opts = {"filters": [self.filter_name], "severity": list(_sev_range(self)), "p": self.filter_prob}
        if self.recipe_name == "filtered":
            if {"filter", "severity"} & set(opts):  # training filters with the config's keys alone
                raise InputError("recipe 'filtered': set filter_name / filter_severity, not recipe_options")
            opts = {"filter": self.filter_name, "severity": list(_sev_range(self)), **opts}  # others checked
        return make_recipe(self.recipe_name, opts, self.severity_version, spacing, wm_label)

    @property
    def train_filter(self) -> str:
        """Label for reports: ``none`` (clean baseline), ``<filter>@<severity>`` or the recipe's label."""
        if self.recipe is not None and self.recipe not in ("clean", "filtered"):
            return str(self.make_recipe().describe())
        if self.recipe_name == "clean":
            return "none"
        sev = self.filter_severity
        s = str(sev) if isinstance(sev, int) else f"{sev[0]}-{sev[-1]}"
        return f"{self.filter_name}@{s}" + ("(online)" if self.mode == "online" else "")

    def key(self) -> str:
        """Content key of the run (excludes the device)."""
        d = self.to_dict()
        d.pop("device", None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


#: largest side of a training patch or inference window: 512^3 float32 voxels are 512 MiB per sample
MAX_PATCH = 512


def _check_unet_sizes(patch: Sequence[int], roi: Sequence[int] | None, levels: int) -> None:
    """The U-Net halves its input ``levels - 1`` times and joins each level to its skip connection:
    every side of the patch (and of the inference window) must be a multiple of ``2**(levels - 1)``,
    leave more than one voxel at the bottom (instance norm), and stay within :data:`MAX_PATCH` (a huge
    patch pads every volume up to it). A size that breaks this failed only inside the first step."""
    step = 2 ** (levels - 1)
    for key, sizes in (("patch_size", patch), ("inference_roi", roi)):
        sides = [int(s) for s in sizes or ()]
        if any(s > MAX_PATCH for s in sides):
            raise InputError(f"{key} {sides}: each size must be at most {MAX_PATCH}")
        if sides and (any(s % step for s in sides) or np.prod([s // step for s in sides]) < 2):
            raise InputError(
                f"{key} {sides}: with {levels} channel levels the U-Net halves it {levels - 1} times; "
                f"each size must be a multiple of {step} with more than one voxel left at the bottom"
            )


def check_field(key: str, value: Any, source: str) -> Any:
    """``value`` validated (and coerced) as the :class:`TrainConfig` field ``key``, with the field's
    constraints (finite, in range); otherwise one :class:`InputError` line naming ``source`` (a flag
    such as ``--lr``, or a config key)."""
    from typing import Annotated

    from pydantic import TypeAdapter

    f = TrainConfig.model_fields[key]
    kind = Annotated[(f.annotation, *f.metadata)] if f.metadata else f.annotation  # type: ignore[valid-type]
    try:
        return TypeAdapter(kind).validate_python(refuse_bool_number(value, f.annotation))
    except (ValidationError, ValueError) as exc:
        msg = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        raise InputError(f"{source}: {msg} (got {value!r:.60})") from None


def load_config(path: str | Path) -> TrainConfig:
    """A :class:`TrainConfig` from a YAML or JSON file (its ``train:`` block, or the whole mapping)."""
    from medaudit.configfile import read_mapping

    d = read_mapping(path)
    if "train" in d and not isinstance(d["train"], dict):
        raise InputError(f"{path}: key 'train': expected a mapping of training keys, got {d['train']!r:.60}")
    return TrainConfig.from_dict(d.get("train", d), str(path))


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


def build_model(
    n_classes: int,
    channels: Sequence[int],
    num_res_units: int = 1,
    dropout: float = 0.0,
    input_norm: str = "none",
) -> torch.nn.Module:
    """MONAI 3D ``UNet`` (instance norm), one input channel; ``model.input_norm`` is its pre-processing."""
    from monai.networks.nets import UNet

    ch = tuple(int(c) for c in channels)
    model = UNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=n_classes,
        channels=ch,
        strides=(2,) * (len(ch) - 1),
        num_res_units=num_res_units,
        dropout=dropout,
    )
    model.input_norm = input_norm
    return model


def sliding_window_predict(
    model: torch.nn.Module,
    image: torch.Tensor,
    roi_size: Sequence[int],
    device: torch.device,
    sw_batch_size: int = 2,
    amp: bool = True,
) -> torch.Tensor:
    """Arg-max labels ``(D,H,W)`` int64 for an image ``(1,D,H,W)`` with sliding-window inference."""
    from monai.inferers import sliding_window_inference

    model.eval()
    norm = str(getattr(model, "input_norm", "none"))
    predictor = model if norm == "none" else (lambda w: model(normalise_input(w, norm)))
    with torch.no_grad(), torch.autocast(device_type=device.type, enabled=amp and device.type == "cuda"):
        logits = sliding_window_inference(
            image[None].to(device),
            tuple(int(r) for r in roi_size),
            sw_batch_size,
            predictor,
            overlap=0.25,
            mode="gaussian",
        )
    return logits.argmax(1)[0].to("cpu")


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
# checkpoints


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    py_state = random.getstate()
    st: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
        "numpy_pos": torch.tensor([int(np_state[2]), int(np_state[3])], dtype=torch.int64),
        "numpy_gauss": torch.tensor([float(np_state[4])], dtype=torch.float64),
        "python": torch.tensor([int(x) for x in py_state[1]], dtype=torch.int64),
        "python_version": torch.tensor([int(py_state[0])], dtype=torch.int64),
    }
    if torch.cuda.is_available():
        st["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return st


def _set_rng_state(st: dict[str, Any]) -> None:
    torch.set_rng_state(st["torch"])
    pos = st["numpy_pos"].tolist()
    np.random.set_state(
        ("MT19937", st["numpy_keys"].numpy().astype(np.uint32), pos[0], pos[1], float(st["numpy_gauss"][0]))
    )
    random.setstate((int(st["python_version"][0]), tuple(int(x) for x in st["python"].tolist()), None))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(st["cuda"]))


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Atomic ``torch.save``."""
    with atomic_save(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` with a one-line InputError naming the file if it is not ours.

    Anything ``weights_only`` refuses (a pickle that would run code), and anything that is not a torch
    file at all, gets the same line; unsafe loading is never suggested.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: {missing_reason(p, 'model file')}")
    if not p.is_file():
        raise InputError(f"{p}: is not a file (expected a model.pt written by medaudit texture train)")
    try:
        with warnings.catch_warnings():  # torch warns about a pickle's protocol before refusing it
            warnings.simplefilter("ignore")
            st = torch.load(p, map_location="cpu", weights_only=True)
    except Exception:
        raise InputError(f"not a medaudit model, or unsafe to load: {p}") from None
    if not isinstance(st, dict):
        raise InputError(f"not a medaudit model, or unsafe to load: {p}")
    return st


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
        lo, hi = _sev_range(config)
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


def _sev_range(config: TrainConfig) -> tuple[int, int]:
    s = config.filter_severity
    if isinstance(s, int):
        return s, s
    return int(s[0]), int(s[-1])


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
    if resume and model_path.is_file():
        try:
            meta = load_checkpoint(model_path)
        except InputError:  # damaged, or not this run's: kept under another name, rebuilt from the run
            kept = _set_aside(model_path)
            warnings.warn(
                f"{model_path}: damaged; it is written again from the run (the unreadable file is kept as "
                f"{kept.name})",
                stacklevel=2,
            )
            meta = {}
        if meta.get("config_key") in keys:
            return model_path
    else:
        meta = {}
    previous = _read_text(out_dir / "config.json")  # before the run writes its own
    run = _setup_run(config, out_dir)  # the data are good: a warning now is not followed by an error
    if meta.get("config_key") is not None:  # a finished run of another config, trained over
        warnings.warn(
            f"{out_dir}: holds a finished run of another config ({_config_change(meta, config)}); "
            "training again replaces its model.pt (to keep it, use another folder)",
            stacklevel=2,
        )
    if resume and ckpt_path.is_file() and not _resume(run, ckpt_path, keys) and not meta:
        warnings.warn(  # an interrupted run of another config: its progress is not silently lost
            f"{out_dir}: holds an interrupted run of another config "
            f"({_config_change({'config': previous}, config)}); training starts over and replaces its "
            "checkpoint.pt (to keep it, use another folder)",
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


def _set_aside(path: Path) -> Path:
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
    )


def _read_text(path: Path) -> str | None:
    """The text of ``path``, or ``None`` when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _resume(run: _Run, ckpt_path: Path, keys: set[str]) -> bool:
    """Continue from a checkpoint of the same config (weights, optimiser, scaler, RNG states, history);
    ``False`` when the checkpoint is of another config (the run starts over)."""
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
    try:
        run.model.load_state_dict(st["model"])
        run.opt.load_state_dict(st["optimizer"])
        run.scaler.load_state_dict(st["scaler"])
        _set_rng_state(st["rng"])
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
            "rng": _rng_state(),
            "iteration": it,
            "config_key": key,
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
        "train_severity": _sev_range(config)[1] if config.filter_name else 0,
        "train_families": list(run.recipe.train_families()),
        "val_dice": [[float(a), float(b)] for a, b in run.history["val_dice"]],
    }
    save_checkpoint(model_path, final)


def _usable_device(spec: str | None) -> str | None:
    """The device a model was trained on when this machine has it, else ``None`` (pick one): a model
    trained with ``device: cuda`` stays usable on a CPU-only machine."""
    from medaudit.device import check_device

    try:
        return check_device(spec)
    except InputError:
        return None


def check_model_meta(st: dict[str, Any]) -> None:
    """The metadata evaluation reads: a text ``train_filter`` (and, when present, text ``filter_name`` /
    ``train_mode``, a level ``train_severity`` 0..5 and a list of family names ``train_families``);
    ``ValueError`` otherwise."""
    if not isinstance(st.get("train_filter"), str):
        raise ValueError("train_filter: missing or not text")
    for key in ("filter_name", "train_mode"):
        if key in st and not isinstance(st[key], str):
            raise ValueError(f"{key}: not text")
    sev = st.get("train_severity", 0)
    if isinstance(sev, bool) or not isinstance(sev, int) or not 0 <= sev <= 5:
        raise ValueError("train_severity: not a level 0..5")
    fams = st.get("train_families", [])
    if not isinstance(fams, list) or not all(isinstance(f, str) for f in fams):
        raise ValueError("train_families: not a list of names")


def load_model(
    path: str | Path, device: str | torch.device | None = None
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild a trained model from ``model.pt``; returns ``(model in eval mode, metadata)``."""
    st = load_checkpoint(path)
    if "state_dict" not in st or "config" not in st:
        raise InputError(
            f"not a medaudit model, or unsafe to load: {path} (use the model.pt written by train)"
        )
    try:
        stored = json.loads(st["config"])
        stored.setdefault("severity_version", 1)  # models trained before severity tables were versioned
        config = TrainConfig.from_dict(stored)
        model = build_model(
            int(st["n_classes"]), config.channels, config.num_res_units, config.dropout, config.input_norm
        )
        model.load_state_dict(st["state_dict"])
        # what evaluation and prediction read: a known label set with these classes
        ls = tdata.get_label_set(st["label_set"])
        if ls.n_classes != int(st["n_classes"]) or [str(c) for c in st["class_names"]] != list(
            ls.class_names
        ):
            raise ValueError("label set, n_classes and class_names disagree")
        check_model_meta(st)
    except Exception:  # a dict that looks like ours but is not: wrong keys, shapes, config or labels
        raise InputError(f"not a medaudit model, or unsafe to load: {path} (inconsistent contents)") from None
    if not all(bool(torch.isfinite(v).all()) for v in model.state_dict().values() if v.is_floating_point()):
        raise InputError(f"{path}: the model's weights hold NaN or infinity (a diverged training run?)")
    dev = default_device(str(device) if device is not None else _usable_device(config.device))
    model.to(dev).eval()
    meta = {k: v for k, v in st.items() if k != "state_dict"}
    meta["config"] = config
    meta["device"] = dev
    meta["path"] = str(path)
    return model, meta
