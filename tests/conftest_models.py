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


@pytest.fixture(scope="session")
def tiny_controlnet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of a tiny StableDiffusionControlNetPipeline (text-to-image with a control image)."""
    from tiny_families import make

    return make(tmp_path_factory.mktemp("models") / "tiny-controlnet", "controlnet", seed=0)


@pytest.fixture(scope="session")
def tiny_ltx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of a tiny LTXPipeline (text-to-video; image-to-video through LTXImageToVideoPipeline)."""
    from tiny_families import make

    return make(tmp_path_factory.mktemp("models") / "tiny-ltx", "ltx", seed=0)


@pytest.fixture(scope="session")
def tiny_cogvideox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of a tiny CogVideoXPipeline (text-to-video only: its image-to-video class needs another transformer)."""
    from tiny_families import make

    return make(tmp_path_factory.mktemp("models") / "tiny-cogvideox", "cogvideox", seed=0)
