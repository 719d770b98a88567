"""Gaussian blur and unsharp masking (separable, one GEMM per axis)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from medaudit.texture.filters.base import Filter, RandomFilter, as_range, uniform
from medaudit.texture.filters.ops import gaussian_blur


class GaussianBlur(Filter):
    """Gaussian smoothing with standard deviation ``sigma`` voxels (scalar or per axis D, H, W).

    Edges are replicated (SciPy ``mode='nearest'``); the kernel radius is ``ceil(truncate * sigma)``.
    """

    name = "gaussian_blur"
    family = "blur"

    def __init__(self, sigma: float | Sequence[float] = 1.0, truncate: float = 4.0) -> None:
        self.sigma = sigma
        self.truncate = truncate

    def apply(self, x: Tensor) -> Tensor:
        return gaussian_blur(x, self.sigma, self.truncate)


class UnsharpMask(Filter):
    """Sharpening by unsharp masking: ``x + amount * (x - blur(x, sigma))``."""

    name = "unsharp_mask"
    family = "sharpen"

    def __init__(
        self, sigma: float | Sequence[float] = 1.0, amount: float = 1.0, truncate: float = 4.0
    ) -> None:
        self.sigma = sigma
        self.amount = amount
        self.truncate = truncate

    def apply(self, x: Tensor) -> Tensor:
        return x + self.amount * (x - gaussian_blur(x, self.sigma, self.truncate))


class RandomGaussianBlur(RandomFilter):
    """Per-axis ``sigma ~ U(std)`` voxels, like ``tio.RandomBlur(std=...)``."""

    filter_cls = GaussianBlur

    def __init__(
        self,
        std: float | tuple[float, float] = (0.0, 2.0),
        p: float = 1.0,
        seed: int | torch.Generator | None = None,
    ) -> None:
        super().__init__(p=p, seed=seed)
        self.std = std

    def sample_params(self, g: torch.Generator) -> dict[str, Any]:
        lo, hi = as_range(self.std, "std")
        return {"sigma": uniform(g, lo, hi, 3).tolist(), "truncate": 4.0}


class RandomUnsharpMask(RandomFilter):
    """``sigma ~ U(sigma)`` (isotropic), ``amount ~ U(amount)``; cf. MONAI ``RandGaussianSharpen``."""

    filter_cls = UnsharpMask

    def __init__(
        self,
        sigma: float | tuple[float, float] = (0.5, 1.5),
        amount: float | tuple[float, float] = (0.5, 3.0),
        p: float = 1.0,
        seed: int | torch.Generator | None = None,
    ) -> None:
        super().__init__(p=p, seed=seed)
        self.sigma = sigma
        self.amount = amount

    def sample_params(self, g: torch.Generator) -> dict[str, Any]:
        slo, shi = as_range(self.sigma, "sigma")
        alo, ahi = as_range(self.amount, "amount")
        return {"sigma": float(uniform(g, slo, shi)), "amount": float(uniform(g, alo, ahi)), "truncate": 4.0}
