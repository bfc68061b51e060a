"""The guardrails of a sync as its DAG author and its reviewer see them: a plan over its limits is refused, or
waits for approval in the Airflow UI (Human-in-the-loop); an approved plan applies exactly the approved writes; a
rejected or unanswered one sends nothing and keeps the last run's state; on an Airflow without Human-in-the-loop,
``approve_plan=<digest>`` applies that plan and only that one."""

from __future__ import annotations

import json
import sqlite3
import uuid
from datetime import UTC, datetime

import pytest

from airflow_provider_hilos.exceptions import HilosSyncNotApprovedError, HilosValidationError
from airflow_provider_hilos.operators.sync import SYNC_RESULT_XCOM_KEY, ConversationSyncOperator
from airflow_provider_hilos.sync.approval import APPROVE, REJECT, can_ask
from airflow_provider_hilos.sync.warehouse_log import LOG_TABLE_DDL
from tests.conftest import TEST_TOKEN, FakeTI
from tests.helpers import patches

needs_hitl = pytest.mark.skipif(not can_ask(), reason="Airflow's Human-in-the-loop needs Airflow 3.1+")
without_hitl = pytest.mark.skipif(can_ask(), reason="this Airflow has Human-in-the-loop")


class ApprovalTI(FakeTI):
    """A task instance with the id Human-in-the-loop keys its request by."""

    def __init__(self) -> None:
        super().__init__(task_id="sync", dag_id="crm")
        self.id = uuid.uuid4()


@pytest.fixture
def warehouse(tmp_path, monkeypatch, sb):
    path = tmp_path / "warehouse.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE crm (id TEXT, status TEXT)")
        db.executemany("INSERT INTO crm VALUES (?, ?)", [(cid, "CLOSED") for cid in sb.conversation_ids()[:40]])
        db.execute(LOG_TABLE_DDL.format(table="hilos_sync_log"))
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    for cid in sb.conversation_ids()[:40]:  # Hilos holds the warehouse's state: day 2 starts from here
        sb.state.partial_update(cid, {"status": "CLOSED"})
    return path


@pytest.fixture
def requests(monkeypatch):
    """The Human-in-the-loop requests the task wrote (Airflow's ``upsert_hitl_detail``, as a worker sends it)."""
    written: list[dict] = []
    if can_ask():
        monkeypatch.setattr("airflow.sdk.execution_time.hitl.upsert_hitl_detail", lambda **kw: written.append(kw))
    return written


def sync_task(tmp_path, **kwargs) -> ConversationSyncOperator:
    defaults = {
        "task_id": "sync",
        "sql": "SELECT id, status FROM crm",
        "sql_conn_id": "warehouse",
        "column_map": {"id": "conversation_id"},
        "log_table": "hilos_sync_log",
        "report_path": str(tmp_path / "out" / "report.jsonl"),
        "state_store": str(tmp_path / "state"),
        "page_size": 100,
        "max_changes": 10,
    }
    return ConversationSyncOperator(**{**defaults, **kwargs})


def reopen(warehouse, count: int) -> list[str]:
    """The warehouse reopens its first ``count`` conversations (a wrong join would reopen them all)."""
    with sqlite3.connect(warehouse) as db:
        ids = [row[0] for row in db.execute("SELECT id FROM crm ORDER BY rowid LIMIT ?", (count,))]
        db.executemany("UPDATE crm SET status = 'NEW' WHERE id = ?", [(cid,) for cid in ids])
    return ids


def state_bytes(tmp_path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (tmp_path / "state").rglob("state*.json*") if p.is_file()}


def log_rows(warehouse) -> list[tuple]:
    with sqlite3.connect(warehouse) as db:
        return db.execute("SELECT object_key, action, outcome, approved_by FROM hilos_sync_log ORDER BY 1").fetchall()


def approve(by: str = "ana") -> dict:
    return {
        "chosen_options": [APPROVE],
        "params_input": {},
        "responded_at": datetime(2026, 12, 3, 15, 0, tzinfo=UTC),
        "responded_by_user": {"id": "1", "name": by},
    }


def wait_for_approval(task, ti):
    """Run the task until it waits; what it wrote, and the kwargs it resumes with."""
    from airflow.sdk.exceptions import TaskAwaitingInput

    with pytest.raises(TaskAwaitingInput) as waits:
        task.execute({"ti": ti, "task_instance": ti})
    return waits.value


def test_a_plan_within_its_limits_is_applied_at_once_and_says_so(warehouse, sb, tmp_path, output, requests):
    reopen(warehouse, 10)  # exactly max_changes: within it
    ti = FakeTI(task_id="sync")
    result = sync_task(tmp_path).execute({"ti": ti})
    assert result["updated"] == 10 and result["approval"]["decision"] == "apply" and requests == []
    assert result["approval"]["changes"] == 10 and result["approval"]["over_limits"] == []
    assert "Hilos sync plan: applied without approval (within its limits (max_changes=10))" in output()


def test_approval_never_refuses_a_plan_over_its_limits_before_any_write(warehouse, sb, tmp_path, output):
    sync_task(tmp_path).execute({"ti": FakeTI(task_id="sync")})  # a good run leaves its state
    before = state_bytes(tmp_path)
    assert before
    reopen(warehouse, 25)
    sb.clear_requests()
    ti = FakeTI(task_id="sync")
    with pytest.raises(HilosSyncNotApprovedError) as refused:
        sync_task(tmp_path, approval="never").execute({"ti": ti})
    message = str(refused.value)
    result = ti.pushed[SYNC_RESULT_XCOM_KEY]
    digest = result["approval"]["digest"]
    assert "25 changes > max_changes=10" in message and f'{{"approve_plan": "{digest}"}}' in message
    assert result["refused"] == message and result["to_update"] == 25 and result["approval"]["decision"] == "refuse"
    assert patches(sb) == [] and state_bytes(tmp_path) == before  # nothing sent, the last good state kept
    logged = log_rows(warehouse)
    assert len(logged) == 25 and {(a, o) for _, a, o, _ in logged} == {("update", "not_approved")}
    assert "Hilos sync plan: REFUSED (over its limits (25 changes > max_changes=10) and approval='never')" in output()


@without_hitl
def test_without_human_in_the_loop_a_plan_over_its_limits_fails_with_its_digest(warehouse, sb, tmp_path):
    reopen(warehouse, 25)
    ti = FakeTI(task_id="sync")
    with pytest.raises(HilosSyncNotApprovedError) as refused:
        sync_task(tmp_path).execute({"ti": ti})  # approval="over_limits", the default
    assert "no Human-in-the-loop" in str(refused.value) and patches(sb) == []
    assert ti.pushed[SYNC_RESULT_XCOM_KEY]["approval"]["digest"] in str(refused.value)


def test_approve_plan_applies_the_plan_with_that_digest_and_only_that_one(warehouse, sb, tmp_path):
    reopen(warehouse, 25)
    ti = FakeTI(task_id="sync")
    with pytest.raises(HilosSyncNotApprovedError):
        sync_task(tmp_path, approval="never").execute({"ti": ti})
    digest = ti.pushed[SYNC_RESULT_XCOM_KEY]["approval"]["digest"]
    # the plan changes before the approved run: one more conversation reopened, so another digest
    reopen(warehouse, 26)
    sb.clear_requests()
    other = FakeTI(task_id="sync")
    with pytest.raises(HilosSyncNotApprovedError) as changed:
        sync_task(tmp_path, approval="never").execute({"ti": other, "params": {"approve_plan": digest}})
    assert f"approve_plan={digest} is not this plan's digest" in str(changed.value) and patches(sb) == []
    # the warehouse back as it was reviewed: the same plan, the same digest, applied (the conf of a triggered run)
    with sqlite3.connect(warehouse) as db:
        db.execute("UPDATE crm SET status = 'CLOSED' WHERE rowid = 26")
    run = type("DagRun", (), {"conf": {"approve_plan": digest.upper()}})()
    applied = sync_task(tmp_path, approval="never").execute({"ti": FakeTI(task_id="sync"), "dag_run": run})
    assert applied["updated"] == 25 and len(patches(sb)) == 25
    assert applied["approval"]["decision"] == "apply_approved" and applied["approval"]["approved_by"] == (
        f"approve_plan={digest}"
    )
    assert {row[3] for row in log_rows(warehouse) if row[2] == "updated"} == {f"approve_plan={digest}"}


def test_a_wrong_digest_or_guard_argument_is_refused_before_anything_is_read(warehouse, sb, tmp_path):
    with pytest.raises(HilosValidationError, match="approve_plan: 'nope' is not a plan digest"):
        sync_task(tmp_path).execute({"ti": FakeTI(task_id="sync"), "params": {"approve_plan": "nope"}})
    assert sb.requests() == []
    for kwargs, message in (
        ({"max_changes": -1}, "max_changes: -1 must be a whole number"),
        ({"max_change_ratio": "2"}, "max_change_ratio: '2' must be a share from 0 to 1"),
        ({"approval": "sometimes"}, "approval: 'sometimes' is not one of over_limits, always, never"),
        ({"approve_plan": "abc"}, "approve_plan: 'abc' is not a plan digest"),
    ):
        with pytest.raises(HilosValidationError, match=message):
            sync_task(tmp_path, **kwargs)
    with pytest.raises(ValueError, match="approval_timeout=0 must be a timedelta or a number of seconds"):
        sync_task(tmp_path, approval_timeout=0)
    templated = sync_task(tmp_path, max_changes="{{ params.limit }}")  # checked when rendered, not parsed
    assert templated.max_changes == "{{ params.limit }}"


def test_a_dry_run_says_what_a_real_run_would_do_with_its_plan(warehouse, sb, tmp_path, output, requests):
    reopen(warehouse, 25)
    ti = FakeTI(task_id="sync")
    result = sync_task(tmp_path, dry_run=True).execute({"ti": ti})
    said = output()
    expected = "WAIT FOR APPROVAL" if can_ask() else "be REFUSED"
    assert f"Hilos sync DRY RUN plan: a real run would {expected} (25 changes > max_changes=10" in said
    assert result["approval"]["decision"] == ("wait" if can_ask() else "refuse") and requests == []
    assert patches(sb) == []


@needs_hitl
def test_a_plan_over_its_limits_waits_for_approval_and_the_approved_plan_is_applied(
    warehouse, sb, tmp_path, output, requests
):
    sync_task(tmp_path).execute({"ti": FakeTI(task_id="sync")})
    before = state_bytes(tmp_path)
    reopened = reopen(warehouse, 25)
    sb.clear_requests()
    ti = ApprovalTI()
    task = sync_task(tmp_path)
    waiting = wait_for_approval(task, ti)
    assert waiting.method_name == "execute_approval" and set(waiting.kwargs) == {"digest"}
    digest = waiting.kwargs["digest"]
    (request,) = requests
    assert request["subject"] == "Approve Hilos sync crm.sync: 25 conversation change(s)"
    assert "| to update | 25 |" in request["body"] and "| status | 25 | CLOSED→NEW 25 |" in request["body"]
    assert f"Plan digest: `{digest}`" in request["body"] and request["options"] == [APPROVE, REJECT]
    assert f"([open it](/hilos/plan?dag_id=crm&task_id=sync&run_id={ti.run_id}&map_index=-1))" in request["body"]
    pushed = ti.pushed[SYNC_RESULT_XCOM_KEY]
    assert pushed["awaiting_approval"] is True and pushed["approval"]["decision"] == "wait"
    assert patches(sb) == [] and state_bytes(tmp_path) == before and log_rows(warehouse) == []
    assert "the plan waits for approval in the Airflow UI" in output()
    # while it waits, an agent edits one of the planned conversations by hand: it is not blindly written
    sb.state.partial_update(reopened[0], {"status": "NEW"})  # already as desired: nothing to send for it
    sb.state.partial_update(reopened[1], {"status": "RESOLVED"})  # the write would be the same: it is sent
    result = task.execute_approval({"ti": ti, "task_instance": ti}, event=approve("ana"), digest=digest)
    assert result["updated"] == 24 and result["not_approved"] == 0 and result["approval"]["approved_by"] == "ana"
    assert {p["path"].split("/")[-2] for p in patches(sb)} == set(reopened[1:])
    assert all(sb.conversation(cid)["status"] == "NEW" for cid in reopened)
    assert {row[3] for row in log_rows(warehouse) if row[2] == "updated"} == {"ana"}
    said = output()
    assert "was approved by ana at 2026-12-03T15:00:00+00:00" in said and "approved (approved by ana" in said
    assert not list((tmp_path / "state").rglob("*.tsv"))  # an approval is used once
    assert TEST_TOKEN not in json.dumps(requests, default=str) + json.dumps(result) + said


@needs_hitl
def test_a_write_that_changed_since_the_approval_is_held_back_and_planned_again(warehouse, sb, tmp_path, requests):
    reopened = reopen(warehouse, 25)
    ti = ApprovalTI()
    task = sync_task(tmp_path)
    digest = wait_for_approval(task, ti).kwargs["digest"]
    extra = reopen(warehouse, 26)[-1]  # the warehouse adds one more change, and changes one approved row
    with sqlite3.connect(warehouse) as db:
        db.execute("UPDATE crm SET status = 'RESOLVED' WHERE id = ?", (reopened[0],))
    sb.clear_requests()
    result = task.execute_approval({"ti": ti, "task_instance": ti}, event=approve(), digest=digest)
    assert result["updated"] == 24 and result["not_approved"] == 2 and result["approval"]["held_back"] == 2
    sent = {p["path"].split("/")[-2] for p in patches(sb)}
    assert sent == set(reopened[1:]) and extra not in sent
    held = {row[0]: row[2] for row in log_rows(warehouse) if row[2] == "not_approved"}
    assert held == {reopened[0]: "not_approved", extra: "not_approved"}
    # the next run plans both again (and judges them: 2 changes, within the limits)
    sb.clear_requests()
    again = sync_task(tmp_path).execute({"ti": FakeTI(task_id="sync")})
    assert again["updated"] == 2 and again["approval"]["decision"] == "apply"
    assert sb.conversation(reopened[0])["status"] == "RESOLVED" and sb.conversation(extra)["status"] == "NEW"


@needs_hitl
@pytest.mark.parametrize(
    ("event", "why", "decision"),
    [
        ({"chosen_options": [REJECT], "responded_by_user": {"id": "2", "name": "bo"}}, "rejected by bo", "rejected"),
        ({"error": "no answer", "error_type": "timeout"}, "nobody answered within approval_timeout", "timed_out"),
    ],
)
def test_a_rejected_or_unanswered_plan_sends_nothing_and_keeps_the_last_state(
    warehouse, sb, tmp_path, output, requests, event, why, decision
):
    sync_task(tmp_path).execute({"ti": FakeTI(task_id="sync")})
    before = state_bytes(tmp_path)
    reopen(warehouse, 25)
    ti = ApprovalTI()
    task = sync_task(tmp_path)
    digest = wait_for_approval(task, ti).kwargs["digest"]
    sb.clear_requests()
    with pytest.raises(HilosSyncNotApprovedError, match=why) as failed:
        task.execute_approval({"ti": ti, "task_instance": ti}, event=event, digest=digest)
    assert "Nothing was sent" in str(failed.value) and sb.requests() == []
    assert state_bytes(tmp_path) == before and not list((tmp_path / "state").rglob("*.tsv"))
    result = ti.pushed[SYNC_RESULT_XCOM_KEY]
    assert result["approval"]["decision"] == decision and result["refused"] == str(failed.value)
    assert why in output()
