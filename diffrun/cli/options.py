"""Options shared by several commands, declared once; and turning them into library objects."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from diffrun.cli.groups import OptionGroup
from diffrun.errors import UsageError
from diffrun.loaders.guard import allow_host_patterns
from diffrun.loaders.policy import DEFAULT_MAX_PIXELS, FetchPolicy
from diffrun.units import parse_duration, parse_size

LOADER = "Input loading"
OUTPUT = "Output"
RUNTIME = "Runtime"
SAMPLING = "Sampling"
FLAG = ""
"""The metavar of an on/off option: none (typer would show `<bool>`)."""
MAX_INPUT_BYTES = 4 << 30
"""Largest --max-input-bytes: an input is held in memory (and decoded) whole."""
MAX_SECONDS = 10**7
"""Longest --timeout or --deadline (about 115 days)."""

SaveInputs = Annotated[Path | None, typer.Option(
    "--save-inputs", envvar="DIFFRUN_SAVE_INPUTS", metavar="DIR", rich_help_panel=LOADER,
    help="Keep each input's exact bytes in this folder (plus inputs.jsonl).")]
Timeout = Annotated[str, typer.Option(
    "--timeout", envvar="DIFFRUN_TIMEOUT", metavar="SECONDS", rich_help_panel=LOADER,
    help="Seconds to wait for a connection or for the next bytes of a response.")]
Deadline = Annotated[str, typer.Option(
    "--deadline", envvar="DIFFRUN_DEADLINE", metavar="SECONDS", rich_help_panel=LOADER,
    help="Wall-clock seconds for one input, retries included (0: none).")]
Retries = Annotated[int, typer.Option(
    "--retries", envvar="DIFFRUN_RETRIES", min=0, metavar="N", rich_help_panel=LOADER,
    help="Retries for connection errors, timeouts and 408/429/5xx answers.")]
MaxInputBytes = Annotated[str, typer.Option(
    "--max-input-bytes", envvar="DIFFRUN_MAX_INPUT_BYTES", metavar="SIZE", rich_help_panel=LOADER,
    help="Largest input accepted, units allowed (50MB, 2GiB).")]
MaxPixels = Annotated[int, typer.Option(
    "--max-pixels", envvar="DIFFRUN_MAX_PIXELS", min=1, metavar="N", rich_help_panel=LOADER,
    help="Largest image accepted, in pixels, checked before decoding.")]
Background = Annotated[str, typer.Option(
    "--background", envvar="DIFFRUN_BACKGROUND", metavar="COLOR", rich_help_panel=LOADER,
    help="Colour transparent pixels are composited onto (name or #rrggbb).")]
AllowHost = Annotated[list[str] | None, typer.Option(
    "--allow-host", envvar="DIFFRUN_ALLOW_HOST", metavar="HOST", rich_help_panel=LOADER,
    help="Only fetch from this host, or HOST:PORT for one port (repeatable; *.example.com for subdomains).")]
BlockPrivate = Annotated[bool, typer.Option(
    "--block-private", envvar="DIFFRUN_BLOCK_PRIVATE", metavar=FLAG, rich_help_panel=LOADER,
    help="Refuse loopback, private, link-local and reserved addresses, on every redirect.")]
Json = Annotated[bool, typer.Option("--json", envvar="DIFFRUN_JSON", metavar=FLAG,
                                    help="Print results as JSON on stdout.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", envvar="DIFFRUN_QUIET", metavar=FLAG,
                                     help="Print nothing but errors on stderr.")]
ProgressFlag = Annotated[bool, typer.Option(
    "--progress", envvar="DIFFRUN_PROGRESS", metavar=FLAG,
    help="Show progress even when stderr is not a terminal (there: plain lines, at most one a second).")]

Debug = Annotated[bool, typer.Option(
    "--debug", envvar="DIFFRUN_DEBUG", metavar=FLAG,
    help="Show tracebacks for errors (accepted anywhere before --).")]


def _show_help(ctx: typer.Context, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        typer.echo(ctx.get_help(), color=ctx.color)
        raise typer.Exit()


Help = Annotated[bool | None, typer.Option(
    "--help", "-h", is_eager=True, expose_value=False, callback=_show_help, metavar=FLAG,
    help="Show this message and exit.")]
"""typer's own help option would show `<bool>`; the app turns it off (help_option_names=[]) for this one."""


def with_common(command: Callable[..., Any]) -> Callable[..., Any]:
    """`command` with `--debug` and `--help` in its signature, so that its --help lists them.

    main() takes --debug out of argv before typer parses it (so it works anywhere on the line); the
    option is here to be seen, and sets the debug state when a command is called without main().
    """
    signature = inspect.signature(command, eval_str=True)
    if "debug" in signature.parameters:
        return command

    @functools.wraps(command)
    def wrapper(*args: Any, debug: bool = False, help_: bool | None = None, **kwargs: Any) -> Any:
        from diffrun.cli import console

        console.State.debug = console.State.debug or debug
        return command(*args, **kwargs)

    keyword = inspect.Parameter.KEYWORD_ONLY
    extra = [inspect.Parameter("debug", keyword, default=False, annotation=Debug),
             inspect.Parameter("help_", keyword, default=None, annotation=Help)]
    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*signature.parameters.values(), *extra])
    return wrapper


def parse_color(text: str) -> tuple[int, int, int]:
    from PIL import ImageColor

    try:
        rgb = ImageColor.getrgb(text)
    except ValueError:
        raise UsageError(f"--background: not a colour: {text!r}", hint="use a name such as white or #rrggbb") from None
    return (int(rgb[0]), int(rgb[1]), int(rgb[2]))


def fetch_policy(
    *,
    timeout: Timeout = "30",
    deadline: Deadline = "120",
    retries: Retries = 3,
    max_input_bytes: MaxInputBytes = "50MB",
    max_pixels: MaxPixels = DEFAULT_MAX_PIXELS,
    background: Background = "white",
    allow_host: AllowHost = None,
    block_private: BlockPrivate = False,
) -> FetchPolicy:
    """The loader options of any command, validated, as one FetchPolicy."""
    seconds = parse_duration(timeout)
    if seconds <= 0:
        raise UsageError(f"--timeout must be positive: {timeout!r}")
    limit = parse_duration(deadline)
    for flag, text, value in (("--timeout", timeout, seconds), ("--deadline", deadline, limit)):
        if not value <= MAX_SECONDS:  # also NaN; a socket or a clock cannot wait longer
            raise UsageError(f"{flag} {text!r} is too long: at most {MAX_SECONDS} seconds")
    max_bytes = parse_size(max_input_bytes)
    if max_bytes > MAX_INPUT_BYTES:  # reads size their buffer from it: 1e19 cannot even be allocated
        raise UsageError(f"--max-input-bytes {max_input_bytes!r} is too large: at most {MAX_INPUT_BYTES} (4GiB)")
    return FetchPolicy(
        timeout=seconds,
        deadline=limit if limit > 0 else None,
        retries=retries,
        max_bytes=max_bytes,
        max_pixels=max_pixels,
        background=parse_color(background),
        allow_hosts=allow_host_patterns(allow_host or ()),
        block_private=block_private,
    )


LOADING = OptionGroup.of(fetch_policy)
"""The input-loading options of every command that loads inputs, as one FetchPolicy."""


def _split_pair(text: str, flag: str, sep: str = "=") -> tuple[str, str]:
    name, found, value = text.partition(sep)
    if not found or not name.strip():
        raise UsageError(f"{flag} expects NAME{sep}VALUE, got {text!r}")
    return name.strip(), value


def parse_inputs(values: list[str] | None) -> dict[str, list[str]]:
    """`--input control_image=a.png --input control_image=b.png` -> {"control_image": ["a.png", "b.png"]}."""
    inputs: dict[str, list[str]] = {}
    for text in values or ():
        name, ref = _split_pair(text, "--input")
        if not name.isidentifier():
            raise UsageError(f"--input: {name!r} is not a pipeline argument name")
        inputs.setdefault(name, []).append(ref)
    return inputs


def parse_params(values: list[str] | None) -> dict:
    """`--param eta=0.5 --param clip_skip=2 --param name=text`: values JSON-parsed, else kept as text."""
    import json

    params: dict = {}
    for text in values or ():
        name, raw = _split_pair(text, "--param")
        try:
            params[name] = json.loads(raw)
        except ValueError:
            params[name] = raw
        except RecursionError:  # nested thousands deep: no pipeline argument is shaped like that
            raise UsageError(f"--param {name}: the JSON value is nested too deeply") from None
    return params


def parse_loras(values: list[str] | None) -> list[tuple[str, float]]:
    """`--lora path/or/hub-id[:SCALE]`; a scale is only taken from after the last colon if it is a number."""
    loras = []
    for text in values or ():
        ref, scale = text, 1.0
        head, sep, tail = text.rpartition(":")
        if sep and head:
            try:
                scale = float(tail)
                ref = head
            except ValueError:
                pass
        loras.append((ref, scale))
    return loras
