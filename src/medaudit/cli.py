"""The one entry point: ``medaudit audit | demo | bench-scenarios | texture ...``.

Each capability registers its commands from its own module; this file only wires them together and
turns :class:`medaudit.errors.InputError` into a one-line message and a non-zero exit.
"""

from __future__ import annotations

import sys

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
    ("demo", "medaudit.studies.cxr_slices.demo", "demo_command"),
    ("bench-scenarios", "medaudit.studies.cxr_slices.benchmark", "bench_scenarios_command"),
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


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point."""
    try:
        app(args=argv, standalone_mode=False)
    except InputError as exc:
        typer.secho(f"error: {exc}", err=True, fg="red")
        return 2
    except FileNotFoundError as exc:
        typer.secho(f"error: {exc.filename or exc}: file not found", err=True, fg="red")
        return 2
    except typer.Abort:
        typer.secho("aborted", err=True)
        return 130
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except SystemExit as exc:  # click usage errors in non-standalone mode
        return int(exc.code or 0)
    except Exception as exc:  # click.UsageError and friends
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            return exc.exit_code
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
