"""The sandbox's weather: scripted and random faults, the token bucket, latency."""

from __future__ import annotations

import time

import pytest
import requests

from tests.helpers import AUTH, patch


@pytest.mark.parametrize(
    ("kind", "status", "ctype"),
    [
        ("500", 500, "text/html"),
        ("502", 502, "text/html"),
        ("503", 503, "application/json"),
        ("429", 429, "application/json"),
    ],
)
def test_scripted_faults(sandbox, kind, status, ctype):
    cid = sandbox.conversation_ids()[0]
    before = sandbox.conversation(cid)
    sandbox.fail_next(kind)
    response = patch(sandbox, cid, {"status": "CLOSED"})
    assert response.status_code == status
    assert response.headers["Content-Type"].startswith(ctype)
    if kind in ("429", "503"):
        assert response.headers["Retry-After"] == "1"
    assert sandbox.conversation(cid) == before  # answered before the update was applied
    assert patch(sandbox, cid, {"status": "CLOSED"}).status_code == 200  # only the next one


def test_dropped_connection_after_the_update_was_applied(sandbox):
    cid = sandbox.conversation_ids()[0]
    sandbox.fail_next("drop")
    with pytest.raises(requests.exceptions.RequestException):
        patch(sandbox, cid, {"status": "FLOW"})
    assert sandbox.conversation(cid)["status"] == "FLOW"


def test_truncated_json_and_html_on_200(sandbox):
    cid = sandbox.conversation_ids()[0]
    sandbox.fail_next("truncate")
    truncated = patch(sandbox, cid, {"status": "NEW"})
    assert truncated.status_code == 200
    with pytest.raises(ValueError):
        truncated.json()
    sandbox.fail_next("html200")
    assert patch(sandbox, cid, {"status": "NEW"}).headers["Content-Type"].startswith("text/html")


def test_rate_limit_answers_429_with_retry_after(sandbox):
    sandbox.set_faults(rate_limit_per_second=2, rate_limit_burst=2)
    cid = sandbox.conversation_ids()[0]
    codes = [patch(sandbox, cid, {"status": "NEW"}) for _ in range(5)]
    assert [r.status_code for r in codes[:2]] == [200, 200]
    throttled = [r for r in codes if r.status_code == 429]
    assert throttled and all(int(r.headers["Retry-After"]) >= 1 for r in throttled)
    assert throttled[0].json()["detail"].startswith("Request was throttled.")


def test_random_error_rate_is_seeded_and_roughly_right(sandbox):
    sandbox.set_faults(error_rate=0.3, fault_seed=5)
    cid = sandbox.conversation_ids()[0]
    first = [patch(sandbox, cid, {"status": "NEW"}).status_code for _ in range(200)]
    sandbox.set_faults(error_rate=0.3, fault_seed=5)
    second = [patch(sandbox, cid, {"status": "NEW"}).status_code for _ in range(200)]
    assert first == second
    errors = sum(code >= 500 for code in first)
    assert 35 <= errors <= 85
    assert {code for code in first if code >= 500} <= {500, 502, 503}


def test_latency_knob_delays_answers(sandbox):
    sandbox.set_faults(latency_ms=150)
    start = time.perf_counter()
    patch(sandbox, sandbox.conversation_ids()[0], {"status": "NEW"})
    assert time.perf_counter() - start >= 0.15


# -- audit 2, point 17: a test tool that holds up -------------------------------------------------------------


def test_scripting_a_huge_count_of_faults_is_refused_not_allocated(sandbox):
    answer = requests.post(
        f"{sandbox.url}/_sandbox/faults/next", json={"kind": "503", "count": 10**9}, headers=AUTH, timeout=10
    )
    assert answer.status_code == 400 and "at most 100,000" in answer.json()["detail"]
    assert requests.get(f"{sandbox.url}/_sandbox/faults", timeout=10).json()["pending"] == []


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"kind": "503", "count": "many"}, "count must be a whole number"),
        ({"kind": "503", "count": 0}, "count must be a whole number, at least 1"),
        ({"kind": "5O3"}, "did you mean '503'?"),
        (["503"], "must be a JSON object"),
    ],
)
def test_a_bad_fault_script_is_a_400_saying_why(sandbox, body, expected):
    answer = requests.post(f"{sandbox.url}/_sandbox/faults/next", json=body, headers=AUTH, timeout=10)
    assert answer.status_code == 400 and expected in answer.json()["detail"]


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"error_rate": "high"}, "error_rate must be a number, not str"),
        ({"error_rate": 3}, "error_rate must be between 0 and 1"),
        ({"latency_ms": -1}, "latency_ms must be between"),
        ({"rate_limit_burst": 2.5}, "rate_limit_burst must be a whole number"),
        ({"error_statuses": [418]}, "error_statuses must be a non-empty list of 400, 404, 409, 500, 502, 503"),
        ({"seed": 3}, "unknown fault setting 'seed' (did you mean 'fault_seed'?)"),
    ],
)
def test_fault_settings_of_the_wrong_type_or_range_are_refused_when_set(sandbox, settings, expected):
    answer = requests.put(f"{sandbox.url}/_sandbox/faults", json=settings, headers=AUTH, timeout=10)
    assert answer.status_code == 400 and expected in answer.json()["detail"]
    cid = sandbox.conversation_ids()[0]
    assert patch(sandbox, cid, {"status": "CLOSED"}).status_code == 200  # the API still works


def test_unauthenticated_bodies_are_not_kept_in_the_request_log(sandbox):
    cid = sandbox.conversation_ids()[0]
    big = {"status": "CLOSED", "filler": "x" * 500_000}
    answer = requests.patch(f"{sandbox.url}/api/inbox/conversation/{cid}/update", json=big, timeout=10)
    assert answer.status_code == 401
    (entry,) = sandbox.requests()
    assert entry["body"].endswith("not kept: unauthenticated>")


def test_a_deeply_nested_body_keeps_the_request_log_readable(sandbox):
    cid = sandbox.conversation_ids()[0]
    deep = "[" * 900 + "]" * 900
    answer = patch(sandbox, cid, None, headers={**AUTH, "Content-Type": "application/json"}, data=deep)
    assert answer.status_code == 400
    log = requests.get(f"{sandbox.url}/_sandbox/requests", timeout=10)
    assert log.status_code == 200 and "nested deeper than" in log.json()["requests"][-1]["body"]


def test_the_request_log_is_bounded_in_bytes():
    from airflow_provider_hilos.sandbox.state import SandboxState

    state = SandboxState(conversations=1, request_log_bytes=100_000)
    for number in range(100):
        state.log_request({"method": "PATCH", "headers": {}, "body": "x" * 10_000, "number": number})
    kept = state.requests()
    assert 5 <= len(kept) <= 10 and kept[-1]["number"] == 99 and state.request_count == 100


def test_queued_faults_can_be_cleared(sandbox):
    sandbox.fail_next("503", 5)
    answer = requests.delete(f"{sandbox.url}/_sandbox/faults/next", headers=AUTH, timeout=10)
    assert answer.status_code == 200 and answer.json() == {"cleared": 5}
    assert requests.get(f"{sandbox.url}/_sandbox/faults", timeout=10).json()["pending"] == []
    assert patch(sandbox, sandbox.conversation_ids()[0], {"status": "NEW"}).status_code == 200


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        ("400", {"status": ['"INJECTED" is not a valid choice.']}),
        ("404", {"detail": "Not found."}),
        ("409", {"detail": "Conflict: the object was changed by another request (sandbox fault 409)."}),
    ],
)
def test_refusals_can_be_queued_and_drawn_at_random_and_change_nothing(sandbox, kind, body):
    cid = sandbox.conversation_ids()[0]
    before = sandbox.conversation(cid)
    sandbox.fail_next(kind)
    answer = patch(sandbox, cid, {"status": "CLOSED" if before["status"] != "CLOSED" else "NEW"})
    assert answer.status_code == int(kind) and answer.json() == body
    assert sandbox.conversation(cid) == before  # answered before the update was applied
    sandbox.set_faults(error_rate=1.0, error_statuses=[int(kind)])
    assert patch(sandbox, cid, {"status": "NEW"}).status_code == int(kind)
    # the hook reads them as the API's own refusals: a 400 names the field, a JSON 404 is a missing object
    from airflow_provider_hilos.exceptions import HilosEndpointNotFoundError, HilosPermanentAPIError
    from airflow_provider_hilos.hooks.hilos import HilosHook

    sandbox.fail_next(kind)
    with pytest.raises(HilosPermanentAPIError) as caught:
        HilosHook().update_conversation(cid, {"status": "NEW"})
    assert not isinstance(caught.value, HilosEndpointNotFoundError)
    if kind == "400":
        assert caught.value.field_errors == {"status": ['"INJECTED" is not a valid choice.']}
