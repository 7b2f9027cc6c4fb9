"""What the CLI prints and where: reports on stdout, progress as plain lines off a terminal, `-o -`
onto a terminal refused, the resumed batch's exit 1 explained, help texts, shell completion."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from clirun import SAMPLE, cli_env, diffrun
from rich.console import Console

from diffrun.cli import progress
from diffrun.cli.batch import failed_earlier_note, summary_table
from diffrun.engine.batch import Summary

FAST = ("--device", "cpu", "--steps", "2", "-W", "32", "-H", "32")
ESC = "\x1b"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def line_progress(**kw) -> tuple[progress.LineProgress, io.StringIO, Clock]:
    buffer, clock = io.StringIO(), Clock()
    console = Console(file=buffer, force_terminal=False, width=80, soft_wrap=True)
    return progress.LineProgress(console=console, get_time=clock, **kw), buffer, clock


# -- progress off a terminal: plain lines, one per phase, at most one a second ------------------------------

def test_line_progress_one_line_per_phase_and_at_most_one_a_second() -> None:
    bar, buffer, clock = line_progress(unit="steps")
    long_path = "/models/" + "x" * 120
    with bar:
        task = bar.add_task("loading model", total=None)
        bar.update(task, description=f"loading {long_path}")  # a new phase: a line at once
        bar.update(task, description="text-to-image seed 7")
        for step in range(1, 21):  # 20 steps in 2 s: 0.1 s apart
            clock.now = step / 10
            bar.update(task, completed=step, total=20)
    lines = buffer.getvalue().splitlines()
    assert lines[0].startswith("loading model")
    assert lines[1].startswith(f"loading {long_path},")  # not cut at 80 columns
    assert lines[2].startswith("text-to-image seed 7")
    steps = [line for line in lines[3:] if "/20 steps" in line]
    assert len(steps) == len(lines) - 3 and 2 <= len(steps) <= 3  # ~one a second, plus the last state
    assert "10/20 steps" in steps[0] and "ETA" in steps[0]  # 1 s in: rate known, so an ETA
    assert steps[-1].startswith("text-to-image seed 7: 20/20 steps") and "ETA" not in steps[-1]
    assert not any(ESC in line or "\r" in line for line in lines)


def test_line_progress_batch_counts_status_and_hostile_text() -> None:
    bar, buffer, clock = line_progress(detail=lambda t: f"{t.fields['ok']} ok, {t.fields['failed']} failed")
    with bar:
        task = bar.add_task("jobs", total=3, ok=0, failed=0, status="")
        bar.update(task, status="loading \x1b[31mmodel\x1b[0m")
        bar.update(task, status="")
        clock.now = 0.2
        bar.update(task, advance=1, ok=1)  # same phase, under a second: no line yet
        clock.now = 0.4
        bar.update(task, advance=1, failed=1)
    lines = buffer.getvalue().splitlines()
    assert lines[0] == "jobs: 0/3 (0 ok, 0 failed), 0.0 s elapsed"
    assert lines[1].startswith("jobs: 0/3 (0 ok, 0 failed), loading ?[31mmodel?[0m, ")
    assert lines[2].startswith("jobs: 0/3 (0 ok, 0 failed), 0.0 s elapsed")
    assert lines[3].startswith("jobs: 2/3 (1 ok, 1 failed), 0.4 s elapsed")  # the last state, at the end
    assert len(lines) == 4 and ESC not in buffer.getvalue()


@pytest.mark.slow
def test_progress_flag_writes_plain_lines_to_a_file(tiny_sd: Path, tmp_path: Path) -> None:
    log = tmp_path / "stderr.txt"
    with log.open("wb") as err:
        proc = subprocess.run([sys.executable, "-m", "diffrun", "generate", "-m", str(tiny_sd), *FAST, "-p", "fox",
                               "-s", "1", "-o", str(tmp_path / "a.png"), "--progress"],
                              stdout=subprocess.PIPE, stderr=err, env=cli_env(), timeout=240)
    text = log.read_text()
    assert proc.returncode == 0, text
    assert ESC not in text and "\r" not in text
    lines = text.splitlines()
    assert any(line.startswith("loading model") for line in lines)
    assert any(line.startswith("text-to-image seed 1: 2/2 steps") for line in lines), text


@pytest.mark.slow
def test_batch_progress_env_then_rerun_names_the_earlier_failure(tiny_sd: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "jobs.jsonl"
    manifest.write_text('{"id": "ok1", "prompt": "a"}\n{"id": "gone", "image": "missing.png"}\n')
    args = [sys.executable, "-m", "diffrun", "batch", str(manifest), "-m", str(tiny_sd), *FAST,
            "-o", str(tmp_path / "out")]
    log = tmp_path / "stderr.txt"
    with log.open("wb") as err:
        first = subprocess.run(args, stdout=subprocess.PIPE, stderr=err, env=cli_env(DIFFRUN_PROGRESS="1"),
                               timeout=240)
    text = log.read_text()
    assert first.returncode == 1, text
    assert ESC not in text and "\r" not in text
    assert "jobs: 2/2 (1 ok, 1 failed, 0 skipped)" in text
    assert "failed gone: " in text and "jobs failed" in text  # the failure, then the summary (stderr)
    assert first.stdout == b""

    # Everything is skipped now, yet the exit is 1: the run says why, even with -q (and no progress).
    second = subprocess.run([*args, "-q"], capture_output=True, env=cli_env(DIFFRUN_PROGRESS="1"), timeout=240)
    err = second.stderr.decode()
    assert second.returncode == 1, err
    assert err.splitlines() == ["error: 1 job failed in an earlier run and was skipped: gone",
                                "  hint: rerun it with --retry-failed (its error is in the results log)"]


def test_summary_names_jobs_that_failed_earlier() -> None:
    summary = Summary(total=12, skipped=12, failed_earlier=[f"j{i}" for i in range(12)])
    out = io.StringIO()
    Console(file=out, width=200).print(summary_table(summary))
    assert "failed in an earlier run" in out.getvalue() and "12" in out.getvalue()
    message, hint = failed_earlier_note(summary.failed_earlier)
    assert message == ("12 jobs failed in an earlier run and were skipped: "
                       "j0, j1, j2, j3, j4, j5, j6, j7, j8, j9 and 2 more")
    assert "--retry-failed" in hint


# -- reports on stdout -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_env_is_a_listing_on_stdout() -> None:
    proc = diffrun("env")
    assert proc.returncode == 0, proc.stderr.decode()
    lines = proc.stdout.decode().splitlines()
    torch_line = [line for line in lines if line.split()[0] == "torch"]
    assert len(torch_line) == 1 and torch_line[0].split()[1][0].isdigit()
    assert any(line.split()[0] == "devices" and "cpu" in line for line in lines)
    assert "{" not in proc.stdout.decode() and proc.stderr == b""


def test_dry_run_table_on_stdout_not_cut_and_escaped(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 90) / "[red]missing[/red].png"  # long, and with rich markup in it
    (tmp_path / "ok.png").write_bytes(SAMPLE.read_bytes())
    manifest = tmp_path / "jobs.jsonl"
    manifest.write_text(json.dumps({"id": "boom", "image": str(deep)}) + "\n"
                        + json.dumps({"id": "fine", "image": "ok.png"}) + "\n")
    proc = diffrun("batch", str(manifest), "--dry-run", "-o", str(tmp_path / "out"))
    out, err = proc.stdout.decode(), proc.stderr.decode()
    assert proc.returncode == 3, err
    assert out.splitlines()[0].split() == ["id", "action", "inputs", "error"]
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert set(rows) == {"boom", "fine"}
    assert str(deep) in rows["boom"] and "failed" in rows["boom"]  # the whole path, markup shown, on one line
    assert rows["fine"].split()[1:3] == ["run", "ok"]
    assert "2 jobs: 2 would run" in err and "2 jobs" not in out  # the count is a log line


# -- -o - onto a terminal ----------------------------------------------------------------------------------

def test_stdout_dash_onto_a_terminal_is_refused_before_the_model(tmp_path: Path) -> None:
    primary, secondary = os.openpty()
    try:
        proc = subprocess.run([sys.executable, "-m", "diffrun", "generate", "-m", str(tmp_path / "no-model"),
                               "-p", "x", "-o", "-"], stdout=secondary, stderr=subprocess.PIPE, env=cli_env(),
                              timeout=60)
    finally:
        os.close(secondary)
        os.close(primary)
    err = proc.stderr.decode()
    assert proc.returncode == 2, err  # not 4: refused before the (missing) model is looked at
    lines = err.splitlines()
    assert lines[0].startswith("error: -o -: stdout is a terminal") and "redirect" in lines[1]


# -- help --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["generate", "batch", "serve", "compare", "tiny-model", "env", "completion"])
def test_help_placeholders_defaults_and_debug(command: str) -> None:
    proc = diffrun(command, "--help", env=cli_env(COLUMNS="250"))
    text = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr.decode()
    assert "<bool>" not in text and "<list[str]>" not in text
    assert "--debug" in text and "-h" in text
    if command in ("generate", "batch"):
        for option in ("--steps", "--guidance", "--strength"):
            line = next(line for line in text.splitlines() if f"{option} " in line)
            assert "[default: pipeline default]" in line, line
        assert "--image  -i      REF " in text


def test_root_help_and_usage_errors_still_point_at_help() -> None:
    proc = diffrun("--help", env=cli_env(COLUMNS="250"))
    assert proc.returncode == 0 and "<bool>" not in proc.stdout.decode() and "completion" in proc.stdout.decode()
    proc = diffrun("generate", "--no-such-option")
    err = proc.stderr.decode()
    assert proc.returncode == 2 and "Try 'diffrun generate -h' for help." in err and "No such option" in err
    assert diffrun("batch", "-h").stdout.decode().count("Usage: diffrun batch") == 1


# -- shell completion --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("shell", "marker"), [("bash", "complete -o default -F _diffrun_completion diffrun"),
                                               ("zsh", "#compdef diffrun"), ("fish", "complete --command diffrun")])
def test_completion_script_is_printed_and_nothing_written(shell: str, marker: str, tmp_path: Path) -> None:
    proc = diffrun("completion", shell, env=cli_env(HOME=str(tmp_path)))
    assert proc.returncode == 0, proc.stderr.decode()
    assert marker in proc.stdout.decode() and "_DIFFRUN_COMPLETE=complete_" + shell in proc.stdout.decode()
    assert list(tmp_path.iterdir()) == []  # no shell start-up file touched


@pytest.mark.parametrize(("shell", "env", "expected"), [
    ("bash", {"COMP_WORDS": "diffrun gen", "COMP_CWORD": "1"}, "generate"),
    ("bash", {"COMP_WORDS": "diffrun generate --ste", "COMP_CWORD": "2"}, "--steps"),
    ("zsh", {"_TYPER_COMPLETE_ARGS": "diffrun batch --retry-f"}, "--retry-failed"),
    ("fish", {"_TYPER_COMPLETE_ARGS": "diffrun ba", "_TYPER_COMPLETE_FISH_ACTION": "get-args"}, "batch"),
])
def test_completion_completes_commands_and_options(shell: str, env: dict[str, str], expected: str) -> None:
    proc = diffrun(env=cli_env(_DIFFRUN_COMPLETE=f"complete_{shell}", **env))
    assert proc.returncode == 0, proc.stderr.decode()
    assert expected in proc.stdout.decode()


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_sources_the_script_and_completes(tmp_path: Path) -> None:
    shim = tmp_path / "diffrun"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m diffrun "$@"\n')
    shim.chmod(0o755)
    script = ('source <(diffrun completion bash); COMP_WORDS=(diffrun generate --neg); COMP_CWORD=2; '
              '_diffrun_completion diffrun; echo "${COMPREPLY[@]}"')
    env = cli_env(PATH=f"{tmp_path}{os.pathsep}{os.environ['PATH']}", HOME=str(tmp_path))
    proc = subprocess.run(["bash", "--norc", "-c", script], capture_output=True, env=env, timeout=60)
    assert proc.stdout.decode().split() == ["--negative-prompt"], proc.stderr.decode()


def _closing(fd: int):
    return lambda: os.close(fd)


def test_a_closed_stdout_is_141_and_a_closed_or_full_stderr_keeps_the_exit_code(tmp_path: Path) -> None:
    # Started with fd 1 closed (`>&-`): exit 141 as for a reader gone away, not a traceback and exit 1.
    for args in (("env",), ("--version",), ("inspect", str(SAMPLE))):
        proc = subprocess.run([sys.executable, "-m", "diffrun", *args], capture_output=False, stderr=subprocess.PIPE,
                              preexec_fn=_closing(1), env=cli_env(), timeout=120)
        assert proc.returncode == 141, (args, proc.stderr.decode())
        assert b"Traceback" not in proc.stderr
    # A reader that goes away before the report is written (`diffrun env | true`): 141, rich's exit 1 was wrong.
    reader = subprocess.Popen(["true"], stdin=subprocess.PIPE)
    reader.wait()
    proc = subprocess.run([sys.executable, "-m", "diffrun", "env"], stdout=reader.stdin, stderr=subprocess.PIPE,
                          env=cli_env(), timeout=120)
    reader.stdin.close()
    assert proc.returncode == 141, proc.stderr.decode()
    # stderr closed (2>&-) or full (2>/dev/full): the logs are lost, the exit code is still the input's 3.
    missing = str(tmp_path / "nope.png")
    closed = subprocess.run([sys.executable, "-m", "diffrun", "inspect", missing], stdout=subprocess.PIPE,
                            preexec_fn=_closing(2), env=cli_env(), timeout=120)
    assert closed.returncode == 3
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "diffrun", "inspect", missing], stdout=subprocess.PIPE,
                              stderr=full, env=cli_env(), timeout=120)
    assert proc.returncode == 3
