"""pytest plugin: tiny diffusers pipelines built once per session (loaded via tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from diffrun.pipelines import make_tiny_model


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of a tiny StableDiffusionPipeline (text-to-image, image-to-image, inpainting)."""
    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-sd", "sd", seed=0)


@pytest.fixture(scope="session")
def tiny_svd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of a tiny StableVideoDiffusionPipeline (image-to-video)."""
    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-svd", "svd", seed=0)
