"""Intensity changes: polynomial bias field (multiplicative), gamma, contrast."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from medaudit.errors import InputError
from medaudit.texture.filters.base import Filter, RandomFilter, as_range, draw_seed, make_generator, uniform


def polynomial_terms(order: int) -> list[tuple[int, int, int]]:
    """Exponents ``(i, j, k)`` with ``i + j + k <= order`` in TorchIO's ordering."""
    return [
        (i, j, k) for i in range(order + 1) for j in range(order + 1 - i) for k in range(order + 1 - i - j)
    ]


def bias_field(
    shape: Sequence[int], coefficients: Sequence[float], order: int, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """``exp(sum_c c * z^i y^j x^k)`` on coordinates in ``[-1, 1]``, shape ``(D, H, W)``; separable einsum."""
    terms = polynomial_terms(order)
    if len(coefficients) != len(terms):
        raise InputError(
            f"bias_field: order {order} needs {len(terms)} coefficients, got {len(coefficients)}"
        )
    c = torch.zeros(order + 1, order + 1, order + 1, dtype=torch.float64)
    for (i, j, k), v in zip(terms, coefficients, strict=True):
        c[i, j, k] = float(v)
    powers = [
        torch.linspace(-1.0, 1.0, n, dtype=torch.float64)[:, None] ** torch.arange(order + 1) for n in shape
    ]
    log_field = torch.einsum("ijk,di,hj,wk->dhw", c, *powers)
    return torch.exp(log_field.to(device=device, dtype=dtype))


class BiasField(Filter):
    """Smooth multiplicative field ``x * exp(P(z, y, x))`` with ``P`` a polynomial of degree ``order``.

    ``coefficients`` are in TorchIO's order (:func:`polynomial_terms`); ``None`` draws each as
    ``u * magnitude`` with ``u ~ U(-1, 1)`` from ``seed``.  With ``normalize`` (default) the field is
    divided by its geometric mean (the polynomial is centred), so it changes local contrast more than
    overall brightness (TorchIO does not
    normalise; pass ``normalize=False`` for its behaviour).  Sample ``b`` of a batch uses ``seed + b``.
    """

    name = "bias_field"
    family = "bias"
    stochastic = True

    def __init__(
        self,
        magnitude: float = 0.3,
        order: int = 3,
        coefficients: Sequence[float] | None = None,
        normalize: bool = True,
        seed: int | None = None,
    ) -> None:
        self.magnitude = magnitude
        self.order = order
        self.coefficients = coefficients
        self.normalize = normalize
        self.seed = seed

    def resolved_coefficients(self, index: int = 0) -> list[float]:
        """Explicit coefficients, or those drawn from ``seed + index`` (sample ``index`` of a batch)."""
        if self.coefficients is not None:
            return [float(v) for v in self.coefficients]
        g = make_generator(draw_seed() if self.seed is None else int(self.seed) + index)
        return (
            uniform(g, -1.0, 1.0, len(polynomial_terms(int(self.order)))) * float(self.magnitude)
        ).tolist()

    def field(
        self,
        shape: Sequence[int],
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        index: int = 0,
    ) -> Tensor:
        """The multiplicative field ``(D, H, W)`` of sample ``index`` for a volume of spatial ``shape``."""
        coef = self.resolved_coefficients(index)
        field = bias_field(shape, coef, int(self.order), torch.device(device), dtype)
        return field / field.log().mean().exp() if self.normalize else field

    def apply(self, x: Tensor) -> Tensor:
        if self.coefficients is not None:
            return x * self.field(x.shape[-3:], x.device, x.dtype)
        fields = [self.field(x.shape[-3:], x.device, x.dtype, b) for b in range(x.shape[0])]
        return x * torch.stack(fields)[:, None]


class Gamma(Filter):
    """``sign(x) * |x| ** gamma`` (TorchIO's ``Gamma`` with ``gamma = exp(log_gamma)``); monotone."""

    name = "gamma"
    family = "intensity"

    def __init__(self, gamma: float = 1.5) -> None:
        self.gamma = gamma

    def apply(self, x: Tensor) -> Tensor:
        if self.gamma <= 0:
            raise InputError(f"{self.name}: gamma must be > 0, got {self.gamma}")
        if float(x.min()) >= 0:
            return x.pow(float(self.gamma))
        return torch.sign(x) * x.abs().pow(float(self.gamma))


class Contrast(Filter):
    """``mean + factor * (x - mean)`` per sample and channel (``factor < 1`` lowers contrast)."""

    name = "contrast"
    family = "intensity"

    def __init__(self, factor: float = 0.5) -> None:
        self.factor = factor

    def apply(self, x: Tensor) -> Tensor:
        mean = x.mean(dim=(-3, -2, -1), keepdim=True)
        return mean + float(self.factor) * (x - mean)


class RandomBiasField(RandomFilter):
    """Like ``tio.RandomBiasField``: coefficients ``~ U(-c, c)``, polynomial ``order``."""

    filter_cls = BiasField

    def __init__(
        self,
        coefficients: float | tuple[float, float] = 0.5,
        order: int = 3,
        normalize: bool = True,
        p: float = 1.0,
        seed: int | torch.Generator | None = None,
    ) -> None:
        super().__init__(p=p, seed=seed)
        self.coefficients = coefficients
        self.order = order
        self.normalize = normalize

    def sample_params(self, g: torch.Generator) -> dict[str, Any]:
        lo, hi = as_range(self.coefficients, "coefficients", symmetric=True)
        coef = uniform(g, lo, hi, len(polynomial_terms(self.order))).tolist()
        return {
            "magnitude": max(abs(lo), abs(hi)),
            "order": self.order,
            "coefficients": coef,
            "seed": draw_seed(g),
        }


class RandomGamma(RandomFilter):
    """Like ``tio.RandomGamma``: ``log_gamma ~ U(log_gamma)``, ``gamma = exp(log_gamma)``."""

    filter_cls = Gamma

    def __init__(
        self,
        log_gamma: float | tuple[float, float] = (-0.3, 0.3),
        p: float = 1.0,
        seed: int | torch.Generator | None = None,
    ) -> None:
        super().__init__(p=p, seed=seed)
        self.log_gamma = log_gamma

    def sample_params(self, g: torch.Generator) -> dict[str, Any]:
        lo, hi = as_range(self.log_gamma, "log_gamma", symmetric=True)
        return {"gamma": float(torch.exp(uniform(g, lo, hi)))}


class RandomContrast(RandomFilter):
    """``factor ~ U(factor)``."""

    filter_cls = Contrast

    def __init__(
        self,
        factor: tuple[float, float] = (0.5, 1.5),
        p: float = 1.0,
        seed: int | torch.Generator | None = None,
    ) -> None:
        super().__init__(p=p, seed=seed)
        self.factor = factor

    def sample_params(self, g: torch.Generator) -> dict[str, Any]:
        lo, hi = as_range(self.factor, "factor")
        return {"factor": float(uniform(g, lo, hi))}
