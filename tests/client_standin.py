"""A stand-in for `diffrun serve`, for the client tests while the server branch is not merged.

It speaks the part of /work/prompts/protocol.md the client uses (GET /health; POST
/v1/images/generations and /v1/images/edits as JSON with `raw: true`, NDJSON progress, error bodies
with `exit`), on TCP or a Unix socket, with the same engine code a local run uses. Run it as
`python tests/client_standin.py -m MODEL (--port N | --uds PATH) [--ready-file F] [--port-file F]`.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from diffrun import pipelines
from diffrun.cli.options import parse_color
from diffrun.engine import jobrun
from diffrun.errors import DiffrunError
from diffrun.jobs import Job
from diffrun.loaders import FetchPolicy

STATE: dict = {"model": None, "requests": 0, "started": time.time(), "last": time.time()}
LOCK = threading.Lock()


def _job(body: dict) -> Job:
    images = body.get("images") or ([body["image"]] if body.get("image") else [])
    params = dict(body.get("params") or {})
    return Job(prompt=body.get("prompt"), negative_prompt=body.get("negative_prompt"), image=images,
               mask=body.get("mask"), inputs={k: v if isinstance(v, list) else [v] for k, v in
                                              (body.get("inputs") or {}).items()},
               params=params, seeds=[int(body.get("seed", 0))], steps=body.get("num_inference_steps"),
               guidance=body.get("guidance_scale"), strength=body.get("strength"), num_images=body.get("n"))


def _policy(options: dict) -> FetchPolicy:
    return FetchPolicy(background=parse_color(options.get("background", "white")),
                       block_private=bool(options.get("block_private")))


def _compute(body: dict, emit) -> dict:
    model = STATE["model"]
    job = _job(body)
    inputs = jobrun.load_job_inputs(job, _policy(body.get("input_options") or {}))
    emit({"event": "status", "text": "running"})
    requests = jobrun.job_requests(job, inputs)
    pipelines.plan_task(model, requests[0])
    with LOCK:
        outs = pipelines.run(model, requests, on_step=lambda i, t: emit({"event": "step", "step": i, "total": t}))
    data = []
    for out in outs:
        for index, image in enumerate(out.images):
            buf = io.BytesIO()
            image.save(buf, "PNG")
            recipe = jobrun.job_recipe(job, model, inputs, out, job.seeds[0], index)
            data.append({"b64_json": base64.b64encode(buf.getvalue()).decode(), "revised_prompt": None,
                         "diffrun": {"seed": job.seeds[0], "index": index, "task": out.task,
                                     "pipeline": out.pipeline, "recipe": json.loads(json.dumps(recipe, default=str))}})
    return {"created": int(time.time()), "data": data}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _send(self, status: int, obj: dict) -> None:
        raw = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:
        if self.path != "/health":
            return self._send(404, {"error": {"message": "not found", "code": "not_found", "exit": 2}})
        if STATE["model"] is None:
            return self._send(503, {"status": "loading", "progress": "loading model"})
        self._send(200, {"status": "ok", "model": STATE["model"].info.get("model"), "max_batch": 1,
                         "pid": os.getpid(), "started": STATE["started"], "requests": STATE["requests"],
                         "idle_seconds": time.time() - STATE["last"], "rss_bytes": 1})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        STATE["requests"] += 1
        STATE["last"] = time.time()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Connection", "close")
        self.end_headers()

        def emit(event: dict) -> None:
            self.wfile.write(json.dumps(event).encode() + b"\n")
            self.wfile.flush()

        emit({"event": "queued", "position": 0})
        try:
            emit({"event": "done", "response": _compute(body, emit)})
        except DiffrunError as exc:
            emit({"event": "error", "status": 400, "error": {"message": exc.message, "code": exc.code,
                                                             "exit": int(exc.exit), "hint": exc.hint}})
        self.close_connection = True


class UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-m", dest="model")
    parser.add_argument("--port", type=int)
    parser.add_argument("--uds")
    parser.add_argument("--ready-file")
    parser.add_argument("--port-file")
    args, _ = parser.parse_known_args()
    if args.uds:
        server = UnixServer(args.uds, Handler)
    else:
        server = ThreadingHTTPServer(("127.0.0.1", args.port or 0), Handler)
        server.daemon_threads = True
        if args.port_file:
            with open(args.port_file + ".tmp", "w") as f:
                f.write(str(server.server_address[1]))
            os.replace(args.port_file + ".tmp", args.port_file)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        STATE["model"] = pipelines.load_model(pipelines.ModelOptions(model=args.model, device="cpu", threads=1))
    except DiffrunError as exc:
        print(f"error: {exc.message}", file=sys.stderr, flush=True)
        os._exit(int(exc.exit))
    if args.ready_file:
        with open(args.ready_file, "w") as f:
            json.dump({"pid": os.getpid()}, f)
    threading.Event().wait()


if __name__ == "__main__":
    main()
