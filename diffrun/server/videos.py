"""`/v1/videos`: asynchronous video jobs (queued / in_progress / completed / failed) on the same scheduler."""

from __future__ import annotations

import inspect
import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from diffrun.errors import UnavailableError, UsageError
from diffrun.server import fields, responses
from diffrun.server.results import ResultStore, VideoJob, new_id
from diffrun.server.scheduler import Work

if TYPE_CHECKING:
    from diffrun.server.app import ServerState

MAX_VIDEOS = 256
"""Video jobs remembered at once (finished ones dropped oldest first beyond it)."""
DEFAULT_SECONDS = "4"
_ENCODER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="diffrun-serve-video")


def pipeline_fps(model: Any) -> int:
    """The frame rate the pipeline's __call__ defaults to (`fps` or `frame_rate`), else 8."""
    try:
        params = inspect.signature(type(model.pipe).__call__).parameters
    except (TypeError, ValueError):
        return 8
    for name in ("fps", "frame_rate"):
        default = params[name].default if name in params else None
        if isinstance(default, (int, float)) and not isinstance(default, bool) and default > 0:
            return int(default)
    return 8


def add_routes(app: FastAPI, state: ServerState) -> None:
    from diffrun.server.app import _read_any

    lock = threading.Lock()

    def missing(video_id: str) -> JSONResponse:
        return JSONResponse(responses.simple_error(404, f"no such video: {video_id[:80]}", "not_found"),
                            status_code=404)

    @app.post("/v1/videos")
    async def create(request: Request) -> Response:
        data, uploads = await _read_any(request, state)
        seconds = data.pop("seconds", None)
        parsed = fields.parse_fields(data, model_ref=state.model_ref, policy=state.policy, uploads=uploads,
                                     max_images=state.max_images, prompt_required=False)
        model = state.scheduler.model
        if model is None:
            raise UnavailableError("the model is still loading", hint="wait for /health to answer 200")
        fps = parsed.job.fps or pipeline_fps(model)
        if seconds is not None and parsed.job.frames is None:
            parsed.job.frames = max(1, round(fields._float("seconds", seconds) * fps))
        parsed.job.fps = fps
        job = VideoJob(id=new_id("video"), prompt=parsed.job.prompt, size=str(data.get("size") or "auto"),
                       seconds=str(seconds if seconds is not None else DEFAULT_SECONDS), model=state.model_ref)
        work = Work(job=parsed.job, policy=parsed.policy, id=job.id, kind="video",
                    on_event=lambda event: _progress(job, event))
        state.scheduler.submit(work)
        with lock:
            state.videos[job.id] = job
            _forget_old(state.videos)
        # encoding runs off the worker thread (which sets the future): the GPU goes on to the next request
        work.future.add_done_callback(lambda future: _ENCODER.submit(_finish, job, parsed, future, state.results))
        return JSONResponse(job.to_json())

    @app.get("/v1/videos")
    async def listing() -> dict:
        with lock:
            items = [v.to_json() for v in state.videos.values()]
        return {"object": "list", "data": items[::-1]}

    @app.get("/v1/videos/{video_id}")
    async def get(video_id: str) -> Response:
        job = state.videos.get(video_id)
        return JSONResponse(job.to_json()) if job is not None else missing(video_id)

    @app.get("/v1/videos/{video_id}/content")
    async def content(video_id: str) -> Response:
        job = state.videos.get(video_id)
        if job is None:
            return missing(video_id)
        if job.status != "completed":
            return JSONResponse(responses.simple_error(
                409, f"video {video_id[:80]} is {job.status}, not completed", "not_ready"), status_code=409)
        found = state.results.get(video_id)
        if found is None:
            return JSONResponse(responses.simple_error(404, f"video {video_id[:80]}: its content has expired "
                                                            "(--keep-results)", "not_found"), status_code=404)
        return Response(found[0], media_type=found[1])

    @app.delete("/v1/videos/{video_id}")
    async def delete(video_id: str) -> Response:
        with lock:
            job = state.videos.pop(video_id, None)
        if job is None:
            return missing(video_id)
        state.results.delete(video_id)
        return JSONResponse({"id": video_id, "object": "video", "deleted": True})


def _progress(job: VideoJob, event: dict) -> None:
    if event.get("event") == "status" and event.get("text") == "running":
        job.status = "in_progress"
    elif event.get("event") == "step" and event.get("total"):
        job.status = "in_progress"
        job.progress = min(99, int(100 * event["step"] / event["total"]))


def _finish(job: VideoJob, parsed: fields.Parsed, future: Any, results: ResultStore) -> None:
    """Encode the finished video (MP4, the recipe in its metadata), or record why it failed."""
    exc = future.exception()
    if exc is None:
        try:
            model, inputs, outputs, timings, _batch = future.result()
            from diffrun.engine.jobrun import job_recipe
            from diffrun.outputs import write_video

            output = outputs[0]
            recipe = job_recipe(parsed.job, model, inputs, output, parsed.job.seeds[0], 0)
            buffer = io.BytesIO()
            write_video(output.videos[0], "-", recipe, fps=parsed.job.fps or 8, stdout=buffer)
            if not results.put(job.id, buffer.getvalue(), "video/mp4"):
                raise UsageError(f"the video ({buffer.tell()} bytes) is larger than --keep-results", code="too_large")
            job.diffrun = {"seed": parsed.job.seeds[0], "task": output.task, "pipeline": output.pipeline,
                           "timings": timings, "fps": parsed.job.fps, "frames": len(output.videos[0])}
            job.status, job.progress, job.completed_at = "completed", 100, int(time.time())
            return
        except Exception as failure:  # an encoder failure is this job's error, reported in its object
            exc = failure
    _status, body = responses.error_body(exc)
    if isinstance(exc, UnavailableError):
        body["error"]["message"] = "server stopped"
    job.status, job.error, job.completed_at = "failed", body["error"], int(time.time())


def _forget_old(videos: dict[str, VideoJob]) -> None:
    while len(videos) > MAX_VIDEOS:
        done = next((k for k, v in videos.items() if v.status in ("completed", "failed")), None)
        if done is None:
            return
        del videos[done]
