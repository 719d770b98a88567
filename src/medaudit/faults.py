"""Fault injection for the reliability tests (a no-op unless ``MEDAUDIT_FAULT`` is set).

``MEDAUDIT_FAULT=<point>[@<SIGNAL>]`` makes the process send itself ``SIGNAL`` (default ``KILL``) the
first time it reaches the named point, so tests can kill or interrupt a real run at a known phase:

- ``audit:embed``: after the first modality's embeddings are computed (and cached);
- ``audit:slice``: in the slicing phase, after the mixture slicer is fitted (before the rule search);
- ``audit:write``: in the write phase, after ``slices.json`` is staged and before the output is published;
- ``audit:report``: in the write phase, after ``report.html`` is staged and before the output is published;
- ``train:checkpoint``: during training, right after the first checkpoint is saved.
"""

from __future__ import annotations

import os
import signal

__all__ = ["fault_point"]


def fault_point(name: str) -> None:
    """Deliver the signal named by ``MEDAUDIT_FAULT`` if it names this point."""
    spec = os.environ.get("MEDAUDIT_FAULT", "")
    if not spec:
        return
    point, _, sig = spec.partition("@")
    if point != name:
        return
    os.environ.pop("MEDAUDIT_FAULT", None)  # once
    os.kill(os.getpid(), getattr(signal, f"SIG{(sig or 'KILL').upper()}"))
