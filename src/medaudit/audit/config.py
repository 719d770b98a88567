"""What defines an audit run: the column map, the modalities, encoders, fusion, slicer and ranking.

This module is the one home of these names and defaults. It imports only pydantic, so the CLI can
build its flags (and report a bad flag) without loading torch or scikit-learn. ``medaudit audit
--config FILE`` reads the same :class:`AuditConfig` as the flags; every flag's default comes from here.
"""

from __future__ import annotations

import math
import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from medaudit.configfile import Config, refuse_bool_number
from medaudit.errors import InputError

__all__ = [
    "DEFAULT_ENCODERS",
    "MODALITIES",
    "AuditConfig",
    "ColumnMap",
    "Fusion",
    "RankRule",
    "SlicerName",
    "check_meta_columns",
]

#: The modalities an audit can embed, in their canonical order.
MODALITIES: tuple[str, ...] = ("image", "report", "metadata")

#: The encoder used for each modality unless another is named.
DEFAULT_ENCODERS: dict[str, str] = {
    "image": "efficientnet-lite0",
    "report": "tfidf-svd",
    "metadata": "tabular",
}


class Fusion(StrEnum):
    """How per-modality embeddings are combined (see :mod:`medaudit.audit.fusion`)."""

    concat = "concat"
    balanced = "balanced"


class SlicerName(StrEnum):
    """The slicer families: embedding slices, readable rule slices, or both in one ranked list."""

    both = "both"
    mixture = "mixture"
    rules = "rules"
    kmeans = "kmeans"


class RankRule(StrEnum):
    """How mixture components are ranked into slices (see :mod:`medaudit.audit.slicers.mixture`)."""

    excess_errors = "excess_errors"
    error_lcb = "error_lcb"
    error = "error"


class _Model(Config):
    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, use_enum_values=True, allow_inf_nan=False
    )  # ConfigDict does not merge with the base's, so its settings are repeated here


#: encoder options (``--encoder-opt MODALITY.KEY=VALUE``) whose values are checked before any work:
#: key -> (smallest value, whether None is allowed)
_ENCODER_INT_OPTS: dict[str, tuple[int, bool]] = {
    "size": (1, True),
    "batch_size": (1, False),
    "dim": (1, False),
    "max_length": (1, False),
    "max_features": (1, True),
    "max_categories": (1, True),
    "num_workers": (0, False),
}
_RESIZE_MODES = ("crop", "pad", "stretch")
#: slicer_kwargs with a range: key -> (low, high, low inclusive)
_SLICER_RANGES: dict[str, tuple[float, float, bool]] = {
    "alpha": (0.0, 1.0, False),
    "max_overlap": (0.0, 1.0, True),
    # the mixture's restarts run side by side, each with its own parameters and responsibilities:
    # ``n_init: 100000000`` grew past 8 GB before the first EM step (docs/audit.md)
    "n_init": (1, 1000, True),
    "max_iter": (1, 1_000_000, True),
}
#: slicer_kwargs that must be whole numbers
_SLICER_INTS = frozenset({"n_init", "max_iter"})
#: the largest image encoder input: ``size`` x ``size`` at most the pixel limit of the images read
#: (``medaudit.data.images.MAX_IMAGE_PIXELS``), and ``batch_size`` of them at most this many pixels
#: (1 GiB of float32). ``image.size=50000`` asked for 10 GB per image (``MemoryError``, exit 1).
MAX_IMAGE_INPUT_PIXELS = 64_000_000
MAX_IMAGE_BATCH_PIXELS = 2**28
#: the largest weight of a modality in the fused space (weights are relative; 1e300 overflowed float32)
MAX_FUSION_WEIGHT = 1e6


def _non_finite(value: Any, path: str) -> str | None:
    """The path of the first NaN / infinite number in a (nested) option value, else ``None``."""
    if isinstance(value, float) and not math.isfinite(value):
        return path
    if isinstance(value, dict):
        return next((q for k, v in value.items() if (q := _non_finite(v, f"{path}.{k}"))), None)
    if isinstance(value, (list, tuple)):
        return next((q for i, v in enumerate(value) if (q := _non_finite(v, f"{path}[{i}]"))), None)
    return None


def _check_encoder_opt(mod: str, key: str, value: Any) -> None:
    where = f"{mod}.{key}"
    if (bad := _non_finite(value, where)) is not None:
        raise ValueError(f"{bad}: must be a finite number, got {value!r}")
    if key in _ENCODER_INT_OPTS:
        low, none_ok = _ENCODER_INT_OPTS[key]
        if value is None and none_ok:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            what = "a positive integer" if low == 1 else "an integer >= 0"
            raise ValueError(f"{where}: must be {what}, got {value!r}")
    elif key == "resize_mode" and value not in _RESIZE_MODES:
        raise ValueError(f"{where}: choose one of {', '.join(_RESIZE_MODES)}, got {value!r}")


def _check_image_input(opts: dict[str, Any]) -> None:
    """The image encoder's input, ``size`` x ``size``, and a batch of them within the limits above
    (checked before any image is read)."""
    size = opts.get("size", 224)  # every image encoder's default
    if not isinstance(size, int) or isinstance(size, bool):
        return  # None: the model's own size
    if size * size > MAX_IMAGE_INPUT_PIXELS:
        raise ValueError(
            f"image.size: {size} x {size} is over the limit of {MAX_IMAGE_INPUT_PIXELS:,} pixels per image"
        )
    batch = opts.get("batch_size", 32)
    if (
        isinstance(batch, int)
        and not isinstance(batch, bool)
        and batch * size * size > MAX_IMAGE_BATCH_PIXELS
    ):
        raise ValueError(
            f"image.batch_size: {batch} images of {size} x {size} is over the limit of "
            f"{MAX_IMAGE_BATCH_PIXELS:,} pixels per batch; lower image.batch_size or image.size"
        )


#: pairs of column roles that may read the same column
_SHAREABLE_ROLES = (frozenset(("id", "image")), frozenset(("id", "report_path")), frozenset(("prob", "pred")))


def _role_flag(role: str) -> str:
    return f"--{role.replace('_', '-')}-col"


class ColumnMap(_Model):
    """Names of the user's columns for each role. ``None`` means the role is absent.

    ``prob`` is the predicted probability of the positive class; ``pred`` a hard 0/1 prediction that may
    be given instead of (or in addition to) ``prob``. ``report`` holds report text; ``report_path``
    (alternative) holds paths to report text files. Relative image / report paths are resolved against
    the folder of the table file (or the working directory for a DataFrame).
    """

    id: str = "id"
    label: str = "label"
    prob: str | None = "prob"
    pred: str | None = None
    image: str | None = "image"
    report: str | None = "report"
    report_path: str | None = None

    @model_validator(mode="after")
    def _one_role_per_column(self) -> ColumnMap:
        """Refuse one table column given two roles (``prob: label`` audits a classifier that makes no
        error). A path may be the id, and a hard 0/1 column may be read as both prob and pred."""
        seen: dict[str, str] = {}
        for role in ("id", "label", "prob", "pred", "image", "report", "report_path"):
            col = getattr(self, role)
            if col is None or (role == "report" and self.report_path is not None):
                continue  # no such role, or the report text is read from the files in report_path
            first = seen.setdefault(col, role)
            if first != role and frozenset((first, role)) not in _SHAREABLE_ROLES:
                raise ValueError(
                    f"columns {first} and {role} ({_role_flag(first)}, {_role_flag(role)}) both name "
                    f"table column '{col}': give each role its own column"
                )
        return self


#: the column roles a metadata column may not take: (ColumnMap field, what it is, its flag, why)
_RESERVED_ROLES = (
    ("id", "id", "--id-col", ""),
    ("label", "label", "--label-col", " (the slices would be explained by the answer itself)"),
    ("prob", "probability", "--prob-col", " (the slices would be explained by the prediction itself)"),
    ("pred", "prediction", "--pred-col", " (the slices would be explained by the prediction itself)"),
    ("image", "image", "--image-col", ""),
    ("report", "report", "--report-col", ""),
    ("report_path", "report path", "--report-path-col", ""),
)


def check_meta_columns(meta: list[str] | tuple[str, ...], columns: ColumnMap) -> None:
    """Refuse a metadata column named twice, or one that has another role in ``columns`` (the id, the
    label, the probability or prediction, the image or report column): one line naming ``--meta`` and
    the column. The label and the prediction would leak the answer into the slices' explanations."""
    seen: set[str] = set()
    for m in meta:
        if m in seen:
            raise InputError(f"--meta '{m}': named more than once")
        seen.add(m)
    for field, what, flag, why in _RESERVED_ROLES:
        col = getattr(columns, field)
        if field == "report" and columns.report_path is not None:
            continue  # the report text is read from the files named by report_path
        if col is not None and col in seen:
            raise InputError(f"--meta '{col}': the {what} column ({flag}) cannot also be metadata{why}")
    if "label" in seen:  # the rule predicates "label = 0/1" are the ground truth's
        raise InputError(
            "--meta 'label': the name 'label' is reserved for the ground-truth predicates (label = 0 / 1); "
            "rename that metadata column"
        )


class AuditConfig(_Model):
    """Everything that defines an audit run. Defaults follow the multimodal study, except the ranking.

    Attributes:
        columns: the table's column names per role.
        meta: metadata columns (used by the metadata encoder and the enrichment tests).
        modalities: any subset of ``image``, ``report``, ``metadata``; ``None`` = image and report, plus
            metadata when ``meta`` is given.
        encoders: encoder name per modality (defaults: :data:`DEFAULT_ENCODERS`).
        encoder_kwargs: extra keyword arguments per modality for ``get_encoder``.
        fusion / fusion_weights / fusion_dim: passed to :func:`medaudit.audit.fusion.fuse`.
        slicer: ``mixture`` (Domino-style error-aware Gaussian mixture), ``kmeans``, ``rules``
            (conjunctions of readable predicates, :mod:`medaudit.audit.slicers.rules`; no embeddings
            needed) or ``both`` (default: mixture and rules in one ranked list,
            :mod:`medaudit.audit.rule_audit`; see docs/concepts.md for the evidence).
        concepts: a YAML concept lexicon (default: the built-in one, docs/concepts.md).
        concept_qualifiers: also read side, site and severity qualifiers of affirmed mentions
            (``atelectasis (left)``, ``cardiomegaly (mild)``) as concepts, each kept when at least
            ``rule_min_support`` reports carry it (docs/concepts.md).
        rule_max_level / rule_min_support: rule length (1-3) and smallest rule slice.
        rule_ngrams: open-vocabulary n-gram predicates offered to the rule search, at most (0: none;
            each in at least ``max(rule_min_support, 0.5%)`` of the reports; the most frequent
            are kept when more qualify).
        rule_exploratory: when fewer than ``n_slices`` rules survive the Benjamini–Hochberg
            correction across every rule tried, fill the list with rules significant before it
            (``p <= 0.05``), flagged ``rule_significant: false`` (leads, not findings; docs/audit.md).
        merge_jaccard: member Jaccard at which two slices of the ranked list are merged.
        n_slices / n_components / y_weight / y_hat_weight / pca: slicer settings (study: 5 slices,
            20 mixture components, label and prediction weights 10, PCA to 128 dimensions).
        rank_by: how the mixture's components are ranked into slices: ``"excess_errors"`` (default: errors
            beyond the overall error rate, so a large failing group outranks a handful of pure errors),
            ``"error_lcb"`` (lower confidence bound of the error rate) or ``"error"`` (Domino's raw
            ``max_c |mean yhat - mean y|``, the study's rule, which favours tiny pure groups).
        min_slice_size: mixture components with a smaller effective size are ranked last.
        slicer_kwargs: further slicer parameters (must be accepted by the slicer).
        threshold: probability cut-off for the hard prediction when no prediction column is given.
        cache_dir: embedding cache (``None``: ``$MEDAUDIT_CACHE`` or ``~/.cache/medaudit``).
        cache_content: image cache keys: ``stat`` (path + size + mtime, default) or ``bytes``.
        ray_address: embed images over this Ray cluster (``auto``, ``ray://host:10001``, ``local``);
            the cache folder must then be on a path every node sees. ``None``: this process only.
        skip_bad: drop bad rows (counted) instead of failing.
        seed: seed of every random step.
        device: torch device for encoders and slicer (``None``: CUDA when present).
        embeddings: precomputed embeddings per modality (path), replacing that modality's encoder.
        top_ngrams / n_exemplars / membership_threshold: explanation settings.
        write_report: also write ``report.html``.
    """

    columns: ColumnMap = Field(default_factory=ColumnMap)
    meta: list[str] = Field(default_factory=list)
    modalities: tuple[str, ...] | None = None
    encoders: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_ENCODERS))
    encoder_kwargs: dict[str, dict[str, Any]] = Field(default_factory=dict)
    fusion: Fusion = Fusion.concat
    fusion_weights: dict[str, Annotated[float, Field(ge=0.0, le=MAX_FUSION_WEIGHT)]] | None = None
    fusion_dim: int = Field(64, ge=1)
    slicer: SlicerName = SlicerName.both
    concepts: Path | None = None
    concept_qualifiers: bool = True
    rule_max_level: int = Field(3, ge=1, le=3)
    rule_min_support: int = Field(10, ge=1)
    rule_ngrams: int = Field(1000, ge=0)
    rule_exploratory: bool = True
    merge_jaccard: float = Field(0.5, gt=0.0, le=1.0)
    n_slices: int = Field(5, ge=1)
    n_components: int = Field(20, ge=1)
    y_weight: float = Field(10.0, ge=0.0)
    y_hat_weight: float = Field(10.0, ge=0.0)
    pca: int | None = Field(128, ge=1)
    rank_by: RankRule = RankRule.excess_errors
    min_slice_size: float = Field(0.0, ge=0.0)
    slicer_kwargs: dict[str, Any] = Field(default_factory=dict)
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    cache_dir: Path | None = None
    cache_content: Literal["stat", "bytes"] = "stat"
    ray_address: str | None = None
    skip_bad: bool = False
    seed: int = Field(0, ge=0, le=2**32 - 1)  # numpy and torch seeds are unsigned 32-bit
    device: str | None = None
    embeddings: dict[str, Path] = Field(default_factory=dict)
    top_ngrams: int = Field(10, ge=1)
    n_exemplars: int = Field(8, ge=1)
    membership_threshold: float = Field(0.5, ge=0.0, le=1.0)
    write_report: bool = True

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, v: Any, info: Any) -> Any:
        return refuse_bool_number(v, cls.model_fields[info.field_name].annotation)

    @field_validator("concepts", "cache_dir")
    @classmethod
    def _home_path(cls, v: Path | None) -> Path | None:
        """``~`` is the home folder in a config file too (only the shell expands it, on the command line:
        ``cache_dir: ~/cache`` in a YAML file made a folder named ``~`` in the current one)."""
        return v.expanduser() if v is not None else None

    @field_validator("embeddings")
    @classmethod
    def _home_paths(cls, v: dict[str, Path]) -> dict[str, Path]:
        return {m: p.expanduser() for m, p in v.items()}

    @field_validator("fusion_weights")
    @classmethod
    def _fusion_weight_keys(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        for k in v or {}:
            if k not in MODALITIES:
                raise ValueError(f"weight for '{k}', which is not a modality ({', '.join(MODALITIES)})")
        return v

    @field_validator("encoders")
    @classmethod
    def _encoder_keys(cls, v: dict[str, str]) -> dict[str, str]:
        for k in v:  # a misspelt modality ('reports') was ignored: the default encoder ran silently
            if k not in MODALITIES:
                raise ValueError(f"encoder for '{k}', which is not a modality ({', '.join(MODALITIES)})")
        return v

    @field_validator("encoder_kwargs")
    @classmethod
    def _encoder_opts(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for mod, opts in v.items():
            if mod not in MODALITIES:
                raise ValueError(f"unknown modality '{mod}' (choose from {', '.join(MODALITIES)})")
            for key, value in opts.items():
                _check_encoder_opt(mod, key, value)
            if mod == "image":
                _check_image_input(opts)
        return v

    @field_validator("slicer_kwargs")
    @classmethod
    def _slicer_opts(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key, value in v.items():
            if (bad := _non_finite(value, key)) is not None:
                raise ValueError(f"{bad}: must be a finite number, got {value!r}")
            if key in _SLICER_RANGES:
                lo, hi, lo_incl = _SLICER_RANGES[key]
                ok = isinstance(value, int if key in _SLICER_INTS else (int, float))
                ok = ok and not isinstance(value, bool)
                ok = ok and (lo <= value if lo_incl else lo < value) and value <= hi
                if not ok:
                    span = f"{'[' if lo_incl else '('}{lo:,}, {hi:,}]"
                    what = "be a whole number in" if key in _SLICER_INTS else "lie in"
                    raise ValueError(f"{key}: must {what} {span}, got {value!r}")
        return v

    def resolved_modalities(self) -> tuple[str, ...]:
        """The modalities used, validated."""
        mods = self.modalities
        if mods is None:
            mods = ("image", "report", "metadata") if self.meta else ("image", "report")
        mods = tuple(dict.fromkeys(m.strip().lower() for m in mods if m.strip()))
        if not mods:
            raise InputError("no modality selected (choose from image, report, metadata)")
        for m in mods:
            if m not in MODALITIES:
                raise InputError(f"unknown modality '{m}' (choose from {', '.join(MODALITIES)})")
        for m in self.embeddings:
            if m not in MODALITIES:
                raise InputError(
                    f"--embeddings: unknown modality '{m}' (choose from {', '.join(MODALITIES)})"
                )
            if m not in mods:
                raise InputError(
                    f"--embeddings: modality '{m}' is not among the selected modalities {','.join(mods)}"
                )
        if str(self.slicer) != SlicerName.rules:  # the rule search fuses nothing
            self._check_fusion_weights(mods)
        return mods

    def _check_fusion_weights(self, mods: tuple[str, ...]) -> None:
        """Weights only for selected modalities (fusion refused the others after every case was
        embedded), and not 0 for all of them (the fused space would hold nothing but zeros)."""
        weights = self.fusion_weights or {}
        for m in weights:
            if m not in mods:
                raise InputError(
                    f"fusion_weights: modality '{m}' is not among the selected modalities {','.join(mods)}"
                )
        if weights and all(weights.get(m, 1.0) == 0 for m in mods):
            raise InputError(
                "fusion_weights: every selected modality has weight 0 (the slices would see no embedding)"
            )

    def resolved_cache_dir(self) -> Path:
        if self.cache_dir is not None:
            return Path(self.cache_dir)
        from medaudit.io import default_cache_dir

        return default_cache_dir().expanduser()  # MEDAUDIT_CACHE='~/cache' set without a shell

    def input_paths(self) -> list[Path | None]:
        """The inputs the configuration names (the embedding cache, the lexicon, embeddings files): an
        output folder holding one is refused before any work."""
        return [self.resolved_cache_dir(), self.concepts, *self.embeddings.values()]

    def min_cases(self, family: str | None = None) -> int:
        """The fewest cases the slicers of ``family`` (default: the configured slicer) can work with."""
        mixture = (family or self.slicer) in ("mixture", "domino", "both")
        return max(self.n_components if mixture else 0, self.n_slices, 2)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written into slices.json (modalities and cache folder resolved)."""
        d = self.model_dump(mode="json")
        d["modalities"] = list(self.resolved_modalities())
        d["cache_dir"] = str(self.resolved_cache_dir())
        return d


def load_audit_config(path: str | os.PathLike[str], **overrides: Any) -> AuditConfig:
    """An :class:`AuditConfig` from a YAML/JSON file (``medaudit audit --config FILE``)."""
    from medaudit.configfile import read_config

    return read_config(path, AuditConfig, **overrides)
