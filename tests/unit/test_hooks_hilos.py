"""HilosHook: its endpoints, what it looks up and when, the Test button, the connection form."""

from __future__ import annotations

import uuid

import pytest
import requests

from airflow_provider_hilos.exceptions import (
    HilosAPIError,
    HilosEndpointNotFoundError,
    HilosValidationError,
)
from airflow_provider_hilos.hooks.hilos import HilosHook
from airflow_provider_hilos.operators.conversation import ConversationUpdateOperator
from airflow_provider_hilos.sandbox import HilosSandbox
from airflow_provider_hilos.schemas import CLEAR
from tests.conftest import AIRFLOW_V3, TEST_TOKEN, FakeTI
from tests.helpers import ACTIVECAMPAIGN, CID, EDIT, NATIVE, URL

LIST_URL = "https://api.hilos.io/api/inbox/conversation"


class _LyingStr(str):
    def __str__(self) -> str:
        return "../../admin"


class _LyingUUID(uuid.UUID):
    def __str__(self) -> str:
        return "../../admin"


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


def test_timeouts_from_extras_and_hook_argument(hilos_conn, requests_mock):
    hilos_conn(extra={"connect_timeout": 2.5, "read_timeout": 7})
    requests_mock.patch(URL, json=EDIT)
    HilosHook().update_conversation(CID, {"status": "NEW"})
    assert requests_mock.last_request.timeout == (2.5, 7.0)
    HilosHook(timeout=(1, 4)).update_conversation(CID, {"status": "NEW"})
    assert requests_mock.last_request.timeout == (1.0, 4.0)
    HilosHook(timeout=3).update_conversation(CID, {"status": "NEW"})
    assert requests_mock.last_request.timeout == (3.0, 3.0)


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


def test_the_token_is_registered_with_the_secrets_masker(hilos_conn):
    from airflow.providers.common.compat.sdk import redact

    hilos_conn(password=TEST_TOKEN)
    _ = HilosHook().settings  # loading the connection masks its token
    assert redact(f"sent {TEST_TOKEN} to Hilos") == "sent *** to Hilos"


def test_classic_connection_form_for_airflow_before_3_2():
    pytest.importorskip("flask_appbuilder", reason="the classic form needs Flask-AppBuilder (Airflow 2)")
    from wtforms import BooleanField, IntegerField, StringField

    widgets = HilosHook.get_connection_form_widgets()
    assert {name: type(field.field_class) for name, field in widgets.items()}.keys() == {
        "api_family",
        "header_name",
        "auth_scheme",
        "connect_timeout",
        "read_timeout",
        "max_attempts",
        "max_requests_per_second",
        "page_size",
        "web_base_url",
        "allow_insecure_http",
    }
    assert widgets["page_size"].field_class is IntegerField and widgets["page_size"].kwargs["default"] == 100
    assert widgets["max_requests_per_second"].field_class is StringField  # a number: wtforms' FloatField is refused
    assert widgets["max_requests_per_second"].kwargs["default"] is None  # empty: no quota of its own
    assert widgets["api_family"].field_class is StringField  # Airflow 2 allows no select field
    assert widgets["api_family"].kwargs["default"] == "auto"
    assert widgets["api_family"].kwargs["description"].endswith("One of: auto, hilos, activecampaign.")
    assert widgets["max_attempts"].field_class is IntegerField
    assert widgets["allow_insecure_http"].field_class is BooleanField
    assert widgets["read_timeout"].field_class is StringField and widgets["read_timeout"].kwargs["default"] == "30.0"
    behaviour = HilosHook.get_ui_field_behaviour()
    assert behaviour["relabeling"] == {"host": "Base URL", "password": "API token"}
    assert "login" in behaviour["hidden_fields"]


def test_ui_metadata_has_one_source():
    from airflow_provider_hilos.connection import CONN_FIELDS, UI_FIELD_BEHAVIOUR

    assert HilosHook.get_ui_field_behaviour()["placeholders"] == UI_FIELD_BEHAVIOUR["placeholders"]
    if not AIRFLOW_V3:
        assert list(HilosHook.get_connection_form_widgets()) == list(CONN_FIELDS)


@pytest.mark.parametrize(("family", "path"), [("hilos", NATIVE), ("activecampaign", ACTIVECAMPAIGN)])
def test_prefix_and_custom_header_name_with_the_hook(monkeypatch, family, path):
    with HilosSandbox(
        conversations=3, token=TEST_TOKEN, prefix="/api/3", header_name="Token", auth_scheme="", api_family=family
    ) as sb:
        assert sb.url.endswith("/api/3")
        monkeypatch.setenv("AIRFLOW_CONN_HILOS_DEFAULT", sb.connection_json(header_name="Token", auth_scheme=""))
        cid = sb.conversation_ids()[0]
        assert HilosHook().update_conversation(cid, {"status": "CLOSED"})["status"] == "CLOSED"
        assert sb.requests()[-1]["path"] == f"/api/3{path}/{cid}/update"
        assert sb.requests()[-1]["headers"]["token"] == "<sandbox-token>"
        assert HilosHook().test_connection()[0] is True
        assert sb.requests()[-1]["path"] == f"/api/3{path}"


# -- the read side: every conversation, page after page ------------------------------------------------------


def list_page(results, *, count, next_url=None):
    return {"count": count, "next": next_url, "previous": None, "results": results}


def rows(*ids):
    return [{"id": cid, "status": "NEW", "tags": [], "assigned": []} for cid in ids]


IDS = [str(uuid.UUID(int=i + 1, version=4)) for i in range(7)]
LIST = "https://api.hilos.io/api/inbox/conversation"


def test_a_foreign_next_link_is_never_followed_the_token_stays_with_the_connection(hook, requests_mock):
    requests_mock.get(
        LIST,
        [
            {"json": list_page(rows(*IDS[:3]), count=5, next_url="https://evil.example.com/steal?page=2")},
            {"json": list_page(rows(*IDS[3:5]), count=5, next_url=None)},
        ],
    )
    got = [row["id"] for row in hook.iter_conversations(page_size=3)]
    assert got == IDS[:5]
    assert [r.hostname for r in requests_mock.request_history] == ["api.hilos.io", "api.hilos.io"]
    assert [r.qs["page"] for r in requests_mock.request_history] == [["1"], ["2"]]


def test_a_server_that_caps_the_page_size_is_followed(sandbox):
    sandbox.set_faults(max_page_size=3)
    with HilosHook() as hook:
        got = [row["id"] for row in hook.iter_conversations(page_size=100)]
    assert sorted(got) == sorted(sandbox.conversation_ids()) and len(got) == 20
    lists = [r for r in sandbox.requests() if r["method"] == "GET"]
    assert len(lists) == 7  # ceil(20 / 3): pages come in the size the server serves


def test_invalid_page_past_the_end_ends_the_listing(hook, requests_mock):
    requests_mock.get(
        LIST,
        [
            {"json": list_page(rows(*IDS[:2]), count=4, next_url=f"{LIST}?page=2")},
            {"status_code": 404, "json": {"detail": "Invalid page."}},
        ],
    )
    assert [row["id"] for row in hook.iter_conversations(page_size=2)] == IDS[:2]


def test_a_first_page_404_is_an_error_not_an_empty_account(hook, requests_mock):
    requests_mock.get(LIST, status_code=404, text="<h1>Not Found</h1>", headers={"Content-Type": "text/html"})
    with pytest.raises(HilosEndpointNotFoundError):
        list(hook.iter_conversations())


def test_a_listing_on_a_busy_account_neither_repeats_nor_misses_a_conversation(sb):
    """New conversations arrive before every page (at the front of the list): each row of the account as it was
    when the listing started is yielded exactly once."""
    before = set(sb.conversation_ids())
    sb.set_faults(arrivals_per_page=7)
    with HilosHook() as hook:
        got = [row["id"] for row in hook.iter_conversations(page_size=50)]
    assert len(got) == len(set(got))  # no repeats
    assert before <= set(got)  # none that existed throughout is missed


def test_both_api_families_list_from_their_own_path(hilos_conn, requests_mock):
    hilos_conn(host="https://acme.api-us1.com/api/3")
    requests_mock.get(
        "https://acme.api-us1.com/api/3/channel/whatsapp/inbox/conversation", json=list_page(rows(IDS[0]), count=1)
    )
    assert [row["id"] for row in HilosHook().iter_conversations()] == [IDS[0]]


def test_listing_requests_go_through_the_connection_quota_and_retries(sandbox):
    sandbox.fail_next("503")
    sandbox.fail_next("429")
    with HilosHook(backoff_base=0) as hook:
        got = list(hook.iter_conversations(page_size=10))
    assert len(got) == 20
    statuses = [r["status"] for r in sandbox.requests()]
    assert statuses[:2] == [503, 429] and statuses[2:] == [200, 200]


def test_a_page_size_out_of_range_is_refused_before_any_request(hook, requests_mock):
    with pytest.raises(HilosValidationError, match="page_size"):
        list(hook.iter_conversations(page_size=0))
    assert requests_mock.call_count == 0


def test_a_server_that_ignores_the_page_number_is_not_read_forever(hook, requests_mock):
    requests_mock.get(LIST, json=list_page(rows(*IDS[:3]), count=9, next_url=f"{LIST}?page=2"))
    got = []
    with pytest.raises(HilosAPIError, match="seems to ignore the page number"):
        got.extend(row["id"] for row in hook.iter_conversations(page_size=3))
    assert got == IDS[:3] and requests_mock.call_count == 4  # the first page, then three that repeat it


# -- issue 27, audit A7: a listing is bounded whatever the server does ------------------------------------------


def test_a_server_that_never_ends_is_read_no_further_than_its_count_allows(hook, requests_mock):
    served = []

    def endless(request, context):  # fresh ids on every page, and always a next page
        page = int(request.qs["page"][0])
        served.append(page)
        fresh = [str(uuid.UUID(int=page * 1000 + i, version=4)) for i in range(10)]
        return list_page(rows(*fresh), count=50, next_url=f"{LIST}?page={page + 1}")

    requests_mock.get(LIST, json=endless)
    with pytest.raises(HilosAPIError, match=r"more than its own count \(50 conversations\) allows"):
        list(hook.iter_conversations(page_size=10))
    assert len(served) <= 5 + 10 + 1  # what the count needs, the slack, and the page that showed it


def test_a_page_larger_than_asked_is_refused(hook, requests_mock):
    big = [str(uuid.UUID(int=i + 1, version=4)) for i in range(30)]
    requests_mock.get(LIST, json=list_page(rows(*big), count=30))
    with pytest.raises(HilosAPIError, match=r"30 rows for page_size=10"):
        list(hook.iter_conversations(page_size=10))


def test_an_answer_over_the_size_limit_is_not_read_whole(hook, requests_mock, monkeypatch):
    from airflow_provider_hilos import transport

    monkeypatch.setattr(transport, "MAX_RESPONSE_BYTES", 1 << 20)
    requests_mock.get(LIST, content=b'{"results": [' + b'{"id": "x"},' * 200_000 + b"{}]}")
    with pytest.raises(HilosAPIError, match=r"answered more than 1 MiB") as caught:
        list(hook.iter_conversations(page_size=10))
    assert not caught.value.retryable


def test_an_answer_dripping_in_is_cut_at_twice_the_read_timeout(hilos_conn):
    import socket
    import threading
    import time

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def drip():
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
        while not stop.is_set():
            try:
                conn.sendall(b" ")
            except OSError:
                break
            time.sleep(0.5)  # a byte every half second: each read waits less than the read timeout
        conn.close()

    threading.Thread(target=drip, daemon=True).start()
    hilos_conn(host=f"http://127.0.0.1:{listener.getsockname()[1]}", extra={"read_timeout": 2, "max_attempts": 1})
    began = time.monotonic()
    try:
        with pytest.raises(HilosAPIError, match=r"did not arrive in full within 5 s") as caught:
            HilosHook().list_conversations(page=1, page_size=1)
    finally:
        stop.set()
        listener.close()
    assert caught.value.retryable and time.monotonic() - began < 8
