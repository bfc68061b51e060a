"""HilosHook against requests-mock: URL, headers, timeouts, session, retries, errors, test_connection."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import requests

from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_hilos.exceptions import (
    HilosAPIError,
    HilosBatchError,
    HilosConfigurationError,
    HilosEndpointNotFoundError,
    HilosValidationError,
)
from airflow_provider_hilos.hooks.hilos import HilosHook
from airflow_provider_hilos.schemas import CLEAR
from airflow_provider_hilos.transport import parse_retry_after
from tests.conftest import TEST_TOKEN

CID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
#: Hilos's own path family: what api.hilos.io serves (and any host but an ActiveCampaign account host).
URL = f"https://api.hilos.io/api/inbox/conversation/{CID}/update"
LIST_URL = "https://api.hilos.io/api/inbox/conversation"
EDIT = {
    "id": CID,
    "contact": "8c8d5e2a-55c4-4a4e-9d5b-3b0b7e1b2f10",
    "status": "CLOSED",
    "assigned": [{"id": 3}],
    "tags": [{"id": 1, "name": "vip"}],
    "created_on": "2025-01-01T00:00:00Z",
    "source": "API",
    "assigned_team": 2,
    "channel": 1,
}


@pytest.fixture
def hook(hilos_conn) -> HilosHook:
    hilos_conn()
    h = HilosHook()
    h.sleeps = []  # type: ignore[attr-defined]
    h._sleep = h.sleeps.append  # record waits instead of sleeping
    return h


def test_update_sends_exact_request_and_returns_conversation(hook, requests_mock):
    requests_mock.patch(URL, json=EDIT)
    result = hook.update_conversation(CID.upper(), {"status": "CLOSED", "tags": [{"name": "vip"}], "channel": CLEAR})
    assert result == EDIT
    req = requests_mock.last_request
    assert req.method == "PATCH"
    assert req.url == URL
    assert req.headers["Authorization"] == f"Token {TEST_TOKEN}"
    assert req.headers["Accept"] == "application/json"
    assert req.headers["Content-Type"] == "application/json"
    assert req.headers["User-Agent"].startswith("airflow-provider-hilos/0.1.0 apache-airflow/")
    assert req.json() == {"status": "CLOSED", "tags": [{"name": "vip"}], "channel": None}  # CLEAR is sent as null


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


def test_the_log_says_once_which_family_and_url_a_hook_uses(hook, requests_mock, output):
    requests_mock.patch(URL, json=EDIT)
    requests_mock.get(LIST_URL, json={"count": 0, "next": None, "previous": None, "results": []})
    line = (
        "Hilos connection 'hilos_default': API family hilos (auto: api.hilos.io is not an ActiveCampaign "
        "account host); updates go to PATCH https://api.hilos.io/api/inbox/conversation/{id}/update"
    )
    hook.update_conversation(CID, {"status": "NEW"})
    assert line in output()
    hook.update_conversation(CID, {"status": "CLOSED"})
    hook.list_conversations()
    later = output()  # what was logged since
    assert "API family" not in later and "PATCH /api/inbox/conversation" not in later


def test_an_unknown_api_family_is_explained(hilos_conn, requests_mock):
    hilos_conn(extra={"api_family": "native"})
    with pytest.raises(HilosConfigurationError, match="api_family='native' is not one of auto, hilos, activecampaign"):
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


def test_default_timeouts_are_always_sent(hook, requests_mock):
    requests_mock.patch(URL, json=EDIT)
    hook.update_conversation(CID, {"status": "NEW"})
    assert requests_mock.last_request.timeout == (10.0, 30.0)


def test_timeouts_from_extras_and_hook_argument(hilos_conn, requests_mock):
    hilos_conn(extra={"connect_timeout": 2.5, "read_timeout": 7})
    requests_mock.patch(URL, json=EDIT)
    HilosHook().update_conversation(CID, {"status": "NEW"})
    assert requests_mock.last_request.timeout == (2.5, 7.0)
    HilosHook(timeout=(1, 4)).update_conversation(CID, {"status": "NEW"})
    assert requests_mock.last_request.timeout == (1.0, 4.0)
    HilosHook(timeout=3).update_conversation(CID, {"status": "NEW"})
    assert requests_mock.last_request.timeout == (3.0, 3.0)


def test_one_session_reused_across_calls(hook, requests_mock):
    requests_mock.patch(URL, json=EDIT)
    session = hook.get_conn()
    for _ in range(3):
        hook.update_conversation(CID, {"status": "NEW"})
    assert hook.get_conn() is session
    adapter = session.get_adapter("https://api.hilos.io")
    assert adapter._pool_maxsize == 10
    assert adapter.max_retries.total == 0  # retries are the hook's, not urllib3's
    hook.close()
    assert hook.get_conn() is not session


def test_creating_a_hook_looks_nothing_up(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("connection looked up in __init__")

    monkeypatch.setattr(HilosHook, "get_connection", classmethod(boom))
    hook = HilosHook("does_not_exist", timeout=5, max_attempts=2)
    assert repr(hook) == "HilosHook(hilos_conn_id='does_not_exist')"


def test_validation_happens_before_connection_lookup_and_sending(monkeypatch, requests_mock):
    monkeypatch.setattr(HilosHook, "get_connection", classmethod(lambda cls, c: (_ for _ in ()).throw(AssertionError)))
    with pytest.raises(HilosValidationError) as err:
        HilosHook().update_conversation("../x", {"status": "DONE", "created_on": "2025-01-01"})
    assert err.value.fields == ["conversation_id", "created_on", "status"]
    assert not requests_mock.called


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_retryable_statuses_are_retried_then_succeed(hook, requests_mock, status):
    requests_mock.patch(URL, [{"status_code": status, "json": {"detail": "busy"}}, {"status_code": 200, "json": EDIT}])
    assert hook.update_conversation(CID, {"status": "NEW"}) == EDIT
    assert requests_mock.call_count == 2
    assert len(hook.sleeps) == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 409, 422])
def test_other_4xx_are_not_retried(hook, requests_mock, status):
    requests_mock.patch(URL, status_code=status, json={"detail": "nope"})
    with pytest.raises(HilosAPIError) as err:
        hook.update_conversation(CID, {"status": "NEW"})
    assert requests_mock.call_count == 1
    assert hook.sleeps == []
    assert err.value.status_code == status
    assert err.value.method == "PATCH"
    assert err.value.path == f"/api/inbox/conversation/{CID}/update"


@pytest.mark.parametrize(
    "exc",
    [
        requests.exceptions.ConnectionError,
        requests.exceptions.ConnectTimeout,
        requests.exceptions.ReadTimeout,
        requests.exceptions.ChunkedEncodingError,
    ],
)
def test_network_errors_are_retried(hook, requests_mock, exc):
    requests_mock.patch(URL, [{"exc": exc}, {"exc": exc}, {"status_code": 200, "json": EDIT}])
    assert hook.update_conversation(CID, {"status": "NEW"}) == EDIT
    assert requests_mock.call_count == 3


def test_attempts_are_bounded_and_the_error_says_why(hook, requests_mock):
    requests_mock.patch(URL, status_code=503, json={"detail": "Service unavailable"})
    with pytest.raises(HilosAPIError) as err:
        hook.update_conversation(CID, {"status": "NEW"})
    assert requests_mock.call_count == 5
    assert len(hook.sleeps) == 4
    assert err.value.attempts == 5
    assert err.value.retryable
    message = str(err.value)
    assert "after 5 attempt(s)" in message and "HTTP 503" in message and CID in message
    assert "Service unavailable" in message


def test_max_attempts_from_extras_and_argument(hilos_conn, requests_mock):
    hilos_conn(extra={"max_attempts": 2})
    requests_mock.patch(URL, status_code=502, text="<html>bad gateway</html>")
    hook = HilosHook()
    hook._sleep = lambda s: None
    with pytest.raises(HilosAPIError):
        hook.update_conversation(CID, {"status": "NEW"})
    assert requests_mock.call_count == 2
    hook = HilosHook(max_attempts=1)
    with pytest.raises(HilosAPIError):
        hook.update_conversation(CID, {"status": "NEW"})
    assert requests_mock.call_count == 3


def test_network_error_after_retries_names_conversation_and_cause(hook, requests_mock):
    requests_mock.patch(URL, exc=requests.exceptions.ReadTimeout)
    with pytest.raises(HilosAPIError) as err:
        hook.update_conversation(CID, {"status": "NEW"})
    assert err.value.status_code is None
    assert CID in str(err.value) and "read timeout (30 s)" in str(err.value)


def test_retry_after_seconds_is_honoured(hook, requests_mock):
    requests_mock.patch(
        URL,
        [
            {"status_code": 429, "headers": {"Retry-After": "7"}, "json": {"detail": "slow down"}},
            {"status_code": 200, "json": EDIT},
        ],
    )
    hook.update_conversation(CID, {"status": "NEW"})
    assert hook.sleeps == [7.0]


def test_retry_after_http_date_is_honoured_and_capped(hook, requests_mock):
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    late = format_datetime(datetime.now(UTC) + timedelta(hours=2), usegmt=True)
    requests_mock.patch(
        URL,
        [
            {"status_code": 503, "headers": {"Retry-After": soon}},
            {"status_code": 429, "headers": {"Retry-After": late}},
            {"status_code": 200, "json": EDIT},
        ],
    )
    hook.update_conversation(CID, {"status": "NEW"})
    assert 17 <= hook.sleeps[0] <= 20
    assert hook.sleeps[1] == 60.0  # capped at max_wait


def test_parse_retry_after():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("Thu, 01 Jan 2026 00:00:09 GMT", now=now) == 9.0
    assert parse_retry_after("Wed, 31 Dec 2025 00:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_backoff_is_exponential_with_jitter_and_capped(hook):
    random.seed(3)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0)]:
        delays = [hook.backoff_delay(attempt) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 100  # jittered, not fixed
    assert hook.backoff_delay(30) <= 60.0


def test_401_names_the_connection_and_never_the_token(hook, requests_mock):
    requests_mock.patch(URL, status_code=401, json={"detail": f"Invalid token {TEST_TOKEN}."})
    with pytest.raises(HilosAPIError) as err:
        hook.update_conversation(CID, {"status": "NEW"})
    message = str(err.value)
    assert "rejected the API token of connection 'hilos_default'" in message
    assert "HTTP 401" in message and "app.hilos.io/dev/api-keys" in message
    assert TEST_TOKEN not in message and TEST_TOKEN not in repr(err.value)
    assert TEST_TOKEN not in (err.value.detail or "")


def test_403_says_permission(hook, requests_mock):
    requests_mock.patch(URL, status_code=403, json={"detail": "You do not have permission to perform this action."})
    with pytest.raises(HilosAPIError, match="lacks permission"):
        hook.update_conversation(CID, {"status": "NEW"})


def test_404_says_conversation_not_found(hook, requests_mock):
    requests_mock.patch(URL, status_code=404, json={"detail": "Not found."})
    with pytest.raises(HilosAPIError, match=f"conversation {CID} was not found") as err:
        hook.update_conversation(CID, {"status": "NEW"})
    assert not isinstance(err.value, HilosEndpointNotFoundError)


@pytest.mark.parametrize(
    "answer",
    [
        {
            "text": "<!doctype html><html><head><title>Not Found</title></head><body><h1>Not Found</h1></body></html>",
            "headers": {"Content-Type": "text/html"},
        },
        {"text": ""},
        {"json": {"message": "no route"}},
    ],
    ids=["django html page", "empty body", "json without detail"],
)
def test_a_route_404_says_the_endpoint_is_missing_not_the_conversation(hook, requests_mock, answer):
    requests_mock.patch(URL, status_code=404, **answer)
    with pytest.raises(HilosEndpointNotFoundError) as err:
        hook.update_conversation(CID, {"status": "NEW"})
    message = str(err.value)
    assert f"the API has no endpoint at PATCH {URL} (HTTP 404, " in message
    assert "): check the Base URL and the API family (extra api_family: hilos for api.hilos.io" in message
    assert (
        "Hilos connection 'hilos_default' uses API family hilos (auto: api.hilos.io is not an ActiveCampaign" in message
    )
    assert "was not found" not in message
    assert isinstance(err.value, AirflowFailException)  # no Airflow retry: it cannot work next time either
    assert requests_mock.call_count == 1


def test_400_reports_drf_field_errors(hook, requests_mock):
    requests_mock.patch(URL, status_code=400, json={"assigned": [{"id": ['Invalid pk "99" - object does not exist.']}]})
    with pytest.raises(HilosAPIError) as err:
        hook.update_conversation(CID, {"assigned": [{"id": 99}]})
    assert err.value.field_errors == {"assigned": [{"id": ['Invalid pk "99" - object does not exist.']}]}
    assert "Invalid pk" in str(err.value) and "assigned" in str(err.value)


def test_400_message_has_one_full_stop_before_the_fix(hook, requests_mock):
    requests_mock.patch(URL, status_code=400, json={"channel": ['Invalid pk "9" - object does not exist.']})
    with pytest.raises(HilosAPIError) as err:
        hook.update_conversation(CID, {"channel": 9})
    message = str(err.value)
    assert 'channel: Invalid pk "9" - object does not exist. Fix these fields in the payload.' in message
    assert ".." not in message


def test_html_error_page_is_reported_not_crashed_on(hook, requests_mock):
    html = "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"
    requests_mock.patch(URL, status_code=502, text=html, headers={"Content-Type": "text/html"})
    with pytest.raises(HilosAPIError) as err:
        hook.update_conversation(CID, {"status": "NEW"})
    assert "non-JSON body (text/html)" in str(err.value) and "502 Bad Gateway" in str(err.value)
    assert err.value.detail is None


def test_unreadable_success_body_is_retried_then_reported(hook, requests_mock):
    requests_mock.patch(URL, [{"status_code": 200, "text": '{"id": "3fa8'}, {"status_code": 200, "json": EDIT}])
    assert hook.update_conversation(CID, {"status": "NEW"}) == EDIT
    requests_mock.patch(URL, status_code=200, text="<html>oops</html>")
    with pytest.raises(HilosAPIError, match="expected JSON"):
        hook.update_conversation(CID, {"status": "NEW"})


def test_redirects_are_not_followed(hook, requests_mock):
    requests_mock.patch(URL, status_code=301, headers={"Location": "https://evil.example.com/steal"})
    requests_mock.patch("https://evil.example.com/steal", json=EDIT)
    with pytest.raises(HilosAPIError, match=r"redirect to 'evil\.example\.com'"):
        hook.update_conversation(CID, {"status": "NEW"})
    assert [r.hostname for r in requests_mock.request_history] == ["api.hilos.io"]


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
        ({"host": "http://api.hilos.io"}, "clear text"),
        ({"host": "https://api.hilos.io:99999"}, "not a valid URL"),
        ({"extra": {"read_timeout": "soon"}}, "read_timeout='soon' is not a number"),
        ({"extra": {"connect_timeout": 0}}, "must be greater than 0"),
        ({"extra": {"max_attempts": 0}}, "must be at least 1"),
        ({"extra": {"max_attempts": 2.5}}, "is not a whole number"),
        ({"extra": {"header_name": "Bad Header"}}, "not a valid header name"),
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


def test_reprs_never_show_the_token(hook, requests_mock):
    requests_mock.patch(URL, json=EDIT)
    hook.update_conversation(CID, {"status": "NEW"})
    assert TEST_TOKEN not in repr(hook)
    assert TEST_TOKEN not in repr(hook.settings) and "token='***'" in repr(hook.settings)
    assert hook.settings.auth_display == "Authorization: Token ***"


def test_list_conversations_is_a_read_only_get(hook, requests_mock):
    requests_mock.get(LIST_URL, json={"count": 3, "next": None, "previous": None, "results": []})
    page = hook.list_conversations(page=2, page_size=5, contact="c", search="vip")
    assert page["count"] == 3
    assert requests_mock.last_request.method == "GET"
    assert requests_mock.last_request.qs == {"page": ["2"], "page_size": ["5"], "contact": ["c"], "search": ["vip"]}


def test_test_connection_ok(hook, requests_mock):
    requests_mock.get(LIST_URL, json={"count": 42, "next": None, "previous": None, "results": []})
    ok, message = hook.test_connection()
    assert ok is True
    assert (
        message == "Connected to Hilos at https://api.hilos.io: the API token was accepted (42 conversations visible)."
    )
    assert requests_mock.last_request.method == "GET" and requests_mock.last_request.qs["page_size"] == ["1"]


def test_test_connection_rejected_token(hook, requests_mock):
    requests_mock.get(LIST_URL, status_code=401, json={"detail": "Invalid token."})
    ok, message = hook.test_connection()
    assert ok is False
    assert "rejected the API token of connection 'hilos_default'" in message
    assert TEST_TOKEN not in message
    assert requests_mock.call_count == 1  # the Test button answers at once


def test_test_connection_unreachable_and_misconfigured(hilos_conn, requests_mock):
    requests_mock.get(LIST_URL, exc=requests.exceptions.ConnectionError("[Errno 111] Connection refused"))
    hilos_conn()
    ok, message = HilosHook().test_connection()
    assert ok is False and "Connection refused" in message
    hilos_conn(password=None)
    ok, message = HilosHook().test_connection()
    assert ok is False and "has no API token" in message


def test_test_connection_wrong_path_prefix(hook, requests_mock):
    requests_mock.get(LIST_URL, status_code=404, text="<h1>Not Found</h1>", headers={"Content-Type": "text/html"})
    ok, message = hook.test_connection()
    assert ok is False
    assert f"the API has no endpoint at GET {LIST_URL} (HTTP 404" in message
    assert "check the Base URL and the API family" in message


def test_retry_warnings_are_logged_without_the_token(hook, requests_mock, output):
    requests_mock.patch(URL, [{"status_code": 503, "json": {}}, {"status_code": 200, "json": EDIT}])
    hook.update_conversation(CID, {"status": "NEW"})
    text = output()
    assert "HTTP 503 (attempt 1 of 5); retrying in" in text
    assert TEST_TOKEN not in text


def test_api_error_is_picklable_for_airflow(hook, requests_mock):
    import pickle

    requests_mock.patch(URL, status_code=404, json={"detail": "Not found."})
    with pytest.raises(HilosAPIError) as err:
        hook.update_conversation(CID, {"status": "NEW"})
    clone = pickle.loads(pickle.dumps(err.value))
    assert str(clone) == str(err.value) and clone.status_code == 404
    val = pickle.loads(pickle.dumps(HilosValidationError([("status", "bad")], "Invalid")))
    assert val.problems == [("status", "bad")] and str(val) == "Invalid: 1 problem:\n  - status: bad"
    batch = pickle.loads(pickle.dumps(HilosBatchError("2 failed", result={"failed": 2})))
    assert (str(batch), batch.result) == ("2 failed", {"failed": 2})
    json.dumps(err.value.field_errors)
