"""Values that pass validation never crash later (issue 10, items 10 and 14): seeds, counts, sizes, NaN,
tensor arguments, byte and time limits, crafted recipes, MemoryError. In process, plus one subprocess
that runs the real entry point on every bad command line and checks what a user sees."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from clirun import cli_env

from diffrun.engine.batch import error_info
from diffrun.engine.jobrun import job_from_recipe
from diffrun.errors import Exit, UsageError
from diffrun.jobs import MAX_SEED, Job, job_problems


def test_seeds_are_0_to_2_64_minus_1_including_the_images_drawn_after_them() -> None:
    assert job_problems(Job(seeds=[0, MAX_SEED])) == []
    assert job_problems(Job(seeds=[MAX_SEED - 1], num_images=2)) == []
    for job in (Job(seeds=[MAX_SEED + 1]), Job(seeds=[-1]), Job(seeds=[MAX_SEED], num_images=2),
                Job(seeds=[MAX_SEED], params={"num_images_per_prompt": 2})):
        [problem] = job_problems(job)
        assert "2**64-1" in problem


def test_images_per_job_are_capped_and_the_cap_can_be_raised() -> None:
    [problem] = job_problems(Job(seeds=[1], num_images=1_000_000_000))
    assert "1000000000 outputs, more than 1000" in problem and "--max-images" in problem
    assert job_problems(Job(seeds=list(range(10)), num_images=100)) == []
    assert job_problems(Job(seeds=list(range(10)), num_images=101), max_images=1010) == []
    assert "integer" in job_problems(Job(seeds=[1], params={"num_images_per_prompt": "many"}))[0]


def test_the_images_per_seed_are_given_once_so_the_cap_sees_them() -> None:
    # --num-images 1 --param num_images_per_prompt=5000 slipped past --max-images and made 5000 images
    # for one planned output (exit 70 when writing).
    for job in (Job(seeds=[1], num_images=1, params={"num_images_per_prompt": 5000}),
                Job(seeds=[1], params={"num_images_per_prompt": 2, "num_videos_per_prompt": 3})):
        assert any("give the count once" in p for p in job_problems(job))
    assert job_problems(Job(seeds=[1], params={"num_images_per_prompt": 5000})) != []  # over the cap


def test_non_finite_numbers_tensor_arguments_and_control_characters_are_refused() -> None:
    flags = {"guidance": "--guidance", "params": "--param", "inputs": "--input", "output": "--output"}
    for job, words in [
        (Job(guidance=float("nan")), "--guidance must be a finite number"),
        (Job(guidance=float("inf")), "--guidance must be a finite number"),
        (Job(strength=float("nan")), "strength must be a finite number"),
        (Job(params={"latents": [1, 2]}), "--param latents: cannot be set"),
        (Job(params={"prompt_embeds": [0.1]}), "--param prompt_embeds: cannot be set"),
        (Job(params={"callback_on_step_end": "x"}), "--param callback_on_step_end"),
        (Job(params={"eta": float("nan")}), "NaN and infinity"),
        (Job(inputs={"latents": ["img.png"]}), "--input latents: not an image argument"),
        (Job(output="a\x00b.png"), "--output must not contain control characters"),
        (Job(width=10**19), "width must be an integer from 1 to 2147483647"),
    ]:
        problems = job_problems(job, names=flags)
        assert len(problems) == 1 and words in problems[0], (job, problems)


def test_loader_limits_and_sizes_that_would_overflow_are_usage_errors() -> None:
    from diffrun.cli.options import fetch_policy
    from diffrun.units import parse_size

    assert fetch_policy(max_input_bytes="4GiB").max_bytes == 4 << 30
    for kw, words in [({"max_input_bytes": "1e19"}, "--max-input-bytes"), ({"max_input_bytes": "1e400"}, "too large"),
                      ({"timeout": "1e19"}, "--timeout"), ({"deadline": "1e400"}, "--deadline")]:
        with pytest.raises(UsageError, match=words):
            fetch_policy(**kw)
    with pytest.raises(UsageError):
        parse_size("1e400")


@pytest.mark.parametrize("recipe, words", [
    ({"seed": "abc"}, "seed must be a non-negative integer"),
    ({"seed": 1, "index": -1}, "index must be"),
    ({"args": ["a", "list"]}, "args must be an object"),
    ({"args": {"num_inference_steps": "ten"}}, "args.num_inference_steps must be an integer"),
    ({"model": 123}, "model must be a string"),
    ({"prompt": ["x"]}, "prompt must be a string"),
    ({"inputs": {"image": [{"sha256": "ab"}]}}, "inputs.image must be a list"),
    ({"inputs": {"image": "x.png"}}, "inputs.image must be a list"),
    ({"inputs": []}, "inputs must be an object"),
])
def test_crafted_recipes_are_bad_recipes_exit_2(recipe, words) -> None:
    with pytest.raises(UsageError, match="bad recipe: " + words) as info:
        job_from_recipe(recipe)
    assert info.value.exit == Exit.USAGE


def test_a_recipe_nested_thousands_deep_is_no_recipe(tmp_path: Path) -> None:
    from diffrun import outputs

    deep = tmp_path / "deep.json"
    deep.write_text('{"a": ' + "[" * 5000 + "]" * 5000 + "}")
    with pytest.raises(UsageError, match="no diffrun recipe"):
        outputs.read_recipe(deep)


def test_memory_error_is_out_of_memory_exit_5_in_results_lines() -> None:
    info = error_info(MemoryError())
    assert (info["exit"], info["category"]) == (5, "out_of_memory")


_CASES = """
import contextlib, io, json, sys
from diffrun.cli.app import main

results = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
    results.append([code, err.getvalue()])
print(json.dumps(results))
"""


def test_bad_values_on_the_command_line_are_one_line_usage_errors(tmp_path: Path) -> None:
    """The real entry point (main) on each bad command line, in one subprocess: exit 2 (or 3 for an input a
    recipe may not read), one line, no model loaded."""
    image = tmp_path / "in.png"
    from images import png

    image.write_bytes(png((8, 8)))
    recipe = tmp_path / "crafted.json"
    recipe.write_text(json.dumps({"model": 123, "prompt": "x", "seed": "abc", "args": ["x"]}))
    fake_model = tmp_path / "fake-model"  # passes the reference check; never loaded (inputs fail first)
    fake_model.mkdir()
    (fake_model / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    sneaky = tmp_path / "sneaky.json"
    sneaky.write_text(json.dumps({"model": str(fake_model), "prompt": "x", "seed": 1,
                                  "inputs": {"image": [{"source": "/proc/self/environ", "sha256": "0"}]}}))
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"id": "a", "prompt": "x"}\n')
    gen = ["generate", "-m", str(tmp_path / "no-model"), "-p", "x", "-o", str(tmp_path / "o.png")]
    cases = [
        (["generate", "--from", str(sneaky), "-o", str(tmp_path / "s.png")], "may not read files in /proc", 3),
        ([*gen, "-s", "-1"], "--seed -1 is out of range"),
        ([*gen, "-s", str(2**64)], "out of range"),
        ([*gen, "-s", str(2**64 - 1), "--num-images", "2"], "passes 2**64-1"),
        ([*gen, "--num-images", "1000000000"], "more than 1000 for one job"),
        ([*gen, "--input", f"latents={image}"], "--input latents: not an image argument"),
        ([*gen, "--param", "latents=[1,2]"], "--param latents: cannot be set"),
        ([*gen, "--max-input-bytes", "1e19"], "--max-input-bytes"),
        ([*gen, "--guidance", "nan"], "--guidance must be a finite number"),
        ([*gen, "--guidance", "inf"], "--guidance must be a finite number"),
        (["generate", "-p", "x", "-o", str(tmp_path / "{seed:>2000000000}.png")], "only bare fields"),
        (["generate", "--from", str(recipe), "-o", str(tmp_path / "r.png")], "bad recipe: model must be a string"),
        (["batch", str(manifest), "-m", "x", "-s", "-1", "-o", str(tmp_path / "b")], "--seed -1 is out of range"),
        (["batch", str(manifest), "-m", "x", "-o", str(tmp_path / "{id}-{seed:>2000000000}.png")], "only bare"),
        # Found in review: each was exit 70, or passed where it should not.
        ([*gen[:-2], "--param", "a=" + "[" * 5000 + "]" * 5000], "nested too deeply"),
        (["generate", "--from", str(tmp_path / "missing.png"), "-o", str(tmp_path / "f.png")], "no such file"),
        (["generate", "-m", str(fake_model), "-p", "x", "-o", "/proc/diffrun-no/x.png"], "output folder", 2),
        (["batch", str(manifest), "--dry-run", "-m", str(tmp_path / "no-model")], "no such file or folder", 4),
    ]
    cases = [case if len(case) == 3 else (*case, 2) for case in cases]
    proc = subprocess.run([sys.executable, "-c", _CASES, json.dumps([case[0] for case in cases])],
                          capture_output=True, env=cli_env(), cwd=tmp_path, timeout=180)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    for (argv, words, expected), (code, err) in zip(cases, json.loads(proc.stdout), strict=True):
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == expected, (argv, err)
        assert lines and lines[0].startswith("error: ") and words in lines[0], (argv, err)
        assert len(lines) <= 2 and "Traceback" not in err, (argv, err)  # the error line and at most a hint
    assert not [p for p in tmp_path.glob("*.png") if p != image] and not (tmp_path / "b").exists()
