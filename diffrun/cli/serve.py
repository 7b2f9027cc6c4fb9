"""`diffrun serve`: the model loaded once, behind an OpenAI-compatible HTTP API (extra `serve`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from diffrun.cli import console, options
from diffrun.cli import model_options as mo
from diffrun.cli.groups import takes
from diffrun.cli.options import FLAG, LOADER
from diffrun.errors import UsageError
from diffrun.jobs import DEFAULT_MAX_IMAGES
from diffrun.loaders.policy import FetchPolicy
from diffrun.units import parse_duration, parse_size

if TYPE_CHECKING:  # a placeholder's type: the option group builds it (pipelines/ stays unimported)
    from diffrun.pipelines.models import ModelOptions

SERVER = "Server"

BlockPrivate = Annotated[bool, typer.Option(
    "--block-private/--allow-private", envvar="DIFFRUN_BLOCK_PRIVATE", metavar=FLAG, rich_help_panel=LOADER,
    help="Refuse URLs to loopback, private, link-local and reserved addresses (on by default: the server "
         "fetches on behalf of whoever can reach it).")]


SERVE_LOADING = options.LOADING.replacing("block_private", BlockPrivate, True)
"""The loader options with the private-address guard on by default (--allow-private turns it off)."""


@takes(runtime=mo.RUNTIME_OPTIONS, policy=SERVE_LOADING)
def serve(
    host: Annotated[str, typer.Option("--host", envvar="DIFFRUN_HOST", metavar="HOST", rich_help_panel=SERVER,
                                      help="Address to listen on (not loopback: needs --api-key or --insecure).")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", envvar="DIFFRUN_PORT", min=0, max=65535, metavar="PORT",
                                      rich_help_panel=SERVER, help="TCP port (0: any free one, logged).")] = 8765,
    uds: Annotated[Path | None, typer.Option("--uds", envvar="DIFFRUN_UDS", metavar="PATH", rich_help_panel=SERVER,
                                             help="Listen on this Unix socket (mode 0600) instead of TCP.")] = None,
    api_key: Annotated[str | None, typer.Option(
        "--api-key", envvar="DIFFRUN_API_KEY", metavar="KEY", rich_help_panel=SERVER, show_default=False,
        help="Require Authorization: Bearer KEY on every route but /health.")] = None,
    insecure: Annotated[bool, typer.Option("--insecure", metavar=FLAG, rich_help_panel=SERVER,
                                           help="Allow a non-loopback --host without --api-key.")] = False,
    max_queue: Annotated[int, typer.Option("--max-queue", envvar="DIFFRUN_MAX_QUEUE", min=1, metavar="N",
                                           rich_help_panel=SERVER,
                                           help="Requests waiting at most; beyond it 429 with Retry-After.")] = 64,
    max_batch: Annotated[int, typer.Option("--max-batch", envvar="DIFFRUN_MAX_BATCH", min=1, metavar="N",
                                           rich_help_panel=SERVER,
                                           help="Consecutive compatible requests run as one pipeline call.")] = 4,
    drain_timeout: Annotated[str, typer.Option(
        "--drain-timeout", envvar="DIFFRUN_DRAIN_TIMEOUT", metavar="SECONDS", rich_help_panel=SERVER,
        help="On SIGTERM/Ctrl-C: seconds to finish queued requests (the rest get 503).")] = "30",
    keep_alive: Annotated[str, typer.Option(
        "--keep-alive", envvar="DIFFRUN_KEEP_ALIVE", metavar="SECONDS", rich_help_panel=SERVER,
        help="Exit 0 after this long with nothing to do (0: stay).")] = "0",
    keep_results: Annotated[str, typer.Option(
        "--keep-results", envvar="DIFFRUN_KEEP_RESULTS", metavar="SIZE", rich_help_panel=SERVER,
        help="Memory for response_format=url results and finished videos (each kept at most an hour, "
             "oldest dropped first).")]
    = "256MB",
    ready_file: Annotated[Path | None, typer.Option(
        "--ready-file", metavar="PATH", rich_help_panel=SERVER,
        help="Once loaded and listening, write {\"pid\", \"url\"} here (atomically).")] = None,
    max_images: Annotated[int, typer.Option(
        "--max-images", min=1, envvar="DIFFRUN_MAX_IMAGES", metavar="N", rich_help_panel=SERVER,
        help="Most outputs one request may ask for.")] = DEFAULT_MAX_IMAGES,
    json_log: Annotated[bool, typer.Option("--json", envvar="DIFFRUN_JSON", metavar=FLAG,
                                           help="Log JSON lines on stderr.")] = False,
    runtime: ModelOptions = None,
    save_inputs: options.SaveInputs = None,
    policy: FetchPolicy = None,
) -> None:
    """Serve the model over HTTP (OpenAI's images and videos API): loaded once, one GPU, many clients."""
    from diffrun.server.runner import ServeOptions
    from diffrun.server.runner import serve as run_server

    runtime = mo.require_model(runtime)
    settings = ServeOptions(
        host=host, port=port, uds=uds, api_key=api_key or None, insecure=insecure, max_queue=max_queue,
        max_batch=max_batch, drain_timeout=_seconds("--drain-timeout", drain_timeout),
        keep_alive=_seconds("--keep-alive", keep_alive), ready_file=ready_file, json_log=json_log,
        keep_results=parse_size(keep_results), save_inputs=save_inputs, max_images=max_images,
        debug=console.State.debug,
    )
    code = run_server(runtime, policy, settings)
    if code:
        raise typer.Exit(code)


def _seconds(flag: str, text: str) -> float:
    value = parse_duration(text)
    if not 0 <= value <= options.MAX_SECONDS:
        raise UsageError(f"{flag} must be 0 to {options.MAX_SECONDS} seconds, got {text!r}")
    return value


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
