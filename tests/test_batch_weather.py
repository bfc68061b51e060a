"""The batch in a real API's weather: throttling, outages, refusals no retry can fix, crashes, bad input.

Speed is not asserted here (that is benchmarks/bench_weather.py); behaviour is: who waits how long,
how many requests an outage costs, which errors Airflow retries, what a second try sends.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter, defaultdict

import pytest

from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_hilos.exceptions import (
    HilosAPIError,
    HilosAPIUnavailableError,
    HilosBatchError,
    HilosConfigurationError,
    HilosPermanentAPIError,
    HilosPermanentBatchError,
    HilosValidationError,
)
from airflow_provider_hilos.hooks.hilos import HilosHook
from airflow_provider_hilos.operators.conversation import (
    BATCH_RESULT_XCOM_KEY,
    ConversationBatchUpdateOperator,
    ConversationUpdateOperator,
)
from airflow_provider_hilos.sandbox import HilosSandbox
from airflow_provider_hilos.transport import HilosTransport
from tests.conftest import ROOT, TEST_TOKEN, FakeTI, run_dag, xcom_value

MISSING = "00000000-0000-4000-8000-{:012d}"


@pytest.fixture
def sb(monkeypatch):
    with HilosSandbox(conversations=400, seed=3, token=TEST_TOKEN, request_log_limit=100_000) as sandbox:
        monkeypatch.setenv("AIRFLOW_CONN_HILOS_DEFAULT", sandbox.connection_json())
        yield sandbox


def rows_for(ids: list[str], status: str = "RESOLVED") -> list[dict]:
    return [{"conversation_id": cid, "status": status, "tags": [{"name": f"w-{i % 5}"}]} for i, cid in enumerate(ids)]


def patches(sandbox) -> list[dict]:
    return [r for r in sandbox.requests() if r["method"] == "PATCH"]


def landed(sandbox, rows: list[dict]) -> bool:
    return all(
        sandbox.mismatches(r["conversation_id"], {k: v for k, v in r.items() if k != "conversation_id"}) == []
        for r in rows
    )


# -- throttling ----------------------------------------------------------------------------------------


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


# -- outages ---------------------------------------------------------------------------------------------


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


# -- errors no retry can fix -------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "fault"), [(401, None), (404, None), (400, None)])
def test_refusals_fail_the_single_task_without_airflow_retries(sb, monkeypatch, status, fault):
    cid = sb.conversation_ids()[0]
    kwargs = {"status": "CLOSED"}
    if status == 401:
        monkeypatch.setenv(
            "AIRFLOW_CONN_HILOS_DEFAULT",
            json.dumps({"conn_type": "hilos", "host": sb.url, "password": TEST_TOKEN + "-revoked"}),
        )
    elif status == 404:
        cid = MISSING.format(1)
    else:
        kwargs = {"assigned_team": 99}  # valid here, refused by the API: no such team
    with pytest.raises(HilosPermanentAPIError) as err:
        ConversationUpdateOperator(task_id="t", conversation_id=cid, **kwargs).execute({"ti": FakeTI()})
    assert isinstance(err.value, AirflowFailException) and err.value.status_code == status
    assert len(patches(sb)) == 1


def test_exhausted_server_errors_stay_retryable_for_airflow(sb, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_HILOS_DEFAULT", sb.connection_json(max_attempts=2))
    sb.set_faults(error_rate=1, error_statuses=[503], retry_after_seconds=0)
    with pytest.raises(HilosAPIError) as err:
        ConversationUpdateOperator(task_id="t", conversation_id=sb.conversation_ids()[0], status="NEW").execute(
            {"ti": FakeTI()}
        )
    assert not isinstance(err.value, AirflowFailException) and err.value.retryable


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


@pytest.mark.usefixtures("airflow_db")
def test_in_a_dag_run_airflow_retries_only_what_can_succeed(sb, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_HILOS_REVOKED",
        json.dumps({"conn_type": "hilos", "host": sb.url, "password": TEST_TOKEN + "-revoked"}),
    )
    with HilosSandbox(
        conversations=2, token=TEST_TOKEN, faults={"error_rate": 1, "error_statuses": [503], "retry_after_seconds": 0}
    ) as down:
        monkeypatch.setenv("AIRFLOW_CONN_HILOS_DOWN", down.connection_json(max_attempts=2))
        dag_run = run_dag("hilos_test_retries", {"conversation_id": sb.conversation_ids()[0]})
        down_requests = len(patches(down))
    tries = {ti.task_id: (ti.state, ti.try_number) for ti in dag_run.get_task_instances()}
    assert tries["revoked_token"] == ("failed", 1)  # retries=2, yet one try: a refused token stays refused
    assert tries["api_down"] == ("failed", 3)  # retried twice by Airflow: the API may be back
    assert len(patches(sb)) == 1 and down_requests == 3 * 2


# -- resume ----------------------------------------------------------------------------------------------


def test_a_retried_batch_skips_the_rows_an_earlier_try_applied(sb, tmp_path):
    rows = rows_for(sb.conversation_ids()[:300])
    ti = FakeTI()
    op = ConversationBatchUpdateOperator(task_id="b", updates=rows, max_concurrency=8, checkpoint_path=str(tmp_path))

    def outage_after(count: int) -> None:
        while len(patches(sb)) < count:
            time.sleep(0.005)
        sb.set_faults(error_rate=1, error_statuses=[503], retry_after_seconds=0)

    trigger = threading.Thread(target=outage_after, args=(120,), daemon=True)
    trigger.start()
    with pytest.raises(HilosAPIUnavailableError):
        op.execute({"ti": ti})
    trigger.join()
    first = ti.pushed[BATCH_RESULT_XCOM_KEY]
    assert 100 <= first["updated"] < 300
    applied_first = {r["path"].split("/")[-2] for r in patches(sb) if r["status"] == 200}
    sb.set_faults()  # the API is back
    sb.clear_requests()
    second = op.execute({"ti": ti})  # Airflow's retry: the same task instance
    assert second["already_applied"] == first["updated"] and second["updated"] == 300 - first["updated"]
    assert not applied_first & {r["path"].split("/")[-2] for r in patches(sb)}  # nothing applied was re-sent
    assert landed(sb, rows)
    assert not list(tmp_path.rglob("*.txt"))  # the checkpoint is gone once the batch succeeded
    third = op.execute({"ti": ti})  # a re-run of a succeeded task sends everything again
    assert third["updated"] == 300 and third["already_applied"] == 0


def test_a_changed_row_is_sent_again_even_if_its_number_was_applied(sb, tmp_path):
    ids = sb.conversation_ids()[:10]
    ti = FakeTI()
    rows = [*rows_for(ids), {"conversation_id": MISSING.format(0), "status": "NEW"}]
    with pytest.raises(HilosPermanentBatchError):
        ConversationBatchUpdateOperator(task_id="b", updates=rows, checkpoint_path=str(tmp_path)).execute({"ti": ti})
    changed = rows_for(ids, status="CLOSED")[:5] + rows_for(ids)[5:]
    result = ConversationBatchUpdateOperator(task_id="b", updates=changed, checkpoint_path=str(tmp_path)).execute(
        {"ti": ti}
    )
    assert (result["already_applied"], result["updated"]) == (5, 5)
    assert all(sb.conversation(cid)["status"] == "CLOSED" for cid in ids[:5])


def test_checkpoints_are_kept_apart_by_dag_run_task_and_map_index(sb, tmp_path):
    rows = [*rows_for(sb.conversation_ids()[:5]), {"conversation_id": MISSING.format(0), "status": "NEW"}]
    for ti in (FakeTI(run_id="run_a"), FakeTI(run_id="run_a", map_index=3)):
        with pytest.raises(HilosPermanentBatchError):
            ConversationBatchUpdateOperator(task_id="b", updates=rows, checkpoint_path=str(tmp_path)).execute(
                {"ti": ti}
            )
    folders = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.glob("*/*/*"))
    assert folders == ["hilos_tests/run_a/batch", "hilos_tests/run_a/batch.3"]
    other = ConversationBatchUpdateOperator(task_id="b", updates=rows[:5], checkpoint_path=str(tmp_path)).execute(
        {"ti": FakeTI(run_id="run_b")}
    )
    assert other["already_applied"] == 0


KILLED_BATCH = textwrap.dedent("""
    import sys
    from airflow_provider_hilos.operators.conversation import ConversationBatchUpdateOperator

    class TI:  # the same task instance both times: Airflow's retry of it
        dag_id, run_id, task_id, map_index = "hilos_tests", "crash_run", "batch", -1

        def xcom_push(self, key, value):
            pass

    op = ConversationBatchUpdateOperator(task_id="b", updates_path=sys.argv[1], checkpoint_path=sys.argv[2],
                                         max_concurrency=int(sys.argv[3]), progress_interval=3600)
    result = op.execute({"ti": TI()})
    print("RESULT", result["updated"], result["already_applied"])
""")


def test_kill_9_half_way_then_the_next_try_resends_at_most_the_rows_in_flight(tmp_path, monkeypatch):
    concurrency = 8
    with HilosSandbox(
        conversations=1200, seed=9, token=TEST_TOKEN, request_log_limit=100_000, faults={"latency_ms": 5}
    ) as sandbox:
        rows = rows_for(sandbox.conversation_ids()[:1200])
        updates = tmp_path / "updates.jsonl"
        updates.write_text("".join(json.dumps(r) + "\n" for r in rows))
        env = {**os.environ, "AIRFLOW_CONN_HILOS_DEFAULT": sandbox.connection_json(), "PYTHONPATH": str(ROOT)}
        args = [sys.executable, "-c", KILLED_BATCH, str(updates), str(tmp_path / "checkpoints"), str(concurrency)]
        first = subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while len([r for r in patches(sandbox) if r["status"] == 200]) < 600 and time.monotonic() < deadline:
            assert first.poll() is None, first.stderr.read().decode()[-3000:]
            time.sleep(0.01)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
        applied_before = Counter(r["path"].split("/")[-2] for r in patches(sandbox) if r["status"] == 200)
        assert 600 <= len(applied_before) < 1200, "the batch should have been killed half-way"
        second = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stderr[-3000:]
        applied_all = Counter(r["path"].split("/")[-2] for r in patches(sandbox) if r["status"] == 200)
        assert landed(sandbox, rows)  # lost: none
        resent = [cid for cid in applied_before if applied_all[cid] > 1]
        assert len(resent) <= concurrency  # re-sent: at most the requests in flight at the kill
        updated, already = map(int, second.stdout.split("RESULT")[1].split())
        assert updated + already == 1200 and already >= len(applied_before) - concurrency
    assert TEST_TOKEN not in second.stdout + second.stderr


# -- invalid rows and input files ----------------------------------------------------------------------------


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
    assert text.count("skipped, it is invalid: status: 'DONE' is not a valid status") == 10
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


# -- the README's failure-alert pattern ------------------------------------------------------------------------


@pytest.mark.usefixtures("airflow_db")
def test_the_readme_alert_pattern_keeps_a_failed_batch_red(sb):
    rows = [*rows_for(sb.conversation_ids()[:5]), {"conversation_id": MISSING.format(0), "status": "NEW"}]
    dag_run = run_dag("hilos_test_alert_pattern", {"rows": rows})
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert states == {"apply": "failed", "summary": "success", "fail_run_if_batch_failed": "failed"}
    assert dag_run.state == "failed"  # the summary ran, and the run still says the sync failed
    summary = xcom_value(dag_run, "summary")
    assert (summary["updated"], summary["failed"]) == (5, 1)


def test_a_bad_connection_fails_the_batch_once_before_any_worker_starts(sb, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_HILOS_DEFAULT", json.dumps({"conn_type": "hilos", "host": sb.url}))
    with pytest.raises(HilosConfigurationError, match="has no API token"):
        HilosHook().update_conversations(rows_for(sb.conversation_ids()[:50]))
    assert patches(sb) == []
