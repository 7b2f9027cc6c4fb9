"""`generate --server` and `generate --warm` against the real `diffrun serve` (tiny model, CPU, one thread):
the same files, pixels, recipes and exit codes as a cold run; one warm server for two one-liners at once;
dead and hung servers replaced; Ctrl-C; ps and stop; no torch in the client.

The servers are shared by the tests of this module (they run in file order): one `serve --port 0`, and
the warm server the first `--warm` one-liner starts in a private XDG_RUNTIME_DIR.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from clirun import cli_env, diffrun
from images import png
from PIL import Image, ImageChops


def _wait_file(path: Path, proc: subprocess.Popen, log: Path, limit: float = 120) -> None:
    until = time.monotonic() + limit
    while not path.exists():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < until, f"{path} never appeared"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    """The console script's environment: a private warm-server folder; every warm server stopped after."""
    xdg = tmp_path_factory.mktemp("xdg")
    environment = cli_env(OMP_NUM_THREADS="1", XDG_RUNTIME_DIR=str(xdg))
    yield environment
    diffrun("stop", "--all", "--wait", "10", env=environment)
    for record in (xdg / "diffrun").glob("*.json"):  # anything stop left behind
        with contextlib.suppress(OSError, ValueError, KeyError):
            os.kill(json.loads(record.read_text())["pid"], signal.SIGKILL)


@pytest.fixture(scope="module")
def tcp(tiny_sd: Path, env: dict, tmp_path_factory: pytest.TempPathFactory):
    """`diffrun serve` on a random loopback port (private addresses allowed: the inputs are on loopback): its URL."""
    folder = tmp_path_factory.mktemp("tcp")
    log = folder / "serve.log"
    proc = subprocess.Popen([sys.executable, "-m", "diffrun", "serve", "-m", str(tiny_sd), "--port", "0",
                             "--device", "cpu", "--threads", "1", "--allow-private",
                             "--ready-file", str(folder / "ready")],
                            env=env, stdout=subprocess.DEVNULL, stderr=open(log, "wb"))  # noqa: SIM115
    try:
        _wait_file(folder / "ready", proc, log)
        yield json.loads((folder / "ready").read_text())["url"]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _same_pixels(a: Path, b: Path) -> bool:
    with Image.open(a) as x, Image.open(b) as y:
        return x.size == y.size and ImageChops.difference(x.convert("RGB"), y.convert("RGB")).getbbox() is None


def _recipe(path: Path) -> dict:
    with Image.open(path) as image:
        return json.loads(image.info["diffrun"])


def _servers(env: dict) -> list[dict]:
    result = diffrun("ps", "--json", env=env)
    assert result.returncode == 0, result.stderr.decode()
    return [json.loads(line) for line in result.stdout.splitlines()]


def _ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stderr.decode()
    return result


def test_warm_and_server_equal_a_cold_run(tiny_sd: Path, env: dict, tcp: str, tmp_path: Path, server) -> None:
    """Text-to-image, image-to-image from a loopback URL, inpainting: --warm, --server (TCP) and --server
    unix:SOCKET (the warm server's) write the pixels and the recipe a cold run writes. The first two --warm
    one-liners start at once and start one server."""
    image = png(size=(64, 64), color=(200, 40, 90))
    url = server.add("/in.png", image, content_type="image/png")
    (tmp_path / "in.png").write_bytes(image)
    (tmp_path / "mask.png").write_bytes(png(size=(64, 64), color=(255, 255, 255)))
    runtime = ["-m", str(tiny_sd), "--device", "cpu", "--threads", "1"]
    cases = {
        "t2i": ["-p", "a cat", "-s", "7", "--steps", "2"],
        "i2i": ["-p", "paint", "-s", "3", "--steps", "2", "-i", url, "--strength", "0.5"],
        "inpaint": ["-p", "sofa", "-s", "5", "--steps", "2", "-i", str(tmp_path / "in.png"),
                    "--mask", str(tmp_path / "mask.png")],
    }
    both = [subprocess.Popen([sys.executable, "-m", "diffrun", "generate", "--warm", *runtime, *cases["t2i"],
                              "-o", str(tmp_path / f"t2i-warm{i}.png")], env=env, stderr=subprocess.PIPE)
            for i in (1, 2)]
    for proc in both:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err.decode()
    servers = _servers(env)
    assert len(servers) == 1 and servers[0]["status"] == "ready"
    assert servers[0]["settings"] == "cpu auto threads=1"
    table = _ok(diffrun("ps", env=env)).stdout.decode()  # the report: on stdout, one row a server
    assert "SETTINGS" in table.splitlines()[0] and "cpu auto threads=1" in table and str(tiny_sd) in table
    command = Path(f"/proc/{servers[0]['pid']}/cmdline").read_bytes().split(b"\0")
    assert command[1:4] == [b"-m", b"diffrun", b"serve"], command  # what `pgrep -af 'diffrun serve'` finds
    unix = f"unix:{servers[0]['socket']}"
    for name, args in cases.items():
        cold = tmp_path / f"{name}-cold.png"
        _ok(diffrun("generate", *runtime, *args, "-o", str(cold), env=env))
        outputs = {"warm": ["--warm", *runtime], "tcp": ["--server", tcp], "unix": ["--server", unix]}
        if name == "t2i":
            outputs = {"warm1": [], "warm2": [], "tcp": outputs["tcp"]}
        for label, how in outputs.items():
            out = tmp_path / f"{name}-{label}.png"
            if how:
                _ok(diffrun("generate", *how, *args, "-o", str(out), env=env))
            assert _same_pixels(cold, out), (name, label)
            assert _recipe(out) == _recipe(cold), (name, label)  # inputs by path/URL and sha256, as a cold run
    assert len(_servers(env)) == 1


def test_stdout_json_and_errors_as_a_local_run(env: dict, tcp: str, tmp_path: Path, server) -> None:
    out = _ok(diffrun("generate", "--server", tcp, "-p", "x", "-s", "1", "--steps", "1", "-o", "-", env=env))
    assert out.stdout.startswith(b"\x89PNG")
    summary = json.loads(_ok(diffrun("generate", "--server", tcp, "-p", "x", "-s", "1", "--steps", "1", "--json",
                                     "-o", str(tmp_path / "{seed}.png"), env=env)).stdout)
    assert summary["outputs"] == [str(tmp_path / "1.png")] and summary["task"] == "text-to-image"
    bad_arg = diffrun("generate", "--server", tcp, "-p", "x", "--param", "bogus_arg=1", "-o", str(tmp_path / "a.png"),
                      env=env)
    assert bad_arg.returncode == 2 and b"bogus_arg" in bad_arg.stderr and b"Traceback" not in bad_arg.stderr
    (tmp_path / "bad.png").write_bytes(b"not an image")
    bad_input = diffrun("generate", "--server", tcp, "-p", "x", "-i", str(tmp_path / "bad.png"),
                        "-o", str(tmp_path / "b.png"), env=env)
    assert bad_input.returncode == 3, bad_input.stderr.decode()  # a local input: checked here, before sending
    missing = server.add("/gone.png", b"", status=404)
    remote_input = diffrun("generate", "--server", tcp, "-p", "x", "-i", missing, "--retries", "0",
                           "-o", str(tmp_path / "c.png"), env=env)
    assert remote_input.returncode == 3, remote_input.stderr.decode()  # the server's answer, mapped back
    assert remote_input.stderr.decode().startswith(f"error: {missing}: ")
    assert not any((tmp_path / name).exists() for name in ("a.png", "b.png", "c.png"))


def test_unreachable_server_is_exit_69(env: dict, tmp_path: Path) -> None:
    for url in (f"unix:{tmp_path / 'none.sock'}", "http://127.0.0.1:9"):
        result = diffrun("generate", "--server", url, "-p", "x", "-o", str(tmp_path / "x.png"), env=env)
        assert result.returncode == 69, result.stderr.decode()
        assert result.stderr.decode().startswith("error: server ")
    # a missing local input is that input's failure (exit 3), found before the server is looked for
    missing = diffrun("generate", "--server", "http://127.0.0.1:9", "-p", "x", "-i", str(tmp_path / "nope.jpg"),
                      "-o", str(tmp_path / "y.png"), env=env)
    assert missing.returncode == 3 and b"nope.jpg" in missing.stderr, missing.stderr.decode()


def test_the_client_never_imports_torch(env: dict, tcp: str, tmp_path: Path) -> None:
    code = ("import sys\nfrom diffrun.cli.app import main\n"
            f"rc = main(['generate', '--server', {tcp!r}, '-p', 'x', '-s', '2', '--steps', '1',"
            f" '-o', {str(tmp_path / 'n.png')!r}])\n"
            "print(rc, [m for m in ('torch', 'diffusers', 'fastapi', 'transformers') if m in sys.modules])\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env, timeout=120)
    assert result.stdout.decode().split("\n")[0] == "0 []", result.stderr.decode()


def test_batch_on_the_warm_server_as_the_local_engine(tiny_sd: Path, env: dict, tcp: str, tmp_path: Path) -> None:
    rows = [{"id": "a", "prompt": "a cat", "seed": 1}, {"id": "b", "prompt": "a dog", "seed": 2},
            {"id": "c", "prompt": "x", "params": {"bogus": 1}}, {"id": "d", "prompt": "y", "image": "nothere.png"}]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    runtime = ["-m", str(tiny_sd), "--device", "cpu", "--threads", "1", "--steps", "2"]
    cold = diffrun("batch", str(manifest), *runtime, "-o", str(tmp_path / "cold"), "-q", env=env)
    warm = diffrun("batch", str(manifest), "--warm", *runtime, "--concurrency", "2", "-o", str(tmp_path / "warm"),
                   "-q", env=env)
    assert cold.returncode == warm.returncode == 1, warm.stderr.decode()
    for name in ("a", "b"):
        assert _same_pixels(tmp_path / "cold" / f"{name}.png", tmp_path / "warm" / f"{name}.png")
        assert _recipe(tmp_path / "cold" / f"{name}.png") == _recipe(tmp_path / "warm" / f"{name}.png")

    def statuses(folder: str) -> dict[str, tuple[str, int | None]]:
        lines = (tmp_path / folder / "results.jsonl").read_text().splitlines()
        return {r["id"]: (r["status"], (r.get("error") or {}).get("exit")) for r in map(json.loads, lines)}

    assert statuses("warm") == statuses("cold") == {"a": ("ok", None), "b": ("ok", None), "c": ("failed", 2),
                                                    "d": ("failed", 3)}
    again = diffrun("batch", str(manifest), "--warm", *runtime, "-o", str(tmp_path / "warm"), "--json", env=env)
    assert again.returncode == 1 and {json.loads(line)["status"] for line in again.stdout.splitlines()} == {"skipped"}
    ray = diffrun("batch", str(manifest), "--server", tcp, "--engine", "ray", "-o", str(tmp_path / "r"), env=env)
    assert ray.returncode == 2 and b"--engine ray" in ray.stderr


def test_ctrl_c_cancels_and_exits_130(tiny_sd: Path, env: dict, tmp_path: Path) -> None:
    out = tmp_path / "long.png"
    proc = subprocess.Popen([sys.executable, "-m", "diffrun", "generate", "--warm", "-m", str(tiny_sd), "--device",
                             "cpu", "--threads", "1", "-p", "x", "--steps", "500", "--progress", "-o", str(out)],
                            env=env, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    for line in proc.stderr:
        if b"steps" in line:  # denoising has started on the server
            break
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=30)
    assert proc.returncode == 130, rest.decode()
    assert b"interrupted" in rest and not out.exists()
    socket_path = _servers(env)[0]["socket"]
    until = time.monotonic() + 20  # the server stops the job at its next step and stays up for the next one
    while _in_flight(socket_path) and time.monotonic() < until:
        time.sleep(0.2)
    assert _in_flight(socket_path) == 0


def _in_flight(socket_path: str) -> int:
    from diffrun.client.remote import health
    from diffrun.client.transport import connect

    server = connect(f"unix:{socket_path}")
    try:
        return int(health(server)[1]["in_flight"])
    finally:
        server.close()


def test_dead_and_hung_servers_are_replaced(tiny_sd: Path, env: dict, tmp_path: Path) -> None:
    args = ["generate", "--warm", "-m", str(tiny_sd), "--device", "cpu", "--threads", "1", "-p", "x", "--steps", "1"]
    first = _servers(env)[0]
    os.kill(first["pid"], signal.SIGKILL)
    replaced = _ok(diffrun(*args, "-o", str(tmp_path / "a.png"), env=env))
    assert f"(pid {first['pid']}) was killed (signal 9); starting a new one" in replaced.stderr.decode()
    second = _servers(env)[0]
    assert second["pid"] != first["pid"]
    os.kill(second["pid"], signal.SIGSTOP)  # alive, listening, never answering
    try:
        hung = _ok(diffrun(*args, "-o", str(tmp_path / "b.png"), env=env))
    finally:
        with contextlib.suppress(ProcessLookupError):  # the client killed it, as it should
            os.kill(second["pid"], signal.SIGCONT)
    assert f"(pid {second['pid']}) did not answer" in hung.stderr.decode()
    [third] = _servers(env)
    assert third["pid"] not in (first["pid"], second["pid"])


def test_stop_and_a_model_that_cannot_load(env: dict, tmp_path: Path) -> None:
    [running] = _servers(env)
    stopped = _ok(diffrun("stop", "--all", env=env))
    assert f"(pid {running['pid']})" in stopped.stderr.decode()
    assert _servers(env) == [] and not Path(running["socket"]).exists()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    args = ["generate", "-m", str(broken), "--device", "cpu", "-p", "x", "-o", str(tmp_path / "x.png")]
    cold, warm = diffrun(*args, env=env), diffrun(args[0], "--warm", *args[1:], env=env)
    assert cold.returncode == warm.returncode == 4, warm.stderr.decode()
    assert warm.stderr.decode().splitlines()[0] == cold.stderr.decode().splitlines()[0]  # the server's own message
    assert _servers(env) == []
