"""The example DAGs: they parse offline, and each does what its docstring says against the sandbox."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from airflow import __version__ as AIRFLOW_VERSION

from airflow_provider_hilos.inputs import rows_from_csv
from airflow_provider_hilos.rows import shard_of
from airflow_provider_hilos.sandbox import HilosSandbox
from tests.conftest import EXAMPLE_DAGS, ROOT, TEST_TOKEN, run_dag, xcom_value

AIRFLOW_3 = int(AIRFLOW_VERSION.split(".")[0]) >= 3
EXPECTED_DAGS = {
    "hilos_crm_sync",
    "hilos_mapped_updates",
    "hilos_crm_sync_sharded",
    "hilos_manual_update",
    "hilos_close_stale_conversations",
    "hilos_export_conversations",
    "hilos_contacts_sync",
}


def load_example_module(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLE_DAGS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def seven(monkeypatch):
    """The sandbox the shipped change set was written for (seed 7)."""
    with HilosSandbox(conversations=40, seed=7, token=TEST_TOKEN) as sb:
        monkeypatch.setenv("AIRFLOW_CONN_HILOS_DEFAULT", sb.connection_json())
        yield sb


def test_examples_parse_with_no_connection_and_no_network():
    code = f"""
import socket
def no_network(*a, **k):
    raise AssertionError("network call while parsing DAGs")
socket.socket.connect = no_network
socket.create_connection = no_network
from tests.conftest import dag_bag
bag = dag_bag({EXAMPLE_DAGS!r})
import json
print(json.dumps({{"errors": bag.import_errors, "dags": sorted(bag.dag_ids)}}))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    result = subprocess.run(
        [sys.executable, "-c", "from pathlib import PosixPath\n" + code],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["errors"] == {}
    assert set(report["dags"]) == EXPECTED_DAGS


def test_manual_dag_form_params():
    dag = load_example_module("hilos_manual_update").dag
    assert type(dag.timetable).__name__ == "NullTimetable"  # schedule=None
    schema = {name: param.schema for name, param in dag.params.items()}
    assert schema["conversation_id"]["format"] == "uuid"
    # the union of both documents' status enums (Hilos's own adds FLOW_PAUSED)
    assert schema["status"]["enum"] == [
        None,
        "CREATED",
        "FLOW",
        "FLOW_PAUSED",
        "NEW",
        "IN_PROGRESS",
        "RESOLVED",
        "CLOSED",
    ]
    assert schema["tags"]["items"] == {"type": "string", "maxLength": 100}
    assert schema["assignees"]["items"] == {"type": "integer"}
    assert schema["team"]["type"] == ["null", "integer"]
    assert schema["dry_run"]["type"] == "boolean"


@pytest.mark.usefixtures("airflow_db")
def test_mapped_updates_apply_the_change_set(seven):
    module = load_example_module("hilos_mapped_updates")
    intent = module.load_change_set(module.CHANGES_FILE)
    assert len(intent) == 10
    untouched = {cid: seven.conversation(cid) for cid in seven.conversation_ids()[10:]}
    dag_run = run_dag("hilos_mapped_updates")
    assert dag_run.state == "success"
    for update in intent:
        assert seven.mismatches(update["conversation_id"], update["payload"]) == [], update
    assert {cid: seven.conversation(cid) for cid in untouched} == untouched
    assert len([r for r in seven.requests() if r["method"] == "PATCH"]) == 10


@pytest.mark.usefixtures("airflow_db")
def test_manual_update_sends_the_form_values(seven):
    cid = seven.conversation_ids()[12]
    conf = {"conversation_id": cid, "status": "RESOLVED", "tags": ["vip", "callback"], "assignees": [2, 5], "team": 3}
    dag_run = run_dag("hilos_manual_update", conf)
    assert dag_run.state == "success"
    (sent,) = [r for r in seven.requests() if r["method"] == "PATCH"]
    assert sent["body"] == {
        "status": "RESOLVED",
        "tags": [{"name": "vip"}, {"name": "callback"}],
        "assigned": [{"id": 2}, {"id": 5}],
        "assigned_team": 3,
    }
    conv = seven.conversation(cid)
    assert (conv["status"], conv["assigned_team"]) == ("RESOLVED", 3)


@pytest.mark.usefixtures("airflow_db")
def test_manual_update_dry_run_sends_nothing(seven):
    cid = seven.conversation_ids()[13]
    before = seven.conversation(cid)
    conf = {"conversation_id": cid, "status": "CLOSED", "tags": ["vip"], "dry_run": True}
    dag_run = run_dag("hilos_manual_update", conf)
    assert dag_run.state == "success"
    assert seven.requests() == [] and seven.conversation(cid) == before
    assert xcom_value(dag_run, "update_conversation") == {
        "dry_run": True,
        "method": "PATCH",
        "url": f"{seven.url}/api/inbox/conversation/{cid}/update",
        "body": {"status": "CLOSED", "tags": [{"name": "vip"}]},
    }


@pytest.mark.usefixtures("airflow_db")
def test_manual_update_with_only_an_id_says_there_is_nothing_to_update(seven, output):
    cid = seven.conversation_ids()[14]
    dag_run = run_dag("hilos_manual_update", {"conversation_id": cid})
    assert dag_run.state == "failed"
    assert "payload: is empty (a field given as None counts as not given): nothing to update" in output()
    assert seven.requests() == []


@pytest.mark.usefixtures("airflow_db")
@pytest.mark.parametrize(
    "conf",
    [
        {"conversation_id": "not-a-uuid", "status": "CLOSED"},
        {"conversation_id": "6513270e-269e-4d37-b2a7-4de452e6b438", "status": "DONE"},
    ],
)
def test_manual_update_refuses_conf_that_breaks_the_form_schema(seven, conf):
    from airflow.providers.common.compat.sdk import ParamValidationError

    with pytest.raises(ParamValidationError):
        run_dag("hilos_manual_update", conf)
    assert seven.requests() == []


@pytest.mark.usefixtures("airflow_db")
def test_close_stale_uses_the_list_answer_as_payload(seven):
    cutoff = datetime.now(UTC) - timedelta(days=30)
    everything = {cid: seven.conversation(cid) for cid in seven.conversation_ids()}
    stale = {
        cid
        for cid, c in everything.items()
        if c["status"] in ("NEW", "CREATED") and datetime.fromisoformat(c["created_on"].replace("Z", "+00:00")) < cutoff
    }
    assert stale, "the seed should contain stale conversations"
    dag_run = run_dag("hilos_close_stale_conversations")
    assert dag_run.state == "success"
    for cid, before in everything.items():
        after = seven.conversation(cid)
        if cid in stale:
            assert after["status"] == "CLOSED"
            assert [t["name"] for t in after["tags"]] == [t["name"] for t in before["tags"]] + ["auto-closed"]
        else:
            assert after == before


@pytest.mark.skipif(not AIRFLOW_3, reason="the README's demo runs in the default environment (Airflow 3)")
def test_demo_command_runs_green():
    """README's first command, minus the bootstrap (the test suite already runs in the locked env): the sync, two
    days in a row; day 2 sends only the changed rows and the hand edits."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py")], capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "OK: Hilos holds the warehouse's desired state for all 600 conversations" in result.stdout
    day1, day2 = re.findall(r"requests: (\d+) GET \(list pages\) \+ (\d+) PATCH", result.stdout)
    assert day1 == ("10", "600")
    assert day2 == ("10", "9")  # 6 rows changed in the warehouse, 3 hand edits put back
    assert "3 hand edit(s) put back" in result.stdout
    assert "plan: 9 to update, 591 unchanged, 0 not found, 0 invalid" in result.stdout


@pytest.mark.usefixtures("airflow_db")
def test_the_sharded_example_applies_the_change_set_once(monkeypatch, tmp_path):
    module = load_example_module("hilos_crm_sync_sharded")
    with HilosSandbox(conversations=40, seed=7, token=TEST_TOKEN) as sb:
        monkeypatch.setenv("AIRFLOW_CONN_HILOS_DEFAULT", sb.connection_json())
        # the shipped change set is CSV: read it the way the operator does
        rows = [row for _, row in rows_from_csv(lambda: module.CHANGES_FILE.open(newline=""))()]
        assert len(rows) == 10
        dag_run = run_dag("hilos_crm_sync_sharded", {"checkpoint_path": str(tmp_path)})
        assert dag_run.state == "success"
        summary = xcom_value(dag_run, "summarize")
        assert (summary["shards"], summary["total"], summary["updated"]) == (module.SHARDS, 10, 10)
        named = sorted((ti.map_index, ti.rendered_map_index) for ti in dag_run.get_task_instances())
        assert named[1:] == [(i, f"shard {i} of {module.SHARDS}") for i in range(module.SHARDS)]  # after summarize
        per_shard = [xcom_value(dag_run, "sync_shard", map_index=i)["total"] for i in range(module.SHARDS)]
        assert per_shard == [sum(shard_of(r, module.SHARDS) == i for r in rows) for i in range(module.SHARDS)]
        for row in rows:
            fields = {k: v for k, v in row.items() if k != "conversation_id"}
            assert sb.mismatches(row["conversation_id"], fields) == [], row
        assert len([r for r in sb.requests() if r["method"] == "PATCH"]) == 10


@pytest.mark.usefixtures("airflow_db")
def test_the_export_example_writes_every_conversation(seven, tmp_path):
    target = tmp_path / "all.csv"
    dag_run = run_dag("hilos_export_conversations", conf={"output_path": str(target)})
    assert dag_run.state == "success"
    lines = target.read_text().splitlines()
    assert lines[0].startswith("conversation_id,") and len(lines) == 41
    assert sorted(line.split(",")[0] for line in lines[1:]) == sorted(seven.conversation_ids())


@pytest.mark.usefixtures("airflow_db")
def test_the_crm_sync_sends_only_what_differs_and_puts_back_hand_edits(monkeypatch, tmp_path):
    from airflow_provider_hilos.sandbox import warehouse

    module = load_example_module("hilos_crm_sync")
    database = tmp_path / "warehouse.db"
    with HilosSandbox(conversations=120, seed=7, token=TEST_TOKEN) as sb:
        monkeypatch.setenv("AIRFLOW_CONN_HILOS_DEFAULT", sb.connection_json())
        monkeypatch.setenv("AIRFLOW_CONN_HILOS_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(database)}))
        desired = warehouse.desired_rows(sb.conversation_ids()[:80])
        warehouse.write_sqlite(database, desired)
        first = run_dag("hilos_crm_sync")
        assert first.state == "success"
        day1 = xcom_value(first, "sync")
        assert day1["updated"] == day1["to_update"] > 0 and day1["failed"] == 0
        warehouse.change_some(desired, 0.05)  # 4 rows
        warehouse.write_sqlite(database, desired)
        edited = desired[50]["conversation_id"]
        sb.state.partial_update(edited, {"status": "IN_PROGRESS" if desired[50]["status"] != "IN_PROGRESS" else "NEW"})
        sb.clear_requests()
        second = run_dag("hilos_crm_sync")
        assert second.state == "success"
        day2 = xcom_value(second, "sync")
        assert day2["drift_corrected"] == 1 and day2["summary"]["drift_conversations"] == [edited]
        assert day2["write_requests"] == day2["updated"] <= 5
        assert len([r for r in sb.requests() if r["method"] == "PATCH"]) == day2["write_requests"]
        assert all(warehouse.mismatches(row, sb.conversation(row["conversation_id"])) == [] for row in desired)
    with __import__("sqlite3").connect(database) as db:
        outcomes = db.execute("SELECT outcome, COUNT(*) FROM hilos_sync_log GROUP BY 1").fetchall()
    assert dict(outcomes) == {"updated": day1["updated"] + day2["updated"]}
    assert module.dag.params["compare_with"] == "hilos"


@pytest.mark.usefixtures("airflow_db")
def test_the_contacts_sync_creates_the_new_customers_and_writes_only_what_differs(monkeypatch, tmp_path):
    from airflow_provider_hilos.sandbox import warehouse

    module = load_example_module("hilos_contacts_sync")
    database = tmp_path / "warehouse.db"
    with HilosSandbox(conversations=60, seed=7, token=TEST_TOKEN, extra_contacts=40) as sb:
        monkeypatch.setenv("AIRFLOW_CONN_HILOS_DEFAULT", sb.connection_json())
        monkeypatch.setenv("AIRFLOW_CONN_HILOS_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(database)}))
        customers = warehouse.desired_contacts([sb.contact(c) for c in sb.contact_ids()[:80]], new=3)
        warehouse.write_contacts_sqlite(database, customers)
        first = run_dag("hilos_contacts_sync")
        assert first.state == "success"
        day1 = xcom_value(first, "sync_contacts")
        assert day1["created"] == 3 and day1["updated"] == day1["to_update"] > 0 and day1["failed"] == 0
        owners = {m["email"]: m["id"] for m in sb.state.account_members({})}
        assert all(
            warehouse.contact_mismatches(row, sb.contact_by_phone(_e164(row["phone"])), owners) == []
            for row in customers
        )
        changed = warehouse.change_contacts(customers, 0.05, new=1)  # 4 rows, and a new customer
        warehouse.write_contacts_sqlite(database, customers)
        sb.clear_requests()
        second = run_dag("hilos_contacts_sync")
        assert second.state == "success"
        day2 = xcom_value(second, "sync_contacts")
        writes = [r for r in sb.requests() if r["method"] in ("POST", "PATCH")]
        assert (day2["created"], day2["updated"]) == (1, len(changed) - 1) and len(writes) == len(changed)
        assert all(
            warehouse.contact_mismatches(row, sb.contact_by_phone(_e164(row["phone"])), owners) == []
            for row in customers
        )
    with __import__("sqlite3").connect(database) as db:
        outcomes = dict(db.execute("SELECT outcome, COUNT(*) FROM hilos_sync_log GROUP BY 1").fetchall())
    assert outcomes == {"created": 4, "updated": day1["updated"] + day2["updated"]}
    assert module.dag.params["mode"] == "upsert"


def _e164(phone: str) -> str:
    from airflow_provider_hilos.contacts import canonical_phone

    return canonical_phone(phone, "MX")
