"""Request fields of `diffrun serve`, in process: input_options only tighten, references are remote only,
the results store keeps its bounds. (No FastAPI needed: these modules import none.)"""

from __future__ import annotations

import pytest

from diffrun.errors import UsageError
from diffrun.loaders.policy import FetchPolicy
from diffrun.server.fields import FieldError, parse_fields, tightened
from diffrun.server.results import ResultStore

SERVER = FetchPolicy(timeout=30, deadline=120, retries=3, max_bytes=1000, max_pixels=10_000,
                     allow_hosts=("a.example", "b.example"), block_private=True)


def test_input_options_only_tighten():
    loose = tightened(SERVER, {"timeout": 999, "deadline": 0, "retries": 50, "max_input_bytes": "1GB",
                               "max_pixels": 10**9, "block_private": False})
    assert (loose.timeout, loose.deadline, loose.retries, loose.max_bytes, loose.max_pixels) == (30, 120, 3, 1000,
                                                                                                10_000)
    assert loose.block_private is True
    tight = tightened(SERVER, {"timeout": 2, "deadline": "5", "retries": 0, "max_input_bytes": "500",
                               "max_pixels": 64, "background": "#000000"})
    assert (tight.timeout, tight.deadline, tight.retries, tight.max_bytes, tight.max_pixels) == (2, 5, 0, 500, 64)
    assert tight.background == (0, 0, 0)  # applies as given


def test_allow_host_narrows_never_widens():
    assert tightened(SERVER, {"allow_host": ["b.example", "evil.example"]}).allow_hosts == ("b.example",)
    nothing = tightened(SERVER, {"allow_host": ["evil.example"]}).allow_hosts
    assert "evil.example" not in nothing and nothing  # no host in common: none may be fetched
    assert tightened(FetchPolicy(), {"allow_host": "c.example"}).allow_hosts == ("c.example",)
    with pytest.raises(FieldError, match="unknown input option"):
        tightened(SERVER, {"regular_files_only": False})


def test_references_are_urls_or_data_uris_never_paths():
    for ref in ("/etc/passwd", "file:///etc/passwd", "-", "../x.png"):
        with pytest.raises(FieldError, match="not paths"):
            parse_fields({"prompt": "x", "image": ref}, model_ref="m", policy=SERVER, edits=True)
    parsed = parse_fields({"prompt": "x", "image": ["https://a.example/x.png"], "n": 2, "seed": 5,
                           "size": "64x32", "params": {"eta": 0.5, "num_frames": 3}},
                          model_ref="m", policy=SERVER, edits=True)
    job = parsed.job
    assert (job.image, job.num_images, job.seeds, job.width, job.height, job.frames, job.params) == (
        ["https://a.example/x.png"], 2, [5], 64, 32, 3, {"eta": 0.5})


@pytest.mark.parametrize(("fields", "param"), [
    ({"prompt": "x", "n": 11}, "n"), ({"prompt": "x", "seed": -1}, "seed"), ({"prompt": "x", "size": "8x"}, "size"),
    ({"prompt": "x", "frobnicate": 1}, "frobnicate"), ({}, "prompt"), ({"prompt": 3}, "prompt"),
    ({"prompt": "x", "seconds": 4}, "seconds"), ({"prompt": "x", "num_frames": 0}, "num_frames"),
])
def test_bad_fields_name_the_field(fields, param):
    with pytest.raises(FieldError) as caught:
        parse_fields(fields, model_ref="m", policy=SERVER)
    assert caught.value.param == param


def test_params_that_cannot_be_set_are_refused():
    with pytest.raises(UsageError, match="latents"):
        parse_fields({"prompt": "x", "params": {"latents": 1}}, model_ref="m", policy=SERVER)


def test_result_store_bounds_bytes_and_age():
    store = ResultStore(max_bytes=10, ttl=60)
    assert store.put("a", b"12345", "image/png") and store.put("b", b"12345", "image/png")
    assert store.put("c", b"123", "image/png")  # over 10 bytes: the oldest goes
    assert store.get("a") is None and store.get("b") == (b"12345", "image/png") and store.size == 8
    assert not store.put("big", b"x" * 11, "image/png")
    expired = ResultStore(max_bytes=10, ttl=-1)
    expired.put("a", b"1", "image/png")
    assert expired.get("a") is None and expired.size == 0


def test_accepted_connections_get_tcp_nodelay() -> None:
    """asyncio (under uvicorn) sets TCP_NODELAY on accepted connections only when the listening socket's
    protocol is IPPROTO_TCP; without it every answer on a kept-alive connection (the openai client's,
    requests.Session's) waited ~40 ms for the client's delayed ACK."""
    import asyncio
    import socket

    from diffrun.server.runner import ServeOptions, _bind

    listener, url = _bind(ServeOptions(host="127.0.0.1", port=0))
    seen: list[int] = []

    async def main() -> None:
        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen.append(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(accepted, sock=listener)
        _, writer = await asyncio.open_connection(*listener.getsockname()[:2])
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.01)
        writer.close()
        server.close()

    try:
        asyncio.run(main())
    finally:
        listener.close()
    assert url.startswith("http://127.0.0.1:") and seen and seen[0] != 0
