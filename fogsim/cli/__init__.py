"""The ``fogsim`` command. Typer for parsing, rich for progress and tables.

The commands live by what they are for: ``train`` (one device), ``simulation`` (run, validate,
profiles, keys), ``runs`` (compare, sweep); ``tables`` and ``console`` are the formatting they
share. Every error a user can cause ends as one line on stderr and exit code 2, with no traceback.
"""

from __future__ import annotations

import re
import sys

from fogsim.telemetry import telemetry_off

telemetry_off()  # before anything below imports Flower

import click  # noqa: E402
import typer  # noqa: E402

from fogsim import signals  # noqa: E402
from fogsim.sim import provenance  # noqa: E402
from fogsim.cli import runs, simulation, train  # noqa: E402
from fogsim.errors import SHOWN_CHARS, FogsimError, brief, one_line  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode="rich", context_settings={"help_option_names": ["-h", "--help"]},
                  help="Federated fog simulation of memory-budgeted devices training with DynHP.")


def _print_version(value: bool) -> None:
    if value:
        from fogsim import __version__

        print(f"fogsim {__version__}")
        raise typer.Exit()


@app.callback()
def _group(version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                        help="print fogsim's version and exit")) -> None:
    """Federated fog simulation of memory-budgeted devices training with DynHP."""


train.register(app)
simulation.register(app)
runs.register(app)


def usage_message(text: str) -> str:
    """Click's message about the command line on one line, each value it quotes cut short (click quotes
    the whole of what the user typed: ``Invalid value for '--lr': '...'``)."""
    text = one_line(text)
    text = re.sub(r"'([^']{%d,})'" % (SHOWN_CHARS + 1), lambda m: f"'{brief(m.group(1))}'", text)
    text = re.sub(r"\(([^()]{%d,})\)" % (SHOWN_CHARS + 1), lambda m: f"({brief(m.group(1))})", text)
    text = re.sub(r"\S{%d,}" % (2 * SHOWN_CHARS + 1), lambda m: brief(m.group(0)), text)
    return brief(text, 400)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app and turn user errors into one line and exit code 2.

    A message is printed with its control characters escaped, so that a newline in a file name
    or in a value the user typed cannot split it.
    """
    previous = signals.install()
    provenance.given(sys.argv[1:] if argv is None else list(argv))
    try:
        if app(args=argv, standalone_mode=False) == 130:  # typer turns KeyboardInterrupt into Exit(130)
            raise KeyboardInterrupt
    except FogsimError as error:
        print(f"fogsim: error: {one_line(str(error))}", file=sys.stderr)
        return error.exit_code
    except click.exceptions.NoArgsIsHelpError as usage:
        print(usage.ctx.get_help() if usage.ctx else "", file=sys.stderr)
        return 2
    except click.UsageError as error:
        print(f"fogsim: error: {usage_message(error.format_message())}", file=sys.stderr)
        return 2
    except (click.exceptions.Abort, KeyboardInterrupt):  # click turns an interrupt into Abort
        signals.say_interrupted()
        return signals.exit_code()
    finally:
        signals.restore(previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
