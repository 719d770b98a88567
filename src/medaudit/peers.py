"""Where the side-by-side peers live (the published Domino 0.1.5, built in its own Python 3.9 env).

The folder holds ``domino_env.sh`` (builds the environment, prints its python) and ``run_domino.py``
(fits Domino on ``.npy`` arrays). It is found, in order, from:

1. an explicit path (``--peers-dir`` on the commands that use it);
2. the ``MEDAUDIT_PEERS`` environment variable;
3. ``../shared/peers`` relative to the repository root (a source checkout).

Nothing requires it: without it the benchmarks run and say that the peer rows were skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["PEERS_ENV", "peers_dir"]

PEERS_ENV = "MEDAUDIT_PEERS"


def _repo_root() -> Path | None:
    for parent in Path(__file__).resolve().parents:
        if (parent / "pyproject.toml").is_file() and (parent / "src" / "medaudit").is_dir():
            return parent
    return None


def peers_dir(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The peers folder, or ``None`` when none is configured or found."""
    if explicit:
        return Path(explicit)
    if os.environ.get(PEERS_ENV):
        return Path(os.environ[PEERS_ENV])
    root = _repo_root()
    candidate = root.parent / "shared" / "peers" if root else None
    return candidate if candidate is not None and candidate.is_dir() else None
