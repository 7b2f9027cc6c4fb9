"""The front door: load_input, load_many, LoadResult, URLs, and nothing on disk without save_dir."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import images
import pytest
from PIL import Image

from diffrun.errors import Exit, InputError
from diffrun.loaders import FetchPolicy, LoadedInput, load_image, load_input, load_many

REPO = Path(__file__).resolve().parents[1]
FAST = FetchPolicy(timeout=2.0, deadline=10.0, retries=0, backoff=0.001)
JSON_KEYS = {"source", "ok", "format", "width", "height", "mode", "bytes", "sha256", "saved_path", "final_url",
             "error", "code", "hint", "seconds"}


def test_load_input_fields(tmp_path):
    data = images.png(size=(5, 3), color=images.BLUE)
    path = tmp_path / "in.png"
    path.write_bytes(data)
    loaded = load_input(path)
    assert isinstance(loaded, LoadedInput)
    assert (loaded.format, loaded.image.size, loaded.image.mode) == ("PNG", (5, 3), "RGB")
    assert loaded.data == data and loaded.sha256 == hashlib.sha256(data).hexdigest()
    assert loaded.final_url is None and loaded.saved_path is None
    assert load_image(path, mode="L").mode == "L"


def test_bad_mode_is_a_programming_error():
    with pytest.raises(ValueError, match="mode must be one of") as info:
        load_input(images.png(), mode="CMYK")
    assert not isinstance(info.value, InputError)


def test_load_many_keeps_order_and_contains_errors(tmp_path):
    good = [images.png(size=(i + 1, 1)) for i in range(6)]
    sources = [good[0], str(tmp_path / "missing.png"), good[1], images.HTML, good[2], "ftp://x/y.png",
               *good[3:]]
    results = list(load_many(sources, workers=3))
    assert [r.ok for r in results] == [True, False, True, False, True, False, True, True, True]
    assert [r.input.image.width for r in results if r.ok] == [1, 2, 3, 4, 5, 6]
    assert isinstance(results[1].error, InputError) and "not found" in results[1].error.reason
    assert "HTML" in results[3].error.reason and "unsupported scheme" in results[5].error.reason
    for r in results:
        j = r.to_json()
        assert set(j) == JSON_KEYS and j["ok"] is r.ok and j["seconds"] >= 0
    assert results[0].to_json()["bytes"] == len(good[0]) and results[0].to_json()["mode"] == "RGB"
    assert results[1].to_json()["error"] == str(results[1].error) and results[1].to_json()["width"] is None


def test_load_many_bounded_submission():
    """A generator is pulled only as results are taken: never more than `workers` ahead."""
    pulled = 0
    lock = threading.Lock()

    def endless():
        nonlocal pulled
        while True:
            with lock:
                pulled += 1
            yield images.png()

    results = load_many(endless(), workers=4)
    for _ in range(10):
        assert next(results).ok
    assert pulled <= 10 + 4
    results.close()


def test_load_many_empty_and_single_worker():
    assert list(load_many([])) == []
    assert [r.ok for r in load_many([images.png(), b"x"], workers=1)] == [True, False]


_NO_DISK = """
import sys
from diffrun.loaders import load_input, load_many
print(load_input(sys.argv[1]).format)
print(load_input(sys.argv[2]).format)
print([r.ok for r in load_many([sys.argv[1], sys.argv[2], "missing.png"])])
"""


def test_nothing_touches_disk_without_save_dir(tmp_path):
    tmp, cwd, src = tmp_path / "tmp", tmp_path / "cwd", tmp_path / "src"
    for d in (tmp, cwd, src):
        d.mkdir()
    (src / "a.jpg").write_bytes(images.exif_rotated_jpeg())
    env = {**os.environ, "TMPDIR": str(tmp), "TEMP": str(tmp), "TMP": str(tmp), "PYTHONPATH": str(REPO),
           "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, "-c", _NO_DISK, images.data_uri(images.png()), str(src / "a.jpg")],
                          cwd=cwd, env=env, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().split() == ["PNG", "JPEG", "[True,", "True,", "False]"]
    assert list(tmp.iterdir()) == [] and list(cwd.iterdir()) == []
    assert sorted(p.name for p in src.iterdir()) == ["a.jpg"]


def test_pil_image_saved_as_png(tmp_path):
    src = Image.new("RGB", (3, 3), images.GREEN)
    loaded = load_input(src, save_dir=tmp_path)
    assert loaded.saved_path.suffix == ".png"
    assert hashlib.sha256(loaded.saved_path.read_bytes()).hexdigest() == loaded.sha256
    assert Image.open(loaded.saved_path).getpixel((1, 1)) == images.GREEN


def test_http_url_loads(server, tmp_path):
    data = images.jpeg(color=images.GREEN)
    url = server.add("/pics/a.jpg", data, content_type="image/jpeg")
    loaded = load_input(url, FAST, save_dir=tmp_path)
    assert loaded.data == data and loaded.format == "JPEG" and loaded.final_url == url
    assert loaded.saved_path.read_bytes() == data
    assert server.count("/pics/a.jpg") == 1


def test_json_final_url_has_no_credentials(server):
    server.add("/pics/a.png", images.png(), content_type="image/png")
    url = server.url("/pics/a.png").replace("http://", "http://alice:s3cret@") + "?token=abc123"
    [result] = load_many([url], FAST)
    assert result.ok
    record = result.to_json()
    assert record["final_url"] == server.url("/pics/a.png")
    assert "s3cret" not in str(record) and "abc123" not in str(record)


def test_http_html_served_as_image(server):
    url = server.add("/page.png", images.HTML, content_type="image/png")
    with pytest.raises(InputError, match="looks like HTML"):
        load_input(url, FAST)


def test_http_404_is_input_error(server):
    url = server.url("/nope.png")
    with pytest.raises(InputError) as info:
        load_input(url, FAST)
    assert info.value.exit == Exit.INPUT == 3
    assert "404" in info.value.reason
    assert info.value.source == url
    [result] = load_many([url], FAST)
    assert not result.ok and "404" in result.to_json()["error"]
