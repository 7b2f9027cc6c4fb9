"""diffrun's CUDA paths, end to end: dtype auto, fp16 output, offload, out of memory, device index, LoRA.

Every test is marked `cuda` and skipped without a CUDA device (see conftest.py); what a user sees
(exit code, stderr, files) is checked through the real console script in a subprocess.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from clirun import cli_env, diffrun

pytestmark = pytest.mark.cuda

PROMPT = "a lighthouse on a cliff at dawn"
SMALL = ["--steps", "2", "--width", "128", "--height", "128", "--device", "cuda"]


def _pixels(path: Path):
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def _assert_picture(path: Path) -> None:
    """Neither black (what NaN latents decode to) nor one flat colour."""
    pixels = _pixels(path)
    assert pixels.max() > 0 and pixels.std() > 1.0, f"{path}: mean {pixels.mean():.1f}, std {pixels.std():.2f}"


def _lines(stderr: bytes) -> list[str]:
    return [line for line in stderr.decode(errors="replace").splitlines() if line.strip()]


def _manifest(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _records(stdout: bytes) -> dict[str, dict]:
    return {r["id"]: r for r in (json.loads(line) for line in stdout.decode().splitlines() if line.startswith("{"))}


def test_dtype_auto_picks_bf16_where_the_gpu_has_it(sd15: Path, tmp_path: Path) -> None:
    import torch

    from diffrun import pipelines

    expected = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    proc = diffrun("generate", "-m", str(sd15), "-p", PROMPT, "-s", "0", *SMALL, "--dtype", "auto", "--json",
                   "-o", str(tmp_path / "auto.png"))
    assert proc.returncode == 0, proc.stderr.decode()
    summary = json.loads(proc.stdout)
    assert (summary["device"], summary["dtype"]) == ("cuda", expected)
    model = pipelines.load_model(pipelines.ModelOptions(model=str(sd15), device="cuda", dtype="auto"))
    weights = next(model.pipe.unet.parameters())
    assert weights.device.type == "cuda"
    assert weights.dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[expected]


@pytest.mark.parametrize("kind", ["sd15", "sdxl"])
def test_fp16_output_is_a_picture_not_nan(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    model = request.getfixturevalue(kind)
    out = tmp_path / "fp16.png"
    proc = diffrun("generate", "-m", str(model), "-p", PROMPT, "-s", "0", *SMALL, "--dtype", "fp16", "-q",
                   "-o", str(out))
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"invalid value" not in proc.stderr  # numpy's warning when NaN pixels are cast to uint8
    _assert_picture(out)


@pytest.mark.parametrize("offload", ["model", "sequential"])
def test_offload_runs_and_the_pipeline_serves_the_next_job(offload: str, sd15: Path, tmp_path: Path) -> None:
    manifest = _manifest(tmp_path / "jobs.jsonl", [{"id": "first", "prompt": PROMPT, "seed": 1},
                                                   {"id": "second", "prompt": PROMPT + ", at night", "seed": 2}])
    proc = diffrun("batch", str(manifest), "-m", str(sd15), *SMALL, "--offload", offload, "--json",
                   "-o", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr.decode()
    records = _records(proc.stdout)
    assert [records[i]["status"] for i in ("first", "second")] == ["ok", "ok"]
    for job in ("first", "second"):
        _assert_picture(Path(records[job]["outputs"][0]))


def _capped(model: Path, headroom: int = 512 * 2**20):
    """A `diffrun ARGS` runner whose CUDA allocator may hold the model's weights plus `headroom` bytes."""
    import torch

    weights = sum(p.stat().st_size for p in model.rglob("*.safetensors"))
    fraction = min(1.0, (weights + headroom) / torch.cuda.get_device_properties(0).total_memory)
    code = ("import torch\n"
            f"torch.cuda.set_per_process_memory_fraction({fraction!r})\n"
            "from diffrun.cli.app import entry\n"
            "entry()\n")

    def run(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, timeout=600, env=cli_env())

    return run


# 4096x4096 needs gigabytes of activations (the VAE decoder alone, at full resolution) beyond the weights.
HUGE = ["--width", "4096", "--height", "4096"]


def test_a_job_that_cannot_fit_exits_5_with_one_line(sd15: Path, tmp_path: Path) -> None:
    out = tmp_path / "huge.png"
    proc = _capped(sd15)("generate", "-m", str(sd15), "-p", PROMPT, "-s", "0", "--steps", "1", *HUGE,
                         "--device", "cuda", "--dtype", "fp16", "-o", str(out))
    lines = _lines(proc.stderr)
    assert proc.returncode == 5, proc.stderr.decode()
    assert lines[0].startswith("error: out of memory"), lines
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].lstrip().startswith("hint:")), lines
    assert b"Traceback" not in proc.stderr
    assert not out.exists()


def test_a_batch_goes_on_after_a_job_runs_out_of_memory(sd15: Path, tmp_path: Path) -> None:
    manifest = _manifest(tmp_path / "jobs.jsonl", [
        {"id": "huge", "prompt": PROMPT, "seed": 0, "width": 4096, "height": 4096, "steps": 1},
        {"id": "small", "prompt": PROMPT, "seed": 1, "width": 128, "height": 128, "steps": 2},
    ])
    proc = _capped(sd15)("batch", str(manifest), "-m", str(sd15), "--device", "cuda", "--dtype", "fp16", "--json",
                         "-o", str(tmp_path / "out"))
    assert proc.returncode == 1, proc.stderr.decode()
    records = _records(proc.stdout)
    assert records["huge"]["status"] == "failed"
    assert (records["huge"]["error"]["exit"], records["huge"]["error"]["category"]) == (5, "out_of_memory")
    assert records["small"]["status"] == "ok"
    _assert_picture(Path(records["small"]["outputs"][0]))
    assert b"Traceback" not in proc.stderr


def test_a_cuda_index_past_the_last_gpu_is_a_usage_error(sd15: Path, tmp_path: Path) -> None:
    import torch

    device = f"cuda:{torch.cuda.device_count()}"  # cuda:1 on a one-GPU machine
    out = tmp_path / "never.png"
    proc = diffrun("generate", "-m", str(sd15), "-p", PROMPT, "--device", device, "-o", str(out))
    lines = _lines(proc.stderr)
    assert proc.returncode == 2, proc.stderr.decode()
    assert lines[0].startswith("error:") and device in lines[0] and "CUDA device" in lines[0], lines
    assert len(lines) <= 2 and b"Traceback" not in proc.stderr
    assert not out.exists()


def test_a_lora_loads_on_the_gpu_and_changes_the_picture(sd15: Path, tmp_path: Path) -> None:
    pytest.importorskip("peft")
    import fullsize

    from diffrun import outputs, pipelines

    lora = fullsize.make_lora(sd15, tmp_path / "lora.safetensors", rank=4, seed=0)
    base, styled = tmp_path / "base.png", tmp_path / "lora.png"
    for out, extra in ((base, []), (styled, ["--lora", f"{lora}:1.0"])):
        proc = diffrun("generate", "-m", str(sd15), "-p", PROMPT, "-s", "0", *SMALL, *extra, "-q", "-o", str(out))
        assert proc.returncode == 0, proc.stderr.decode()
    assert abs(_pixels(base) - _pixels(styled)).max() > 0
    assert outputs.read_recipe(styled)["model_info"]["loras"] == [[str(lora), 1.0]]
    model = pipelines.load_model(pipelines.ModelOptions(model=str(sd15), device="cuda", loras=[(str(lora), 1.0)]))
    layers = [m for m in model.pipe.unet.modules() if hasattr(m, "lora_A")]
    assert layers and all(p.device.type == "cuda" for m in layers for p in m.lora_A.parameters())
