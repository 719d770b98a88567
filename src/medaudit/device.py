"""Device selection (CUDA when present, CPU otherwise) and the one way medaudit loads torch files."""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch

from medaudit.errors import InputError


def load_weights_only(path: str | os.PathLike[str]) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``: never a pickle that runs code. torch's
    own warning about a pickle's protocol is silenced; its errors are the caller's to word (medaudit never
    suggests unsafe loading)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, map_location="cpu", weights_only=True)


def check_device(spec: str | None, flag: str = "--device", *, here: bool = True) -> str | None:
    """Validate a device option before any work: ``None``/``auto`` (pick one), ``cpu``, ``cuda`` or
    ``cuda:N`` on a machine that has that GPU, or ``mps`` where available. Returns the spec (``None``
    for auto); raises a one-line :class:`InputError` naming ``flag`` otherwise. ``here=False`` checks
    the spelling only: the device belongs to other machines (Ray workers), not this one."""
    if spec is None or str(spec).strip().lower() in ("", "auto"):
        return None
    s = str(spec).strip().lower()
    try:
        dev = torch.device(s)
    except (RuntimeError, ValueError):
        raise InputError(f"{flag} {s!r}: not a device; use cpu, cuda, cuda:N or auto") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"{flag} {s!r}: medaudit runs on cpu, cuda or mps, not {dev.type}")
    if not here:
        return s
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise InputError(f"{flag} {s!r}: no CUDA GPU is available on this machine; use cpu or auto")
        if dev.index is not None and dev.index >= n:
            raise InputError(f"{flag} {s!r}: this machine has {n} CUDA GPU(s) (cuda:0..cuda:{n - 1})")
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise InputError(f"{flag} {s!r}: MPS is not available on this machine; use cpu or auto")
    return s


def default_device(prefer: str | None = None) -> torch.device:
    """Return ``prefer`` if given, else ``cuda`` when available, else ``cpu``."""
    if prefer:
        return torch.device(prefer)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) for reproducible runs."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
