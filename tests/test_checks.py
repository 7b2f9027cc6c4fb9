"""Output checks (pipelines/checks.py): diffusers' numpy_to_pil bit for bit, NaN/Inf, blank, NSFW;
and on a real tiny pipeline, pipelines.run's outputs carry them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from diffrun.pipelines import LoadedModel, ModelOptions, Request, load_model, run
from diffrun.pipelines.checks import (
    blank_message,
    convert_images,
    convert_videos,
    describe,
    nonfinite_message,
    numpy_to_pil,
)


def test_numpy_to_pil_is_diffusers_bit_for_bit() -> None:
    from diffusers.image_processor import VaeImageProcessor

    rng = np.random.default_rng(0)
    values = rng.random((2, 8, 8, 3), dtype=np.float32)
    values[0, 0, :, 0] = (np.arange(8) + 0.5) / 255  # exact halves: round-half-even must agree
    for batch in (values, values[0], values[..., :1]):
        ours, theirs = numpy_to_pil(batch), VaeImageProcessor.numpy_to_pil(batch)
        assert [im.mode for im in ours] == [im.mode for im in theirs]
        assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(ours, theirs, strict=True))


def test_nan_and_inf_are_found_though_the_cast_hides_them() -> None:
    values = np.full((4, 4, 3), 0.5, np.float32)
    assert nonfinite_message(values) is None
    values[0, 0, 0], values[1, 1, 1] = np.nan, np.inf
    assert nonfinite_message(values).startswith("1 NaN and 1 Inf of 48 values")
    _, checks = convert_images(values[None])
    assert [c["check"] for c in checks[0]] == ["nan"]


@pytest.mark.parametrize(("spread", "blank"), [(0, True), (2, True), (3, False)])
def test_blank_is_every_channel_within_two_levels(spread: int, blank: bool) -> None:
    pixels = np.full((8, 8, 3), 100, np.uint8)
    pixels[0, 0] = 100 + spread
    assert (blank_message(pixels) is not None) is blank
    one_channel = np.zeros((8, 8, 3), np.uint8)
    one_channel[..., 2] = np.arange(64, dtype=np.uint8).reshape(8, 8)  # red and green flat, blue varies
    assert blank_message(one_channel) is None
    assert blank_message(np.zeros((8, 8, 3), np.uint8)).startswith("all black")


def test_nsfw_flag_and_video_frames() -> None:
    noise = np.random.default_rng(1).random((2, 8, 8, 3), dtype=np.float32)
    _, checks = convert_images(noise, nsfw=[False, True])
    assert checks[0] == [] and [c["check"] for c in checks[1]] == ["nsfw"]
    video = np.random.default_rng(2).random((1, 3, 8, 8, 3), dtype=np.float32)
    video[0, 1] = 0.0  # the middle frame is black
    frames, found = convert_videos(video)
    assert len(frames[0]) == 3
    assert [(c["check"], c["frame"]) for c in found[0]] == [("blank", 1)]
    assert describe(found[0][0]).startswith("blank (video 0 frame 1): all black")


@pytest.fixture(scope="module")
def sd(tiny_sd: Path) -> LoadedModel:
    return load_model(ModelOptions(str(tiny_sd), device="cpu", dtype="fp32"))


def _request(seed: int = 3) -> Request:
    return Request("a red fox", None, {}, {"num_inference_steps": 2, "width": 32, "height": 32}, seed)


def test_run_gives_diffusers_pil_pixels_and_no_failed_checks(sd: LoadedModel) -> None:
    import torch

    [output] = run(sd, [_request()])
    assert output.checks == []
    with torch.inference_mode():
        reference = sd.pipe(prompt=["a red fox"], num_inference_steps=2, width=32, height=32, output_type="pil",
                            generator=[torch.Generator("cpu").manual_seed(3)]).images[0]
    assert np.array_equal(np.asarray(output.images[0]), np.asarray(reference))


def test_run_reports_a_nan_vae_and_a_black_one(sd: LoadedModel) -> None:
    """A real decoder that overflows (NaN bias) and one that decodes to black: the PIL path alone shows
    two black pictures; the checks tell them apart."""
    import torch

    conv = sd.pipe.vae.decoder.conv_out
    saved = conv.bias.detach().clone()
    try:
        with torch.no_grad():
            conv.bias.fill_(float("nan"))
        [nan_out] = run(sd, [_request()])
        assert {c["check"] for c in nan_out.checks} == {"nan", "blank"}
        assert np.asarray(nan_out.images[0]).max() == 0  # what a PIL-only check would see: just black
        with torch.no_grad():
            conv.bias.fill_(-1000.0)
        [black] = run(sd, [_request()])
        assert [c["check"] for c in black.checks] == ["blank"] and black.checks[0]["index"] == 0
    finally:
        with torch.no_grad():
            conv.bias.copy_(saved)
