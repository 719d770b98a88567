"""Rigid motion during acquisition, simulated in k-space as TorchIO's ``RandomMotion`` does."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from medaudit.errors import InputError
from medaudit.texture.filters.base import Filter, RandomFilter, as_range, draw_seed, make_generator, uniform
from medaudit.texture.filters.kspace import _freq_index, _symmetrised
from medaudit.texture.filters.ops import check_axis


def rigid_theta(params: Sequence[float], shape: Sequence[int]) -> Tensor:
    """``(3, 4)`` ``affine_grid`` matrix for a rigid motion about the volume centre.

    ``params = (r0, r1, r2, t0, t1, t2)``: rotations in degrees about spatial axes 0, 1, 2 (D, H, W) and
    translations in voxels along them.  Built in voxel units, so rotations stay rigid for non-cubic
    volumes, then expressed in ``affine_grid``'s normalised (W, H, D) coordinates.
    """
    r = [math.radians(float(a)) for a in params[:3]]
    t = [float(v) for v in params[3:6]]

    def rot(i: int, j: int, angle: float) -> Tensor:
        m = torch.eye(3, dtype=torch.float64)
        c, s = math.cos(angle), math.sin(angle)
        m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
        return m

    # voxel-space rotation in (D, H, W) order: about axis 0 rotates (H, W), etc.
    rot_dhw = rot(1, 2, r[0]) @ rot(0, 2, r[1]) @ rot(0, 1, r[2])
    perm = torch.tensor([2, 1, 0])  # (D, H, W) -> (x=W, y=H, z=D)
    rot_xyz = rot_dhw[perm][:, perm]
    t_xyz = torch.tensor(t, dtype=torch.float64)[perm]
    half = torch.tensor([shape[2], shape[1], shape[0]], dtype=torch.float64) / 2.0
    theta = torch.zeros(3, 4, dtype=torch.float64)
    theta[:, :3] = rot_xyz * half[None, :] / half[:, None]
    theta[:, 3] = t_xyz / half
    return theta


def _affine_grid(theta: Tensor, shape: Sequence[int]) -> Tensor:
    """``F.affine_grid(theta, (K, 1, D, H, W), align_corners=False)`` built from the three separable
    coordinate axes: two small broadcast sums written straight into the output (about 2x faster than
    ``affine_grid``'s per-voxel matrix product on the CPU)."""
    d, h, w = (int(v) for v in shape)

    def lin(n: int) -> Tensor:
        return (torch.arange(n, device=theta.device, dtype=theta.dtype) * 2 + 1) / n - 1

    t = theta[:, None, None, None, :, :]  # (K, 1, 1, 1, 3, 4)
    zy = t[..., 2] * lin(d)[None, :, None, None, None] + t[..., 1] * lin(h)[None, None, :, None, None]
    x = t[..., 0] * lin(w)[None, None, None, :, None] + t[..., 3]
    out = torch.empty((theta.shape[0], d, h, w, 3), device=theta.device, dtype=theta.dtype)
    return torch.add(zy, x, out=out)


class Motion(Filter):
    """k-space lines (along ``axis``) taken from rigidly moved copies of the volume.

    ``transforms`` is a list of ``(r0, r1, r2, t0, t1, t2)`` (degrees, voxels); ``times`` (sorted, in
    (0, 1)) split the centred k-space along ``axis`` into ``len(transforms) + 1`` segments.  The segment
    holding the k-space centre keeps the unmoved volume, the others take the moved copies in order; the
    real part of the inverse FFT is returned.  Only 1D FFTs along ``axis`` are needed because the line
    selection commutes with the FFT along the other axes.  With ``transforms=None``, each transform's
    angles and shifts are ``u * degrees`` and ``u * translation`` with ``u ~ U(-1, 1)`` drawn from
    ``seed`` (sample ``b`` of a batch: ``seed + b``; the same seed with larger magnitudes moves further in the same direction), and the
    times are TorchIO's (``k / (n + 1)`` perturbed by up to 30% of a step).
    """

    name = "motion"
    family = "motion"
    stochastic = True

    def __init__(
        self,
        degrees: float = 5.0,
        translation: float = 5.0,
        num_transforms: int = 2,
        transforms: Sequence[Sequence[float]] | None = None,
        times: Sequence[float] | None = None,
        axis: int = 2,
        seed: int | None = None,
    ) -> None:
        self.degrees = degrees
        self.translation = translation
        self.num_transforms = num_transforms
        self.transforms = transforms
        self.times = times
        self.axis = axis
        self.seed = seed

    def resolved(self, index: int = 0) -> tuple[list[list[float]], list[float]]:
        """The explicit ``(transforms, times)`` applied to sample ``index`` (seed ``seed + index``)."""
        if self.transforms is not None and self.times is not None:
            tr = [[float(v) for v in t] for t in self.transforms]
            tm = [float(v) for v in self.times]
        else:
            g = make_generator(draw_seed() if self.seed is None else int(self.seed) + index)
            n = int(self.num_transforms)
            u = uniform(g, -1.0, 1.0, (n, 6))
            u[:, :3] *= float(self.degrees)
            u[:, 3:] *= float(self.translation)
            tr = u.tolist() if self.transforms is None else [[float(v) for v in t] for t in self.transforms]
            if self.times is None:  # TorchIO's scheme: evenly spaced, perturbed by up to 30% of a step
                step = 1.0 / (len(tr) + 1)
                base = step * torch.arange(1, len(tr) + 1, dtype=torch.float64)
                tm = sorted((base + uniform(g, -0.3 * step, 0.3 * step, len(tr))).tolist())
            else:
                tm = list(self.times)
        if len(tm) != len(tr) or any(len(t) != 6 for t in tr):
            raise InputError(f"{self.name}: need one time per transform and 6 values per transform")
        if sorted(tm) != tm or any(not 0.0 < v < 1.0 for v in tm):
            raise InputError(f"{self.name}: times must be sorted and in (0, 1), got {tm}")
        return tr, tm

    def apply(self, x: Tensor) -> Tensor:
        dim = 2 + check_axis(self.axis, self.name)
        if self.transforms is not None and self.times is not None:
            return self._apply(x, dim, *self.resolved())
        return torch.cat([self._apply(x[b : b + 1], dim, *self.resolved(b)) for b in range(x.shape[0])])

    def _apply(self, x: Tensor, dim: int, transforms: list[list[float]], times: list[float]) -> Tensor:
        if not transforms:
            return x.clone()
        b = x.shape[0]
        shape = x.shape[-3:]
        theta = torch.stack([rigid_theta(t, shape) for t in transforms]).to(device=x.device, dtype=x.dtype)
        # All moved copies in one batched resampling (grid_sample parallelises over the batch).
        n_tr = len(transforms)
        grid = _affine_grid(theta, shape).repeat_interleave(b, dim=0)  # (n_tr * b, D, H, W, 3)
        moved = F.grid_sample(
            x.repeat(n_tr, 1, 1, 1, 1), grid, mode="bilinear", padding_mode="zeros", align_corners=False
        ).view(n_tr, *x.shape)
        del grid
        n = x.shape[dim]
        shifted = (_freq_index(n, x.device) + n // 2).long()
        bounds = [0, *[int(t * n) for t in times], n]
        centre_seg = max(i for i in range(len(bounds) - 1) if bounds[i] <= n // 2)
        view = [1] * x.ndim
        view[dim] = -1
        spec = None
        moved_iter = iter(range(len(transforms)))
        for seg in range(len(bounds) - 1):
            lo, hi = bounds[seg], bounds[seg + 1]
            if hi <= lo:
                if seg != centre_seg:
                    next(moved_iter)
                continue
            img = x if seg == centre_seg else moved[next(moved_iter)]
            mask = ((shifted >= lo) & (shifted < hi)).to(torch.float64)
            part = torch.fft.rfft(img, dim=dim) * _symmetrised(mask).to(x.dtype).view(view)
            spec = part if spec is None else spec + part
        assert spec is not None
        return torch.fft.irfft(spec, n=n, dim=dim)


class RandomMotion(RandomFilter):
    """Like ``tio.RandomMotion``: angles ``~ U(degrees)``, shifts ``~ U(translation)`` voxels, sorted times."""

    filter_cls = Motion

    def __init__(
        self,
        degrees: float | tuple[float, float] = 10.0,
        translation: float | tuple[float, float] = 10.0,
        num_transforms: int = 2,
        axis: int = 2,
        p: float = 1.0,
        seed: int | torch.Generator | None = None,
    ) -> None:
        super().__init__(p=p, seed=seed)
        self.degrees = degrees
        self.translation = translation
        self.num_transforms = num_transforms
        self.axis = axis

    def sample_params(self, g: torch.Generator) -> dict[str, Any]:
        dlo, dhi = as_range(self.degrees, "degrees", symmetric=True)
        tlo, thi = as_range(self.translation, "translation", symmetric=True)
        n = int(self.num_transforms)
        rot = uniform(g, dlo, dhi, (n, 3))
        tra = uniform(g, tlo, thi, (n, 3))
        step = 1.0 / (n + 1)
        times = sorted(
            (step * torch.arange(1, n + 1, dtype=torch.float64) + uniform(g, -step / 4, step / 4, n)).tolist()
        )
        return {
            "degrees": max(abs(dlo), abs(dhi)),
            "translation": max(abs(tlo), abs(thi)),
            "num_transforms": n,
            "transforms": torch.cat([rot, tra], 1).tolist(),
            "times": times,
            "axis": self.axis,
            "seed": draw_seed(g),
        }
