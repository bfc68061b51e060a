"""The batch's failure policies and stopping rules against a stub sender: no HTTP, milliseconds per test.

``StubSender`` answers each conversation from a script (200, a refusal, a server error...), so every
rule of :class:`~airflow_provider_hilos.batch.BatchUpdater` can be checked row by row. The same rules
run against the real sandbox in ``test_batch.py`` and ``test_batch_weather.py``.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import uuid
from collections import Counter
from typing import Any

import pytest

from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_hilos.batch import BatchOptions, BatchUpdater
from airflow_provider_hilos.connection import HilosConnectionSettings
from airflow_provider_hilos.exceptions import (
    HilosAPIError,
    HilosAPIUnavailableError,
    HilosBatchError,
    HilosPermanentAPIError,
    HilosPermanentBatchError,
    HilosValidationError,
)
from airflow_provider_hilos.rows import rows_from_updates
from airflow_provider_hilos.schemas import ValidatedUpdate


class StubSender:
    """Answers each conversation with the next status of its script (the last one repeats); 200 by default."""

    def __init__(self, script: dict[str, list[int]] | None = None, *, max_attempts: int = 3) -> None:
        self.script = {cid: list(statuses) for cid, statuses in (script or {}).items()}
        self.max_attempts = max_attempts
        self.sent: Counter[str] = Counter()
        self.log = logging.getLogger("stub-sender")
        self.settings = HilosConnectionSettings(conn_id="stub", base_url="https://api.hilos.io", token="t0ken")
        self._lock = threading.Lock()

    def send_update(self, update: ValidatedUpdate, *, attempt: int | None = None) -> dict[str, Any]:
        cid = update.conversation_id
        with self._lock:
            self.sent[cid] += 1
            statuses = self.script.get(cid, [200])
            status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
        if status == 200:
            return {"id": cid}
        error_class = HilosAPIError if status in (429, 500, 502, 503, 504) or status == 0 else HilosPermanentAPIError
        raise error_class(
            f"stub answer {status} for {cid}",
            status_code=status or None,
            method="PATCH",
            path=f"/api/inbox/conversation/{cid}/update",
            attempts=attempt or 1,
        )

    def backoff_delay(self, attempt: int, retry_after: float | None = None) -> float:
        return 0.0

    def redact(self, text: str) -> str:
        return text


def ids(count: int) -> list[str]:
    return [str(uuid.UUID(int=i + 1)) for i in range(count)]


def run(sender: StubSender, conversations: list[str], **options: Any):
    rows = [{"conversation_id": cid, "status": "CLOSED"} for cid in conversations]
    updater = BatchUpdater(sender, BatchOptions(progress_interval=3600, **options))
    result = updater.run(rows_from_updates(rows))
    return updater, result


def test_fail_at_end_sends_every_row_then_fails_when_too_many_failed():
    every = ids(30)
    sender = StubSender({cid: [404] for cid in every[:3]})
    updater, result = run(sender, every, max_concurrency=4)
    assert (result.updated, result.failed, result.failed_permanently, result.not_sent) == (27, 3, 3, 0)
    assert sum(sender.sent.values()) == 30  # a refusal is not retried
    with pytest.raises(HilosPermanentBatchError) as err:
        updater.check(result)
    assert isinstance(err.value, AirflowFailException)
    _, within = run(StubSender({cid: [404] for cid in every[:3]}), every, max_failed_ratio=0.1)
    BatchUpdater(StubSender(), BatchOptions(max_failed_ratio=0.1)).check(within)  # 3 <= 10 % of 30: passes


def test_fail_fast_stops_sending_and_accounts_for_every_row():
    every = ids(200)
    sender = StubSender({every[0]: [400]})
    updater, result = run(sender, every, failure_policy="fail_fast", max_concurrency=2)
    assert result.failed == 1 and result.not_sent > 150
    assert result.updated + result.failed + result.not_sent == 200
    assert result.stopped.startswith("fail_fast: 1 row(s) failed, more than the 0 allowed")
    assert sum(sender.sent.values()) == result.updated + 1
    with pytest.raises(HilosPermanentBatchError):
        updater.check(result)


def test_never_does_not_fail():
    every = ids(20)
    updater, result = run(StubSender({cid: [404] for cid in every}), every, failure_policy="never")
    assert result.failed == 20
    updater.check(result)  # no error


def test_retryable_failures_are_retried_up_to_max_attempts_then_stay_retryable():
    every = ids(10)
    sender = StubSender({every[0]: [503, 503, 200], every[1]: [503]}, max_attempts=3)
    updater, result = run(sender, every)
    assert sender.sent[every[0]] == 3 and sender.sent[every[1]] == 3
    assert (result.updated, result.failed, result.failed_permanently, result.retried) == (9, 1, 0, 4)
    with pytest.raises(HilosBatchError) as err:
        updater.check(result)
    assert not isinstance(err.value, AirflowFailException)


def test_mixed_failures_stay_retryable():
    every = ids(10)
    updater, result = run(StubSender({every[0]: [404], every[1]: [502]}), every)
    assert (result.failed, result.failed_permanently) == (2, 1)
    with pytest.raises(HilosBatchError) as err:
        updater.check(result)
    assert type(err.value) is HilosBatchError


def test_a_rejected_token_stops_the_batch_at_once():
    every = ids(100)
    sender = StubSender({cid: [401] for cid in every})
    updater, result = run(sender, every, max_concurrency=4)
    assert sum(sender.sent.values()) <= 4
    assert result.not_sent >= 96
    with pytest.raises(HilosPermanentBatchError, match="stopped at its first answers"):
        updater.check(result)


def test_an_outage_opens_the_breaker_after_a_bounded_number_of_requests():
    every = ids(500)
    sender = StubSender({cid: [503] for cid in every}, max_attempts=5)
    updater, result = run(sender, every, max_concurrency=8)
    assert sum(sender.sent.values()) <= 10 * 8
    assert result.stopped.startswith("the API looks unavailable: ")
    with pytest.raises(HilosAPIUnavailableError):
        updater.check(result)


def test_a_flaky_row_that_recovers_resets_the_breaker():
    every = ids(300)
    sender = StubSender({cid: [503, 200] for cid in every}, max_attempts=3)  # every row fails once, then lands
    updater, result = run(sender, every, max_concurrency=8)
    assert (result.updated, result.failed, result.stopped) == (300, 0, None)
    updater.check(result)


def test_options_are_checked_once_with_clear_messages():
    for bad, match in [
        ({"max_concurrency": 0}, "from 1 to 256"),
        ({"failure_policy": "sometimes"}, "not one of"),
        ({"max_failed_ratio": 2}, "from 0 to 1"),
        ({"max_invalid_ratio": -1}, "max_invalid_ratio"),
        ({"max_requests_per_second": 0}, "greater than 0"),
        ({"max_failed_rows": -1}, "0 or more"),
        ({"progress_interval": "soon"}, "seconds"),
    ]:
        with pytest.raises(ValueError, match=match):
            BatchOptions(**bad)
    assert BatchOptions(failure_policy="fail_fast").failure_policy == "fail_fast"
    assert "max_concurrency" in BatchOptions.names() and len(BatchOptions.names()) == 8


def test_invalid_rows_are_refused_together_before_anything_is_sent():
    sender = StubSender()
    rows = [{"conversation_id": cid, "status": "CLOSED"} for cid in ids(5)] + [{"conversation_id": "x"}]
    with pytest.raises(HilosValidationError, match=r"1 of 6 row\(s\) are invalid and nothing was sent"):
        BatchUpdater(sender, BatchOptions()).run(rows_from_updates(rows))
    assert not sender.sent


def test_the_report_lists_rows_in_input_order_whatever_order_outcomes_arrive_in():
    conversations = ids(300)
    # early rows are retried (they finish last), some fail for good, one is invalid: outcomes arrive out of order
    script = {cid: [503, 503, 200] for cid in conversations[:40:3]} | {cid: [400] for cid in conversations[50:60]}

    class Slow(StubSender):
        def send_update(self, update, *, attempt=None):
            if update.conversation_id in conversations[:10]:
                threading.Event().wait(0.02)  # the first rows answer after the later ones
            return super().send_update(update, attempt=attempt)

    sender = Slow(script)
    rows = [{"conversation_id": cid, "status": "CLOSED"} for cid in conversations]
    rows[100] = {"conversation_id": conversations[100], "status": "DONE"}
    report = io.StringIO()
    options = BatchOptions(progress_interval=3600, max_concurrency=16, skip_invalid_rows=True, failure_policy="never")
    result = BatchUpdater(sender, options, report=report).run(rows_from_updates(rows))
    lines = [json.loads(line) for line in report.getvalue().splitlines()]
    assert [line["row"] for line in lines] == list(range(1, 301))
    assert [line["conversation_id"] for line in lines] == conversations
    assert Counter(line["outcome"] for line in lines) == {"updated": 289, "failed": 10, "skipped": 1}
    assert result.retried == 2 * len(conversations[:40:3])


def test_a_batch_of_skipped_rows_says_there_was_nothing_to_send(caplog):
    rows = [{"conversation_id": cid, "status": "DONE"} for cid in ids(3)]
    options = BatchOptions(progress_interval=3600, skip_invalid_rows=True, max_invalid_ratio=1.0)
    sender = StubSender()
    with caplog.at_level(logging.INFO, logger="stub-sender"):
        result = BatchUpdater(sender, options).run(rows_from_updates(rows))
    assert result.skipped == 3 and not sender.sent
    assert "Hilos batch finished: nothing to send: all 3 row(s) were skipped as invalid" in caplog.text
    assert "0/0 done" not in caplog.text and "100.0%" not in caplog.text
