"""The hilos connection: Base URL, family, extras and their checks, and what the errors say."""

from __future__ import annotations

import json

import pytest

from airflow_provider_hilos.exceptions import (
    HilosConfigurationError,
    HilosPermanentAPIError,
)
from airflow_provider_hilos.hooks.hilos import HilosHook
from airflow_provider_hilos.operators.conversation import ConversationUpdateOperator
from tests.conftest import TEST_TOKEN, FakeTI
from tests.helpers import CID, EDIT, URL


@pytest.mark.parametrize(
    ("host", "expected_url"),
    [
        (None, f"https://api.hilos.io/api/inbox/conversation/{CID}/update"),
        ("", f"https://api.hilos.io/api/inbox/conversation/{CID}/update"),
        ("api.hilos.io", f"https://api.hilos.io/api/inbox/conversation/{CID}/update"),
        ("https://api.hilos.io///", f"https://api.hilos.io/api/inbox/conversation/{CID}/update"),
        (
            "https://acme.api-us1.com/api/3/",
            f"https://acme.api-us1.com/api/3/channel/whatsapp/inbox/conversation/{CID}/update",
        ),
        ("acme.api-us1.com/api/3", f"https://acme.api-us1.com/api/3/channel/whatsapp/inbox/conversation/{CID}/update"),
        (
            "https://acme.activehosted.com",
            f"https://acme.activehosted.com/channel/whatsapp/inbox/conversation/{CID}/update",
        ),
        ("https://hilos.example.com/proxy", f"https://hilos.example.com/proxy/api/inbox/conversation/{CID}/update"),
        ("http://127.0.0.1:8765", f"http://127.0.0.1:8765/api/inbox/conversation/{CID}/update"),
        ("http://localhost:8765/prefix", f"http://localhost:8765/prefix/api/inbox/conversation/{CID}/update"),
    ],
)
def test_base_url_from_host_and_the_family_it_implies(hilos_conn, requests_mock, host, expected_url):
    hilos_conn(host=host)
    requests_mock.patch(expected_url, json=EDIT)
    HilosHook().update_conversation(CID, {"status": "NEW"})
    assert requests_mock.last_request.url == expected_url


@pytest.mark.parametrize(
    ("host", "family", "expected_url"),
    [
        (
            "https://api.hilos.io",
            "activecampaign",
            f"https://api.hilos.io/channel/whatsapp/inbox/conversation/{CID}/update",
        ),
        (
            "https://acme.api-us1.com/api/3",
            "hilos",
            f"https://acme.api-us1.com/api/3/api/inbox/conversation/{CID}/update",
        ),
        (
            "https://acme.api-us1.com/api/3",
            "AUTO",
            f"https://acme.api-us1.com/api/3/channel/whatsapp/inbox/conversation/{CID}/update",
        ),
        (
            "http://127.0.0.1:9",
            "activecampaign",
            f"http://127.0.0.1:9/channel/whatsapp/inbox/conversation/{CID}/update",
        ),
    ],
)
def test_api_family_chosen_explicitly(hilos_conn, requests_mock, host, family, expected_url):
    hilos_conn(host=host, extra={"api_family": family})
    requests_mock.patch(expected_url, json=EDIT)
    HilosHook().update_conversation(CID, {"status": "NEW"})
    assert requests_mock.last_request.url == expected_url


def test_an_unknown_api_family_is_explained(hilos_conn, requests_mock):
    hilos_conn(extra={"api_family": "native"})
    with pytest.raises(HilosConfigurationError, match="extra api_family is not one of auto, hilos, activecampaign"):
        HilosHook().update_conversation(CID, {"status": "NEW"})
    assert not requests_mock.called


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"max_attempt": 3}, "unknown extra 'max_attempt' (did you mean 'max_attempts'?)"),
        ({"extra__hilos__read_timout": 5}, "unknown extra 'extra__hilos__read_timout' (did you mean 'read_timeout'?)"),
        ({"proxies": {"https": "http://proxy:3128"}, "api_family": "auto"}, "unknown extra 'proxies';"),
    ],
)
def test_unknown_extras_are_reported_by_name(hilos_conn, requests_mock, extra, expected):
    hilos_conn(extra=extra)
    with pytest.raises(HilosConfigurationError) as caught:
        HilosHook().update_conversation(CID, {"status": "NEW"})
    message = str(caught.value)
    assert expected in message
    assert "the extras it reads are api_family, header_name" in message
    assert "proxy:3128" not in message  # names only: an extra's value may be a secret
    assert not requests_mock.called


def test_an_extra_that_is_not_an_object_is_refused(monkeypatch, requests_mock):
    monkeypatch.setenv(
        "AIRFLOW_CONN_HILOS_DEFAULT",
        json.dumps({"conn_type": "hilos", "host": "https://api.hilos.io", "password": TEST_TOKEN, "extra": [1, 2]}),
    )
    with pytest.raises(HilosConfigurationError, match="its extra must be a JSON object"):
        HilosHook().update_conversation(CID, {"status": "NEW"})
    assert not requests_mock.called


def test_uri_form_connection_keeps_path_prefix(monkeypatch, requests_mock):
    monkeypatch.setenv("AIRFLOW_CONN_HILOS_DEFAULT", f"hilos://:{TEST_TOKEN}@acme.api-us1.com/api%2F3")
    requests_mock.patch(f"https://acme.api-us1.com/api/3/channel/whatsapp/inbox/conversation/{CID}/update", json=EDIT)
    assert HilosHook().update_conversation(CID, {"status": "NEW"}) == EDIT


def test_header_name_and_prefix_configurable(hilos_conn, requests_mock):
    hilos_conn(host="https://acme.api-us1.com/api/3", extra={"header_name": "Token", "auth_scheme": ""})
    requests_mock.patch(f"https://acme.api-us1.com/api/3/channel/whatsapp/inbox/conversation/{CID}/update", json=EDIT)
    HilosHook().update_conversation(CID, {"status": "NEW"})
    headers = requests_mock.last_request.headers
    assert headers["Token"] == TEST_TOKEN
    assert "Authorization" not in headers


def test_old_style_prefixed_extras_are_read(hilos_conn, requests_mock):
    hilos_conn(extra={"extra__hilos__auth_scheme": "Bearer", "extra__hilos__read_timeout": "12"})
    requests_mock.patch(URL, json=EDIT)
    hook = HilosHook()
    hook.update_conversation(CID, {"status": "NEW"})
    assert requests_mock.last_request.headers["Authorization"] == f"Bearer {TEST_TOKEN}"
    assert hook.timeout == (10.0, 12.0)


@pytest.mark.parametrize(
    ("conn", "match"),
    [
        ({"password": None}, "has no API token"),
        ({"password": "   "}, "has no API token"),
        ({"password": "two words"}, "spaces or control characters"),
        ({"host": "ftp://api.hilos.io"}, "scheme 'ftp'"),
        ({"host": "https://api.hilos.io/?x=1"}, "query string or fragment"),
        ({"host": "https://api.hilos.io/#frag"}, "query string or fragment"),
        ({"host": "https://user:pw@api.hilos.io"}, "contains credentials"),
        ({"host": "http://192.0.2.10"}, "clear text"),  # an address: no name to resolve
        ({"host": "https://api.hilos.io:99999"}, "not a valid URL"),
        ({"extra": {"read_timeout": "soon"}}, "extra read_timeout is not a number"),
        ({"extra": {"connect_timeout": 0}}, "must be greater than 0"),
        ({"extra": {"max_attempts": 0}}, "must be at least 1"),
        ({"extra": {"max_attempts": 2.5}}, "is not a whole number"),
        ({"extra": {"header_name": "Bad Header"}}, "is not an HTTP header name"),
    ],
)
def test_connection_mistakes_are_explained(hilos_conn, requests_mock, conn, match):
    hilos_conn(**conn)
    with pytest.raises(HilosConfigurationError, match=match) as err:
        HilosHook().update_conversation(CID, {"status": "NEW"})
    assert "hilos_default" in str(err.value)
    assert TEST_TOKEN not in str(err.value)
    assert not requests_mock.called


def test_plain_http_to_remote_host_allowed_only_when_asked(hilos_conn, requests_mock):
    hilos_conn(host="http://hilos.internal", extra={"allow_insecure_http": True})
    requests_mock.patch(f"http://hilos.internal/api/inbox/conversation/{CID}/update", json=EDIT)
    assert HilosHook().update_conversation(CID, {"status": "NEW"}) == EDIT


@pytest.mark.parametrize("token", ["tok€-7Qx9Zr2Kp5Lm", "tok\u200b-7Qx9Zr2Kp5Lm", "токен-7Qx9Zr2Kp5Lm"])
def test_a_non_latin1_token_is_refused_up_front_without_echoing_it(hilos_conn, requests_mock, token):
    hilos_conn(password=token)
    with pytest.raises(HilosConfigurationError) as err:
        HilosHook().update_conversation(CID, {"status": "NEW"})
    assert "API token" in str(err.value)
    assert token not in str(err.value) and token not in repr(err.value)
    assert not requests_mock.called


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


def test_missing_host_means_the_hilos_api(hilos_conn):
    hilos_conn(host=None)
    assert HilosHook().base_url == "https://api.hilos.io"


# -- audit 2: points 10, 11, 15 and 16 -----------------------------------------------------------------------

SECRET = "hk_live_9f8e7d6c5b4a39281706f5e4d3c2b1a0"


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"auth_scheme": f"Token {SECRET}"}, "auth_scheme"),
        ({"header_name": f"X {SECRET}"}, "header_name"),
        ({"header_name": SECRET + "é"}, "header_name"),
        ({"web_base_url": f"ftp://{SECRET}.example.com"}, "web_base_url"),
        ({"web_base_url": f"https://example.com/?k={SECRET}"}, "web_base_url"),
        ({"connect_timeout": SECRET}, "connect_timeout"),
        ({"read_timeout": SECRET}, "read_timeout"),
        ({"max_attempts": SECRET}, "max_attempts"),
        ({"max_requests_per_second": SECRET}, "max_requests_per_second"),
        ({"api_family": SECRET}, "api_family"),
    ],
)
def test_a_secret_pasted_into_another_field_is_never_echoed(hilos_conn, extra, field):
    hilos_conn(extra=extra)
    with pytest.raises(HilosConfigurationError) as caught:
        _ = HilosHook().settings
    assert field in str(caught.value)
    assert SECRET not in str(caught.value) and SECRET[:12] not in str(caught.value)


@pytest.mark.parametrize(
    "host", [f"https://api.hilos.io/?key={SECRET}", f"https://api.hilos.io/#{SECRET}", f"gopher://{SECRET}"]
)
def test_a_base_url_error_does_not_echo_the_url(hilos_conn, host):
    hilos_conn(host=host)
    with pytest.raises(HilosConfigurationError, match="Base URL") as caught:
        _ = HilosHook().settings
    assert SECRET not in str(caught.value)


def test_a_number_out_of_range_is_shown_as_the_number(hilos_conn):
    hilos_conn(extra={"read_timeout": -3})
    with pytest.raises(HilosConfigurationError, match="read_timeout=-3 must be greater than 0"):
        _ = HilosHook().settings


@pytest.mark.parametrize(
    "name", ["Host", "cookie", "User-Agent", "Transfer-Encoding", "Content-Length", "Connection", "Proxy-Authorization"]
)
def test_header_names_the_client_sets_or_that_frame_the_request_are_refused(hilos_conn, name):
    hilos_conn(extra={"header_name": name})
    with pytest.raises(HilosConfigurationError, match=f"header_name '{name}' is a header the HTTP client sets"):
        _ = HilosHook().settings


@pytest.mark.parametrize("name", ["Tökén", "X Token", "X:Token", "", "Token\r\nX"])
def test_a_header_name_that_is_not_an_http_token_is_refused_when_the_connection_is_read(hilos_conn, name):
    hilos_conn(extra={"header_name": name} if name else {"header_name": " "})
    with pytest.raises(HilosConfigurationError, match="is not an HTTP header name"):
        _ = HilosHook().settings


def test_a_custom_http_token_header_name_works(hilos_conn, requests_mock):
    hilos_conn(extra={"header_name": "X-Api_Key.v2"})
    requests_mock.patch(URL, json=EDIT)
    HilosHook().update_conversation(CID, {"status": "CLOSED"})
    assert requests_mock.last_request.headers["X-Api_Key.v2"] == f"Token {TEST_TOKEN}"


def test_a_host_that_does_not_resolve_says_so_instead_of_advising_https(hilos_conn, monkeypatch):
    import socket

    def no_such_name(host, *args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_name)
    hilos_conn(host="http://locahost:8765")
    with pytest.raises(HilosConfigurationError) as caught:
        _ = HilosHook().settings
    message = str(caught.value)
    assert "'locahost' does not resolve" in message and "did you mean 'localhost'?" in message
    assert "allow_insecure_http" not in message and "https://" not in message.replace("http://locahost", "")


def test_a_missing_connection_says_what_it_should_look_like(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_HILOS_PROD", raising=False)
    with pytest.raises(HilosConfigurationError) as caught:
        _ = HilosHook("hilos_prod").settings
    message = str(caught.value)
    assert "'hilos_prod' is not defined" in message
    assert "type 'hilos'" in message and "AIRFLOW_CONN_HILOS_PROD=" in message and "airflow connections add" in message


def test_the_test_button_of_a_missing_connection_explains_it(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_HILOS_PROD", raising=False)
    ok, message = HilosHook("hilos_prod").test_connection()
    assert not ok and "is not defined" in message


# -- issue 27: no connection value in any message ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "shown"),
    [
        ({"auth_scheme": SECRET}, f"Authorization: <a {len(SECRET)}-character auth scheme> ***"),
        ({"header_name": SECRET, "auth_scheme": ""}, f"<a {len(SECRET)}-character header name>: ***"),
        ({"header_name": "Token", "auth_scheme": "Bearer"}, "Token: Bearer ***"),
    ],
)
def test_a_rejected_token_message_never_shows_a_pasted_auth_scheme_or_header(hilos_conn, requests_mock, extra, shown):
    hilos_conn(extra=extra)
    requests_mock.patch(URL, status_code=401, json={"detail": "Invalid token."})
    with pytest.raises(HilosPermanentAPIError) as caught:
        HilosHook().update_conversation(CID, {"status": "CLOSED"})
    message = str(caught.value)
    assert f"sent as '{shown}'" in message and SECRET not in message
    assert SECRET not in repr(HilosHook().settings)


@pytest.mark.parametrize("scheme", ["Tóken", "Token\x0b", "To\tken", "\x0bToken"])
def test_an_auth_scheme_that_is_not_an_ascii_word_is_refused_not_sent(hilos_conn, requests_mock, scheme):
    hilos_conn(extra={"auth_scheme": scheme})
    requests_mock.patch(URL, json=EDIT)
    with pytest.raises(HilosConfigurationError, match="auth_scheme must be one word of ASCII letters"):
        HilosHook().update_conversation(CID, {"status": "CLOSED"})
    assert not requests_mock.called


def test_a_token_pasted_as_an_extras_name_is_not_echoed(hilos_conn):
    hilos_conn(extra={SECRET: "x", "max_attempt": 3})
    with pytest.raises(HilosConfigurationError) as caught:
        _ = HilosHook().settings
    message = str(caught.value)
    assert SECRET not in message and f"<a {len(SECRET)}-character name, not shown: it may be a secret>" in message
    assert "'max_attempt' (did you mean 'max_attempts'?)" in message  # a typo is still named
