"""The HTTP layer: one session, timeouts, retries and backoff, and the wording of every error (never the token)."""

from __future__ import annotations

import http.server
import json
import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import requests

from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_hilos.exceptions import (
    HilosAPIError,
    HilosEndpointNotFoundError,
)
from airflow_provider_hilos.hooks.hilos import HilosHook
from airflow_provider_hilos.transport import parse_retry_after
from tests.conftest import TEST_TOKEN
from tests.helpers import CID, EDIT, URL, _Recorder, _serve


def test_default_timeouts_are_always_sent(hook, requests_mock):
    requests_mock.patch(URL, json=EDIT)
    hook.update_conversation(CID, {"status": "NEW"})
    assert requests_mock.last_request.timeout == (10.0, 30.0)


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


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_retryable_statuses_are_retried_then_succeed(hook, requests_mock, status):
    requests_mock.patch(URL, [{"status_code": status, "json": {"detail": "busy"}}, {"status_code": 200, "json": EDIT}])
    assert hook.update_conversation(CID, {"status": "NEW"}) == EDIT
    assert requests_mock.call_count == 2
    assert len(hook.sleeps) == 1
    assert hook.transport.sent == {"PATCH": 2}  # every attempt is counted, retries included


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


def test_a_retry_after_longer_than_the_hooks_longest_hold_is_raised_at_once(hook, requests_mock):
    requests_mock.patch(
        URL,
        [
            {"status_code": 429, "headers": {"Retry-After": "5"}, "json": {"detail": "slow down"}},
            {"status_code": 429, "headers": {"Retry-After": "3600"}, "json": {"detail": "quota spent"}},
            {"status_code": 200, "json": EDIT},
        ],
    )
    hook.longest_hold = 10.0
    with pytest.raises(HilosAPIError) as raised:
        hook.update_conversation(CID, {"status": "NEW"})
    assert hook.sleeps == [5.0] and requests_mock.call_count == 2  # 5 s held; 3600 s handed to the caller
    assert raised.value.retryable and raised.value.retry_after == 3600.0 and raised.value.attempts == 2
    assert TEST_TOKEN not in str(raised.value)


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


def test_retry_warnings_are_logged_without_the_token(hook, requests_mock, output):
    requests_mock.patch(URL, [{"status_code": 503, "json": {}}, {"status_code": 200, "json": EDIT}])
    hook.update_conversation(CID, {"status": "NEW"})
    text = output()
    assert "HTTP 503 (attempt 1 of 5); retrying in" in text
    assert TEST_TOKEN not in text


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


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_to_another_host_never_carries_the_token(monkeypatch, status):
    _Recorder.seen = []
    other, other_url = _serve(_Recorder)

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_PATCH(self):
            self.send_response(status)
            self.send_header("Location", other_url + self.path)
            self.end_headers()

        def log_message(self, *args):
            pass

    first, first_url = _serve(Redirect)
    try:
        monkeypatch.setenv(
            "AIRFLOW_CONN_HILOS_DEFAULT",
            json.dumps(
                {"conn_type": "hilos", "host": first_url.replace("127.0.0.1", "localhost"), "password": TEST_TOKEN}
            ),
        )
        with pytest.raises(HilosAPIError, match=f"HTTP {status}.*redirect") as err:
            HilosHook().update_conversation("3fa85f64-5717-4562-b3fc-2c963f66afa6", {"status": "NEW"})
        assert _Recorder.seen == []  # the other host got nothing at all
        assert TEST_TOKEN not in str(err.value)
    finally:
        first.shutdown()
        other.shutdown()


def test_wrong_port_fails_clearly(monkeypatch):
    server, url = _serve(_Recorder)
    server.shutdown()
    server.server_close()  # nothing listens there any more
    monkeypatch.setenv(
        "AIRFLOW_CONN_HILOS_DEFAULT", json.dumps({"conn_type": "hilos", "host": url, "password": TEST_TOKEN})
    )
    ok, message = HilosHook().test_connection()
    assert ok is False and "Connection refused" in message and url in message
    with pytest.raises(HilosAPIError, match="after 2 attempt"):
        HilosHook(max_attempts=2, backoff_base=0).update_conversation(
            "3fa85f64-5717-4562-b3fc-2c963f66afa6", {"status": "NEW"}
        )


def test_slow_answers_trip_the_hooks_read_timeout(sandbox, monkeypatch):
    sandbox.set_faults(slow_rate=1, slow_seconds=1.0)
    hook = HilosHook(timeout=(2, 0.3), max_attempts=2)
    hook._sleep = lambda s: None
    with pytest.raises(Exception, match="read timeout"):
        hook.update_conversation(sandbox.conversation_ids()[0], {"status": "NEW"})
    assert len(sandbox.requests()) == 2


# -- audit 2: points 12 and 15 -------------------------------------------------------------------------------


def test_a_route_404_shows_the_url_that_was_requested_once_with_a_base_path_prefix(hilos_conn, requests_mock):
    hilos_conn(host="https://hilos.example.com/api/v1")
    requested = f"https://hilos.example.com/api/v1/api/inbox/conversation/{CID}/update"
    requests_mock.patch(requested, status_code=404, text="<h1>Not Found</h1>", headers={"Content-Type": "text/html"})
    with pytest.raises(HilosEndpointNotFoundError) as caught:
        HilosHook().update_conversation(CID, {"status": "CLOSED"})
    assert f"PATCH {requested} " in str(caught.value) and "/api/v1/api/v1/" not in str(caught.value)
    assert requests_mock.last_request.url == requested


def test_the_test_button_shows_the_url_that_was_requested(hilos_conn, requests_mock):
    hilos_conn(host="https://hilos.example.com/api/v1")
    requests_mock.get("https://hilos.example.com/api/v1/api/inbox/conversation", status_code=404, text="", headers={})
    ok, message = HilosHook().test_connection()
    assert not ok and "/api/v1/api/v1/" not in message and "https://hilos.example.com/api/v1/api/inbox/" in message


def test_a_name_that_does_not_resolve_at_request_time_says_so(hilos_conn, requests_mock):
    import urllib3

    hilos_conn(host="https://api.hilso.io", extra={"max_attempts": 1})
    error = urllib3.exceptions.NameResolutionError(
        "api.hilso.io", None, OSError("[Errno -2] Name or service not known")
    )
    requests_mock.patch(
        f"https://api.hilso.io/api/inbox/conversation/{CID}/update",
        exc=requests.exceptions.ConnectionError(urllib3.exceptions.MaxRetryError(None, "/", error)),
    )
    with pytest.raises(HilosAPIError) as caught:
        HilosHook().update_conversation(CID, {"status": "CLOSED"})
    message = str(caught.value)
    assert "the host name does not resolve (DNS)" in message and "did you mean api.hilos.io?" in message


def test_a_decoder_reads_utf8_answers_and_an_answer_in_another_charset_is_read_in_full(hook, requests_mock):
    from airflow_provider_hilos.projection import page_decoder

    page = {"count": 1, "next": None, "results": [{"id": "a", "status": "NEW", "contact": "Ni\u00f1o"}]}
    decode = page_decoder(("id", "status"))
    requests_mock.get(f"{URL.split('/api/')[0]}/api/x", content=json.dumps(page).encode(), status_code=200)
    assert hook.transport.request("GET", "/api/x", decode=decode)["results"] == [{"id": "a", "status": "NEW"}]
    latin = json.dumps(page, ensure_ascii=False).encode("latin-1")
    requests_mock.get(
        f"{URL.split('/api/')[0]}/api/x",
        content=latin,
        status_code=200,
        headers={"Content-Type": "application/json; charset=ISO-8859-1"},
    )
    assert hook.transport.request("GET", "/api/x", decode=decode) == page  # as response.json() reads it, in full
    requests_mock.get(f"{URL.split('/api/')[0]}/api/x", text='{"results": [', status_code=200)
    with pytest.raises(HilosAPIError, match="expected JSON"):
        hook.transport.request("GET", "/api/x", decode=decode, max_attempts=1)
