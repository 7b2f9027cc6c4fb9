"""Task inference and call checks as a user sees them: the real console script on tiny models, on CPU."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from clirun import SAMPLE, cli_env, diffrun
from PIL import Image

pytestmark = pytest.mark.slow
FAST = ("--device", "cpu", "--steps", "2")


def ok(proc) -> dict:
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    return json.loads(proc.stdout.decode().splitlines()[-1])


def test_readme_video_example_is_sized_from_the_input(tiny_svd: Path, tmp_path: Path) -> None:
    # The README's example, no --width/--height: SVD's class default (1024x576) used to make it run for minutes.
    proc = diffrun("generate", "-m", str(tiny_svd), "-i", str(SAMPLE), "--frames", "4", "--steps", "2",
                   "--device", "cpu", "-o", "clip.mp4", "--sidecar", "--json", cwd=tmp_path, timeout=120)
    summary = ok(proc)
    assert summary["task"] == "image-to-video" and summary["outputs"] == ["clip.mp4"]
    # Nothing from third-party libraries reaches stderr (transformers' torchvision fallback notice did).
    assert "[transformers]" not in proc.stderr.decode() and "torchvision" not in proc.stderr.decode()
    recipe = json.loads((tmp_path / "clip.mp4.json").read_text())
    assert (recipe["args"]["width"], recipe["args"]["height"]) == (32, 32)  # 128x128 into the model's 32x32 area
    import imageio.v3 as iio

    frames = list(iio.imiter(tmp_path / "clip.mp4"))
    assert len(frames) == 4 and frames[0].shape[:2] == (32, 32)


@pytest.fixture
def weightless_sd(tiny_sd: Path, tmp_path: Path) -> Path:
    """The tiny SD folder without its UNet weights: its class is known, its weights cannot load."""
    folder = tmp_path / "weightless"
    shutil.copytree(tiny_sd, folder)
    (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    return folder


def test_argument_checks_that_need_only_the_class_come_before_the_weights(weightless_sd: Path,
                                                                          tmp_path: Path) -> None:
    out = tmp_path / "x.png"
    proc = diffrun("generate", "-m", str(weightless_sd), *FAST, "-p", "x", "--param", "wobble=3", "-o", str(out))
    assert proc.returncode == 2, proc.stderr.decode()  # exit 4 would mean the weights were tried first
    assert "StableDiffusionPipeline does not take argument 'wobble'" in proc.stderr.decode()
    proc = diffrun("generate", "-m", str(weightless_sd), *FAST, "-p", "x", "-i", str(SAMPLE), "--strength", "0.3")
    assert proc.returncode == 2, proc.stderr.decode()
    err = proc.stderr.decode()
    assert "--strength 0.3 × --steps 2 = 0.6 leaves no denoising step" in err and "--steps 4 or more" in err
    assert "Traceback" not in err and not out.exists()
    proc = diffrun("generate", "-m", str(weightless_sd), *FAST, "-p", "x", "-o", str(out))
    assert proc.returncode == 4  # the folder really cannot load


def test_batch_fails_rows_no_pipeline_takes_without_loading_the_model(weightless_sd: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "jobs.jsonl"
    rows = [{"id": "wobbly", "prompt": "a", "params": {"wobble": 1}},
            {"id": "weak", "prompt": "b", "image": str(SAMPLE), "strength": 0.1}]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = diffrun("batch", str(manifest), "-m", str(weightless_sd), *FAST, "-o", str(tmp_path / "out"), "--json")
    assert proc.returncode == 1, proc.stderr.decode()[-2000:]  # jobs failed; 4 would mean the model was loaded
    records = {r["id"]: r for r in map(json.loads, proc.stdout.decode().splitlines())}
    assert records["wobbly"]["status"] == "failed" and "wobble" in records["wobbly"]["error"]["message"]
    assert records["weak"]["error"]["exit"] == 2 and "no denoising step" in records["weak"]["error"]["message"]


def test_controlnet_control_image_by_its_name_recipe_and_rerun(tiny_controlnet: Path, tmp_path: Path) -> None:
    control = tmp_path / "edges.png"
    img = Image.new("RGB", (48, 32), "black")
    img.paste(Image.new("RGB", (2, 32), "white"), (24, 0))
    img.save(control)
    out = tmp_path / "house.png"
    summary = ok(diffrun("generate", "-m", str(tiny_controlnet), *FAST, "-p", "a house", "-s", "3",
                         "--input", f"control_image={control}", "-o", str(out), "--json"))
    assert summary["task"] == "text-to-image" and summary["pipeline"] == "StableDiffusionControlNetPipeline"
    with Image.open(out) as made:
        recipe = json.loads(made.text["diffrun"])
        assert made.size == (32, 24)
    assert list(recipe["inputs"]) == ["control_image"] and recipe["input_arguments"] == {"control_image": "image"}
    again = tmp_path / "again.png"
    ok(diffrun("generate", "--from", str(out), "--device", "cpu", "-o", str(again), "--json"))
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(again)))


def test_a_switch_found_by_naming_does_not_import_the_registry(tiny_ltx: Path) -> None:
    # AutoPipeline's table imports every pipeline module (over a second); naming finds LTX's class without it.
    code = ("import sys; from PIL import Image; from diffrun.pipelines import ModelOptions, Request, load_model, "
            f"plan_task; m = load_model(ModelOptions({str(tiny_ltx)!r}, device='cpu')); "
            "print(plan_task(m, Request('a', None, {'image': Image.new('RGB', (64, 64))}, {}, 0)), "
            "'diffusers.pipelines.auto_pipeline' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.stdout.split() == ["image-to-video", "False"], proc.stderr[-2000:]
