"""Local inputs that are not regular files (loaders/special.py): on the command line a FIFO is read
like stdin within the deadline; from manifest rows and recipes (regular_files_only) FIFOs, devices and
/proc, /sys, /dev are refused; no message quotes the bytes of a file that is not an image."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from images import png

from diffrun.errors import InputError
from diffrun.loaders import FetchPolicy, load_input

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
STRICT = FetchPolicy(regular_files_only=True)


def test_a_fifo_on_the_command_line_is_read_like_stdin_within_the_deadline(tmp_path: Path) -> None:
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    data = png((12, 10), (10, 20, 30))

    def writer() -> None:
        time.sleep(0.3)  # the reader is already waiting: it must not take "no writer yet" for the end
        with open(fifo, "wb") as f:
            f.write(data[:20])
            f.flush()
            time.sleep(0.1)
            f.write(data[20:])

    thread = threading.Thread(target=writer)
    thread.start()
    loaded = load_input(str(fifo), FetchPolicy(deadline=20))
    thread.join()
    assert loaded.data == data and loaded.image.size == (12, 10)
    # Nobody writes: it fails at the deadline instead of hanging.
    started = time.monotonic()
    with pytest.raises(InputError, match=r"deadline of 0\.5 s exceeded reading a FIFO") as info:
        load_input(str(fifo), FetchPolicy(deadline=0.5))
    assert info.value.code == "deadline"
    assert time.monotonic() - started < 30  # it returned (no timing claim beyond "not forever")
    with pytest.raises(InputError, match="too large"):  # a device is read within the byte cap
        load_input("/dev/zero", FetchPolicy(max_bytes=1000))


@pytest.mark.parametrize("make, words", [
    (lambda d: os.mkfifo(d / "x") or d / "x", r"not a regular file \(a FIFO or pipe\)"),
    (lambda d: Path("/dev/null"), "may not read files in /dev"),
    (lambda d: Path("/proc/self/environ"), "may not read files in /proc"),
    (lambda d: (d / "link").symlink_to("/proc/self/environ") or d / "link", "may not read files in /proc"),
    (lambda d: Path("/sys/kernel/mm/transparent_hugepage/enabled"), "may not read files in /sys"),
])
def test_rows_and_recipes_read_regular_files_only(tmp_path: Path, make, words) -> None:
    path = make(tmp_path)
    if not os.path.lexists(path) or not os.path.exists(path):
        pytest.skip(f"{path} is not on this system")
    started = time.monotonic()
    with pytest.raises(InputError, match=words):
        load_input(str(path), STRICT)
    with pytest.raises(InputError, match=words):
        load_input(f"file://{path}", STRICT)
    assert time.monotonic() - started < 30  # refused, not read (a FIFO would block)
    image = tmp_path / "ok.png"  # while a regular file (here through a symlink) still loads
    image.write_bytes(png((4, 4)))
    (tmp_path / "ok-link.png").symlink_to(image)
    assert load_input(str(tmp_path / "ok-link.png"), STRICT).image.size == (4, 4)


def test_no_message_quotes_the_bytes_of_a_file_that_is_not_an_image(tmp_path: Path) -> None:
    secret = tmp_path / "environ"
    secret.write_bytes(b"IS_SECRET=hunter2\x00TOKEN=abc\x00\x01\x02")
    with pytest.raises(InputError) as info:
        load_input(str(secret), replace(STRICT))
    message = str(info.value)
    assert "not an image" in message
    assert "49 53" not in message and "hunter2" not in message and "first bytes" not in message
