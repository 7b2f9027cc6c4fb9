"""Writing images, videos and sidecars: recipe round trips, stdout, atomic and no-clobber writes."""

from __future__ import annotations

import errno
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffrun.errors import OutputExistsError, UsageError
from diffrun.outputs import (
    a1111_parameters,
    formats,
    plan_outputs,
    read_recipe,
    write_image,
    write_sidecar,
    write_video,
)

RECIPE = {
    "diffrun_version": "0.1.0",
    "model": "runwayml/stable-diffusion-v1-5",
    "model_info": {"kind": "hub"},
    "pipeline": "StableDiffusionImg2ImgPipeline",
    "scheduler": "EulerDiscreteScheduler",
    "task": "img2img",
    "prompt": "a red fox, snow, 日本",
    "negative_prompt": "blurry",
    "seed": 42,
    "args": {"num_inference_steps": 20, "guidance_scale": 7.5, "strength": 0.75, "width": 512, "height": 512},
    "inputs": {"image": [{"source": "fox.png", "sha256": "ab" * 32}]},
    "device": "cpu",
    "dtype": "float32",
    "index": 0,
}
PARAMETERS = (
    "a red fox, snow, 日本\nNegative prompt: blurry\n"
    "Steps: 20, Sampler: EulerDiscreteScheduler, CFG scale: 7.5, Seed: 42, Size: 512x512, "
    "Model: runwayml/stable-diffusion-v1-5, Denoising strength: 0.75, Version: diffrun 0.1.0"
)


def image(color=(200, 30, 30), size=(24, 16), mode="RGB"):
    return Image.new(mode, size, color)


def frames(n=5, size=(24, 16)):
    return [Image.new("RGB", size, (40 * i, 255 - 40 * i, 90)) for i in range(n)]


# -- A1111 text --------------------------------------------------------------------------------------


def test_a1111_parameters_full():
    assert a1111_parameters(RECIPE) == PARAMETERS


def test_a1111_parameters_only_present_fields_and_quoting():
    text = a1111_parameters({"prompt": "p", "seed": 1, "model": "C:/models/x,y", "args": {"guidance_scale": 7.0}})
    assert text == 'p\nCFG scale: 7, Seed: 1, Model: "C:/models/x,y"'
    assert a1111_parameters({"prompt": "only"}) == "only"


# -- images -------------------------------------------------------------------------------------------


def test_png_carries_a1111_parameters_and_recipe(tmp_path):
    target = tmp_path / "fox.png"
    assert write_image(image(), target, RECIPE) == str(target)
    with Image.open(target) as im:
        assert im.format == "PNG"
        assert im.text["parameters"] == PARAMETERS
        assert json.loads(im.text["diffrun"]) == RECIPE
    assert read_recipe(target) == RECIPE


@pytest.mark.parametrize("ext,fmt", [(".jpg", "JPEG"), (".jpeg", "JPEG"), (".webp", "WEBP")])
def test_jpeg_and_webp_recipe_round_trip(tmp_path, ext, fmt):
    target = tmp_path / f"fox{ext}"
    write_image(image(), target, RECIPE)
    with Image.open(target) as im:
        assert im.format == fmt
        assert im.getexif()[0x010E].startswith("a red fox, snow")  # A1111 text in ImageDescription
        assert im.getexif().get_ifd(0x8769)[0x9286][:8] in (b"ASCII\0\0\0", b"UNICODE\0")
        assert b"diffrun:recipe" in im.info["xmp"]
    assert read_recipe(target) == RECIPE


def test_rgba_saved_as_jpeg_becomes_rgb(tmp_path):
    write_image(image((1, 2, 3, 128), mode="RGBA"), tmp_path / "a.jpg", RECIPE)
    with Image.open(tmp_path / "a.jpg") as im:
        assert im.mode == "RGB"


def test_numpy_float_image_is_accepted(tmp_path):
    write_image(np.ones((8, 10, 3), dtype=np.float32), tmp_path / "n.png", RECIPE)
    with Image.open(tmp_path / "n.png") as im:
        assert im.size == (10, 8) and im.getpixel((0, 0)) == (255, 255, 255)


def test_jpeg_quality_is_used(tmp_path):
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    low = write_image(noisy, tmp_path / "low.jpg", RECIPE, quality=10)
    high = write_image(noisy, tmp_path / "high.jpg", RECIPE, quality=95)
    assert os.path.getsize(low) < os.path.getsize(high)
    with pytest.raises(UsageError, match="quality"):
        write_image(noisy, tmp_path / "bad.jpg", RECIPE, quality=0)


def test_stdout_gets_png_bytes(tmp_path):
    out = io.BytesIO()
    assert write_image(image(), "-", RECIPE, stdout=out) == "-"
    data = out.getvalue()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(data)) as im:
        assert im.text["parameters"] == PARAMETERS
    assert os.listdir(tmp_path) == []


def test_unknown_extension_is_refused(tmp_path):
    with pytest.raises(UsageError, match="unsupported extension"):
        write_image(image(), tmp_path / "x.bmp", RECIPE)
    assert os.listdir(tmp_path) == []


def test_creates_parent_folders_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "a" / "b" / "fox.png"
    write_image(image(), target, RECIPE)
    assert os.listdir(target.parent) == ["fox.png"]


def test_target_does_not_exist_while_being_written(tmp_path):
    target = tmp_path / "fox.png"
    im = image()
    seen = {}
    real_save = im.save

    def save(fp, *args, **kw):
        seen["target_exists"] = target.exists()
        seen["files"] = os.listdir(tmp_path)
        real_save(fp, *args, **kw)

    im.save = save
    write_image(im, target, RECIPE)
    assert seen["target_exists"] is False
    assert len(seen["files"]) == 1
    assert seen["files"][0].startswith(".fox.png.") and seen["files"][0].endswith(".tmp")
    assert os.listdir(tmp_path) == ["fox.png"]


@pytest.mark.parametrize("exc", [RuntimeError("encoder broke"), KeyboardInterrupt()])
def test_failed_save_leaves_nothing_behind(tmp_path, exc):
    im = image()

    def save(fp, *args, **kw):
        fp.write(b"partial")
        raise exc

    im.save = save
    with pytest.raises(type(exc)):
        write_image(im, tmp_path / "fox.png", RECIPE)
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores permissions")
def test_read_only_folder_gives_usage_error_and_no_temp(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(UsageError, match="cannot write"):
            write_image(image(), folder / "fox.png", RECIPE)
        assert os.listdir(folder) == []
    finally:
        folder.chmod(0o755)


def test_existing_target_is_not_overwritten(tmp_path):
    target = tmp_path / "fox.png"
    target.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match="exists"):
        write_image(image(), target, RECIPE)
    assert target.read_bytes() == b"precious"
    assert os.listdir(tmp_path) == ["fox.png"]


def test_overwrite_replaces(tmp_path):
    target = tmp_path / "fox.png"
    write_image(image((255, 0, 0)), target, RECIPE)
    write_image(image((0, 0, 255)), target, RECIPE, overwrite=True)
    with Image.open(target) as im:
        assert im.getpixel((0, 0)) == (0, 0, 255)
    assert os.listdir(tmp_path) == ["fox.png"]


def test_target_created_between_plan_and_write_is_kept(tmp_path):
    [target] = plan_outputs(str(tmp_path / "fox.png"), seeds=[1], per_seed=1)
    im = image()
    real_save = im.save

    def save(fp, *args, **kw):  # another process wins the race while we encode
        Path(target).write_bytes(b"theirs")
        real_save(fp, *args, **kw)

    im.save = save
    with pytest.raises(OutputExistsError):
        write_image(im, target, RECIPE)
    assert Path(target).read_bytes() == b"theirs"
    assert os.listdir(tmp_path) == ["fox.png"]


def test_no_clobber_without_hard_links(tmp_path, monkeypatch):
    def no_link(src, dst):
        raise OSError(errno.EPERM, "hard links not supported")

    monkeypatch.setattr(os, "link", no_link)
    target = tmp_path / "fox.png"
    write_image(image(), target, RECIPE)
    assert read_recipe(target) == RECIPE
    im = image()
    real_save = im.save

    def save(fp, *args, **kw):
        target.write_bytes(b"theirs")
        real_save(fp, *args, **kw)

    target.unlink()
    im.save = save
    with pytest.raises(OutputExistsError):
        write_image(im, target, RECIPE)
    assert target.read_bytes() == b"theirs"
    assert os.listdir(tmp_path) == ["fox.png"]


# -- video --------------------------------------------------------------------------------------------


def _durations(path):
    with Image.open(path) as im:
        out = []
        for i in range(im.n_frames):
            im.seek(i)
            im.load()  # WebP reports a frame's duration once it is decoded
            out.append(im.info["duration"])
        return im.n_frames, out


@pytest.mark.parametrize("ext", [".gif", ".webp"])
def test_animated_frame_count_fps_and_recipe(tmp_path, ext):
    target = tmp_path / f"clip{ext}"
    assert write_video(frames(5), target, RECIPE, fps=10) == str(target)
    n, durations = _durations(target)
    assert n == 5
    assert durations == [100] * 5
    assert read_recipe(target) == RECIPE
    assert os.listdir(tmp_path) == [f"clip{ext}"]


def test_animated_webp_duration_follows_fps(tmp_path):
    write_video(frames(3), tmp_path / "c.webp", RECIPE, fps=4)
    assert _durations(tmp_path / "c.webp") == (3, [250, 250, 250])


def test_mp4_readable_with_right_frame_count_and_even_size(tmp_path):
    iio = pytest.importorskip("imageio.v3")
    pytest.importorskip("imageio_ffmpeg")
    target = tmp_path / "clip.mp4"
    float_frames = [np.full((17, 33, 3), i / 6, dtype=np.float32) for i in range(6)]
    write_video(float_frames, target, RECIPE, fps=8)
    data = iio.imread(target)
    assert data.shape == (6, 18, 34, 3)
    assert read_recipe(target) == RECIPE
    assert os.listdir(tmp_path) == ["clip.mp4"]


def test_mp4_to_stdout(tmp_path):
    pytest.importorskip("imageio_ffmpeg")
    out = io.BytesIO()
    assert write_video(frames(3), "-", RECIPE, stdout=out) == "-"
    assert out.getvalue()[4:8] == b"ftyp"


def test_video_stdout_without_imageio_is_webp(monkeypatch):
    monkeypatch.setattr(formats, "mp4_available", lambda: False)
    out = io.BytesIO()
    write_video(frames(3), "-", RECIPE, stdout=out)
    assert out.getvalue()[:4] == b"RIFF" and out.getvalue()[8:12] == b"WEBP"
    with Image.open(io.BytesIO(out.getvalue())) as im:
        assert im.n_frames == 3


def test_mp4_without_imageio_gives_install_hint(tmp_path, monkeypatch):
    monkeypatch.setattr(formats, "mp4_available", lambda: False)
    with pytest.raises(UsageError) as err:
        write_video(frames(2), tmp_path / "clip.mp4", RECIPE)
    assert "pip install 'diffrun[video]'" in err.value.hint
    assert os.listdir(tmp_path) == []


def test_video_refuses_png_existing_target_and_bad_frames(tmp_path):
    with pytest.raises(UsageError, match="not a video"):
        write_video(frames(2), tmp_path / "clip.png", RECIPE)
    (tmp_path / "clip.gif").write_bytes(b"old")
    with pytest.raises(OutputExistsError):
        write_video(frames(2), tmp_path / "clip.gif", RECIPE)
    assert (tmp_path / "clip.gif").read_bytes() == b"old"
    with pytest.raises(UsageError, match="no video frames"):
        write_video([], tmp_path / "empty.gif", RECIPE)
    with pytest.raises(UsageError, match="differ in size"):
        write_video([image(size=(4, 4)), image(size=(6, 4))], tmp_path / "mixed.gif", RECIPE)
    assert os.listdir(tmp_path) == ["clip.gif"]


# -- sidecars and read_recipe -------------------------------------------------------------------------


def test_sidecar_is_pretty_json_and_read_recipe_falls_back_to_it(tmp_path):
    plain = tmp_path / "plain.png"
    image().save(plain)  # no diffrun metadata inside
    sidecar = write_sidecar(plain, RECIPE)
    assert sidecar == f"{plain}.json"
    text = Path(sidecar).read_text(encoding="utf-8")
    assert text.startswith("{\n  ") and json.loads(text) == RECIPE
    assert read_recipe(plain) == RECIPE
    assert read_recipe(sidecar) == RECIPE
    with pytest.raises(OutputExistsError):
        write_sidecar(plain, {"other": 1})
    assert sorted(os.listdir(tmp_path)) == ["plain.png", "plain.png.json"]


def test_read_recipe_refuses_files_diffrun_did_not_write(tmp_path):
    plain = tmp_path / "plain.png"
    image().save(plain)
    with pytest.raises(UsageError, match=f"no diffrun recipe in {plain}"):
        read_recipe(plain)
    a1111 = tmp_path / "a1111.png"
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", PARAMETERS)
    image().save(a1111, pnginfo=info)
    with pytest.raises(UsageError, match="no diffrun recipe"):
        read_recipe(a1111)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UsageError, match="no diffrun recipe"):
        read_recipe(tmp_path / "notes.txt")
    with pytest.raises(UsageError, match=r"missing\.png: no such file"):  # not "no recipe": there is no file
        read_recipe(tmp_path / "missing.png")


def test_outputs_import_nothing_heavy():
    code = (
        "import sys, diffrun.outputs\n"
        "bad = [m for m in ('torch', 'diffusers', 'imageio', 'imageio_ffmpeg', 'diffrun.cli',"
        " 'diffrun.loaders', 'diffrun.pipelines') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_recipe_too_large_for_jpeg_metadata_still_writes(tmp_path) -> None:
    from PIL import Image

    from diffrun.outputs import write_image

    recipe = {"prompt": "x" * 70_000, "seed": 1}
    for name in ("big.jpg", "big.webp"):
        path = write_image(Image.new("RGB", (8, 8)), tmp_path / name, recipe)
        with Image.open(path) as img:
            assert img.size == (8, 8)
    # PNG has no such limit: the recipe is kept whole.
    path = write_image(Image.new("RGB", (8, 8)), tmp_path / "big.png", recipe)
    with Image.open(path) as img:
        assert len(img.text["diffrun"]) > 70_000
