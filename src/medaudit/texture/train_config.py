"""The training configuration of :mod:`medaudit.texture.train`: :class:`TrainConfig`, its bounds and
field checks, and reading it from a YAML or JSON file."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import Field, PositiveInt, ValidationError, field_validator, model_validator

from medaudit.configfile import Config, refuse_bool_number
from medaudit.data import mri as tdata
from medaudit.errors import InputError
from medaudit.texture.preprocess import INPUT_NORMS

MODES = ("clean", "filtered", "online")

#: most feature channels of one U-Net level: a 3D convolution between two levels of ``c`` channels holds
#: ``27 c^2`` weights, so ``channels: [4, 2**34]`` asked for terabytes and failed inside torch (exit 1)
MAX_CHANNELS = 1024


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

    @field_validator("data_options")
    @classmethod
    def _reader_options(cls, v: dict[str, Any], info: Any) -> dict[str, Any]:
        """Options the data source's reader takes (named by this key, before any data are read); the
        ``mni-phantom`` cohort takes none: ``load_data`` builds it from ``n_subjects``,
        ``phantom_spacing`` and ``cache_dir``, so its options were dropped without a word."""
        source = info.data.get("data_source")
        if source == "mni-phantom" and v:
            raise InputError(
                f"the mni-phantom cohort takes no reader options (got {', '.join(map(repr, v))}); "
                "set n_subjects, phantom_spacing or cache_dir instead"
            )
        if source is not None:
            tdata.check_reader_options(source, v)
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
        _check_batch_voxels("batch_size", self.batch_size, "patch_size", self.patch_size)
        _check_batch_voxels("sw_batch_size", self.sw_batch_size, "inference_roi", self.roi)
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
            opts = {
                "filters": [self.filter_name],
                "severity": list(severity_range(self)),
                "p": self.filter_prob,
            }
        if self.recipe_name == "filtered":
            if {"filter", "severity"} & set(opts):  # training filters with the config's keys alone
                raise InputError("recipe 'filtered': set filter_name / filter_severity, not recipe_options")
            opts = {
                "filter": self.filter_name,
                "severity": list(severity_range(self)),
                **opts,
            }  # others checked
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


#: most voxels of one batch of patches (or of sliding windows): two patches of the largest size. Each
#: patch is cropped, stacked and sent through the U-Net at once, so ``batch_size: 1000000`` asked for
#: tens of GB on the first iteration, after the data were read
MAX_BATCH_VOXELS = 2 * MAX_PATCH**3


def _check_batch_voxels(key: str, count: int, size_key: str, size: Sequence[int]) -> None:
    """``count`` patches of ``size`` in one batch hold at most :data:`MAX_BATCH_VOXELS` voxels."""
    voxels = count * int(np.prod([int(s) for s in size], dtype=object))
    if voxels > MAX_BATCH_VOXELS:
        raise InputError(
            f"{key} {count} x {size_key} {'x'.join(str(int(s)) for s in size)} = {voxels:,} voxels per "
            f"batch, more than {MAX_BATCH_VOXELS:,}; lower {key}"
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


def severity_range(config: TrainConfig) -> tuple[int, int]:
    """The lowest and highest training severity of ``config.filter_severity`` (a level or a range)."""
    s = config.filter_severity
    if isinstance(s, int):
        return s, s
    return int(s[0]), int(s[-1])
