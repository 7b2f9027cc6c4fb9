"""OpenAI-shaped bodies: image data items (b64_json or url, the recipe in the bytes) and errors."""

from __future__ import annotations

import base64
import io
import time
from typing import Any

from diffrun.engine.jobrun import job_recipe
from diffrun.errors import DiffrunError, Exit, http_status
from diffrun.loaders.redact import log_message
from diffrun.outputs.images import encode_image
from diffrun.server.fields import CONTENT_TYPES, Answer, Parsed

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
               409: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error", 503: "server_error"}


def error_body(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """(status, {"error": {...}}): the CLI's one-line message, its stable code and exit code; no traceback."""
    status = getattr(exc, "http_status", None) or http_status(exc)
    if isinstance(exc, DiffrunError):
        message, code, exit_code, hint = log_message(exc.message), exc.code, int(exc.exit), exc.hint
    elif isinstance(exc, MemoryError):
        status, message, code, exit_code, hint = 503, "out of memory", "out_of_memory", int(Exit.OUT_OF_MEMORY), None
    else:
        message = f"internal error: {type(exc).__name__}"
        code, exit_code, hint = "internal", int(Exit.INTERNAL), "the server log has the details"
    return status, {"error": {"message": message, "type": ERROR_TYPES.get(status, "server_error"), "code": code,
                              "param": getattr(exc, "param", None), "exit": exit_code, "hint": hint}}


def simple_error(status: int, message: str, code: str, *, exit_code: int = int(Exit.USAGE),
                 param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "server_error"), "code": code,
                      "param": param, "exit": exit_code, "hint": None}}


def encode(image: Any, answer: Answer, recipe: dict) -> tuple[bytes, str]:
    """The image's bytes in the asked format (raw: lossless PNG), recipe embedded, and their content type."""
    fmt = "PNG" if answer.raw else answer.output_format
    quality = None if answer.raw or answer.compression is None or fmt == "PNG" else max(1, 100 - answer.compression)
    buffer = io.BytesIO()
    encode_image(image, fmt, recipe, buffer, quality=quality)
    return buffer.getvalue(), CONTENT_TYPES[fmt]


def images_body(parsed: Parsed, result: tuple, item_ids: list[str],
                store_url: Any = None) -> dict[str, Any]:
    """The body of /v1/images/*: one data item per image; `store_url(id, bytes, type)` for response_format=url."""
    model, inputs, outputs, timings, batch = result
    job, answer = parsed.job, parsed.answer
    data: list[dict[str, Any]] = []
    ids = iter(item_ids)
    size = None
    for output in outputs:
        checks = getattr(output, "checks", None) or []
        for index, item in enumerate(output.videos or output.images):
            item_id = next(ids)
            recipe = job_recipe(job, model, inputs, output, job.seeds[0], index)
            start = time.perf_counter()
            entry: dict[str, Any] = {"revised_prompt": None}
            if output.videos:
                frames = [encode(frame, answer, recipe)[0] for frame in item]
                entry["frames_b64"] = [base64.b64encode(f).decode("ascii") for f in frames]
                entry["fps"] = job.fps or int(output.call_args.get("fps") or 8)
            else:
                payload, content_type = encode(item, answer, recipe)
                size = size or "{}x{}".format(*getattr(item, "size", (0, 0)))
                if answer.response_format == "url" and not answer.raw and store_url is not None:
                    entry["url"] = store_url(item_id, payload, content_type)
                else:
                    entry["b64_json"] = base64.b64encode(payload).decode("ascii")
            entry["diffrun"] = {
                "id": item_id, "seed": job.seeds[0] + index, "index": index, "task": output.task,
                "pipeline": output.pipeline, "timings": {**timings, "encode": round(time.perf_counter() - start, 4)},
                "batch": batch, "recipe": recipe,
                "checks": [c for c in checks if not isinstance(c, dict) or c.get("index", index) == index],
            }
            data.append(entry)
    return {"created": int(time.time()), "data": data,
            "output_format": "png" if answer.raw else answer.output_format.lower(),
            "size": size or answer.size, "background": answer.background}
