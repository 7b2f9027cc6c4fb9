"""The FastAPI routes of `diffrun serve`: parse a request into a Job, queue it, answer OpenAI-shaped JSON."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from diffrun import __version__
from diffrun.errors import DiffrunError, UsageError
from diffrun.loaders.policy import FetchPolicy
from diffrun.server import bodies, fields, responses
from diffrun.server.metrics import Metrics
from diffrun.server.results import ResultStore, new_id
from diffrun.server.scheduler import Scheduler, Work

NDJSON = "application/x-ndjson"


@dataclass
class ServerState:
    """Everything the routes share: the scheduler, the policy, the stores and counters."""

    scheduler: Scheduler
    policy: FetchPolicy
    model_ref: str
    results: ResultStore
    metrics: Metrics = field(default_factory=Metrics)
    uds: bool = False
    base_url: str = ""
    """http://HOST:PORT once listening (absolute URLs for response_format=url; paths under --uds)."""
    keep_alive: float = 0.0
    started: float = field(default_factory=time.time)
    videos: dict[str, Any] = field(default_factory=dict)
    max_images: int = 1000
    debug: bool = False


def error_response(exc: BaseException, debug: bool = False) -> JSONResponse:
    """The error's JSON answer; a bug (500) is also logged on stderr, with its traceback under --debug."""
    status, body = responses.error_body(exc)
    if status == 500 and not isinstance(exc, DiffrunError):
        import traceback

        lines = traceback.format_exception(exc) if debug else [f"internal error: {type(exc).__name__}: {exc}\n"]
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.write("".join(lines))
    headers = {"Retry-After": "1"} if status == 429 else None
    return JSONResponse(body, status_code=status, headers=headers)


def create_app(state: ServerState) -> FastAPI:
    app = FastAPI(title="diffrun", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.diffrun = state

    @app.exception_handler(DiffrunError)
    async def _expected(_request: Request, exc: DiffrunError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(Exception)
    async def _bug(_request: Request, exc: Exception) -> JSONResponse:
        return error_response(exc, state.debug)

    @app.exception_handler(404)
    async def _not_found(request: Request, _exc: Exception) -> JSONResponse:
        return JSONResponse(responses.simple_error(404, f"no such route or item: {request.url.path}", "not_found"),
                            status_code=404)

    @app.exception_handler(405)
    async def _method(request: Request, _exc: Exception) -> JSONResponse:
        return JSONResponse(responses.simple_error(405, f"{request.method} is not allowed on {request.url.path}",
                                                   "method_not_allowed"), status_code=405)

    @app.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse(*_health(state))

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": state.model_ref, "object": "model", "created": int(state.started),
                                            "owned_by": "diffrun"}]}

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(_metrics_text(state), media_type="text/plain; version=0.0.4")

    @app.post("/v1/images/generations")
    async def generations(request: Request) -> Response:
        data = bodies.parse_json(await request.body())
        parsed = fields.parse_fields(data, model_ref=state.model_ref, policy=state.policy,
                                     max_images=state.max_images)
        return await _answer(request, state, parsed)

    @app.post("/v1/images/edits")
    async def edits(request: Request) -> Response:
        data, uploads = await _read_any(request, state)
        parsed = fields.parse_fields(data, model_ref=state.model_ref, policy=state.policy, uploads=uploads,
                                     edits=True, max_images=state.max_images)
        return await _answer(request, state, parsed)

    @app.get("/v1/images/{item_id}/content")
    async def image_content(item_id: str) -> Response:
        found = state.results.get(item_id)
        if found is None:
            return JSONResponse(responses.simple_error(404, f"no such image (or expired): {item_id[:80]}",
                                                       "not_found"), status_code=404)
        return Response(found[0], media_type=found[1])

    from diffrun.server import videos

    videos.add_routes(app, state)
    return app


async def _read_any(request: Request, state: ServerState) -> tuple[dict[str, Any], dict[str, list[bytes]]]:
    """JSON or multipart / urlencoded: the text fields and the uploads."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
        data, images = await bodies.read_form(request, max_input_bytes=state.policy.max_bytes)
        return data, bodies.place_images(data, images)
    return bodies.parse_json(await request.body()), {}


def _health(state: ServerState) -> tuple[dict[str, Any], int]:
    scheduler = state.scheduler
    if scheduler.draining or scheduler.stopped:
        return {"status": "draining"}, 503
    model = scheduler.model
    if model is None:
        return {"status": "loading", "progress": scheduler.loading}, 503
    options = scheduler.runtime
    runtime = {"model": options.model, "revision": options.revision, "variant": options.variant,
               "device": model.device, "dtype": model.dtype, "offload": options.offload,
               "scheduler": model.info.get("scheduler") or options.scheduler,
               "loras": [list(pair) for pair in options.loras], "vae_tiling": options.vae_tiling,
               "vae_slicing": options.vae_slicing, "attention_slicing": options.attention_slicing,
               "compile": options.compile, "threads": _threads()}
    return {"status": "ok", "model": state.model_ref, "pipeline": type(model.pipe).__name__, "runtime": runtime,
            "max_batch": scheduler.max_batch, "max_queue": scheduler.max_queue, "version": __version__,
            "pid": os.getpid(), "started": int(state.started), "requests": scheduler.served,
            "in_flight": scheduler.in_flight, "queued": scheduler.queued,
            "idle_seconds": round(time.monotonic() - scheduler.last_activity, 3), "keep_alive": state.keep_alive,
            "rss_bytes": _rss()}, 200


def _threads() -> int | None:
    from diffrun.pipelines.runtime import cpu_threads

    return cpu_threads()


def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _metrics_text(state: ServerState) -> str:
    s = state.scheduler
    return state.metrics.render({
        "diffrun_queue_depth": ("Requests waiting in the queue.", s.queued),
        "diffrun_in_flight": ("Requests taken by the worker and not finished.", s.in_flight),
        "diffrun_inference_seconds_total": ("Seconds spent in pipeline calls.", round(s.inference_seconds, 6)),
        "diffrun_requests_dropped_total": ("Requests dropped because their client went away first.", s.dropped),
        "diffrun_input_bytes_total": ("Bytes of inputs loaded: uploads, data: URIs, fetched URLs.", s.input_bytes),
        "diffrun_batches_total": ("Pipeline calls (micro-batches) run.", s.batches),
        "diffrun_model_loaded": ("1 once the model is loaded.", int(s.model is not None)),
        "diffrun_results_bytes": ("Bytes kept for response_format=url.", state.results.size),
    })


async def _answer(request: Request, state: ServerState, parsed: fields.Parsed) -> Response:
    """Queue the job and answer: one JSON body, or NDJSON progress events when the client asks for them."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[dict | None] = asyncio.Queue()
    stream = NDJSON in request.headers.get("accept", "")
    work = Work(job=parsed.job, policy=parsed.policy, id=new_id("req"), allow_video=parsed.answer.raw,
                batch_size=parsed.answer.batch_size)
    if stream:
        work.on_event = lambda event: loop.call_soon_threadsafe(events.put_nowait, event)
    state.scheduler.submit(work)  # 429 / 503 as plain statuses, streaming or not
    if stream:
        work.future.add_done_callback(lambda _f: loop.call_soon_threadsafe(events.put_nowait, None))
        return StreamingResponse(_stream(request, state, parsed, work, events), media_type=NDJSON)
    future = asyncio.wrap_future(work.future)
    try:
        while not future.done():
            await asyncio.wait({future}, timeout=0.25)
            if not future.done() and await request.is_disconnected():
                state.scheduler.cancel(work)  # queued: dropped now; running: see cancel()
                return Response(status_code=499)
        return JSONResponse(await _body(state, parsed, future.result()))
    except DiffrunError:
        raise
    except Exception as exc:  # the request's own failure (a bug is 500, no traceback in the body)
        return error_response(exc, state.debug)


async def _body(state: ServerState, parsed: fields.Parsed, result: tuple) -> dict:
    outputs = result[2]
    count = sum(len(o.videos or o.images) for o in outputs)
    ids = [new_id("img") for _ in range(count)]

    def store(item_id: str, data: bytes, content_type: str) -> str:
        if not state.results.put(item_id, data, content_type):
            raise UsageError(f"response_format=url: the image ({len(data)} bytes) is larger than --keep-results",
                             code="too_large")
        path = f"/v1/images/{item_id}/content"
        return path if state.uds else f"{state.base_url}{path}"

    return await run_in_threadpool(responses.images_body, parsed, result, ids, store)


async def _stream(request: Request, state: ServerState, parsed: fields.Parsed, work: Work,
                  events: asyncio.Queue):
    try:
        while True:
            try:
                event = await asyncio.wait_for(events.get(), timeout=1.0)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    return
                continue
            if event is None:
                break
            yield json.dumps(event) + "\n"
        exc = work.future.exception()
        if exc is None:
            try:
                body = await _body(state, parsed, work.future.result())
                yield json.dumps({"event": "done", "response": body}) + "\n"
                return
            except Exception as failure:  # encoding failed: reported as the request's error
                exc = failure
        status, error = responses.error_body(exc)
        yield json.dumps({"event": "error", "status": status, **error}) + "\n"
    finally:
        if not work.future.done():
            state.scheduler.cancel(work)
