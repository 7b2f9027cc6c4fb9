"""diffrun.pipelines on real tiny pipelines: loading, task choice, argument checks, running, batching."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffrun.errors import ModelError, TaskError, UsageError
from diffrun.pipelines import (
    LoadedModel,
    ModelOptions,
    Request,
    batch_key,
    environment,
    load_model,
    plan_task,
    run,
)

STEPS = {"num_inference_steps": 2}


@pytest.fixture(scope="module")
def sd(tiny_sd: Path) -> LoadedModel:
    return load_model(ModelOptions(str(tiny_sd), device="cpu", dtype="fp32"))


@pytest.fixture(scope="module")
def svd(tiny_svd: Path) -> LoadedModel:
    return load_model(ModelOptions(str(tiny_svd), device="cpu"))


def picture(color: str = "orange", size: tuple[int, int] = (32, 32)) -> Image.Image:
    img = Image.new("RGB", size, color)
    img.paste(Image.new("RGB", (size[0] // 2, size[1] // 2), "navy"), (0, 0))
    return img


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.float32)


def t2i(prompt: str = "a red fox", seed: int = 0, **args) -> Request:
    return Request(prompt, None, {}, {**STEPS, "width": 32, "height": 32, **args}, seed)


def test_import_is_light() -> None:
    code = ("import sys, diffrun.pipelines; "
            "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"


def test_load_on_cpu_fp32_with_recipe_info(sd: LoadedModel, tiny_sd: Path) -> None:
    messages: list[str] = []
    model = load_model(ModelOptions(str(tiny_sd)), on_progress=messages.append)
    assert (model.device, model.dtype) == ("cpu", "fp32")  # auto on a CPU-only machine
    assert next(model.pipe.unet.parameters()).dtype.is_floating_point
    assert str(next(model.pipe.unet.parameters()).dtype) == "torch.float32"
    assert messages and str(tiny_sd) in messages[0]
    info = model.info
    assert info["pipeline"] == "StableDiffusionPipeline" and info["scheduler"] == "DDIMScheduler"
    assert info["model"] == str(tiny_sd) and len(info["folder_sha256"]) == 64
    assert info["folder_sha256"] == sd.info["folder_sha256"]
    json.dumps(info)
    assert model.load_seconds > 0


def test_folder_fingerprint_changes_with_files(tiny_sd: Path, tmp_path: Path) -> None:
    from diffrun.pipelines.loading import folder_fingerprint

    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(tiny_sd), str(copy)], check=True)
    assert folder_fingerprint(copy) == folder_fingerprint(tiny_sd)
    (copy / "unet" / "extra.txt").write_text("x")
    assert folder_fingerprint(copy) != folder_fingerprint(tiny_sd)


def test_text_to_image_size_steps_and_call_args(sd: LoadedModel) -> None:
    steps: list[tuple[int, int]] = []
    request = t2i(width=32, height=64, num_images_per_prompt=2)
    assert plan_task(sd, request) == "text-to-image"
    [out] = run(sd, [request], on_step=lambda step, total: steps.append((step, total)))
    assert out.task == "text-to-image" and out.pipeline == "StableDiffusionPipeline"
    assert [img.size for img in out.images] == [(32, 64), (32, 64)] and out.videos == []
    assert steps == [(1, 2), (2, 2)]
    assert out.call_args == {**STEPS, "width": 32, "height": 64, "num_images_per_prompt": 2,
                             "prompt": "a red fox"}
    json.dumps(out.call_args)
    assert not np.array_equal(pixels(out.images[0]), pixels(out.images[1]))  # seed, seed+1


def test_same_seed_same_pixels_other_seed_differs(sd: LoadedModel) -> None:
    a = run(sd, [t2i(seed=7)])[0].images[0]
    b = run(sd, [t2i(seed=7)])[0].images[0]
    c = run(sd, [t2i(seed=8)])[0].images[0]
    assert np.array_equal(pixels(a), pixels(b))
    assert not np.array_equal(pixels(a), pixels(c))


def test_micro_batch_matches_single_runs(sd: LoadedModel) -> None:
    requests = [t2i("a red fox", 1), t2i("two blue birds", 2), t2i("a house", 3)]
    assert len({batch_key(r) for r in requests}) == 1
    batched = run(sd, requests)
    assert [o.call_args["prompt"] for o in batched] == [r.prompt for r in requests]
    for request, out in zip(requests, batched, strict=True):
        [alone] = run(sd, [request])
        assert np.allclose(pixels(out.images[0]), pixels(alone.images[0]), atol=2)
    assert not np.array_equal(pixels(batched[0].images[0]), pixels(batched[1].images[0]))


def test_image_to_image_switches_with_from_pipe(sd: LoadedModel) -> None:
    request = Request("a watercolor", "blurry", {"image": picture()}, {**STEPS, "strength": 1.0}, 0)
    assert plan_task(sd, request) == "image-to-image"
    [out] = run(sd, [request])
    assert out.pipeline == "StableDiffusionImg2ImgPipeline" and out.task == "image-to-image"
    assert out.images[0].size == (32, 32)
    assert out.call_args["negative_prompt"] == "blurry" and "image" not in out.call_args
    switched = sd.pipes["image-to-image"]
    assert switched.unet is sd.pipe.unet  # weights shared, not reloaded
    assert type(sd.pipe).__name__ == "StableDiffusionPipeline"


def test_from_pipe_keeps_the_loaded_dtype(tiny_sd: Path) -> None:
    import torch

    model = load_model(ModelOptions(str(tiny_sd), device="cpu", dtype="bf16"))
    assert model.dtype == "bf16"
    assert plan_task(model, Request("a", None, {"image": picture()}, STEPS, 0)) == "image-to-image"
    for pipe in (model.pipe, model.pipes["image-to-image"]):
        assert next(pipe.unet.parameters()).dtype == torch.bfloat16
        assert next(pipe.text_encoder.parameters()).dtype == torch.bfloat16


def test_inpainting_and_batched_images(sd: LoadedModel) -> None:
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (8, 8, 24, 24))
    requests = [Request("a cat", None, {"image": picture(c), "mask_image": mask}, STEPS, s)
                for c, s in (("orange", 0), ("green", 1))]
    assert plan_task(sd, requests[0]) == "inpainting"
    outs = run(sd, requests)
    assert [o.pipeline for o in outs] == ["StableDiffusionInpaintPipeline"] * 2
    assert all(o.images[0].size == (32, 32) for o in outs)
    alone = run(sd, [requests[1]])[0]
    assert np.allclose(pixels(outs[1].images[0]), pixels(alone.images[0]), atol=2)


def test_image_to_video_returns_frames(svd: LoadedModel) -> None:
    request = Request(None, None, {"image": picture()}, {**STEPS, "width": 32, "height": 32, "num_frames": 2}, 3)
    assert plan_task(svd, request) == "image-to-video"
    [out] = run(svd, [request])
    assert out.task == "image-to-video" and out.images == []
    assert len(out.videos) == 1 and len(out.videos[0]) == 2
    assert all(frame.size == (32, 32) for frame in out.videos[0])
    [again] = run(svd, [request])
    assert np.array_equal(pixels(out.videos[0][1]), pixels(again.videos[0][1]))


def test_num_images_becomes_num_videos_for_video_pipelines(svd: LoadedModel) -> None:
    request = Request(None, None, {"image": picture()},
                      {**STEPS, "width": 32, "height": 32, "num_images_per_prompt": 2}, 0)
    [out] = run(svd, [request])
    assert len(out.videos) == 2 and out.call_args["num_videos_per_prompt"] == 2


def test_video_model_without_image_names_what_it_can_do(svd: LoadedModel) -> None:
    with pytest.raises(TaskError, match=r"StableVideoDiffusionPipeline cannot do text-to-video; "
                                        r"it can do: image-to-video") as err:
        plan_task(svd, Request(None, None, {}, STEPS, 0))
    assert err.value.exit == 4


def test_prompt_to_a_pipeline_without_one(svd: LoadedModel) -> None:
    with pytest.raises(UsageError, match="StableVideoDiffusionPipeline does not take a prompt"):
        plan_task(svd, Request("a cat", None, {"image": picture()}, STEPS, 0))


@pytest.mark.parametrize(("images", "args", "name"), [
    ({}, {"foo": 1}, "foo"),
    ({}, {"num_frames": 4}, "num_frames"),
    ({"control_image": picture()}, {}, "control_image"),
])
def test_unknown_argument_is_named(sd: LoadedModel, images: dict, args: dict, name: str) -> None:
    request = Request("a cat", None, images, {**STEPS, **args}, 0)
    with pytest.raises(UsageError, match=f"StableDiffusionPipeline does not take argument '{name}'"):
        plan_task(sd, request)
    with pytest.raises(UsageError, match=name):
        run(sd, [request])


def test_reserved_argument_rejected(sd: LoadedModel) -> None:
    with pytest.raises(UsageError, match="'generator'"):
        plan_task(sd, t2i(generator=1))


def test_pipeline_value_errors_become_usage_errors(sd: LoadedModel) -> None:
    with pytest.raises(UsageError, match="divisible by 8"):
        run(sd, [t2i(width=30)])


def test_incompatible_requests_in_one_call(sd: LoadedModel) -> None:
    a, b = t2i(seed=1), t2i(seed=2, width=64)
    assert batch_key(a) != batch_key(b)
    with pytest.raises(ValueError, match="batch_key"):
        run(sd, [a, b])


def test_batch_key_separates_inputs() -> None:
    base = Request("a", None, {"image": picture()}, STEPS, 0)
    assert batch_key(base) == batch_key(Request("b", None, {"image": picture("red")}, STEPS, 9))
    assert batch_key(base) != batch_key(Request(None, None, {"image": picture()}, STEPS, 0))
    assert batch_key(base) != batch_key(Request("a", "n", {"image": picture()}, STEPS, 0))
    assert batch_key(base) != batch_key(Request("a", None, {"image": picture(size=(64, 32))}, STEPS, 0))
    lists = [Request("a", None, {"control_image": [picture(), picture()]}, STEPS, 0) for _ in range(2)]
    assert batch_key(lists[0]) != batch_key(lists[1])  # lists of images run alone
    hash(batch_key(Request("a", None, {}, {"x": [1, {"y": 2}]}, 0)))


def test_unknown_scheduler_lists_compatibles(tiny_sd: Path) -> None:
    with pytest.raises(UsageError, match=r"unknown --scheduler 'Nope'.*EulerDiscreteScheduler"):
        load_model(ModelOptions(str(tiny_sd), scheduler="Nope"))


def test_compatible_scheduler_swaps_and_runs(tiny_sd: Path) -> None:
    model = load_model(ModelOptions(str(tiny_sd), scheduler="EulerDiscreteScheduler"))
    assert type(model.pipe.scheduler).__name__ == "EulerDiscreteScheduler"
    assert model.info["scheduler"] == "EulerDiscreteScheduler"
    assert model.pipe.scheduler.config.beta_schedule == "scaled_linear"  # configured from the old one
    assert run(model, [t2i()])[0].images[0].size == (32, 32)


def test_memory_options_apply(tiny_sd: Path) -> None:
    model = load_model(ModelOptions(str(tiny_sd), vae_tiling=True, vae_slicing=True, attention_slicing=True))
    assert model.pipe.vae.use_tiling and model.pipe.vae.use_slicing
    assert run(model, [t2i()])[0].images[0].size == (32, 32)


@pytest.mark.parametrize("make", ["missing", "empty", "uncached-hub-id", "text-file"])
def test_unloadable_models_raise_model_error(make: str, tmp_path: Path) -> None:
    ref = {"missing": str(tmp_path / "nope"), "empty": str(tmp_path), "uncached-hub-id": "nobody/no-such-model",
           "text-file": str(tmp_path / "notes.txt")}[make]
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelError) as err:
        load_model(ModelOptions(ref))
    message = str(err.value)
    assert message.startswith(f"{ref}: ") and "\n" not in message  # the documented `<model>: <reason>`
    assert err.value.exit == 4
    if make == "empty":
        assert "no model_index.json" in message
    if make == "missing":
        assert "no such file or folder" in message
    if make == "uncached-hub-id":
        assert "not in the local cache and offline mode is on" in message


def test_lora_that_cannot_load_is_a_clear_error(tiny_sd: Path, tmp_path: Path) -> None:
    import importlib.util

    # Without peft (the `lora` extra) diffusers cannot load LoRA weights at all: say so up front.
    expected = (ModelError, "cannot load LoRA") if importlib.util.find_spec("peft") else (UsageError, "needs the peft")
    with pytest.raises(expected[0], match=expected[1]):
        load_model(ModelOptions(str(tiny_sd), loras=[(str(tmp_path / "none.safetensors"), 0.8)]))


@pytest.mark.parametrize(("options", "match"), [
    ({"offload": "model"}, "--offload model needs a CUDA device"),
    ({"offload": "sequential"}, "--offload sequential"),
    ({"offload": "half"}, "unknown --offload"),
    ({"dtype": "fp8"}, "unknown --dtype"),
    ({"device": "tpu"}, "unknown --device"),
])
def test_bad_options_are_usage_errors(tiny_sd: Path, options: dict, match: str) -> None:
    with pytest.raises(UsageError, match=match) as err:
        load_model(ModelOptions(str(tiny_sd), device=options.pop("device", "cpu"), **options))
    assert err.value.exit == 2


def test_dtype_resolution() -> None:
    from diffrun.pipelines.runtime import resolve_dtype

    assert resolve_dtype("auto", "cpu") == "fp32"
    assert resolve_dtype("auto", "mps") == "fp16"
    assert resolve_dtype("BF16", "cpu") == "bf16"


def test_environment_reports_versions_and_devices() -> None:
    env = environment()
    assert env["versions"]["torch"] and env["versions"]["diffusers"]
    assert {"name": "cpu", "type": "cpu", "memory_bytes": None} in env["devices"]
    assert env["offline"] is True
    assert isinstance(env["cuda_available"], bool) and env["hf_cache"]
    json.dumps(env)


def test_sibling_classes_by_family_name(sd: LoadedModel, svd: LoadedModel) -> None:
    from diffrun.pipelines.tasks import _sibling_class

    assert _sibling_class(sd.pipe, "image-to-image").__name__ == "StableDiffusionImg2ImgPipeline"
    assert _sibling_class(sd.pipe, "inpainting").__name__ == "StableDiffusionInpaintPipeline"
    assert _sibling_class(svd.pipe, "text-to-image") is None  # no StableVideoDiffusion text-to-image class
    assert _sibling_class(sd.pipe, "image-to-video") is None


def test_an_argument_the_pipeline_trips_over_is_a_usage_error_not_a_crash(sd: LoadedModel) -> None:
    # clip_skip past the text encoder's layers raised IndexError inside diffusers: exit 70 before.
    with pytest.raises(UsageError, match="rejected the arguments"):
        run(sd, [Request("x", None, {}, {**STEPS, "width": 32, "height": 32, "clip_skip": 100}, 0)])
