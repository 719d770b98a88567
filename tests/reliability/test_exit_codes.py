"""Exit status of every path through ``medaudit.cli.main``: 0, 2, 130, 1 and typer.Exit(n)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer

import medaudit.audit.pipeline as pipeline
from medaudit.outdir import MARKER, claim_output

from .conftest import make_table, one_line


@pytest.fixture
def table(tmp_path: Path) -> Path:
    return make_table(tmp_path / "data")


def _patch_run(monkeypatch, exc: BaseException, seen: list | None = None) -> None:
    """Make ``run_audit`` claim its output like the real one, then raise ``exc`` in the middle of the work."""

    def fake(table, cfg, out, force=False):
        with claim_output(out, "audit", inputs=[table], force=force) as c:
            (c.stage / "slices.json").write_text("{}")
            if seen is not None:
                seen.append(c.stage)
            raise exc

    monkeypatch.setattr(pipeline, "run_audit", fake)  # the CLI imports it from there when it runs


def test_success_is_0(cli, audit_args, table, tmp_path):
    assert cli(*audit_args(table, tmp_path / "out"))[0] == 0


def test_bad_input_is_2(cli, audit_args, tmp_path):
    rc, err = cli(*audit_args(tmp_path / "missing.csv", tmp_path / "out"))
    assert rc == 2 and "missing.csv" in one_line(err)


def test_usage_error_is_2(cli):
    assert cli("audit", "--no-such-flag")[0] == 2


def test_ctrl_c_is_130_with_one_line_and_no_staging(cli, audit_args, table, tmp_path, monkeypatch):
    seen: list[Path] = []
    _patch_run(monkeypatch, KeyboardInterrupt(), seen)
    rc, err = cli(*audit_args(table, tmp_path / "out"))
    assert rc == 130
    assert one_line(err).startswith("interrupted: nothing was written to")
    assert seen and not seen[0].exists() and sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_ctrl_c_keeps_an_earlier_output(cli, audit_args, table, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / MARKER).write_text(json.dumps({"kind": "audit"}))
    (out / "slices.json").write_text("earlier")
    _patch_run(monkeypatch, KeyboardInterrupt())
    rc, err = cli(*audit_args(table, out))
    assert rc == 130 and "left as it was" in one_line(err)
    assert (out / "slices.json").read_text() == "earlier"


def test_internal_error_is_1_with_one_line(cli, audit_args, table, tmp_path, monkeypatch):
    _patch_run(monkeypatch, ZeroDivisionError("division by zero\nsecond line"))
    rc, err = cli(*audit_args(table, tmp_path / "out"))
    line = one_line(err)
    assert rc == 1 and "internal error: ZeroDivisionError: division by zero" in line
    assert "MEDAUDIT_TRACEBACK" in line and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_eof_error_is_not_an_interruption(cli, audit_args, table, tmp_path, monkeypatch):
    """typer turns an EOFError (a truncated file read to its end) into Abort, as it does Ctrl-C: it must
    still be an error with one line, not ``interrupted`` with 130."""
    _patch_run(monkeypatch, EOFError("No data left in file"))
    rc, err = cli(*audit_args(table, tmp_path / "out"))
    line = one_line(err)
    assert rc == 1 and "internal error: EOFError: No data left in file" in line, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_traceback_on_request(cli, audit_args, table, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDAUDIT_TRACEBACK", "1")
    _patch_run(monkeypatch, ZeroDivisionError("boom"))
    rc, err = cli(*audit_args(table, tmp_path / "out"))
    assert rc == 1 and "Traceback" in err


@pytest.mark.parametrize("code", [0, 1, 3, 130])
def test_typer_exit_code_propagates(cli, audit_args, table, tmp_path, monkeypatch, code):
    _patch_run(monkeypatch, typer.Exit(code))
    assert cli(*audit_args(table, tmp_path / "out"))[0] == code


def test_failed_study_tasks_exit_1(cli, tmp_path, monkeypatch):
    from types import SimpleNamespace

    import medaudit.studies.texture_robustness.study as study

    run = SimpleNamespace(
        executed=[], skipped=[], wall_s=0.0, results_path=None, report_path=None, failed={"abc": "boom"}
    )
    monkeypatch.setattr(study, "run_study", lambda *a, **k: run)
    rc, _ = cli("texture", "study", "study_small", "--out", tmp_path / "s")
    assert rc == 1


@pytest.mark.parametrize("quiet", [True, False])
def test_error_is_the_only_stderr_line_without_a_terminal(tmp_path, quiet):
    """No progress line before the error: stderr is a pipe here, and ``-q`` silences progress anyway."""
    from .conftest import run_sub

    (tmp_path / "cases.csv").write_text("")
    args = ["-q"] if quiet else []
    args += ["audit", "--modalities", "report", "--slicer", "rules", "--device", "cpu"]
    res = run_sub([*args, "--table", "cases.csv", "--out", "out"], env={"MEDAUDIT_QUIET": ""}, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("error: cases.csv"), repr(res.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cases.csv"]


def test_progress_is_drawn_only_on_a_terminal_and_erased_on_error(monkeypatch):
    import io

    from rich.console import Console

    import medaudit.progress as progress

    monkeypatch.delenv("MEDAUDIT_QUIET", raising=False)
    monkeypatch.setattr(progress, "console", Console(file=io.StringIO(), force_terminal=False))
    assert progress.make_progress().disable  # a pipe or a log file: no bars
    tty = Console(file=io.StringIO(), force_terminal=True, width=80)
    monkeypatch.setattr(progress, "console", tty)
    assert not progress.make_progress().disable
    monkeypatch.setenv("MEDAUDIT_QUIET", "1")  # medaudit -q
    assert progress.make_progress().disable
    monkeypatch.delenv("MEDAUDIT_QUIET")
    bar = progress.make_progress()
    with pytest.raises(ValueError), bar:
        bar.add_task("read case table", total=1)
        raise ValueError("bad input")
    assert bar.live.transient  # the display was erased, so the error line stands alone


def test_quiet_flag_is_scoped_to_its_run(cli, monkeypatch):
    import os

    monkeypatch.delenv("MEDAUDIT_QUIET", raising=False)
    assert cli("-q", "list", "slicers")[0] == 0
    assert "MEDAUDIT_QUIET" not in os.environ
