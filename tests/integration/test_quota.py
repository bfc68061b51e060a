"""One quota per connection: every request one hook sends (two batches at once, single updates from eight
threads) stays under the connection's ``max_requests_per_second`` together.

Measured where it matters, at the API: the sandbox, in a process of its own, records when each request arrives.
"At or under 40 per second" means N requests take at least (N - 1) / 40 seconds from the first to the last (less
50 ms: a thread may wake late on a busy machine, the suite shares two cores with another). The first request of each
connection waits for its TCP handshake, and the ones after it do not: each test opens its pool's connections with
reads first, so the PATCHes measured start on open connections. One-second windows may hold up to 10 % more (arrivals
still bunch a little), the tolerance the sharded and Celery tests allow too.
"""

from __future__ import annotations

import threading

import pytest

from airflow_provider_hilos.hooks.hilos import HilosHook
from airflow_provider_hilos.sandbox.process import SandboxProcess

QUOTA = 40


@pytest.fixture
def quota_sandbox(monkeypatch):
    with SandboxProcess(
        "--conversations", "240", "--seed", "13", "--request-log-limit", "10000", priority=-10
    ) as sandbox:
        monkeypatch.setenv("AIRFLOW_CONN_HILOS_DEFAULT", sandbox.connection_json(max_requests_per_second=QUOTA))
        yield sandbox


def busiest_second(times: list[float]) -> int:
    times = sorted(times)
    best = start = 0
    for end, moment in enumerate(times):
        while moment - times[start] >= 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best


JITTER = 0.050


def warm_connections(hook: HilosHook, count: int) -> None:
    """Open ``count`` pooled connections with as many reads at once, so the PATCHes measured next do not start with
    TCP handshakes (a handshake delays a connection's first request; measured from a late first arrival, the span
    looks shorter than the pace made it). Only PATCHes are measured."""
    hook.ensure_pool(count)
    readers = [threading.Thread(target=hook.list_conversations, kwargs={"page_size": 1}) for _ in range(count)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(timeout=30)


def assert_within(sandbox: SandboxProcess, expected: int, rate: float = QUOTA) -> None:
    times = [r["time"] for r in sandbox.requests() if r["method"] == "PATCH"]
    assert len(times) == expected
    span = max(times) - min(times)
    assert span >= (len(times) - 1) / rate - JITTER, f"{(len(times) - 1) / span:.2f} requests/s over the run"
    assert busiest_second(times) <= rate * 1.1, busiest_second(times)


def test_two_batches_at_once_on_one_hook_share_the_connection_quota(quota_sandbox):
    ids = quota_sandbox.conversation_ids()
    halves = [ids[:80], ids[80:160]]
    results: dict[int, object] = {}
    with HilosHook() as hook:
        warm_connections(hook, 16)

        def batch(index: int) -> None:
            rows = [{"conversation_id": cid, "status": "RESOLVED"} for cid in halves[index]]
            # each batch alone would send 16 at a time, as fast as the API answers
            results[index] = hook.update_conversations(rows, max_concurrency=16)

        threads = [threading.Thread(target=batch, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert [results[i].updated for i in range(2)] == [80, 80]  # type: ignore[attr-defined]
    assert_within(quota_sandbox, 160)


def test_single_updates_from_eight_threads_share_it_too(quota_sandbox):
    ids = quota_sandbox.conversation_ids()[:160]
    with HilosHook() as hook:
        warm_connections(hook, 8)

        def updates(share: list[str]) -> None:
            for cid in share:
                hook.update_conversation(cid, {"status": "CLOSED"})

        threads = [threading.Thread(target=updates, args=(ids[i::8],)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert all(quota_sandbox.conversation(cid)["status"] == "CLOSED" for cid in ids)
    assert_within(quota_sandbox, 160)


def test_a_batch_s_own_rate_only_lowers_its_share(quota_sandbox):
    rows = [{"conversation_id": cid, "status": "NEW"} for cid in quota_sandbox.conversation_ids()[:60]]
    with HilosHook() as hook:
        warm_connections(hook, 8)
        hook.update_conversations(rows, max_concurrency=8, max_requests_per_second=500)  # above the quota: 40 holds
    assert_within(quota_sandbox, 60)
    quota_sandbox.reset()
    with HilosHook() as hook:
        warm_connections(hook, 8)
        hook.update_conversations(rows, max_concurrency=8, max_requests_per_second=20)  # below it: 20
    assert_within(quota_sandbox, 60, rate=20)
