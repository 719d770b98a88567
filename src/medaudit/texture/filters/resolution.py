"""Low resolution along one axis (thick slices): box-average down, linear interpolation back up."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from medaudit.errors import InputError
from medaudit.texture.filters.base import Filter, RandomFilter, as_range, uniform
from medaudit.texture.filters.ops import along_axis, check_axis


@lru_cache(maxsize=64)
def resample_matrix(n: int, factor: float) -> Tensor:
    """``(n, n)`` matrix of: area (box) downsampling to ``round(n / factor)`` samples, then linear
    upsampling back to ``n`` (PyTorch's ``area`` and ``linear``, ``align_corners=False``)."""
    m = max(1, round(n / factor))
    eye = torch.eye(n, dtype=torch.float64)[:, None, :]  # n impulses, each (1, n)
    low = F.interpolate(eye, size=m, mode="area")
    up = F.interpolate(low, size=n, mode="linear", align_corners=False)
    return up[:, 0, :].T.contiguous().float()  # column j = response to impulse j


class LowResolution(Filter):
    """Anisotropic low resolution: slices ``factor`` times thicker along ``axis``, then resampled back.

    Linear along ``axis`` only, so it is one GEMM with a cached ``(n, n)`` matrix; the other axes are
    untouched (cf. ``tio.RandomAnisotropy``).
    """

    name = "low_resolution"
    family = "resolution"

    def __init__(self, factor: float = 2.0, axis: int = 0) -> None:
        self.factor = factor
        self.axis = axis

    def apply(self, x: Tensor) -> Tensor:
        if self.factor < 1.0:
            raise InputError(f"{self.name}: factor must be >= 1, got {self.factor}")
        axis = check_axis(self.axis, self.name)
        return along_axis(x, resample_matrix(x.shape[2 + axis], float(self.factor)), axis)


class RandomLowResolution(RandomFilter):
    """Like ``tio.RandomAnisotropy``: axis from ``axes``, ``factor ~ U(downsampling)``."""

    filter_cls = LowResolution

    def __init__(
        self,
        axes: Sequence[int] = (0, 1, 2),
        downsampling: tuple[float, float] = (1.5, 5.0),
        p: float = 1.0,
        seed: int | torch.Generator | None = None,
    ) -> None:
        super().__init__(p=p, seed=seed)
        self.axes = axes
        self.downsampling = downsampling

    def sample_params(self, g: torch.Generator) -> dict[str, Any]:
        lo, hi = as_range(self.downsampling, "downsampling")
        axis = int(self.axes[int(torch.randint(len(self.axes), (1,), generator=g))])
        return {"factor": float(uniform(g, max(1.0, lo), max(1.0, hi))), "axis": axis}
