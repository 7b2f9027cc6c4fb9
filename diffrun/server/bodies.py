"""Reading request bodies within the caps: JSON objects, and multipart forms whose uploads stay in memory."""

from __future__ import annotations

import json
from typing import Any

from diffrun.errors import InputError, UsageError
from diffrun.server.fields import KNOWN, FieldError

IMAGE_FIELDS = {"image": "image", "image[]": "image", "images": "image", "url": "image", "mask": "mask",
                "input_reference": "image"}
"""Multipart fields that carry images (files, or URL / data-URI text), and the Job field they feed."""


class BodyTooLarge(InputError):
    """The request body is over the server's cap (HTTP 413)."""

    code = "too_large"
    http_status = 413

    def __init__(self, limit: int) -> None:
        super().__init__("request body", f"larger than the limit of {limit} bytes", code="too_large",
                         hint="send fewer or smaller inputs, or raise the server's --max-input-bytes")


def parse_json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body or b"{}")
    except (ValueError, RecursionError):
        raise UsageError("the body is not valid JSON", code="invalid_json") from None
    if not isinstance(data, dict):
        raise UsageError("the body must be a JSON object", code="invalid_json")
    return data


async def read_form(request: Any, *, max_input_bytes: int) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """Text fields (data) and image fields (name -> [bytes | URL text]) of a multipart or urlencoded body.

    Uploads are read into memory (Starlette spools parts over 1 MB to a temporary file unless told
    otherwise: the server raises the spool size to the input cap at start-up)."""
    from starlette.datastructures import UploadFile
    from starlette.formparsers import MultiPartException

    try:
        # a text part may hold a data: URI of an input at the cap: base64 is 4/3 of the bytes
        form = await request.form(max_files=64, max_fields=256, max_part_size=max_input_bytes * 4 // 3 + 4096)
    except MultiPartException as exc:
        raise UsageError(f"bad multipart body: {exc}", code="invalid_multipart") from None
    data: dict[str, Any] = {}
    images: dict[str, list[Any]] = {}
    try:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                payload = await value.read(max_input_bytes + 1)
                if len(payload) > max_input_bytes:
                    raise InputError(f"upload {name}", f"larger than the limit of {max_input_bytes} bytes",
                                     code="too_large")
                target = IMAGE_FIELDS.get(name, name)
                if name not in IMAGE_FIELDS and (name in KNOWN or not name.isidentifier()):
                    raise FieldError(name, "not a file field")
                images.setdefault(target, []).append(payload)
            elif name in IMAGE_FIELDS or (name not in KNOWN and name.isidentifier()):
                images.setdefault(IMAGE_FIELDS.get(name, name), []).append(value)
            else:
                data[name] = value
    finally:
        await form.close()
    return data, images


def place_images(data: dict[str, Any], images: dict[str, list[Any]]) -> dict[str, list[bytes]]:
    """Text references go into `data` (image / mask / inputs), as JSON would carry them; uploads are returned."""
    uploads: dict[str, list[bytes]] = {}
    for name, values in images.items():
        refs = [v for v in values if isinstance(v, str)]
        blobs = [v for v in values if isinstance(v, bytes)]
        if blobs:
            uploads[name] = blobs
        if not refs:
            continue
        if name == "image":
            data["image"] = [*_as_list(data.get("image")), *refs]
        elif name == "mask":
            data["mask"] = refs[0]
        else:
            inputs = data.setdefault("inputs", {})
            if isinstance(inputs, str):
                inputs = data["inputs"] = parse_json(inputs.encode())
            inputs[name] = [*_as_list(inputs.get(name)), *refs]
    return uploads


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]
