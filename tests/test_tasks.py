"""Task inference across a family's variants, sizes from the input, call-argument checks: real tiny
ControlNet, LTX, CogVideoX, SD and SVD pipelines, in process (the CLI's view is in test_tasks_e2e.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffrun.errors import TaskError, UsageError
from diffrun.pipelines import LoadedModel, ModelOptions, Request, load_model, plan_task, precheck, run
from diffrun.pipelines.tasks import resolve

STEPS = {"num_inference_steps": 2}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def _load(folder: Path) -> LoadedModel:
    return load_model(ModelOptions(str(folder), device="cpu", dtype="fp32"))


@pytest.fixture(scope="module")
def controlnet(tiny_controlnet: Path) -> LoadedModel:
    return _load(tiny_controlnet)


@pytest.fixture(scope="module")
def ltx(tiny_ltx: Path) -> LoadedModel:
    return _load(tiny_ltx)


@pytest.fixture(scope="module")
def cogvideox(tiny_cogvideox: Path) -> LoadedModel:
    return _load(tiny_cogvideox)


@pytest.fixture(scope="module")
def sd(tiny_sd: Path) -> LoadedModel:
    return _load(tiny_sd)


@pytest.fixture(scope="module")
def svd(tiny_svd: Path) -> LoadedModel:
    return _load(tiny_svd)


def picture(size: tuple[int, int] = (48, 32), color: str = "orange") -> Image.Image:
    img = Image.new("RGB", size, color)
    img.paste(Image.new("RGB", (size[0] // 2, size[1] // 2), "navy"), (0, 0))
    return img


def edges(size: tuple[int, int] = (48, 32)) -> Image.Image:
    img = Image.new("RGB", size, "black")
    img.paste(Image.new("RGB", (2, size[1]), "white"), (size[0] // 2, 0))
    return img


def mask(size: tuple[int, int] = (48, 32)) -> Image.Image:
    img = Image.new("L", size, 0)
    img.paste(255, (8, 8, size[0] - 8, size[1] - 8))
    return img


# --- ControlNet: the control image by its conventional name, three tasks -------------------------------------------

def test_controlnet_text_to_image_takes_control_image_as_its_image_argument(controlnet: LoadedModel) -> None:
    request = Request("a house", None, {"control_image": edges()}, STEPS, 0)
    assert plan_task(controlnet, request) == "text-to-image"
    [out] = run(controlnet, [request])
    assert out.pipeline == "StableDiffusionControlNetPipeline" and out.task == "text-to-image"
    assert out.input_arguments == {"control_image": "image"}
    assert out.images[0].size == (32, 24)  # sized from the control image, into the model's 32x32 area
    other = run(controlnet, [Request("a house", None, {"control_image": edges()}, STEPS, 1)])[0]
    assert not np.array_equal(np.asarray(out.images[0]), np.asarray(other.images[0]))


@pytest.mark.parametrize(("task", "pipeline", "images"), [
    ("image-to-image", "StableDiffusionControlNetImg2ImgPipeline", {"image": picture(), "control_image": edges()}),
    ("inpainting", "StableDiffusionControlNetInpaintPipeline",
     {"image": picture(), "mask_image": mask(), "control_image": edges()}),
])
def test_controlnet_switches_to_its_image_to_image_and_inpainting_classes(
        controlnet: LoadedModel, task: str, pipeline: str, images: dict) -> None:
    request = Request("a house", None, images, {**STEPS, "strength": 1.0}, 0)
    [out] = run(controlnet, [request])
    assert (out.task, out.pipeline) == (task, pipeline)
    assert out.input_arguments == {name: name for name in images}
    assert out.images[0].size == (32, 24)
    switched = controlnet.pipes[task]
    assert switched.controlnet is controlnet.pipe.controlnet and switched.unet is controlnet.pipe.unet


def test_controlnet_without_a_control_image_says_how_to_give_one(controlnet: LoadedModel) -> None:
    for images in ({}, {"image": picture()}):
        with pytest.raises(UsageError, match="needs a control image") as err:
            plan_task(controlnet, Request("a house", None, images, STEPS, 0))
        assert "--input control_image=" in (err.value.hint or "") and err.value.exit == 2


def test_control_image_on_a_plain_pipeline_is_still_refused(sd: LoadedModel) -> None:
    with pytest.raises(UsageError, match="StableDiffusionPipeline does not take argument 'control_image'"):
        plan_task(sd, Request("a", None, {"control_image": edges()}, STEPS, 0))


# --- LTX: text-to-video and image-to-video through the family's naming ---------------------------------------------

def test_ltx_text_to_video_and_image_to_video(ltx: LoadedModel) -> None:
    text = Request("waves", None, {}, {**STEPS, "width": 32, "height": 32, "num_frames": 9}, 0)
    [clip] = run(ltx, [text])
    assert (clip.task, clip.pipeline) == ("text-to-video", "LTXPipeline")
    assert len(clip.videos[0]) == 9 and clip.videos[0][0].size == (32, 32)
    still = Request("waves", None, {"image": picture((64, 32))}, {**STEPS, "num_frames": 9}, 0)
    [moving] = run(ltx, [still])
    assert (moving.task, moving.pipeline) == ("image-to-video", "LTXImageToVideoPipeline")
    assert moving.videos[0][0].size == (64, 32) and (moving.call_args["width"], moving.call_args["height"]) == (64, 32)
    assert ltx.pipes["image-to-video"].transformer is ltx.pipe.transformer


# --- a family AutoPipeline does not map, whose image-to-video class needs other weights -----------------------------

def test_cogvideox_cannot_do_image_to_video_with_a_text_to_video_transformer(cogvideox: LoadedModel) -> None:
    [clip] = run(cogvideox, [Request("waves", None, {}, {**STEPS, "width": 16, "height": 16, "num_frames": 9}, 0)])
    assert clip.task == "text-to-video" and len(clip.videos[0]) == 9
    with pytest.raises(TaskError, match=r": CogVideoXPipeline cannot do image-to-video; it can do: text-to-video") \
            as err:
        plan_task(cogvideox, Request("waves", None, {"image": picture()}, {**STEPS, "num_frames": 9}, 0))
    assert err.value.exit == 4 and "CogVideoXImageToVideoPipeline" in err.value.hint
    assert "not fit" in err.value.hint


def test_a_variant_needs_every_component_with_its_declared_class(sd: LoadedModel, ltx: LoadedModel) -> None:
    import diffusers

    from diffrun.pipelines.variants import unfit_components

    assert unfit_components(sd.pipe, diffusers.StableDiffusionImg2ImgPipeline) is None
    assert unfit_components(sd.pipe, diffusers.StableDiffusionControlNetImg2ImgPipeline) == \
        "it needs a controlnet, which the model does not have"
    # The shape of HunyuanVideo's image-to-video case (it wants a Llava text encoder): a component of another class.
    assert unfit_components(ltx.pipe, diffusers.CogVideoXPipeline) == \
        "its vae must be a AutoencoderKLCogVideoX, not the model's AutoencoderKLLTXVideo"
    assert "text_encoder must be a LlavaForConditionalGeneration" in \
        unfit_components(ltx.pipe, diffusers.HunyuanVideoImageToVideoPipeline)


def test_variants_come_from_diffusers_naming_then_its_registry() -> None:
    import diffusers

    from diffrun.pipelines.variants import family_stem, named_classes, registry_classes

    assert family_stem("StableDiffusionXLControlNetUnionInpaintPipeline") == "StableDiffusionXLControlNetUnion"
    assert family_stem("Wan22Image2VideoModularPipeline") is None
    names = lambda classes: [c.__name__ for c in classes]  # noqa: E731
    assert names(named_classes(diffusers.StableDiffusionXLControlNetUnionPipeline, "inpainting")) == \
        ["StableDiffusionXLControlNetUnionInpaintPipeline"]
    assert names(named_classes(diffusers.IFPipeline, "inpainting")) == ["IFInpaintingPipeline"]
    assert names(named_classes(diffusers.HunyuanVideoPipeline, "image-to-video")) == \
        ["HunyuanVideoImageToVideoPipeline"]
    assert names(named_classes(diffusers.LTXImageToVideoPipeline, "text-to-video")) == ["LTXPipeline"]
    assert named_classes(diffusers.SanaPipeline, "image-to-image") == []  # SanaImageToVideo is another medium
    # Kandinsky's combined classes are named outside the pattern: only the registry links them.
    assert named_classes(diffusers.KandinskyV22CombinedPipeline, "image-to-image") == []
    assert names(registry_classes(diffusers.KandinskyV22CombinedPipeline, "image-to-image")) == \
        ["KandinskyV22Img2ImgCombinedPipeline"]


# --- image-conditioned jobs are sized from their input -------------------------------------------------------------

def test_image_to_video_is_sized_from_its_input_not_the_class_default(svd: LoadedModel) -> None:
    plan = resolve(svd, Request(None, None, {"image": picture((96, 64))}, STEPS, 0))
    assert (plan.args["width"], plan.args["height"]) == (32, 24)  # 96x64 scaled into the model's 32x32 area
    small = Request(None, None, {"image": picture((24, 16))}, {**STEPS, "num_frames": 2}, 0)
    [out] = run(svd, [small])  # never scaled up
    assert [f.size for f in out.videos[0]] == [(24, 16)] * 2
    assert (out.call_args["width"], out.call_args["height"]) == (24, 16)


def test_size_from_image_caps_area_keeps_aspect_and_floors_to_the_multiple(ltx: LoadedModel, svd: LoadedModel) -> None:
    from diffrun.pipelines.sizes import default_size, size_from_image, size_multiple

    assert default_size(ltx.pipe) == (704, 512)  # LTX's class defaults: its transformer has no sample size
    photo = Image.new("RGB", (4000, 3000))  # 12 MP
    width, height = size_from_image(ltx.pipe, photo)
    multiple = size_multiple(ltx.pipe)
    assert width * height <= 704 * 512 and width % multiple == 0 and height % multiple == 0
    assert abs(width / height - 4 / 3) < 0.05 and width * height > 0.8 * 704 * 512
    assert size_from_image(svd.pipe, Image.new("RGB", (100, 50)), width=64) == (64, 32)
    assert size_from_image(svd.pipe, Image.new("RGB", (100, 50)), height=16) == (32, 16)


def test_image_to_image_without_a_size_parameter_keeps_the_input_size(sd: LoadedModel) -> None:
    [out] = run(sd, [Request("a", None, {"image": picture((48, 32))}, {**STEPS, "strength": 1.0}, 0)])
    assert out.images[0].size == (48, 32) and "width" not in out.call_args


# --- strength x steps ----------------------------------------------------------------------------------------------

def test_strength_times_steps_below_one_is_a_usage_error_before_the_model_runs(sd: LoadedModel) -> None:
    request = Request("a", None, {"image": picture()}, {"num_inference_steps": 2, "strength": 0.3}, 0)
    with pytest.raises(UsageError, match=r"--strength 0.3 × --steps 2 = 0.6 leaves no denoising step") as err:
        run(sd, [request])
    assert err.value.exit == 2 and "--steps 4 or more" in err.value.hint and "--strength 0.5 or more" in err.value.hint
    with pytest.raises(UsageError, match=r"the default 50 steps of 50 = 0.5"):
        plan_task(sd, Request("a", None, {"image": picture()}, {"strength": 0.01}, 0))
    assert run(sd, [Request("a", None, {"image": picture()}, {"num_inference_steps": 2, "strength": 0.5}, 0)])


# --- precheck: the class's __call__ and its variants', before the weights load -------------------------------------

def test_precheck_refuses_what_no_reachable_class_takes(tiny_sd: Path, tiny_controlnet: Path) -> None:
    options = ModelOptions(str(tiny_sd))
    with pytest.raises(UsageError, match="StableDiffusionPipeline does not take argument 'wobble'"):
        precheck(options, Request("a", None, {}, {"wobble": 3}, 0))
    with pytest.raises(UsageError, match="StableDiffusionImg2ImgPipeline does not take argument 'wobble'"):
        precheck(options, Request("a", None, {"image": picture()}, {"wobble": 3}, 0))
    with pytest.raises(UsageError, match="does not take argument 'strength'"):
        precheck(options, Request("a", None, {}, {"strength": 0.5}, 0))
    with pytest.raises(UsageError, match="leaves no denoising step"):
        precheck(options, Request("a", None, {"image": picture()}, {"strength": 0.3, "num_inference_steps": 2}, 0))
    precheck(options, Request("a", None, {"image": picture()}, {"strength": 0.5, "eta": 0.1}, 0))  # img2img's
    with pytest.raises(UsageError, match="needs a control image"):
        precheck(ModelOptions(str(tiny_controlnet)), Request("a", None, {"image": picture()}, STEPS, 0))


def test_precheck_lets_pass_what_only_loading_can_tell(tmp_path: Path) -> None:
    custom = tmp_path / "custom"
    custom.mkdir()
    (custom / "model_index.json").write_text('{"_class_name": ["pipeline", "MyPipeline"]}')
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text("{not json")
    for ref in (custom, broken, tmp_path / "missing", "nobody/not-cached"):
        precheck(ModelOptions(str(ref)), Request("a", None, {}, {"wobble": 3}, 0))


# --- --compile: the denoiser is compiled in place, so a task switch still finds its component -------------------

def test_a_compiled_denoiser_keeps_its_class_and_survives_a_task_switch(tiny_sd: Path) -> None:
    """torch.compile's wrapper (OptimizedModule) is not a UNet2DConditionModel: from_pipe refused it and
    image-to-image with --compile failed. Compiled in place, the switch shares the same compiled module.
    (No pipeline call: compiling for real is a GPU check, bench/gpu.py.)"""
    from diffrun.pipelines.variants import is_compiled

    model = load_model(ModelOptions(str(tiny_sd), device="cpu", dtype="fp32", compile=True))
    assert type(model.pipe.unet).__name__ == "UNet2DConditionModel" and is_compiled(model.pipe.unet)
    request = Request("a house", None, {"image": picture()}, STEPS, 0)
    assert plan_task(model, request) == "image-to-image"
    switched = resolve(model, request).pipe
    assert type(switched).__name__ == "StableDiffusionImg2ImgPipeline" and switched.unet is model.pipe.unet
