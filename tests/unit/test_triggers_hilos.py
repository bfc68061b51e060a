"""The trigger a deferrable operator waits in: what it serialises (no token, nothing large), and what it fires
when the API answers, stays down, or refuses."""

from __future__ import annotations

import asyncio
import itertools
import json
import time

from airflow_provider_hilos.triggers.hilos import HilosAvailableTrigger
from tests.conftest import TEST_TOKEN


def first_event(trigger: HilosAvailableTrigger) -> dict:
    async def take() -> dict:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("the trigger ended without an event")

    return asyncio.run(take())


def test_it_serialises_ids_and_times_only_and_comes_back_the_same():
    trigger = HilosAvailableTrigger(hilos_conn_id="hilos_default", not_before=10.0, deadline=20.0, reason="HTTP 503")
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_hilos.triggers.hilos.HilosAvailableTrigger"
    assert kwargs == {
        "hilos_conn_id": "hilos_default",
        "not_before": 10.0,
        "deadline": 20.0,
        "probe_interval": 15.0,
        "reason": "HTTP 503",
    }
    assert HilosAvailableTrigger(**kwargs).serialize() == (classpath, kwargs)
    assert TEST_TOKEN not in json.dumps(kwargs) and len(json.dumps(kwargs)) < 300


def test_it_fires_ready_once_the_api_answers_after_the_wait(sandbox):
    now = time.time()
    event = first_event(HilosAvailableTrigger(hilos_conn_id="hilos_default", not_before=now + 0.3, deadline=now + 30))
    assert event == {"status": "ready", "probes": 1}
    assert time.time() - now >= 0.3
    (probe,) = sandbox.requests()
    assert (probe["method"], probe["query"]) == ("GET", "page=1&page_size=1")  # the cheapest read there is


def test_it_keeps_probing_while_the_api_is_down_then_times_out(sandbox):
    sandbox.set_faults(error_rate=1.0, error_statuses=[503], retry_after_seconds=0)
    now = time.time()
    trigger = HilosAvailableTrigger(
        hilos_conn_id="hilos_default", not_before=now, deadline=now + 2.0, probe_interval=0.2
    )
    event = first_event(trigger)
    assert event["status"] == "timeout" and time.time() - now >= 2.0
    times = [r["time"] for r in sandbox.requests()]
    # it kept probing (one attempt per probe: no retries of its own), at least probe_interval apart; how many fit in
    # the 2 s depends on the machine's load (a loaded CI runner takes up to 0.9 s per probe), not on the trigger
    assert 2 <= len(times) == event["probes"] <= 11
    assert all(later - earlier >= 0.19 for earlier, later in itertools.pairwise(times))


def test_a_refused_token_ends_the_wait_with_the_reason_never_the_token(sandbox, hilos_conn):
    hilos_conn(host=sandbox.url, password=TEST_TOKEN + "x")
    now = time.time()
    event = first_event(HilosAvailableTrigger(hilos_conn_id="hilos_default", not_before=now, deadline=now + 30))
    assert event["status"] == "error" and "token" in event["message"] and TEST_TOKEN not in event["message"]
