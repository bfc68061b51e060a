"""ConversationSyncOperator as a DAG author uses it: a SQL warehouse on an Airflow connection, a column map, the
sync log in the warehouse, the dry run, and errors at parse time that name the fix."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading

import pytest

from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_hilos.exceptions import (
    HilosBatchError,
    HilosConfigurationError,
    HilosSyncBusyError,
    HilosSyncLogError,
    HilosValidationError,
)
from airflow_provider_hilos.operators.sync import SYNC_RESULT_XCOM_KEY, ConversationSyncOperator
from airflow_provider_hilos.sandbox import HilosSandbox
from airflow_provider_hilos.sync.warehouse_log import LOG_TABLE_DDL
from tests.conftest import TEST_TOKEN, FakeTI
from tests.helpers import patches


@pytest.fixture
def warehouse(tmp_path, monkeypatch, sb):
    path = tmp_path / "warehouse.db"
    ids = sb.conversation_ids()[:50]
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE crm (id TEXT, status TEXT, tag_list TEXT, team_id INTEGER)")
        db.executemany("INSERT INTO crm VALUES (?, ?, ?, ?)", [(cid, "CLOSED", "vip|renewal", None) for cid in ids])
        db.execute(LOG_TABLE_DDL.format(table="hilos_sync_log"))
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    return path


def sync_task(tmp_path, **kwargs) -> ConversationSyncOperator:
    defaults = {
        "task_id": "sync",
        "sql": "SELECT id, status, tag_list, team_id FROM crm",
        "sql_conn_id": "warehouse",
        "column_map": {"id": "conversation_id", "tag_list": "tags", "team_id": "assigned_team"},
        "log_table": "hilos_sync_log",
        "report_path": str(tmp_path / "out" / "report.jsonl"),
        "page_size": 100,
    }
    return ConversationSyncOperator(**{**defaults, **kwargs})


def test_a_sql_warehouse_is_synced_and_every_change_is_logged_in_it(warehouse, sb, tmp_path, output):
    ti = FakeTI(task_id="sync")
    result = sync_task(tmp_path).execute({"ti": ti})
    assert result["desired"] == 50 and result["updated"] == result["to_update"] > 0 and result["failed"] == 0
    assert ti.pushed[SYNC_RESULT_XCOM_KEY] == result
    for cid in sb.conversation_ids()[:50]:
        held = sb.conversation(cid)
        assert held["status"] == "CLOSED" and sorted(t["name"] for t in held["tags"]) == ["renewal", "vip"]
    with sqlite3.connect(warehouse) as db:
        logged = db.execute("SELECT run_id, action, outcome, changes FROM hilos_sync_log").fetchall()
    assert len(logged) == result["updated"] and {row[:3] for row in logged} == {(ti.run_id, "update", "updated")}
    assert (tmp_path / "out" / "report.jsonl.plan.jsonl").exists() and (tmp_path / "out" / "report.jsonl").exists()
    # the next run finds nothing to do: 1 page read, no write, no log row
    sb.clear_requests()
    again = sync_task(tmp_path).execute({"ti": FakeTI(task_id="sync")})
    assert (again["to_update"], again["unchanged"], again["read_requests"], again["write_requests"]) == (0, 50, 4, 0)
    assert patches(sb) == []
    text = output() + json.dumps(result) + json.dumps(again)
    assert TEST_TOKEN not in text and "Hilos sync plan (conversations, compare_with=hilos)" in text


def test_the_dry_run_returns_the_plan_and_sends_nothing(warehouse, sb, tmp_path):
    result = sync_task(tmp_path, dry_run="True", log_table=None).execute({"ti": FakeTI(task_id="sync")})
    assert result["dry_run"] is True and result["to_update"] > 0 and "updated" not in result
    assert patches(sb) == []
    assert result["summary"]["fields"]["status"] <= 50 and result["summary"]["first_updates"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"state": [], "sql": "SELECT 1"}, "exactly one of sql"),
        ({"sql_conn_id": None, "log_table": None}, "sql needs sql_conn_id"),
        ({"compare_with": "warehouse"}, "compare_with: 'warehouse' is not one of hilos, last_sync, nothing"),
        ({"tags_mode": "add", "compare_with": "last_sync"}, "tags_mode='add' needs what Hilos holds now"),
        ({"column_map": {"team_id": "team"}}, "column_map maps 'team_id' to 'team'"),
        ({"page_size": 0}, "page_size=0"),
    ],
)
def test_wrong_arguments_fail_when_the_dag_is_parsed(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        sync_task(tmp_path, **kwargs)


def test_sql_files_and_the_query_are_templated():
    assert ".sql" in ConversationSyncOperator.template_ext
    assert {"sql", "state", "compare_with", "max_requests_per_second"} <= set(ConversationSyncOperator.template_fields)


def test_the_token_is_in_no_file_table_result_or_log_the_sync_writes(warehouse, sb, tmp_path, output, monkeypatch):
    with sqlite3.connect(warehouse) as db:  # one row the API refuses: its error goes to the report and the log table
        db.execute("UPDATE crm SET team_id = 999 WHERE rowid = 1")
    ti = FakeTI(task_id="sync")
    task = sync_task(tmp_path, max_failed_ratio=1.0, state_store=str(tmp_path / "state"))
    result = task.execute({"ti": ti})
    assert result["failed"] == 1
    written = [p.read_text() for p in tmp_path.rglob("*") if p.is_file() and p.suffix in (".jsonl", ".json")]
    assert len(written) >= 3  # the report, the plan, the state
    with sqlite3.connect(warehouse) as db:
        logged = db.execute("SELECT outcome, error, object, object_key FROM hilos_sync_log").fetchall()
    assert any(row[0] == "failed" and row[1] and row[2] == "conversation" for row in logged)
    everything = "".join(written) + json.dumps(logged) + json.dumps(ti.pushed) + output()
    assert "Invalid pk" in everything or "999" in everything  # the failure really was recorded
    assert TEST_TOKEN not in everything
    # a rejected token: the error names the connection, never the token
    monkeypatch.setenv("AIRFLOW_CONN_HILOS_DEFAULT", sb.connection_json().replace(TEST_TOKEN, TEST_TOKEN + "x"))
    with pytest.raises(Exception) as caught:
        sync_task(tmp_path).execute({"ti": FakeTI(task_id="sync")})
    assert "token" in str(caught.value) and TEST_TOKEN not in str(caught.value) + output()


def test_a_successful_sync_announces_its_counts_on_its_assets(warehouse, sb, tmp_path):
    from airflow.providers.common.compat.assets import Asset

    synced = Asset("hilos_conversations_synced")

    class Event:
        def __init__(self) -> None:
            self.extra: dict = {}

    events: dict = {synced: Event()}
    result = sync_task(tmp_path, outlets=[synced]).execute({"ti": FakeTI(task_id="sync"), "outlet_events": events})
    extra = events[synced].extra
    assert extra == {name: result[name] for name in ConversationSyncOperator.ASSET_EXTRA_FIELDS}
    assert extra["updated"] == result["updated"] > 0


# -- issue 27: what a person sees -----------------------------------------------------------------------------


def lines_of(text: str) -> list[str]:
    return [line for line in text.splitlines() if "Hilos sync" in line]


def test_a_dry_run_says_so_first_and_last_and_pushes_its_result_naming_only_what_it_did(
    warehouse, sb, tmp_path, output
):
    for cid in sb.conversation_ids()[:3]:  # day 1, then three hand edits: a dry run finds them
        sb.state.partial_update(cid, {"status": "CLOSED", "tags": [{"name": "vip"}, {"name": "renewal"}]})
    store = str(tmp_path / "state")
    sync_task(tmp_path, log_table=None, state_store=store).execute({"ti": FakeTI(task_id="sync")})
    for cid in sb.conversation_ids()[:3]:
        sb.state.partial_update(cid, {"status": "NEW"})
    output()
    sb.clear_requests()
    ti = FakeTI(task_id="sync")
    dry = sync_task(tmp_path, dry_run=True, report_path=str(tmp_path / "dry" / "report.jsonl"), state_store=store)
    result = dry.execute({"ti": ti})
    said = lines_of(output())
    assert "DRY RUN" in said[0] and "nothing will be sent" in said[0]
    assert "DRY RUN done, nothing was sent: 3 would be updated (3 putting back hand edits)" in said[-1]
    assert ti.pushed[SYNC_RESULT_XCOM_KEY] == result and result["dry_run"] is True
    assert result["drift_found"] == result["summary"]["drift_found"] == 3
    assert not {"updated", "failed", "drift_corrected"} & set(result)  # what only a real run does
    assert result["report_path"] is None and result["state_path"] is None  # neither was written
    assert result["plan_path"] == str(tmp_path / "dry" / "report.jsonl.plan.jsonl")
    assert not (tmp_path / "dry" / "report.jsonl").exists() and patches(sb) == []
    with sqlite3.connect(warehouse) as db:
        assert db.execute("SELECT count(*) FROM hilos_sync_log").fetchone() == (0,)  # a dry run logs nothing


def test_a_refused_run_pushes_its_result_and_logs_its_invalid_rows_before_it_fails(warehouse, sb, tmp_path):
    with sqlite3.connect(warehouse) as db:
        db.execute("UPDATE crm SET status = 'DONE' WHERE rowid IN (1, 2)")
        bad = [row[0] for row in db.execute("SELECT id FROM crm WHERE rowid IN (1, 2)")]
    ti = FakeTI(task_id="sync")
    with pytest.raises(HilosValidationError, match="Hilos sync refused: 2 of 50 desired row"):
        sync_task(tmp_path).execute({"ti": ti})
    result = ti.pushed[SYNC_RESULT_XCOM_KEY]
    assert result["invalid"] == 2 and result["refused"].startswith("Hilos sync refused")
    assert result["log_rows_written"] == 2 and [r for r in sb.requests() if r["method"] != "GET"] == []
    with sqlite3.connect(warehouse) as db:
        logged = db.execute("SELECT object_key, action, outcome, error FROM hilos_sync_log").fetchall()
    assert sorted(r[0] for r in logged) == sorted(bad) and {r[1:3] for r in logged} == {("invalid", "invalid")}
    assert all("'DONE' is not a valid status" in r[3] for r in logged)


def test_two_rows_for_one_conversation_are_both_invalid_named_by_the_conversation(warehouse, sb, tmp_path):
    with sqlite3.connect(warehouse) as db:
        first = db.execute("SELECT id FROM crm WHERE rowid = 5").fetchone()[0]
        db.execute("INSERT INTO crm VALUES (?, 'RESOLVED', 'vip', NULL)", (first,))
    with pytest.raises(HilosValidationError) as refused:
        sync_task(tmp_path, log_table=None).execute({"ti": FakeTI(task_id="sync")})
    message = str(refused.value)
    assert f"conversation {first}: conversation_id: {first} is in 2 rows of the desired state (rows 5, 51)" in message
    assert "keep one row per conversation" in message and "batch" not in message
    ti = FakeTI(task_id="sync")
    result = sync_task(tmp_path, log_table=None, skip_invalid_rows=True).execute({"ti": ti})
    assert result["invalid"] == 2 and result["desired"] == 51  # the key is skipped whole, never first-wins
    assert sb.conversation(first)["status"] not in ("CLOSED", "RESOLVED") or first not in {
        p["path"].split("/")[-2] for p in patches(sb)
    }
    assert {row["conversation_id"] for row in result["summary"]["invalid_rows"]} == {first}


def test_conversations_hilos_does_not_have_are_named_in_the_log_the_result_the_plan_and_the_sync_log(
    warehouse, sb, tmp_path, output
):
    missing = [f"00000000-0000-4000-8000-{i:012d}" for i in range(25)]
    with sqlite3.connect(warehouse) as db:
        db.executemany("INSERT INTO crm VALUES (?, 'CLOSED', NULL, NULL)", [(cid,) for cid in missing])
    result = sync_task(tmp_path).execute({"ti": FakeTI(task_id="sync")})
    assert result["not_found"] == 25 and result["not_found_conversations"] == missing[:20]
    assert result["object"] == "conversation"
    text = output()
    assert "25 desired conversation(s) not found in Hilos (not sent): " + ", ".join(missing[:20]) in text
    assert "and 5 more (all are in the plan and the sync log)" in text
    plan = [json.loads(line) for line in (tmp_path / "out" / "report.jsonl.plan.jsonl").read_text().splitlines()]
    assert sorted(p["conversation_id"] for p in plan if p["action"] == "not_found") == missing
    assert {p["action"] for p in plan} <= {"update", "not_found"}  # unchanged ones are not listed
    assert f"Hilos sync plan: written to {tmp_path / 'out' / 'report.jsonl.plan.jsonl'}" in text
    with sqlite3.connect(warehouse) as db:
        logged = db.execute("SELECT object_key FROM hilos_sync_log WHERE action = 'not_found'").fetchall()
    assert sorted(r[0] for r in logged) == missing


def test_every_request_sent_is_counted_with_retries_apart(warehouse, sb, tmp_path):
    sb.fail_next("503")  # the first list page is answered 503, then retried
    result = sync_task(tmp_path, log_table=None).execute({"ti": FakeTI(task_id="sync")})
    gets = [r for r in sb.requests() if r["method"] == "GET"]
    assert result["read_requests"] == len(gets) == 5  # 4 pages and the retried one
    assert result["write_requests"] == len(patches(sb)) == result["updated"]
    assert result["retried_requests"] == 1


def test_add_mode_says_what_it_left_alone_and_keeps_agents_tags_out_of_drift(warehouse, sb, tmp_path, output):
    task = sync_task(tmp_path, log_table=None, tags_mode="add", state_store=str(tmp_path / "state"))
    task.execute({"ti": FakeTI(task_id="sync")})  # day 1: vip and renewal on all 50
    ids = sb.conversation_ids()[:50]
    for cid in ids[:4]:  # agents add a tag of their own
        held = [t["name"] for t in sb.conversation(cid)["tags"]]
        sb.state.partial_update(cid, {"tags": [{"name": t} for t in [*held, "agent-note"]]})
    with sqlite3.connect(warehouse) as db:  # the warehouse drops renewal everywhere
        db.execute("UPDATE crm SET tag_list = 'vip'")
    output()
    result = sync_task(tmp_path, log_table=None, tags_mode="add", state_store=str(tmp_path / "state")).execute(
        {"ti": FakeTI(task_id="sync")}
    )
    assert result["to_update"] == 0 and result["drift_found"] == 0  # nothing to put back: nothing was lost
    left = result["summary"]["left_alone"]["tags"]
    extra = sum(len([t for t in sb.conversation(cid)["tags"] if t["name"] != "vip"]) for cid in ids)
    assert left["removals_ignored"] == 50 and left["conversations_keeping_items"] == 50 and left["kept"] == extra
    assert "tags_mode='add' left alone 50 tag removal(s) from the warehouse (in 50 conversation(s)" in output()


def test_a_failed_sync_speaks_of_the_sync_and_names_conversations(warehouse, sb, tmp_path):
    with sqlite3.connect(warehouse) as db:
        db.execute("UPDATE crm SET team_id = 999 WHERE rowid = 7")
        cid = db.execute("SELECT id FROM crm WHERE rowid = 7").fetchone()[0]
    with pytest.raises(HilosBatchError) as failed:
        sync_task(tmp_path, log_table=None).execute({"ti": FakeTI(task_id="sync")})
    message = str(failed.value)
    assert message.startswith("Hilos sync failed: 1 of ") and f"First failures: conversation {cid}: " in message
    assert "batch" not in message.split(".")[0] and "row 7" not in message
    report = [json.loads(line) for line in (tmp_path / "out" / "report.jsonl").read_text().splitlines()]
    assert [r["row"] for r in report if r["conversation_id"] == cid] == [7]  # the desired row's number, everywhere


def test_the_log_table_is_checked_before_the_first_request(warehouse, sb, tmp_path):
    with sqlite3.connect(warehouse) as db:
        db.execute("DROP TABLE hilos_sync_log")
        db.execute("CREATE TABLE hilos_sync_log (run_id TEXT)")
    with pytest.raises(HilosConfigurationError, match=r"lacks the column.s. logged_at, object, object_key"):
        sync_task(tmp_path).execute({"ti": FakeTI(task_id="sync")})
    assert sb.requests() == []
    injection = "hilos_sync_log (run_id) SELECT 'INJECTED', sql FROM sqlite_master --"
    with pytest.raises(ValueError, match="must be a table name"):
        sync_task(tmp_path, log_table=injection)  # when the DAG is parsed
    templated = sync_task(tmp_path, log_table="{{ params.table }}")
    templated.log_table = injection  # as rendered
    with pytest.raises(HilosValidationError, match="must be a table name"):
        templated.execute({"ti": FakeTI(task_id="sync")})
    assert sb.requests() == []
    with sqlite3.connect(warehouse) as db:
        assert db.execute("SELECT count(*) FROM hilos_sync_log").fetchone() == (0,)


def test_log_rows_the_warehouse_refused_after_the_apply_are_written_first_next_time(
    warehouse, sb, tmp_path, monkeypatch
):
    from airflow.providers.common.sql.hooks.sql import DbApiHook

    real = DbApiHook.insert_rows
    monkeypatch.setattr(DbApiHook, "insert_rows", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("locked")))
    ti = FakeTI(task_id="sync")
    store = str(tmp_path / "state")
    with pytest.raises(HilosSyncLogError, match="locked") as failed:
        sync_task(tmp_path, state_store=store).execute({"ti": ti})
    result = ti.pushed[SYNC_RESULT_XCOM_KEY]
    assert result["updated"] == 50 and result["log_rows_pending"] == 50 == failed.value.pending
    assert not isinstance(failed.value, AirflowFailException)  # retryable
    monkeypatch.setattr(DbApiHook, "insert_rows", real)
    again = sync_task(tmp_path, state_store=store).execute({"ti": FakeTI(task_id="sync")})  # the retry
    assert again["to_update"] == 0 and again["log_rows_pending"] == 0
    with sqlite3.connect(warehouse) as db:
        logged = db.execute("SELECT run_id, object_key, outcome FROM hilos_sync_log").fetchall()
    assert len(logged) == 50 and {r[0] for r in logged} == {ti.run_id} and {r[2] for r in logged} == {"updated"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"plan_path": "{out}/report.jsonl"}, "plan_path: is the same place as report_path"),
        ({"report_path": "{out}"}, r"report_path: '.*out' is a folder"),
        ({"state_store": "{out}/_hilos_checkpoints"}, "state_store: is the same place as checkpoint_path"),
    ],
)
def test_outputs_that_collide_or_are_folders_are_refused_before_anything_is_read(
    warehouse, sb, tmp_path, kwargs, message
):
    out = tmp_path / "out"
    out.mkdir()
    filled = {k: v.format(out=out) for k, v in kwargs.items()}
    if "state_store" in filled:
        filled["checkpoint_path"] = filled["state_store"]
    with pytest.raises(HilosValidationError, match=message):
        sync_task(tmp_path, **filled).execute({"ti": FakeTI(task_id="sync")})
    assert sb.requests() == []


def test_an_unwritable_state_store_is_found_before_the_first_request(warehouse, sb, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(HilosConfigurationError, match="can't be written"):
        sync_task(tmp_path, state_store=str(blocker / "state")).execute({"ti": FakeTI(task_id="sync")})
    assert sb.requests() == []


def test_a_query_the_warehouse_refuses_is_a_clear_error(warehouse, sb, tmp_path):
    with pytest.raises(HilosValidationError, match=r"sql: the warehouse refused the query \(.*\); give one SELECT"):
        sync_task(tmp_path, sql="SELECT id FROM crm; SELECT 1", log_table=None).execute({"ti": FakeTI(task_id="sync")})
    assert sb.requests() == []


def test_a_row_with_every_managed_cell_null_manages_nothing_and_a_whole_real_is_an_id(warehouse, sb, tmp_path):
    with sqlite3.connect(warehouse) as db:
        db.execute("UPDATE crm SET status = NULL, tag_list = NULL WHERE rowid = 1")  # manages nothing now
        db.execute("UPDATE crm SET team_id = 2.0 WHERE rowid = 2")  # SQLite REAL
        ids = [row[0] for row in db.execute("SELECT id FROM crm WHERE rowid IN (1, 2) ORDER BY rowid")]
    before = sb.conversation(ids[0])
    result = sync_task(tmp_path, log_table=None).execute({"ti": FakeTI(task_id="sync")})
    assert result["invalid"] == 0 and sb.conversation(ids[0]) == before
    assert sb.conversation(ids[1])["assigned_team"] == 2


# -- issue 27: one run at a time, as the operator does it ---------------------------------------------------


def test_a_run_that_waits_too_long_fails_naming_the_holder_and_sends_nothing(sb, tmp_path):
    from airflow_provider_hilos.storage import storage_path
    from airflow_provider_hilos.sync.lease import SyncLease
    from airflow_provider_hilos.sync.state import SyncStateStore, sync_owner

    store = SyncStateStore(storage_path(str(tmp_path / "state")), sync_owner("hilos_tests", "sync"))
    other = SyncLease(store.folder, run_id="scheduled__busy", try_number=3)
    assert other.try_acquire() is None
    task = ConversationSyncOperator(
        task_id="sync",
        state=[{"conversation_id": sb.conversation_ids()[0], "status": "CLOSED"}],
        state_store=str(tmp_path / "state"),
        wait_for_other_run=0.5,
    )
    task.LEASE_POLL_SECONDS = 0.1
    with pytest.raises(
        HilosSyncBusyError, match=r"holds its state \(run scheduled__busy \(try 3\) on .*waited"
    ) as busy:
        task.execute({"ti": FakeTI(task_id="sync")})
    assert "fails without sending anything" in str(busy.value) and sb.requests() == []
    other.release()


def test_a_deferrable_run_waits_for_the_other_run_in_the_triggerer(sb, tmp_path):
    from airflow.providers.common.compat.sdk import TaskDeferred

    from airflow_provider_hilos.storage import storage_path
    from airflow_provider_hilos.sync.lease import SyncLease
    from airflow_provider_hilos.sync.state import SyncStateStore, sync_owner

    store = SyncStateStore(storage_path(str(tmp_path / "state")), sync_owner("hilos_tests", "sync"))
    other = SyncLease(store.folder, run_id="scheduled__busy")
    assert other.try_acquire() is None
    rows = [{"conversation_id": cid, "status": "CLOSED"} for cid in sb.conversation_ids()[:5]]
    task = ConversationSyncOperator(
        task_id="sync", state=rows, state_store=str(tmp_path / "state"), deferrable=True, wait_for_other_run=600
    )
    ti = FakeTI(task_id="sync")
    with pytest.raises(TaskDeferred) as deferred:
        task.execute({"ti": ti})
    trigger = deferred.value.trigger
    _, kwargs = trigger.serialize()
    assert set(kwargs) == {"state_folder", "deadline", "poll_interval", "holder"}
    assert TEST_TOKEN not in json.dumps(kwargs) and rows[0]["conversation_id"] not in json.dumps(kwargs)
    assert sb.requests() == []  # nothing read while it waits
    trigger.poll_interval = 0.1
    threading.Timer(0.5, other.release).start()  # the other run ends

    async def first_event():
        async for event in trigger.run():
            return event.payload

    event = asyncio.run(first_event())
    assert event["status"] == "free"
    result = task.execute_after_lease({"ti": ti}, event, **deferred.value.kwargs)
    assert result["updated"] + result["unchanged"] == 5 and ti.pushed[SYNC_RESULT_XCOM_KEY] == result


def test_a_run_whose_lease_is_taken_over_stops_sending_and_leaves_the_state_alone(monkeypatch, tmp_path):
    with HilosSandbox(conversations=80, seed=2, token=TEST_TOKEN, faults={"latency_ms": 40}) as sandbox:
        monkeypatch.setenv("AIRFLOW_CONN_HILOS_DEFAULT", sandbox.connection_json())
        rows = [{"conversation_id": cid, "status": "FLOW_PAUSED"} for cid in sandbox.conversation_ids()]
        task = ConversationSyncOperator(
            task_id="sync", state=rows, state_store=str(tmp_path / "state"), max_concurrency=1, resume=False
        )
        task.LEASE_SECONDS = 0.6  # renewed every 0.2 s
        lease_files = []

        def take_over() -> None:  # another run takes the lease, as if this one had been stalled past it
            wait_until(lambda: len(patches(sandbox)) >= 5)
            (path,) = list((tmp_path / "state").glob("*/lease.json"))
            record = json.loads(path.read_text())
            path.write_text(json.dumps({**record, "token": "the-other-run", "run_id": "other"}))
            lease_files.append(path)

        thief = threading.Thread(target=take_over)
        thief.start()
        ti = FakeTI(task_id="sync")
        with pytest.raises(HilosSyncBusyError, match="lost its lease"):
            task.execute({"ti": ti})
        thief.join()
        sent = len(patches(sandbox))
        assert 5 <= sent < 40  # it stopped sending
        assert not list((tmp_path / "state").glob("*/state.jsonl"))  # nor wrote its state over the other run's
        assert json.loads(lease_files[0].read_text())["token"] == "the-other-run"  # and left the other's lease
        assert ti.pushed[SYNC_RESULT_XCOM_KEY]["state_path"] is None


def wait_until(condition, timeout: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_the_conversation_sync_takes_agents_by_email_and_teams_by_name(sb, tmp_path):
    ids = sb.conversation_ids()[:2]
    rows = [
        {"conversation_id": ids[0], "assigned": "ana@example.com|LUIS@example.com", "assigned_team": "Sales"},
        {"conversation_id": ids[1], "assigned": "nobody@example.com"},
    ]
    op = ConversationSyncOperator(
        task_id="sync", state=rows, skip_invalid_rows=True, state_store=str(tmp_path / "state"), page_size=100
    )
    result = op.execute({"ti": FakeTI(task_id="sync")})
    assert result["invalid"] == 1 and result["failed"] == 0
    held = sb.conversation(ids[0])
    assert sorted(u["id"] for u in held["assigned"]) == [1, 2] and held["assigned_team"] == 1
    plan = result["summary"]
    assert plan["invalid_rows"][0]["error"].startswith("assigned: 'nobody@example.com' is not the email")


def test_the_plan_says_its_size_rows_per_second_and_peak_memory(warehouse, sb, tmp_path, output):
    result = sync_task(tmp_path, dry_run=True, log_table=None).execute({"ti": FakeTI(task_id="sync")})
    assert result["listed_rows"] == 400 and result["plan_seconds"] > 0
    # rows per second from the unrounded seconds: within the rounding of plan_seconds to milliseconds
    assert result["plan_rows_per_second"] == pytest.approx(50 / result["plan_seconds"], rel=0.05)
    assert 50 < result["peak_memory_mb"] < 10_000 and result["work_db_mb"] >= 0
    said = [line for line in output().splitlines() if "rows/s" in line]  # once (Airflow 2: on stderr and in caplog)
    assert said and all("planned 50 desired row(s) against 400 listed in" in line for line in said)
    assert all("peak memory" in line and "work database" in line for line in said)


def test_list_pages_are_read_max_concurrency_at_once_unless_told(tmp_path):
    assert sync_task(tmp_path)._list_concurrency() == 16
    assert sync_task(tmp_path, max_concurrency=4)._list_concurrency() == 4
    assert sync_task(tmp_path, max_concurrency=4, list_concurrency=2)._list_concurrency() == 2
    with pytest.raises(ValueError, match="list_concurrency=0 must be a whole number from 1 to 256"):
        sync_task(tmp_path, list_concurrency=0)
