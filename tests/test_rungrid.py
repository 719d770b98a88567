"""The one run-grid engine (medaudit.rungrid): keys, result store, resume, backends.

Both grids (``bench-scenarios`` and ``texture study``) run on it, so resuming is tested here, once.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from medaudit import rungrid as rg


def test_task_key_is_canonical_and_content_sensitive():
    k = rg.task_key("train", {"a": 1, "b": 2}, code="c")
    assert len(k) == 64
    assert k == rg.task_key("train", {"b": 2, "a": 1}, code="c")  # key order does not matter
    assert k != rg.task_key("eval", {"a": 1, "b": 2}, code="c")
    assert k != rg.task_key("train", {"a": 1, "b": 3}, code="c")
    assert k != rg.task_key("train", {"a": 1, "b": 2}, ["up"], code="c")
    assert k != rg.task_key("train", {"a": 1, "b": 2}, code="other code")
    assert k != rg.task_key("train", {"a": 1, "b": 2}, code="c", version="9.9.9")
    with pytest.raises(ValueError):
        rg.task_key("train", {"a": float("nan")}, code="c")  # not canonical JSON


def test_code_fingerprint_covers_the_named_sources():
    a = rg.code_fingerprint("stats.py")
    assert len(a) == 64 and a == rg.code_fingerprint("stats.py")
    assert a != rg.code_fingerprint("stats.py", "rungrid.py")
    assert a != rg.code_fingerprint("texture")


def test_result_store_append_is_atomic_and_complete(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    store = rg.ResultStore(tmp_path)
    for i in range(3):
        store.append(f"k{i}", pd.DataFrame({"dice": [0.1 * i, 0.2 * i], "case": ["a", "b"]}))
    df = store.read()
    assert len(df) == 6 and sorted(df["task_key"].unique()) == ["k0", "k1", "k2"]
    store.append("k1", pd.DataFrame({"dice": [9.0], "case": ["z"]}))  # already in the table: no duplicate
    assert len(store.read()) == 6

    # a crash while rewriting the table leaves the previous table intact and no temp files
    real = pq.write_table
    calls = {"n": 0}

    def flaky(table, where, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:  # the part is written, the compaction dies half-way
            Path(where).write_bytes(b"PAR1 half-written")
            raise OSError("disk full")
        return real(table, where, *a, **k)

    monkeypatch.setattr(pq, "write_table", flaky)
    with pytest.raises(OSError):
        store.append("k3", pd.DataFrame({"dice": [0.5], "case": ["c"]}))
    monkeypatch.setattr(pq, "write_table", real)
    assert len(store.read()) == 6  # old complete table
    assert not [p for p in tmp_path.rglob("*.tmp")]
    assert store.has("k3")  # the part made it: compaction heals the table
    store.compact(["k0", "k1", "k2", "k3"])
    assert len(store.read()) == 7
    # a changed config with nothing finished yet must not show another config's table
    assert store.compact(["other"]) is None and not store.table_path.exists()


def _square(payload):
    return {"y": payload["x"] ** 2}


def _grid(n: int, upstream: bool = False) -> list[rg.Task]:
    tasks = []
    for i in range(n):
        up = (tasks[-1].key,) if upstream and tasks else ()
        tasks.append(rg.Task("sq", rg.task_key("sq", {"x": i}, up, code="t"), {"x": i}, up, f"x={i}"))
    return tasks


@pytest.mark.parametrize("backend", ["serial", "pool"])
def test_run_grid_resumes_only_what_is_missing(tmp_path, backend):
    store = rg.ResultStore(tmp_path)
    tasks = _grid(4, upstream=True)
    calls: list[str] = []

    def fn(payload):
        calls.append(payload["key"])
        return _square(payload)

    def run(make):
        return rg.run_grid(
            tasks,
            fn if backend == "serial" else _square,
            lambda t: {"x": t.spec["x"], "key": t.key},
            lambda t, r: store.append(t.key, [{"x": t.spec["x"], "y": r["y"]}]),
            is_done=lambda t: store.has(t.key),
            backend=make(),
        )

    make = rg.SerialBackend if backend == "serial" else (lambda: rg.PoolBackend(2))
    first = run(make)
    assert len(first.executed) == 4 and not first.skipped and not first.failed
    full = store.compact([t.key for t in tasks])
    assert full is not None
    before = store.read().sort_values("x").reset_index(drop=True)
    assert before["y"].tolist() == [0, 1, 4, 9]
    store.part_path(tasks[2].key).unlink()  # lose one result: exactly that one runs again
    calls.clear()
    second = run(make)
    assert second.executed == [tasks[2].key] and len(second.skipped) == 3
    if backend == "serial":
        assert calls == [tasks[2].key]
    store.compact([t.key for t in tasks])
    after = store.read().sort_values("x").reset_index(drop=True)
    pd.testing.assert_frame_equal(before, after)


def test_run_grid_skips_dependants_of_a_failed_task():
    tasks = _grid(3, upstream=True)

    def fn(payload):
        if payload["x"] == 1:
            raise RuntimeError("boom")
        return {}

    got: list[str] = []
    run = rg.run_grid(
        tasks, fn, lambda t: dict(t.spec), lambda t, r: got.append(t.key), is_done=lambda t: False
    )
    assert got == [tasks[0].key]
    assert run.failed[tasks[1].key].startswith("RuntimeError: boom")
    assert run.failed[tasks[2].key] == "upstream task failed"
    with pytest.raises(RuntimeError):
        rg.run_grid(
            tasks, fn, lambda t: dict(t.spec), lambda t, r: None, is_done=lambda t: False, keep_going=False
        )


def test_a_failed_task_is_one_unwrapped_line_whatever_it_says(capsys):
    """A long failure message holding rich markup ("[/x]", as in a path) is printed as text, on one line
    (rich wrapped it at 80 columns in a pipe, and "[/x]" was read as a closing tag)."""
    tasks = _grid(1)
    msg = "/data/[/x]/" + "very-long-folder-name/" * 6 + "scan.nii.gz: image contains non-finite values"

    def fn(payload):
        raise RuntimeError(msg)

    rg.run_grid(tasks, fn, lambda t: dict(t.spec), lambda t, r: None, is_done=lambda t: False)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "failed" in ln]
    assert len(lines) == 1 and lines[0].endswith(f"RuntimeError: {msg}"), lines


def test_make_backend_choice():
    assert isinstance(rg.make_backend(1), rg.SerialBackend)
    pool = rg.make_backend(2)
    try:
        assert isinstance(pool, rg.PoolBackend) and pool.slots == 2
    finally:
        pool.close()
    assert rg.worker_threads(1, "auto", 3.0) == 3


def _sleep(payload):
    import time

    time.sleep(payload["s"])
    return {"y": 0}


def test_an_interrupted_pool_run_stops_its_workers_at_once(tmp_path):
    """A SIGTERM to the driver alone (a job scheduler) waited for every running task to finish."""
    import signal
    import threading
    import time

    tasks = [rg.Task("s", rg.task_key("s", {"i": i}, (), code="t"), {"i": i}, (), f"i={i}") for i in range(2)]
    backend = rg.PoolBackend(2)
    timer = threading.Timer(8.0, lambda: os.kill(os.getpid(), signal.SIGINT))  # once the workers run
    timer.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(KeyboardInterrupt):
            rg.run_grid(
                tasks,
                _sleep,
                lambda t: {"s": 120},
                lambda t, r: None,
                is_done=lambda t: False,
                backend=backend,
            )
    finally:
        timer.cancel()
    assert time.perf_counter() - t0 < 60
    procs = getattr(backend._pool, "_processes", None) or {}
    assert not any(p.is_alive() for p in procs.values())
