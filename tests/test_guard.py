"""The opt-in network guard: allowed hosts and private addresses, directly and through fetch()."""

from __future__ import annotations

import ipaddress
import json
import shutil
import socket
import ssl
import subprocess

import pytest
from clirun import diffrun
from loopback import LoopbackServer

from diffrun.errors import Exit, InputError, UsageError
from diffrun.loaders import guard
from diffrun.loaders.guard import Target, allow_host_patterns, check_url, host_allowed, is_blocked
from diffrun.loaders.http import fetch
from diffrun.loaders.policy import FetchPolicy

BLOCK = FetchPolicy(block_private=True)


def test_off_by_default_local_servers_work(server):
    url = server.add("/x.png", b"data")
    check_url(url, FetchPolicy(), display="x")
    assert fetch(url, FetchPolicy()).data == b"data"


@pytest.mark.parametrize(
    ("host", "patterns", "allowed"),
    [
        ("example.com", ("example.com",), True),
        ("EXAMPLE.com", ("example.COM",), True),
        ("example.com.", ("example.com",), True),
        ("cdn.example.com", ("*.example.com",), True),
        ("a.b.example.com", ("*.example.com",), True),
        ("example.com", ("*.example.com",), False),
        ("badexample.com", ("*.example.com",), False),
        ("example.com.evil.net", ("example.com",), False),
        ("evil.net", ("example.com", "*.example.org"), False),
        ("::1", ("[::1]",), True),
    ],
)
def test_host_allowed(host, patterns, allowed):
    assert host_allowed(host, patterns) is allowed


def test_allow_hosts_refuses_other_hosts():
    policy = FetchPolicy(allow_hosts=("images.example.com",))
    check_url("https://images.example.com/a.png", policy, display="a")
    with pytest.raises(InputError) as info:
        check_url("https://evil.example.net/a.png", policy, display="shown")
    assert info.value.source == "shown"
    assert "evil.example.net is not in the allowed hosts" in info.value.reason
    assert info.value.code == "blocked"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://127.0.0.2:8080/x",
        "http://localhost/x",
        "http://[::1]/x",
        "http://10.1.2.3/x",
        "http://192.168.0.1/x",
        "http://172.16.5.4/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://0.0.0.0/x",
        "http://224.0.0.1/x",
        "http://100.64.0.1/x",
        "http://[fe80::1]/x",
        "http://[fc00::1]/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://[::ffff:10.0.0.1]/x",
        "http://[2002:7f00:1::]/x",  # 6to4 around 127.0.0.1
        "http://127.1/x",  # legacy IPv4 forms the resolver takes without DNS
        "http://0x7f.0.0.1/x",
        "http://2130706433/x",
    ],
)
def test_block_private_refuses(url):
    with pytest.raises(InputError) as info:
        check_url(url, BLOCK, display="ref")
    assert "private or reserved address" in info.value.reason
    assert info.value.code == "blocked"


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address):
    assert not is_blocked(ipaddress.ip_address(address))
    host = f"[{address}]" if ":" in address else address
    check_url(f"http://{host}/x.png", BLOCK, display="ref")


def test_block_private_refuses_the_loopback_server_through_fetch(server):
    url = server.add("/x.png", b"data")
    with pytest.raises(InputError) as info:
        fetch(url, BLOCK)
    assert "private or reserved" in info.value.reason
    assert server.count("/x.png") == 0


def test_redirect_hop_is_checked(server):
    # Only 127.0.0.1 is allowed; the redirect goes to "localhost", the same server by another name.
    server.add("/x.png", b"data")
    server.redirect("/hop", f"http://localhost:{server.port}/x.png")
    policy = FetchPolicy(allow_hosts=("127.0.0.1",), backoff=0.001)
    with pytest.raises(InputError) as info:
        fetch(server.url("/hop"), policy)
    assert "localhost is not in the allowed hosts" in info.value.reason
    assert server.count("/hop") == 1
    assert server.count("/x.png") == 0
    # Same-host redirects stay allowed.
    server.redirect("/hop2", "/x.png")
    assert fetch(server.url("/hop2"), policy).data == b"data"


def test_unresolvable_host_with_block_private():
    with pytest.raises(InputError) as info:
        check_url("http://no-such-host.invalid/x", BLOCK, display="ref")
    assert "could not resolve host" in info.value.reason


# --- the guard judges the URL as the connection uses it (issue 10, item 1) ---------------------------


def test_backslash_in_the_host_part_is_refused_with_the_real_host(server):
    # urlsplit reads the host as allowed.example; requests/urllib3 end it at the backslash and connect
    # to 127.0.0.1. Refused (guard on or off) before any request, naming the host really connected to.
    server.add("/%5C@allowed.example/png", b"data")
    url = f"http://127.0.0.1:{server.port}\\@allowed.example/png"
    for policy in (FetchPolicy(allow_hosts=("allowed.example",)), FetchPolicy()):
        with pytest.raises(InputError) as info:
            fetch(url, policy)
        assert info.value.code == "invalid_url"
        assert info.value.reason == ("not a valid URL: a backslash in the host part: a connection would go "
                                     "to 127.0.0.1, not allowed.example")
        assert info.value.source.startswith(f"http://127.0.0.1:{server.port}\\")  # not the decoy either
    assert server.log == []


def test_backslash_decoy_does_not_pass_block_private(server):
    server.add("/%5C@8.8.8.8/png", b"data")
    with pytest.raises(InputError) as info:
        fetch(f"http://127.0.0.1:{server.port}\\@8.8.8.8/png", BLOCK)
    assert "would go to 127.0.0.1" in info.value.reason
    assert server.log == []


@pytest.mark.parametrize("url", ["http://%65vil.example/x", "http://ex%2Eample.com/x"])
def test_hosts_the_parsers_read_differently_are_refused(url):
    # parse_url decodes %65 to "e"; urlsplit does not: the guard would not know which host it judged.
    with pytest.raises(InputError) as info:
        check_url(url, FetchPolicy(allow_hosts=("*.example", "example.com")), display="ref")
    assert info.value.code == "invalid_url"
    assert "by urllib3 but as" in info.value.reason


def test_allow_host_with_a_port_matches_that_port_only(server):
    url = server.add("/x.png", b"data")
    assert fetch(url, FetchPolicy(allow_hosts=(f"127.0.0.1:{server.port}",))).data == b"data"
    with pytest.raises(InputError) as info:
        fetch(url, FetchPolicy(allow_hosts=(f"127.0.0.1:{server.port + 1}",)))
    assert info.value.reason == f"host 127.0.0.1:{server.port} is not in the allowed hosts"
    assert info.value.code == "blocked"
    assert "--allow-host" in info.value.hint
    assert server.count("/x.png") == 1


@pytest.mark.parametrize(
    ("host", "port", "patterns", "allowed"),
    [
        ("example.com", 8443, ("example.com:8443",), True),
        ("example.com", 443, ("example.com:8443",), False),
        ("example.com", 443, ("example.com",), True),
        ("cdn.example.com", 8443, ("*.example.com:8443",), True),
        ("cdn.example.com", 80, ("*.example.com:8443",), False),
        ("::1", 8080, ("[::1]:8080",), True),
        ("::1", 8081, ("[::1]:8080",), False),
        ("127.0.0.1", 80, ("*.0.0.1",), False),  # a *. pattern never matches an IP address
        ("0x7f.0.0.1", 80, ("*.0.0.1",), False),  # ... also not one in a legacy form
        ("127.1", 80, ("127.0.0.1",), True),  # IP addresses match by value
        ("example.com", 80, ("http://example.com", "example.com/x", "example.com:http"), False),
        ("xn--tda.example", 80, ("ü.example",), True),  # names as requests sends them (IDNA)
    ],
)
def test_host_allowed_with_ports_and_addresses(host, port, patterns, allowed):
    assert host_allowed(host, patterns, port=port) is allowed


def test_star_pattern_does_not_let_a_legacy_ip_form_through(server):
    server.add("/x.png", b"data")
    with pytest.raises(InputError) as info:
        fetch(f"http://0x7f.0.0.1:{server.port}/x.png", FetchPolicy(allow_hosts=("*.0.0.1",)))
    assert info.value.code == "blocked"
    assert server.log == []


def test_allow_host_patterns_are_checked():
    assert allow_host_patterns([" Example.COM:8443 ", "", "*.cdn.example", "[::1]:80", "::1"]) == (
        "example.com:8443", "*.cdn.example", "[::1]:80", "::1")
    for bad in ("http://example.com", "example.com/x", "user@example.com", "example.com:0", "example.com:x",
                "*", "a b.com", "[example.com]:80"):
        with pytest.raises(UsageError) as info:
            allow_host_patterns([bad])
        assert "--allow-host" in str(info.value)


def test_environment_proxies_are_not_used_under_the_guard(server, monkeypatch):
    with LoopbackServer() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.base_url)
        monkeypatch.setenv("http_proxy", proxy.base_url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        url = server.add("/x.png", b"data")
        # An unusual max_retry_after, so that this test gets a session made while the variables are set.
        policy = FetchPolicy(allow_hosts=(f"127.0.0.1:{server.port}",), max_retry_after=29.25)
        assert fetch(url, policy).data == b"data"
        assert proxy.log == []
        assert server.count("/x.png") == 1


def test_block_private_connects_to_the_address_it_checked(server, monkeypatch):
    """DNS rebinding: the name resolves once (to an address the guard passes); the connection must use
    that address rather than ask again (here the second answer would be a failure)."""
    real_getaddrinfo = socket.getaddrinfo
    answers = []

    def rebinding(host, port, *args, **kw):
        if host == "rebind.test":
            answers.append(host)
            if len(answers) > 1:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            return real_getaddrinfo("127.0.0.1", port, *args, **kw)
        return real_getaddrinfo(host, port, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    monkeypatch.setattr(guard, "is_blocked", lambda address: False)  # let 127.0.0.1 pass as "public"
    server.add("/x.png", b"data")
    got = fetch(f"http://rebind.test:{server.port}/x.png", FetchPolicy(block_private=True, backoff=0.001))
    assert got.data == b"data"
    assert answers == ["rebind.test"]
    assert server.log[-1].headers["Host"] == f"rebind.test:{server.port}"


def test_check_url_returns_the_checked_addresses():
    assert check_url("http://8.8.8.8:81/x", BLOCK, display="r") == Target("8.8.8.8", 81, ("8.8.8.8",))
    assert check_url("https://[2606:4700:4700::1111]/x", BLOCK, display="r") == Target(
        "2606:4700:4700::1111", 443, ("2606:4700:4700::1111",))
    assert check_url("http://8.8.8.8/x", FetchPolicy(), display="r") is None


def test_a_pinned_connection_without_a_checked_address_refuses_to_connect(server):
    from urllib3.exceptions import NewConnectionError

    from diffrun.loaders.connections import PinnedHTTPConnection

    conn = PinnedHTTPConnection("127.0.0.1", server.port)
    with pytest.raises(NewConnectionError, match="no checked address"):
        conn.connect()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    """A self-signed certificate for pinned.test (made with the openssl command)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=pinned.test",
         "-addext", "subjectAltName=DNS:pinned.test"],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


def test_pinned_https_keeps_sni_and_the_certificate_check(tls_files, monkeypatch):
    cert, key = tls_files
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    real_getaddrinfo = socket.getaddrinfo
    looked_up = []

    def once(host, port, *args, **kw):
        if host.endswith(".test"):
            looked_up.append(host)
            if looked_up.count(host) > 1:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            return real_getaddrinfo("127.0.0.1", port, *args, **kw)
        return real_getaddrinfo(host, port, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", once)
    monkeypatch.setattr(guard, "is_blocked", lambda address: False)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    # An unusual backoff, so that this test gets a session made while REQUESTS_CA_BUNDLE is set.
    policy = FetchPolicy(block_private=True, backoff=0.00123, retries=0)
    with LoopbackServer(tls=context) as tls_server:
        tls_server.add("/x.png", b"secret data")
        got = fetch(f"https://pinned.test:{tls_server.port}/x.png", policy)
        assert got.data == b"secret data"
        assert tls_server.log[-1].headers["Host"] == f"pinned.test:{tls_server.port}"
        # The same server under another name: connected to the same checked address, and still refused,
        # because the certificate is checked against the name in the URL.
        with pytest.raises(InputError) as info:
            fetch(f"https://other.test:{tls_server.port}/x.png", policy)
        assert info.value.code == "connection"
        assert "TLS error" in info.value.reason
        assert len(tls_server.log) == 1


def test_cli_refuses_an_invalid_allow_host_as_a_usage_error():
    from diffrun.cli.options import fetch_policy

    assert fetch_policy(allow_host=["CDN.example.com:8443"]).allow_hosts == ("cdn.example.com:8443",)
    with pytest.raises(UsageError) as info:
        fetch_policy(allow_host=["https://cdn.example.com/"])
    assert info.value.exit == Exit.USAGE


def test_cli_backslash_decoy_is_refused_naming_the_real_host(server):
    server.add("/%5C@allowed.example/png", b"data")
    url = f"http://127.0.0.1:{server.port}\\@allowed.example/png"
    result = diffrun("inspect", url, "--allow-host", "allowed.example", "--json", timeout=60)
    stderr = result.stderr.decode()
    assert result.returncode == Exit.INPUT
    assert "a connection would go to 127.0.0.1, not allowed.example" in stderr
    assert f"error: http://127.0.0.1:{server.port}\\@allowed.example/png: not a valid URL" in stderr
    row = json.loads(result.stdout)  # one row, nothing loaded
    assert row["ok"] is False and row["code"] == "invalid_url" and row["bytes"] is None
    assert server.log == []
