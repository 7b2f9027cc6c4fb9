"""The opt-in network guard: allowed hosts and private addresses, directly and through fetch()."""

from __future__ import annotations

import ipaddress

import pytest

from diffrun.errors import InputError
from diffrun.loaders.guard import check_url, host_allowed, is_blocked
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
    ],
)
def test_block_private_refuses(url):
    with pytest.raises(InputError) as info:
        check_url(url, BLOCK, display="ref")
    assert "private or reserved address" in info.value.reason


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
