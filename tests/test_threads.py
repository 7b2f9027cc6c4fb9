"""CPU threads: the default count, `--threads` / OMP_NUM_THREADS, and the count in recipe and --json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from clirun import diffrun

from diffrun.errors import UsageError
from diffrun.outputs import read_recipe
from diffrun.pipelines import runtime


@pytest.mark.parametrize(("torch_default", "cpus", "chosen"), [
    (2, 2, 1),    # this machine: one core left to the loader, writer and main threads
    (1, 1, 1),    # never 0
    (4, 4, 3),
    (8, 16, 8),   # hyperthreads: torch's own (physical cores) is already below the CPU count
    (16, 4, 3),   # an affinity mask or cgroup quota smaller than the machine
])
def test_default_threads(torch_default: int, cpus: int, chosen: int) -> None:
    assert runtime.default_threads(torch_default, cpus) == chosen


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_apply_threads_explicit_then_env_then_default(monkeypatch, restore_threads) -> None:
    monkeypatch.setattr(runtime, "_THREADS", {"torch_default": 2, "interop": 1})  # this process started torch
    monkeypatch.setattr(runtime, "usable_cpus", lambda: 2)
    assert runtime.apply_threads(3) == 3 and torch.get_num_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert runtime.apply_threads(None) == 2 and torch.get_num_threads() == 2
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert runtime.apply_threads(None) == 1 and torch.get_num_threads() == 1
    with pytest.raises(UsageError, match="--threads"):
        runtime.apply_threads(0)


@pytest.mark.slow
def test_threads_option_recorded_in_recipe_and_json(tiny_sd: Path, tmp_path: Path) -> None:
    out = tmp_path / "t.png"
    proc = diffrun("generate", "-m", str(tiny_sd), "--device", "cpu", "--steps", "1", "-W", "32", "-H", "32",
                   "-p", "x", "-s", "1", "--threads", "2", "-o", str(out), "--json")
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert json.loads(proc.stdout)["threads"] == 2
    assert read_recipe(out)["threads"] == 2
    bad = diffrun("generate", "-m", str(tiny_sd), "-p", "x", "--threads", "0")
    assert bad.returncode == 2 and b"--threads" in bad.stderr
