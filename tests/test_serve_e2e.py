"""`diffrun serve` end to end: one real server (tiny model, random port) for the routes, the errors,
micro-batches, the queue and streaming; the `openai` client and raw HTTP."""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time

import pytest
import requests
from clirun import diffrun
from images import data_uri, png
from PIL import Image
from serving import Served

pytestmark = pytest.mark.slow
STEPS = {"num_inference_steps": 2}


@pytest.fixture(scope="module")
def served(tiny_sd):
    srv = Served(tiny_sd, "--max-queue", "2", "--max-batch", "4", "--max-input-bytes", "200KB").wait_ready()
    yield srv
    srv.stop()


def _image(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def _error(response: requests.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"}, body
    return body["error"]


def test_health_models_metrics(served, tiny_sd):
    health = served.get("/health").json()
    assert health["status"] == "ok" and health["pipeline"] == "StableDiffusionPipeline"
    assert health["max_batch"] == 4 and health["max_queue"] == 2 and health["runtime"]["threads"] == 1
    assert served.get("/v1/models").json()["data"][0]["id"] == str(tiny_sd)
    text = served.get("/metrics").text
    assert 'diffrun_requests_total{route="GET /health",status="200"}' in text
    assert "diffrun_queue_depth 0" in text and "diffrun_request_seconds_bucket" in text


def test_openai_generate_equals_generate_pixels(served, tiny_sd, tmp_path):
    from openai import OpenAI

    client = OpenAI(base_url=served.url + "/v1", api_key="unused")
    result = client.images.generate(prompt="a red fox", n=2, size="64x64", extra_body={"seed": 7, **STEPS})
    assert len(result.data) == 2
    item = result.data[1].model_extra["diffrun"]
    assert item["seed"] == 8 and item["index"] == 1 and item["task"] == "text-to-image"
    saved = tmp_path / "served.png"
    saved.write_bytes(base64.b64decode(result.data[1].b64_json))
    # the same seed through the CLI: the same pixels; and the served file carries its recipe (--from works)
    run = diffrun("generate", "-m", str(tiny_sd), "-p", "a red fox", "--seed", "7", "--num-images", "2",
                  "-W", "64", "-H", "64", "--steps", "2", "--threads", "1", "-o", str(tmp_path / "cli-{index}.png"))
    assert run.returncode == 0, run.stderr.decode()
    assert Image.open(saved).tobytes() == Image.open(tmp_path / "cli-1.png").tobytes()
    from diffrun.outputs import read_recipe

    recipe = read_recipe(saved)
    assert recipe["seed"] == 7 and recipe["index"] == 1 and recipe["prompt"] == "a red fox"


def test_edits_upload_data_uri_and_url_result(served):
    from openai import OpenAI

    client = OpenAI(base_url=served.url + "/v1", api_key="unused")
    upload = png((64, 64), (200, 30, 30))
    edited = client.images.edit(image=("in.png", upload, "image/png"), prompt="blue", size="64x64",
                                extra_body={"seed": 1, "strength": 0.5, **STEPS})
    assert edited.data[0].model_extra["diffrun"]["task"] == "image-to-image"
    # JSON body with a data URI, mask too: inpainting; response_format=url then GET the bytes
    body = {"prompt": "x", "image": data_uri(upload), "mask": data_uri(png((64, 64), (255, 255, 255))),
            "response_format": "url", "output_format": "webp", "seed": 2, **STEPS}
    answer = served.post("/v1/images/edits", json=body)
    assert answer.status_code == 200, answer.text
    item = answer.json()["data"][0]
    assert item["diffrun"]["task"] == "inpainting" and "b64_json" not in item
    content = requests.get(item["url"], timeout=30)
    assert content.headers["content-type"] == "image/webp" and Image.open(io.BytesIO(content.content)).format == "WEBP"
    assert served.get("/v1/images/img_nosuchid/content").status_code == 404
    lines = served.get("/metrics").text.splitlines()
    fetched = [line for line in lines if line.startswith("diffrun_input_bytes_total")]
    assert int(fetched[0].split()[1]) >= 2 * len(upload)  # the upload and the data URI, at least


@pytest.mark.parametrize(("body", "status", "code", "exit_code", "words"), [
    ({"prompt": "x", "params": {"bogus_arg": 1}}, 400, "usage", 2, "bogus_arg"),
    ({"prompt": "x", "image": "data:image/png;base64,!!notbase64"}, 400, None, 3, "base64"),
    ({"prompt": "x", "image": "http://127.0.0.1:9/x.png"}, 400, None, 3, "127.0.0.1"),
    ({"prompt": "x", "image": "/etc/passwd"}, 400, "invalid_field", 2, "not paths"),
    ({"prompt": "x", "model": "someone/else"}, 400, "invalid_field", 2, "model"),
    ({"prompt": "x", "background": "transparent"}, 400, "invalid_field", 2, "alpha"),
    ({"prompt": "x", "size": "64"}, 400, "invalid_field", 2, "size"),
])
def test_errors_are_openai_shaped_with_cli_codes(served, body, status, code, exit_code, words):
    answer = served.post("/v1/images/edits" if "image" in body else "/v1/images/generations", json=body)
    error = _error(answer)
    assert answer.status_code == status, error
    assert error["exit"] == exit_code and words in error["message"] and "Traceback" not in answer.text
    if code:
        assert error["code"] == code


def test_private_address_refused_by_default(served, server):
    url = server.add("/ok.png", body=png((64, 64)), content_type="image/png")
    error = _error(served.post("/v1/images/edits", json={"prompt": "x", "image": url, **STEPS}))
    assert error["exit"] == 3 and "private" in error["message"] + str(error["hint"])
    assert server.count("/ok.png") == 0


def test_too_large_upload(served):
    big = png((64, 64)) + b"\0" * 300_000  # over --max-input-bytes 200KB
    answer = served.post("/v1/images/edits", files={"image": ("big.png", big, "image/png")}, data={"prompt": "x"})
    error = _error(answer)
    assert answer.status_code in (400, 413) and error["code"] == "too_large" and error["exit"] == 3
    # a whole body over 4 x --max-input-bytes + 1 MiB: 413 from its Content-Length, before it is read
    huge = served.post("/v1/images/generations", data=b"{" + b" " * 2_000_000 + b"}",
                       headers={"Content-Type": "application/json"})
    assert huge.status_code == 413 and _error(huge)["code"] == "too_large"
    chunked = served.post("/v1/images/generations", data=iter([b"{", b" " * 1_000_000, b" " * 1_000_000, b"}"]),
                          headers={"Content-Type": "application/json"})  # no Content-Length: counted as read
    assert chunked.status_code == 413 and _error(chunked)["code"] == "too_large"


def test_ndjson_progress_stream(served):
    answer = served.post("/v1/images/generations", json={"prompt": "x", "seed": 3, "num_inference_steps": 3},
                         headers={"Accept": "application/x-ndjson"}, stream=True)
    events = [json.loads(line) for line in answer.iter_lines() if line]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "queued" and "step" in kinds and kinds[-1] == "done", kinds
    assert [e["step"] for e in events if e["event"] == "step"] == [1, 2, 3]
    assert events[-1]["response"]["data"][0]["diffrun"]["seed"] == 3


def _slow(served, results: list, key: str, steps: int = 40) -> threading.Thread:
    def go() -> None:
        results.append((key, served.post("/v1/images/generations",
                                         json={"prompt": "slow", "seed": 1, "num_inference_steps": steps})))
    thread = threading.Thread(target=go)
    thread.start()
    return thread


def _wait_running(served) -> None:
    until = time.monotonic() + 30
    while served.get("/health").json()["in_flight"] == 0 and time.monotonic() < until:
        time.sleep(0.05)


def test_queue_full_then_micro_batch_keeps_each_seed(served):
    results: list = []
    first = _slow(served, results, "slow")
    _wait_running(served)
    body = {"prompt": "batched", "size": "64x64", **STEPS}
    queued = [threading.Thread(target=lambda s=s: results.append(
        (s, served.post("/v1/images/generations", json={**body, "seed": s})))) for s in (11, 12)]
    for thread in queued:
        thread.start()
    until = time.monotonic() + 30
    while served.get("/health").json()["queued"] < 2 and time.monotonic() < until:
        time.sleep(0.02)
    full = served.post("/v1/images/generations", json={**body, "seed": 13})
    assert full.status_code == 429 and full.headers["Retry-After"] and _error(full)["code"] == "queue_full"
    for thread in (first, *queued):
        thread.join(120)
    answers = dict(results)
    batched = {s: answers[s].json()["data"][0] for s in (11, 12)}
    assert all(item["diffrun"]["batch"] == 2 for item in batched.values())
    alone = served.post("/v1/images/generations", json={**body, "seed": 12}).json()["data"][0]
    assert alone["diffrun"]["batch"] == 1
    # its own generator: the same noise as alone (a batched matmul may round a last bit differently on CPU)
    import numpy as np

    a, b = (np.asarray(_image(x["b64_json"]), dtype=int) for x in (alone, batched[12]))
    other = np.asarray(_image(batched[11]["b64_json"]), dtype=int)
    assert np.abs(a - b).max() <= 2 and np.abs(a - other).max() > 10


def test_a_batch_size_hint_keeps_compatible_requests_apart(served):
    """A `batch_size` hint (what `batch --server --batch-size N` sends) caps the micro-batch a request
    runs in below --max-batch: two compatible queued requests that would share a call run one by one."""
    results: list = []
    first = _slow(served, results, "slow", steps=20)
    _wait_running(served)
    body = {"prompt": "hinted", "size": "64x64", "batch_size": 1, **STEPS}
    queued = [threading.Thread(target=lambda s=s: results.append(
        (s, served.post("/v1/images/generations", json={**body, "seed": s})))) for s in (21, 22)]
    for thread in queued:
        thread.start()
    until = time.monotonic() + 30
    while served.get("/health").json()["queued"] < 2 and time.monotonic() < until:
        time.sleep(0.02)
    for thread in (first, *queued):
        thread.join(120)
    answers = dict(results)
    assert [answers[s].json()["data"][0]["diffrun"]["batch"] for s in (21, 22)] == [1, 1]
    bad = served.post("/v1/images/generations", json={**body, "batch_size": 0})
    assert bad.status_code == 400 and _error(bad)["param"] == "batch_size"


def test_client_gone_before_start_is_dropped(served):
    results: list = []
    first = _slow(served, results, "slow")
    _wait_running(served)
    host, port = served.url.removeprefix("http://").rsplit(":", 1)
    payload = json.dumps({"prompt": "gone", "seed": 5, **STEPS}).encode()
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload))
        until = time.monotonic() + 30
        while served.get("/health").json()["queued"] < 1 and time.monotonic() < until:
            time.sleep(0.02)
    until = time.monotonic() + 30  # gone: it leaves the queue at once, not when the worker reaches it
    while served.get("/health").json()["queued"] and time.monotonic() < until:
        time.sleep(0.05)
    assert first.is_alive() and served.get("/health").json()["queued"] == 0
    first.join(120)
    assert results[0][1].status_code == 200
    until = time.monotonic() + 10
    while "diffrun_requests_dropped_total 1" not in served.get("/metrics").text and time.monotonic() < until:
        time.sleep(0.05)
    assert "diffrun_requests_dropped_total 1" in served.get("/metrics").text
