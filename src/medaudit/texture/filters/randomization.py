"""Texture randomisation: random convolutions (RandConv) and per-tissue intensity re-mapping (SynthSeg)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from medaudit.errors import InputError
from medaudit.texture.filters.base import Filter, RandomFilter, as_range, draw_seed, uniform
from medaudit.texture.filters.intensity import bias_field, polynomial_terms
from medaudit.texture.filters.ops import gaussian_blur

_DIMS = (-3, -2, -1)


def _match_moments(y: Tensor, ref: Tensor) -> Tensor:
    """Rescale ``y`` to the mean and std of ``ref`` per sample and channel."""
    ym, ys = y.mean(_DIMS, keepdim=True), y.std(_DIMS, keepdim=True)
    rm, rs = ref.mean(_DIMS, keepdim=True), ref.std(_DIMS, keepdim=True)
    return (y - ym) / ys.clamp_min(1e-8) * rs + rm


class RandConv(Filter):
    """RandConv (Xu et al., ICLR 2021) in 3D: convolve with a random ``kernel_size³`` kernel.

    The kernel (``(C, C, k, k, k)``, entries ``N(0, 1 / (C k³))``, Kaiming-normal as in RandConv) is drawn
    from ``seed`` (sample ``b`` of a batch: ``seed + b``) unless ``kernel`` is given.  With
    ``standardize`` the response is rescaled to the input's mean / std; the output is
    ``alpha * x + (1 - alpha) * conv(x)`` (``alpha = 1`` is the identity).  Edges are replicated.
    """

    name = "rand_conv"
    family = "texture"
    stochastic = True

    def __init__(
        self,
        kernel_size: int = 3,
        alpha: float = 0.0,
        standardize: bool = True,
        kernel: Sequence[Any] | None = None,
        seed: int | None = None,
    ) -> None:
        self.kernel_size = kernel_size
        self.alpha = alpha
        self.standardize = standardize
        self.kernel = kernel
        self.seed = seed

    def make_kernel(self, channels: int, index: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        if self.kernel is not None:
            k = torch.as_tensor(self.kernel, dtype=dtype, device=device)
            if k.ndim == 3:
                k = k.expand(channels, channels, *k.shape) / channels
            if k.ndim != 5 or k.shape[:2] != (channels, channels) or k.shape[2] % 2 != 1:
                raise InputError(f"{self.name}: kernel must be (k, k, k) or (C, C, k, k, k) with odd k")
            return k
        ks = int(self.kernel_size)
        if ks < 1 or ks % 2 != 1:
            raise InputError(f"{self.name}: kernel_size must be odd and >= 1, got {ks}")
        g = self._generator(torch.device("cpu"), index)
        k = torch.randn((channels, channels, ks, ks, ks), generator=g, dtype=torch.float64)
        return (k / (channels * ks**3) ** 0.5).to(device=device, dtype=dtype)

    def apply(self, x: Tensor) -> Tensor:
        outs = []
        for b in range(x.shape[0]):
            xb = x[b : b + 1]
            k = self.make_kernel(x.shape[1], b, x.device, x.dtype)
            r = k.shape[-1] // 2
            y = F.conv3d(F.pad(xb, (r,) * 6, mode="replicate"), k) if r else F.conv3d(xb, k)
            if self.standardize:
                y = _match_moments(y, xb)
            outs.append(float(self.alpha) * xb + (1.0 - float(self.alpha)) * y)
        return torch.cat(outs, 0)


def quantile_labels(x: Tensor, n_classes: int, max_samples: int = 1_000_000) -> Tensor:
    """Intensity classes ``0..n_classes-1`` per sample (quantile bins of its first channel), ``(B, 1, D, H, W)``."""
    labels = []
    for b in range(x.shape[0]):
        v = x[b, 0].flatten()
        step = max(1, v.numel() // max_samples)
        q = torch.quantile(v[::step].float(), torch.linspace(0, 1, n_classes + 1, device=x.device)[1:-1])
        labels.append(torch.bucketize(x[b, 0].float().contiguous(), q.contiguous())[None])
    return torch.stack(labels)


class LabelIntensityRemap(Filter):
    """SynthSeg-style per-tissue intensities: every label gets a random mean / std, then blur and bias.

    For sample ``b`` (seed ``seed + b``): label ``l`` is filled with ``N(mean_l, std_l)``, with
    ``mean_l ~ U(0.1, 0.9)`` and ``std_l ~ U(0.01, 0.1)`` unless ``means`` / ``stds`` are given; the result
    is blurred (``blur_sigma`` voxels), multiplied by a degree-3 bias field (``bias_magnitude``), min-max
    scaled to the input's range and mixed: ``(1 - mix) * x + mix * synthetic``.  Call as ``f(x, label)``
    with an integer label map ``(1, D, H, W)`` / ``(B, 1, D, H, W)``; without a label map, ``n_classes``
    intensity quantile bins of ``x`` stand in for tissues.  :class:`~medaudit.texture.filters.adapters.LabelIntensityRemapD`
    takes ``{"image", "label"}`` dictionaries.
    """

    name = "label_remap"
    family = "texture"
    stochastic = True

    def __init__(
        self,
        mix: float = 1.0,
        means: Sequence[float] | None = None,
        stds: Sequence[float] | None = None,
        blur_sigma: float = 0.5,
        bias_magnitude: float = 0.2,
        n_classes: int = 4,
        seed: int | None = None,
    ) -> None:
        self.mix = mix
        self.means = means
        self.stds = stds
        self.blur_sigma = blur_sigma
        self.bias_magnitude = bias_magnitude
        self.n_classes = n_classes
        self.seed = seed

    def __call__(self, x: Tensor, label: Tensor | None = None) -> Tensor:  # type: ignore[override]
        self._label = label
        try:
            return super().__call__(x)
        finally:
            self._label = None

    def apply(self, x: Tensor) -> Tensor:
        label = getattr(self, "_label", None)
        if label is None:
            lab = quantile_labels(x, int(self.n_classes))
        else:
            if not isinstance(label, Tensor):
                raise InputError(f"{self.name}: label must be a tensor, got {type(label).__name__}")
            lab = label.as_subclass(Tensor)
            lab = lab[None] if lab.ndim == 4 else lab
            if (
                lab.ndim != 5
                or lab.shape[0] != x.shape[0]
                or lab.shape[1] != 1
                or lab.shape[2:] != x.shape[2:]
            ):
                raise InputError(
                    f"{self.name}: label shape {tuple(label.shape)} does not match image {tuple(x.shape)}"
                )
            lab = lab.round().long() if torch.is_floating_point(lab) else lab.long()
            if int(lab.min()) < 0:
                raise InputError(f"{self.name}: label values must be >= 0")
        n_labels = int(lab.max()) + 1
        outs = []
        for b in range(x.shape[0]):
            g = self._generator(torch.device("cpu"), b)
            means = (
                uniform(g, 0.1, 0.9, n_labels)
                if self.means is None
                else torch.tensor(self.means, dtype=torch.float64)
            )
            stds = (
                uniform(g, 0.01, 0.1, n_labels)
                if self.stds is None
                else torch.tensor(self.stds, dtype=torch.float64)
            )
            if means.numel() < n_labels or stds.numel() < n_labels:
                raise InputError(
                    f"{self.name}: need means/stds for {n_labels} labels, got {means.numel()}/{stds.numel()}"
                )
            coef = (uniform(g, -1.0, 1.0, len(polynomial_terms(3))) * float(self.bias_magnitude)).tolist()
            noise_seed = draw_seed(g)
            gn = torch.Generator(device=x.device)
            gn.manual_seed(noise_seed)
            lb = lab[b, 0]
            m = means.to(device=x.device, dtype=x.dtype)[lb]
            s = stds.to(device=x.device, dtype=x.dtype)[lb]
            noise = torch.randn(lb.shape, generator=gn, device=x.device, dtype=x.dtype)
            syn = (m + s * noise)[None, None]
            if self.blur_sigma > 0:
                syn = gaussian_blur(syn, float(self.blur_sigma))
            syn = syn * bias_field(lb.shape, coef, 3, x.device, x.dtype)
            lo, hi = syn.amin(), syn.amax()
            syn = (syn - lo) / (hi - lo).clamp_min(1e-8)
            xb = x[b : b + 1]
            xlo = xb.amin(_DIMS, keepdim=True)
            xhi = xb.amax(_DIMS, keepdim=True)
            syn = xlo + syn * (xhi - xlo)
            outs.append((1.0 - float(self.mix)) * xb + float(self.mix) * syn)
        return torch.cat(outs, 0)


class RandomRandConv(RandomFilter):
    """RandConv augmentation: ``kernel_size`` from ``kernel_sizes``, ``alpha ~ U(alpha)``."""

    filter_cls = RandConv

    def __init__(
        self,
        kernel_sizes: Sequence[int] = (1, 3, 5, 7),
        alpha: tuple[float, float] = (0.0, 1.0),
        standardize: bool = True,
        p: float = 1.0,
        seed: int | torch.Generator | None = None,
    ) -> None:
        super().__init__(p=p, seed=seed)
        self.kernel_sizes = kernel_sizes
        self.alpha = alpha
        self.standardize = standardize

    def sample_params(self, g: torch.Generator) -> dict[str, Any]:
        ks = int(self.kernel_sizes[int(torch.randint(len(self.kernel_sizes), (1,), generator=g))])
        lo, hi = as_range(self.alpha, "alpha")
        return {
            "kernel_size": ks,
            "alpha": float(uniform(g, lo, hi)),
            "standardize": self.standardize,
            "kernel": None,
            "seed": draw_seed(g),
        }


class RandomLabelIntensityRemap(RandomFilter):
    """SynthSeg-style augmentation; call as ``t(x, label)``.  ``blur_sigma``, ``bias_magnitude`` and ``mix``
    are drawn from their ranges; per-label means / stds come from the recorded ``seed``."""

    filter_cls = LabelIntensityRemap

    def __init__(
        self,
        mix: float | tuple[float, float] = 1.0,
        blur_sigma: tuple[float, float] = (0.0, 1.0),
        bias_magnitude: tuple[float, float] = (0.0, 0.3),
        n_classes: int = 4,
        p: float = 1.0,
        seed: int | torch.Generator | None = None,
    ) -> None:
        super().__init__(p=p, seed=seed)
        self.mix = mix
        self.blur_sigma = blur_sigma
        self.bias_magnitude = bias_magnitude
        self.n_classes = n_classes

    def sample_params(self, g: torch.Generator) -> dict[str, Any]:
        mlo, mhi = (float(self.mix),) * 2 if isinstance(self.mix, int | float) else as_range(self.mix, "mix")
        slo, shi = as_range(self.blur_sigma, "blur_sigma")
        blo, bhi = as_range(self.bias_magnitude, "bias_magnitude")
        return {
            "mix": float(uniform(g, mlo, mhi)),
            "means": None,
            "stds": None,
            "blur_sigma": float(uniform(g, slo, shi)),
            "bias_magnitude": float(uniform(g, blo, bhi)),
            "n_classes": self.n_classes,
            "seed": draw_seed(g),
        }

    def __call__(  # type: ignore[override]
        self, x: Tensor, label: Tensor | None = None, randomize: bool = True
    ) -> Tensor:
        if randomize or not hasattr(self, "last_transform"):
            self.randomize()
        t = self.last_transform
        if t is None:
            self.last_params = None
            self.last_record = {"name": self.name, "params": None, "applied": False}
            return x
        self.last_params = t.get_params()
        self.last_record = {**t.record(), "applied": True}
        return t(x, label)  # type: ignore[call-arg]
