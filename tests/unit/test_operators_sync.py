"""ConversationSyncOperator as a DAG author uses it: a SQL warehouse on an Airflow connection, a column map, the
sync log in the warehouse, the dry run, and errors at parse time that name the fix."""

from __future__ import annotations

import json
import sqlite3

import pytest

from airflow_provider_hilos.operators.sync import SYNC_RESULT_XCOM_KEY, ConversationSyncOperator
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
    assert TEST_TOKEN not in text and "Hilos sync plan (compare_with=hilos)" in text


def test_the_dry_run_returns_the_plan_and_sends_nothing(warehouse, sb, tmp_path):
    result = sync_task(tmp_path, dry_run="True", log_table=None).execute({"ti": FakeTI(task_id="sync")})
    assert result["dry_run"] is True and result["to_update"] > 0 and result["updated"] == 0
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
        logged = db.execute("SELECT * FROM hilos_sync_log").fetchall()
    assert any(row[4] == "failed" and row[6] for row in logged)
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
