"""The model reference is checked before torch is imported, and model errors read `<model>: <reason>`."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from clirun import cli_env

from diffrun.errors import ModelError
from diffrun.pipelines.reference import check_model_ref, is_hub_id, model_error, shown

COMMIT = "0123456789abcdef0123456789abcdef01234567"
INDEX = b'{"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.30.0"}'
HEAVY = ("torch", "diffusers", "transformers")


def cache_repo(cache: Path, repo: str, files: dict[str, bytes] | Path, *, ref: str = "main") -> Path:
    """A hub cache entry laid out as huggingface_hub lays it out: refs/REF -> snapshots/COMMIT/."""
    entry = cache / f"models--{repo.replace('/', '--')}"
    snapshot = entry / "snapshots" / COMMIT
    if isinstance(files, Path):
        shutil.copytree(files, snapshot)
    else:
        snapshot.mkdir(parents=True)
        for name, data in files.items():
            (snapshot / name).write_bytes(data)
    (entry / "refs").mkdir(exist_ok=True)
    (entry / "refs" / ref).write_text(COMMIT)
    return snapshot


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty hub cache for this test, offline (huggingface_hub reads its cache folder at import)."""
    from huggingface_hub import constants

    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_accepts_a_folder_a_checkpoint_and_a_cached_hub_id(tmp_path: Path, hub_cache: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "sd"
    folder.mkdir()
    (folder / "model_index.json").write_bytes(INDEX)
    (tmp_path / "model.safetensors").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    assert (check_model_ref("sd").kind, check_model_ref("sd").ref) == ("folder", str(folder))
    assert (check_model_ref("./model.safetensors").kind, check_model_ref("./model.safetensors").ref) == (
        "file", str(tmp_path / "model.safetensors"))
    cache_repo(hub_cache, "org/tiny", {"model_index.json": INDEX})
    cache_repo(hub_cache, "org/tagged", {"model_index.json": INDEX}, ref="v1")
    assert check_model_ref("org/tiny").kind == "hub"
    assert check_model_ref("org/tiny", revision=COMMIT).kind == "hub"
    assert check_model_ref("org/tagged", revision="v1").kind == "hub"
    with pytest.raises(ModelError, match=r"^org/tagged: not in the local cache at revision main and offline"):
        check_model_ref("org/tagged", revision="main")


@pytest.mark.parametrize(("make", "reason", "code"), [
    ("missing", "no such file or folder", "not_found"),
    ("bare-name", "no such file or folder", "not_found"),
    ("missing-checkpoint", "no such file or folder", "not_found"),
    ("empty-folder", "not a diffusers pipeline folder (no model_index.json)", "not_a_model"),
    ("bad-index", "model_index.json is not valid JSON (", "not_a_model"),
    ("classless-index", "model_index.json names no pipeline class (_class_name)", "not_a_model"),
    ("text-file", "not a checkpoint file (expected .safetensors", "not_a_model"),
    ("index-file", "this is the pipeline's index, not the model", "not_a_model"),
    ("url", "a URL is not a model reference", "unsupported"),
    ("uncached-hub-id", "not in the local cache and offline mode is on (HF_HUB_OFFLINE)", "not_cached"),
])
def test_rejects_what_cannot_load_in_one_line(make: str, reason: str, code: str, tmp_path: Path,
                                              hub_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "sd").mkdir()
    (tmp_path / "sd" / "model_index.json").write_bytes(INDEX)
    for name, index in (("bad", "{not json"), ("classless", '{"unet": ["diffusers", "UNet2DModel"]}')):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model_index.json").write_text(index)
    ref = {"missing": "./nonexistent", "bare-name": "nonexistent", "missing-checkpoint": "org/model.safetensors",
           "empty-folder": "./empty", "bad-index": "bad", "classless-index": "classless", "text-file": "notes.txt",
           "index-file": "sd/model_index.json", "url": "https://example.com/model.safetensors",
           "uncached-hub-id": "nobody/no-such-model"}[make]
    with pytest.raises(ModelError) as err:
        check_model_ref(ref)
    assert err.value.message.startswith(f"{ref}: {reason}")
    assert "\n" not in err.value.message and err.value.exit == 4 and err.value.code == code
    assert err.value.hint is None or "\n" not in err.value.hint


def test_online_an_uncached_hub_id_is_let_through(hub_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    assert check_model_ref("nobody/no-such-model").kind == "hub"  # it may download
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")  # huggingface_hub honours this one too
    with pytest.raises(ModelError, match="offline mode is on"):
        check_model_ref("nobody/no-such-model")


@pytest.mark.parametrize(("ref", "ok"), [
    ("org/name", True), ("Org-1/name.v2_x", True), ("a/..", False), ("a--b/c", False), ("-a/b", False),
    ("a/b/c", False), ("a/b.", False), ("ä/b", False), ("a/" + "x" * 97, False), ("name", False),
])
def test_hub_ids_are_spelt_as_the_hub_spells_them(ref: str, ok: bool) -> None:
    assert is_hub_id(ref) is ok


def test_shown_strips_credentials_controls_and_length() -> None:
    assert shown("https://user:secret@host/m.safetensors?token=abc&x=1") == "https://host/m.safetensors?token=***&x=1"
    assert shown("./evil\x1b[2J\rname") == "./evil?[2J?name"
    long = shown("/" + "d" * 1000 + "/end")
    assert len(long) <= 200 and long.endswith("/end") and "..." in long
    err = model_error("https://u:p@h/x\x1b", "broken\x07 here")
    assert err.message == "https://h/x?: broken? here" and err.exit == 4


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_cli(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str, str, list[str]]:
    """The real console script under -X importtime: (exit code, stdout, stderr without the import lines,
    the heavy modules it imported)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "diffrun", *args], capture_output=True,
                          cwd=cwd, env=env, timeout=120)
    stderr = proc.stderr.decode()
    imported = {line.rsplit("|", 1)[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}
    ours = "\n".join(line for line in stderr.splitlines() if not line.startswith("import time:"))
    return proc.returncode, proc.stdout.decode(), ours, sorted(m for m in HEAVY if m in imported)


def _assert_one_error(stderr: str, prefix: str) -> None:
    lines = stderr.splitlines()
    assert lines and lines[0].startswith(prefix), stderr
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("  hint: ")), stderr


@pytest.mark.parametrize("command", ["generate", "batch"])
@pytest.mark.parametrize(("ref", "reason"), [
    ("./nonexistent", "no such file or folder"),
    ("./empty", "not a diffusers pipeline folder"),
    ("notes.txt", "not a checkpoint file"),
    ("not/cached", "not in the local cache and offline mode is on"),
])
def test_bad_reference_fails_before_torch_is_imported(command: str, ref: str, reason: str, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "jobs.jsonl").write_text('{"prompt": "a fox"}\n')
    args = ["generate", "-p", "a fox"] if command == "generate" else ["batch", "jobs.jsonl", "-o", "out"]
    env = cli_env(HF_HUB_CACHE=str(tmp_path / "hub-cache"))
    code, _out, err, heavy = _run_cli([*args, "-m", ref], tmp_path, env)
    assert code == 4, err
    shown_ref = str((tmp_path / ref).resolve()) if (tmp_path / ref).exists() else ref
    _assert_one_error(err, f"error: {shown_ref}: {reason}")
    assert heavy == []
    assert not (tmp_path / "out").exists()


def test_reference_is_checked_before_the_inputs(tmp_path: Path) -> None:
    """A stat costs nothing, an input may cost a download: with both wrong, the model is named (exit 4)."""
    code, out, err, heavy = _run_cli(["generate", "-m", "./nonexistent", "-i", "missing.png", "-p", "x", "--json"],
                                     tmp_path, cli_env())
    assert code == 4 and heavy == []
    _assert_one_error(err, "error: ./nonexistent: no such file or folder")
    assert json.loads(out) == {"status": "error", "exit": 4, "error": "./nonexistent: no such file or folder",
                               "seeds": json.loads(out)["seeds"]}


def test_hub_unreachable_is_said_in_our_words(tmp_path: Path) -> None:
    env = cli_env(HF_ENDPOINT=f"http://127.0.0.1:{_closed_port()}", HF_HUB_ETAG_TIMEOUT="2",
                  HF_HUB_DOWNLOAD_TIMEOUT="2", HF_HUB_CACHE=str(tmp_path / "hub-cache"), HF_HUB_DISABLE_TELEMETRY="1")
    del env["HF_HUB_OFFLINE"], env["TRANSFORMERS_OFFLINE"]
    code, out, err, _heavy = _run_cli(["generate", "-m", "nobody/no-such-model", "-p", "x", "--device", "cpu",
                                       "--json"], tmp_path, env)
    assert code == 4, err
    _assert_one_error(err, "error: nobody/no-such-model: not in the local cache and the hub is unreachable")
    assert "hf download nobody/no-such-model" in err and "local pipeline folder" in err
    assert "local_files_only" not in err and "Cannot load model" not in err
    assert json.loads(out)["error"] == "nobody/no-such-model: not in the local cache and the hub is unreachable"


@pytest.mark.parametrize(("status", "headers", "reason", "code"), [
    (404, {"X-Error-Code": "RepoNotFound"}, "not found on the hub", "hub_not_found"),
    (403, {"X-Error-Code": "GatedRepo"}, "a gated repo on the hub", "hub_gated"),
    (404, {"X-Error-Code": "RevisionNotFound"}, "revision v9 not found on the hub", "hub_revision_not_found"),
    (400, {}, "the hub answered HTTP 400", "hub_http_status"),
])
def test_hub_answers_become_reasons(server, status: int, headers: dict, reason: str, code: str,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Real huggingface_hub errors, from a real client talking to a loopback "hub"."""
    from huggingface_hub import HfApi, constants

    from diffrun.pipelines.loading import _hub_reason

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # read at import; this test talks to loopback
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE")
    server.add("/api/models/org/name/revision/v9", b'{"error": "no"}', status=status, headers=headers,
               content_type="application/json")
    with pytest.raises(Exception) as err:  # the hub's own error type is what is being classified
        HfApi(endpoint=server.base_url).model_info("org/name", revision="v9")
    found = _hub_reason(err.value, "v9")
    assert found is not None and found[0].startswith(reason) and found[1] == code


def test_cached_hub_id_loads_offline_and_a_partial_one_says_what_is_missing(tiny_sd: Path, hub_cache: Path) -> None:
    from diffrun.pipelines import ModelOptions, load_model

    cache_repo(hub_cache, "org/tiny", tiny_sd)
    model = load_model(ModelOptions("org/tiny", device="cpu", dtype="fp32"))
    assert type(model.pipe).__name__ == "StableDiffusionPipeline" and model.info["model"] == "org/tiny"
    partial = cache_repo(hub_cache, "org/partial", tiny_sd)
    shutil.rmtree(partial / "unet")
    with pytest.raises(ModelError) as err:
        load_model(ModelOptions("org/partial", device="cpu", dtype="fp32"))
    assert err.value.message.startswith("org/partial: not fully in the local cache and offline mode is on")
    assert err.value.code == "not_cached" and "hf download org/partial" in err.value.hint
