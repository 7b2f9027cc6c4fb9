"""CUDA tests: marked `cuda`, skipped where torch sees no CUDA device (this machine, CI).

They run on a GPU machine through `python bench/gpu.py --tests` (or `pytest -m cuda tests/cuda`).
Models: the folders in DIFFRUN_CUDA_SD15 / DIFFRUN_CUDA_SDXL when set (bench/gpu.py passes the
full-size ones it built), else the same architectures at bench/fullsize.py's tiny scale, built here.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip every `cuda`-marked test when there is no CUDA device (torch is imported only if one is collected)."""
    marked = [item for item in items if item.get_closest_marker("cuda")]
    if not marked:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in marked:
        item.add_marker(skip)


def _model(kind: str, variable: str, factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get(variable)
    if given:
        return Path(given)
    import fullsize

    return fullsize.save_model(factory.mktemp("cuda-models") / kind, kind, scale="tiny", dtype="fp16", seed=0,
                               device="cuda")


@pytest.fixture(scope="session")
def sd15(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SD 1.5 folder: full-size from DIFFRUN_CUDA_SD15, else the tiny-scale architecture."""
    return _model("sd15", "DIFFRUN_CUDA_SD15", tmp_path_factory)


@pytest.fixture(scope="session")
def sdxl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SDXL folder: full-size from DIFFRUN_CUDA_SDXL, else the tiny-scale architecture."""
    return _model("sdxl", "DIFFRUN_CUDA_SDXL", tmp_path_factory)
