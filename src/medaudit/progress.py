"""Shared rich progress bar factory, so every long job looks the same and can be silenced."""

from __future__ import annotations

import os

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


def make_progress(disable: bool | None = None) -> Progress:
    """A progress display on stderr with ETA. Disabled when MEDAUDIT_QUIET=1."""
    if disable is None:
        disable = os.environ.get("MEDAUDIT_QUIET", "") == "1"
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=disable,
        transient=False,
    )
