"""The study config file's schema, validated by pydantic (one line naming the file and the key on error).

:func:`medaudit.studies.texture_robustness.study.parse_config` validates a YAML mapping with
:class:`StudyFile` and turns it into the resolved :class:`~.study.StudyConfig`. Rules that span keys
(a dHCP source needs a path; the baseline has no strength; names must be in the corruption registry)
are validators here, so their errors name the key too.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from medaudit.texture.options import DataSource

__all__ = ["DataModel", "FilterModel", "ReportModel", "ResourcesModel", "StudyFile", "TestModel"]

#: TrainConfig fields that describe the data (shared by every model of a study), allowed under ``data``.
DATA_FIELDS: tuple[str, ...] = (
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
BASELINE = "none"


class Config(BaseModel):
    """Strict schema node: unknown keys and NaN / infinite numbers are errors (``parse_config`` turns
    errors into one line)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, v: Any, info: ValidationInfo) -> Any:
        """``seed: true`` is refused, not read as 1."""
        from medaudit.configfile import refuse_bool_number

        return refuse_bool_number(v, cls.model_fields[str(info.field_name)].annotation)


def _known() -> set[str]:
    from medaudit.texture import filters

    return set(filters.list_corruptions())


def _levels(value: Any, lo: int, hi: int) -> list[int]:
    """A level or a non-empty list of distinct levels in ``lo..hi``."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ValueError("expected a non-empty list of integers")
    out: list[int] = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"expected integers, got {v!r}")
        if not lo <= v <= hi:
            raise ValueError(f"{v} is outside {lo}..{hi}")
        if v in out:
            raise ValueError(f"{v} is listed twice")
        out.append(v)
    return out


class DataModel(Config):
    """``data``: the reader, its path and options, and the data fields of TrainConfig."""

    source: DataSource
    path: str | None = Field(None, validate_default=True)
    options: dict[str, Any] = Field(default_factory=dict)
    label_set: str | None = None
    spacing: float | None = Field(None, gt=0, allow_inf_nan=False)
    n_subjects: int | None = Field(None, ge=1)
    phantom_spacing: float | None = Field(None, gt=0, allow_inf_nan=False)
    cache_dir: str | None = None
    val_fraction: float | None = Field(None, ge=0, lt=1, allow_inf_nan=False)
    test_fraction: float | None = Field(None, ge=0, lt=1, allow_inf_nan=False)
    split_seed: int | None = None
    small_policy: Literal["pad", "error"] | None = None

    @field_validator("path")
    @classmethod
    def _path(cls, v: str | None, info: ValidationInfo) -> str | None:
        src = info.data.get("source")
        if src is not None and src != DataSource.mni_phantom and not v:
            raise ValueError(f"data source '{src}' needs a path (set it to your dataset root)")
        if v and "CHANGE_ME" in v:
            raise ValueError(f"placeholder '{v}' not set; point it at your dataset root")
        return v

    def settings(self) -> dict[str, Any]:
        """The TrainConfig data fields that were set."""
        return {k: getattr(self, k) for k in DATA_FIELDS if getattr(self, k) is not None}


class FilterModel(Config):
    """One entry of ``train_filters``: a registry filter and its strengths, or the ``none`` baseline."""

    name: str
    severities: Any = Field(None, validate_default=True)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if v != BASELINE and v not in _known():
            raise ValueError(f"unknown filter '{v}'; known: {', '.join(sorted(_known()))}")
        return v

    @field_validator("severities")
    @classmethod
    def _severities(cls, v: Any, info: ValidationInfo) -> list[int]:
        if info.data.get("name") == BASELINE:
            if v not in (None, [0], 0):
                raise ValueError("the 'none' baseline has no strength")
            return [0]
        if v is None:
            raise ValueError("required key is missing (strengths 1..5)")
        return _levels(v, 1, 5)


class TestModel(Config):
    """``test``: the corruptions x severities every model is evaluated on."""

    corruptions: list[str] = Field(min_length=1)
    severities: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5])
    seed: int = Field(0, ge=0)
    group: Literal["model", "corruption"] = "model"
    severity_version: Literal[1, 2] = 2

    @field_validator("corruptions")
    @classmethod
    def _corruptions(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("a corruption is listed twice")
        for c in v:
            if c == BASELINE:
                raise ValueError("'none' (clean) is always evaluated; do not list it")
            if c not in _known():
                raise ValueError(f"unknown corruption '{c}'; known: {', '.join(sorted(_known()))}")
        return v

    @field_validator("severities", mode="before")
    @classmethod
    def _severities(cls, v: Any) -> list[int]:
        return _levels(v, 1, 5)


#: most bootstrap resamples of the report's intervals: each resample's mean is kept, so 10**12 asked for
#: terabytes after every model of the study was trained and evaluated
MAX_BOOTSTRAP = 1_000_000


class ReportModel(Config):
    bootstrap: int = Field(2000, ge=1, le=MAX_BOOTSTRAP)


class ResourcesModel(Config):
    cpus_per_task: float = Field(1.0, ge=0, allow_inf_nan=False)
    gpus_per_task: float = Field(0.0, ge=0, allow_inf_nan=False)


class StudyFile(Config):
    """The whole study config file (``configs/study_small.yaml`` is a commented example)."""

    name: str | None = None
    data: DataModel
    train: dict[str, Any] = Field(default_factory=dict)
    train_filters: list[FilterModel] = Field(min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0])
    recipes: Any = None
    test: TestModel
    report: ReportModel = Field(default_factory=ReportModel)
    resources: ResourcesModel = Field(default_factory=ResourcesModel)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("expected a non-empty string")
        return v

    @field_validator("train", "report", "resources", mode="before")
    @classmethod
    def _empty(cls, v: Any) -> Any:
        return {} if v is None else v

    @field_validator("train_filters", mode="before")
    @classmethod
    def _filters(cls, v: Any) -> Any:
        if isinstance(v, list):
            v = [{"name": x} if isinstance(x, str) else x for x in v]
            names = [x.get("name") for x in v if isinstance(x, dict)]
            dup = next((n for i, n in enumerate(names) if n in names[:i]), None)
            if dup is not None:
                raise ValueError(f"filter '{dup}' is listed twice")
        return v

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds(cls, v: Any) -> list[int]:
        return _levels(v, 0, 2**31 - 1)
