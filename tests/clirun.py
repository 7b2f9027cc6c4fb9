"""Running the real `diffrun` console entry point in a subprocess, as users do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[1] / "diffrun" / "samples" / "sample.png"


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIFFRUN_")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    env.update(extra)
    return env


def diffrun(*args: str, input: bytes | None = None, cwd: Path | None = None, timeout: float = 240,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """`diffrun ARGS...` in a subprocess; stdout as bytes, stderr as bytes."""
    return subprocess.run([sys.executable, "-m", "diffrun", *args], input=input, capture_output=True, cwd=cwd,
                          timeout=timeout, env=env or cli_env())
