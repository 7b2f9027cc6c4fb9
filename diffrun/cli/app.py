"""The `diffrun` entry point: the typer app, and the one place errors become exit codes."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from typing import Annotated

import typer

from diffrun import __version__
from diffrun.cli import console, options
from diffrun.engine import signals
from diffrun.errors import DiffrunError, Exit, StdoutClosed

try:  # typer >= 0.29 carries its own click
    from typer import TyperException as CliError
except ImportError:  # pragma: no cover - older typer on click
    from click import ClickException as CliError

app = typer.Typer(
    name="diffrun",
    help="Run diffusion models from the command line: inputs from paths, URLs or data URIs.",
    no_args_is_help=True,
    add_completion=False,  # `diffrun completion SHELL` prints the script; _register() readies the answers
    pretty_exceptions_enable=False,
    # typer's help option shows a `<bool>` placeholder: every command gets options.Help (-h, --help) instead.
    context_settings={"help_option_names": []},
)


def _version(value: bool) -> None:
    if value:
        print(f"diffrun {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: options.Debug = False,
    version: Annotated[bool | None, typer.Option(
        "--version", callback=_version, is_eager=True, metavar=options.FLAG,
        help="Print the version and exit.")] = None,
    help_: options.Help = None,
) -> None:
    console.State.debug = console.State.debug or debug


def _register() -> None:
    """Commands are small modules; importing them imports nothing heavy (torch stays lazy)."""
    from diffrun.cli import batch, compare, completion, env, generate, inspect, ps, serve, tiny_model

    for module in (generate, batch, serve, compare, inspect, tiny_model, env, completion, ps):
        module.register(app)
    for command in app.registered_commands:  # every command's --help lists --debug and -h/--help
        command.callback = options.with_common(command.callback)
    completion.answer_if_asked()


def _split_debug(args: list[str]) -> tuple[list[str], bool]:
    """Accept --debug anywhere before `--`, so it can be added to any failing command line."""
    if "--debug" not in args:
        return args, False
    cut = args.index("--") if "--" in args else len(args)
    if "--debug" not in args[:cut]:
        return args, False
    return [a for a in args[:cut] if a != "--debug"] + args[cut:], True


def _show_cli_error(exc: CliError) -> None:
    """click's message; for a usage error with the `Try 'diffrun CMD -h'` line that click prints only
    beside its own help option (the app's is options.Help)."""
    ctx = getattr(exc, "ctx", None)
    if ctx is None or type(exc).show.__qualname__ != "UsageError.show":  # e.g. no arguments: the help itself
        exc.show(file=sys.stderr)
        return
    typer.echo(f"{ctx.get_usage()}\nTry '{ctx.command_path} -h' for help.\n", err=True)
    typer.echo(f"Error: {exc.format_message()}", err=True)


def main(argv: list[str] | None = None) -> int:
    """Run the app on argv; return the exit code (expected failures already reported on stderr)."""
    # Pillow warns about corrupt EXIF and the like on stderr; the input still loads, so stay quiet.
    warnings.filterwarnings("ignore", category=UserWarning, module="PIL")
    if sys.stdout is None:  # started with fd 1 closed (`>&-`): results fail as a closed pipe does (141)
        sys.stdout = console.ClosedStdout()
    args, debug = _split_debug(list(sys.argv[1:] if argv is None else argv))
    console.State.debug = debug or os.environ.get("DIFFRUN_DEBUG", "").lower() in ("1", "true", "yes")
    _register()
    with signals.interrupts():  # Ctrl-C / SIGTERM: error: interrupted, exit 130, in every phase
        return _run(args)


def _run(args: list[str]) -> int:
    try:
        code = app(args=args, prog_name="diffrun", standalone_mode=False)
        if code == Exit.INTERRUPTED and signals.report_interrupt():  # typer's code for a KeyboardInterrupt
            console.error("interrupted")
    except (StdoutClosed, BrokenPipeError):
        # The reader of stdout went away (`| head`): stop quietly with the code a shell gives a process
        # ended by SIGPIPE. Later writes to stdout (the final flush) go nowhere instead of failing again.
        _stdout_to_devnull()
        code = Exit.STDOUT_CLOSED
    except DiffrunError as exc:
        if console.State.debug:
            console.err.print_exception()
        console.error(exc.message, exc.hint)
        code = int(exc.exit)
    except CliError as exc:
        _show_cli_error(exc)
        code = Exit.USAGE
    except MemoryError:  # e.g. a size or count no pipeline can hold: the out-of-memory exit, not a bug
        console.error("out of memory", "try smaller sizes, fewer images per job, or --debug for where")
        code = Exit.OUT_OF_MEMORY
    except (KeyboardInterrupt, typer.Abort):
        if signals.report_interrupt():
            console.error("interrupted")
        code = Exit.INTERRUPTED
    except Exception as exc:  # the last line of defence: a bug, reported in one line unless --debug
        if signals.requested() and not console.State.debug:  # most likely fallout of the interrupt
            if signals.report_interrupt():
                console.error("interrupted")
            return int(Exit.INTERRUPTED)
        if console.State.debug:
            raise
        console.error(f"internal error: {type(exc).__name__}: {exc}", "run again with --debug for the traceback")
        code = Exit.INTERNAL
    return int(code or 0)


def _stdout_to_devnull() -> None:
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def entry() -> None:
    """The console script: main(), then exit without tearing down the interpreter.

    With torch and diffusers imported, a normal interpreter shutdown costs over a second of module
    teardown. Every file diffrun writes is closed (and renamed into place) before main() returns, so
    after flushing the standard streams there is nothing left to do.
    """
    code = main()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):  # AttributeError: a closed stream is None
            stream.flush()
    os._exit(code)
