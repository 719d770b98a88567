"""Shared rich progress bar factory, so every long job looks the same and can be silenced.

Progress is transient terminal decoration: it is drawn only when stderr is a terminal (or in a
notebook), never with ``medaudit -q`` / ``MEDAUDIT_QUIET=1``, and a display that ends with an exception
is erased, so that the error line printed next is the only line left on stderr.
"""

from __future__ import annotations

import os
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)


def quiet() -> bool:
    """Whether medaudit is asked to be quiet (``medaudit -q`` sets ``MEDAUDIT_QUIET=1``)."""
    return os.environ.get("MEDAUDIT_QUIET", "") == "1"


def interactive() -> bool:
    """Whether a progress display can be drawn and erased: stderr is a terminal, or a notebook."""
    return bool(console.is_terminal or console.is_jupyter)


class _Progress(Progress):
    """A rich Progress whose display is cleared when its ``with`` block ends with an exception."""

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.live.transient = True  # leave no bar above the error line
        self.stop()


def make_progress(disable: bool | None = None) -> Progress:
    """A progress display on stderr with ETA. Disabled when ``disable`` is true, when medaudit is quiet
    (``-q`` / ``MEDAUDIT_QUIET=1``) and when stderr is not a terminal (a log file or a pipe gets no bars)."""
    off = bool(disable) or quiet() or not interactive()
    return _Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=off,
        transient=False,
    )
