"""`diffrun env`: versions, devices, cache folder and offline mode, for bug reports and CI logs."""

from __future__ import annotations

import platform
from typing import Any

import typer
from rich.text import Text

from diffrun import __version__
from diffrun.cli import console, options


def env(json_out: options.Json = False) -> None:
    """Print diffrun, Python, torch, diffusers, transformers and Pillow versions, and the devices torch sees.

    A listing on stdout, one fact per line (`diffrun env | grep torch`); --json for one JSON object.
    """
    import PIL

    from diffrun import pipelines

    info = {"diffrun": __version__, "python": platform.python_version(), "platform": platform.platform(),
            "pillow": PIL.__version__}
    info.update(pipelines.environment())
    if json_out:
        console.emit_json(info)
        return
    rows = listing(info)
    width = max(len(key) for key, _ in rows)
    text = Text()
    for key, value in rows:
        text.append(key.ljust(width), style="bold").append(f"  {console.clean(value)}\n")
    text.rstrip()
    console.report(text)


def listing(info: dict[str, Any]) -> list[tuple[str, str]]:
    """`env`'s facts as (name, text) rows: one per library version and one per device, so grep finds each."""
    rows: list[tuple[str, str]] = []
    for key, value in info.items():
        if key == "versions":
            rows += [(name, version or "not installed") for name, version in value.items()]
        elif key == "devices":
            lines = [_device_line(d) for d in value] or ["none"]
            rows += [("devices" if i == 0 else "", line) for i, line in enumerate(lines)]
        elif isinstance(value, bool):
            rows.append((key, "yes" if value else "no"))
        else:
            rows.append((key, str(value)))
    return rows


def _device_line(device: dict[str, Any]) -> str:
    memory = device.get("memory_bytes")
    return f"{device.get('name')} ({device.get('type')}{f', {memory / 2**30:.1f} GiB' if memory else ''})"


def register(app: typer.Typer) -> None:
    app.command("env")(env)
