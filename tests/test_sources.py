"""Reference classification and reading: paths, file://, schemes, stdin, bytes, PIL images."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import images
import pytest
from PIL import Image

from diffrun.errors import Exit, InputError
from diffrun.loaders import FetchPolicy, load_input
from diffrun.loaders.sources import classify, file_uri_to_path, read_source

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("ref, kind", [
    ("photo.png", "path"), ("./a/b.jpg", "path"), ("~/x.png", "path"), ("C:\\images\\x.png", "path"),
    ("c:/images/x.png", "path"), ("weird:name.png", "path"), (Path("x.png"), "path"),
    ("http://example.com/a.png", "http"), ("HTTPS://example.com/a.png", "http"), ("HtTp://x", "http"),
    ("file:///tmp/a.png", "file"), ("FILE://localhost/tmp/a.png", "file"),
    ("data:,x", "data"), ("Data:image/png;base64,AAAA", "data"), ("-", "stdin"),
    (b"\x89PNG", "bytes"), (bytearray(b"x"), "bytes"), (memoryview(b"x"), "bytes"),
    (Image.new("RGB", (1, 1)), "image"),
])
def test_classify(ref, kind):
    assert classify(ref) == kind


@pytest.mark.parametrize("ref", ["ftp://example.com/a.png", "s3://bucket/key.png", "s3:bucket/key.png",
                                 "gs://b/k", "sftp://host/x.png", "foo+bar://x"])
def test_unsupported_scheme(ref):
    with pytest.raises(InputError, match="unsupported scheme") as info:
        load_input(ref)
    assert info.value.exit == Exit.INPUT


def test_unsupported_type():
    with pytest.raises(InputError, match="unsupported input type: int"):
        load_input(42)


def test_missing_path_is_not_found_never_base64(tmp_path):
    missing = tmp_path / "nope.png"
    with pytest.raises(InputError) as info:
        load_input(str(missing))
    # the path is named once, as the input: not "nope.png: not found: nope.png"
    assert info.value.reason == "not found" and info.value.code == "not_found"
    assert info.value.source == str(missing) and str(info.value) == f"{missing}: not found"
    # a string that merely looks like base64 is still a path
    with pytest.raises(InputError, match=r"^iVBORw0KGgoAAAANSUhEUgAAAAEAAAAB: not found$") as info:
        load_input("iVBORw0KGgoAAAANSUhEUgAAAAEAAAAB")
    assert "base64" not in info.value.reason
    # a whole image as bare base64 is longer than any file name can be: still "not found"
    blob = base64.b64encode(images.png() + bytes(1000)).decode()
    assert "/" not in blob  # one file name segment, longer than any file system allows
    with pytest.raises(InputError) as info:
        load_input(blob)
    assert info.value.reason == "not found" and info.value.source.startswith("iVBORw0KGgo")


def test_directory(tmp_path):
    with pytest.raises(InputError, match="is a directory"):
        load_input(tmp_path)


def test_empty_reference():
    with pytest.raises(InputError, match="empty input reference"):
        load_input("")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can read anything")
def test_unreadable(tmp_path):
    path = tmp_path / "secret.png"
    path.write_bytes(images.png())
    path.chmod(0)
    try:
        with pytest.raises(InputError, match="permission denied"):
            load_input(path)
    finally:
        path.chmod(0o600)


def test_path_str_and_pathlib(tmp_path):
    data = images.png(color=images.GREEN)
    path = tmp_path / "a b.png"
    path.write_bytes(data)
    for ref in (str(path), path):
        loaded = load_input(ref)
        assert loaded.data == data and loaded.image.getpixel((0, 0)) == images.GREEN
        assert loaded.source == str(path)


def test_tilde_expansion(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "pic.png").write_bytes(images.png())
    assert load_input("~/pic.png").format == "PNG"
    assert read_source("~/pic.png").kind == "path"


def test_file_uri(tmp_path):
    data = images.jpeg()
    path = tmp_path / "with space é.jpg"
    path.write_bytes(data)
    uri = path.as_uri()
    assert "%20" in uri
    assert load_input(uri).data == data
    assert load_input("file://localhost" + uri[len("file://"):]).data == data
    assert file_uri_to_path("file:///tmp/a%2Bb.png", "x") == Path("/tmp/a+b.png")


def test_file_uri_other_host_and_missing(tmp_path):
    with pytest.raises(InputError, match=r"unsupported file URI host: example\.com"):
        load_input("file://example.com/etc/passwd")
    with pytest.raises(InputError, match="not found"):
        load_input((tmp_path / "missing.png").as_uri())
    with pytest.raises(InputError, match="invalid file URI"):
        load_input("file://[x/a.png")


def test_file_over_max_bytes(tmp_path):
    data = images.png(size=(32, 32))
    path = tmp_path / "a.png"
    path.write_bytes(data)
    with pytest.raises(InputError, match=f"too large: {len(data)} bytes > 10 bytes"):
        load_input(path, FetchPolicy(max_bytes=10))


def test_raw_bytes_kinds():
    data = images.png(color=images.BLUE)
    for ref in (data, bytearray(data), memoryview(data)):
        loaded = load_input(ref)
        assert loaded.data == data
        assert loaded.source == f"<{len(data)} bytes>"
        assert loaded.image.getpixel((0, 0)) == images.BLUE


def test_pil_image_passes_through():
    src = Image.new("RGBA", (5, 4), (0, 0, 0, 0))
    src.putpixel((1, 1), (*images.RED, 255))
    loaded = load_input(src)
    assert loaded.data == b""
    assert loaded.image is not src and loaded.image.mode == "RGB"
    assert loaded.image.getpixel((0, 0)) == (255, 255, 255)
    assert loaded.image.getpixel((1, 1)) == images.RED
    assert len(loaded.sha256) == 64
    assert load_input(src.copy()).sha256 == loaded.sha256
    assert loaded.source == "<PIL image RGBA 5x4>"
    with pytest.raises(InputError, match="too many pixels"):
        load_input(src, FetchPolicy(max_pixels=10))


def _run_python(code: str, stdin: bytes, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1", **kw.pop("env", {})}
    return subprocess.run([sys.executable, "-c", code], input=stdin, capture_output=True, env=env,
                          timeout=120, **kw)


def test_stdin_read_once():
    code = (
        "from diffrun.loaders import load_input, InputError\n"
        "r = load_input('-')\n"
        "print(r.format, r.image.size, r.source, len(r.data))\n"
        "try:\n"
        "    load_input('-')\n"
        "except InputError as e:\n"
        "    print('second:', e.reason)\n"
    )
    data = images.png(size=(7, 3))
    proc = _run_python(code, data)
    assert proc.returncode == 0, proc.stderr.decode()
    lines = proc.stdout.decode().splitlines()
    assert lines[0] == f"PNG (7, 3) - {len(data)}"
    assert lines[1] == "second: standard input can only be read once"


def test_stdin_not_an_image():
    code = "from diffrun.loaders import load_input\nload_input('-')\n"
    proc = _run_python(code, images.HTML)
    assert proc.returncode != 0
    assert b"InputError: -: not an image (looks like HTML" in proc.stderr
