"""The output-safety mechanism itself (medaudit.outdir), without a command around it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from medaudit.errors import InputError
from medaudit.outdir import MARKER, check_output, claim_output, read_marker


def test_publish_writes_marker_and_leaves_no_lock(tmp_path):
    with claim_output(tmp_path / "o", "k") as c:
        assert c.stage.parent == tmp_path and c.stage.name.startswith(".o.staging-")
        assert (tmp_path / ".o.lock").exists()
        (c.stage / "a").write_text("1")
    assert read_marker(tmp_path / "o")["kind"] == "k"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]


def test_missing_parents_are_created_and_removed_on_failure(tmp_path):
    with pytest.raises(RuntimeError), claim_output(tmp_path / "a" / "b" / "o", "k"):
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []
    with claim_output(tmp_path / "a" / "b" / "o", "k"):
        pass
    assert (tmp_path / "a" / "b" / "o" / MARKER).is_file()


@pytest.mark.parametrize("where", ["cwd", "parent-of-cwd", "home", "root"])
def test_protected_folders_are_refused_even_with_force(tmp_path, monkeypatch, where):
    (tmp_path / "w").mkdir()
    monkeypatch.chdir(tmp_path / "w")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    target = {"cwd": ".", "parent-of-cwd": "..", "home": str(tmp_path / "home"), "root": "/"}[where]
    with pytest.raises(InputError, match=r"^--out "):
        check_output(target, "k", force=True)


def test_empty_folder_is_ours_and_returned_as_it_was_after_in_place_failure(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    with pytest.raises(InputError), claim_output(d, "train", in_place=True, keep_if=("ckpt",)):
        raise InputError("bad data")
    assert d.is_dir() and list(d.iterdir()) == []


def test_in_place_new_folder_kept_only_with_something_to_resume(tmp_path):
    with (
        pytest.raises(KeyboardInterrupt),
        claim_output(tmp_path / "a", "t", in_place=True, keep_if=("ckpt",)),
    ):
        raise KeyboardInterrupt
    assert not (tmp_path / "a").exists()
    with (
        pytest.raises(KeyboardInterrupt),
        claim_output(tmp_path / "b", "t", in_place=True, keep_if=("ckpt",)) as c,
    ):
        (c.stage / "ckpt").write_text("x")
        raise KeyboardInterrupt
    assert (tmp_path / "b" / "ckpt").exists() and read_marker(tmp_path / "b")["kind"] == "t"


def test_lock_is_exclusive_across_processes(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys; from medaudit.outdir import claim_output\n"
        "try:\n    with claim_output(sys.argv[1], 'k'): pass\n"
        "except Exception as e:\n    print(e); sys.exit(2)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    with claim_output(tmp_path / "o", "k"):
        r = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / "o")], capture_output=True, text=True, env=env
        )
    assert r.returncode == 2 and "another medaudit run" in r.stdout
    r = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "o")], capture_output=True, text=True, env=env
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_folder_changed_during_the_run_is_not_replaced(tmp_path):
    out = tmp_path / "o"
    with pytest.raises(InputError, match="did not write"), claim_output(out, "k") as c:
        out.mkdir()
        (out / "users.txt").write_text("arrived meanwhile")
        (c.stage / "a").write_text("1")
    assert (out / "users.txt").read_text() == "arrived meanwhile"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]


def test_marker_must_be_ours(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / MARKER).write_text("not json")
    (out / "x").write_text("1")
    with pytest.raises(InputError, match="did not write"):
        check_output(out, "k")
    (out / MARKER).write_text(json.dumps({"kind": "k"}))
    assert check_output(out, "k") == out.resolve()


def _publish(out: Path, kind: str = "k", files: dict[str, str] | None = None, force: bool = False) -> None:
    with claim_output(out, kind, force=force) as c:
        for name, text in (files or {"a.txt": "new"}).items():
            (c.stage / name).write_text(text)


def test_force_writes_beside_user_files_and_never_over_them(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="--force"):
        _publish(out)
    _publish(out, force=True)
    assert (out / "notes.txt").read_text() == "mine" and (out / "a.txt").read_text() == "new"
    assert read_marker(out)["files"] == ["a.txt"]
    # a rerun replaces medaudit's own entries (a.txt goes, b.txt comes) and keeps the user's
    _publish(out, files={"b.txt": "2"}, force=True)
    assert sorted(p.name for p in out.iterdir()) == sorted([MARKER, "b.txt", "notes.txt"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]  # no staging or old folder left


def test_same_kind_output_with_a_user_file_is_not_replaced_without_force(tmp_path):
    out = tmp_path / "o"
    _publish(out)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match=r"holds 'notes\.txt', which medaudit did not write"):
        _publish(out)
    _publish(out, files={"a.txt": "again"}, force=True)
    assert (out / "notes.txt").read_text() == "mine" and (out / "a.txt").read_text() == "again"


def test_output_that_would_replace_a_user_file_fails_and_keeps_it(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "a.txt").write_text("mine")
    with pytest.raises(InputError, match=r"holds 'a\.txt', which medaudit did not write and this run"):
        _publish(out, force=True)
    assert (out / "a.txt").read_text() == "mine" and read_marker(out) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]


def test_marker_without_a_file_list_is_replaced_as_before(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / MARKER).write_text(json.dumps({"kind": "k", "state": "complete"}))
    (out / "old.txt").write_text("from an older medaudit")
    _publish(out)
    assert sorted(p.name for p in out.iterdir()) == sorted([MARKER, "a.txt"])


def test_in_place_run_folder_with_user_files_is_refused_even_with_force(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "model.pt").write_text("mine")
    with (
        pytest.raises(InputError, match="--force does not apply"),
        claim_output(out, "k", force=True, in_place=True),
    ):
        pass
    assert sorted(p.name for p in out.iterdir()) == ["model.pt"]
    with claim_output(tmp_path / "other", "k2", in_place=True) as c:  # another kind's run folder: --force
        (c.stage / "a").write_text("1")
    with claim_output(tmp_path / "other", "k", force=True, in_place=True):
        pass
