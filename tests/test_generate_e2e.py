"""`diffrun generate` end to end: the real console script, tiny models, on CPU."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from clirun import SAMPLE, diffrun
from PIL import Image

FAST = ("--device", "cpu", "--steps", "2")
SMALL = ("--width", "32", "--height", "32")


def gen(model: Path, *args: str, cwd: Path | None = None, **kw):
    """Text-to-image and inpainting take a size; image-to-image keeps the input's (128x128)."""
    size = () if "-i" in args and "--mask" not in args else SMALL
    return diffrun("generate", "-m", str(model), *FAST, *size, *args, cwd=cwd, **kw)


def ok(proc) -> dict:
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    return json.loads(proc.stdout)


def test_text_to_image_json_and_recipe(tiny_sd: Path, tmp_path: Path) -> None:
    out = tmp_path / "t2i.png"
    summary = ok(gen(tiny_sd, "-p", "a red fox", "--seed", "7", "-o", str(out), "--json"))
    assert summary["status"] == "ok" and summary["task"] == "text-to-image"
    assert summary["outputs"] == [str(out)] and summary["seeds"] == [7]
    assert summary["pipeline"] == "StableDiffusionPipeline" and summary["device"] == "cpu"
    assert summary["dtype"] == "fp32"
    assert {"inputs", "model_load", "inference", "saving", "total"} <= set(summary["timings"])
    with Image.open(out) as img:
        assert img.size == (32, 32)
        assert "a red fox" in img.text["parameters"] and "Seed: 7" in img.text["parameters"]
        recipe = json.loads(img.text["diffrun"])
    assert recipe["seed"] == 7 and recipe["prompt"] == "a red fox" and recipe["args"]["num_inference_steps"] == 2


def test_same_seed_identical_bytes_and_from_roundtrip(tiny_sd: Path, tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    ok(gen(tiny_sd, "-p", "hills", "-s", "3", "-o", str(a), "--json"))
    ok(gen(tiny_sd, "-p", "hills", "-s", "3", "-o", str(b), "--json"))
    assert a.read_bytes() == b.read_bytes()
    # --from reruns the recipe: no prompt, seed or steps given, same pixels.
    summary = ok(diffrun("generate", "--from", str(a), "--device", "cpu", "-o", str(c), "--json"))
    assert summary["seeds"] == [3]
    assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(c)))
    # A flag overrides the recipe.
    d = tmp_path / "d.png"
    summary = ok(diffrun("generate", "--from", str(a), "--device", "cpu", "-s", "4", "-o", str(d), "--json"))
    assert summary["seeds"] == [4]
    assert not np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(d)))


def test_image_to_image_from_data_uri_and_stdout(tiny_sd: Path) -> None:
    uri = "data:image/png;base64," + base64.b64encode(SAMPLE.read_bytes()).decode()
    proc = gen(tiny_sd, "-p", "watercolor", "-i", uri, "--strength", "0.5", "-s", "1", "-o", "-")
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    img = Image.open(io.BytesIO(proc.stdout))
    assert img.format == "PNG" and img.size == (128, 128)
    assert json.loads(img.text["diffrun"])["task"] == "image-to-image"


def test_inpainting_with_mask_and_multiple_seeds(tiny_sd: Path, tmp_path: Path) -> None:
    mask = tmp_path / "mask.png"
    m = Image.new("L", (128, 128), 0)
    m.paste(255, (32, 32, 96, 96))
    m.save(mask)
    summary = ok(gen(tiny_sd, "-p", "a door", "-i", str(SAMPLE), "--mask", str(mask), "-s", "1", "-s", "2",
                     "-o", str(tmp_path / "inp-{seed}.png"), "--json", "--sidecar"))
    assert summary["task"] == "inpainting"
    assert summary["outputs"] == [str(tmp_path / "inp-1.png"), str(tmp_path / "inp-2.png")]
    sidecar = json.loads((tmp_path / "inp-2.png.json").read_text())
    assert sidecar["seed"] == 2 and set(sidecar["inputs"]) == {"image", "mask_image"}


def test_refuses_to_overwrite_before_loading_the_model(tiny_sd: Path, tmp_path: Path) -> None:
    out = tmp_path / "keep.png"
    out.write_bytes(b"precious")
    proc = gen(tiny_sd, "-p", "x", "-o", str(out))
    assert proc.returncode == 2 and b"exists" in proc.stderr and b"--overwrite" in proc.stderr
    assert out.read_bytes() == b"precious"
    ok(gen(tiny_sd, "-p", "x", "-o", str(out), "--overwrite", "--json"))
    assert Image.open(out).format == "PNG"


def test_default_names_never_collide(tiny_sd: Path, tmp_path: Path) -> None:
    first = ok(gen(tiny_sd, "-p", "x", "-s", "5", "--json", cwd=tmp_path))["outputs"]
    second = ok(gen(tiny_sd, "-p", "x", "-s", "5", "--json", cwd=tmp_path))["outputs"]
    assert first != second
    assert all((tmp_path / p).exists() for p in first + second)


def test_bad_input_exits_3_before_the_model_loads(tmp_path: Path) -> None:
    # The model passes the reference check but cannot load: exit 3 (not 4) proves the inputs came first.
    # (A reference that fails the check, a stat, is reported before the inputs: test_model_ref.py.)
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    proc = diffrun("generate", "-m", str(broken), "-p", "x", "-i", str(tmp_path / "missing.png"))
    assert proc.returncode == 3
    lines = proc.stderr.decode().strip().splitlines()
    assert lines[0].startswith("error:") and "missing.png" in lines[0] and "not found" in lines[0]
    assert b"Traceback" not in proc.stderr


def test_bad_model_exits_4(tmp_path: Path) -> None:
    empty = tmp_path / "empty-model"
    empty.mkdir()
    for model in (str(empty), str(tmp_path / "nowhere"), "nobody/not-a-cached-model"):
        proc = diffrun("generate", "-m", model, "-p", "x", "--device", "cpu")
        assert proc.returncode == 4, proc.stderr
        assert proc.stderr.decode().startswith("error:") and b"Traceback" not in proc.stderr


def test_unknown_param_is_named(tiny_sd: Path, tmp_path: Path) -> None:
    proc = gen(tiny_sd, "-p", "x", "--param", "wobble=3", "-o", str(tmp_path / "x.png"))
    assert proc.returncode == 2 and b"wobble" in proc.stderr and b"Traceback" not in proc.stderr
    assert not (tmp_path / "x.png").exists()


def test_json_error_shape(tmp_path: Path) -> None:
    proc = diffrun("generate", "-m", str(tmp_path / "nowhere"), "-p", "x", "--json")
    assert proc.returncode == 4
    record = json.loads(proc.stdout)
    assert record["status"] == "error" and record["exit"] == 4
    assert "nowhere" in record["error"] and len(record["seeds"]) == 1


@pytest.mark.parametrize("suffix", [".gif", ".mp4"])
def test_image_to_video(tiny_svd: Path, tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"clip{suffix}"
    summary = ok(diffrun("generate", "-m", str(tiny_svd), "-i", str(SAMPLE), "--device", "cpu", "--steps", "2",
                         "--width", "32", "--height", "32", "--frames", "3", "--fps", "4", "-s", "1",
                         "-o", str(out), "--json"))
    assert summary["task"] == "image-to-video" and summary["outputs"] == [str(out)]
    if suffix == ".gif":
        with Image.open(out) as gif:
            assert gif.n_frames == 3
    else:
        import imageio.v3 as iio

        assert len(list(iio.imiter(out))) == 3


def test_size_on_image_to_image_resizes_the_input(tiny_sd: Path, tmp_path: Path) -> None:
    out = tmp_path / "sized.png"
    summary = ok(diffrun("generate", "-m", str(tiny_sd), *FAST, "-i", str(SAMPLE), "-p", "x", "-W", "64", "-H", "32",
                         "-o", str(out), "--json"))
    assert summary["task"] == "image-to-image"
    with Image.open(out) as img:
        assert img.size == (64, 32)
        assert json.loads(img.text["diffrun"])["args"]["width"] == 64


def test_image_to_image_from_a_url_that_answers_503_once(tiny_sd: Path, server, tmp_path: Path) -> None:
    url = server.add("/flaky.png", body=SAMPLE.read_bytes(), content_type="image/png", faults=[503])
    out = tmp_path / "flaky.png"
    summary = ok(gen(tiny_sd, "-p", "x", "-i", url, "-o", str(out), "--json", "--save-inputs", str(tmp_path / "in")))
    assert summary["task"] == "image-to-image"
    assert server.count("/flaky.png") == 2  # the 503, then the retry that worked
    saved = [p for p in (tmp_path / "in").iterdir() if p.suffix == ".png"]
    assert len(saved) == 1 and saved[0].read_bytes() == SAMPLE.read_bytes()
    assert summary["inputs"]["image"][0]["source"] == url


def test_env_json() -> None:
    proc = diffrun("env", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["diffrun"] and info["python"] and info["pillow"]
    assert info["versions"]["torch"] and info["versions"]["diffusers"]
    assert info["offline"] is True and isinstance(info["devices"], list)


def test_ctrl_c_exits_130_and_writes_nothing(server, tiny_sd: Path, tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    from clirun import cli_env

    url = server.add("/hang.png", body=SAMPLE.read_bytes(), content_type="image/png", always="slow", slow=30)
    out = tmp_path / "never.png"
    proc = subprocess.Popen([sys.executable, "-m", "diffrun", "generate", "-m", str(tiny_sd), "-p", "x",
                             "-i", url, "-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=cli_env())
    deadline = time.monotonic() + 60
    while server.count("/hang.png") == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert b"interrupted" in err and b"Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_from_one_of_several_images_remakes_that_image(tiny_sd: Path, tmp_path: Path) -> None:
    summary = ok(gen(tiny_sd, "-p", "owl", "-s", "5", "--num-images", "2", "-o", str(tmp_path / "o-{index}.png"),
                     "--json"))
    first, second = (Path(p) for p in summary["outputs"])
    again = tmp_path / "again.png"
    rerun = ok(diffrun("generate", "--from", str(second), "--device", "cpu", "-o", str(again), "--json"))
    assert rerun["outputs"] == [str(again)] and rerun["seeds"] == [6]
    assert np.array_equal(np.asarray(Image.open(second)), np.asarray(Image.open(again)))
    assert not np.array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(again)))
