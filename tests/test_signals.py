"""Ctrl-C and SIGTERM in every phase: the real console script gets real signals (fetching, denoising,
encoding a video); a small script holds the main thread "inside a C op" to prove the 1 s watchdog."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import textwrap
import time
from pathlib import Path

import pytest
from clirun import SAMPLE, cli_env

ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")
WAIT = 120.0
"""Generous deadline for a phase to be reached on a busy machine (never asserted as a time)."""


def console_script(*args: str, env: dict[str, str] | None = None, stderr: int | None = subprocess.PIPE
                   ) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "diffrun", *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=stderr, env=env or cli_env())


def wait_until(proc: subprocess.Popen[bytes], ready, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not ready():
        assert proc.poll() is None, f"exited ({proc.returncode}) before {what}: {proc.communicate()[1]!r}"
        assert time.monotonic() < deadline, f"never reached {what}"
        time.sleep(0.02)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


def assert_interrupted(code: int, stderr: bytes) -> None:
    text = ANSI.sub(b"", stderr).decode(errors="replace")
    assert code == 130, text[-3000:]
    assert "error: interrupted" in text and "Traceback" not in text, text[-3000:]


# -- the real console script, one phase each -------------------------------------------------------

def test_sigterm_while_fetching_an_input(server, tmp_path: Path) -> None:
    url = server.add("/slow.png", body=SAMPLE.read_bytes(), content_type="image/png", always="slow", slow=60)
    out = tmp_path / "out"
    model = tmp_path / "no-weights"  # passes the model-reference check; the fetch comes before any load
    model.mkdir()
    (model / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    proc = console_script("generate", "-m", str(model), "-p", "x", "-i", url, "-o", str(out / "a.png"))
    wait_until(proc, lambda: server.count("/slow.png") > 0, "the fetch")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert_interrupted(proc.returncode, err)
    assert not out.exists() or leftovers(out) == []


def _on_pty(args: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    """The console script with stderr on a pseudo-terminal, so its progress bar draws as a user sees it."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 250, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "diffrun", *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=slave, env=cli_env(TERM="xterm"))
    os.close(slave)
    return proc, master


def _read_pty(master: int, until: re.Pattern[bytes] | None, proc: subprocess.Popen[bytes]) -> bytes:
    """Read the terminal until `until` matches (None: until it closes)."""
    seen = b""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the other end closed
                chunk = b""
            if not chunk:
                return seen
            seen += chunk
            if until is not None and until.search(ANSI.sub(b"", seen)):
                return seen
        elif until is not None:
            assert proc.poll() is None, f"exited ({proc.returncode}) early: {seen[-2000:]!r}"
    raise AssertionError(f"no {until!r} on the terminal: {seen[-2000:]!r}")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_while_denoising_an_image(tiny_sd: Path, tmp_path: Path, sig: int) -> None:
    out = tmp_path / "out"
    proc, master = _on_pty(["generate", "-m", str(tiny_sd), "-p", "x", "--device", "cpu", "--steps", "500",
                            "-W", "64", "-H", "64", "-s", "424242", "-o", str(out / "a.png")])
    try:
        _read_pty(master, re.compile(rb"seed 424242.*\b[1-9]\d*/500\b"), proc)  # a step has run
        proc.send_signal(sig)
        err = _read_pty(master, None, proc)
        proc.wait(timeout=60)
    finally:
        os.close(master)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    assert_interrupted(proc.returncode, err)
    assert not out.exists() or leftovers(out) == []


FAKE_FFMPEG = """\
#!/bin/sh
# Stands in for ffmpeg: writes half a file at the output path (the last argument), then hangs.
for last; do :; done
printf 'half a video' > "$last"
printf '%s\\n' "$$" > "{marker}"
exec sleep 600
"""


@pytest.mark.slow
def test_sigterm_while_encoding_a_video(tiny_svd: Path, tmp_path: Path) -> None:
    """The signal comes while ffmpeg is writing the (temp) MP4: no clip, no temp file, no ffmpeg left."""
    pytest.importorskip("imageio_ffmpeg")
    marker = tmp_path / "ffmpeg.pid"
    fake = tmp_path / "ffmpeg"
    fake.write_text(FAKE_FFMPEG.format(marker=marker))
    fake.chmod(0o755)
    out = tmp_path / "out"
    proc = console_script("generate", "-m", str(tiny_svd), "-i", str(SAMPLE), "--device", "cpu", "--steps", "1",
                          "-W", "32", "-H", "32", "--frames", "3", "-o", str(out / "clip.mp4"),
                          env=cli_env(IMAGEIO_FFMPEG_EXE=str(fake)))
    wait_until(proc, lambda: marker.exists() and marker.read_text().strip(), "the video encoding")
    ffmpeg_pid = int(marker.read_text())
    assert [p.name for p in out.iterdir()] and not (out / "clip.mp4").exists()  # its temp file is there
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert_interrupted(proc.returncode, err)
    assert leftovers(out) == []
    for _ in range(100):  # killed: allow the kernel a moment to finish with it
        if not _running(ffmpeg_pid):
            break
        time.sleep(0.05)
    assert not _running(ffmpeg_pid), "ffmpeg outlived diffrun"


def _running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        return _main_thread_state(pid) != "Z"
    except OSError:
        return False


# -- the watchdog: the main thread never gets back to Python ---------------------------------------

STUCK = """\
import os, signal, subprocess, sys, threading, time
from diffrun.engine import signals
from diffrun.outputs import atomic

temp, mode = sys.argv[1], sys.argv[2]
with open(temp, "w") as f:
    f.write("half")
atomic.track(temp)
child = subprocess.Popen(["sleep", "600"])  # as ffmpeg would be
os.write(2, b"child %d\\n" % child.pid)
guard = signals.interrupts() if mode == "command" else signals.StopRequested()
with guard:
    if mode == "batch":
        def tell():
            while not signals.requested():
                time.sleep(0.01)
            os.write(2, b"stop requested\\n")
        threading.Thread(target=tell, daemon=True).start()
    # As inside a long torch op: no signal reaches the main thread, which never runs Python.
    signal.pthread_sigmask(signal.SIG_BLOCK, signals.SIGNALS)
    os.write(2, b"ready\\n")
    try:
        time.sleep(60)
    finally:
        os.write(2, b"main thread back\\n")
"""


def _stuck(tmp_path: Path, mode: str) -> tuple[subprocess.Popen[bytes], Path, int]:
    temp = tmp_path / ".out.png.abc.tmp"
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(STUCK), str(temp), mode],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env())
    child = int(_wait_line(proc, b"ready").split(b"child ", 1)[1].split()[0])
    wait_until(proc, lambda: _main_thread_state(proc.pid) == "S", "the long sleep")  # not just before it
    return proc, temp, child


def _main_thread_state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/task/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0]


def _wait_line(proc: subprocess.Popen[bytes], line: bytes) -> bytes:
    """stderr up to and including `line`."""
    assert proc.stderr is not None
    seen = b""
    while not seen.endswith(line + b"\n"):
        got = proc.stderr.readline()
        assert got, seen + (proc.stderr.read() or b"")
        seen += got
    return seen


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_first_signal_ends_a_command_stuck_in_a_long_op(tmp_path: Path, sig: int) -> None:
    proc, temp, child = _stuck(tmp_path, "command")
    proc.send_signal(sig)
    with _killed_after(proc):
        _, err = proc.communicate(timeout=30)  # the main thread would sleep 60 s
    assert_interrupted(proc.returncode, err)
    assert b"main thread back" not in err  # the watchdog ended it, not the main thread
    assert not temp.exists() and not _running(child)


def test_batch_first_signal_asks_second_ends_it_while_stuck(tmp_path: Path) -> None:
    proc, temp, child = _stuck(tmp_path, "batch")
    proc.send_signal(signal.SIGINT)
    assert b"stopping after the current jobs" in _wait_line(proc, b"stop requested")
    assert proc.poll() is None and temp.exists()  # the first signal only asks
    proc.send_signal(signal.SIGINT)
    with _killed_after(proc):
        _, err = proc.communicate(timeout=30)
    assert_interrupted(proc.returncode, err)
    assert b"main thread back" not in err
    assert not temp.exists() and not _running(child)


@contextlib.contextmanager
def _killed_after(proc: subprocess.Popen[bytes]):
    """Never leave the script behind when a check fails."""
    try:
        yield
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_handlers_are_restored_after_the_command() -> None:
    from diffrun.engine import signals

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with signals.interrupts():
        assert signal.getsignal(signal.SIGTERM) is not before[1]
        with signals.StopRequested() as stop:
            assert not stop.requested
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    assert signal.set_wakeup_fd(-1) == -1  # no wake-up fd left behind


def test_atomic_writes_register_their_temp_file_while_in_flight(tmp_path: Path) -> None:
    from diffrun.outputs import atomic

    target = tmp_path / "a.png"
    with atomic.atomic_path(target) as tmp:
        assert tmp in atomic.in_flight()  # what a hard exit removes
    assert atomic.in_flight() == [] and target.exists()
    with pytest.raises(KeyboardInterrupt), atomic.atomic_path(tmp_path / "b.png") as tmp:
        raise KeyboardInterrupt
    assert atomic.in_flight() == [] and not Path(tmp).exists()
