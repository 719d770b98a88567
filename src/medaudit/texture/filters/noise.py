"""Noise: Gaussian (additive), Rician (magnitude of complex Gaussian), salt-and-pepper, speckle."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from medaudit.errors import InputError
from medaudit.texture.filters.base import Filter, RandomFilter, as_range, draw_seed, uniform


def per_sample_noise(x: Tensor, filt: Filter, n: int = 1, kind: str = "normal") -> Tensor:
    """``n`` noise fields per sample, shape ``(n, B, C, D, H, W)``; sample ``b`` uses ``filt.seed + b``.

    Drawn in place into one buffer (no copies).
    """
    out = torch.empty((x.shape[0], n, *x.shape[1:]), dtype=x.dtype, device=x.device)
    for b in range(x.shape[0]):
        g = filt._generator(x.device, b)
        if kind == "normal":
            out[b].normal_(generator=g)
        else:
            out[b].uniform_(generator=g)
    return out.transpose(0, 1)


def _check_nonneg(value: float, name: str, what: str) -> None:
    if value < 0:
        raise InputError(f"{name}: {what} must be >= 0, got {value}")


class GaussianNoise(Filter):
    """Additive Gaussian noise: ``x + mean + std * N(0, 1)``."""

    name = "gaussian_noise"
    family = "noise"
    stochastic = True

    def __init__(self, std: float = 0.05, mean: float = 0.0, seed: int | None = None) -> None:
        self.std = std
        self.mean = mean
        self.seed = seed

    def apply(self, x: Tensor) -> Tensor:
        _check_nonneg(self.std, self.name, "std")
        noise = per_sample_noise(x, self)[0]
        out = torch.add(x, noise, alpha=float(self.std))
        return out.add_(float(self.mean)) if self.mean else out


class RicianNoise(Filter):
    """Rician noise: ``sqrt((x + std*n1)^2 + (std*n2)^2)`` with independent ``n1, n2 ~ N(0, 1)``; output >= 0."""

    name = "rician_noise"
    family = "noise"
    stochastic = True

    def __init__(self, std: float = 0.05, seed: int | None = None) -> None:
        self.std = std
        self.seed = seed

    def apply(self, x: Tensor) -> Tensor:
        _check_nonneg(self.std, self.name, "std")
        n = per_sample_noise(x, self, n=2)
        real = torch.add(x, n[0], alpha=float(self.std))
        return torch.hypot(real, n[1].mul_(float(self.std)))


class SaltPepperNoise(Filter):
    """Sets a fraction ``p`` of voxels to the low (pepper) or high (salt) value.

    ``low`` / ``high`` default to each sample-channel's own minimum / maximum.  A voxel is salt with
    probability ``p * salt_ratio`` and pepper with probability ``p * (1 - salt_ratio)``.
    """

    name = "salt_pepper"
    family = "noise"
    stochastic = True

    def __init__(
        self,
        p: float = 0.01,
        salt_ratio: float = 0.5,
        low: float | None = None,
        high: float | None = None,
        seed: int | None = None,
    ) -> None:
        self.p = p
        self.salt_ratio = salt_ratio
        self.low = low
        self.high = high
        self.seed = seed

    def apply(self, x: Tensor) -> Tensor:
        if not 0.0 <= self.p <= 1.0 or not 0.0 <= self.salt_ratio <= 1.0:
            raise InputError(
                f"{self.name}: p and salt_ratio must be in [0, 1], got {self.p}, {self.salt_ratio}"
            )
        u = per_sample_noise(x, self, kind="uniform")[0]
        flat = x.flatten(2)
        lo = (
            flat.amin(-1)
            if self.low is None
            else torch.full(x.shape[:2], self.low, dtype=x.dtype, device=x.device)
        )
        hi = (
            flat.amax(-1)
            if self.high is None
            else torch.full(x.shape[:2], self.high, dtype=x.dtype, device=x.device)
        )
        lo, hi = lo[..., None, None, None], hi[..., None, None, None]
        salt_p = self.p * self.salt_ratio
        out = torch.where(u < salt_p, hi, x)
        return torch.where((u >= salt_p) & (u < self.p), lo, out)


class SpeckleNoise(Filter):
    """Multiplicative (speckle) noise: ``x * (1 + std * N(0, 1))``."""

    name = "speckle_noise"
    family = "noise"
    stochastic = True

    def __init__(self, std: float = 0.1, seed: int | None = None) -> None:
        self.std = std
        self.seed = seed

    def apply(self, x: Tensor) -> Tensor:
        _check_nonneg(self.std, self.name, "std")
        noise = per_sample_noise(x, self)[0]
        return noise.mul_(float(self.std)).add_(1.0).mul_(x)


class RandomGaussianNoise(RandomFilter):
    """``std ~ U(std)`` (scalar ``s`` means ``(0, s)``), ``mean ~ U(mean)``; like ``tio.RandomNoise``."""

    filter_cls = GaussianNoise

    def __init__(
        self,
        std: float | tuple[float, float] = (0.0, 0.1),
        mean: float | tuple[float, float] = 0.0,
        p: float = 1.0,
        seed: int | torch.Generator | None = None,
    ) -> None:
        super().__init__(p=p, seed=seed)
        self.std = std
        self.mean = mean

    def sample_params(self, g: torch.Generator) -> dict[str, Any]:
        lo, hi = as_range(self.std, "std")
        mlo, mhi = as_range(self.mean, "mean", symmetric=True)
        return {"std": float(uniform(g, lo, hi)), "mean": float(uniform(g, mlo, mhi)), "seed": draw_seed(g)}


class RandomRicianNoise(RandomFilter):
    """``std ~ U(std)``; like MONAI ``RandRicianNoise``."""

    filter_cls = RicianNoise

    def __init__(
        self,
        std: float | tuple[float, float] = (0.0, 0.1),
        p: float = 1.0,
        seed: int | torch.Generator | None = None,
    ) -> None:
        super().__init__(p=p, seed=seed)
        self.std = std

    def sample_params(self, g: torch.Generator) -> dict[str, Any]:
        lo, hi = as_range(self.std, "std")
        return {"std": float(uniform(g, lo, hi)), "seed": draw_seed(g)}


class RandomSaltPepperNoise(RandomFilter):
    """Fraction ``p_voxels ~ U(amount)`` of voxels set to min / max."""

    filter_cls = SaltPepperNoise

    def __init__(
        self,
        amount: float | tuple[float, float] = (0.0, 0.05),
        salt_ratio: float = 0.5,
        p: float = 1.0,
        seed: int | torch.Generator | None = None,
    ) -> None:
        super().__init__(p=p, seed=seed)
        self.amount = amount
        self.salt_ratio = salt_ratio

    def sample_params(self, g: torch.Generator) -> dict[str, Any]:
        lo, hi = as_range(self.amount, "amount")
        return {
            "p": float(uniform(g, lo, hi)),
            "salt_ratio": self.salt_ratio,
            "low": None,
            "high": None,
            "seed": draw_seed(g),
        }


class RandomSpeckleNoise(RandomFilter):
    """``std ~ U(std)`` multiplicative noise."""

    filter_cls = SpeckleNoise

    def __init__(
        self,
        std: float | tuple[float, float] = (0.0, 0.2),
        p: float = 1.0,
        seed: int | torch.Generator | None = None,
    ) -> None:
        super().__init__(p=p, seed=seed)
        self.std = std

    def sample_params(self, g: torch.Generator) -> dict[str, Any]:
        lo, hi = as_range(self.std, "std")
        return {"std": float(uniform(g, lo, hi)), "seed": draw_seed(g)}
