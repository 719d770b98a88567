"""The one entry point: ``medaudit audit | demo | bench-scenarios | texture ...``.

Each capability registers its commands from its own module; this file only wires them together and
turns :class:`medaudit.errors.InputError` into a one-line message and a non-zero exit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import traceback
from typing import Any

import typer

from medaudit import __version__
from medaudit.errors import InputError

app = typer.Typer(
    name="medaudit",
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
) -> None:
    """medaudit command line."""


# (command name, module, attribute): each capability module exposes a typer-annotated function.
_COMMANDS: list[tuple[str, str, str]] = [
    ("audit", "medaudit.audit.cli", "audit_command"),
    ("demo", "medaudit.audit.demo", "demo_command"),
    ("bench-scenarios", "medaudit.audit.benchmark", "bench_scenarios_command"),
]
# (group name, module, attribute): typer sub-apps.
_GROUPS: list[tuple[str, str, str]] = [
    ("texture", "medaudit.texture.cli", "app"),
]


def _register() -> None:
    import importlib

    for name, module, attr in _COMMANDS:
        app.command(name)(getattr(importlib.import_module(module), attr))
    for name, module, attr in _GROUPS:
        app.add_typer(getattr(importlib.import_module(module), attr), name=name)


_register()


def _say(msg: str) -> None:
    typer.secho(" ".join(msg.split()), err=True, fg="red")


def _on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # unwinds like Ctrl-C: staging folders are removed, the lock released


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
        "(set MEDAUDIT_TRACEBACK=1 for the traceback; please report it)"
    )
    return 1


def _is_click_error(exc: BaseException) -> bool:
    return any(c.__name__ == "ClickException" for c in type(exc).__mro__) and isinstance(
        getattr(exc, "exit_code", None), int
    )


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point.

    Exit status: 0 success, 2 bad input (one line naming the file, column or row), 130 interrupted
    (Ctrl-C or SIGTERM; one line says what was kept), 1 internal error (one line; the traceback with
    ``MEDAUDIT_TRACEBACK=1``). ``typer.Exit(n)`` from a command gives ``n``.
    """
    import click

    from medaudit.outdir import clear_interrupt_note

    clear_interrupt_note()
    old = signal.getsignal(signal.SIGTERM)
    with contextlib.suppress(ValueError):  # not in the main thread: keep the default
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        rv = app(args=argv, standalone_mode=False)
    except InputError as exc:
        _say(f"error: {exc}")
        return 2
    except FileNotFoundError as exc:
        _say(f"error: {exc.filename or exc}: file not found")
        return 2
    except (KeyboardInterrupt, typer.Abort, click.exceptions.Abort):
        return _interrupted()
    except typer.Exit as exc:
        return _interrupted() if exc.exit_code == 130 else int(exc.exit_code or 0)
    except SystemExit as exc:  # click usage errors in non-standalone mode
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Exception as exc:
        if _is_click_error(exc):  # usage errors (typer ships its own copy of click)
            exc.show()  # type: ignore[attr-defined]
            return int(exc.exit_code)  # type: ignore[attr-defined]
        if isinstance(exc, OSError) and exc.filename is not None:  # permissions, full disk, not a folder
            _say(f"error: {exc.filename}: {exc.strerror or exc}")
            return 2
        return _internal(exc)
    finally:
        with contextlib.suppress(ValueError, TypeError):
            signal.signal(signal.SIGTERM, old)
    if isinstance(rv, int) and not isinstance(rv, bool):
        return _interrupted() if rv == 130 else rv  # typer turns KeyboardInterrupt into Exit(130)
    return 0


if __name__ == "__main__":
    sys.exit(main())
