"""`generate --server`: the same files, pixels, recipes and exit codes as a cold run; no torch in the client.

The server here is tests/client_standin.py (the protocol's client-facing part on the engine's code)
until the server branch is merged; the client under test is the real console script.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from clirun import cli_env, diffrun
from images import png
from PIL import Image, ImageChops

STANDIN = Path(__file__).with_name("client_standin.py")
ENV = cli_env(OMP_NUM_THREADS="1")


def _start(args: list[str], ready: Path, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, str(STANDIN), *args, "--ready-file", str(ready)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=open(log, "wb"))  # noqa: SIM115
    until = time.monotonic() + 120
    while not ready.exists():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < until, "stand-in server did not start"
        time.sleep(0.1)
    return proc


@pytest.fixture(scope="module")
def served(tiny_sd: Path, tmp_path_factory: pytest.TempPathFactory):
    """One stand-in server on TCP and one on a Unix socket, shared by the tests here."""
    folder = tmp_path_factory.mktemp("served")
    tcp = _start(["-m", str(tiny_sd), "--port-file", str(folder / "port")], folder / "tcp.ready", folder / "tcp.log")
    uds = _start(["-m", str(tiny_sd), "--uds", str(folder / "s.sock")], folder / "uds.ready", folder / "uds.log")
    try:
        yield {"tcp": f"http://127.0.0.1:{(folder / 'port').read_text()}", "uds": f"unix:{folder / 's.sock'}"}
    finally:
        for proc in (tcp, uds):
            proc.kill()
            proc.wait()


def _pixels_equal(a: Path, b: Path) -> bool:
    with Image.open(a) as x, Image.open(b) as y:
        return x.size == y.size and ImageChops.difference(x.convert("RGB"), y.convert("RGB")).getbbox() is None


def _recipe(path: Path) -> dict:
    with Image.open(path) as image:
        return json.loads(image.info["diffrun"])


def test_same_pixels_and_recipe_as_a_cold_run(served, tiny_sd: Path, tmp_path: Path, server) -> None:
    """Text-to-image (TCP), image-to-image from a loopback URL (Unix socket), inpainting (local files as bytes)."""
    image = png(size=(64, 64), color=(200, 40, 90))
    url = server.add("/in.png", image, content_type="image/png")
    (tmp_path / "in.png").write_bytes(image)
    (tmp_path / "mask.png").write_bytes(png(size=(64, 64), color=(255, 255, 255)))
    cases = {
        "t2i": (served["tcp"], ["-p", "a cat", "-s", "7"]),
        "i2i": (served["uds"], ["-p", "paint", "-s", "3", "-i", url, "--strength", "0.5"]),
        "inpaint": (served["tcp"], ["-p", "sofa", "-s", "5", "-i", str(tmp_path / "in.png"),
                                    "--mask", str(tmp_path / "mask.png")]),
    }
    for name, (address, args) in cases.items():
        cold = diffrun("generate", "-m", str(tiny_sd), "--device", "cpu", "--threads", "1", "--steps", "2", *args,
                       "-o", str(tmp_path / f"{name}-cold.png"), env=ENV)
        assert cold.returncode == 0, cold.stderr.decode()
        warm = diffrun("generate", "--server", address, "--steps", "2", *args, "-o", str(tmp_path / f"{name}.png"),
                       env=ENV)
        assert warm.returncode == 0, warm.stderr.decode()
        assert _pixels_equal(tmp_path / f"{name}-cold.png", tmp_path / f"{name}.png"), name
        cold_recipe, remote_recipe = _recipe(tmp_path / f"{name}-cold.png"), _recipe(tmp_path / f"{name}.png")
        assert remote_recipe == cold_recipe, name  # inputs recorded by path/URL and sha256, as a local run does


def test_stdout_and_json_as_a_local_run(served, tmp_path: Path) -> None:
    out = diffrun("generate", "--server", served["tcp"], "-p", "x", "-s", "1", "--steps", "1", "-o", "-", env=ENV)
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.startswith(b"\x89PNG")
    js = diffrun("generate", "--server", served["uds"], "-p", "x", "-s", "1", "--steps", "1", "--json",
                 "-o", str(tmp_path / "{seed}.png"), env=ENV)
    assert js.returncode == 0, js.stderr.decode()
    summary = json.loads(js.stdout)
    assert summary["status"] == "ok" and summary["outputs"] == [str(tmp_path / "1.png")]
    assert summary["task"] == "text-to-image" and summary["seeds"] == [1]


def test_server_errors_keep_their_exit_codes(served, tmp_path: Path) -> None:
    bad_arg = diffrun("generate", "--server", served["tcp"], "-p", "x", "--param", "bogus_arg=1",
                      "-o", str(tmp_path / "a.png"), env=ENV)
    assert bad_arg.returncode == 2, bad_arg.stderr.decode()
    assert b"bogus_arg" in bad_arg.stderr and b"Traceback" not in bad_arg.stderr
    (tmp_path / "bad.png").write_bytes(b"not an image")
    bad_input = diffrun("generate", "--server", served["tcp"], "-p", "x", "-i", str(tmp_path / "bad.png"),
                        "-o", str(tmp_path / "b.png"), env=ENV)
    assert bad_input.returncode == 3, bad_input.stderr.decode()
    assert not (tmp_path / "a.png").exists() and not (tmp_path / "b.png").exists()


def test_unreachable_server_is_exit_69(tmp_path: Path) -> None:
    for url in (f"unix:{tmp_path / 'none.sock'}", "http://127.0.0.1:9"):
        result = diffrun("generate", "--server", url, "-p", "x", "-o", str(tmp_path / "x.png"), env=ENV)
        assert result.returncode == 69, result.stderr.decode()
        lines = result.stderr.decode().splitlines()
        assert lines[0].startswith("error: server ") and len(lines) <= 2


def test_the_client_never_imports_torch(served, tmp_path: Path) -> None:
    code = (
        "import sys\nfrom diffrun.cli.app import main\n"
        f"rc = main(['generate', '--server', {served['tcp']!r}, '-p', 'x', '-s', '2', '--steps', '1',"
        f" '-o', {str(tmp_path / 'n.png')!r}])\n"
        "heavy = [m for m in ('torch', 'diffusers', 'fastapi', 'transformers') if m in sys.modules]\n"
        "print(rc, heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, env=ENV, timeout=120)
    assert result.stdout.decode().split("\n")[0] == "0 []", result.stderr.decode()
