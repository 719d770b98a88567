"""The one entry point: ``medaudit audit | demo | bench-scenarios | list | texture ...``.

Commands are registered by name and loaded only when invoked, so ``medaudit --help`` and a bad-input
error come back without importing torch. This module also owns the exit status of every command:

* 0 success; 2 bad input (one line naming the file, column or row; also usage errors);
* 130 interrupted (Ctrl-C / SIGTERM / SIGHUP, a closed terminal), with one line saying what was kept;
* 1 an internal error, summarised on one line (``-v`` or ``MEDAUDIT_TRACEBACK=1`` shows the traceback);
* 141 the reader of standard output closed it early (``| head``), as for a shell tool ended by SIGPIPE;
  files the command wrote are complete.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import sys
import traceback
from typing import Any


def _stop_before_main(signum: int, frame: Any) -> None:
    """Ctrl-C, SIGTERM or SIGHUP while the command line's modules load, before :func:`main` runs (a
    KeyboardInterrupt traceback from ``import typer``, or the process killed by SIGTERM): nothing has
    been written yet."""
    os.write(2, b"interrupted: nothing was written\n")
    os._exit(130)


if __name__ == "__main__" or os.path.basename(sys.argv[0] if sys.argv else "") == "medaudit":
    for _sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(_sig) != signal.SIG_IGN:  # a background job, nohup: stays ignored
            signal.signal(_sig, _stop_before_main)

# after the handlers: importing typer takes a noticeable moment
import typer  # noqa: E402
from typer.core import TyperGroup  # noqa: E402

from medaudit import __version__  # noqa: E402
from medaudit.errors import InputError  # noqa: E402

log = logging.getLogger("medaudit")

# name -> (module, attribute, one-line help). The attribute is a typer command function or a Typer app.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "audit": (
        "medaudit.audit.cli",
        "audit_command",
        "Audit a classifier: discover and explain failing slices.",
    ),
    "demo": (
        "medaudit.studies.cxr_slices.demo",
        "demo_command",
        "The whole audit on the embedded phantom chest X-ray cohort.",
    ),
    "bench-scenarios": (
        "medaudit.studies.cxr_slices.benchmark",
        "bench_scenarios_command",
        "Failure-scenario benchmark of slice discovery (precision@k).",
    ),
    "texture": (
        "medaudit.texture.cli",
        "app",
        "Texture robustness of 3D segmentation: train, eval, predict.",
    ),
}
#: commands a study adds to a product group: (group, name) -> (module, attribute)
GROUP_EXTRAS: dict[tuple[str, str], tuple[str, str]] = {
    ("texture", "demo"): ("medaudit.studies.texture_robustness.demo", "demo_command"),
    ("texture", "study"): ("medaudit.studies.texture_robustness.study", "study_command"),
}
#: old flag spellings, kept for one release: command path -> {old: new}
DEPRECATED_FLAGS: dict[tuple[str, ...], dict[str, str]] = {
    ("audit",): {
        "--id": "--id-col",
        "--label": "--label-col",
        "--prob": "--prob-col",
        "--pred": "--pred-col",
        "--image": "--image-col",
        "--report": "--report-col",
        "--report-path": "--report-path-col",
        "--cache": "--cache-dir",
    },
}


def _load(name: str) -> Any:
    module, attr, _ = COMMANDS[name]
    obj = getattr(importlib.import_module(module), attr)
    if isinstance(obj, typer.Typer):
        for (group, extra), (emod, eattr) in GROUP_EXTRAS.items():
            if group == name:
                obj.command(extra)(getattr(importlib.import_module(emod), eattr))
        cmd = typer.main.get_command(obj)
    else:
        single = typer.Typer()
        single.command(name)(obj)
        cmd = typer.main.get_command(single)
    cmd.name = name
    return cmd


class LazyGroup(TyperGroup):
    """A click group whose commands are imported on first use; ``--help`` lists them from the table."""

    def list_commands(self, ctx: Any) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is None and cmd_name in COMMANDS:
            cmd = _load(cmd_name)
            self.add_command(cmd, cmd_name)
        return cmd

    def format_help(self, ctx: Any, formatter: Any) -> None:
        # plain help: typer's rich help would import every command to describe it
        self.format_usage(ctx, formatter)
        if self.help:
            formatter.write_paragraph()
            formatter.write_text(self.help)
        rows = [r for r in (p.get_help_record(ctx) for p in self.get_params(ctx)) if r]
        with formatter.section("Options"):
            formatter.write_dl(rows)
        self.format_commands(ctx, formatter)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        rows = [(n, COMMANDS[n][2]) for n in COMMANDS]
        rows += [(n, c.get_short_help_str(60)) for n, c in self.commands.items() if n not in COMMANDS]
        with formatter.section("Commands"):
            formatter.write_dl(sorted(rows))


app = typer.Typer(
    name="medaudit",
    cls=LazyGroup,
    help="Audit medical imaging classifiers (slice discovery) and harden 3D segmentation (texture robustness).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"medaudit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More log output (-vv: debug)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors."),
) -> None:
    """medaudit command line."""
    level = logging.WARNING if quiet else logging.DEBUG if verbose > 1 else logging.INFO
    setup_logging(level)
    if quiet:
        os.environ["MEDAUDIT_QUIET"] = "1"  # no progress bars (medaudit.progress), here and in workers
    if verbose:
        os.environ.setdefault("MEDAUDIT_TRACEBACK", "1")


@app.command("list")
def list_command(
    what: str = typer.Argument(..., help="encoders | filters | corruptions | slicers | recipes"),
) -> None:
    """List what is available: encoders, filters, corruptions, slicers, training recipes."""
    from medaudit.registry import available

    for line in available(what):
        typer.echo(line)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to the *current* ``sys.stderr`` (which tests and notebooks replace), not the one at setup."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def setup_logging(level: int = logging.INFO) -> None:
    """Log ``medaudit.*`` records to stderr as ``medaudit: message`` (once per process)."""
    if not log.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        log.addHandler(handler)
        log.propagate = False
    log.setLevel(level)


def rewrite_deprecated(argv: list[str]) -> list[str]:
    """Replace old flag spellings with the new ones (warning once per flag)."""
    words = [a for a in argv if not a.startswith("-")]
    for path, table in DEPRECATED_FLAGS.items():
        if tuple(words[: len(path)]) != path:
            continue
        out = []
        for a in argv:
            flag, eq, value = a.partition("=")
            if flag in table:
                log.warning(
                    "%s is deprecated; use %s (the old spelling goes in the next release)", flag, table[flag]
                )
                a = table[flag] + eq + value
            out.append(a)
        return out
    return argv


def _usage_error(exc: BaseException) -> tuple[str, int] | None:
    """``(message, exit status)`` of a click-style error (typer's own copy of click included)."""
    fmt, code = getattr(exc, "format_message", None), getattr(exc, "exit_code", None)
    if callable(fmt) and isinstance(code, int):
        return " ".join(str(fmt()).split()), code
    return None


def _say(msg: str) -> None:
    with contextlib.suppress(OSError):  # stderr gone with its terminal (SIGHUP): the status still counts
        typer.secho(" ".join(msg.split()), err=True, fg="red")


#: the stop signals received during this run (cleared when :func:`main` starts)
_STOPPED: list[int] = []


def _on_sigterm(signum: int, frame: Any) -> None:
    _STOPPED.append(signum)
    raise KeyboardInterrupt  # unwinds like Ctrl-C: staging folders are removed, the lock released


def _catch_stop_signals() -> dict[int, Any]:
    """SIGTERM and SIGHUP (the terminal closed) unwind like Ctrl-C, and Ctrl-C is recorded too; a
    SIGINT or SIGHUP that is ignored (a background job, ``nohup``) stays ignored. Returns the handlers
    to restore (none when not in the main thread)."""
    old: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        try:
            before = signal.getsignal(sig)
            if before is _stop_before_main:  # restored to Python's own once the command is done
                before = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
            if (
                sig == signal.SIGTERM
                or (sig == signal.SIGHUP and before != signal.SIG_IGN)
                or before is signal.default_int_handler  # SIGINT, unless ignored or handled by the caller
            ):
                signal.signal(sig, _on_sigterm)
        except ValueError:  # not in the main thread: keep the default
            return old
        old[sig] = before
    return old


def _redeliver_swallowed_stop(default: Any) -> Any:
    """A ``sys.unraisablehook`` that delivers a stop signal again when its KeyboardInterrupt was raised
    where Python swallows exceptions (a weakref callback or ``__del__``, as during an import): the
    signal was lost there, ``Exception ignored in ...`` and a traceback were printed and the run went
    on to publish its output with exit status 0."""

    def hook(unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt) and _STOPPED:
            import threading

            # sent from another thread a moment later, so that the handler runs once this hook and the
            # callback have returned (raised here, it would be swallowed again)
            timer = threading.Timer(0.05, os.kill, (os.getpid(), _STOPPED[-1]))
            timer.daemon = True
            timer.start()
            return
        default(unraisable)

    return hook


def _interrupt_in(exc: BaseException) -> bool:
    """Whether ``exc`` stands for a stop signal: a KeyboardInterrupt turned into another exception (a C
    extension being imported reports ``ImportError: initialization failed``), or any exception raised
    after a stop signal arrived."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return bool(_STOPPED)


def _interrupted() -> int:
    from medaudit.outdir import interrupt_note

    note = interrupt_note()
    _say(f"interrupted: {note}" if note else "interrupted: nothing was written")
    return 130


def _internal(exc: BaseException) -> int:
    if os.environ.get("MEDAUDIT_TRACEBACK", "") not in ("", "0"):
        traceback.print_exception(exc)
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    _say(
        f"internal error: {type(exc).__name__}: {first} "
        "(-v or MEDAUDIT_TRACEBACK=1 shows the traceback; please report it)"
    )
    return 1


def _one_line_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None
) -> str:
    """Warnings on the command line: ``warning: message``, one line (no source path or code line)."""
    return "warning: " + " ".join(str(message).split()) + "\n"


def _cwd_gone(args: list[str]) -> bool:
    """The current folder was deleted: relative paths cannot be resolved, and importing torch aborts
    the process with an MKL error (``--help`` still works)."""
    if "--help" in args or "-h" in args:
        return False
    try:
        os.getcwd()
    except FileNotFoundError:
        return True
    return False


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the exit status (see the module docstring)."""
    import warnings

    from medaudit.outdir import clear_interrupt_note

    clear_interrupt_note()
    setup_logging()
    warnings.formatwarning = _one_line_warning
    args = rewrite_deprecated(list(sys.argv[1:] if argv is None else argv))
    quiet_before = os.environ.get("MEDAUDIT_QUIET")
    _STOPPED.clear()
    old = _catch_stop_signals()
    if _cwd_gone(args):
        _say("error: the current folder no longer exists (deleted or moved); cd to another folder")
        return 2
    unraisable_before = sys.unraisablehook
    sys.unraisablehook = _redeliver_swallowed_stop(unraisable_before)
    try:
        rc: Any = app(args=args, standalone_mode=False)
    except InputError as exc:
        _say(f"error: {exc}")
        return 2
    except FileNotFoundError as exc:
        _say(f"error: {exc.filename or exc}: file not found")
        return 2
    except (KeyboardInterrupt, typer.Abort) as exc:
        if isinstance(exc.__cause__, EOFError):  # typer turns an EOFError (a truncated file) into Abort
            return _internal(exc.__cause__)
        return _interrupted()
    except typer.Exit as exc:
        rc = int(exc.exit_code or 0)
    except SystemExit:
        if type(sys.stdout).__name__ == "PacifyFlushWrapper":  # click's exit on a closed stdout (EPIPE)
            return 141
        raise
    except Exception as exc:
        if _interrupt_in(exc):
            return _interrupted()
        if type(exc).__name__ == "ValidationError" and type(exc).__module__.startswith("pydantic"):
            from medaudit.configfile import validation_error

            _say(f"error: {validation_error(exc, 'config')}")  # type: ignore[arg-type]
            return 2
        usage = _usage_error(exc)
        if usage is not None:  # click usage errors (typer ships its own copy of click), on one line
            _say(f"error: {usage[0]}")
            return usage[1]
        if isinstance(exc, OSError) and exc.filename is not None:  # permissions, full disk, not a folder
            _say(f"error: {exc.filename}: {exc.strerror or exc}")
            return 2
        return _internal(exc)
    finally:
        _forget_caught_interrupt()  # for the console script and ``python -m`` alike
        sys.unraisablehook = unraisable_before
        for sig, handler in old.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, handler)
        if quiet_before is None:  # -q sets it for this run only
            os.environ.pop("MEDAUDIT_QUIET", None)
        else:
            os.environ["MEDAUDIT_QUIET"] = quiet_before
    if rc == 130:  # typer may turn Ctrl-C into Exit(130) itself
        return _interrupted()
    return rc if isinstance(rc, int) and not isinstance(rc, bool) else 0


def _forget_caught_interrupt() -> None:
    """CPython 3.11 records a KeyboardInterrupt that passed through ``exec`` of a string (a dataclass
    being made while a command's modules are imported) as unhandled even though :func:`main` caught
    it, and the process then ended by SIGINT (status -2) instead of returning 130."""
    with contextlib.suppress(Exception):  # absent (other versions, other interpreters): nothing to do
        import ctypes

        ctypes.c_int.in_dll(ctypes.pythonapi, "_Py_UnhandledKeyboardInterrupt").value = 0


if __name__ == "__main__":
    sys.exit(main())
