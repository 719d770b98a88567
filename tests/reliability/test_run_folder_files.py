"""A resumable run folder lists what medaudit wrote, so a user's file dropped into it is never written.

Before, an interrupted run folder with medaudit's marker was taken as medaudit's whole: a file a user
put there (their own ``model.pt``, ``config.json`` or ``report.html``) was overwritten on resume.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from medaudit.errors import InputError
from medaudit.io import atomic_write_json, atomic_write_text
from medaudit.outdir import MARKER, claim_output, read_marker

from .conftest import SRC, one_line, run_sub, snapshot

_KILLED_RUN = """
import os, sys
from pathlib import Path
from medaudit.io import atomic_write_json
from medaudit.outdir import claim_output
out = Path(sys.argv[1])
with claim_output(out, "k", in_place=True, keep_if=("a.json",)):
    atomic_write_json(out / "a.json", {"step": 1})
    atomic_write_json(out / "sub" / "b.json", {"step": 2})
    (out / ".a.json.x1y2.tmp").write_text("half")  # what a kill during a write leaves
    (out / "empty").mkdir()
    os._exit(9)  # killed: no cleanup, no final marker
"""


def _killed_run(out: Path) -> None:
    env = {"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"}
    rc = subprocess.run([sys.executable, "-c", _KILLED_RUN, str(out)], env=env, timeout=120).returncode
    assert rc == 9


def test_a_killed_run_has_listed_every_entry_before_writing_it(tmp_path):
    out = tmp_path / "run"
    _killed_run(out)
    mark = read_marker(out)
    assert mark is not None and mark["state"] == "running"
    assert {"a.json", "sub"} <= set(mark["files"])
    with claim_output(out, "k", in_place=True) as c:  # its leftovers do not stop the resume
        atomic_write_json(c.path / "a.json", {"step": 3})
    assert json.loads((out / "a.json").read_text()) == {"step": 3}


def test_a_user_file_in_an_interrupted_run_is_refused_at_once_when_the_run_writes_it(tmp_path):
    out = tmp_path / "run"
    _killed_run(out)
    (out / "report.html").write_text("my notes")
    before = snapshot(out)  # (the killed run's stale lock beside it goes)
    with (
        pytest.raises(InputError, match=r"holds 'report\.html', which medaudit did not write"),
        claim_output(out, "k", in_place=True, writes=("report.html",)),
    ):
        pytest.fail("the run must not start")
    assert snapshot(out) == before


def test_a_user_file_is_never_written_by_a_run_that_did_not_declare_it(tmp_path):
    out = tmp_path / "run"
    _killed_run(out)
    (out / "config.json").write_text("mine")
    (out / "notes.txt").write_text("also mine")
    with pytest.raises(InputError, match=r"config\.json"), claim_output(out, "k", in_place=True) as c:
        atomic_write_json(c.path / "a.json", {"step": 3})  # its own file: fine
        atomic_write_text(c.path / "config.json", "medaudit's")
    assert (out / "config.json").read_text() == "mine"
    with claim_output(out, "k", in_place=True) as c:  # a run that leaves them alone finishes
        atomic_write_json(c.path / "a.json", {"step": 4})
    mark = read_marker(out)
    assert mark is not None and mark["state"] == "complete"
    assert "notes.txt" not in mark["files"] and "config.json" not in mark["files"]
    assert (out / "notes.txt").read_text() == "also mine"


def test_a_new_run_folder_lists_what_it_wrote_and_an_interrupted_one_too(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt), claim_output(out, "k", in_place=True, keep_if=("ckpt",)) as c:
        atomic_write_text(c.path / "ckpt", "1")
        (c.path / "direct.txt").write_text("written without the atomic helpers")
        raise KeyboardInterrupt
    mark = read_marker(out)
    assert mark is not None and mark["state"] == "interrupted"
    assert mark["files"] == ["ckpt", "direct.txt"]
    assert MARKER not in mark["files"]


def test_texture_train_resume_never_writes_a_users_model(cli, tconfig, tmp_path):
    """A real run killed after its first checkpoint; the user drops a model.pt into its folder."""
    run = tmp_path / "run"
    r = run_sub(
        ["texture", "train", "-o", run, "--config", tconfig], env={"MEDAUDIT_FAULT": "train:checkpoint"}
    )
    assert r.returncode == -9, r.stderr
    assert {"split.json", "config.json", "checkpoint.pt"} <= set(read_marker(run)["files"])
    (run / "model.pt").write_bytes(b"the user's model")
    (run / "notes.txt").write_text("the user's notes")
    before = snapshot(run)
    rc, err = cli("texture", "train", "-o", run, "--config", tconfig)
    line = one_line(err)
    assert rc == 2 and "model.pt" in line and "did not write" in line, err
    assert snapshot(run) == before
    (run / "model.pt").rename(tmp_path / "users-model.pt")
    rc, err = cli("texture", "train", "-o", run, "--config", tconfig)
    assert rc == 0, err
    assert (run / "notes.txt").read_text() == "the user's notes"
    assert (tmp_path / "users-model.pt").read_bytes() == b"the user's model"
    files = read_marker(run)["files"]
    assert "model.pt" in files and "notes.txt" not in files


def test_a_resumed_run_folder_loses_the_temporary_files_of_killed_writes(tmp_path):
    """'.NAME.XXXXXXXX.tmp' files of writes a kill cut short stayed in run folders for ever."""
    out = tmp_path / "run"
    _killed_run(out)
    (out / ".a.json.abcd1234.tmp").write_text("half")
    (out / "sub" / ".b.json.efgh_567.tmp").write_text("half")
    (out / "mine.tmp").write_text("a user's")
    with claim_output(out, "k", in_place=True):
        pass
    left = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert ".a.json.abcd1234.tmp" not in left and "sub/.b.json.efgh_567.tmp" not in left
    assert "mine.tmp" in left and "sub/b.json" in left
