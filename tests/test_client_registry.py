"""The warm-server registry in process: the warm key, the 0700 folder, process identity, addresses."""

from __future__ import annotations

import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from diffrun.client import registry
from diffrun.client.transport import connect
from diffrun.errors import UsageError
from diffrun.pipelines.models import ModelOptions


def test_the_warm_key_holds_every_runtime_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    base = ModelOptions(model="/models/a")
    key = registry.warm_key(base)
    assert registry.warm_key(ModelOptions(model="/models/a")) == key and len(key) == 16
    changed = [replace(base, model="/models/b"), replace(base, revision="r1"), replace(base, variant="fp16"),
               replace(base, device="cpu"), replace(base, dtype="fp16"), replace(base, offload="model"),
               replace(base, scheduler="EulerDiscreteScheduler"), replace(base, loras=[("x", 1.0)]),
               replace(base, loras=[("x", 0.5)]), replace(base, vae_tiling=True), replace(base, vae_slicing=True),
               replace(base, attention_slicing=True), replace(base, compile=True), replace(base, threads=2)]
    keys = {registry.warm_key(runtime) for runtime in changed}
    assert key not in keys and len(keys) == len(changed)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # unset --threads: the server would take it from here
    assert registry.warm_key(base) != key
    lora = tmp_path / "style.safetensors"
    lora.write_bytes(b"x")
    monkeypatch.chdir(tmp_path)  # a relative LoRA path is keyed (and passed on) as the file it names
    assert registry.warm_key(replace(base, loras=[("style.safetensors", 1.0)])) == \
        registry.warm_key(replace(base, loras=[(str(lora), 1.0)]))


def test_the_folder_is_private(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    (tmp_path / "diffrun").mkdir(mode=0o755)
    os.chmod(tmp_path / "diffrun", 0o755)
    folder = registry.runtime_dir()
    assert folder == tmp_path / "diffrun" and stat.S_IMODE(folder.stat().st_mode) == 0o700
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert registry.runtime_dir() == tmp_path / "cache" / "diffrun" / "run"
    long = registry.Paths(tmp_path / ("x" * 120), "0123456789abcdef")
    with pytest.raises(UsageError, match="too long"):
        long.check_length()


def test_a_reused_pid_is_never_taken_for_the_server() -> None:
    me = os.getpid()
    started = registry.process_start(me)
    assert started is not None
    record = registry.Record(key="k", pid=me, start_time=started, model="m", runtime={}, socket="s", log="l",
                             created=0.0, keep_alive=0.0)
    assert registry.alive(record)
    reused = replace(record, start_time=str(int(started) + 1))  # same pid, another process
    assert not registry.alive(reused)
    assert registry.signal_server(reused, 0) is False


def test_records_written_by_strangers_are_ignored(tmp_path: Path) -> None:
    (tmp_path / "aaaa.json").write_text('{"pid": 1}')
    (tmp_path / "bbbb.json").write_text("not json")
    good = registry.Record(key="cccc", pid=os.getpid(), start_time=None, model="m", runtime={}, socket="s",
                           log="l", created=0.0, keep_alive=0.0)
    registry.write_json(tmp_path / "cccc.json", good.to_json())
    assert stat.S_IMODE((tmp_path / "cccc.json").stat().st_mode) == 0o600
    assert [record.key for _, record in registry.records(tmp_path)] == ["cccc"]


@pytest.mark.parametrize("url", ["ftp://host/x", "localhost:8765", "unix:", "http://"])
def test_server_addresses(url: str) -> None:
    with pytest.raises(UsageError):
        connect(url)


def test_a_server_error_is_never_exit_0_and_a_401_says_how_to_pass_the_key() -> None:
    """The exit code in an error body maps back (a bad input on the server is exit 3), but a hostile or
    broken server cannot make a failure exit 0; a 401 tells the user about --api-key."""
    from diffrun.client.remote import error_from
    from diffrun.errors import Exit

    server = connect("http://127.0.0.1:9", None)
    bad_input = error_from(400, {"error": {"message": "x.png: not found", "code": "not_found", "exit": 3}}, server)
    assert bad_input.exit == Exit.INPUT and bad_input.code == "not_found"
    for claimed in (0, False, "0", 999):
        error = error_from(400, {"error": {"message": "fine, really", "code": "c", "exit": claimed}}, server)
        assert error.exit != 0, claimed
    refused = error_from(401, {"error": {"message": "missing or wrong API key", "exit": 2}}, server)
    assert refused.exit == Exit.USAGE and "--api-key" in (refused.hint or "")


def test_ps_settings_tell_two_servers_of_one_model_apart() -> None:
    from diffrun.cli.ps import settings_text

    base = registry.warm_settings(ModelOptions(model="m", device="cpu", dtype="fp32"))
    assert settings_text(base) == "cpu fp32"
    other = registry.warm_settings(ModelOptions(model="m", device="cuda", dtype="fp16", offload="model",
                                                vae_tiling=True, loras=[("style.safetensors", 0.8)]))
    assert settings_text(other) == "cuda fp16 offload=model vae-tiling lora=style.safetensors"
