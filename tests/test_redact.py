"""What outside text and secrets reach outputs and the terminal: signed URLs recorded without their
credentials (recipes, EXIF/XMP, sidecars, results.jsonl, inputs.jsonl, --json), `--from` asking for
them again, and hostile names and server text printed literally, without control characters, capped."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from clirun import diffrun
from images import png
from rich.console import Console

from diffrun.cli import console
from diffrun.cli import generate as generate_cli
from diffrun.engine.jobrun import recorded_source, unrepeatable_inputs
from diffrun.errors import UsageError
from diffrun.jobs import Job
from diffrun.loaders.redact import display_ref, log_message, redact_text, redact_url, strip_credentials

ESC = b"\x1b"
SECRETS = ("AKIAEXAMPLE", "SECRETTOKEN1", "SECRETSIG1", "FRAGSECRET", "s3cret")
SIGNED_QUERY = ("X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAEXAMPLE%2F20260101&X-Amz-Date=20260101T0000Z"
                "&X-Amz-Security-Token=SECRETTOKEN1&X-Amz-Signature=SECRETSIG1")
FAST = ("--device", "cpu", "--steps", "2", "-W", "32", "-H", "32", "--retries", "0")


def signed(url: str) -> str:
    """`url` as a presigned S3 link with a user:password and a token in the fragment."""
    return url.replace("http://", "http://alice:s3cret@") + "?" + SIGNED_QUERY + "#access_token=FRAGSECRET"


def assert_no_secrets(data: bytes | str, where: str) -> None:
    raw = data.encode() if isinstance(data, str) else data
    for secret in SECRETS:  # also as UTF-16 (EXIF UserComment)
        for encoded in (secret.encode(), secret.encode("utf-16-be"), secret.encode("utf-16-le")):
            assert encoded not in raw, f"{secret} in {where}"


# -- the rule -------------------------------------------------------------------------------------------

ISSUE_KEYS = ["X-Amz-Signature", "X-Amz-Security-Token", "X-Goog-Signature", "X-Goog-Credential", "token",
              "access_token", "sig", "auth", "session", "client_secret", "jwt", "key", "api_key", "signature",
              "password", "x-amz-credential", "apikey", "X-Api-Key", "oauth_signature", "id_token"]


@pytest.mark.parametrize("key", [*ISSUE_KEYS, *(k.upper() for k in ISSUE_KEYS)])
def test_a_credential_key_drops_the_whole_query(key: str) -> None:
    assert redact_url(f"https://h.example/a.png?w=512&{key}=SECRET#x") == ("https://h.example/a.png", ["query"])


def test_what_is_kept_and_what_is_not() -> None:
    assert redact_url("https://cdn.example:8443/p/a.png?w=512&fit=crop#frag") == (
        "https://cdn.example:8443/p/a.png?w=512&fit=crop", [])  # harmless query kept, fragment never
    assert redact_url("https://u:p@h.example/a.png") == ("https://h.example/a.png", ["userinfo"])
    harmless = "https://h.example/a.png?monkey=1&keyword=x"
    assert redact_url(harmless) == (harmless, [])
    assert redact_url("https://h.example/a.png?X%2DAmz%2DSignature=1")[0] == "https://h.example/a.png"  # %-encoded
    # urllib3 ends the host at a backslash: the real host is shown, the decoy is not taken for userinfo
    assert strip_credentials("http://127.0.0.1:9\\@allowed.example/png").startswith("http://127.0.0.1:9\\@")
    assert strip_credentials("ftp://u:p@h/x?token=1") == "ftp://h/x"  # any scheme, also unsupported ones
    assert strip_credentials("http://[::1/x?token=1") == "http://[::1/x"  # unparseable URLs too
    assert strip_credentials("/tmp/a?token=1.png") == "/tmp/a?token=1.png"  # a path is not a URL
    assert display_ref(signed("http://h.example/a.png")) == "http://h.example/a.png"
    assert redact_text("HTTPError: 403 for url: " + signed("http://h/a.png") + " (x)") == \
        "HTTPError: 403 for url: http://h/a.png (x)"
    assert len(log_message("gzip, " * 2000)) == 1000


def test_recipes_record_whole_references_redacted(tmp_path: Path) -> None:
    local = tmp_path / ("d" * 250) / "a.png"  # longer than a message shows: recorded whole
    local.parent.mkdir()
    local.write_bytes(png())
    assert recorded_source(str(local)) == {"source": str(local.resolve())}
    assert recorded_source(signed("http://h/a.png")) == {"source": "http://h/a.png", "redacted": ["userinfo", "query"]}
    assert recorded_source("http://h/a.png?w=1#f") == {"source": "http://h/a.png?w=1"}
    assert recorded_source("data:image/png;base64," + "A" * 400)["source"].endswith("(422 chars)")


# -- --from on a redacted input -------------------------------------------------------------------------

def recipe_file(tmp_path: Path, inputs: dict) -> Path:
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps({"model": "m", "prompt": "fox", "seed": 1, "inputs": inputs}))
    return path


@pytest.mark.parametrize(("inputs", "said", "flag"), [
    ({"image": [{"source": "https://h/a.png", "redacted": ["query"], "sha256": "0" * 64}]}, "a signed URL", "-i"),
    ({"image": [{"source": "https://h/a.png", "redacted": ["userinfo"], "sha256": "0" * 64}]}, "user name", "-i"),
    ({"image": [{"source": "data:image/png;base64,...(99 chars)", "sha256": "0" * 64}]}, "a data: URI", "-i"),
    ({"mask_image": [{"source": "https://h/m.png", "redacted": ["query"], "sha256": "0" * 64}]}, "signed", "--mask"),
])
def test_from_asks_for_an_input_it_cannot_load_again(tmp_path: Path, inputs: dict, said: str, flag: str) -> None:
    path = recipe_file(tmp_path, inputs)
    with pytest.raises(UsageError) as info:
        generate_cli._from_recipe(path, Job())
    assert said in info.value.message and "https://h/" not in info.value.hint
    assert info.value.hint.startswith(f"give it again: {flag}")
    given = Job(image=["new.png"]) if flag == "-i" else Job(mask="new.png")
    job, model, _ = generate_cli._from_recipe(path, given)  # given again: the rerun goes ahead with it
    assert model == "m" and (job.image == ["new.png"] or job.mask == "new.png")


def test_from_keeps_repeatable_inputs() -> None:
    recipe = {"inputs": {"image": [{"source": "https://h/a.png?w=1", "sha256": "0"}, {"source": "/a.png"}]}}
    assert unrepeatable_inputs(recipe) == {}


# -- printing outside text ------------------------------------------------------------------------------

def test_info_lines_print_outside_text_literally(monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = io.StringIO()
    term = Console(file=buffer, force_terminal=True, width=200, highlight=False, soft_wrap=True)
    monkeypatch.setattr(console, "err", term)
    console.info("wrote o[final][/x]\x1b]0;title\x07.png")
    console.error("ConnectionError: for url https://h/a.png?sig=SECRETSIG1 [/b]", "x" * 5000)
    lines = buffer.getvalue().splitlines()
    assert lines[0] == "wrote o[final][/x]?]0;title?.png"
    assert lines[1].endswith(" ConnectionError: for url https://h/a.png [/b]")  # a library's text: redacted
    assert len(lines[2]) < 1100 and len(lines) == 3


def test_progress_bar_shows_status_and_descriptions_as_plain_text(monkeypatch: pytest.MonkeyPatch) -> None:
    from diffrun.cli import batch as batch_cli
    from diffrun.cli import progress

    buffer = io.StringIO()
    monkeypatch.setattr(progress, "err", Console(file=buffer, force_terminal=True, width=300))
    for bar in (batch_cli._progress(True), console.make_progress(True)):
        with bar:
            task = bar.add_task("jobs", total=2, ok=0, failed=0, skipped=0, status="")
            bar.update(task, description="loading /m/[/x]", status="loading /models/[/]\x1b]0;pwned\x07[b]")
            bar.refresh()
    text = buffer.getvalue()
    assert "loading /m/[/x]" in text and "loading /models/[/]?]0;pwned?[b]" in text
    assert "\x1b]0;pwned" not in text


# -- end to end: hostile servers and names through every command -----------------------------------------

REASONS = {"/brackets.png": "[/]", "/esc.png": "\x1b]0;pwned\x07\x1b[31mred\x1b[0m"}


class _Reasons(BaseHTTPRequestHandler):
    """Answers 599 with a reason phrase that is rich markup or terminal escapes."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(599, REASONS.get(self.path.split("?")[0], "unknown"))
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture(scope="module")
def reasons() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Reasons)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def hostile(tmp_path: Path, server, reasons: str) -> dict[str, str]:
    """Every hostile reference, by name; the files and routes they need exist."""
    (tmp_path / "img[final].png").write_bytes(png((32, 32)))
    server.add("/many-gzip.png", png(), content_type="image/png",
               headers={"Content-Encoding": ", ".join(["gzip"] * 1000)})
    server.add("/denied.png", b"no", status=403)
    return {"brackets": reasons + "/brackets.png", "esc": reasons + "/esc.png",
            "missing": str(tmp_path / "missing[/x].png"), "final": str(tmp_path / "img[final].png"),
            "gzip": server.url("/many-gzip.png"), "denied": signed(server.url("/denied.png"))}


def check_printed(proc, code: int) -> tuple[str, str]:
    out, err = proc.stdout.decode(), proc.stderr.decode()
    assert proc.returncode == code, err
    assert ESC not in proc.stdout and ESC not in proc.stderr
    assert "internal error" not in err and "Traceback" not in err
    assert max((len(line) for line in err.splitlines()), default=0) < 1100  # the 1000x gzip line is capped
    return out, err


def test_inspect_prints_hostile_names_and_server_text_literally(hostile: dict[str, str]) -> None:
    proc = diffrun("inspect", "--json", "--retries", "0", *hostile.values())
    out, err = check_printed(proc, 3)
    assert "HTTP 599 [/]" in err and "HTTP 599 ?]0;pwned??[31mred?[0m" in err
    assert "missing[/x].png: not found" in err and "/denied.png: HTTP 403" in err
    assert_no_secrets(proc.stdout + proc.stderr, "inspect's output")
    records = {r["source"]: r for r in map(json.loads, out.splitlines())}
    assert records[hostile["final"]]["ok"]
    assert "pwned" in records[hostile["esc"]]["error"]


def test_inspect_table_shows_hostile_names_literally(hostile: dict[str, str]) -> None:
    proc = diffrun("inspect", "--retries", "0", hostile["missing"], hostile["final"])
    out, err = check_printed(proc, 3)
    assert "img[final].png" in out + err and "missing[/x].png" in out + err


def test_generate_prints_hostile_inputs_literally(hostile: dict[str, str], tiny_sd: Path, tmp_path: Path) -> None:
    for name, said in (("brackets", "HTTP 599 [/]"), ("esc", "HTTP 599 ?]0;pwned?"), ("missing", "missing[/x].png"),
                       ("denied", "/denied.png: HTTP 403")):
        proc = diffrun("generate", "-m", str(tiny_sd), *FAST, "-p", "fox", "-i", hostile[name],
                       "-o", str(tmp_path / "g.png"), "--json")
        out, err = check_printed(proc, 3)
        assert said in err.splitlines()[0], err
        assert json.loads(out)["status"] == "error"
        assert_no_secrets(proc.stdout + proc.stderr, f"generate's output ({name})")


def batch_rows(hostile: dict[str, str], out: Path, signed_ok: str) -> list[dict]:
    rows = [{"id": name, "image": ref} | ({"output": str(out / "o[final].png")} if name == "final" else {})
            for name, ref in hostile.items()]
    return [*rows, {"id": "signed", "image": signed_ok, "output": str(out / "signed.jpg")}]


@pytest.mark.slow
def test_batch_keeps_secrets_out_and_prints_hostile_text_literally(
        hostile: dict[str, str], tiny_sd: Path, tmp_path: Path, server) -> None:
    server.add("/signed.png", png((32, 32)), content_type="image/png")
    out, saved = tmp_path / "out", tmp_path / "saved"
    manifest = tmp_path / "jobs.jsonl"
    rows = batch_rows(hostile, out, signed(server.url("/signed.png")))
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))

    dry = diffrun("batch", str(manifest), "--dry-run", "--retries", "0", "-o", str(out))
    table, _ = check_printed(dry, 3)
    assert "HTTP 599 [/]" in table and "missing[/x].png" in table and "HTTP 599 ?]0;pwned?" in table
    assert_no_secrets(dry.stdout + dry.stderr, "the dry run")

    proc = diffrun("batch", str(manifest), "-m", str(tiny_sd), *FAST, "-p", "fox", "-o", str(out), "--json",
                   "--sidecar", "--save-inputs", str(saved))
    stdout, err = check_printed(proc, 1)
    assert "failed brackets: " in err and "HTTP 599 [/]" in err and "missing[/x].png: not found" in err
    records = {r["id"]: r for r in map(json.loads, stdout.splitlines())}
    assert {i for i, r in records.items() if r["status"] == "ok"} == {"final", "signed"}
    assert records["final"]["outputs"] == [str(out / "o[final].png")]
    assert len(records["gzip"]["error"]["message"]) <= 1000
    assert records["denied"]["error"]["message"].startswith(server.url("/denied.png") + ": HTTP 403")
    for where in (out / "results.jsonl", out / "signed.jpg", out / "signed.jpg.json", saved / "inputs.jsonl"):
        assert_no_secrets(where.read_bytes(), where.name)
    assert_no_secrets(proc.stdout + proc.stderr, "the batch's output")

    jpg = (out / "signed.jpg").read_bytes()  # the recipe is in its EXIF and its XMP, the secrets are not
    assert jpg.count(b"/signed.png") == 2
    recipe = json.loads((out / "signed.jpg.json").read_text())
    assert recipe["inputs"]["image"][0]["source"] == server.url("/signed.png")
    assert recipe["inputs"]["image"][0]["redacted"] == ["userinfo", "query"]
    assert len(recipe["inputs"]["image"][0]["sha256"]) == 64
    logged = [json.loads(line) for line in (saved / "inputs.jsonl").read_text().splitlines()]
    assert server.url("/signed.png") in [line["source"] for line in logged]

    again = diffrun("generate", "--from", str(out / "signed.jpg"), "-o", str(tmp_path / "again.png"))
    _, err = check_printed(again, 2)
    assert "input image was a signed URL" in err and "hint: give it again: -i/--image" in err
    assert not (tmp_path / "again.png").exists()
