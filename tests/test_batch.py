"""Bulk updates: validation first, failure policies, 429 slow-down, report and XCom cap, streaming."""

from __future__ import annotations

import io
import json

import pytest

from airflow_provider_hilos.batch import BatchUpdater
from airflow_provider_hilos.exceptions import HilosBatchError, HilosValidationError
from airflow_provider_hilos.hooks.hilos import HilosHook
from airflow_provider_hilos.operators.conversation import BATCH_RESULT_XCOM_KEY, ConversationBatchUpdateOperator
from airflow_provider_hilos.rows import rows_from_json_lines, rows_from_updates
from airflow_provider_hilos.sandbox import HilosSandbox
from tests.conftest import TEST_TOKEN, FakeTI, run_dag, xcom_value

STATUSES = ["NEW", "IN_PROGRESS", "RESOLVED", "CLOSED"]
MISSING = "00000000-0000-4000-8000-{:012d}"


@pytest.fixture
def big(monkeypatch):
    with HilosSandbox(conversations=400, seed=3, token=TEST_TOKEN) as sb:
        monkeypatch.setenv("AIRFLOW_CONN_HILOS_DEFAULT", sb.connection_json())
        yield sb


def fast_hook() -> HilosHook:
    """A hook whose retry waits are short (the logic is the same)."""
    return HilosHook(backoff_base=0.01, max_wait=0.05)


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


def test_batch_updates_every_row(big):
    ids = big.conversation_ids()
    intent = intent_for(ids[:120])
    untouched = {cid: big.conversation(cid) for cid in ids[120:]}
    result = fast_hook().update_conversations(intent, max_concurrency=8)
    assert (result.total, result.updated, result.failed, result.skipped, result.not_sent) == (120, 120, 0, 0, 0)
    assert result.rate_per_second > 0 and result.duration_seconds > 0
    assert_state_matches(big, intent, untouched)


def test_invalid_rows_are_reported_together_before_anything_is_sent(big, tmp_path):
    ids = big.conversation_ids()
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
    assert big.requests() == []
    assert not report.exists()  # nothing half-written


def test_skip_invalid_rows_sends_the_rest_and_reports_them(big, tmp_path):
    ids = big.conversation_ids()
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


def with_missing(big, count_ok: int, count_missing: int) -> list[dict]:
    rows = intent_for(big.conversation_ids()[:count_ok])
    rows += [{"conversation_id": MISSING.format(i), "status": "NEW"} for i in range(count_missing)]
    return rows


def test_fail_at_end_sends_everything_then_fails_with_the_result(big):
    rows = with_missing(big, 30, 3)
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


def test_fail_fast_stops_sending_and_accounts_for_every_row(big, tmp_path):
    rows = [{"conversation_id": MISSING.format(0), "status": "NEW"}, *intent_for(big.conversation_ids()[:200])]
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
    assert len([r for r in big.requests() if r["method"] == "PATCH"]) == result["updated"] + 1


def test_never_policy_and_failed_ratio_threshold(big):
    rows = with_missing(big, 38, 2)
    hook = fast_hook()
    result = hook.update_conversations(rows, failure_policy="never")
    assert (result.updated, result.failed) == (38, 2)
    assert hook.update_conversations(rows, max_failed_ratio=0.05).failed == 2  # 2 <= 5% of 40
    with pytest.raises(HilosBatchError, match=r"allowed: 1, max_failed_ratio=0.03"):
        hook.update_conversations(rows, max_failed_ratio=0.03)


def test_a_rate_limit_is_found_and_every_row_lands(big):
    big.set_faults(rate_limit_per_second=40, rate_limit_burst=5, retry_after_seconds=1)
    ids = big.conversation_ids()
    intent = intent_for(ids[:80])
    untouched = {cid: big.conversation(cid) for cid in ids[80:]}
    hook = HilosHook(max_attempts=8)
    result = hook.update_conversations(intent, max_concurrency=16)
    assert result.updated == 80 and result.failed == 0
    throttled = [r for r in big.requests() if r["status"] == 429]
    assert throttled, "the sandbox should have throttled"
    assert result.throttled == len(throttled) and result.retried == len(throttled)
    assert len([r for r in big.requests() if r["method"] == "PATCH"]) == 80 + len(throttled)
    assert_state_matches(big, intent, untouched)


def test_client_side_rate_limit_is_respected(big):
    import time

    rows = intent_for(big.conversation_ids()[:20])
    start = time.monotonic()
    fast_hook().update_conversations(rows, max_concurrency=8, max_requests_per_second=50)
    assert time.monotonic() - start >= 19 / 50


def test_failed_rows_in_xcom_are_capped_and_the_report_has_all(big, tmp_path):
    rows = with_missing(big, 5, 150)
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


def test_streaming_from_a_json_lines_file(big, tmp_path):
    ids = big.conversation_ids()
    intent = intent_for(ids[:300])
    path = tmp_path / "updates.jsonl"
    path.write_text(
        "\n".join(json.dumps(r) for r in intent[:150]) + "\n\n" + "\n".join(json.dumps(r) for r in intent[150:]) + "\n"
    )
    untouched = {cid: big.conversation(cid) for cid in ids[300:]}
    result = ConversationBatchUpdateOperator(task_id="b", updates_path=str(path), max_concurrency=16).execute(
        {"ti": FakeTI()}
    )
    assert (result["total"], result["updated"]) == (300, 300)
    assert_state_matches(big, intent, untouched)


def test_json_lines_rows_keep_their_line_numbers_and_bad_lines_are_named(tmp_path):
    path = tmp_path / "u.jsonl"
    path.write_text('{"conversation_id": "3fa85f64-5717-4562-b3fc-2c963f66afa6", "status": "NEW"}\n\n{oops\n')
    rows = list(rows_from_json_lines(lambda: path.open())())
    assert [n for n, _ in rows] == [1, 3]
    updater = BatchUpdater(HilosHook())
    with pytest.raises(HilosValidationError, match=r"row 3: row: line is not JSON"):
        updater.validate_all(rows_from_json_lines(lambda: path.open()))


def test_rows_read_lazily_one_line_at_a_time():
    class Lines(io.StringIO):
        reads = 0

        def readline(self, *args):
            Lines.reads += 1
            return super().readline(*args)

    text = "".join(
        json.dumps({"conversation_id": "3fa85f64-5717-4562-b3fc-2c963f66afa6", "status": "NEW"}) + "\n"
        for _ in range(1000)
    )
    iterator = rows_from_json_lines(lambda: Lines(text))()
    next(iterator)
    assert Lines.reads == 1


@pytest.mark.parametrize(
    ("updates", "match"), [("{bad", "not JSON"), ({"a": 1}, "must be a list"), (5, "must be a list")]
)
def test_bad_updates_input(updates, match):
    with pytest.raises(HilosValidationError, match=match):
        rows_from_updates(updates)


def test_updates_accept_the_text_a_template_renders_like_payload_does():
    rows = [{"conversation_id": "3fa85f64-5717-4562-b3fc-2c963f66afa6", "status": "NEW", "tags": None}]
    # without render_template_as_native_obj, "{{ ti.xcom_pull(...) }}" renders the list's Python repr
    for text in (repr(rows), json.dumps(rows), json.dumps(rows).encode()):
        assert [row for _, row in rows_from_updates(text)()] == rows
    with pytest.raises(HilosValidationError, match=r"updates: rendered to a dict, .*; it must be a list of rows"):
        rows_from_updates(repr({"conversation_id": "x"}))


def test_json_string_and_nested_payload_rows(big):
    cid = big.conversation_ids()[0]
    rows = json.dumps([{"conversation_id": cid, "payload": {"status": "CLOSED"}, "tags": [{"name": "x"}]}])
    assert fast_hook().update_conversations(rows).updated == 1
    (sent,) = [r for r in big.requests() if r["method"] == "PATCH"]
    assert sent["body"] == {"status": "CLOSED", "tags": [{"name": "x"}]}


def test_injected_5xx_every_update_lands_exactly_as_intended(big):
    big.set_faults(error_rate=0.3, fault_seed=9)
    ids = big.conversation_ids()
    intent = intent_for(ids[:250])
    untouched = {cid: big.conversation(cid) for cid in ids[250:]}
    result = HilosHook(backoff_base=0.01, max_wait=0.05, max_attempts=10).update_conversations(
        intent, max_concurrency=16
    )
    assert (result.updated, result.failed) == (250, 0)
    assert sum(r["status"] >= 500 for r in big.requests()) > 30
    assert_state_matches(big, intent, untouched)


def test_progress_is_logged_with_rate_and_eta(big, output):
    fast_hook().update_conversations(intent_for(big.conversation_ids()[:40]), progress_interval=0, max_concurrency=2)
    text = output()
    assert "Hilos batch: " in text and "req/s, ETA" in text
    assert (
        "Hilos batch finished: 40/40 done (100.0%), 40 updated, 0 already applied, 0 failed, 0 skipped, "
        "0 retried, 0 throttled"
    ) in text


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "exactly one of updates"),
        ({"updates": [], "updates_path": "x"}, "exactly one of updates"),
        ({"updates": [], "failure_policy": "sometimes"}, "not one of fail_at_end, fail_fast, never"),
        ({"updates": [], "max_concurrency": 0}, "from 1 to 256"),
        ({"updates": [], "max_failed_ratio": 2}, "from 0 to 1"),
        ({"updates": [], "max_requests_per_second": 0}, "greater than 0"),
    ],
)
def test_operator_arguments_are_checked_at_parse_time(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ConversationBatchUpdateOperator(task_id="b", **kwargs)


@pytest.mark.usefixtures("airflow_db")
def test_batch_operator_in_a_dag_run_with_updates_from_xcom(big):
    ids = big.conversation_ids()[:50]
    dag_run = run_dag("hilos_test_batch", {"ids": ids})
    assert dag_run.state == "success"
    result = xcom_value(dag_run, "batch")
    assert (result["total"], result["updated"], result["failed"]) == (50, 50, 0)
    assert all(big.conversation(cid)["status"] == "RESOLVED" for cid in ids)


def test_a_conversation_repeated_in_one_batch_is_refused_naming_both_rows(big):
    cid, other = big.conversation_ids()[:2]
    rows = [
        {"conversation_id": cid, "status": "NEW"},
        {"conversation_id": other, "status": "NEW"},
        {"conversation_id": cid.upper(), "status": "CLOSED"},
    ]
    with pytest.raises(
        HilosValidationError,
        match=rf"row 3 \(conversation '{cid.upper()}'\): conversation_id: "
        rf"{cid} is already updated by row 1",
    ):
        fast_hook().update_conversations(rows)
    assert big.requests() == []
    result = fast_hook().update_conversations(rows, skip_invalid_rows=True)
    assert (result.updated, result.skipped) == (2, 1)
    assert big.conversation(cid)["status"] == "NEW"  # the first row wins, deterministically


def test_a_batch_against_a_missing_endpoint_stops_at_its_first_answers(big, monkeypatch):
    """The wrong API family (or Base URL) makes every row fail the same way: stop, and say what to fix."""
    monkeypatch.setenv("AIRFLOW_CONN_HILOS_DEFAULT", big.connection_json(api_family="activecampaign"))
    rows = intent_for(big.conversation_ids()[:300])
    ti = FakeTI()
    with pytest.raises(HilosBatchError) as err:
        ConversationBatchUpdateOperator(task_id="b", updates=rows, max_concurrency=4).execute({"ti": ti})
    message = str(err.value)
    assert "the API has no endpoint at PATCH http://127.0.0.1:" in message
    assert "/channel/whatsapp/inbox/conversation/" in message and "check the Base URL and the API family" in message
    assert "API family activecampaign (api_family='activecampaign' in the connection)" in message
    sent = [r for r in big.requests() if r["method"] == "PATCH"]
    assert 1 <= len(sent) <= 4  # the rows already in flight, not 300
    result = ti.pushed[BATCH_RESULT_XCOM_KEY]
    assert result["updated"] == 0 and result["failed"] == len(sent) and result["not_sent"] == 300 - len(sent)
    assert all(r["status"] == 404 for r in sent)
    ok, test_message = HilosHook().test_connection()  # the Test button says the same
    assert ok is False and "the API has no endpoint at GET http://127.0.0.1:" in test_message
