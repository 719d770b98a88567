"""Encoder protocol, registry and stable content hashing shared by every modality."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from medaudit.audit.config import DEFAULT_ENCODERS, MODALITIES
from medaudit.errors import InputError


@runtime_checkable
class Encoder(Protocol):
    """What every encoder provides.

    Inputs per modality: ``image`` = sequence of file paths, ``report`` = sequence of strings,
    ``metadata`` = a pandas DataFrame (one row per case).

    Attributes:
        name: registry name (e.g. ``"efficientnet-lite0"``).
        modality: one of ``image``, ``report``, ``metadata``.
        requires_fit: True when :meth:`fit` must see data before :meth:`encode` (TF-IDF, tabular).
    """

    name: str
    modality: str
    requires_fit: bool

    @property
    def dim(self) -> int:
        """Embedding width (for fitted encoders: after fitting)."""
        ...

    def fit(self, inputs: Any) -> Encoder:
        """Learn what the encoder needs from ``inputs`` (no-op for pretrained encoders); returns self."""
        ...

    def encode(self, inputs: Any) -> np.ndarray:
        """Embed ``inputs`` as an ``(n, dim)`` float32 array."""
        ...

    def cache_key(self) -> str:
        """Hex digest of everything that determines the output: config, weights, fitted state."""
        ...


_REGISTRY: dict[str, dict[str, Callable[..., Encoder]]] = {m: {} for m in MODALITIES}


def register_encoder(modality: str, name: str) -> Callable[[Callable[..., Encoder]], Callable[..., Encoder]]:
    """Class/factory decorator adding an encoder to the registry under ``(modality, name)``.

    Users can register their own::

        @register_encoder("image", "my-net")
        class MyNet(TorchModuleEncoder): ...
    """
    if modality not in _REGISTRY:
        raise InputError(f"unknown modality {modality!r}; expected one of {', '.join(MODALITIES)}")

    def deco(factory: Callable[..., Encoder]) -> Callable[..., Encoder]:
        _REGISTRY[modality][name] = factory
        return factory

    return deco


def encoder_accepts(modality: str, name: str, param: str) -> bool:
    """Whether the encoder registered as ``(modality, name)`` takes the keyword ``param``."""
    import inspect

    factory = _REGISTRY.get(modality, {}).get(name)
    if factory is None:
        return False
    params = inspect.signature(factory).parameters
    return param in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def encoder_takes_none(modality: str, name: str, param: str) -> bool:
    """Whether the keyword ``param`` of the encoder ``(modality, name)`` may be ``None`` (its
    annotation allows ``None``, or its default is ``None``); ``True`` when it cannot be told (no
    annotation, a ``**kwargs`` catch-all or an unknown encoder: the encoder then decides)."""
    import inspect

    factory = _REGISTRY.get(modality, {}).get(name)
    if factory is None:
        return True
    par = inspect.signature(factory).parameters.get(param)
    if par is None or par.default is None or par.annotation is inspect.Parameter.empty:
        return True
    ann = par.annotation if isinstance(par.annotation, str) else repr(par.annotation)
    return "None" in ann or "Optional" in ann or "Any" in ann


def get_encoder(modality: str, name: str | None = None, **kw: Any) -> Encoder:
    """Build the encoder registered as ``(modality, name)`` (``name=None`` = the modality's default)."""
    if modality not in _REGISTRY:
        raise InputError(f"unknown modality {modality!r}; expected one of {', '.join(MODALITIES)}")
    name = name or DEFAULT_ENCODERS[modality]
    try:
        factory = _REGISTRY[modality][name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY[modality]))
        raise InputError(f"unknown {modality} encoder {name!r}; registered: {known}") from None
    return factory(**kw)


def list_encoders(modality: str | None = None) -> dict[str, list[str]]:
    """Registered encoder names per modality (or for one modality)."""
    mods = [modality] if modality else list(MODALITIES)
    for m in mods:
        if m not in _REGISTRY:
            raise InputError(f"unknown modality {m!r}; expected one of {', '.join(MODALITIES)}")
    return {m: sorted(_REGISTRY[m]) for m in mods}


# ---------------------------------------------------------------------------------------------- hashing


def _feed(h: Any, obj: Any, depth: int = 0) -> None:
    """Feed a canonical serialisation of ``obj`` into hash ``h`` (dict keys sorted, arrays by bytes)."""
    if depth > 50:
        raise ValueError("stable_hash: object nested too deeply")
    if obj is None or isinstance(obj, (bool, int, float, str)):
        h.update(b"J" + json.dumps(obj).encode())
    elif isinstance(obj, bytes):
        h.update(b"B%d:" % len(obj) + obj)
    elif isinstance(obj, np.generic):
        _feed(h, obj.item(), depth + 1)
    elif isinstance(obj, np.ndarray):
        if obj.dtype == object:
            h.update(b"O" + str(obj.shape).encode())
            for x in obj.ravel():
                _feed(h, x, depth + 1)
        else:
            a = np.ascontiguousarray(obj)
            h.update(b"A" + a.dtype.str.encode() + str(a.shape).encode())
            h.update(a.tobytes())
    elif _is_tensor(obj):
        _feed(h, obj.detach().cpu().contiguous().numpy(), depth + 1)
    elif isinstance(obj, dict):
        h.update(b"D%d" % len(obj))
        for k in sorted(obj, key=repr):
            _feed(h, repr(k), depth + 1)
            _feed(h, obj[k], depth + 1)
    elif isinstance(obj, (list, tuple)):
        h.update(b"L%d" % len(obj))
        for x in obj:
            _feed(h, x, depth + 1)
    elif isinstance(obj, (set, frozenset)):
        _feed(h, sorted(obj, key=repr), depth + 1)
    elif isinstance(obj, Path):
        _feed(h, str(obj), depth + 1)
    elif isinstance(obj, type) or (callable(obj) and not hasattr(obj, "__dict__")):
        _feed(h, f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', repr(obj))}", depth + 1)
    elif hasattr(obj, "__dict__"):
        # estimators and plain objects: class name + all attributes (sklearn learned attrs included)
        h.update(b"C" + f"{type(obj).__module__}.{type(obj).__qualname__}".encode())
        _feed(h, {k: v for k, v in vars(obj).items() if not k.startswith("__")}, depth + 1)
    else:
        _feed(h, repr(obj), depth + 1)


def _is_tensor(obj: Any) -> bool:
    mod = type(obj).__module__
    return mod.startswith("torch") and type(obj).__name__ in ("Tensor", "Parameter")


def stable_hash(*objs: Any) -> str:
    """SHA-256 hex digest of a canonical serialisation of ``objs`` (stable across processes)."""
    h = hashlib.sha256()
    for o in objs:
        _feed(h, o)
    return h.hexdigest()


def hash_state_dict(state: dict[str, Any]) -> str:
    """SHA-256 of a torch state dict (names, dtypes, shapes and values)."""
    h = hashlib.sha256()
    for k, v in state.items():
        h.update(k.encode())
        _feed(h, v)
    return h.hexdigest()


def hash_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def as_list(inputs: Any, what: str) -> list[Any]:
    """Validate a sequence (not a lone string) and return it as a list."""
    if isinstance(inputs, (str, bytes, os.PathLike)):
        raise InputError(f"{what}: expected a sequence of items, got a single {type(inputs).__name__}")
    try:
        return list(inputs)
    except TypeError:
        raise InputError(f"{what}: expected a sequence, got {type(inputs).__name__}") from None
