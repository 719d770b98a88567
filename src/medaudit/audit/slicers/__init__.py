"""Slice discovery: find groups of cases where a classifier fails.

``get_slicer(name, **params)`` builds a registered slicer: ``"mixture"`` (alias ``"domino"``), the
error-aware Gaussian mixture of Domino, ``"kmeans"``, a k-means baseline on the error cases, and
``"rules"``, conjunctions of readable predicates (:class:`RuleSlicer`; it takes a boolean predicate
matrix in place of embeddings).
Register your own with :func:`register_slicer`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from medaudit.errors import InputError

from .base import BaseSlicer, check_slicer_inputs
from .kmeans import KMeansErrorSlicer
from .mixture import ErrorAwareMixtureSlicer
from .rules import RuleSlicer

__all__ = [
    "SLICERS",
    "BaseSlicer",
    "ErrorAwareMixtureSlicer",
    "KMeansErrorSlicer",
    "RuleSlicer",
    "check_slicer_inputs",
    "get_slicer",
    "register_slicer",
]

SLICERS: dict[str, type[BaseSlicer]] = {
    "mixture": ErrorAwareMixtureSlicer,
    "domino": ErrorAwareMixtureSlicer,
    "kmeans": KMeansErrorSlicer,
    "rules": RuleSlicer,
}


def register_slicer(name: str, cls: type[BaseSlicer] | None = None, *, overwrite: bool = False) -> Any:
    """Register a slicer class under ``name``; usable directly or as a class decorator.

    Example::

        @register_slicer("my-slicer")
        class MySlicer(BaseSlicer): ...
    """

    def deco(c: type[BaseSlicer]) -> type[BaseSlicer]:
        if not (isinstance(c, type) and issubclass(c, BaseSlicer)):
            raise TypeError(f"{c!r} is not a BaseSlicer subclass")
        key = name.lower()
        if key in SLICERS and not overwrite:
            raise ValueError(f"slicer {name!r} is already registered (pass overwrite=True)")
        SLICERS[key] = c
        return c

    return deco(cls) if cls is not None else deco


def get_slicer(name: str, **params: Any) -> BaseSlicer:
    """Build the slicer registered as ``name`` with the given parameters."""
    cls: Callable[..., BaseSlicer] | None = SLICERS.get(str(name).lower())
    if cls is None:
        raise InputError(f"unknown slicer {name!r}; choose one of {sorted(SLICERS)}")
    return cls(**params)
