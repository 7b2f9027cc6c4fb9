"""The CPU side of the GPU benchmark: full-size configs (counted on the meta device), the shrunk builds,
the random LoRA, and bench/gpu.py's every row in --cpu-smoke mode."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import fullsize  # noqa: E402

# The published models' parameter counts (runwayml/stable-diffusion-v1-5, stabilityai/stable-diffusion-xl-base-1.0).
PUBLISHED = {
    "sd15": {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480},
    "sdxl": {"unet": 2_567_463_684, "vae": 83_653_863, "text_encoder": 123_060_480,
             "text_encoder_2": 694_659_840},
}


@pytest.mark.parametrize("kind", ["sd15", "sdxl"])
def test_full_size_configs_have_the_published_parameter_counts(kind: str) -> None:
    assert fullsize.count_parameters(kind, "full") == PUBLISHED[kind]


@pytest.mark.parametrize("kind", ["sd15", "sdxl"])
def test_tiny_scale_keeps_the_architecture_and_shrinks_the_widths(kind: str) -> None:
    full, tiny = fullsize.unet_config(kind, "full"), fullsize.unet_config(kind, "tiny")
    for key in ("down_block_types", "up_block_types", "layers_per_block", "attention_head_dim",
                "transformer_layers_per_block", "use_linear_projection", "addition_embed_type"):
        assert full.get(key) == tiny.get(key), key
    assert all(t < f for t, f in zip(tiny["block_out_channels"], full["block_out_channels"], strict=True))
    for name in ("clip-l", "bigg"):
        full_text, tiny_text = fullsize.text_config(name, "full"), fullsize.text_config(name, "tiny")
        for key in ("num_hidden_layers", "num_attention_heads", "hidden_act", "max_position_embeddings"):
            assert full_text[key] == tiny_text[key], (name, key)


def _safetensors_dtypes(path: Path) -> set[str]:
    """The dtypes in a safetensors file's header (the 8-byte length, then JSON), without loading it."""
    with path.open("rb") as f:
        header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
    return {v["dtype"] for k, v in header.items() if k != "__metadata__"}


def test_a_built_sdxl_is_a_diffusers_folder_of_fp16_that_loads(tmp_path: Path) -> None:
    from diffrun import pipelines

    folder = fullsize.save_model(tmp_path / "sdxl", "sdxl", scale="tiny", dtype="fp16", seed=0)
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionXLPipeline"
    weights = sorted(folder.rglob("*.safetensors"))
    assert [p.parent.name for p in weights] == ["text_encoder", "text_encoder_2", "unet", "vae"]
    assert all(_safetensors_dtypes(p) == {"F16"} for p in weights)
    model = pipelines.load_model(pipelines.ModelOptions(model=str(folder), device="cpu", dtype="fp32"))
    assert type(model.pipe).__name__ == "StableDiffusionXLPipeline"
    assert model.pipe.unet.config.transformer_layers_per_block == [1, 2, 10]
    assert model.pipe.tokenizer_2.pad_token == "!"


def test_the_random_lora_covers_every_unet_attention_projection(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    folder = fullsize.save_model(tmp_path / "sd15", "sd15", scale="tiny", seed=0)
    tensors = load_file(str(fullsize.make_lora(folder, tmp_path / "lora.safetensors", rank=4)))
    # SD 1.5: 16 transformer blocks, 2 attentions each, 4 projections each.
    downs = {k for k in tensors if k.endswith("lora_A.weight")}
    assert len(downs) == 16 * 2 * 4 and len(tensors) == 2 * len(downs)
    assert all(k.startswith("unet.") for k in tensors)
    assert all(tensors[k].shape[0] == 4 and tensors[k.replace("lora_A", "lora_B")].shape[1] == 4 for k in downs)
    assert all(tensors[k.replace("lora_A", "lora_B")].abs().sum() > 0 for k in downs)


@pytest.mark.slow
def test_cpu_smoke_runs_every_row_and_diffrun_matches_raw_diffusers(tmp_path: Path) -> None:
    import gpu

    out = tmp_path / "out"
    code = gpu.main(["--cpu-smoke", "--models", "sd15", "--heavy", "--compile", "--out", str(out),
                     "--work", str(tmp_path / "work")])
    report = json.loads((out / "gpu.json").read_text())
    rows = {r["row"]: r for r in report["rows"]}
    assert code == 0, [r for r in report["rows"] if r["status"] != "ok"]
    assert all(r["status"] == "ok" for r in rows.values())
    expected = {"raw diffusers", "diffrun library, --dtype auto", "diffrun generate",
                "diffrun batch, 4 jobs, --batch-size 1", "diffrun batch, 4 jobs, --batch-size 4",
                "diffrun library, --dtype fp16", "diffrun library, --offload model",
                "img2img, inputs preloaded (floor)", "img2img batch, data: URIs (in memory)",
                "img2img batch, URLs, 200 ms latency", "diffrun library, --offload sequential",
                "128², no --vae-tiling", "128², --vae-tiling", "diffrun library, --compile"}
    assert set(rows) == expected
    # Same seeds, same pictures: diffrun's library and a whole `diffrun generate` process reproduce raw diffusers.
    assert "same pixels as raw" in rows["diffrun library, --dtype auto"]["note"]
    assert "same pixels as raw" in rows["diffrun generate"]["note"]
    assert rows["diffrun generate"]["process_s"] > rows["diffrun generate"]["inference_s"] > 0
    assert rows["diffrun batch, 4 jobs, --batch-size 4"]["images"] == 4
    assert all(r["images_per_s"] > 0 and r["check"]["std"] > 0 for r in rows.values() if "check" in r)
    assert {g["goal"] for g in report["goals"]} == {"inference", "generate", "batch", "url", "compile"}
    table = (out / "gpu.md").read_text()
    assert "| sd15 | diffrun batch, 4 jobs, --batch-size 4 | process |" in table
    assert "cpu smoke: not a measurement" in table


def test_rows_past_the_budget_are_recorded_as_not_run(tmp_path: Path) -> None:
    import gpu

    out = tmp_path / "out"
    assert gpu.main(["--cpu-smoke", "--budget", "0", "--out", str(out), "--work", str(tmp_path / "work")]) == 0
    rows = json.loads((out / "gpu.json").read_text())["rows"]
    assert rows and all(r["status"] == "not run" for r in rows)
    assert not (tmp_path / "work" / "sd15-tiny").exists()  # nothing was built for rows that did not run
