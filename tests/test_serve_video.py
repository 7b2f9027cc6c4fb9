"""`diffrun serve` on a video model, over a Unix socket: /v1/videos jobs, the ready file, raw frames."""

from __future__ import annotations

import http.client
import json
import socket
import stat
import time
import uuid

import pytest
from images import png
from serving import Served

pytestmark = pytest.mark.slow


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=120)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(120)
        self.sock.connect(self.path)


def call(path: str, method: str, route: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, bytes, str]:
    conn = UnixConnection(path)
    try:
        conn.request(method, route, body=body, headers=headers or {})
        answer = conn.getresponse()
        return answer.status, answer.read(), answer.getheader("content-type") or ""
    finally:
        conn.close()


def multipart(fields: dict[str, str], files: dict[str, bytes]) -> tuple[bytes, dict[str, str]]:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts += [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"; filename="{k}.png"\r\n'
              f"Content-Type: image/png\r\n\r\n".encode() + v + b"\r\n" for k, v in files.items()]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), {
        "Content-Type": f"multipart/form-data; boundary={boundary}"}


def test_video_jobs_over_a_unix_socket(tiny_svd, tmp_path):
    sock, ready = tmp_path / "d.sock", tmp_path / "ready.json"
    srv = Served(tiny_svd, "--uds", str(sock), "--ready-file", str(ready)).wait_ready()
    try:
        assert json.loads(ready.read_text()) == {"pid": srv.proc.pid, "url": f"unix:{sock}"}
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        body, headers = multipart({"seconds": "1", "fps": "4", "num_inference_steps": "2", "seed": "3"},
                                  {"input_reference": png((64, 64), (200, 0, 0))})
        status, raw, _ = call(str(sock), "POST", "/v1/videos", body, headers)
        assert status == 200, raw
        job = json.loads(raw)
        assert job["object"] == "video" and job["status"] in ("queued", "in_progress")
        until = time.monotonic() + 60
        while job["status"] not in ("completed", "failed") and time.monotonic() < until:
            time.sleep(0.2)
            job = json.loads(call(str(sock), "GET", f"/v1/videos/{job['id']}")[1])
        assert job["status"] == "completed" and job["progress"] == 100, job
        assert job["diffrun"]["frames"] == 4 and job["diffrun"]["task"] == "image-to-video"  # 1 s x 4 fps
        status, video, kind = call(str(sock), "GET", f"/v1/videos/{job['id']}/content")
        assert status == 200 and kind == "video/mp4" and video[4:8] == b"ftyp"
        listed = json.loads(call(str(sock), "GET", "/v1/videos")[1])["data"]
        assert [v["id"] for v in listed] == [job["id"]]
        assert call(str(sock), "DELETE", f"/v1/videos/{job['id']}")[0] == 200
        assert call(str(sock), "GET", f"/v1/videos/{job['id']}")[0] == 404
        # the images routes refuse a video task, unless raw (the diffrun client): frames as PNGs
        body, headers = multipart({"num_inference_steps": "2"}, {"image": png((64, 64))})
        status, raw, _ = call(str(sock), "POST", "/v1/images/edits", body, headers)
        assert status == 400 and json.loads(raw)["error"]["code"] == "unsupported_task"
        body, headers = multipart({"num_inference_steps": "2", "raw": "true", "params": '{"num_frames": 2}'},
                                  {"image": png((64, 64))})
        status, raw, _ = call(str(sock), "POST", "/v1/images/edits", body, headers)
        item = json.loads(raw)["data"][0]
        assert status == 200 and len(item["frames_b64"]) == 2 and "b64_json" not in item
    finally:
        assert srv.stop() == 0
    assert not sock.exists()
