"""URLs read as the HTTP stack reads them: one strict parse, one loopback check, proxies."""

from __future__ import annotations

import http.server
import threading
from typing import ClassVar

import pytest

from airflow_provider_hilos.exceptions import HilosConfigurationError
from airflow_provider_hilos.hooks.hilos import HilosHook
from tests.conftest import TEST_TOKEN
from tests.helpers import CID


class _Recorder(http.server.BaseHTTPRequestHandler):
    """A loopback server (an HTTP proxy, for these tests) that records what reaches it."""

    seen: ClassVar[list[str]] = []

    def _record(self) -> None:
        type(self).seen.append(f"{self.command} {self.path} {dict(self.headers)}")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    do_GET = do_PATCH = do_CONNECT = _record

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def recorder():
    _Recorder.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    "host",
    [
        "http://api.hilos.io\\.localhost",
        "http://api.hilos.io\\@127.0.0.1",
        "http://127.0.0.1\\@api.hilos.io",
        "http://api.hilos.io%2F.localhost",
        "http://api.hilos.io\t.localhost",
        "http://api.hilos.io .localhost",
        "http://evil.localhost",
        "http://127.0.0.1.nip.io",
        "http://[::ffff:8.8.8.8]",
    ],
)
def test_plain_http_exemption_cannot_be_bypassed_by_a_host_the_two_parsers_read_differently(
    hilos_conn, requests_mock, host
):
    hilos_conn(host=host)
    with pytest.raises(HilosConfigurationError) as err:
        HilosHook().update_conversation(CID, {"status": "NEW"})
    assert "hilos_default" in str(err.value)
    assert not requests_mock.called


@pytest.mark.parametrize(
    "host", ["http://127.0.0.1:8765", "http://localhost:8765/prefix", "http://[::1]:8765", "http://127.9.9.9"]
)
def test_real_loopback_hosts_keep_their_exemption(hilos_conn, host):
    hilos_conn(host=host)
    assert HilosHook().base_url == host


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "127.9.9.9",
        "::1",
        "localhost",
        "evil.localhost",
        "localhost.evil.com",
        "0.0.0.0",
        "api.hilos.io\\.localhost",
        "::ffff:127.0.0.1",
        "10.0.0.1",
    ],
)
def test_the_hook_and_the_sandbox_agree_on_what_loopback_is(hilos_conn, host):
    """One loopback check: plain http is exempt for exactly the hosts the sandbox agrees to listen on."""
    from airflow_provider_hilos.sandbox import HilosSandbox

    try:
        HilosSandbox(host=host)
        sandbox_says_loopback = True
    except ValueError:
        sandbox_says_loopback = False
    hilos_conn(host=f"http://[{host}]:8765" if ":" in host else f"http://{host}:8765")
    try:
        _ = HilosHook().base_url
        hook_says_loopback = True
    except HilosConfigurationError:
        hook_says_loopback = False
    assert hook_says_loopback == sandbox_says_loopback


def test_a_proxy_on_the_way_to_a_plain_http_host_voids_the_loopback_exemption(hilos_conn, recorder, monkeypatch):
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", recorder)
    monkeypatch.setenv("ALL_PROXY", recorder)
    hilos_conn(host="http://127.0.0.1:9")
    with pytest.raises(HilosConfigurationError, match="proxy") as err:
        HilosHook().update_conversation(CID, {"status": "NEW"})
    assert TEST_TOKEN not in str(err.value)
    assert _Recorder.seen == []  # the proxy received nothing, let alone the token


def test_no_proxy_for_loopback_keeps_the_exemption(hilos_conn, recorder, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://192.0.2.1:3128")  # would not answer: it must not be used
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    hilos_conn(host=recorder)
    HilosHook().update_conversation(CID, {"status": "NEW"})
    assert len(_Recorder.seen) == 1 and _Recorder.seen[0].startswith(f"PATCH /api/inbox/conversation/{CID}/update")
