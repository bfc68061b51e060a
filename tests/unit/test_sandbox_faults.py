"""The sandbox's weather: scripted and random faults, the token bucket, latency."""

from __future__ import annotations

import time

import pytest
import requests

from tests.helpers import patch


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
