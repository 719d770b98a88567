"""One error type for bad user input. The CLI prints its message on one line and exits non-zero."""

from __future__ import annotations


class InputError(ValueError):
    """Bad input. The message is one line and names the file, column or row at fault."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class UnreadableImage(InputError):
    """An image that passed the table's checks but cannot be decoded while embedding.

    ``index`` is its position in the encoder's input list (embeddings for the inputs before it have been
    yielded), ``path`` the file; the message names the file and why (``PATH: cannot read image (...)``).
    """

    def __init__(self, message: str, path: str = "", index: int = -1) -> None:
        super().__init__(message)
        self.path = path
        self.index = index
