"""`diffrun ps` and `diffrun stop`: this user's warm servers (started by `--warm`)."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from diffrun.cli import console, options
from diffrun.errors import UsageError


def _servers() -> list[dict[str, Any]]:
    """One row per live warm server; records of servers that are gone are cleaned up on the way."""
    from diffrun.client import registry
    from diffrun.client.remote import health
    from diffrun.client.transport import connect
    from diffrun.errors import ServerUnavailable

    rows = []
    for paths, record in registry.records(registry.runtime_dir()):
        if not registry.alive(record):
            paths.clean()
            continue
        body: dict[str, Any] = {}
        state = "starting"
        if paths.socket.exists():
            server = connect(f"unix:{paths.socket}")
            try:
                status, body = health(server, 2.0)
                state = "ready" if status == 200 else str(body.get("status") or status)
            except ServerUnavailable as exc:
                state = "not answering" if "timed out" in exc.message else "starting"
            finally:
                server.close()
        now = time.time()
        rows.append({
            "model": record.model, "pid": record.pid, "status": state, "key": record.key,
            "uptime": round(now - record.created, 1),
            "idle": _number(body.get("idle_seconds")), "requests": _number(body.get("requests")),
            "rss_bytes": _number(body.get("rss_bytes")) or registry.rss_bytes(record.pid),
            "keep_alive": record.keep_alive, "socket": record.socket, "log": record.log,
            "settings": settings_text(record.runtime if isinstance(record.runtime, dict) else {}),
        })
    return rows


_FLAGS = {"vae_tiling": "vae-tiling", "vae_slicing": "vae-slicing", "attention_slicing": "attention-slicing",
          "compile": "compile"}


def settings_text(runtime: dict[str, Any]) -> str:
    """What tells two warm servers of one model apart: `cpu fp32`, then whatever is not the default."""
    words = [str(runtime.get("device") or "auto"), str(runtime.get("dtype") or "auto")]
    if runtime.get("offload") not in (None, "none"):
        words.append(f"offload={runtime['offload']}")
    for key in ("revision", "variant", "scheduler", "threads"):
        if runtime.get(key) is not None:
            words.append(f"{key}={runtime[key]}")
    words += [flag for key, flag in _FLAGS.items() if runtime.get(key)]
    words += [f"lora={item[0]}" for item in runtime.get("loras") or [] if isinstance(item, list) and item]
    return " ".join(words)


def _number(value: Any) -> float | int | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def ps(json_out: options.Json = False) -> None:
    """List this user's warm servers: model, pid, uptime, idle time, requests served, memory."""
    from rich.table import Table

    from diffrun.cli.progress import duration
    from diffrun.units import format_size

    rows = _servers()
    if json_out:
        for row in rows:
            console.emit_json(row)
        return
    if not rows:
        console.info("no warm servers")
        return
    table = Table(box=None, header_style="bold")
    for name in ("MODEL", "SETTINGS", "PID", "STATUS", "UPTIME", "IDLE", "REQUESTS", "MEMORY"):
        table.add_column(name, no_wrap=name not in ("MODEL", "SETTINGS"))
    for row in rows:
        table.add_row(console.clean(row["model"]), console.clean(row["settings"]), str(row["pid"]), row["status"],
                      duration(row["uptime"]),
                      "-" if row["idle"] is None else duration(row["idle"]),
                      "-" if row["requests"] is None else str(int(row["requests"])),
                      "-" if row["rss_bytes"] is None else format_size(int(row["rss_bytes"])))
    console.report(table)


def stop(
    model: Annotated[str | None, typer.Argument(metavar="[MODEL]", show_default=False,
                                                help="The model whose warm servers to stop (as given to -m).")] = None,
    all_: Annotated[bool, typer.Option("--all", metavar=options.FLAG, help="Stop every warm server.")] = False,
    wait: Annotated[float, typer.Option("--wait", min=0, metavar="SECONDS",
                                        help="Seconds to let a server finish its jobs before it is killed.")] = 60.0,
) -> None:
    """Stop warm servers gracefully (SIGTERM: they finish what they are running, then exit)."""
    from diffrun.cli.model_options import model_ref
    from diffrun.client import registry

    if (model is None) == (not all_):
        raise UsageError("name a MODEL or give --all" if model is None else "give a MODEL or --all, not both")
    wanted = None if all_ else model_ref(model)
    found = [(paths, record) for paths, record in registry.records(registry.runtime_dir())
             if wanted is None or record.model in (wanted, model)]
    if wanted is not None and not found:
        raise UsageError(f"no warm server for {wanted}", hint="`diffrun ps` lists them")
    for paths, record in found:
        outcome = registry.stop(record, paths, wait)
        if outcome == "stopped":
            console.info(f"stopped {record.model} (pid {record.pid})")
        elif outcome == "killed":
            console.warn(f"{record.model} (pid {record.pid}) did not stop within {wait:g} s; killed it")


def register(app: typer.Typer) -> None:
    app.command("ps")(ps)
    app.command("stop")(stop)
