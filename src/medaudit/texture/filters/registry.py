"""Registry of filters and the one severity table per corruption (levels 1..5; 0 = clean).

Severity magnitudes assume intensities normalised to about ``[0, 1]``.  Stochastic parts (noise, spike
positions, motion directions, random kernels, tissue intensities) come from ``seed``; for a fixed
seed the tables are built so that distortion grows monotonically from level 1 to 5.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from medaudit.errors import InputError
from medaudit.texture.filters.base import Filter, Identity, RandomFilter, draw_seed
from medaudit.texture.filters.blur import GaussianBlur, RandomGaussianBlur, RandomUnsharpMask, UnsharpMask
from medaudit.texture.filters.intensity import (
    BiasField,
    Contrast,
    Gamma,
    RandomBiasField,
    RandomContrast,
    RandomGamma,
)
from medaudit.texture.filters.kspace import (
    Ghosting,
    GibbsRinging,
    RandomGhosting,
    RandomGibbsRinging,
    RandomSpike,
    RandomWrapAround,
    Spike,
    WrapAround,
)
from medaudit.texture.filters.motion import Motion, RandomMotion
from medaudit.texture.filters.noise import (
    GaussianNoise,
    RandomGaussianNoise,
    RandomRicianNoise,
    RandomSaltPepperNoise,
    RandomSpeckleNoise,
    RicianNoise,
    SaltPepperNoise,
    SpeckleNoise,
)
from medaudit.texture.filters.randomization import (
    LabelIntensityRemap,
    RandConv,
    RandomLabelIntensityRemap,
    RandomRandConv,
)
from medaudit.texture.filters.resolution import LowResolution, RandomLowResolution

FAMILIES: tuple[str, ...] = (
    "noise",
    "blur",
    "sharpen",
    "kspace",
    "motion",
    "bias",
    "intensity",
    "resolution",
    "texture",
)


def _levels(key: str, values: list[Any], **fixed: Any) -> dict[int, dict[str, Any]]:
    return {i + 1: {key: v, **fixed} for i, v in enumerate(values)}


#: name -> {level: constructor kwargs (without ``seed``)}; level 0 is the identity.
SEVERITY: dict[str, dict[int, dict[str, Any]]] = {
    "gaussian_noise": _levels("std", [0.02, 0.04, 0.06, 0.08, 0.10]),
    "rician_noise": _levels("std", [0.02, 0.04, 0.06, 0.08, 0.10]),
    "salt_pepper": _levels("p", [0.002, 0.005, 0.01, 0.02, 0.04]),
    "speckle_noise": _levels("std", [0.05, 0.10, 0.15, 0.20, 0.30]),
    "gaussian_blur": _levels("sigma", [0.5, 0.75, 1.0, 1.5, 2.0]),
    "unsharp_mask": _levels("amount", [0.5, 1.0, 1.5, 2.0, 3.0], sigma=1.0),
    "gibbs": _levels("keep", [0.8, 0.65, 0.5, 0.4, 0.3]),
    "spike": _levels("intensity", [0.2, 0.4, 0.7, 1.0, 1.5], num_spikes=1),
    "wrap_around": _levels("fraction", [0.1, 0.2, 0.3, 0.4, 0.5], axis=1),
    "ghosting": _levels("intensity", [0.2, 0.35, 0.5, 0.65, 0.8], num_ghosts=4, axis=0),
    # motion: larger movements, and a narrower central band of k-space from the unmoved volume
    "motion": {
        i + 1: {"degrees": d, "translation": d, "num_transforms": 2, "times": [0.5 - w / 2, 0.5 + w / 2]}
        for i, (d, w) in enumerate([(2.0, 0.6), (3.0, 0.5), (4.0, 0.4), (6.0, 0.3), (8.0, 0.2)])
    },
    "bias_field": _levels("magnitude", [0.15, 0.3, 0.45, 0.6, 0.8], order=3),
    "gamma": _levels("gamma", [1.2, 1.4, 1.7, 2.0, 2.5]),
    "contrast": _levels("factor", [0.8, 0.65, 0.5, 0.35, 0.2]),
    "low_resolution": _levels("factor", [1.5, 2.0, 3.0, 4.0, 6.0], axis=0),
    "rand_conv": _levels("alpha", [0.8, 0.6, 0.4, 0.2, 0.0], kernel_size=3),
    "label_remap": _levels("mix", [0.2, 0.4, 0.6, 0.8, 1.0]),
}


@dataclass(frozen=True)
class FilterSpec:
    """One registry entry: the deterministic class, its random wrapper, family and severity table."""

    name: str
    family: str
    cls: type[Filter]
    random_cls: type[RandomFilter]
    severity: Mapping[int, Mapping[str, Any]] = field(repr=False)
    needs_label: bool = False

    @property
    def stochastic(self) -> bool:
        return self.cls.stochastic


_PAIRS: list[tuple[type[Filter], type[RandomFilter]]] = [
    (GaussianNoise, RandomGaussianNoise),
    (RicianNoise, RandomRicianNoise),
    (SaltPepperNoise, RandomSaltPepperNoise),
    (SpeckleNoise, RandomSpeckleNoise),
    (GaussianBlur, RandomGaussianBlur),
    (UnsharpMask, RandomUnsharpMask),
    (GibbsRinging, RandomGibbsRinging),
    (Spike, RandomSpike),
    (WrapAround, RandomWrapAround),
    (Ghosting, RandomGhosting),
    (Motion, RandomMotion),
    (BiasField, RandomBiasField),
    (Gamma, RandomGamma),
    (Contrast, RandomContrast),
    (LowResolution, RandomLowResolution),
    (RandConv, RandomRandConv),
    (LabelIntensityRemap, RandomLabelIntensityRemap),
]

#: name -> :class:`FilterSpec`.
FILTERS: dict[str, FilterSpec] = {
    cls.name: FilterSpec(
        cls.name, cls.family, cls, rnd, SEVERITY[cls.name], needs_label=cls is LabelIntensityRemap
    )
    for cls, rnd in _PAIRS
}


def _spec(name: str) -> FilterSpec:
    try:
        return FILTERS[name]
    except KeyError:
        raise InputError(f"unknown filter '{name}'; known: {', '.join(sorted(FILTERS))}") from None


#: The one name of "no corruption": the clean test scans and the clean-trained baseline model.
CLEAN = "none"
#: Other spellings accepted on input for it (kept for configs and results written before).
CLEAN_ALIASES: tuple[str, ...] = ("clean", "identity")


def is_clean(name: str | None) -> bool:
    """Whether a corruption / training-filter name means "no corruption"."""
    return not name or name == CLEAN or name in CLEAN_ALIASES


def list_corruptions(family: str | None = None) -> list[str]:
    """Filter names (registry order), optionally only those of ``family``."""
    if family is not None and family not in FAMILIES:
        raise InputError(f"unknown filter family '{family}'; known: {', '.join(FAMILIES)}")
    return [n for n, s in FILTERS.items() if family is None or s.family == family]


def family_of(name: str) -> str:
    """The family (``noise``, ``blur``, ..., ``texture``) of filter ``name``."""
    return _spec(name).family


def severity_params(name: str, severity: int) -> dict[str, Any]:
    """Constructor kwargs of ``name`` at ``severity`` (1..5), from :data:`SEVERITY`."""
    table = _spec(name).severity
    if severity not in table:
        raise InputError(f"{name}: severity must be 0..{max(table)}, got {severity}")
    return dict(table[severity])


def make_filter(name: str, **params: Any) -> Filter:
    """The deterministic filter ``name`` with explicit ``params``."""
    try:
        return _spec(name).cls(**params)
    except TypeError as exc:
        raise InputError(f"{name}: bad parameters {sorted(params)} ({exc})") from None


def make_random(name: str, **kwargs: Any) -> RandomFilter:
    """The ``Random*`` wrapper of ``name`` (TorchIO-style ranges as kwargs)."""
    return _spec(name).random_cls(**kwargs)


def replay(record: Mapping[str, Any]) -> Filter:
    """Rebuild the exact filter from a ``{"name", "params"}`` record (``Filter.record`` or ``last_record``)."""
    if record.get("params") is None:
        return Identity()
    return make_filter(str(record["name"]), **dict(record["params"]))


def get_corruption(
    name: str, severity: int, seed: int | torch.Generator | None = None
) -> Callable[[Tensor], Tensor]:
    """The corruption ``name`` at ``severity`` (0 = identity) as a tensor -> tensor callable.

    ``seed`` fixes the stochastic part (a ``torch.Generator`` gives one drawn int seed); ``None`` leaves
    it to torch's global RNG.  The returned object is a :class:`Filter` (``record()`` reproduces it).
    """
    spec = _spec(name)
    if severity == 0:
        return Identity()
    params = severity_params(name, severity)
    if spec.stochastic:
        params["seed"] = draw_seed(seed) if isinstance(seed, torch.Generator) else seed
    return spec.cls(**params)
