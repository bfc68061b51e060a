"""Regression tests for the eight holes an outside audit found (issue 12), one test (or group) each.

Each failed on the code before its fix; the closing note of the issue shows how.
"""

from __future__ import annotations

import http.server
import json
import threading
import uuid
from typing import ClassVar

import pytest

from airflow_provider_hilos.exceptions import HilosAPIError, HilosConfigurationError, HilosValidationError
from airflow_provider_hilos.hooks.hilos import HilosHook
from airflow_provider_hilos.operators.conversation import ConversationUpdateOperator, parse_payload
from tests.conftest import TEST_TOKEN, FakeTI

CID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
URL = f"https://api.hilos.io/api/inbox/conversation/{CID}/update"


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


# 1. allow_insecure_http bypass: the host is checked as the HTTP stack will connect -------------------


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


# 2. A proxy never receives the token in clear text -----------------------------------------------------


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


# 3. Field errors are redacted as parsed data, whatever characters the token holds ----------------------


@pytest.mark.parametrize(
    "token", ['tok"en-7Qx9Zr2Kp5Lm', "tok\\en-7Qx9Zr2Kp5Lm", "tokén-7Qx9Zr2Kp5Lm", 'tö"k\\en-7Qx9Zr2Kp5Lm']
)
def test_an_echoed_token_is_redacted_from_every_part_of_the_error(hilos_conn, requests_mock, token):
    hilos_conn(password=token)
    requests_mock.patch(
        URL,
        status_code=400,
        json={"tags": [{"name": [f"bad tag {token}"]}], token: ["echo"], "detail": f"token {token} refused"},
    )
    with pytest.raises(HilosAPIError) as err:
        HilosHook().update_conversation(CID, {"tags": [{"name": "x"}]})
    error = err.value
    for text in (
        str(error),
        repr(error),
        json.dumps(error.field_errors, ensure_ascii=False),
        str(error.field_errors),
        error.detail or "",
    ):
        assert token not in text
    assert error.field_errors == {"tags": [{"name": ["bad tag ***"]}], "***": ["echo"]}
    assert error.detail == "token *** refused"


# 4. A token that cannot travel in an HTTP header is refused when the connection is read ------------------


@pytest.mark.parametrize("token", ["tok€-7Qx9Zr2Kp5Lm", "tok\u200b-7Qx9Zr2Kp5Lm", "токен-7Qx9Zr2Kp5Lm"])
def test_a_non_latin1_token_is_refused_up_front_without_echoing_it(hilos_conn, requests_mock, token):
    hilos_conn(password=token)
    with pytest.raises(HilosConfigurationError) as err:
        HilosHook().update_conversation(CID, {"status": "NEW"})
    assert "API token" in str(err.value)
    assert token not in str(err.value) and token not in repr(err.value)
    assert not requests_mock.called


# 5. Parse failures are validation errors (no RecursionError, no InvalidJSONError) ----------------------


@pytest.mark.parametrize("text", ["[" * 100_000, '{"status": ' + "[" * 100_000, "{'a': " * 50_000])
def test_a_deeply_nested_payload_string_is_a_validation_error(text):
    with pytest.raises(HilosValidationError) as err:
        parse_payload(text)
    assert err.value.fields == ["payload"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"assigned_team": 10**5000}, "assigned_team"),
        ({"assigned_team": 2**63}, "assigned_team"),
        ({"channel": 0}, "channel"),
        ({"assigned": [{"id": -1}]}, "assigned[0].id"),
        ({"assigned": [{"id": 10**30}]}, "assigned[0].id"),
    ],
)
def test_ids_are_bounded_to_what_the_api_can_store(requests_mock, payload, field):
    with pytest.raises(HilosValidationError) as err:
        HilosHook().update_conversation(CID, payload)
    assert field in err.value.fields
    assert "a whole number from 1 to 9223372036854775807" in dict(err.value.problems)[field]
    assert not requests_mock.called


def test_the_largest_id_the_api_can_store_is_accepted(hilos_conn, requests_mock):
    hilos_conn()
    requests_mock.patch(URL, json={})
    HilosHook().update_conversation(CID, {"assigned_team": 2**63 - 1})
    assert requests_mock.last_request.json() == {"assigned_team": 2**63 - 1}


# 6. Blank tag names, NUL characters and oversized tag lists are refused before sending ---------------


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"tags": [{"name": "   "}]}, "tags[0].name"),
        ({"tags": [{"name": "\t\n"}]}, "tags[0].name"),
        ({"tags": [{"name": "vi\x00p"}]}, "tags[0].name"),
        ({"status": "CLOSED\x00"}, "status"),
        ({"tags": [{"name": f"t{i}"} for i in range(101)]}, "tags"),
    ],
)
def test_blank_names_nul_characters_and_too_many_tags_are_refused_before_sending(requests_mock, payload, field):
    with pytest.raises(HilosValidationError) as err:
        HilosHook().update_conversation(CID, payload)
    assert field in err.value.fields
    assert not requests_mock.called


# 7. The task link only ever points at http(s) ----------------------------------------------------------


@pytest.mark.parametrize(
    "web",
    [
        "javascript:alert(document.cookie)",
        "data:text/html,<script>alert(1)</script>",
        "http://app.hilos.example.com",
        "ftp://app.hilos.io",
        "https://user:pw@app.hilos.io",
        "https://app.hilos.io?x=1",
        "//evil.example.com",
    ],
)
def test_web_base_url_must_be_https_unless_loopback(hilos_conn, requests_mock, web):
    hilos_conn(extra={"web_base_url": web})
    requests_mock.patch(URL, json={})
    with pytest.raises(HilosConfigurationError, match="web_base_url"):
        ConversationUpdateOperator(task_id="t", conversation_id=CID, status="NEW").execute({"ti": FakeTI()})
    assert not requests_mock.called


@pytest.mark.parametrize("web", ["https://app.hilos.io", "https://hilos.example.com/app/", "http://127.0.0.1:3000"])
def test_good_web_base_urls_make_the_link(hilos_conn, requests_mock, web):
    hilos_conn(extra={"web_base_url": web})
    requests_mock.patch(URL, json={})
    ti = FakeTI()
    ConversationUpdateOperator(task_id="t", conversation_id=CID, status="NEW").execute({"ti": ti})
    assert ti.pushed["hilos_conversation_url"] == f"{web.rstrip('/')}/inbox/conversation/{CID}"


# 8. The value checked is the value sent ----------------------------------------------------------------


class _LyingStr(str):
    def __str__(self) -> str:
        return "../../admin"


class _LyingUUID(uuid.UUID):
    def __str__(self) -> str:
        return "../../admin"


@pytest.mark.parametrize(
    "conversation_id",
    [_LyingStr(CID), _LyingStr(CID.upper()), _LyingUUID(CID)],
    ids=["str subclass", "upper str subclass", "UUID subclass"],
)
def test_the_id_checked_is_the_id_sent(hilos_conn, requests_mock, conversation_id):
    hilos_conn()
    requests_mock.patch(URL, json={})
    HilosHook().update_conversation(conversation_id, {"status": "NEW"})
    assert requests_mock.last_request.url == URL
    ti = FakeTI()
    ConversationUpdateOperator(task_id="t", conversation_id=conversation_id, status="NEW").execute({"ti": ti})
    assert requests_mock.last_request.url == URL
    assert ti.pushed["hilos_conversation_url"].endswith(f"/inbox/conversation/{CID}")
