"""`diffrun env`: versions, devices, cache folder and offline mode, for bug reports and CI logs."""

from __future__ import annotations

import platform

import typer
from rich.table import Table

from diffrun import __version__
from diffrun.cli import console, options


def env(json_out: options.Json = False) -> None:
    """Print diffrun, Python, torch, diffusers, transformers and Pillow versions, and the devices torch sees."""
    import PIL

    from diffrun import pipelines

    info = {"diffrun": __version__, "python": platform.python_version(), "platform": platform.platform(),
            "pillow": PIL.__version__}
    info.update(pipelines.environment())
    if json_out:
        console.emit_json(info)
        return
    table = Table(box=None, show_header=False)
    for key, value in info.items():
        if key == "devices":
            value = ", ".join(_device_line(d) for d in value) or "none"
        table.add_row(f"[bold]{key}[/bold]", str(value))
    console.err.print(table)


def _device_line(device: dict) -> str:
    memory = device.get("memory_bytes")
    return f"{device.get('name')} ({device.get('type')}{f', {memory / 2**30:.1f} GiB' if memory else ''})"


def register(app: typer.Typer) -> None:
    app.command("env")(env)
