"""Local inputs that are not regular files, and the places manifest rows and recipes may not read.

On the command line a FIFO, a `<(...)` (a pipe under /dev/fd) or a character device is read as
stdin is, but within `--deadline`: a FIFO nobody writes to fails at the deadline instead of hanging.
With `FetchPolicy.regular_files_only` (inputs named by manifest rows and `--from` recipes) a local
input must be a regular file outside /proc, /sys and /dev (symlinks followed), so a row cannot make
diffrun read `/proc/self/environ` or block on a FIFO.

sources.read_source asks `read_special` first; a regular file (or a path that cannot be stat'ed,
whose error read_file reports) is left to read_file.
"""

from __future__ import annotations

import os
import select
import stat
import time
from pathlib import Path

from diffrun.errors import InputError
from diffrun.loaders.policy import BYTES_HINT, FetchPolicy

SYSTEM_FOLDERS = ("/proc", "/sys", "/dev")
_CHUNK = 1 << 20


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO or pipe"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _system_folder(path: Path, st: os.stat_result) -> str | None:
    """The system folder `path` really lies in (by its resolved name, or by the file system it is on)."""
    real = os.path.realpath(path)
    for folder in SYSTEM_FOLDERS:
        if real == folder or real.startswith(folder + "/"):
            return folder
    for folder in SYSTEM_FOLDERS[:2]:  # procfs or sysfs mounted somewhere else
        try:
            if os.stat(folder).st_dev == st.st_dev:
                return folder
        except OSError:
            continue
    return None


def read_special(path: Path, policy: FetchPolicy, display: str) -> bytes | None:
    """The bytes of `path` when it is a FIFO or device (read within the deadline); None for a regular
    file, a folder or a path that cannot be stat'ed; InputError for what `policy` refuses."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):  # ValueError: an embedded NUL; read_file reports both
        return None
    if policy.regular_files_only:
        folder = _system_folder(path, st)
        if folder is not None:
            raise InputError(display, f"refused: a manifest row or recipe may not read files in {folder}",
                             code="blocked")
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            raise InputError(display, f"not a regular file ({_kind(st.st_mode)}): manifest rows and recipes "
                                      "read regular files only", code="not_a_file")
        return None
    if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode) or not hasattr(select, "poll"):
        return None
    return _read_stream(path, policy, display, _kind(st.st_mode))


def _read_stream(path: Path, policy: FetchPolicy, display: str, kind: str) -> bytes | None:
    """Read a pipe or device to its end, at most max_bytes + 1 bytes, failing at the deadline."""
    ends = None if policy.deadline is None else time.monotonic() + policy.deadline
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None  # read_file's own open reports it (it fails the same way, at once)
    chunks: list[bytes] = []
    total = 0
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLPRI)
        while total <= policy.max_bytes:
            left = None if ends is None else ends - time.monotonic()
            if left is not None and left <= 0:
                raise InputError(display, f"deadline of {policy.deadline:g} s exceeded reading {kind}",
                                 hint="is anything writing to it?", code="deadline")
            if not poller.poll(None if left is None else max(1, int(left * 1000))):
                continue  # nothing yet (a FIFO whose writer has not come)
            try:
                chunk = os.read(fd, min(_CHUNK, policy.max_bytes + 1 - total))
            except BlockingIOError:
                continue
            except OSError as e:
                raise InputError(display, f"cannot read {kind}: {e.strerror or e}", code="read_error") from None
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    finally:
        os.close(fd)
    if total > policy.max_bytes:
        raise InputError(display, f"too large: more than {policy.max_bytes} bytes", code="too_large",
                         hint=BYTES_HINT)
    return b"".join(chunks)
