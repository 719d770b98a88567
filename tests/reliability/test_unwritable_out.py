"""An --out folder that cannot be written (chmod a-w): refused before any work with one line naming it,
and a publish that fails anyway leaves nothing behind (no ``.NAME.old-*`` folder) and the earlier output
in place. Root ignores permissions, so the refusals are simulated (``os.access``, ``os.replace``)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

import medaudit.io
import medaudit.outdir as outdir
from medaudit.errors import InputError
from medaudit.outdir import MARKER, check_output, claim_output

from .conftest import snapshot


def _earlier_output(folder: Path) -> Path:
    out = folder / "out"
    with claim_output(out, "k") as c:
        (c.stage / "a").write_text("earlier")
    return out


def _denied(monkeypatch: pytest.MonkeyPatch, fn: str, when) -> None:
    real = getattr(os, fn)

    def fake(*args, **kw):
        if when(*args):
            raise PermissionError(errno.EACCES, "Permission denied", str(args[0]))
        return real(*args, **kw)

    monkeypatch.setattr(outdir.os, fn, fake)


@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("existing", ["empty", "earlier-output"])
def test_unwritable_out_is_refused_before_any_work(tmp_path, monkeypatch, in_place, existing):
    if existing == "empty":
        out = tmp_path / "out"
        out.mkdir()
    else:
        out = _earlier_output(tmp_path)
    real = os.access
    monkeypatch.setattr(outdir.os, "access", lambda p, mode, **kw: Path(p) != out and real(p, mode, **kw))
    before = snapshot(tmp_path)
    with pytest.raises(InputError, match=rf"^--out {out}: is not writable") as err:
        check_output(out, "k", in_place=in_place)
    with (
        pytest.raises(InputError, match=rf"^--out {out}: is not writable"),
        claim_output(out, "k", in_place=in_place),
    ):
        pytest.fail("the run started")
    assert "\n" not in str(err.value)
    assert snapshot(tmp_path) == before


def test_publish_that_cannot_move_the_earlier_output_leaves_nothing(tmp_path, monkeypatch):
    out = _earlier_output(tmp_path)
    _denied(monkeypatch, "replace", lambda src, dst: Path(src) == out)
    before = snapshot(out)
    with (
        pytest.raises(InputError, match=rf"^--out {out}: cannot replace it \(Permission denied\)"),
        claim_output(out, "k") as c,
    ):
        (c.stage / "a").write_text("new")
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no .out.old-*, no staging, no lock


def test_publish_that_cannot_move_the_new_output_in_puts_the_earlier_back(tmp_path, monkeypatch):
    out = _earlier_output(tmp_path)
    _denied(monkeypatch, "replace", lambda src, dst: Path(src).name.startswith(".out.staging-"))
    with pytest.raises(PermissionError), claim_output(out, "k") as c:
        (c.stage / "a").write_text("new")
    assert (out / "a").read_text() == "earlier" and (out / MARKER).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_in_place_folder_that_refuses_the_marker_is_named(tmp_path, monkeypatch):
    """The message names the folder that refused: --out itself, not its parent."""
    run = tmp_path / "run"
    run.mkdir()
    real = medaudit.io.tempfile.mkstemp

    def mkstemp(*a, dir=None, **kw):
        if Path(dir) == run:
            raise PermissionError(errno.EACCES, "Permission denied", str(run / ".x.tmp"))
        return real(*a, dir=dir, **kw)

    monkeypatch.setattr(medaudit.io.tempfile, "mkstemp", mkstemp)
    with (
        pytest.raises(InputError, match=rf"^--out {run}: cannot write in {run} \(Permission denied\)$"),
        claim_output(run, "train", in_place=True),
    ):
        pytest.fail("the run started")
