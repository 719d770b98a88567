"""3D textural filters and corruptions (texture robustness, Chai, Rueckert & Fetit, MIUA 2021).

Each filter is a deterministic :class:`Filter` with explicit parameters (``GaussianNoise(std=0.05,
seed=0)``) plus a ``Random*`` wrapper that samples them and records what it applied
(``last_params`` / ``last_record``; :func:`replay` rebuilds it).  Inputs are floating tensors
``(C, D, H, W)`` or ``(B, C, D, H, W)`` with intensities in about ``[0, 1]``; outputs keep shape, dtype and
device, and all computation runs on the input's device (CPU or CUDA, batched).

The registry (:data:`FILTERS`, :data:`SEVERITY`, :func:`get_corruption`) gives one severity table per
filter, levels 1..5 (0 = clean).  See ``docs/filters.md``.
"""

from medaudit.texture.filters.base import Filter, Identity, RandomFilter, as_batch
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
from medaudit.texture.filters.registry import (
    FAMILIES,
    FILTERS,
    SEVERITY,
    FilterSpec,
    family_of,
    get_corruption,
    list_corruptions,
    make_filter,
    make_random,
    replay,
    severity_params,
)
from medaudit.texture.filters.resolution import LowResolution, RandomLowResolution


def __getattr__(name: str):  # adapters import MONAI / TorchIO lazily
    if name in ("FilterD", "LabelIntensityRemapD", "as_torchio"):
        from medaudit.texture.filters import adapters

        return getattr(adapters, name)
    raise AttributeError(name)


__all__ = [
    "FAMILIES",
    "FILTERS",
    "SEVERITY",
    "BiasField",
    "Contrast",
    "Filter",
    "FilterD",
    "FilterSpec",
    "Gamma",
    "GaussianBlur",
    "GaussianNoise",
    "Ghosting",
    "GibbsRinging",
    "Identity",
    "LabelIntensityRemap",
    "LabelIntensityRemapD",
    "LowResolution",
    "Motion",
    "RandConv",
    "RandomBiasField",
    "RandomContrast",
    "RandomFilter",
    "RandomGamma",
    "RandomGaussianBlur",
    "RandomGaussianNoise",
    "RandomGhosting",
    "RandomGibbsRinging",
    "RandomLabelIntensityRemap",
    "RandomLowResolution",
    "RandomMotion",
    "RandomRandConv",
    "RandomRicianNoise",
    "RandomSaltPepperNoise",
    "RandomSpeckleNoise",
    "RandomSpike",
    "RandomUnsharpMask",
    "RandomWrapAround",
    "RicianNoise",
    "SaltPepperNoise",
    "SpeckleNoise",
    "Spike",
    "UnsharpMask",
    "WrapAround",
    "as_batch",
    "as_torchio",
    "family_of",
    "get_corruption",
    "list_corruptions",
    "make_filter",
    "make_random",
    "replay",
    "severity_params",
]
