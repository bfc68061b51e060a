"""The batch engine against the sandbox: every row accounted for, in calm and in the weather (throttling, outages,
refusals)."""

from __future__ import annotations

import itertools
import json
import logging
import re
import time
from collections import defaultdict

import pytest

from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_hilos.batch import BatchOptions
from airflow_provider_hilos.batch.engine import BatchEngine
from airflow_provider_hilos.batch.pipeline import pipeline_for
from airflow_provider_hilos.exceptions import (
    HilosAPIUnavailableError,
    HilosBatchError,
    HilosConfigurationError,
    HilosPermanentBatchError,
    HilosValidationError,
)
from airflow_provider_hilos.hooks.hilos import HilosHook
from airflow_provider_hilos.operators.conversation import (
    BATCH_RESULT_XCOM_KEY,
    ConversationBatchUpdateOperator,
)
from airflow_provider_hilos.transport import HilosTransport
from tests.conftest import TEST_TOKEN, FakeTI
from tests.helpers import MISSING, StubHook, fast_hook, ids, landed, patches, rows_for

STATUSES = ["NEW", "IN_PROGRESS", "RESOLVED", "CLOSED"]


def intent_for(ids: list[str]) -> list[dict]:
    return [
        {
            "conversation_id": cid,
            "status": STATUSES[i % 4],
            "tags": [{"name": f"batch-{i}"}],
            "assigned_team": 1 + i % 4,
        }
        for i, cid in enumerate(ids)
    ]


def assert_state_matches(sandbox, intent: list[dict], untouched: dict[str, dict]) -> None:
    for row in intent:  # rows carry status, tags and assigned_team
        payload = {k: v for k, v in row.items() if k != "conversation_id"}
        assert sandbox.mismatches(row["conversation_id"], payload) == [], row
    for cid, before in untouched.items():
        assert sandbox.conversation(cid) == before, f"{cid} changed but was not in the intent"


def with_missing(sb, count_ok: int, count_missing: int) -> list[dict]:
    rows = intent_for(sb.conversation_ids()[:count_ok])
    rows += [{"conversation_id": MISSING.format(i), "status": "NEW"} for i in range(count_missing)]
    return rows


def test_batch_updates_every_row(sb):
    ids = sb.conversation_ids()
    intent = intent_for(ids[:120])
    untouched = {cid: sb.conversation(cid) for cid in ids[120:]}
    result = fast_hook().update_conversations(intent, max_concurrency=8)
    assert (result.total, result.updated, result.failed, result.skipped, result.not_sent) == (120, 120, 0, 0, 0)
    assert result.rate_per_second > 0 and result.duration_seconds > 0
    assert_state_matches(sb, intent, untouched)


def test_invalid_rows_are_reported_together_before_anything_is_sent(sb, tmp_path):
    ids = sb.conversation_ids()
    rows = intent_for(ids[:10])
    rows[1]["status"] = "DONE"
    rows[4] = {"conversation_id": "../etc", "status": "NEW"}
    rows[8] = {"status": "NEW"}
    report = tmp_path / "report.jsonl"
    op = ConversationBatchUpdateOperator(task_id="b", updates=rows, report_path=str(report))
    with pytest.raises(HilosValidationError) as err:
        op.execute({"ti": FakeTI()})
    message = str(err.value)
    assert message.startswith("Hilos batch refused: 3 of 10 row(s) are invalid and nothing was sent")
    assert [f for f in err.value.fields] == [
        f"row 2 (conversation '{ids[1]}')",
        "row 5 (conversation '../etc')",
        "row 9",
    ]
    assert "status: 'DONE' is not a valid status" in message
    assert "conversation_id: is missing" in message
    assert sb.requests() == []
    assert not report.exists()  # nothing half-written


def test_skip_invalid_rows_sends_the_rest_and_reports_them(sb, tmp_path):
    ids = sb.conversation_ids()
    rows = intent_for(ids[:6])
    rows[2]["tags"] = [{"name": "x" * 101}]
    report = tmp_path / "report.jsonl"
    ti = FakeTI()
    result = ConversationBatchUpdateOperator(
        task_id="b", updates=rows, skip_invalid_rows=True, report_path=str(report)
    ).execute({"ti": ti})
    assert (result["updated"], result["skipped"], result["failed"]) == (5, 1, 0)
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    assert sorted((r["row"], r["outcome"]) for r in lines) == [
        (1, "updated"),
        (2, "updated"),
        (3, "skipped"),
        (4, "updated"),
        (5, "updated"),
        (6, "updated"),
    ]
    assert "at most 100" in next(r for r in lines if r["outcome"] == "skipped")["error"]
    assert ti.pushed[BATCH_RESULT_XCOM_KEY] == result


def test_fail_at_end_sends_everything_then_fails_with_the_result(sb):
    rows = with_missing(sb, 30, 3)
    ti = FakeTI()
    op = ConversationBatchUpdateOperator(task_id="b", updates=rows, max_concurrency=4)
    with pytest.raises(HilosBatchError) as err:
        op.execute({"ti": ti})
    result = ti.pushed[BATCH_RESULT_XCOM_KEY]
    assert (result["updated"], result["failed"], result["not_sent"]) == (30, 3, 0)
    assert {r["conversation_id"] for r in result["failed_rows"]} == {MISSING.format(i) for i in range(3)}
    assert all(r["status_code"] == 404 and "was not found" in r["error"] for r in result["failed_rows"])
    assert "3 of 33 row(s) failed (allowed: 0" in str(err.value)
    assert err.value.result == result


def test_fail_fast_stops_sending_and_accounts_for_every_row(sb, tmp_path):
    rows = [{"conversation_id": MISSING.format(0), "status": "NEW"}, *intent_for(sb.conversation_ids()[:200])]
    report = tmp_path / "r.jsonl"
    with pytest.raises(HilosBatchError) as err:
        ConversationBatchUpdateOperator(
            task_id="b", updates=rows, failure_policy="fail_fast", max_concurrency=2, report_path=str(report)
        ).execute({"ti": FakeTI()})
    result = err.value.result
    assert result["failed"] == 1 and result["not_sent"] > 100
    assert result["updated"] + result["failed"] + result["not_sent"] == 201
    outcomes = [json.loads(line)["outcome"] for line in report.read_text().splitlines()]
    assert len(outcomes) == 201 and outcomes.count("not_sent") == result["not_sent"]
    assert len([r for r in sb.requests() if r["method"] == "PATCH"]) == result["updated"] + 1


def test_never_policy_and_failed_ratio_threshold(sb):
    rows = with_missing(sb, 38, 2)
    hook = fast_hook()
    result = hook.update_conversations(rows, failure_policy="never")
    assert (result.updated, result.failed) == (38, 2)
    assert hook.update_conversations(rows, max_failed_ratio=0.05).failed == 2  # 2 <= 5% of 40
    with pytest.raises(HilosBatchError, match=r"allowed: 1, max_failed_ratio=0.03"):
        hook.update_conversations(rows, max_failed_ratio=0.03)


def test_a_rate_limit_is_found_and_every_row_lands(sb):
    sb.set_faults(rate_limit_per_second=40, rate_limit_burst=5, retry_after_seconds=1)
    ids = sb.conversation_ids()
    intent = intent_for(ids[:80])
    untouched = {cid: sb.conversation(cid) for cid in ids[80:]}
    hook = HilosHook(max_attempts=8)
    result = hook.update_conversations(intent, max_concurrency=16)
    assert result.updated == 80 and result.failed == 0
    throttled = [r for r in sb.requests() if r["status"] == 429]
    assert throttled, "the sandbox should have throttled"
    assert result.throttled == len(throttled) and result.retried == len(throttled)
    assert len([r for r in sb.requests() if r["method"] == "PATCH"]) == 80 + len(throttled)
    assert_state_matches(sb, intent, untouched)


def test_client_side_rate_limit_is_respected(sb):

    rows = intent_for(sb.conversation_ids()[:20])
    start = time.monotonic()
    fast_hook().update_conversations(rows, max_concurrency=8, max_requests_per_second=50)
    assert time.monotonic() - start >= 19 / 50


def test_failed_rows_in_xcom_are_capped_and_the_report_has_all(sb, tmp_path):
    rows = with_missing(sb, 5, 150)
    report = tmp_path / "report.jsonl"
    ti = FakeTI()
    with pytest.raises(HilosBatchError):
        ConversationBatchUpdateOperator(
            task_id="b", updates=rows, report_path=str(report), max_concurrency=16, max_failed_rows=100
        ).execute({"ti": ti})
    result = ti.pushed[BATCH_RESULT_XCOM_KEY]
    assert len(result["failed_rows"]) == 100 and result["failed_rows_omitted"] == 50
    assert len(json.dumps(result)) < 64_000
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    assert sum(r["outcome"] == "failed" for r in lines) == 150
    assert sum(r["outcome"] == "updated" for r in lines) == 5
    assert result["report_path"] == str(report)
    assert TEST_TOKEN not in report.read_text()


def test_streaming_from_a_json_lines_file(sb, tmp_path):
    ids = sb.conversation_ids()
    intent = intent_for(ids[:300])
    path = tmp_path / "updates.jsonl"
    path.write_text(
        "\n".join(json.dumps(r) for r in intent[:150]) + "\n\n" + "\n".join(json.dumps(r) for r in intent[150:]) + "\n"
    )
    untouched = {cid: sb.conversation(cid) for cid in ids[300:]}
    result = ConversationBatchUpdateOperator(task_id="b", updates_path=str(path), max_concurrency=16).execute(
        {"ti": FakeTI()}
    )
    assert (result["total"], result["updated"]) == (300, 300)
    assert_state_matches(sb, intent, untouched)


def test_json_string_and_nested_payload_rows(sb):
    cid = sb.conversation_ids()[0]
    rows = json.dumps([{"conversation_id": cid, "payload": {"status": "CLOSED"}, "tags": [{"name": "x"}]}])
    assert fast_hook().update_conversations(rows).updated == 1
    (sent,) = [r for r in sb.requests() if r["method"] == "PATCH"]
    assert sent["body"] == {"status": "CLOSED", "tags": [{"name": "x"}]}


def test_injected_5xx_every_update_lands_exactly_as_intended(sb):
    sb.set_faults(error_rate=0.3, fault_seed=9)
    ids = sb.conversation_ids()
    intent = intent_for(ids[:250])
    untouched = {cid: sb.conversation(cid) for cid in ids[250:]}
    result = HilosHook(backoff_base=0.01, max_wait=0.05, max_attempts=10).update_conversations(
        intent, max_concurrency=16
    )
    assert (result.updated, result.failed) == (250, 0)
    assert sum(r["status"] >= 500 for r in sb.requests()) > 30
    assert_state_matches(sb, intent, untouched)


def test_progress_is_logged_with_rate_and_eta(sb, output):
    fast_hook().update_conversations(intent_for(sb.conversation_ids()[:40]), progress_interval=0, max_concurrency=2)
    text = output()
    assert "Hilos batch: " in text and "req/s, ETA" in text
    assert (
        "Hilos batch finished: 40/40 done (100.0%), 40 updated, 0 already applied, 0 failed, 0 skipped, "
        "0 retried, 0 throttled"
    ) in text


def test_a_batch_against_a_missing_endpoint_stops_at_its_first_answers(sb, monkeypatch):
    """The wrong API family (or Base URL) makes every row fail the same way: stop, and say what to fix."""
    monkeypatch.setenv("AIRFLOW_CONN_HILOS_DEFAULT", sb.connection_json(api_family="activecampaign"))
    rows = intent_for(sb.conversation_ids()[:300])
    ti = FakeTI()
    with pytest.raises(HilosBatchError) as err:
        ConversationBatchUpdateOperator(task_id="b", updates=rows, max_concurrency=4).execute({"ti": ti})
    message = str(err.value)
    assert "the API has no endpoint at PATCH http://127.0.0.1:" in message
    assert "/channel/whatsapp/inbox/conversation/" in message and "check the Base URL and the API family" in message
    assert "API family activecampaign (api_family='activecampaign' in the connection)" in message
    sent = [r for r in sb.requests() if r["method"] == "PATCH"]
    assert 1 <= len(sent) <= 4  # the rows already in flight, not 300
    result = ti.pushed[BATCH_RESULT_XCOM_KEY]
    assert result["updated"] == 0 and result["failed"] == len(sent) and result["not_sent"] == 300 - len(sent)
    assert all(r["status"] == 404 for r in sent)
    ok, test_message = HilosHook().test_connection()  # the Test button says the same
    assert ok is False and "the API has no endpoint at GET http://127.0.0.1:" in test_message


def test_a_throttled_row_waits_its_retry_after_while_the_others_go_on(sb):
    sb.set_faults(throttle_rate=0.05, retry_after_seconds=1, fault_seed=4)
    rows = rows_for(sb.conversation_ids()[:300])
    result = HilosHook().update_conversations(rows, max_concurrency=16)
    assert (result.updated, result.failed) == (300, 0) and landed(sb, rows)
    log = patches(sb)
    refused = [r for r in log if r["status"] == 429]
    assert refused and result.throttled == len(refused) and result.retried == len(refused)
    by_conversation: dict[str, list[dict]] = defaultdict(list)
    for entry in log:
        by_conversation[entry["path"].split("/")[-2]].append(entry)
    for entries in by_conversation.values():
        for first, second in itertools.pairwise(entries):
            if first["status"] == 429:  # Retry-After: 1 honoured for that row
                assert second["time"] - first["time"] >= 0.95
    first_429 = min(r["time"] for r in refused)
    sent_during_the_wait = [r for r in log if first_429 < r["time"] < first_429 + 0.9]
    assert len(sent_during_the_wait) > 16  # nobody else waited: the batch went on at full pace


def test_exhausted_429_retries_stay_retryable(sb):
    sb.set_faults(throttle_rate=1, retry_after_seconds=0)
    rows = rows_for(sb.conversation_ids()[:3])
    with pytest.raises(HilosBatchError) as err:
        HilosHook(max_attempts=2).update_conversations(rows, max_concurrency=2)
    assert not isinstance(err.value, AirflowFailException)  # a later try may get through
    assert err.value.result["failed"] == 3 and err.value.result["failed_permanently"] == 0


@pytest.mark.parametrize("policy", ["fail_at_end", "never", "fail_fast"])
def test_an_outage_stops_the_batch_after_a_bounded_number_of_requests(sb, monkeypatch, policy):
    sb.set_faults(error_rate=1, error_statuses=[500, 502, 503], retry_after_seconds=0, fault_seed=2)
    rows = rows_for(sb.conversation_ids()[:400])
    ti = FakeTI()
    op = ConversationBatchUpdateOperator(
        task_id="b",
        updates=rows,
        max_concurrency=8,
        failure_policy=policy,
        max_failed_ratio=1.0 if policy == "fail_fast" else 0.0,
    )
    # no real waiting between retries (the logic is the same)
    monkeypatch.setattr(HilosTransport, "backoff_delay", lambda self, attempt, retry_after=None: 0.01)
    with pytest.raises(HilosAPIUnavailableError) as err:
        op.execute({"ti": ti})
    sent = len(patches(sb))
    assert sent <= 10 * 8  # not 400 rows x 5 attempts
    message = str(err.value)
    assert message.startswith("Hilos API looks unavailable: ") and "consecutive failed requests since 20" in message
    result = ti.pushed[BATCH_RESULT_XCOM_KEY]
    assert result["updated"] == 0 and result["not_sent"] > 300
    assert result["updated"] + result["failed"] + result["not_sent"] == 400
    assert (
        f"0 of 400 row(s) applied (0 now, 0 by an earlier try), {result['failed']} failed, "
        f"{result['not_sent']} not sent" in message
    )
    assert not isinstance(err.value, AirflowFailException)  # Airflow retries it, later
    assert result["stopped"].startswith("the API looks unavailable")


def test_a_flaky_api_does_not_open_the_breaker(sb):
    sb.set_faults(error_rate=0.3, retry_after_seconds=0, fault_seed=6)
    rows = rows_for(sb.conversation_ids()[:300])
    result = HilosHook(backoff_base=0.01, max_wait=0.05, max_attempts=10).update_conversations(rows, max_concurrency=16)
    assert (result.updated, result.failed, result.not_sent, result.stopped) == (300, 0, 0, None)
    assert landed(sb, rows)


def test_a_batch_whose_failures_are_all_refusals_is_not_retried(sb):
    rows = rows_for(sb.conversation_ids()[:20]) + [
        {"conversation_id": MISSING.format(i), "status": "NEW"} for i in range(3)
    ]
    with pytest.raises(HilosPermanentBatchError) as err:
        HilosHook().update_conversations(rows)
    assert isinstance(err.value, AirflowFailException)
    assert "every failure is a refusal another try cannot fix" in str(err.value)
    assert err.value.result["failed_permanently"] == 3


def test_a_revoked_token_stops_the_batch_at_once(sb, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_HILOS_DEFAULT",
        json.dumps({"conn_type": "hilos", "host": sb.url, "password": TEST_TOKEN + "-revoked"}),
    )
    with pytest.raises(HilosPermanentBatchError, match="rejected the API token of connection 'hilos_default'"):
        HilosHook().update_conversations(rows_for(sb.conversation_ids()[:200]), max_concurrency=4)
    assert len(patches(sb)) <= 4  # the requests in flight when the first 401 came back, not 200


def test_skipped_rows_are_logged_with_their_reasons_and_listed_in_the_result(sb, output):
    rows = rows_for(sb.conversation_ids()[:30])
    for i in range(0, 30, 3):
        rows[i] = {**rows[i], "status": "DONE"}
    ti = FakeTI()
    result = ConversationBatchUpdateOperator(
        task_id="b", updates=rows, skip_invalid_rows=True, max_failed_rows=4
    ).execute({"ti": ti})
    assert (result["updated"], result["skipped"]) == (20, 10)
    assert len(result["skipped_rows"]) == 4 and result["skipped_rows_omitted"] == 6
    assert result["skipped_rows"][0] == {
        "row": 1,
        "conversation_id": rows[0]["conversation_id"],
        "error": result["skipped_rows"][0]["error"],
    }
    assert "status: 'DONE' is not a valid status" in result["skipped_rows"][0]["error"]
    text = output()
    # each skipped row is logged (Airflow 2 may show a line both on stderr and in caplog: count the rows named)
    logged = re.findall(r"row (\d+) \(conversation [^)]*\) skipped, it is invalid: status: 'DONE' is not a valid", text)
    assert sorted(set(map(int, logged))) == list(range(1, 31, 3))
    assert f"row 4 (conversation '{rows[3]['conversation_id']}') skipped" in text


def test_a_batch_of_only_invalid_rows_fails_unless_allowed(sb, tmp_path):
    wrong = tmp_path / "changes.jsonl"  # an export from the wrong system: every row is invalid
    wrong.write_text(
        "".join(json.dumps({"conversation_id": cid, "state": "closed"}) + "\n" for cid in sb.conversation_ids()[:6])
    )
    op = ConversationBatchUpdateOperator(task_id="b", updates_path=str(wrong), skip_invalid_rows=True)
    with pytest.raises(HilosValidationError, match=r"6 of 6 row\(s\) are invalid, and every row is invalid"):
        op.execute({"ti": FakeTI()})
    allowed = ConversationBatchUpdateOperator(
        task_id="b", updates_path=str(wrong), skip_invalid_rows=True, max_invalid_ratio=1.0
    ).execute({"ti": FakeTI()})
    assert (allowed["skipped"], allowed["updated"]) == (6, 0)
    rows = rows_for(sb.conversation_ids()[:4]) + [{"conversation_id": "x", "status": "NEW"}] * 2
    with pytest.raises(HilosValidationError, match=r"more than max_invalid_ratio=0\.25"):
        ConversationBatchUpdateOperator(
            task_id="b", updates=rows, skip_invalid_rows=True, max_invalid_ratio=0.25
        ).execute({"ti": FakeTI()})
    assert patches(sb) == []
    assert ConversationBatchUpdateOperator(task_id="b", updates=[]).execute({"ti": FakeTI()})["total"] == 0


def test_a_missing_input_file_is_explained_and_the_report_folder_is_created(sb, tmp_path):
    missing = tmp_path / "nope" / "changes.jsonl"
    with pytest.raises(HilosValidationError, match=f"updates_path: '{missing}' does not exist"):
        ConversationBatchUpdateOperator(task_id="b", updates_path=str(missing)).execute({"ti": FakeTI()})
    report = tmp_path / "reports" / "2025" / "r.jsonl"
    result = ConversationBatchUpdateOperator(
        task_id="b", updates=rows_for(sb.conversation_ids()[:3]), report_path=str(report)
    ).execute({"ti": FakeTI()})
    assert result["updated"] == 3 and len(report.read_text().splitlines()) == 3


def test_a_bad_connection_fails_the_batch_once_before_any_worker_starts(sb, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_HILOS_DEFAULT", json.dumps({"conn_type": "hilos", "host": sb.url}))
    with pytest.raises(HilosConfigurationError, match="has no API token"):
        HilosHook().update_conversations(rows_for(sb.conversation_ids()[:50]))
    assert patches(sb) == []


def test_a_batch_of_skipped_rows_says_there_was_nothing_to_send(caplog):
    rows = [{"conversation_id": cid, "status": "DONE"} for cid in ids(3)]
    options = BatchOptions(progress_interval=3600, skip_invalid_rows=True, max_invalid_ratio=1.0)
    sender = StubHook()
    with caplog.at_level(logging.INFO, logger="stub-sender"):
        result = BatchEngine(sender, options).run(pipeline_for(rows))
    assert result.skipped == 3 and not sender.sent
    assert "Hilos batch finished: nothing to send: all 3 row(s) were skipped as invalid" in caplog.text
    assert "0/0 done" not in caplog.text and "100.0%" not in caplog.text


def test_a_retry_that_falls_due_while_the_engine_decides_is_not_a_negative_sleep():
    """The clock moves between deciding to sleep until a retry is due and sleeping: the wait is never negative."""

    class RacingClock:
        def __init__(self) -> None:
            self.moment = 0.0
            self.slept: list[float] = []

        def now(self) -> float:
            self.moment += 0.4  # every look at the clock finds it later
            return self.moment

        def sleep(self, seconds: float) -> None:
            assert seconds >= 0
            self.slept.append(seconds)

    (cid,) = ids(1)
    stub = StubHook({cid: [503, 200]})
    stub.backoff_delay = lambda attempt, retry_after=None: 0.5  # type: ignore[method-assign]
    clock = RacingClock()
    rows = [{"conversation_id": cid, "status": "CLOSED"}]
    result = BatchEngine(stub, BatchOptions(progress_interval=3600), clock=clock).run(pipeline_for(rows))
    assert (result.updated, result.retried) == (1, 1) and clock.slept == [0.0]


def test_an_outage_is_described_with_one_number_in_the_log_and_the_exception(sb, output):
    """Audit 2 point 14: the log said 32 consecutive failed requests, the exception 40."""
    import re

    from airflow_provider_hilos.exceptions import HilosAPIUnavailableError
    from airflow_provider_hilos.hooks.hilos import HilosHook

    sb.set_faults(error_rate=1, error_statuses=[503], retry_after_seconds=0)
    rows = [{"conversation_id": cid, "status": "CLOSED"} for cid in sb.conversation_ids()[:150]]
    with HilosHook() as hook, pytest.raises(HilosAPIUnavailableError) as caught:
        hook.update_conversations(rows, max_concurrency=16)
    logged = set(re.findall(r"(\d+) consecutive failed requests", output()))
    raised = set(re.findall(r"(\d+) consecutive failed requests", str(caught.value)))
    assert len(raised) == 1 and logged == raised
