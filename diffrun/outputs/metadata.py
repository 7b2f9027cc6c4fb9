"""Encoding a recipe into files: JSON, the Automatic1111 "parameters" text, PNG chunks, EXIF, XMP."""

from __future__ import annotations

import json
from pathlib import PurePath
from typing import Any
from xml.sax.saxutils import escape

RECIPE_KEY = "diffrun"  # the PNG iTXt chunk holding the recipe JSON
PARAMETERS_KEY = "parameters"  # the PNG chunk A1111 and its readers look for
EXIF_IFD = 0x8769
USER_COMMENT = 0x9286
IMAGE_DESCRIPTION = 0x010E
XMP_NS = "urn:diffrun:recipe:1"


def _jsonable(value: Any) -> Any:
    """Fallback for json.dumps: paths as strings, numpy scalars as Python numbers, the rest as str."""
    if isinstance(value, PurePath):
        return str(value)
    if hasattr(value, "item") and callable(value.item):
        try:
            return value.item()
        except (TypeError, ValueError):
            pass
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def recipe_json(recipe: dict, *, indent: int | None = None, ascii_only: bool = False) -> str:
    """The recipe as JSON text (compact unless `indent`); values JSON cannot hold become strings."""
    separators = None if indent else (",", ":")
    return json.dumps(recipe, indent=indent, ensure_ascii=ascii_only, default=_jsonable, separators=separators)


def _quote(text: str) -> str:
    """Quote a value the way A1111 does when it holds a comma, colon or newline."""
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ",:\n") else text


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def a1111_parameters(recipe: dict) -> str:
    """The Automatic1111 "parameters" text for `recipe`, with only the fields it holds."""
    args = recipe.get("args") or {}
    lines = [str(recipe.get("prompt") or "")]
    if recipe.get("negative_prompt"):
        lines.append(f"Negative prompt: {recipe['negative_prompt']}")
    fields: list[tuple[str, Any]] = [
        ("Steps", args.get("num_inference_steps")),
        ("Sampler", recipe.get("scheduler")),
        ("CFG scale", args.get("guidance_scale")),
        ("Seed", recipe.get("seed")),
        ("Size", f"{args['width']}x{args['height']}" if "width" in args and "height" in args else None),
        ("Model", recipe.get("model")),
        ("Denoising strength", args.get("strength")),
        ("Version", f"diffrun {recipe['diffrun_version']}" if recipe.get("diffrun_version") else None),
    ]
    parts = [f"{name}: {_quote(_number(value))}" for name, value in fields if value not in (None, "")]
    if parts:
        lines.append(", ".join(parts))
    return "\n".join(lines)


def png_info(recipe: dict):
    """PngInfo with a "parameters" text chunk (A1111 form) and an iTXt "diffrun" chunk (recipe JSON)."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(PARAMETERS_KEY, a1111_parameters(recipe))
    info.add_itxt(RECIPE_KEY, recipe_json(recipe))
    return info


def user_comment(text: str) -> bytes:
    """EXIF UserComment bytes: the 8-byte character-code prefix, then the text (ASCII when it can be)."""
    try:
        return b"ASCII\0\0\0" + text.encode("ascii")
    except UnicodeEncodeError:
        return b"UNICODE\0" + text.encode("utf-16-be")


def decode_user_comment(raw: bytes | str) -> str:
    """Text from an EXIF UserComment, whichever prefix (and UTF-16 byte order) it was written with."""
    if isinstance(raw, str):
        return raw
    head, body = raw[:8], raw[8:]
    if head == b"UNICODE\0":
        if body[:2] in (b"\xff\xfe", b"\xfe\xff"):
            return body.decode("utf-16")
        # No BOM: A1111/piexif write big-endian; little-endian shows as a NUL in every second byte.
        little = len(body) > 1 and body[1:2] == b"\0" and body[0:1] != b"\0"
        return body.decode("utf-16-le" if little else "utf-16-be", errors="replace")
    if head in (b"ASCII\0\0\0", b"\0" * 8):
        return body.decode("utf-8", errors="replace").rstrip("\0")
    return raw.decode("utf-8", errors="replace").rstrip("\0")


def exif_bytes(recipe: dict) -> bytes:
    """EXIF holding the recipe JSON in UserComment and the A1111 text in ImageDescription."""
    from PIL import Image

    exif = Image.Exif()
    exif[IMAGE_DESCRIPTION] = a1111_parameters(recipe)  # an ASCII tag: Pillow replaces other characters
    exif.get_ifd(EXIF_IFD)[USER_COMMENT] = user_comment(recipe_json(recipe, ascii_only=True))
    return exif.tobytes()


def xmp_packet(recipe: dict) -> bytes:
    """An XMP packet: the A1111 text as dc:description and the recipe JSON as diffrun:recipe."""
    text = escape(a1111_parameters(recipe))
    data = escape(recipe_json(recipe))
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        f'<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:diffrun="{XMP_NS}">'
        f'<dc:description><rdf:Alt><rdf:li xml:lang="x-default">{text}</rdf:li></rdf:Alt></dc:description>'
        f"<diffrun:recipe>{data}</diffrun:recipe>"
        "</rdf:Description></rdf:RDF></x:xmpmeta>"
        '<?xpacket end="w"?>'
    ).encode()


def recipe_from_xmp(xmp: bytes | str) -> str | None:
    """The diffrun:recipe text from an XMP packet, or None."""
    import xml.etree.ElementTree as ET

    if isinstance(xmp, bytes):
        xmp = xmp.decode("utf-8", errors="replace")
    start = xmp.find("<x:xmpmeta")
    end = xmp.rfind("</x:xmpmeta>")
    if start < 0 or end < 0:
        return None
    try:
        root = ET.fromstring(xmp[start : end + len("</x:xmpmeta>")])
    except ET.ParseError:
        return None
    node = root.find(f".//{{{XMP_NS}}}recipe")
    return node.text if node is not None else None
