"""examples/ci: the GitHub Actions and GitLab recipes, their shell steps extracted from the files and
run here (all but the installs, which need the network), against the committed goldens."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import yaml
from clirun import cli_env
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CI = ROOT / "examples" / "ci"


def github_steps() -> tuple[list[str], list[str]]:
    """(install commands, the other run: steps) of the workflow's one job."""
    [job] = yaml.safe_load((CI / "github-actions.yml").read_text())["jobs"].values()
    runs = [(step.get("name", ""), step["run"]) for step in job["steps"] if "run" in step]
    return ([r for n, r in runs if n.lower().startswith("install")],
            [r for n, r in runs if not n.lower().startswith("install")])


def gitlab_steps() -> tuple[list[str], list[str]]:
    """(before_script: the installs, script) of the pipeline's one job."""
    [job] = [v for k, v in yaml.safe_load((CI / ".gitlab-ci.yml").read_text()).items() if not k.startswith(".")]
    return job["before_script"], job["script"]


def _normal(command: str) -> str:
    return " ".join(command.replace("\\\n", " ").split())


def test_both_recipes_install_cpu_torch_and_run_the_same_steps() -> None:
    gh_install, gh_steps = github_steps()
    gl_install, gl_steps = gitlab_steps()
    for install in (" ".join(gh_install), " ".join(gl_install)):
        assert "download.pytorch.org/whl/cpu" in install and "install diffrun" in install
    assert [_normal(s) for s in gh_steps] == [_normal(s) for s in gl_steps]
    joined = " ".join(gh_steps)
    assert "--strict" in joined and "--junit" in joined and "diffrun compare" in joined


def _workspace(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A checkout-like folder holding examples/ci, and a PATH whose `diffrun` is this tree's."""
    work = tmp_path / "checkout"
    shutil.copytree(CI, work / "examples" / "ci")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "diffrun"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m diffrun "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    env = cli_env(PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
                  PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return work, env


def _run(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-eo", "pipefail", "-c", command], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_the_recipe_steps_pass_against_the_committed_goldens_and_catch_a_change(tmp_path: Path) -> None:
    work, env = _workspace(tmp_path)
    _, steps = github_steps()
    for command in steps:
        proc = _run(command, work, env)
        assert proc.returncode == 0, f"{command}\n{proc.stderr[-2000:]}"
    report = ET.parse(work / "ci-work" / "junit.xml").getroot()
    assert report.find("testsuite").get("tests") == "3" and report.find("testsuite").get("failures") == "0"
    assert "within PSNR >= 40 dB" in proc.stderr and proc.stdout.count("\n") == 3
    # A golden that no longer matches (a scheduler change shifting the image): the compare step fails.
    golden = work / "examples" / "ci" / "goldens" / "fox.png"
    with Image.open(golden) as img:
        shifted = np.roll(np.asarray(img), 2, axis=1)
    Image.fromarray(shifted).save(golden)
    compare = next(c for c in steps if "diffrun compare" in c)
    failed = _run(compare, work, env)
    assert failed.returncode == 1 and "differ  fox.png" in failed.stdout
    assert (work / "ci-work" / "diff" / "fox.png").is_file()
