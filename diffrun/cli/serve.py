"""`diffrun serve`: the model loaded once, behind an OpenAI-compatible HTTP API (extra `serve`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from diffrun.cli import model_options as mo
from diffrun.cli import options
from diffrun.cli.options import FLAG, LOADER
from diffrun.errors import UsageError
from diffrun.jobs import DEFAULT_MAX_IMAGES
from diffrun.units import parse_duration, parse_size

SERVER = "Server"

BlockPrivate = Annotated[bool, typer.Option(
    "--block-private/--allow-private", envvar="DIFFRUN_BLOCK_PRIVATE", rich_help_panel=LOADER,
    help="Refuse URLs to loopback, private, link-local and reserved addresses (on by default: the server "
         "fetches on behalf of whoever can reach it).")]


def serve(
    model: mo.Model = None,
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
        help="Memory for response_format=url results (each kept at most an hour, oldest dropped first).")]
    = "256MB",
    ready_file: Annotated[Path | None, typer.Option(
        "--ready-file", metavar="PATH", rich_help_panel=SERVER,
        help="Once loaded and listening, write {\"pid\", \"url\"} here (atomically).")] = None,
    max_images: Annotated[int, typer.Option(
        "--max-images", min=1, envvar="DIFFRUN_MAX_IMAGES", metavar="N", rich_help_panel=SERVER,
        help="Most outputs one request may ask for.")] = DEFAULT_MAX_IMAGES,
    json_log: Annotated[bool, typer.Option("--json", envvar="DIFFRUN_JSON", metavar=FLAG,
                                           help="Log JSON lines on stderr.")] = False,
    revision: mo.Revision = None,
    variant: mo.Variant = None,
    device: mo.Device = "auto",
    dtype: mo.Dtype = "auto",
    offload: mo.Offload = "none",
    vae_tiling: mo.VaeTiling = False,
    vae_slicing: mo.VaeSlicing = False,
    attention_slicing: mo.AttentionSlicing = False,
    compile_: mo.Compile = False,
    scheduler: mo.Scheduler = None,
    lora: mo.Lora = None,
    threads: mo.Threads = None,
    save_inputs: options.SaveInputs = None,
    timeout: options.Timeout = "30",
    deadline: options.Deadline = "120",
    retries: options.Retries = 3,
    max_input_bytes: options.MaxInputBytes = "50MB",
    max_pixels: options.MaxPixels = options.DEFAULT_MAX_PIXELS,
    background: options.Background = "white",
    allow_host: options.AllowHost = None,
    block_private: BlockPrivate = True,
) -> None:
    """Serve the model over HTTP (OpenAI's images and videos API): loaded once, one GPU, many clients."""
    from diffrun.server.runner import ServeOptions

    runtime = mo.model_options(
        model=model, revision=revision, variant=variant, device=device, dtype=dtype, offload=offload,
        vae_tiling=vae_tiling, vae_slicing=vae_slicing, attention_slicing=attention_slicing, compile_=compile_,
        scheduler=scheduler, lora=lora, threads=threads,
    )
    policy = options.fetch_policy(
        timeout=timeout, deadline=deadline, retries=retries, max_input_bytes=max_input_bytes,
        max_pixels=max_pixels, background=background, allow_host=allow_host, block_private=block_private,
    )
    settings = ServeOptions(
        host=host, port=port, uds=uds, api_key=api_key or None, insecure=insecure, max_queue=max_queue,
        max_batch=max_batch, drain_timeout=_seconds("--drain-timeout", drain_timeout),
        keep_alive=_seconds("--keep-alive", keep_alive), ready_file=ready_file, json_log=json_log,
        keep_results=parse_size(keep_results), save_inputs=save_inputs, max_images=max_images,
    )
    from diffrun.server.runner import serve as run_server

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
