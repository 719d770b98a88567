"""Atomic output helpers: nothing half-written is ever left behind."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def default_cache_dir() -> Path:
    """The cache for cohorts, embeddings and models: ``$MEDAUDIT_CACHE`` or ``~/.cache/medaudit``."""
    env = os.environ.get("MEDAUDIT_CACHE")  # '~/cache' set without a shell is the home folder's
    return Path(os.path.expanduser(env)) if env else Path.home() / ".cache" / "medaudit"


def cache_flag(cache: Path) -> str:
    """How the user named the cache folder ``cache``, for error messages: ``$MEDAUDIT_CACHE`` when
    that variable chose it, the default (``~/.cache/medaudit``) when nothing did, else ``--cache-dir``."""
    env = os.environ.get("MEDAUDIT_CACHE")
    here = Path(cache).absolute()
    if env and Path(os.path.expanduser(env)).absolute() == here:
        return "$MEDAUDIT_CACHE"
    if not env and here == (Path.home() / ".cache" / "medaudit").absolute():
        return "the default cache folder (choose one with --cache-dir)"
    return "--cache-dir"


def check_unique_header(path: str | os.PathLike[str], names: Iterable[object]) -> None:
    """Refuse a table header that names a column twice (pandas would rename the second ``label`` to
    ``label.1`` and carry on): one :class:`~medaudit.errors.InputError` line naming file and column."""
    from collections import Counter

    from medaudit.errors import InputError

    header = [str(n) for n in names]
    counts = Counter(header)
    dup = next((c for c in header if counts[c] > 1), None)
    if dup is not None:
        raise InputError(f"{path}: column '{dup}' appears {counts[dup]} times in the header")


def missing_reason(path: str | os.PathLike[str], what: str = "file") -> str:
    """Why ``path`` cannot be used as ``what``, for a one-line message: ``'<what> not found'`` unless the
    path exists in some form: a symlink loop, a broken symbolic link, a folder that may not be searched
    (``os.stat`` tells them apart; ``Path.is_file`` says ``False`` for all of them), or something of
    another kind (a folder, a file, a device such as ``/dev/null``)."""
    import errno

    p = os.fspath(path)
    try:
        os.stat(p)
    except ValueError:  # "embedded null byte": no file can have such a name
        return f"{what} name contains a NUL character"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"{what} is a symlink loop (the link leads back to itself; unreadable)"
        if exc.errno in (errno.EACCES, errno.EPERM):
            return f"{what} is unreadable (permission denied)"
        if exc.errno == errno.ENOENT and os.path.islink(p):
            try:
                target = os.readlink(p)
            except OSError:
                target = "?"
            return f"{what} is a broken symbolic link (its target {target} does not exist)"
        if exc.errno == errno.ENAMETOOLONG:
            return f"{what} name is too long"
        return f"{what} not found"
    a = "an" if what[:1].lower() in "aeiou" else "a"
    if os.path.isdir(p):
        return f"is a folder, not {a} {what}"
    if os.path.isfile(p):
        if not os.access(p, os.R_OK):
            return f"{what} is unreadable (permission denied)"
        return f"is a file, not {a} {what}"
    return f"is not a regular file or folder (a device, pipe or socket), not {a} {what}"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish_mode(path: Path, directory: bool = False) -> None:
    """Give a staged file or folder the permissions a plain ``open``/``mkdir`` would have.

    ``tempfile`` creates files 0600 and folders 0700; outputs must be readable as usual.
    """
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


#: less free space than this after a failed write means the disk is full, whatever the writer raised
_FULL_BYTES = 1 << 20


def _write_error(exc: BaseException, path: Path) -> OSError | None:
    """The error to raise instead of ``exc``, raised while writing ``path`` (``None``: ``exc`` itself).

    A full disk is an ``OSError`` naming ``path`` (the command line shows it as one line, exit 2):
    ``write`` reports ENOSPC without a file name, ``torch.save`` as a ``RuntimeError`` ('unexpected pos'),
    so any writer's error on a disk with less than 1 MiB left counts as one. An ``OSError`` that names no
    file, or only the temporary file, is given ``path``'s name.
    """
    import errno

    from medaudit.errors import InputError

    if not isinstance(exc, Exception) or isinstance(exc, InputError):
        return None  # Ctrl-C, SIGTERM, a bad input found while writing: as they are
    if isinstance(exc, OSError) and exc.errno is not None:
        name = exc.filename
        if name is not None and not Path(str(name)).name.startswith(f".{path.name}."):
            return None
        return OSError(exc.errno, os.strerror(exc.errno), str(path))
    try:
        st = os.statvfs(path.parent)
    except OSError:
        return None
    if st.f_bavail * st.f_frsize < _FULL_BYTES:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return None


def _mkstemp(path: Path) -> tuple[int, str]:
    from medaudit.outdir import note_write

    note_write(path)  # listed in a run folder's marker before it exists (see medaudit.outdir)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise (_write_error(exc, path) or exc) from None


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and an atomic rename.

    On any failure the temporary file is removed and ``path`` is left as it was; a full disk is an
    ``OSError`` naming ``path``."""
    path = Path(path)
    fd, tmp = _mkstemp(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        _publish_mode(Path(tmp))
        os.replace(tmp, path)
    except BaseException as exc:
        err = _write_error(exc, path)  # before the temporary file frees its space
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if err is not None:
            raise err from exc
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


@contextlib.contextmanager
def atomic_save(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it is renamed onto ``path``, on failure removed.

    Works for libraries that insist on writing to a path themselves (``torch.save``, ``df.to_parquet``).
    A full disk is an ``OSError`` naming ``path`` (see :func:`_write_error`).
    """
    path = Path(path)
    fd, tmp = _mkstemp(path)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            _publish_mode(tmp_path)
        os.replace(tmp_path, path)
    except BaseException as exc:
        err = _write_error(exc, path)  # before the temporary file frees its space
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        if err is not None:
            raise err from exc
        raise


@contextlib.contextmanager
def atomic_output_dir(
    path: str | os.PathLike[str],
    overwrite: bool = True,
    *,
    kind: str = "output",
    inputs: Iterable[str | os.PathLike[str] | None] = (),
    force: bool = False,
    flag: str = "--out",
) -> Iterator[Path]:
    """Yield a hidden staging folder next to ``path``; it replaces ``path`` only if the block succeeds.

    ``path`` is replaced only when it is absent, empty, or an earlier medaudit output of the same
    ``kind`` (``force`` also allows a foreign folder, never one that contains an ``inputs`` path); see
    :mod:`medaudit.outdir`. On any exception the staging folder is removed, so no partial output is
    left behind. ``overwrite=False`` refuses any existing ``path``.
    """
    from medaudit.outdir import claim_output

    if not overwrite and os.path.lexists(path):
        raise FileExistsError(f"{path}: output folder exists")
    with claim_output(path, kind, inputs=inputs, force=force, flag=flag) as claim:
        yield claim.stage
