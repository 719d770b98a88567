"""One error type for bad user input. The CLI prints its message on one line and exits non-zero."""

from __future__ import annotations


class InputError(ValueError):
    """Bad input. The message is one line and names the file, column or row at fault."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))
