"""The app itself: fast start, exit codes, one-line errors, units and option parsing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from clirun import SAMPLE, diffrun

from diffrun.cli import options
from diffrun.errors import UsageError
from diffrun.units import parse_duration, parse_size

HEAVY = ("torch", "diffusers", "transformers")


@pytest.mark.parametrize("argv", [["--help"], ["generate", "--help"], ["batch", "--help"],
                                  ["inspect", str(SAMPLE)], ["inspect", "--json", "nope.png"]])
def test_start_imports_nothing_heavy(argv: list[str]) -> None:
    code = (
        "import sys\nfrom diffrun.cli.app import main\n"
        f"code = main({argv!r})\n"
        f"print(repr([m for m in {HEAVY!r} if m in sys.modules]), code, file=sys.stderr)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("[] "), proc.stderr


@pytest.mark.parametrize("argv", [["--help"], ["generate", "--help"], ["serve", "--help"], ["compare", "--help"]])
def test_help_imports_no_numpy_server_or_http_stack(argv: list[str]) -> None:
    """Every command module is imported to build the app: what they import at the top is paid by every
    one-liner, a --warm one included (numpy alone was a tenth of a second)."""
    later = ("numpy", "fastapi", "uvicorn", "starlette", "requests", "urllib3", "diffrun.pipelines", *HEAVY)
    code = (
        "import sys\nfrom diffrun.cli.app import main\n"
        f"code = main({argv!r})\n"
        f"print(repr([m for m in {later!r} if m in sys.modules]), code, file=sys.stderr)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stderr.strip().splitlines()[-1] == "[] 0", proc.stderr


def test_version_and_help_exit_zero() -> None:
    proc = diffrun("--version")
    assert proc.returncode == 0 and proc.stdout.decode().startswith("diffrun ")
    proc = diffrun("generate", "--help")
    assert proc.returncode == 0 and b"--save-inputs" in proc.stdout


def test_usage_error_is_exit_2_without_traceback() -> None:
    proc = diffrun("inspect", "--retries", "many", str(SAMPLE))
    assert proc.returncode == 2
    assert b"Traceback" not in proc.stderr
    proc = diffrun("inspect", "--max-input-bytes", "ten", str(SAMPLE))
    assert proc.returncode == 2 and b"not a size" in proc.stderr and b"Traceback" not in proc.stderr


def test_inspect_sample_json(tmp_path) -> None:
    proc = diffrun("inspect", "--json", str(SAMPLE), str(tmp_path / "missing.png"))
    assert proc.returncode == 3
    lines = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert [r["ok"] for r in lines] == [True, False]
    keys = {"source", "ok", "format", "width", "height", "mode", "bytes", "sha256", "saved_path", "error"}
    assert keys <= set(lines[0]) and keys <= set(lines[1])
    assert lines[0]["format"] == "PNG" and (lines[0]["width"], lines[0]["height"]) == (128, 128)
    assert "not found" in lines[1]["error"]
    errors = [line for line in proc.stderr.decode().splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "missing.png" in errors[0]
    assert b"Traceback" not in proc.stderr


def test_debug_shows_traceback(tmp_path) -> None:
    proc = diffrun("generate", "--debug", "-m", str(tmp_path / "no-model"), "-p", "x", "--device", "cpu")
    assert proc.returncode == 4
    assert b"Traceback" in proc.stderr


@pytest.mark.parametrize(("text", "value"), [("1024", 1024), ("50MB", 50_000_000), ("2GiB", 2 * 1024**3),
                                             ("1.5kb", 1500), ("10 MiB", 10 * 1024**2)])
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "ten", "5 parsecs", "-3", "0"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        parse_size(text)


def test_parse_duration() -> None:
    assert parse_duration("30") == 30.0
    assert parse_duration("500ms") == 0.5
    assert parse_duration("2m") == 120.0
    with pytest.raises(UsageError):
        parse_duration("soon")


def test_parse_inputs_params_loras() -> None:
    assert options.parse_inputs(["control_image=a.png", "control_image=b.png", "ip_adapter_image=c"]) == {
        "control_image": ["a.png", "b.png"], "ip_adapter_image": ["c"]}
    assert options.parse_params(["eta=0.5", "clip_skip=2", "name=text", "flags=[1,2]"]) == {
        "eta": 0.5, "clip_skip": 2, "name": "text", "flags": [1, 2]}
    assert options.parse_loras(["a/b", "c:0.5", "http://x/y.safetensors:0.8", "d:e"]) == [
        ("a/b", 1.0), ("c", 0.5), ("http://x/y.safetensors", 0.8), ("d:e", 1.0)]
    with pytest.raises(UsageError):
        options.parse_inputs(["no-equals"])
    with pytest.raises(UsageError):
        options.parse_params(["=1"])


def test_fetch_policy_from_options() -> None:
    policy = options.fetch_policy(timeout="2.5", deadline="0", max_input_bytes="1MiB", background="#102030",
                                  allow_host=["Example.COM", " "])
    assert policy.timeout == 2.5 and policy.deadline is None and policy.max_bytes == 1024**2
    assert policy.background == (16, 32, 48) and policy.allow_hosts == ("example.com",)
    with pytest.raises(UsageError):
        options.fetch_policy(background="not-a-colour")


def test_ray_options_exported_for_ray_runs_do_not_stop_a_local_batch(tmp_path) -> None:
    """DIFFRUN_WORKERS in the environment (set for Ray runs) is not a --workers given to a local run;
    the same option on the command line still is a usage error."""
    from clirun import cli_env

    manifest = tmp_path / "jobs.jsonl"
    manifest.write_text('{"prompt": "x"}\n')
    env = {**cli_env(), "DIFFRUN_WORKERS": "3", "DIFFRUN_GPUS_PER_WORKER": "0.5"}
    proc = diffrun("batch", str(manifest), "--dry-run", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    proc = diffrun("batch", str(manifest), "--dry-run", "--workers", "3", cwd=tmp_path)
    assert proc.returncode == 2 and b"--workers is an option of the Ray engine" in proc.stderr
