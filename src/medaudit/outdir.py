"""Output safety: medaudit replaces or writes into only what it wrote itself.

Every command that writes an output folder claims it with :func:`claim_output` before doing any work:

- **Ours or empty.** An existing folder is replaced (or, in place, written into) only when it is empty
  or holds the marker file :data:`MARKER` that an earlier medaudit run of the *same kind* wrote, and
  nothing else than the entries that marker lists as medaudit's. A regular file, a folder with other
  files, or a medaudit output of another kind is refused with one line (``InputError``) unless
  ``force``; ``force`` never applies to a regular file, to a folder that contains one of the run's
  inputs, or to the filesystem root, the home folder, the current folder or one of their parents,
  nor to a resumable run folder (written in place) that holds files medaudit did not write.
- **Never a file medaudit did not write.** Even with ``force``, entries medaudit did not write stay
  as they are: the new output is published *beside* them (only medaudit's own earlier entries are
  replaced), and a run whose output would replace one of them fails, naming it.
- **Inputs are never inside.** Inputs are compared after resolving symlinks and ``..``.
- **Staging beside the output.** The result is written to a hidden staging folder created next to the
  output at the start (so an unwritable place fails at once) and renamed onto it at the end.
- **One writer.** An exclusive ``fcntl.flock`` on ``.<name>.lock`` beside the output is held for the
  whole run; a second concurrent run fails at once. The lock file is removed when the run ends.
- **Stale staging is cleaned.** Staging folders of this output that carry the marker (left by a killed
  run) are removed while the lock is held, so none can belong to a live run; their times are not
  trusted (a clock set back would keep them).
- **Nothing half-made.** On failure the staging folder, and any parent folders this run created, are
  removed. In-place outputs (resumable run folders) are removed on failure only if this run created them
  and they hold nothing to resume from.
- **A run folder lists what medaudit wrote.** A resumable (in-place) run's marker lists every top-level
  entry medaudit writes there, *before* it writes it (:func:`note_write`, called by every atomic write in
  :mod:`medaudit.io`), so even a killed run leaves a true list. An entry the list does not name (a
  user's ``config.json`` dropped into an interrupted run) is kept and never written: a run that would
  write it fails with one line naming it, at the start when the command declares the names it writes.
  Empty folders and medaudit's own hidden ``.<listed name>.*`` leftovers (temporary files, locks) are not
  counted as the user's.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from medaudit.errors import InputError

__all__ = [
    "MARKER",
    "OutputClaim",
    "check_output",
    "claim_output",
    "clear_interrupt_note",
    "foreign_entries",
    "interrupt_note",
    "note_write",
    "read_marker",
]

MARKER = ".medaudit-output"
_STAGING = ".staging-"
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # the disk (or a quota, or a file size limit) is full


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk, a quota or the file-size limit is full (every later write fails too)."""
    return isinstance(exc, OSError) and exc.errno in _FULL


_OLD = ".old-"

# In-place claims being written by this process: what they write is listed in their markers.
_ACTIVE: list[OutputClaim] = []

# What the most recent claim left behind when it was interrupted; ``cli.main`` prints it on Ctrl-C.
_NOTES: list[str] = []


def interrupt_note() -> str | None:
    """One line on what the last interrupted output claim kept (``None`` if no claim was interrupted)."""
    return _NOTES[-1] if _NOTES else None


def clear_interrupt_note() -> None:
    """Forget earlier notes (``cli.main`` calls it at the start of each command)."""
    _NOTES.clear()


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The marker of a medaudit output folder, or ``None`` when there is none (or it is not ours)."""
    try:
        data = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("kind"), str) else None


def _marker(kind: str, state: str, files: list[str] | None = None) -> dict[str, Any]:
    from medaudit import __version__

    mark: dict[str, Any] = {
        "kind": kind,
        "medaudit_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "pid": os.getpid(),
        "state": state,
    }
    if files is not None:
        mark["files"] = files
    return mark


def _write_marker(folder: Path, kind: str, state: str, files: list[str] | None = None) -> None:
    from medaudit.io import atomic_write_json

    atomic_write_json(folder / MARKER, _marker(kind, state, files))


def _entries(folder: Path) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(folder))
    except OSError:
        return []


def foreign_entries(folder: Path, in_place: bool = False) -> list[str]:
    """Top-level entries of ``folder`` that medaudit did not write: every entry when it has no
    marker; with one, those its ``files`` list does not name (a marker from before the list existed
    names all of them). ``in_place`` (a run folder, which medaudit writes into and never clears) does
    not count empty folders and medaudit's hidden ``.<listed name>.*`` leftovers."""
    names = _entries(folder)
    mark = read_marker(folder)
    if mark is None:
        return names
    files = mark.get("files")
    if not isinstance(files, list):
        return []
    ours = {str(f) for f in files} | {MARKER}
    return [n for n in names if n not in ours and not (in_place and _leftover(folder, n, ours))]


def _leftover(folder: Path, name: str, ours: set[str]) -> bool:
    """An entry that holds nothing (an empty folder) or is medaudit's hidden ``.<ours>.*`` leftover."""
    if name.startswith(".") and any(name.startswith(f".{o}.") for o in ours):
        return True
    p = folder / name
    return p.is_dir() and not p.is_symlink() and not _entries(p)


def _clash(claim: OutputClaim, name: str) -> str:
    return (
        f"{claim.flag} {claim.path}: holds '{name}', which medaudit did not write and this run would "
        "write; move it (a run folder is written in place, so --force does not apply)"
    )


def note_write(path: str | os.PathLike[str]) -> None:
    """Record that medaudit is about to write ``path``: inside a resumable run folder this process is
    writing, its top-level entry joins the marker's list of medaudit's files (before it exists). An
    entry of that folder that medaudit did not write is never written: one line names it."""
    if not _ACTIVE:
        return
    p = Path(os.path.abspath(path))
    for claim in _ACTIVE:
        try:
            top = p.relative_to(claim.path).parts[0]
        except (ValueError, IndexError):
            continue
        if top in claim.foreign:
            raise InputError(_clash(claim, top))
        if top.startswith("."):  # a staging or temporary name (its real name is listed), or the marker
            continue
        if top not in claim.files:
            claim.files.add(top)
            _write_marker(claim.path, claim.kind, "running", sorted(claim.files))


def _resolve(p: str | os.PathLike[str], what: str = "path") -> Path:
    """``p`` made absolute with its links followed; a symlink loop is one line naming it (``resolve``
    raises RuntimeError, or OSError on newer Pythons)."""
    try:
        return Path(os.path.expanduser(os.fspath(p))).resolve()
    except (RuntimeError, OSError):
        from medaudit.io import missing_reason

        raise InputError(f"{p}: {missing_reason(p, what)}") from None


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def _protected(path: Path) -> str | None:
    """Why ``path`` may never be replaced, even with ``force`` (or ``None``)."""
    if path == Path(path.anchor):
        return "is the filesystem root"
    for what, p in (("the current folder", Path.cwd()), ("your home folder", Path.home())):
        with contextlib.suppress(OSError):
            if _inside(p.resolve(), path):
                return f"is {what} or one of its parents"
    return None


def _first_existing(path: Path) -> Path:
    p = path
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    return p


@dataclass
class OutputClaim:
    """A claimed output: ``path`` (resolved), the folder to write into (``stage``), and the inputs."""

    path: Path
    kind: str
    stage: Path
    flag: str = "--out"
    force: bool = False
    in_place: bool = False
    inputs: list[Path] = field(default_factory=list)
    marked: bool = False  # this run wrote the marker of an in-place folder that had none
    files: set[str] = field(default_factory=set)  # in place: the top-level entries medaudit wrote
    foreign: set[str] = field(default_factory=set)  # in place: entries found there that it did not

    def check_inputs(self, paths: Iterable[str | os.PathLike[str] | None], what: str = "input") -> None:
        """Refuse (one line) if any input lies inside the output; call it as soon as inputs are known."""
        for raw in paths:
            if raw is None:
                continue
            p = _resolve(raw, what)
            if _inside(p, self.path) or (self.stage != self.path and _inside(p, self.stage)):
                raise InputError(
                    f"{self.flag} {self.path}: contains the {what} {p}; medaudit never writes over its "
                    "inputs (choose another output folder)"
                )
            self.inputs.append(p)


def _refusal(path: Path, kind: str, force: bool, in_place: bool) -> str | None:
    """Why the existing ``path`` may not be taken as ``kind`` output (``None``: it may)."""
    if not os.path.lexists(path):
        anc = _first_existing(path)
        if not anc.is_dir():
            return f"{anc} is a file, not a folder"
        return None
    if not path.is_dir():
        return "is a file, not a folder; medaudit never replaces a file"
    try:
        entries = [e.name for e in os.scandir(path)]
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if not os.access(path, os.W_OK | os.X_OK):  # a run would fail only when it publishes, its work lost
        return "is not writable (permission denied); choose another folder or change its permissions"
    if not entries:
        return None
    mark = read_marker(path)
    foreign = [] if in_place or mark is None else foreign_entries(path)
    if mark is not None and mark["kind"] == kind and not foreign:
        return None  # in place, entries its marker does not list are kept, and guarded by note_write
    if in_place and mark is None:  # written in place: a user's model.pt or config.json would be lost
        return (
            "holds files medaudit did not write, and a run folder is written in place (--force does not "
            "apply); choose a new or empty folder"
        )
    if force:
        return None
    verb = "write into it anyway" if in_place else "write beside them; they are kept"
    if mark is not None and mark["kind"] != kind:
        verb = "write into it anyway" if in_place else "replace it; files medaudit did not write are kept"
        return f"is a medaudit '{mark['kind']}' output, not a '{kind}' one (pass --force to {verb})"
    if foreign:
        return f"holds '{foreign[0]}', which medaudit did not write (pass --force to {verb}, or move it)"
    return f"holds files medaudit did not write (pass --force to {verb}, or choose an empty folder)"


def _check(path: Path, kind: str, inputs: list[Path], force: bool, flag: str, in_place: bool = False) -> None:
    why = _protected(path)
    if why is None:
        for p in inputs:
            if _inside(p, path):
                why = f"contains the input {p}; medaudit never writes over its inputs"
                break
    if why is None:
        why = _refusal(path, kind, force, in_place)
    if why is not None:
        raise InputError(f"{flag} {path}: {why}")


def _make_parents(path: Path, flag: str) -> list[Path]:
    """Create the missing parents of ``path``; return those created (outermost first)."""
    missing = []
    p = path.parent
    while not p.exists():
        missing.append(p)
        p = p.parent
    created: list[Path] = []
    for p in reversed(missing):
        try:
            p.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            _remove_empty(created)
            raise InputError(f"{flag} {path}: cannot create {p} ({exc.strerror})") from None
        created.append(p)
    return created


def _remove_empty(created: list[Path]) -> None:
    for p in reversed(created):
        with contextlib.suppress(OSError):
            p.rmdir()


@contextlib.contextmanager
def _lock(path: Path, flag: str) -> Iterator[None]:
    """Hold an exclusive lock on ``.<name>.lock`` beside ``path``; fail at once if another run holds it."""
    lock = path.parent / f".{path.name}.lock"
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise InputError(f"{flag} {path}: {lock} is a link, not a medaudit lock; move it") from None
            raise InputError(f"{flag} {path}: cannot write in {path.parent} ({exc.strerror})") from None
        if os.fstat(fd).st_size > 0:  # medaudit's locks are empty: this is someone's file
            os.close(fd)
            raise InputError(f"{flag} {path}: {lock} holds data, so it is not a medaudit lock; move it")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise InputError(
                    f"{flag} {path}: another medaudit run is writing it (lock {lock}); wait for it to finish"
                ) from None
            raise
        if still_the_lock(fd, lock):
            break
        os.close(fd)  # the previous holder removed the file between our open and flock: retry
    with held_lock(fd, lock):
        yield


def still_the_lock(fd: int, lock: Path) -> bool:
    """Whether the file locked through ``fd`` is still ``lock``: the previous holder removes its lock file
    when done, and a run that opened it just before must then lock the new file instead."""
    try:
        return os.fstat(fd).st_ino == os.stat(lock).st_ino
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def held_lock(fd: int, lock: Path) -> Iterator[None]:
    """Hold the ``flock`` taken on ``fd``; on the way out remove ``lock`` and close ``fd``."""
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(fd)


def _clean_stale(path: Path) -> None:
    """Remove staging / old folders of ``path`` left by killed runs (marker present). Called with the
    lock held: a live run of ``path`` would hold it, so every such folder is a dead run's, whatever its
    modification time says. Only names ``tempfile`` made for ``path`` match: a live run of ``--out
    NAME.old-1`` stages in ``.NAME.old-1.staging-XXXXXXXX``, which is not ``NAME``'s. A run killed
    between the two renames of a publish left the earlier output only in ``.NAME.old-*/x``: it is put
    back in place when ``NAME`` is absent."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(staging|old)-[a-z0-9_]+")
    with contextlib.suppress(OSError):
        for e in os.scandir(path.parent):
            if not pattern.fullmatch(e.name) or not e.is_dir():
                continue
            p = Path(e.path)
            ours = read_marker(p) is not None or read_marker(p / "x") is not None
            if ours and read_marker(p / "x") is not None and not os.path.lexists(path):
                with contextlib.suppress(OSError):  # killed between the two renames of a publish
                    os.replace(p / "x", path)  # the earlier output goes back in place
            if ours:
                shutil.rmtree(p, ignore_errors=True)


def _publish(claim: OutputClaim) -> None:
    path, stage = claim.path, claim.stage
    _check(path, claim.kind, claim.inputs, claim.force, claim.flag)  # it may have changed meanwhile
    names = [n for n in _entries(stage) if n != MARKER]
    _write_marker(stage, claim.kind, "complete", names)
    from medaudit.io import _publish_mode

    _publish_mode(stage, directory=True)
    if not os.path.lexists(path):
        os.replace(stage, path)
        return
    foreign = foreign_entries(path)
    if foreign:
        _publish_beside(claim, names, foreign)
        return
    old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}{_OLD}"))
    try:
        os.replace(path, old / "x")
    except OSError as exc:  # e.g. --out not writable: moving a folder updates its '..'
        shutil.rmtree(old, ignore_errors=True)
        raise InputError(f"{claim.flag} {path}: cannot replace it ({exc.strerror})") from None
    try:
        os.replace(stage, path)
    except BaseException:
        os.replace(old / "x", path)  # the earlier output goes back in place
        shutil.rmtree(old, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _publish_beside(claim: OutputClaim, names: list[str], foreign: list[str]) -> None:
    """Publish into a folder that holds entries medaudit did not write (``--force``): they stay as
    they are; medaudit's own earlier entries are moved out, the new ones moved in, the marker last."""
    path, stage = claim.path, claim.stage
    clash = sorted(set(names) & set(foreign))
    if clash:
        raise InputError(
            f"{claim.flag} {path}: holds '{clash[0]}', which medaudit did not write and this run would "
            "replace; move it or choose another output folder"
        )
    old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}{_OLD}"))
    _write_marker(old, claim.kind, "old")  # a killed run's leftovers are recognised as ours
    keep = set(foreign)
    for name in _entries(path):
        if name not in keep and name != MARKER:
            os.replace(path / name, old / name)
    for name in names:
        os.replace(stage / name, path / name)
    os.replace(stage / MARKER, path / MARKER)
    shutil.rmtree(stage, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)


#: the name of a temporary file of :func:`medaudit.io.atomic_write_bytes` (``tempfile.mkstemp``)
_TEMP_FILE = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")


def _sweep_temp_files(folder: Path) -> None:
    """Remove the temporary files of atomic writes that a killed run (or a worker it lost) left in the
    run folder ``folder``; called with its lock held, so no live run of it is writing them."""
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            p = Path(dirpath) / name
            if _TEMP_FILE.fullmatch(name) and p.is_file() and not p.is_symlink():
                with contextlib.suppress(OSError):
                    p.unlink()


def _take_stock(claim: OutputClaim, owns: tuple[str, ...], writes: tuple[str, ...]) -> None:
    """In place: what the folder's marker lists as medaudit's, and what else it holds (refused at once
    if this run would write it)."""
    mark = read_marker(claim.path)
    claim.marked = mark is None
    claim.foreign = set(foreign_entries(claim.path, in_place=True)) if mark is not None else set()
    clash = sorted(claim.foreign & {*owns, *writes})
    if clash:
        raise InputError(_clash(claim, clash[0]))
    listed = mark.get("files") if mark is not None else []
    files = {str(f) for f in listed} if isinstance(listed, list) else set(_entries(claim.path))
    claim.files = (files | set(owns)) - {MARKER}


def _open(claim: OutputClaim, owns: tuple[str, ...] = (), writes: tuple[str, ...] = ()) -> bool:
    """Create the staging folder (or, in place, the output folder) and its marker; True if the output
    folder was created. If the marker cannot be written (a full disk), what was just made is removed."""
    path, flag = claim.path, claim.flag
    made: Path | None = None
    try:
        if claim.in_place:
            created = not path.exists()
            if created:
                claim.files, claim.marked = set(owns), True
            else:
                _take_stock(claim, owns, writes)
                _sweep_temp_files(path)
            path.mkdir(exist_ok=True)
            made = path if created else None
            _write_marker(path, claim.kind, "running", sorted(claim.files))
            return created
        made = claim.stage = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}{_STAGING}"))
        _write_marker(claim.stage, claim.kind, "staging")
        return False
    except OSError as exc:  # the folder that refused: --out's parent, or --out itself (in place)
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
        if made is not None:  # its marker could not be written
            where = path if claim.in_place else path.parent
        else:
            where = Path(exc.filename).parent if exc.filename else path.parent
        raise InputError(f"{flag} {path}: cannot write in {where} ({exc.strerror})") from None


def _abandon(claim: OutputClaim, created: bool, keep_if: tuple[str, ...], exc: BaseException) -> None:
    """Undo what this run made after ``exc``; remember one line on what was kept."""
    path = claim.path
    if not claim.in_place:
        shutil.rmtree(claim.stage, ignore_errors=True)
        kept = f"{path} was left as it was" if path.exists() else f"nothing was written to {path}"
    elif created and not any((path / k).exists() for k in keep_if):
        shutil.rmtree(path, ignore_errors=True)
        kept = f"nothing was kept ({path} removed)"
    elif claim.marked and [e.name for e in os.scandir(path)] == [MARKER]:
        (path / MARKER).unlink()  # an empty folder we only marked: give it back as it was
        kept = f"nothing was written to {path}"
    else:
        _write_marker(path, claim.kind, "interrupted", _written(claim))
        kept = f"{path} was kept; rerun the same command to resume"
    if isinstance(exc, KeyboardInterrupt):
        _NOTES.append(kept)


def _written(claim: OutputClaim) -> list[str]:
    """The entries of an in-place run folder that this run wrote or found listed: those noted, and the
    visible ones it found no user's file under (a run writes some entries without :func:`note_write`,
    e.g. a folder it creates)."""
    made = {n for n in _entries(claim.path) if not n.startswith(".")}
    return sorted((claim.files | made) - claim.foreign - {MARKER})


@contextlib.contextmanager
def claim_output(
    path: str | os.PathLike[str],
    kind: str,
    *,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
    force: bool = False,
    flag: str = "--out",
    in_place: bool = False,
    keep_if: tuple[str, ...] = (),
    owns: tuple[str, ...] = (),
    writes: tuple[str, ...] = (),
) -> Iterator[OutputClaim]:
    """Claim the output ``path`` for a run of ``kind``; yield an :class:`OutputClaim` to write into.

    Write into ``claim.stage``: on success it replaces ``path`` atomically (``in_place=False``), or, for a
    resumable run folder (``in_place=True``), ``claim.stage`` is ``path`` itself. ``keep_if`` names files
    whose presence keeps a newly created in-place folder after a failure (e.g. a checkpoint); ``owns``
    names the subfolders of an in-place folder that worker processes write into (listed as medaudit's
    from the start, since :func:`note_write` sees only this process's writes); ``writes`` names the
    top-level files an in-place run writes, so that a user's file of that name is refused at once rather
    than when the run reaches it. All checks
    run before the block starts; errors are one-line :class:`InputError` naming ``flag`` and the path.
    """
    out = _resolve(path, f"{flag} folder")
    claim = OutputClaim(out, kind, out, flag, force, in_place)
    claim.check_inputs(inputs)
    _check(out, kind, claim.inputs, force, flag, in_place)
    note_write(out)  # an output inside a run folder being written belongs to that run
    parents = _make_parents(out, flag)
    try:
        with _lock(out, flag):
            _check(
                out, kind, claim.inputs, force, flag, in_place
            )  # again, now that no other run can change it
            _clean_stale(out)
            created = _open(claim, owns, writes)
            if in_place:
                _ACTIVE.append(claim)
            try:
                yield claim
                if in_place:
                    _write_marker(out, kind, "complete", _written(claim))
                else:
                    _publish(claim)
            except BaseException as exc:
                _abandon(claim, created, keep_if, exc)
                if isinstance(exc, OSError) and disk_full(exc):
                    # a write straight into the output (df.to_csv) says ENOSPC without a file: name --out;
                    # a file of the staging folder (removed now) is named where it was to be published
                    raise OSError(exc.errno, os.strerror(exc.errno), _published_name(claim, exc)) from exc
                raise
            finally:
                _ACTIVE[:] = [c for c in _ACTIVE if c is not claim]
    except BaseException:
        if not os.path.lexists(out):
            _remove_empty(parents)
        raise


def _published_name(claim: OutputClaim, exc: OSError) -> str:
    """The path a full-disk error names: ``--out`` for a write without a file name, the file's place in
    ``--out`` for one of the staging folder (``.OUT.staging-XXXX/report.html`` is ``OUT/report.html``),
    else the file itself."""
    if exc.filename is None:
        return str(claim.path)
    name = Path(os.fsdecode(exc.filename))
    if claim.stage != claim.path and name.is_relative_to(claim.stage):
        return str(claim.path / name.relative_to(claim.stage))
    return str(name)


def check_output(
    path: str | os.PathLike[str],
    kind: str,
    *,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
    force: bool = False,
    flag: str = "--out",
    in_place: bool = False,
) -> Path:
    """The checks of :func:`claim_output` alone (nothing is created); returns the resolved path.

    For commands that do long work before they claim their output, so that a bad ``--out`` fails at once.
    """
    out = _resolve(path, f"{flag} folder")
    claim = OutputClaim(out, kind, out, flag, force, in_place)
    claim.check_inputs(inputs)
    _check(out, kind, claim.inputs, force, flag, in_place)
    return out
