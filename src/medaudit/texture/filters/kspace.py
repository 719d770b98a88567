"""k-space artefacts computed with ``torch.fft``: Gibbs ringing, spikes, wrap-around, ghosting."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from medaudit.errors import InputError
from medaudit.texture.filters.base import Filter, RandomFilter, as_range, draw_seed, make_generator, uniform
from medaudit.texture.filters.ops import as_triple, check_axis

_DIMS = (-3, -2, -1)


def _freq_index(n: int, device: torch.device) -> Tensor:
    """Signed integer frequency of each FFT bin (``fftfreq * n``)."""
    return torch.fft.fftfreq(n, d=1.0 / n, device=device).round()


def kept_window(shape: Sequence[int], keep: Sequence[float]) -> list[int]:
    """Cut-off (largest kept ``|frequency index|``) per axis for a Gibbs window keeping fractions ``keep``."""
    return [max(0, math.floor(k * n / 2.0)) for n, k in zip(shape, keep, strict=True)]


class GibbsRinging(Filter):
    """Truncates k-space to a centred box keeping the fraction ``keep`` of frequencies along each axis.

    Every frequency with ``|index| > floor(keep * n / 2)`` is zeroed (``keep=1`` = identity); the
    rectangular window produces Gibbs ringing at edges.  Uses ``rfftn`` / ``irfftn`` in the input dtype.
    """

    name = "gibbs"
    family = "kspace"

    def __init__(self, keep: float | Sequence[float] = 0.5) -> None:
        self.keep = keep

    def apply(self, x: Tensor) -> Tensor:
        keep = as_triple(self.keep, "keep")
        if any(not 0.0 < k <= 1.0 for k in keep):
            raise InputError(f"{self.name}: keep must be in (0, 1], got {self.keep!r}")
        shape = x.shape[-3:]
        cut = kept_window(shape, keep)
        spec = torch.fft.rfftn(x, dim=_DIMS)
        md = (_freq_index(shape[0], x.device).abs() <= cut[0]).to(x.dtype)
        mh = (_freq_index(shape[1], x.device).abs() <= cut[1]).to(x.dtype)
        mw = (torch.arange(spec.shape[-1], device=x.device) <= cut[2]).to(x.dtype)
        mask = md[:, None, None] * mh[None, :, None] * mw[None, None, :]
        return torch.fft.irfftn(spec * mask, s=shape, dim=_DIMS)


class Spike(Filter):
    """Herringbone artefact: spikes added to k-space at ``positions``.

    ``positions`` are frequencies in cycles per field of view as fractions of the size, in
    ``[-0.5, 0.5]`` per axis (D, H, W); bin ``round(pos * n)``.  As in TorchIO, each spike has magnitude
    ``intensity * max|FFT(x)|`` and the real part of the inverse transform is kept, which equals adding
    the plane wave ``intensity * mean|x| * cos(2π k·r / n)`` (``max|FFT| = sum|x|`` for images >= 0);
    it is computed that way, without any FFT.  ``positions=None`` draws ``num_spikes`` positions from
    ``seed`` (sample ``b`` of a batch: ``seed + b``).
    """

    name = "spike"
    family = "kspace"
    stochastic = True

    def __init__(
        self,
        intensity: float = 0.3,
        positions: Sequence[Sequence[float]] | None = None,
        num_spikes: int = 1,
        seed: int | None = None,
    ) -> None:
        self.intensity = intensity
        self.positions = positions
        self.num_spikes = num_spikes
        self.seed = seed

    def resolved_positions(self, index: int = 0) -> list[list[float]]:
        """Explicit positions, or those drawn from ``seed + index`` (sample ``index`` of a batch)."""
        if self.positions is not None:
            pos = [[float(v) for v in p] for p in self.positions]
            if any(len(p) != 3 for p in pos):
                raise InputError(f"{self.name}: each position needs 3 values, got {self.positions!r}")
            return pos
        g = make_generator(draw_seed() if self.seed is None else int(self.seed) + index)
        return uniform(g, -0.5, 0.5, (int(self.num_spikes), 3)).tolist()

    def bins(self, shape: Sequence[int], index: int = 0) -> list[tuple[int, int, int]]:
        """Integer k-space bins (signed) of the spikes for a volume of spatial ``shape``."""
        return [
            tuple(round(p * n) for p, n in zip(pos, shape, strict=True))  # type: ignore[misc]
            for pos in self.resolved_positions(index)
        ]

    def _factors(self, x: Tensor, index: int) -> list[tuple[Tensor, Tensor, Tensor, Tensor]]:
        """Per spike ``(cos a, sin a, cos b, sin b)`` with ``a`` the phase along D and ``b`` over (H, W)."""
        shape = x.shape[-3:]
        grids = [torch.arange(n, device=x.device, dtype=x.dtype) / n for n in shape]
        out = []
        for kd, kh, kw in self.bins(shape, index):
            a = (2.0 * math.pi * kd) * grids[0]
            bb = 2.0 * math.pi * ((kh * grids[1])[:, None] + (kw * grids[2])[None, :])
            out.append((torch.cos(a), torch.sin(a), torch.cos(bb), torch.sin(bb)))
        return out

    def apply(self, x: Tensor) -> Tensor:
        # cos(a + b) = cos a cos b - sin a sin b: two fused multiply-adds per voxel, no 3D transcendental
        c, d = x.shape[1], x.shape[2]
        amp = (self.intensity * x.abs().mean(dim=_DIMS)).view(x.shape[0], c, 1, 1, 1)
        out = x.clone()
        for b in range(x.shape[0]):
            idx = 0 if self.positions is not None else b
            for cos_a, sin_a, cos_b, sin_b in self._factors(x, idx):
                out[b].addcmul_(amp[b] * cos_a.view(1, d, 1, 1), cos_b[None, None])
                out[b].addcmul_(amp[b] * sin_a.view(1, d, 1, 1), sin_b[None, None], value=-1.0)
        return out


class WrapAround(Filter):
    """Wrap-around (fold-over) aliasing from a field of view reduced by ``fraction`` along ``axis``.

    Sampling k-space ``n / L`` times more coarsely (``L = n - round(fraction * n)``) sums the image over
    copies shifted by ``L``: anatomy outside the centred FOV folds back onto the opposite side.  The
    output keeps the input size and is exactly ``L``-periodic along ``axis`` (the folded FOV repeated).
    """

    name = "wrap_around"
    family = "kspace"

    def __init__(self, fraction: float = 0.2, axis: int = 1) -> None:
        self.fraction = fraction
        self.axis = axis

    def period(self, n: int) -> int:
        return max(1, n - round(self.fraction * n))

    def apply(self, x: Tensor) -> Tensor:
        if not 0.0 <= self.fraction < 1.0:
            raise InputError(f"{self.name}: fraction must be in [0, 1), got {self.fraction}")
        dim = 2 + check_axis(self.axis, self.name)
        n = x.shape[dim]
        period = self.period(n)
        if period == n:
            return x.clone()
        start = (n - period) // 2
        cls = (torch.arange(n, device=x.device) - start) % period
        shape = list(x.shape)
        shape[dim] = period
        folded = torch.zeros(shape, dtype=x.dtype, device=x.device).index_add_(dim, cls, x)
        return folded.index_select(dim, cls)


def _symmetrised(mask: Tensor) -> Tensor:
    """``(m(k) + m(-k)) / 2`` on the non-negative half: ``Re(ifft(m X)) = irfft(m_sym X)`` for real ``x``."""
    n = mask.shape[0]
    sym = 0.5 * (mask + mask[(-torch.arange(n, device=mask.device)) % n])
    return sym[: n // 2 + 1]


def _line_filter(x: Tensor, mask: Tensor, dim: int) -> Tensor:
    """``Re(ifft(mask * fft(x)))`` along one dim, via ``rfft`` with the symmetrised mask."""
    n = x.shape[dim]
    spec = torch.fft.rfft(x, dim=dim)
    view = [1] * x.ndim
    view[dim] = -1
    spec = spec * _symmetrised(mask).to(x.dtype).view(view)
    return torch.fft.irfft(spec, n=n, dim=dim)


class Ghosting(Filter):
    """Ghosting as in TorchIO: every ``num_ghosts``-th k-space line along ``axis`` (counted in the
    centred spectrum) is scaled by ``1 - intensity``, except the central ``restore`` fraction of lines
    (TorchIO's convention: lines ``[n//2 - a, n//2 + a)`` with ``a = round(restore * n) // 2``; ``None``
    restores the centre line only).

    Acts on one axis only, so it needs only 1D FFTs along ``axis``; the real part is kept.
    """

    name = "ghosting"
    family = "kspace"

    def __init__(
        self, num_ghosts: int = 4, intensity: float = 0.5, axis: int = 0, restore: float = 0.02
    ) -> None:
        self.num_ghosts = num_ghosts
        self.intensity = intensity
        self.axis = axis
        self.restore = restore

    def line_mask(self, n: int, device: torch.device) -> Tensor:
        """Multiplier of each (unshifted) FFT bin along the axis."""
        freq = _freq_index(n, device)
        shifted = (freq + n // 2).long()  # position in the fftshift-ed spectrum
        hit = shifted % max(1, int(self.num_ghosts)) == 0
        mid = n // 2
        half = 0 if self.restore is None else round(float(self.restore) * n) // 2
        lo, hi = (mid, mid + 1) if self.restore is None else (mid - half, mid + half)
        hit &= (shifted < lo) | (shifted >= hi)
        return torch.where(hit, 1.0 - float(self.intensity), 1.0).to(torch.float64)

    def apply(self, x: Tensor) -> Tensor:
        if self.num_ghosts < 1:
            raise InputError(f"{self.name}: num_ghosts must be >= 1, got {self.num_ghosts}")
        dim = 2 + check_axis(self.axis, self.name)
        return _line_filter(x, self.line_mask(x.shape[dim], x.device), dim)


class RandomGibbsRinging(RandomFilter):
    """Isotropic ``keep ~ U(keep)``; cf. MONAI ``RandGibbsNoise``."""

    filter_cls = GibbsRinging

    def __init__(
        self,
        keep: tuple[float, float] = (0.3, 1.0),
        p: float = 1.0,
        seed: int | torch.Generator | None = None,
    ) -> None:
        super().__init__(p=p, seed=seed)
        self.keep = keep

    def sample_params(self, g: torch.Generator) -> dict[str, Any]:
        lo, hi = as_range(self.keep, "keep")
        return {"keep": float(uniform(g, lo, hi))}


class RandomSpike(RandomFilter):
    """``num_spikes`` (int or range) positions uniform in ``[-0.5, 0.5]^3``, ``intensity ~ U(intensity)``;
    like ``tio.RandomSpike`` (whose default intensity range is ``(1, 3)``)."""

    filter_cls = Spike

    def __init__(
        self,
        num_spikes: int | tuple[int, int] = 1,
        intensity: float | tuple[float, float] = (0.1, 1.0),
        p: float = 1.0,
        seed: int | torch.Generator | None = None,
    ) -> None:
        super().__init__(p=p, seed=seed)
        self.num_spikes = num_spikes
        self.intensity = intensity

    def sample_params(self, g: torch.Generator) -> dict[str, Any]:
        lo, hi = (self.num_spikes, self.num_spikes) if isinstance(self.num_spikes, int) else self.num_spikes
        n = int(torch.randint(int(lo), int(hi) + 1, (1,), generator=g))
        ilo, ihi = as_range(self.intensity, "intensity", symmetric=True)
        return {
            "intensity": float(uniform(g, ilo, ihi)),
            "positions": uniform(g, -0.5, 0.5, (n, 3)).tolist(),
            "num_spikes": n,
            "seed": None,
        }


class RandomWrapAround(RandomFilter):
    """``fraction ~ U(fraction)`` along an axis drawn from ``axes``."""

    filter_cls = WrapAround

    def __init__(
        self,
        fraction: float | tuple[float, float] = (0.0, 0.3),
        axes: Sequence[int] = (0, 1, 2),
        p: float = 1.0,
        seed: int | torch.Generator | None = None,
    ) -> None:
        super().__init__(p=p, seed=seed)
        self.fraction = fraction
        self.axes = axes

    def sample_params(self, g: torch.Generator) -> dict[str, Any]:
        lo, hi = as_range(self.fraction, "fraction")
        axis = int(self.axes[int(torch.randint(len(self.axes), (1,), generator=g))])
        return {"fraction": float(uniform(g, lo, hi)), "axis": axis}


class RandomGhosting(RandomFilter):
    """Like ``tio.RandomGhosting``: ``num_ghosts`` integer range, axis from ``axes``, ``intensity`` range."""

    filter_cls = Ghosting

    def __init__(
        self,
        num_ghosts: int | tuple[int, int] = (4, 10),
        axes: Sequence[int] = (0, 1, 2),
        intensity: float | tuple[float, float] = (0.5, 1.0),
        restore: float = 0.02,
        p: float = 1.0,
        seed: int | torch.Generator | None = None,
    ) -> None:
        super().__init__(p=p, seed=seed)
        self.num_ghosts = num_ghosts
        self.axes = axes
        self.intensity = intensity
        self.restore = restore

    def sample_params(self, g: torch.Generator) -> dict[str, Any]:
        lo, hi = (0, self.num_ghosts) if isinstance(self.num_ghosts, int) else self.num_ghosts
        n = int(torch.randint(int(lo), int(hi) + 1, (1,), generator=g))
        axis = int(self.axes[int(torch.randint(len(self.axes), (1,), generator=g))])
        ilo, ihi = as_range(self.intensity, "intensity")
        return {
            "num_ghosts": max(1, n),
            "intensity": float(uniform(g, ilo, ihi)),
            "axis": axis,
            "restore": self.restore,
        }
