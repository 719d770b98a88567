"""Test doubles shared by the encoder and cache tests (``tests/`` is on ``sys.path`` under pytest)."""

from __future__ import annotations

from typing import Any


class Counting:
    """Wraps an encoder and records how many items each ``encode()`` call computed."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name, self.modality = inner.name, inner.modality
        self.calls: list[int] = []

    requires_fit = property(lambda self: self.inner.requires_fit)
    is_fitted = property(lambda self: getattr(self.inner, "is_fitted", True))
    dim = property(lambda self: self.inner.dim)

    @property
    def encoded(self) -> int:
        """Items computed over all calls."""
        return sum(self.calls)

    def fit(self, inputs: Any) -> Counting:
        self.inner.fit(inputs)
        return self

    def encode(self, inputs: Any) -> Any:
        self.calls.append(len(inputs))
        return self.inner.encode(inputs)

    def cache_key(self) -> Any:
        return self.inner.cache_key()
