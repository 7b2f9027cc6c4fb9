"""`--server`, `--warm` and their options, shared by `generate` and `batch`, declared once."""

from __future__ import annotations

from typing import Annotated

import typer

from diffrun.cli.groups import OptionGroup
from diffrun.cli.options import FLAG, MAX_SECONDS
from diffrun.client import RemoteOptions
from diffrun.errors import UsageError
from diffrun.units import parse_duration

SERVER = "Server"

ServerUrl = Annotated[str | None, typer.Option(
    "--server", envvar="DIFFRUN_SERVER", metavar="URL", rich_help_panel=SERVER,
    help="Send the job to a running `diffrun serve`: http(s)://HOST:PORT or unix:PATH.")]
ApiKey = Annotated[str | None, typer.Option(
    "--api-key", envvar="DIFFRUN_API_KEY", metavar="KEY", rich_help_panel=SERVER, show_default=False,
    help="Sent as `Authorization: Bearer KEY` to --server.")]
ServerTimeout = Annotated[str, typer.Option(
    "--server-timeout", envvar="DIFFRUN_SERVER_TIMEOUT", metavar="SECONDS", rich_help_panel=SERVER,
    help="Seconds to wait for the server to be ready (its model loaded); then exit 69.")]
Warm = Annotated[bool, typer.Option(
    "--warm", envvar="DIFFRUN_WARM", metavar=FLAG, rich_help_panel=SERVER,
    help="Use this user's warm server for the model and runtime, starting one if there is none.")]
KeepAlive = Annotated[str, typer.Option(
    "--keep-alive", envvar="DIFFRUN_KEEP_ALIVE", metavar="SECONDS", rich_help_panel=SERVER,
    help="With --warm: a server it starts exits after this many idle seconds (0: stays until `diffrun stop`).")]


def remote_options(*, server: ServerUrl = None, api_key: ApiKey = None, server_timeout: ServerTimeout = "600",
                   warm: Warm = False, keep_alive: KeepAlive = "300") -> RemoteOptions | None:
    """A client.RemoteOptions, or None for a local run."""
    if not server and not warm:
        return None
    if server and warm:
        raise UsageError("--server and --warm both choose the server; give one")
    timeout = parse_duration(server_timeout)
    if not 0 < timeout <= MAX_SECONDS:
        raise UsageError(f"--server-timeout must be positive seconds: {server_timeout!r}")
    alive = parse_duration(keep_alive)
    if not 0 <= alive <= MAX_SECONDS:
        raise UsageError(f"--keep-alive must be 0 or positive seconds: {keep_alive!r}")
    return RemoteOptions(server=server, api_key=api_key or None, server_timeout=timeout, warm=warm, keep_alive=alive)


REMOTE = OptionGroup.of(remote_options)
"""--server, --api-key, --server-timeout, --warm, --keep-alive: one client.RemoteOptions (None: a local run)."""
