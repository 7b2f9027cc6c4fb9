"""`diffrun serve` start-up, API key and stop: a server of its own (key, private addresses allowed),
SIGTERM with a request in flight; start-up refusals; the rest of diffrun never imports FastAPI."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
import requests
from clirun import cli_env, diffrun
from images import png
from serving import Served

pytestmark = pytest.mark.slow
KEY = "s3cret-key"


def test_key_private_urls_and_sigterm_drain(tiny_sd, server):
    srv = Served(tiny_sd, "--api-key", KEY, "--allow-private", "--drain-timeout", "8", "--json").wait_ready()
    try:
        auth = {"Authorization": f"Bearer {KEY}"}
        assert srv.get("/health").status_code == 200  # open without the key
        wrong = srv.get("/v1/models", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "unauthorized"
        assert srv.get("/metrics").status_code == 401
        ok = server.add("/in.png", body=png((64, 64)), content_type="image/png")
        answer = srv.post("/v1/images/edits", headers=auth,
                          json={"prompt": "x", "image": ok, "num_inference_steps": 2, "seed": 1})
        assert answer.status_code == 200, answer.text
        assert server.count("/in.png") == 1
        missing = srv.post("/v1/images/edits", headers=auth,
                           json={"prompt": "x", "image": server.url("/nope.png"), "num_inference_steps": 2})
        error = missing.json()["error"]
        assert missing.status_code == 400 and error["exit"] == 3 and "404" in error["message"]
        # a slow URL input does not hold back a request queued after it
        slow = server.add("/slow.png", body=png((64, 64)), content_type="image/png", always="slow", slow=3)
        done: list[str] = []
        late = threading.Thread(target=lambda: done.append(srv.post("/v1/images/edits", headers=auth, json={
            "prompt": "x", "image": slow, "num_inference_steps": 2}).json()["data"][0]["diffrun"]["task"]))
        late.start()
        while server.count("/slow.png") == 0:
            time.sleep(0.02)
        quick = srv.post("/v1/images/generations", headers=auth, json={"prompt": "x", "num_inference_steps": 2})
        done.append(quick.json()["data"][0]["diffrun"]["task"])
        late.join(60)
        assert done == ["text-to-image", "image-to-image"]
        # SIGTERM with a request in flight: it finishes (200), the listener closes, exit 0
        results: list = []
        thread = threading.Thread(target=lambda: results.append(srv.post(
            "/v1/images/generations", headers=auth, json={"prompt": "slow", "seed": 1, "num_inference_steps": 40})))
        thread.start()
        assert srv._wait_for(r'("route": "POST /v1/images/edits", "status": 200)')  # one JSON log line a request
        until = time.monotonic() + 30
        while srv.get("/health").json().get("in_flight", 0) == 0 and time.monotonic() < until:
            time.sleep(0.05)
        assert srv.get("/health").json()["in_flight"] == 1
        # ... and one queued behind it that cannot finish within --drain-timeout: 503
        overlong: list = []
        behind = threading.Thread(target=lambda: overlong.append(srv.post(
            "/v1/images/generations", headers=auth, json={"prompt": "long", "num_inference_steps": 900})))
        behind.start()
        while srv.get("/health").json().get("queued", 0) == 0 and time.monotonic() < until:
            time.sleep(0.02)
        srv.proc.terminate()
        thread.join(120)
        behind.join(120)
        assert results and results[0].status_code == 200, results
        assert overlong[0].status_code == 503 and overlong[0].json()["error"]["code"] == "unavailable"
        assert srv.proc.wait(60) == 0, srv.stderr()
        with pytest.raises(requests.ConnectionError):
            srv.get("/health", timeout=5)
    finally:
        srv.stop()


def test_non_loopback_without_key_refused(tiny_sd):
    run = diffrun("serve", "-m", str(tiny_sd), "--host", "0.0.0.0", "--port", "0")
    assert run.returncode == 2
    assert b"--api-key" in run.stderr and b"listening" not in run.stderr


def test_model_that_cannot_load_exits_4(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    run = diffrun("serve", "-m", str(broken), "--port", "0", "--threads", "1")
    assert run.returncode == 4, run.stderr.decode()
    assert run.stderr.decode().strip().splitlines()[-1].startswith("error:")


def test_help_and_generate_never_import_fastapi():
    code = ("import sys; from diffrun.cli.app import main; main(['--help']); main(['serve', '--help']); "
            "main(['generate', '-m', '/nonexistent/model', '-p', 'x']); "
            "print(sorted(m for m in ('fastapi', 'uvicorn', 'starlette', 'multipart') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, env=cli_env(), timeout=60)
    assert out.stdout.decode().strip().splitlines()[-1] == "[]", out.stderr.decode()


def test_keep_alive_exits_when_idle_and_probes_are_not_activity(tiny_sd):
    """--keep-alive: the server exits 0 by itself after that long without work. /health polls (diffrun ps,
    the --warm client's readiness checks) look at it without using it: they must not keep it alive."""
    served = Served(tiny_sd, "--keep-alive", "3").wait_ready()
    try:
        idle = []
        until = time.monotonic() + 60
        while served.proc.poll() is None and time.monotonic() < until:
            try:
                health = served.get("/health", timeout=5).json()
            except (requests.RequestException, ValueError):  # it has just closed its socket
                break
            if "idle_seconds" in health:  # not once it is stopping ({"status": "draining"})
                idle.append(health["idle_seconds"])
            time.sleep(0.3)
        assert served.proc.wait(30) == 0, served.stderr()
        assert idle and max(idle) > 1.0, idle  # the polls did not reset the idle time
    finally:
        served.stop()
