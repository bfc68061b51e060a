"""The failure policies and stopping rules, row by row against a stub hook (no HTTP)."""

from __future__ import annotations

from typing import Any

import pytest

from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_hilos.batch import BatchOptions
from airflow_provider_hilos.batch.engine import BatchEngine
from airflow_provider_hilos.batch.pipeline import Survey, pipeline_for
from airflow_provider_hilos.batch.result import BatchResult, StopReason
from airflow_provider_hilos.batch.verdict import batch_verdict, validation_verdict
from airflow_provider_hilos.exceptions import (
    HilosAPIUnavailableError,
    HilosBatchError,
    HilosCheckpointError,
    HilosPermanentBatchError,
    HilosValidationError,
)
from tests.helpers import StubHook, ids


class Verdict:
    """What a batch's options say about a result (``check`` raises as the hook does)."""

    def __init__(self, options: BatchOptions) -> None:
        self.options = options

    def check(self, result) -> None:
        if failure := batch_verdict(result, self.options):
            raise failure


def run(sender: StubHook, conversations: list[str], **options: Any):
    rows = [{"conversation_id": cid, "status": "CLOSED"} for cid in conversations]
    batch_options = BatchOptions(progress_interval=3600, **options)
    result = BatchEngine(sender, batch_options).run(pipeline_for(rows))
    return Verdict(batch_options), result


def test_fail_at_end_sends_every_row_then_fails_when_too_many_failed():
    every = ids(30)
    sender = StubHook({cid: [404] for cid in every[:3]})
    updater, result = run(sender, every, max_concurrency=4)
    assert (result.updated, result.failed, result.failed_permanently, result.not_sent) == (27, 3, 3, 0)
    assert sum(sender.sent.values()) == 30  # a refusal is not retried
    with pytest.raises(HilosPermanentBatchError) as err:
        updater.check(result)
    assert isinstance(err.value, AirflowFailException)
    _, within = run(StubHook({cid: [404] for cid in every[:3]}), every, max_failed_ratio=0.1)
    Verdict(BatchOptions(max_failed_ratio=0.1)).check(within)  # 3 <= 10 % of 30: passes


def test_fail_fast_stops_sending_and_accounts_for_every_row():
    every = ids(200)
    sender = StubHook({every[0]: [400]})
    updater, result = run(sender, every, failure_policy="fail_fast", max_concurrency=2)
    assert result.failed == 1 and result.not_sent > 150
    assert result.updated + result.failed + result.not_sent == 200
    assert result.stopped.startswith("fail_fast: 1 row(s) failed, more than the 0 allowed")
    assert sum(sender.sent.values()) == result.updated + 1
    with pytest.raises(HilosPermanentBatchError):
        updater.check(result)


def test_never_does_not_fail():
    every = ids(20)
    updater, result = run(StubHook({cid: [404] for cid in every}), every, failure_policy="never")
    assert result.failed == 20
    updater.check(result)  # no error


def test_retryable_failures_are_retried_up_to_max_attempts_then_stay_retryable():
    every = ids(10)
    sender = StubHook({every[0]: [503, 503, 200], every[1]: [503]}, max_attempts=3)
    updater, result = run(sender, every)
    assert sender.sent[every[0]] == 3 and sender.sent[every[1]] == 3
    assert (result.updated, result.failed, result.failed_permanently, result.retried) == (9, 1, 0, 4)
    with pytest.raises(HilosBatchError) as err:
        updater.check(result)
    assert not isinstance(err.value, AirflowFailException)


def test_mixed_failures_stay_retryable():
    every = ids(10)
    updater, result = run(StubHook({every[0]: [404], every[1]: [502]}), every)
    assert (result.failed, result.failed_permanently) == (2, 1)
    with pytest.raises(HilosBatchError) as err:
        updater.check(result)
    assert type(err.value) is HilosBatchError


def test_a_rejected_token_stops_the_batch_at_once():
    every = ids(100)
    sender = StubHook({cid: [401] for cid in every})
    updater, result = run(sender, every, max_concurrency=4)
    assert sum(sender.sent.values()) <= 4
    assert result.not_sent >= 96
    with pytest.raises(HilosPermanentBatchError, match="stopped at its first answers"):
        updater.check(result)


def test_an_outage_opens_the_breaker_after_a_bounded_number_of_requests():
    every = ids(500)
    sender = StubHook({cid: [503] for cid in every}, max_attempts=5)
    updater, result = run(sender, every, max_concurrency=8)
    assert sum(sender.sent.values()) <= 10 * 8
    assert result.stopped.startswith("the API looks unavailable: ")
    with pytest.raises(HilosAPIUnavailableError):
        updater.check(result)


def test_a_flaky_row_that_recovers_resets_the_breaker():
    every = ids(300)
    sender = StubHook({cid: [503, 200] for cid in every}, max_attempts=3)  # every row fails once, then lands
    updater, result = run(sender, every, max_concurrency=8)
    assert (result.updated, result.failed, result.stopped) == (300, 0, None)
    updater.check(result)


# -- the verdict is a function of the result and the options alone ----------------------------------------------


def result_of(**counts) -> BatchResult:
    return BatchResult(**counts)


def test_the_verdict_reads_nothing_but_the_result_and_the_options():
    passed = result_of(total=10, updated=10)
    assert batch_verdict(passed, BatchOptions()) is None
    failed = result_of(
        total=10,
        updated=9,
        failed=1,
        failed_permanently=1,
        failed_rows=[{"row": 3, "conversation_id": "c", "status_code": 404, "error": "not found"}],
    )
    first, second = batch_verdict(failed, BatchOptions()), batch_verdict(failed, BatchOptions())
    assert type(first) is type(second) is HilosPermanentBatchError and str(first) == str(second)
    assert "row 3 (c): not found" in str(first) and first.result == failed.to_dict()
    assert batch_verdict(failed, BatchOptions(max_failed_ratio=0.1)) is None
    assert batch_verdict(failed, BatchOptions(failure_policy="never")) is None


def test_each_kind_of_stop_has_its_error():
    def stopped(reason: StopReason, message: str) -> BatchResult:
        result = result_of(total=100, updated=10, not_sent=90)
        result.stop(reason, message)
        return result

    unavailable = batch_verdict(
        stopped(StopReason.API_UNAVAILABLE, "the API looks unavailable: 20 consecutive failed requests since x"),
        BatchOptions(failure_policy="never"),  # whatever the policy
    )
    assert type(unavailable) is HilosAPIUnavailableError
    assert str(unavailable).startswith("Hilos API looks unavailable: 20 consecutive failed requests since x. ")
    refused = batch_verdict(stopped(StopReason.REFUSED, "Hilos rejected the API token"), BatchOptions())
    assert type(refused) is HilosPermanentBatchError and "every row would fail the same way" in str(refused)
    killed = batch_verdict(stopped(StopReason.KILLED, "the task was stopped"), BatchOptions(failure_policy="never"))
    assert type(killed) is HilosBatchError and "10 of 100 row(s) applied" in str(killed)
    disk = batch_verdict(stopped(StopReason.CHECKPOINT, "cannot write the checkpoint"), BatchOptions())
    assert type(disk) is HilosCheckpointError and not isinstance(disk, AirflowFailException)
    throttled_result = stopped(StopReason.THROTTLED, "the API asked to wait 3600 s (Retry-After)")
    throttled_result.retry_after = 3600.0
    throttled = batch_verdict(throttled_result, BatchOptions(failure_policy="never"))
    assert type(throttled) is HilosAPIUnavailableError and not isinstance(throttled, AirflowFailException)
    assert str(throttled).startswith("Hilos API throttled this batch: the API asked to wait 3600 s (Retry-After).")
    assert throttled.result["retry_after"] == 3600.0  # what a deferrable operator waits for


def test_invalid_rows_refuse_the_batch_before_sending_unless_allowed():
    survey = Survey(total=10, invalid=2, set_total=10, set_invalid=2, listed=[("row 1", "status: bad")])
    refusal = validation_verdict(survey, BatchOptions())
    assert isinstance(refusal, HilosValidationError)
    assert str(refusal).startswith("Hilos batch refused: 2 of 10 row(s) are invalid and nothing was sent")
    assert refusal.fields == ["row 1", "..."]  # the rows beyond the listed ones are counted, not dropped
    assert validation_verdict(survey, BatchOptions(skip_invalid_rows=True)) is None
    assert validation_verdict(
        Survey(total=3, invalid=3, set_total=3, set_invalid=3), BatchOptions(skip_invalid_rows=True)
    )
    assert validation_verdict(survey, BatchOptions(skip_invalid_rows=True, max_invalid_ratio=0.1)) is not None
    assert validation_verdict(Survey(total=5, set_total=5), BatchOptions()) is None


def test_validated_updates_skipped_one_by_one_fail_the_batch_unless_allowed():
    result = result_of(total=3, updated=2, skipped=1)
    assert type(batch_verdict(result, BatchOptions())) is HilosPermanentBatchError
    assert batch_verdict(result, BatchOptions(skip_invalid_rows=True)) is None
