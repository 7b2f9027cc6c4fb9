"""--save-inputs: exact bytes, content-addressed names, stored once, one JSON line per input."""

from __future__ import annotations

import hashlib
import json
import os
import threading

import images
import pytest

from diffrun.errors import InputError
from diffrun.loaders import load_input, load_many
from diffrun.loaders.store import LOG_NAME, InputStore

KEYS = {"source", "final_url", "sha256", "bytes", "format", "width", "height", "saved", "time"}


def _lines(directory):
    return [json.loads(line) for line in (directory / LOG_NAME).read_text(encoding="utf-8").splitlines()]


def test_saved_bytes_are_exact_and_named_by_hash(tmp_path):
    data = images.exif_rotated_jpeg()
    out = tmp_path / "saved" / "nested"
    loaded = load_input(data, save_dir=out)
    sha = hashlib.sha256(data).hexdigest()
    assert loaded.sha256 == sha
    assert loaded.saved_path == out / f"{sha}.jpg"  # the full digest, as README's <sha256> says
    assert loaded.saved_path.read_bytes() == data  # original bytes, EXIF and all, not a re-encode
    [line] = _lines(out)
    assert set(line) == KEYS
    assert line["sha256"] == sha and line["bytes"] == len(data) and line["format"] == "JPEG"
    assert (line["width"], line["height"]) == (20, 40)
    assert line["saved"] == loaded.saved_path.name
    assert line["final_url"] is None and line["source"] == f"<{len(data)} bytes>"


def test_identical_input_stored_once_logged_twice(tmp_path):
    data = images.png()
    src = tmp_path / "a.png"
    src.write_bytes(data)
    out = tmp_path / "out"
    first = load_input(src, save_dir=out)
    mtime = first.saved_path.stat().st_mtime_ns
    second = load_input(images.data_uri(data), save_dir=str(out))
    assert first.saved_path == second.saved_path
    assert first.saved_path.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in out.iterdir()) == sorted([first.saved_path.name, LOG_NAME])
    lines = _lines(out)
    uri_shown = f"data:image/png;base64,...({len(images.data_uri(data))} chars)"
    assert [line["source"] for line in lines] == [str(src), uri_shown]


def test_extensions_per_format(tmp_path):
    names = set()
    for fmt, ext in [("PNG", "png"), ("GIF", "gif"), ("BMP", "bmp"), ("TIFF", "tif"), ("WEBP", "webp")]:
        loaded = load_input(images.encode(images.two_colour((6, 4)), fmt), save_dir=tmp_path)
        assert loaded.saved_path.suffix == "." + ext
        names.add(loaded.saved_path.name)
    assert len(names) == 5
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_credentials_removed_from_log(tmp_path):
    store = InputStore(tmp_path)
    store.save(b"abc", sha256=hashlib.sha256(b"abc").hexdigest(), fmt="PNG",
               source_display="https://user:secret@example.com/a.png?token=abc",
               final_url="https://example.com/b.png?sig=xyz", width=1, height=1)
    [line] = _lines(tmp_path)
    assert "secret" not in json.dumps(line) and "abc&" not in line["source"]
    assert line["source"] == "https://example.com/a.png"  # a query with a credential key is left out whole
    assert line["final_url"] == "https://example.com/b.png"


def test_failed_input_is_not_saved(tmp_path):
    results = list(load_many([images.HTML], save_dir=tmp_path))
    assert not results[0].ok
    assert list(tmp_path.iterdir()) == []


def test_concurrent_saves_give_whole_lines(tmp_path):
    datas = [images.png(color=(i, 0, 0)) for i in range(20)]
    results = list(load_many(datas * 3, save_dir=tmp_path, workers=8))
    assert all(r.ok for r in results)
    lines = _lines(tmp_path)
    assert len(lines) == 60
    assert {line["sha256"] for line in lines} == {hashlib.sha256(d).hexdigest() for d in datas}
    assert len(list(tmp_path.glob("*.png"))) == 20

    store = InputStore(tmp_path / "threads")

    def save_many(n):
        for i in range(25):
            body = f"{n}-{i}".encode()
            store.save(body, sha256=hashlib.sha256(body).hexdigest(), fmt="PNG", source_display="x" * 3000,
                       final_url=None, width=1, height=1)
    threads = [threading.Thread(target=save_many, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(_lines(tmp_path / "threads")) == 100


def test_planted_log_symlink_is_refused(tmp_path):
    """A planted inputs.jsonl link must not make diffrun append to the file it points at."""
    out, victim = tmp_path / "saved", tmp_path / "victim.txt"
    out.mkdir()
    victim.write_text("precious\n")
    (out / LOG_NAME).symlink_to(victim)
    with pytest.raises(InputError) as info:
        load_input(images.png(), save_dir=out)
    assert info.value.code == "save_failed" and "symbolic link" in info.value.reason
    assert victim.read_text() == "precious\n"
    [result] = list(load_many([images.png()], save_dir=out))
    assert not result.ok and result.to_json()["code"] == "save_failed"


def test_planted_file_under_an_inputs_name_is_replaced(tmp_path):
    """A same-size decoy, or a link to one, under `<sha256>.png` is not trusted as the saved input."""
    data = images.png(color=images.GREEN)
    sha = hashlib.sha256(data).hexdigest()
    decoy = tmp_path / "decoy.png"
    decoy.write_bytes(b"x" * len(data))
    for plant in ("link", "file"):
        out = tmp_path / plant
        out.mkdir()
        target = out / f"{sha}.png"
        if plant == "link":
            target.symlink_to(decoy)
        else:
            target.write_bytes(bytes(reversed(data)))
        loaded = load_input(data, save_dir=out)
        assert loaded.saved_path == target and not target.is_symlink()
        assert target.read_bytes() == data
    assert decoy.read_bytes() == b"x" * len(data)  # the link's target is left alone
    # an identical file already there is kept as it is (not rewritten)
    mtime = (tmp_path / "file" / f"{sha}.png").stat().st_mtime_ns
    load_input(data, save_dir=tmp_path / "file")
    assert (tmp_path / "file" / f"{sha}.png").stat().st_mtime_ns == mtime


def test_a_full_disk_under_save_inputs_is_exit_74_not_a_bad_input(tmp_path, monkeypatch):
    """ENOSPC while keeping an input's bytes is the disk's failure (DiskError, exit 74, as for outputs),
    not the input's (exit 3): the input itself was fine."""
    import errno

    from diffrun.errors import DiskError, Exit

    def full(self, path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(InputStore, "_write_atomic", full)
    with pytest.raises(DiskError) as info:
        load_input(images.png(), save_dir=tmp_path / "saved")
    assert info.value.exit == Exit.IO and info.value.code == "disk_full"
    assert "--save-inputs" in info.value.message
