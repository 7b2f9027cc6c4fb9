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
