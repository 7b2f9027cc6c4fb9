"""Tiny test models: built in code, deterministic, small, loadable offline."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from diffrun.errors import UsageError
from diffrun.pipelines import TINY_KINDS, make_tiny_model
from diffrun.pipelines.tiny import tiny_vocab


def weight_hashes(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.safetensors"))}


def test_kinds_listed() -> None:
    assert set(TINY_KINDS) == {"sd", "svd"}
    assert all(isinstance(text, str) and text for text in TINY_KINDS.values())


def test_same_seed_same_weights_other_seed_differs(tiny_sd: Path, tmp_path: Path) -> None:
    again = make_tiny_model(tmp_path / "again", "sd", seed=0)
    other = make_tiny_model(tmp_path / "other", "sd", seed=1)
    reference = weight_hashes(tiny_sd)
    assert set(reference) == {"unet/diffusion_pytorch_model.safetensors",
                              "vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"}
    assert weight_hashes(again) == reference
    differs = weight_hashes(other)
    assert all(differs[name] != digest for name, digest in reference.items())


@pytest.mark.parametrize(("fixture", "pipeline", "limit_mb"),
                         [("tiny_sd", "StableDiffusionPipeline", 2), ("tiny_svd", "StableVideoDiffusionPipeline", 12)])
def test_saved_as_small_safetensors_folder(fixture: str, pipeline: str, limit_mb: int,
                                           request: pytest.FixtureRequest) -> None:
    folder: Path = request.getfixturevalue(fixture)
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == pipeline
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in {".bin", ".pt", ".ckpt"}]
    assert sum(p.stat().st_size for p in files) < limit_mb * 2**20


def test_tokenizer_is_self_made_and_encodes_any_text(tiny_sd: Path) -> None:
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(tiny_sd / "tokenizer", local_files_only=True)
    vocab = tiny_vocab()
    assert len(tokenizer) == len(vocab) == 514
    ids = tokenizer("a red fox, ünïcode ✓", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77
    assert ids[0] == vocab["<|startoftext|>"]
    assert vocab["<|endoftext|>"] in ids
    assert tokenizer.unk_token_id not in ids[1:ids.index(vocab["<|endoftext|>"])]


def test_unknown_kind_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="sd, svd"):
        make_tiny_model(tmp_path / "x", "gan")
    assert not (tmp_path / "x").exists()


PINNED = {  # sha256 of every parameter's name, shape and float32 bytes (pipelines/seeded.weights_digest)
    "tiny_sd": {"unet": "6c321287e2b4d6ddeb73c3adb4495bebe2a46bac53d6804cad4724b987a2f149",
                "vae": "3bccf27ad61bd07eb5e07650be14dcfee177240384970ef2823ada232477f25f",
                "text_encoder": "0109cb69ef34daab86bff8d82c854c1735ff60d5d11f76facbef4c78edd3cb6b"},
    "tiny_svd": {"unet": "6d976ef3b92e49a2400660b8ff928080b1ee58ed05e46188792070e6e69a3183",
                 "vae": "f0dd2da6b2a1cf88bcbfe5b223cc103ec11b412047e07331c70a3047c6ac1dd9",
                 "image_encoder": "abb3a0eb416747d3718f71bdb8bb1e70d11b8c19d4ec67711b3fd2e00e9c1016"},
}


@pytest.mark.parametrize("fixture", sorted(PINNED))
def test_weights_come_from_diffruns_generator_not_torchs(fixture: str, request: pytest.FixtureRequest) -> None:
    """The pinned digests hold under any torch: a torch or diffusers upgrade must not move a golden."""
    from safetensors.torch import load_file

    from diffrun.pipelines.seeded import weights_digest

    folder: Path = request.getfixturevalue(fixture)
    for component, digest in PINNED[fixture].items():
        weights = load_file(next((folder / component).glob("*.safetensors")))
        assert weights_digest(weights, component) == digest, component


def test_draw_is_fixed_by_pcg64_words_alone() -> None:
    from diffrun.pipelines.seeded import draw

    assert draw(0, "x", (4,), "uniform", 4).tolist() == pytest.approx(
        [0.11086523532867432, 0.020783934742212296, -0.1348753571510315, -0.16572906076908112], abs=0)
    assert draw(0, "x", (3,), "normal").tolist() == pytest.approx(
        [-0.01818794198334217, -0.012252887710928917, 0.020597631111741066], abs=0)
    assert draw(1, "x", (4,), "uniform", 4).tolist() != draw(0, "x", (4,), "uniform", 4).tolist()
