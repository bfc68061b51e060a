"""The provider's metrics are counted where requests are sent (the hook), so a DAG that calls the hook directly
gets them too, not only the operators."""

from __future__ import annotations

from collections import Counter

import pytest

from airflow_provider_hilos import metrics
from airflow_provider_hilos.exceptions import HilosBatchError
from airflow_provider_hilos.hooks.hilos import HilosHook
from tests.helpers import CID, URL


class Recorder:
    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()
        self.timings: list[str] = []

    def incr(self, name: str, count: int = 1) -> None:
        self.counters[name] += count

    def timing(self, name: str, milliseconds: float) -> None:
        assert milliseconds >= 0
        self.timings.append(name)


@pytest.fixture
def stats(monkeypatch):
    recorder = Recorder()
    monkeypatch.setattr(metrics, "_stats", lambda: recorder)
    return recorder


def test_a_dag_calling_the_hook_itself_gets_the_update_and_request_metrics(hilos_conn, requests_mock, stats):
    hilos_conn()
    other = "6513270e-269e-4d37-b2a7-4de452e6b438"
    requests_mock.patch(URL, [{"status_code": 429, "json": {"detail": "slow down"}}, {"json": {"id": CID}}])
    requests_mock.patch(f"https://api.hilos.io/api/inbox/conversation/{other}/update", status_code=404, json={})
    hook = HilosHook(backoff_base=0)
    hook.update_conversation(CID, {"status": "CLOSED"})
    with pytest.raises(HilosBatchError):
        hook.update_conversations(
            [{"conversation_id": CID, "status": "NEW"}, {"conversation_id": other, "status": "NEW"}]
        )
    assert stats.counters == {
        metrics.APPLIED: 2,  # the single update, and the batch's first row
        metrics.FAILED: 1,  # the batch's unknown conversation
        metrics.RETRIED: 1,  # the single update, after its 429
        metrics.THROTTLED: 1,
    }
    assert stats.timings == [metrics.DURATION] * 4  # every request answered: 429, 200, 200, 404


def test_a_zero_count_is_not_sent(stats):
    metrics.incr(metrics.APPLIED, 0)
    assert stats.counters == {}
