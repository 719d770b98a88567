"""The one run-grid engine: content-keyed tasks, an atomic result store, local/process/Ray backends.

Every grid in medaudit (``medaudit bench-scenarios``, ``medaudit texture study``) is a list of
:class:`Task` objects run by :func:`run_grid`:

* a task's ``key`` is :func:`task_key`: the SHA-256 of the canonical JSON of its kind, its spec, the
  keys of the tasks it consumes, the medaudit version and a :func:`code_fingerprint` of the source it
  runs. A changed parameter, upstream result, release or code gives a new key; an unchanged one is
  found again, so a rerun resumes where it stopped;
* results go to a :class:`ResultStore`: one immutable Parquet part per finished task, written
  atomically (the part is the marker that the task is done), compacted atomically into one table;
* a backend runs the tasks: :class:`SerialBackend` (in the driver), :class:`PoolBackend` (a spawn
  process pool) or :class:`RayBackend` (a Ray cluster; the output folder must then be on a shared
  filesystem). The driver alone writes the result table.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.markup import escape

from medaudit import __version__
from medaudit.errors import InputError
from medaudit.io import atomic_save
from medaudit.outdir import disk_full

__all__ = [
    "Backend",
    "GridRun",
    "PoolBackend",
    "RayBackend",
    "ResultStore",
    "SerialBackend",
    "Task",
    "WorkerDied",
    "canonical_json",
    "check_ray_address",
    "check_ray_reachable",
    "code_fingerprint",
    "connect_ray",
    "make_backend",
    "run_grid",
    "task_key",
]

TaskFn = Callable[[Mapping[str, Any]], Any]
_PACKAGE_ROOT = Path(__file__).parent
_FINGERPRINTS: dict[tuple[str, ...], str] = {}


def canonical_json(obj: Any) -> str:
    """Canonical JSON: sorted keys, no whitespace, tuples as lists; raises on non-JSON values."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def code_fingerprint(*paths: str) -> str:
    """SHA-256 of the source files under ``paths`` (files or folders, relative to the package root).

    Part of every task key, so results computed with other code (a filter changed during
    development, say) are never mixed into a grid. Constant for an installed release.
    """
    if paths not in _FINGERPRINTS:
        h = hashlib.sha256()
        for name in paths:
            p = _PACKAGE_ROOT / name
            files = sorted(p.rglob("*.py")) if p.is_dir() else [p] if p.exists() else []
            for f in files:
                h.update(f.relative_to(_PACKAGE_ROOT).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
        _FINGERPRINTS[paths] = h.hexdigest()
    return _FINGERPRINTS[paths]


def task_key(
    kind: str, spec: Mapping[str, Any], upstream: Sequence[str] = (), *, code: str, version: str = __version__
) -> str:
    """SHA-256 (hex) of everything that determines a task's result.

    ``upstream`` are the keys of the tasks this one consumes, so a change anywhere upstream changes every
    key downstream; ``code`` is the :func:`code_fingerprint` of the modules the task runs.
    """
    payload = {"kind": kind, "spec": spec, "upstream": list(upstream), "medaudit": version, "code": code}
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Task:
    """One unit of work. ``upstream`` tasks must finish before it is submitted."""

    kind: str
    key: str
    spec: Mapping[str, Any]
    upstream: tuple[str, ...] = ()
    label: str = ""


# -------------------------------------------------------------------------------------- result store


class ResultStore:
    """One Parquet table fed by immutable part files.

    :meth:`append` writes ``<parts>/<key>.parquet`` atomically and then rewrites the table atomically
    from the previous table plus the part, so readers only ever see a complete table. :meth:`compact`
    rebuilds the table from the parts alone (done at the start and end of every run, which also heals a
    crash between part and compaction).
    """

    def __init__(
        self, out_dir: str | os.PathLike[str], parts: str = "parts", table: str = "results.parquet"
    ) -> None:
        self.out_dir = Path(out_dir)
        self.parts_dir = self.out_dir / parts
        self.table_path = self.out_dir / table

    def part_path(self, key: str) -> Path:
        return self.parts_dir / f"{key}.parquet"

    def has(self, key: str) -> bool:
        return self.part_path(key).exists()

    def append(self, key: str, rows: Any) -> Path:
        """Add one task's rows (a DataFrame or records); the key is stored in column ``task_key``.

        Parts are immutable: if ``key`` already has a part, that part is kept and ``rows`` ignored.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = self._write_part(key, rows) if not self.has(key) else pq.read_table(self.part_path(key))
        if self.table_path.exists():
            old = pq.read_table(self.table_path)
            if key in set(old.column("task_key").to_pylist()):
                return self.table_path
            table = pa.concat_tables([old, table], promote_options="default")
        with atomic_save(self.table_path) as tmp:
            pq.write_table(table, tmp)
        return self.table_path

    def _write_part(self, key: str, rows: Any) -> Any:
        import pandas as pd
        import pyarrow as pa
        import pyarrow.parquet as pq

        df = pd.DataFrame(rows).copy()
        df["task_key"] = key
        table = pa.Table.from_pandas(df, preserve_index=False)
        with atomic_save(self.part_path(key)) as tmp:
            pq.write_table(table, tmp)
        return table

    def compact(self, keys: Iterable[str] | None = None) -> Path | None:
        """Rebuild the table from the parts (only ``keys`` if given, in that order); ``None`` if none."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if keys is None:
            paths = sorted(self.parts_dir.glob("*.parquet")) if self.parts_dir.exists() else []
        else:
            paths = [self.part_path(k) for k in keys if self.has(k)]
        if not paths:  # nothing of this grid is finished: no table (not a stale one from another config)
            self.table_path.unlink(missing_ok=True)
            return None
        table = pa.concat_tables([pq.read_table(p) for p in paths], promote_options="default")
        with atomic_save(self.table_path) as tmp:
            pq.write_table(table, tmp)
        return self.table_path

    def read(self) -> Any:
        import pandas as pd

        if not self.table_path.exists():
            return pd.DataFrame()
        return pd.read_parquet(self.table_path)


# ------------------------------------------------------------------------------------------ backends

Outcome = tuple[Any, Any, BaseException | None]


class Backend(ABC):
    """Future-style runner: ``submit(fn, payload) -> handle``; ``wait(handles)`` -> finished outcomes."""

    @abstractmethod
    def submit(self, fn: TaskFn, payload: Mapping[str, Any]) -> Any: ...

    @abstractmethod
    def wait(self, handles: list[Any]) -> list[Outcome]:
        """Block until at least one handle finishes; return ``(handle, result, exception)`` for each."""

    @property
    def slots(self) -> int:
        """How many tasks may be in flight at once."""
        return 1

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release workers (the default holds none)."""

    def abort(self) -> None:
        """Stop the tasks in flight at once (the run was interrupted), then release the workers."""
        self.close()


class _Deferred:
    """A call to make later (hashable by identity)."""

    def __init__(self, fn: TaskFn, payload: Mapping[str, Any]) -> None:
        self.fn, self.payload = fn, payload


class SerialBackend(Backend):
    """Runs each task in the driver, one at a time."""

    def submit(self, fn: TaskFn, payload: Mapping[str, Any]) -> Any:
        return _Deferred(fn, payload)

    def wait(self, handles: list[Any]) -> list[Outcome]:
        h = handles[0]
        try:
            return [(h, h.fn(h.payload), None)]
        except Exception as exc:
            return [(h, None, exc)]


def _init_worker(one_line_warnings: bool) -> None:
    """A pool worker (spawned: a fresh interpreter) prints warnings as the command line does, on one line."""
    if one_line_warnings:
        import warnings

        from medaudit.cli import _one_line_warning

        warnings.formatwarning = _one_line_warning


class WorkerDied(RuntimeError):
    """A process-pool task whose worker process ended without an answer (killed by a signal)."""


class PoolBackend(Backend):
    """A local process pool (spawn: torch and forked OpenMP thread pools do not mix)."""

    def __init__(self, workers: int) -> None:
        import multiprocessing as mp
        import warnings
        from concurrent.futures import ProcessPoolExecutor

        self._workers = workers
        one_line = getattr(warnings.formatwarning, "__name__", "") == "_one_line_warning"
        self._new_pool = lambda: ProcessPoolExecutor(
            max_workers=workers,
            mp_context=mp.get_context("spawn"),
            initializer=_init_worker,
            initargs=(one_line,),
        )
        self._pool = self._new_pool()

    @property
    def slots(self) -> int:
        return self._workers

    def submit(self, fn: TaskFn, payload: Mapping[str, Any]) -> Any:
        from concurrent.futures.process import BrokenProcessPool

        try:
            return self._pool.submit(fn, payload)
        except BrokenProcessPool:  # a worker died (see wait): the other tasks run in a new pool
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = self._new_pool()
            return self._pool.submit(fn, payload)

    def wait(self, handles: list[Any]) -> list[Outcome]:
        from concurrent.futures import FIRST_COMPLETED
        from concurrent.futures import wait as fwait
        from concurrent.futures.process import BrokenProcessPool

        done, _ = fwait(handles, return_when=FIRST_COMPLETED)
        out = []
        for h in done:
            exc = h.exception()
            if isinstance(exc, BrokenProcessPool):  # killed (the OOM killer, kill -9): the study went on
                exc = WorkerDied(  # to an internal error (exit 1) with the tasks not yet started never run
                    "a worker process ended abruptly (killed, or out of memory) and the pool stopped "
                    "the tasks in flight; rerun the same command to resume them"
                )
            out.append((h, None if exc else h.result(), exc))
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def abort(self) -> None:
        """Terminate the workers: a SIGTERM sent to the driver alone (a job scheduler) waited for every
        running training to finish. Their checkpoints stay, for the next run to resume from."""
        procs = getattr(self._pool, "_processes", None) or {}  # no public way before Python 3.14
        for proc in list(procs.values()):
            with contextlib.suppress(OSError, AttributeError):
                proc.terminate()
        self.close()


#: ``--ray-address`` forms Ray connects to: ``local`` (a private instance, medaudit's), ``auto``,
#: ``HOST:PORT`` (IPv6 in brackets) and a client URL (``ray://HOST[:PORT]``, ``anyscale://...``). Anything
#: else reached Ray as a module name to import (``bogus://x``: an internal RuntimeError).
_RAY_ADDRESS = re.compile(r"local|auto|(?:ray|anyscale)://\S+|(?:\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+):\d{1,5}")


def check_ray_address(address: str | None, flag: str = "--ray-address") -> None:
    """Refuse a Ray address of no form Ray connects to, naming ``flag``, before any work."""
    if address and not _RAY_ADDRESS.fullmatch(address):
        raise InputError(
            f"{flag} '{address}': expected local, auto, HOST:PORT or ray://HOST:PORT (a Ray client address)"
        )


def _ray_endpoint(address: str) -> tuple[str, int] | None:
    """The TCP endpoint a ``HOST:PORT`` or ``ray://HOST[:PORT]`` address connects to; ``None`` for the
    forms Ray resolves itself (``local``, ``auto``, ``anyscale://``)."""
    m = re.fullmatch(r"(?:ray://)?(\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+)(?::(\d{1,5}))?/?", address)
    if m is None or address in ("local", "auto") or (m.group(2) is None and not address.startswith("ray://")):
        return None
    return m.group(1).strip("[]"), int(m.group(2) or 10001)


def check_ray_reachable(address: str, flag: str = "--ray-address", timeout: float = 5.0) -> None:
    """Refuse, naming ``flag``, a Ray address whose host does not resolve or does not accept a TCP
    connection within ``timeout`` seconds. Ray itself retried such an address for about a minute and
    then ended the process (``SystemExit 15``)."""
    import socket

    endpoint = _ray_endpoint(address)
    if endpoint is None:
        return
    try:
        socket.create_connection(endpoint, timeout=timeout).close()
    except OSError as exc:
        why = getattr(exc, "strerror", None) or type(exc).__name__
        raise InputError(
            f"{flag} '{address}': cannot reach {endpoint[0]} port {endpoint[1]} ({why})"
        ) from None


def connect_ray(address: str, cpus: int, flag: str = "--ray-address") -> bool:
    """Connect to the Ray cluster at ``address``, or start a private one with ``cpus`` CPUs for
    ``local``; returns whether this call initialised Ray (and so must shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if address == "local":
        ray.init(num_cpus=max(1, cpus), **kw)
        return True
    check_ray_reachable(address, flag)
    try:
        ray.init(address=address, **kw)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise InputError(f"{flag} '{address}': cannot connect to a Ray cluster ({exc})") from exc
    return True


class RayBackend(Backend):
    """Tasks as Ray remote functions. ``address="local"`` starts a private instance with ``workers`` CPUs."""

    def __init__(self, address: str, workers: int, cpus: float = 1.0, gpus: float = 0.0) -> None:
        try:
            import ray
        except ImportError:
            raise InputError(
                "--ray-address needs Ray; install it with: pip install 'medaudit[scale]'"
            ) from None
        self._ray, self._workers = ray, workers
        self._started = connect_ray(address, workers)
        self._remote_cache: dict[Any, Any] = {}
        self._opts = {"num_cpus": cpus, "num_gpus": gpus, "max_retries": 0}

    @property
    def slots(self) -> int:
        return self._workers

    def submit(self, fn: TaskFn, payload: Mapping[str, Any]) -> Any:
        rf = self._remote_cache.get(fn)
        if rf is None:
            rf = self._remote_cache[fn] = self._ray.remote(fn).options(**self._opts)
        return rf.remote(dict(payload))

    def wait(self, handles: list[Any]) -> list[Outcome]:
        ready, _ = self._ray.wait(handles, num_returns=1)
        out = []
        for h in ready:
            try:
                out.append((h, self._ray.get(h), None))
            except Exception as exc:
                cause = getattr(exc, "cause", None)
                out.append((h, None, cause if isinstance(cause, BaseException) else exc))
        return out

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()


def make_backend(
    workers: int = 1, ray_address: str | None = None, cpus_per_task: float = 1.0, gpus_per_task: float = 0.0
) -> Backend:
    """Ray when ``ray_address`` is given, a process pool when ``workers > 1``, else serial."""
    workers = max(1, int(workers))
    if ray_address:
        return RayBackend(ray_address, workers, cpus_per_task, gpus_per_task)
    return PoolBackend(workers) if workers > 1 else SerialBackend()


def worker_threads(workers: int, ray_address: str | None = None, cpus_per_task: float = 1.0) -> int:
    """Torch threads per task, so that ``workers`` tasks do not oversubscribe the machine's cores."""
    if ray_address:
        return max(1, int(cpus_per_task))
    return max(1, (os.cpu_count() or 1) // max(1, int(workers)))


# --------------------------------------------------------------------------------------------- runner


@dataclass
class GridRun:
    """What :func:`run_grid` did: keys executed, skipped (already done) and failed (key -> reason)."""

    executed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def run_grid(
    tasks: Sequence[Task],
    fn: TaskFn,
    payload: Callable[[Task], Mapping[str, Any]],
    on_result: Callable[[Task, Any], None],
    *,
    is_done: Callable[[Task], bool],
    backend: Backend | None = None,
    label: str = "tasks",
    keep_going: bool = True,
) -> GridRun:
    """Run every task that is not done yet, each after its upstream tasks, and report progress.

    ``payload(task)`` builds what ``fn`` receives (it must be picklable for process and Ray backends);
    ``on_result(task, result)`` runs in the driver (it stores the result). A failed task is recorded in
    :attr:`GridRun.failed` and its dependants are skipped; with ``keep_going=False`` it is re-raised.
    """
    from medaudit.progress import make_progress

    run = GridRun()
    waiting: list[Task] = []
    for t in tasks:
        if is_done(t):
            run.skipped.append(t.key)
        else:
            waiting.append(t)
    done = set(run.skipped)
    backend = backend or SerialBackend()
    in_flight: dict[Any, Task] = {}
    try:
        with make_progress() as progress:
            bar = progress.add_task(label, total=len(tasks), completed=len(done))
            while waiting or in_flight:
                waiting = _submit_ready(waiting, in_flight, done, run, backend, fn, payload, progress, bar)
                if not in_flight:
                    if waiting:  # cannot happen with a well-formed task list
                        raise RuntimeError("scheduler stalled: tasks wait on unknown upstream tasks")
                    break
                for handle, result, exc in backend.wait(list(in_flight)):
                    t = in_flight.pop(handle)
                    if exc is not None:
                        # a full disk fails every task left the same way: stop, and the command names the file
                        if not keep_going or disk_full(exc):
                            raise exc
                        run.failed[t.key] = f"{type(exc).__name__}: {exc}"
                        line = escape(" ".join(f"{t.label}: {type(exc).__name__}: {exc}".split()))
                        # one line whatever the width (rich wraps at the terminal's, 80 columns in a pipe);
                        # escaped: a path with "[/x]" in it is text, not markup
                        progress.console.print(f"[red]failed[/red] {line}", soft_wrap=True)
                    else:
                        on_result(t, result)
                        done.add(t.key)
                        run.executed.append(t.key)
                    progress.update(bar, advance=1, description=f"{label}: {t.label}")
    except BaseException:
        backend.abort()
        raise
    backend.close()
    return run


def _submit_ready(
    waiting: list[Task],
    in_flight: dict[Any, Task],
    done: set[str],
    run: GridRun,
    backend: Backend,
    fn: TaskFn,
    payload: Callable[[Task], Mapping[str, Any]],
    progress: Any,
    bar: Any,
) -> list[Task]:
    """Submit every task whose upstream is done, up to the backend's slots; return those still waiting."""
    blocked: list[Task] = []
    for t in waiting:
        if any(u in run.failed for u in t.upstream):
            run.failed[t.key] = "upstream task failed"
            progress.advance(bar)
        elif len(in_flight) < backend.slots and all(u in done for u in t.upstream):
            in_flight[backend.submit(fn, payload(t))] = t
        else:
            blocked.append(t)
    return blocked
