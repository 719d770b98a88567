"""Base classes shared by every filter: shape handling, seeds, parameter records.

Design (after TorchIO): a deterministic :class:`Filter` takes explicit parameters, including a
``seed`` for any stochastic part (noise, spike positions, motion directions, random kernels), so
``type(f)(**f.get_params())`` reproduces ``f`` exactly.  A :class:`RandomFilter` samples those
parameters from ranges, applies the deterministic filter, and records what it applied in
``last_params`` / ``last_record``; :func:`replay` rebuilds the exact transform from a record.

Input convention: a floating tensor ``(C, D, H, W)`` or a batch ``(B, C, D, H, W)``; the output has the
same shape, dtype and device.  Computation happens on the input's device.  Intensities are assumed
normalised to roughly ``[0, 1]`` (e.g. min-max or percentile scaling); magnitudes in the severity
tables are expressed in those units.  Spatial axes are numbered 0, 1, 2 for the tensor's last three
dimensions (D, H, W); in a TorchIO image (C, W, H, D) the same numbers refer to its dims 1, 2, 3.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from medaudit.errors import InputError

SeedLike = int | torch.Generator | None
_MAX_SEED = 2**31 - 1


def _to_plain(value: Any) -> Any:
    """Make a parameter value JSON-friendly (tuples to lists, tensors to lists / floats)."""
    if isinstance(value, Tensor):
        return value.tolist()
    if isinstance(value, tuple | list):
        return [_to_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _to_plain(v) for k, v in value.items()}
    return value


def as_batch(x: Tensor, name: str = "input") -> tuple[Tensor, bool]:
    """Return ``(x5, was_4d)`` with ``x5`` of shape ``(B, C, D, H, W)``; raise InputError otherwise."""
    if not isinstance(x, Tensor):
        raise InputError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise InputError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")
    if x.ndim == 4:
        return x.unsqueeze(0), True
    if x.ndim == 5:
        return x, False
    raise InputError(f"{name}: expected shape (C, D, H, W) or (B, C, D, H, W), got {tuple(x.shape)}")


def _owner() -> tuple[int, int | None]:
    """``(process id, DataLoader worker id or None)`` of the caller."""
    info = torch.utils.data.get_worker_info()
    return os.getpid(), None if info is None else int(info.id)


def _worker_seed(seed: int, worker: int) -> int:
    """A seed for DataLoader worker ``worker`` derived from ``seed`` (distinct per worker)."""
    return (int(seed) * 1_000_003 + 7919 * (worker + 1)) % _MAX_SEED


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


def draw_seed(generator: torch.Generator | None = None) -> int:
    """An integer seed drawn from ``generator`` (or torch's global RNG when ``None``)."""
    return int(torch.randint(0, _MAX_SEED, (1,), generator=generator).item())


def uniform(g: torch.Generator, low: float, high: float, size: int | tuple[int, ...] = ()) -> Tensor:
    """Uniform samples in ``[low, high)`` (float64, CPU) from ``g``."""
    shape = (size,) if isinstance(size, int) else size
    return low + (high - low) * torch.rand(shape, generator=g, dtype=torch.float64)


def as_range(
    value: float | tuple[float, float] | list[float], name: str, symmetric: bool = False
) -> tuple[float, float]:
    """TorchIO-style range: a scalar ``v`` means ``(-v, v)`` if ``symmetric`` else ``(0, v)``."""
    if isinstance(value, int | float):
        lo, hi = (-float(value), float(value)) if symmetric else (0.0, float(value))
    else:
        if len(value) != 2:
            raise InputError(f"{name}: expected a number or a (low, high) pair, got {value!r}")
        lo, hi = float(value[0]), float(value[1])
    if hi < lo:
        raise InputError(f"{name}: low {lo} is greater than high {hi}")
    return lo, hi


class Filter:
    """A deterministic 3D filter with explicit parameters (the ones of ``__init__``).

    Subclasses implement :meth:`apply` on a ``(B, C, D, H, W)`` tensor of dtype float32 or float64.
    Stochastic filters take ``seed``: sample ``b`` of a batch uses seed ``seed + b``, so a batched call
    equals per-sample calls with seeds ``seed, seed + 1, ...``; ``seed=None`` draws from torch's global
    RNG (not reproducible unless the caller seeds torch).
    """

    name: ClassVar[str] = "filter"
    family: ClassVar[str] = "none"
    stochastic: ClassVar[bool] = False

    def __call__(self, x: Tensor) -> Tensor:
        meta_cls = type(x) if isinstance(x, Tensor) and type(x) is not Tensor else None
        base = x.as_subclass(Tensor) if meta_cls is not None else x
        x5, was_4d = as_batch(base, self.name)
        dtype = x5.dtype
        work = x5 if dtype in (torch.float32, torch.float64) else x5.float()
        out = self.apply(work)
        if out.dtype != dtype:
            out = out.to(dtype)
        if was_4d:
            out = out.squeeze(0)
        if meta_cls is not None:
            out = _rewrap(out, x)
        return out

    def apply(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"]

    def get_params(self) -> dict[str, Any]:
        """The constructor arguments, JSON-friendly; ``type(self)(**get_params())`` is the same filter."""
        return {k: _to_plain(getattr(self, k)) for k in self.param_names()}

    def record(self) -> dict[str, Any]:
        """``{"name": ..., "params": ...}``; :func:`replay` turns it back into this filter."""
        return {"name": self.name, "params": self.get_params()}

    def _generator(self, device: torch.device, index: int) -> torch.Generator | None:
        seed = getattr(self, "seed", None)
        if seed is None:
            return None
        return make_generator(int(seed) + index, device)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


def _rewrap(out: Tensor, like: Tensor) -> Tensor:
    """Give ``out`` the subclass and metadata of ``like`` (MONAI MetaTensor keeps its affine / meta)."""
    if hasattr(like, "meta") and hasattr(like, "copy_meta_from"):
        from monai.data import MetaTensor

        return MetaTensor(
            out, meta=like.meta, applied_operations=list(getattr(like, "applied_operations", []))
        )
    return out.as_subclass(type(like))


class Identity(Filter):
    """Severity 0: returns the input unchanged (a copy is not made)."""

    name = "identity"
    family = "none"

    def __init__(self) -> None:
        pass

    def __call__(self, x: Tensor) -> Tensor:
        as_batch(x.as_subclass(Tensor) if isinstance(x, Tensor) else x, self.name)
        return x

    def apply(self, x: Tensor) -> Tensor:
        return x


class RandomFilter:
    """Samples the parameters of ``filter_cls`` and applies it; the applied parameters are recorded.

    ``p`` is the probability of applying the filter at all.  ``seed`` is an int, a ``torch.Generator``
    or ``None``.  Randomness is worker-safe and follows MONAI's ``Randomizable`` contract
    (``R``, :meth:`set_random_state`, :meth:`randomize`):

    * ``seed=None`` draws every call from torch's global RNG, so ``torch.manual_seed`` /
      ``monai.utils.set_determinism`` reseed it and each DataLoader worker (whose torch RNG the
      DataLoader seeds differently) gets its own draws;
    * an int / ``Generator`` seed gives a private stream; inside a DataLoader worker it is re-derived
      from ``(seed, worker id)`` on first use, so workers never repeat each other's draws;
    * :meth:`set_random_state` (called per worker by ``monai.data.DataLoader``, and by hand) reseeds
      the private stream explicitly.

    One parameter
    set is drawn per call, shared by all samples of a batch (the noise itself still differs per sample,
    see :class:`Filter`).  After a call, ``last_params`` holds the parameters of the deterministic filter
    that was applied (``None`` if skipped) and ``last_record`` a ``{"name", "params", "applied"}``
    record for :func:`replay`.
    """

    filter_cls: ClassVar[type[Filter]] = Filter

    def __init__(self, p: float = 1.0, seed: SeedLike = None) -> None:
        self.p = p
        self.seed = seed

    R: np.random.RandomState = np.random.RandomState()

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> RandomFilter:
        """MONAI's ``Randomizable.set_random_state``: reseed from ``seed`` or a ``RandomState`` (``None``:
        back to the constructor's ``seed``).  Returns ``self``."""
        if seed is not None:
            self.R = np.random.RandomState(int(seed) % _MAX_SEED)
        elif state is not None:
            if not isinstance(state, np.random.RandomState):
                raise TypeError(f"state must be None or a np.random.RandomState, got {type(state).__name__}")
            self.R = state
        else:
            self.R = np.random.RandomState()
            self._gen = None
            return self
        self._gen = make_generator(int(self.R.randint(_MAX_SEED)))
        self._gen_owner = _owner()
        return self

    def randomize(self, data: Any = None) -> None:
        """Draw the next deterministic filter into ``last_transform`` (MONAI's ``randomize``)."""
        self.last_transform = self.sample()

    @property
    def name(self) -> str:
        return self.filter_cls.name

    @property
    def family(self) -> str:
        return self.filter_cls.family

    def _rng(self) -> torch.Generator | None:
        """The generator of the next draw (``None``: torch's global RNG)."""
        g = getattr(self, "_gen", None)
        owner = _owner()
        if g is not None and getattr(self, "_gen_owner", None) == owner:
            return g
        if self.seed is None and g is None:
            return None
        base = self.seed if g is None else draw_seed(g)
        if isinstance(base, torch.Generator):
            g = base if owner[1] is None else make_generator(draw_seed(base) + owner[1] + 1)
        else:
            g = make_generator(int(base) if owner[1] is None else _worker_seed(int(base), owner[1]))
        self._gen, self._gen_owner = g, owner
        return g

    def sample_params(self, g: torch.Generator) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def sample(self) -> Filter | None:
        """Draw the next deterministic filter (``None`` when skipped with probability ``1 - p``)."""
        if not 0.0 <= self.p <= 1.0:
            raise InputError(f"{type(self).__name__}: p must be in [0, 1], got {self.p}")
        g = self._rng()
        if g is None:  # seed=None: a fresh stream from torch's global RNG on every call
            g = make_generator(draw_seed())
        if self.p < 1.0 and float(torch.rand((), generator=g)) >= self.p:
            return None
        return self.filter_cls(**self.sample_params(g))

    def __call__(self, x: Tensor, randomize: bool = True) -> Tensor:
        if randomize or not hasattr(self, "last_transform"):
            self.randomize()
        t = self.last_transform
        if t is None:
            self.last_params = None
            self.last_record = {"name": self.name, "params": None, "applied": False}
            return x
        self.last_params = t.get_params()
        self.last_record = {**t.record(), "applied": True}
        return t(x)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p}, seed={self.seed!r})"
