"""The environment as a fault: a deleted current folder, a cache variable that names a file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from .conftest import AUDIT_FAST, SRC, make_table, one_line


def test_a_deleted_current_folder_is_one_line_not_an_mkl_abort(tmp_path):
    """Importing torch in a deleted folder aborted with 'Intel oneMKL FATAL ERROR' (exit 2, no line
    of medaudit's)."""
    table = make_table(tmp_path / "data")
    script = (
        f"mkdir {tmp_path}/gone && cd {tmp_path}/gone && rmdir {tmp_path}/gone && "
        f'exec "{sys.executable}" -m medaudit.cli audit --table {table} --out {tmp_path}/out '
        + " ".join(AUDIT_FAST)
    )
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        ["sh", "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    line = one_line(r.stderr)
    assert r.returncode == 2 and "current folder no longer exists" in line, r.stderr
    assert not (tmp_path / "out").exists()


def test_a_cache_variable_naming_a_file_is_named_as_the_variable(cli, tmp_path, monkeypatch):
    """The error said '--cache-dir FILE' to a user who never passed --cache-dir."""
    table = make_table(tmp_path / "data")
    (tmp_path / "afile").write_text("not a folder")
    monkeypatch.setenv("MEDAUDIT_CACHE", str(tmp_path / "afile"))
    rc, err = cli("audit", "--table", table, "--out", tmp_path / "out", *AUDIT_FAST, "--no-report")
    line = one_line(err)
    assert rc == 2 and line.startswith(f"error: $MEDAUDIT_CACHE {tmp_path / 'afile'}"), line
    assert (tmp_path / "afile").read_text() == "not a folder"
    assert not (tmp_path / "out").exists()


def test_a_default_cache_that_cannot_be_created_is_named_as_the_cache(cli, tmp_path, monkeypatch):
    """HOME where no folder can be made: the error said '/proc/...: file not found', naming no cache."""
    table = make_table(tmp_path / "data")
    monkeypatch.delenv("MEDAUDIT_CACHE", raising=False)
    monkeypatch.setenv("HOME", "/proc/medaudit-no-home")
    rc, err = cli("audit", "--table", table, "--out", tmp_path / "out", *AUDIT_FAST, "--no-report")
    line = one_line(err)
    assert rc == 2 and "the default cache folder" in line and "--cache-dir" in line, line
    assert not (tmp_path / "out").exists()
