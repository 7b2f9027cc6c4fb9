"""Request fields (JSON body or multipart form) -> a Job plus how to answer it. No FastAPI here."""

from __future__ import annotations

import contextlib
import json
import math
import secrets
from dataclasses import dataclass, replace
from typing import Any

from diffrun.errors import UsageError
from diffrun.jobs import DEFAULT_MAX_IMAGES, Job, job_problems
from diffrun.loaders.guard import allow_host_patterns
from diffrun.loaders.policy import FetchPolicy
from diffrun.units import parse_duration, parse_size

FORMATS = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP"}
CONTENT_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
MAX_N = 10
"""Most images per request (OpenAI's own limit)."""
KNOWN = {"prompt", "n", "size", "response_format", "output_format", "output_compression", "background",
         "model", "user", "negative_prompt", "seed", "num_inference_steps", "guidance_scale", "strength",
         "params", "inputs", "image", "images", "image[]", "mask", "url", "input_options", "raw", "quality",
         "style", "moderation", "seconds", "fps", "input_reference", "num_frames", "batch_size"}
FIELD_NAMES = {"seeds": "seed", "steps": "num_inference_steps", "guidance": "guidance_scale",
               "strength": "strength", "width": "size", "height": "size", "num_images": "n",
               "params": "params", "inputs": "inputs", "frames": "seconds", "fps": "fps"}


class FieldError(UsageError):
    """A request field with a bad value: 400 naming the field (`param`)."""

    code = "invalid_field"

    def __init__(self, param: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(f"{param}: {message}", hint=hint)
        self.param = param


@dataclass
class Answer:
    """How a request wants its results."""

    response_format: str = "b64_json"
    output_format: str = "PNG"
    compression: int | None = None
    background: str = "auto"
    raw: bool = False
    size: str = "auto"
    batch_size: int | None = None
    """The client's micro-batch hint (`batch --server --batch-size N`): at most N requests in the call
    this one runs in (the server's --max-batch still caps it)."""


@dataclass
class Parsed:
    job: Job
    answer: Answer
    policy: FetchPolicy


def _int(name: str, value: Any, low: int = 0, high: int = 2**64 - 1) -> int:
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise FieldError(name, f"expected an integer from {low} to {high}, got {_shown(value)}")
    return value


def _float(name: str, value: Any) -> float:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise FieldError(name, f"expected a finite number, got {_shown(value)}")
    return float(value)


def _str(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise FieldError(name, f"expected a string, got {_shown(value)}")
    return value


def _object(name: str, value: Any) -> dict:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            raise FieldError(name, "expected a JSON object") from None
    if not isinstance(value, dict):
        raise FieldError(name, f"expected an object, got {_shown(value)}")
    return value


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


def _refs(name: str, value: Any) -> list[str]:
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, str) and v for v in values):
        raise FieldError(name, "expected an http(s) URL or data: URI string, or a list of them")
    return [_remote_ref(name, v) for v in values]


def _remote_ref(name: str, ref: str) -> str:
    """Only http(s) URLs and data: URIs: a server never reads its own files on a client's word."""
    head = ref[:8].lower()
    if head.startswith(("http://", "https://", "data:")):
        return ref
    raise FieldError(name, "only http(s) URLs, data: URIs and uploads are accepted, not paths",
                     hint="upload the file as multipart, or send it as a data: URI")


def parse_size_field(value: Any) -> tuple[int | None, int | None]:
    text = _str("size", value).strip().lower()
    if text in ("", "auto"):
        return None, None
    width, sep, height = text.partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        raise FieldError("size", f"expected WIDTHxHEIGHT or auto, got {_shown(value)}")
    w, h = int(width), int(height)
    if not (8 <= w <= 16384 and 8 <= h <= 16384):
        raise FieldError("size", f"sides must be 8 to 16384 pixels, got {w}x{h}")
    return w, h


def tightened(server: FetchPolicy, options: Any) -> FetchPolicy:
    """The server's policy with a request's `input_options`: limits and guards only tighten; background as given."""
    if options is None:
        return server
    opts = _object("input_options", options)
    changes: dict[str, Any] = {}
    for key, value in opts.items():
        name = f"input_options.{key}"
        if key in ("timeout", "deadline"):
            seconds = parse_duration(str(value)) if isinstance(value, str) else _float(name, value)
            current = getattr(server, key)
            if seconds > 0 and (current is None or seconds < current):
                changes[key] = seconds
        elif key == "retries":
            changes["retries"] = min(server.retries, _int(name, value, 0, 100))
        elif key == "max_input_bytes":
            size = parse_size(value) if isinstance(value, str) else _int(name, value, 1)
            changes["max_bytes"] = min(server.max_bytes, size)
        elif key == "max_pixels":
            changes["max_pixels"] = min(server.max_pixels, _int(name, value, 1))
        elif key == "block_private":
            if not isinstance(value, bool):
                raise FieldError(name, "expected true or false")
            changes["block_private"] = server.block_private or value
        elif key == "allow_host":
            hosts = allow_host_patterns(_refs_text(name, value))
            changes["allow_hosts"] = (tuple(h for h in hosts if h in server.allow_hosts)
                                      if server.allow_hosts else hosts)
            if server.allow_hosts and not changes["allow_hosts"]:
                changes["allow_hosts"] = ("\0none",)  # nothing in common: no host may be fetched
        elif key == "background":
            changes["background"] = _color(name, _str(name, value))
        else:
            raise FieldError(name, "unknown input option", hint="timeout, deadline, retries, max_input_bytes, "
                                                               "max_pixels, background, block_private, allow_host")
    return replace(server, **changes)


def _color(name: str, text: str) -> tuple[int, int, int]:
    from PIL import ImageColor

    try:
        rgb = ImageColor.getrgb(text)
    except ValueError:
        raise FieldError(name, f"not a colour: {_shown(text)}", hint="use a name such as white or #rrggbb") from None
    return (int(rgb[0]), int(rgb[1]), int(rgb[2]))


def _refs_text(name: str, value: Any) -> list[str]:
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, str) for v in values):
        raise FieldError(name, "expected a host name or a list of them")
    return values


def parse_fields(data: dict[str, Any], *, model_ref: str, policy: FetchPolicy,
                 uploads: dict[str, list[bytes]] | None = None, edits: bool = False,
                 max_images: int = DEFAULT_MAX_IMAGES, prompt_required: bool = True) -> Parsed:
    """The Job, the answer settings and the loader policy of one request; FieldError for a bad value."""
    unknown = sorted(k for k in data if k not in KNOWN)
    if unknown:
        raise FieldError(unknown[0], "unknown field", hint="put other pipeline arguments in params")
    job = Job(id="request")
    answer = Answer()
    if data.get("prompt") is not None:
        job.prompt = _str("prompt", data["prompt"])
    elif prompt_required and not edits:
        raise FieldError("prompt", "required")
    if data.get("negative_prompt") is not None:
        job.negative_prompt = _str("negative_prompt", data["negative_prompt"])
    model = data.get("model")
    if model not in (None, "", model_ref) and not (isinstance(model, str) and model_ref.endswith("/" + model)):
        raise FieldError("model", f"this server serves {model_ref}, not {_shown(model)}", hint="leave model out")
    n = _int("n", data["n"], 1, MAX_N) if data.get("n") is not None else 1
    if n > 1:
        job.num_images = n
    job.seeds = [_int("seed", data["seed"], 0, 2**64 - 1) if data.get("seed") is not None
                 else secrets.randbelow(2**32)]
    if data.get("size") is not None:
        job.width, job.height = parse_size_field(data["size"])
        answer.size = data["size"]
    if data.get("num_inference_steps") is not None:
        job.steps = _int("num_inference_steps", data["num_inference_steps"], 1, 10_000)
    if data.get("guidance_scale") is not None:
        job.guidance = _float("guidance_scale", data["guidance_scale"])
    if data.get("strength") is not None:
        job.strength = _float("strength", data["strength"])
    if data.get("fps") is not None:
        job.fps = _int("fps", data["fps"], 1, 240)
    if data.get("num_frames") is not None:
        job.frames = _int("num_frames", data["num_frames"], 1, 100_000)
    if data.get("seconds") is not None:
        raise FieldError("seconds", "only /v1/videos takes seconds", hint="use num_frames, or POST /v1/videos")
    if data.get("params") is not None:
        params = _object("params", data["params"])
        for key in ("width", "height", "num_frames"):
            if key in params:
                setattr(job, {"num_frames": "frames"}.get(key, key), _int(f"params.{key}", params.pop(key), 1))
        job.params = params
    _answer(data, answer)
    for key in ("image", "images", "url", "image[]", "input_reference"):
        if data.get(key) is not None:
            job.image += _refs(key, data[key])
    if data.get("mask") is not None:
        job.mask = _refs("mask", data["mask"])[0]
    if data.get("inputs") is not None:
        for name, value in _object("inputs", data["inputs"]).items():
            if not isinstance(name, str) or not name.isidentifier():
                raise FieldError("inputs", f"{_shown(name)} is not a pipeline argument name")
            target = {"image": job.image}.get(name)
            if target is not None:
                target += _refs(f"inputs.{name}", value)
            elif name in ("mask", "mask_image"):
                job.mask = _refs(f"inputs.{name}", value)[0]
            else:
                job.inputs[name] = _refs(f"inputs.{name}", value)
    for name, blobs in (uploads or {}).items():
        if name == "image":
            job.image += blobs
        elif name in ("mask", "mask_image"):
            job.mask = blobs[0]
        else:
            job.inputs.setdefault(name, []).extend(blobs)
    if edits and not job.image:
        raise FieldError("image", "required: upload a file, or give an http(s) URL or data: URI")
    problems = job_problems(job, max_images=max_images, names=FIELD_NAMES)
    if problems:
        raise UsageError(problems[0])
    return Parsed(job, answer, tightened(policy, data.get("input_options")))


def _answer(data: dict[str, Any], answer: Answer) -> None:
    fmt = data.get("response_format")
    if fmt is not None:
        if fmt not in ("b64_json", "url"):
            raise FieldError("response_format", f"expected b64_json or url, got {_shown(fmt)}")
        answer.response_format = fmt
    out = data.get("output_format")
    if out is not None:
        if not isinstance(out, str) or out.lower() not in FORMATS:
            raise FieldError("output_format", f"expected png, jpeg or webp, got {_shown(out)}")
        answer.output_format = FORMATS[out.lower()]
    if data.get("output_compression") is not None:
        answer.compression = _int("output_compression", data["output_compression"], 0, 100)
    background = data.get("background")
    if background is not None:
        if background not in ("auto", "opaque", "transparent"):
            raise FieldError("background", f"expected auto, opaque or transparent, got {_shown(background)}")
        if background == "transparent":
            raise FieldError("background", "transparent: this pipeline makes no alpha channel",
                             hint="use auto or opaque")
        answer.background = background
    raw = data.get("raw")
    if raw is not None:
        if isinstance(raw, str) and raw.lower() in ("true", "false", "1", "0"):
            raw = raw.lower() in ("true", "1")
        if not isinstance(raw, bool):
            raise FieldError("raw", "expected true or false")
        answer.raw = raw
    if data.get("batch_size") is not None:
        answer.batch_size = _int("batch_size", data["batch_size"], 1, 1024)
