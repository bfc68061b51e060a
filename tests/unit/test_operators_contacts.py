"""ContactSyncOperator as a DAG author uses it: a SQLite warehouse table of customers (phones as the warehouse
spells them, a JSON meta, meta.<name> columns, agents by email), the plan and the dry run, the three modes, the
delete guard, the sync log and the result a person reads."""

from __future__ import annotations

import json
import sqlite3

import pytest

from airflow_provider_hilos.exceptions import HilosBatchError, HilosSyncNotApprovedError, HilosValidationError
from airflow_provider_hilos.operators.contacts import ContactSyncOperator
from airflow_provider_hilos.operators.sync import SYNC_RESULT_XCOM_KEY
from airflow_provider_hilos.sandbox import HilosSandbox
from airflow_provider_hilos.sync.warehouse_log import LOG_TABLE_DDL
from tests.conftest import TEST_TOKEN, FakeTI


@pytest.fixture
def hilos(monkeypatch):
    sandbox = HilosSandbox(conversations=40, seed=5, token=TEST_TOKEN, extra_contacts=40).start()
    try:
        monkeypatch.setenv("AIRFLOW_CONN_HILOS_DEFAULT", sandbox.connection_json())
        yield sandbox
    finally:
        sandbox.stop(wait=False)


def customers(hilos, count: int = 30) -> list[tuple]:
    """The warehouse's customers: the first ``count`` contacts as Hilos has them (so nothing differs), phones
    without ``+`` in every other row, ltv as a number, the plan in the JSON meta."""
    rows = []
    for i, cid in enumerate(hilos.contact_ids()[:count]):
        c = hilos.contact(cid)
        phone = c["phone"] if i % 2 else c["phone"].lstrip("+")
        meta = json.dumps({"plan": c["meta"]["plan"]})
        tags = "|".join(t["name"] for t in c["tags"]) or "-"
        rows.append((phone, c["first_name"], c["email"], meta, int(c["meta"]["ltv"]), tags))
    return rows


@pytest.fixture
def warehouse(tmp_path, monkeypatch, hilos):
    path = tmp_path / "warehouse.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE customers (mobile TEXT, first TEXT, email TEXT, meta TEXT, ltv INTEGER, tags TEXT)")
        db.executemany("INSERT INTO customers VALUES (?, ?, ?, ?, ?, ?)", customers(hilos))
        db.execute(LOG_TABLE_DDL.format(table="hilos_sync_log"))
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    return path


def task(tmp_path, **kwargs) -> ContactSyncOperator:
    defaults = {
        "task_id": "contacts",
        "sql": "SELECT mobile, first, email, meta, ltv, tags FROM customers",
        "sql_conn_id": "warehouse",
        "column_map": {"mobile": "phone", "first": "first_name", "ltv": "meta.ltv"},
        "log_table": "hilos_sync_log",
        "report_path": str(tmp_path / "out" / "contacts.jsonl"),
        "page_size": 25,
        "state_store": str(tmp_path / "state"),
    }
    return ContactSyncOperator(**{**defaults, **kwargs})


def run(tmp_path, **kwargs) -> tuple[dict, FakeTI]:
    ti = FakeTI(task_id="contacts")
    return task(tmp_path, **kwargs).execute({"ti": ti}), ti


def writes(hilos) -> list[tuple[str, str]]:
    return [(r["method"], r["path"]) for r in hilos.requests() if r["method"] in ("POST", "PATCH", "DELETE")]


def edit(warehouse, sql: str, *args) -> None:
    with sqlite3.connect(warehouse) as db:
        db.execute(sql, args)


def test_a_warehouse_equal_to_hilos_sends_nothing_and_a_change_sends_only_itself(warehouse, hilos, tmp_path, output):
    result, ti = run(tmp_path)
    assert (result["desired"], result["unchanged"], result["created"], result["updated"]) == (30, 30, 0, 0)
    assert writes(hilos) == [] and ti.pushed[SYNC_RESULT_XCOM_KEY] == result and result["object"] == "contact"
    first = hilos.contact(hilos.contact_ids()[0])
    edit(warehouse, "UPDATE customers SET ltv = 9999, first = 'Renamed' WHERE mobile = ?", first["phone"].lstrip("+"))
    hilos.clear_requests()
    again, _ = run(tmp_path)
    assert (again["to_update"], again["updated"], again["unchanged"]) == (1, 1, 29)
    (sent,) = [r for r in hilos.requests() if r["method"] == "PATCH"]
    assert sent["path"] == f"/api/contact/{first['id']}" and sent["body"] == {
        "first_name": "Renamed",
        "meta": {"ltv": "9999"},  # merged by the API: the other properties stay
    }
    held = hilos.contact(first["id"])
    assert held["first_name"] == "Renamed" and held["meta"] == {**first["meta"], "ltv": "9999"}
    text = output()
    assert "Hilos sync plan (contacts, compare_with=hilos)" in text and "meta.ltv" in text
    assert TEST_TOKEN not in text + json.dumps(again)


def test_new_contacts_are_created_and_the_next_run_finds_them(warehouse, hilos, tmp_path):
    edit(
        warehouse,
        "INSERT INTO customers VALUES ('+52 55 0000 1111', 'Nueva', NULL, '{\"plan\": \"trial\"}', 5, 'lead')",
    )
    result, _ = run(tmp_path)
    assert (result["to_create"], result["created"], result["unchanged"]) == (1, 1, 30)
    made = hilos.contact_by_phone("+525500001111")
    assert made["first_name"] == "Nueva" and made["meta"] == {"plan": "trial", "ltv": "5"}
    assert [t["name"] for t in made["tags"]] == ["lead"]
    hilos.clear_requests()
    again, _ = run(tmp_path)
    assert (again["to_create"], again["unchanged"], again["write_requests"]) == (0, 31, 0)


def test_update_mode_never_creates(warehouse, hilos, tmp_path):
    edit(warehouse, "INSERT INTO customers VALUES ('+525500001111', 'Nueva', NULL, NULL, NULL, NULL)")
    result, _ = run(tmp_path, mode="update")
    assert result["not_found"] == 1 and result["created"] == 0 and result["not_found_contacts"] == ["+525500001111"]
    assert hilos.contact_by_phone("+525500001111") is None and writes(hilos) == []


def test_a_dry_run_says_what_it_would_create_update_and_delete_per_field(warehouse, hilos, tmp_path, output):
    run(tmp_path, mode="mirror")  # manages the 30
    output()
    edit(warehouse, "DELETE FROM customers WHERE rowid = 1")
    edit(warehouse, 'UPDATE customers SET meta = \'{"plan": "enterprise"}\' WHERE rowid = 2')
    edit(warehouse, "INSERT INTO customers VALUES ('+525500001111', 'Nueva', NULL, NULL, NULL, NULL)")
    hilos.clear_requests()
    plan = tmp_path / "plan.jsonl"
    result, _ = run(tmp_path, mode="mirror", dry_run=True, plan_path=str(plan))
    assert result["dry_run"] and (result["to_create"], result["to_update"], result["to_delete"]) == (1, 1, 1)
    assert "created" not in result and "deleted" not in result and writes(hilos) == []
    assert result["summary"]["fields"]["meta.plan"] == 1
    entries = [json.loads(line) for line in plan.read_text().splitlines()]
    assert sorted(e["action"] for e in entries) == ["create", "delete", "update"]
    (update,) = [e for e in entries if e["action"] == "update"]
    assert update["phone"].startswith("+") and update["contact_id"] and "meta.plan" in json.dumps(update["changes"])
    lines = [line for line in output().splitlines() if "Hilos sync" in line]
    assert "Hilos sync DRY RUN" in lines[0] and "Hilos sync DRY RUN done" in lines[-1]


def test_a_mirror_deletes_only_contacts_it_managed_and_the_guard_refuses_too_many(warehouse, hilos, tmp_path):
    run(tmp_path, mode="mirror")
    never_managed = hilos.contact_ids()[-1]
    edit(warehouse, "DELETE FROM customers WHERE rowid IN (1, 2)")
    gone = [hilos.contact_by_phone(p if p.startswith("+") else "+" + p)["id"] for p, *_ in customers(hilos)[:2]]
    result, _ = run(tmp_path, mode="mirror")
    assert result["deleted"] == 2 and result["to_delete"] == 2
    assert sorted(p for m, p in writes(hilos) if m == "DELETE") == sorted(f"/api/contact/{c}" for c in gone)
    assert hilos.contact(never_managed)["id"] == never_managed
    edit(warehouse, "DELETE FROM customers WHERE rowid <= 10")  # 8 more of the 28 managed: past 0.1
    hilos.clear_requests()
    with pytest.raises(HilosSyncNotApprovedError) as refused:
        run(tmp_path, mode="mirror", approval="never")
    message = str(refused.value)
    assert "8 deletes of the 28 contacts this sync manages (28.6%) > max_delete_ratio=0.1" in message
    assert "nothing was sent" in message and '{"approve_plan": "' in message
    assert writes(hilos) == []
    allowed, _ = run(tmp_path, mode="mirror", max_delete_ratio=0.5)
    assert allowed["deleted"] == 8


def test_agents_by_email_are_resolved_once_and_an_unknown_one_is_an_invalid_row(warehouse, hilos, tmp_path):
    edit(warehouse, "ALTER TABLE customers ADD COLUMN owner TEXT")
    edit(warehouse, "UPDATE customers SET owner = 'ANA@example.com' WHERE rowid <= 3")
    edit(warehouse, "UPDATE customers SET owner = 'nobody@example.com' WHERE rowid = 4")
    sql = "SELECT mobile, first, email, meta, ltv, tags, owner FROM customers"
    column_map = {"mobile": "phone", "first": "first_name", "ltv": "meta.ltv", "owner": "default_assignees"}
    with pytest.raises(HilosValidationError, match=r"'nobody@example.com' is not the email of a member"):
        run(tmp_path, sql=sql, column_map=column_map)
    assert writes(hilos) == []
    result, _ = run(tmp_path, sql=sql, column_map=column_map, skip_invalid_rows=True)
    assert result["invalid"] == 1 and result["updated"] == 3
    assert [r["path"] for r in hilos.requests()].count("/api/account-member") == 2  # once per run
    for cid in hilos.contact_ids()[:3]:
        assert [u["id"] for u in hilos.contact(cid)["default_assignees"]] == [1]


def test_two_spellings_of_one_phone_are_both_invalid_named_by_the_phone(warehouse, hilos, tmp_path):
    phone = hilos.contact(hilos.contact_ids()[0])["phone"]
    edit(warehouse, "INSERT INTO customers VALUES (?, 'Copy', NULL, NULL, NULL, NULL)", "+" + phone.lstrip("+"))
    with pytest.raises(HilosValidationError) as refused:
        run(tmp_path)
    assert f"phone: {phone} is in 2 rows" in str(refused.value)


def test_the_sync_log_names_each_contact_by_phone(warehouse, hilos, tmp_path):
    first = hilos.contact_ids()[0]  # row 1 (the order changes as contacts are written)
    edit(warehouse, "UPDATE customers SET first = 'X' WHERE rowid = 1")
    edit(warehouse, "INSERT INTO customers VALUES ('+525500001111', 'Nueva', NULL, NULL, NULL, NULL)")
    result, _ = run(tmp_path)
    with sqlite3.connect(warehouse) as db:
        logged = db.execute("SELECT object, object_key, object_id, action, outcome FROM hilos_sync_log").fetchall()
    assert result["log_rows_written"] == 2
    assert sorted(r[3:] for r in logged) == [("create", "created"), ("update", "updated")]
    assert {r[0] for r in logged} == {"contact"} and all(r[1].startswith("+52") for r in logged)
    assert [r[2] for r in logged if r[3] == "update"] == [first]  # a created one's id is not known yet


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "sync"}, "mode: 'sync' is not one of upsert, update, mirror"),
        ({"mode": "mirror", "compare_with": "last_sync"}, "mode='mirror' needs what Hilos holds"),
        ({"meta_mode": "add"}, "'add' is for lists"),
        ({"tags_mode": "merge"}, "'merge' is for meta_mode"),
        ({"default_region": "Mexico"}, "not a country code"),
        ({"max_deletes": -1}, "max_deletes: -1 must be a whole number"),
        ({"max_delete_ratio": 2}, "must be a share from 0 to 1"),
        ({"column_map": {"mobile": "phon"}}, "did you mean 'phone'"),
    ],
)
def test_wrong_arguments_fail_when_the_dag_is_parsed(tmp_path, kwargs, message):
    with pytest.raises((HilosValidationError, ValueError), match=message):
        task(tmp_path, **kwargs)


def test_templated_arguments_are_checked_when_rendered():
    op = ContactSyncOperator(task_id="t", state=[], mode="{{ params.mode }}")
    assert "mode" in op.template_fields and "meta_mode" in op.template_fields
    op.mode = "bogus"
    with pytest.raises(HilosValidationError, match="mode"):
        op._settings()


def test_a_successful_sync_announces_created_updated_and_deleted_on_its_assets(warehouse, hilos, tmp_path):
    from airflow.providers.common.compat.assets import Asset

    synced = Asset("hilos_contacts_synced")

    class Event:
        def __init__(self) -> None:
            self.extra: dict = {}

    edit(warehouse, "INSERT INTO customers VALUES ('+525500001111', 'Nueva', NULL, NULL, NULL, NULL)")
    events: dict = {synced: Event()}
    ti = FakeTI(task_id="contacts")
    result = task(tmp_path, outlets=[synced]).execute({"ti": ti, "outlet_events": events})
    extra = events[synced].extra
    assert extra == {name: result[name] for name in ContactSyncOperator.ASSET_EXTRA_FIELDS}
    assert (extra["created"], extra["updated"], extra["deleted"]) == (1, 0, 0)


def test_a_csv_file_with_meta_columns_and_last_sync_upserts_by_phone_without_reading(hilos, tmp_path):
    first, second = (hilos.contact(cid) for cid in hilos.contact_ids()[:2])
    path = tmp_path / "customers.csv"
    path.write_text(
        "phone,first_name,meta.plan,meta.ltv,tags\n"
        f"{first['phone']},Ana,pro,42,vip|lead\n"
        f"{second['phone'].lstrip('+')},,enterprise,,\n"  # an empty cell: not managed
    )
    kwargs = {"state_path": str(path), "sql": None, "sql_conn_id": None, "log_table": None, "compare_with": "last_sync"}
    result, _ = run(tmp_path, **kwargs)
    assert result["read_requests"] == 0 and result["write_requests"] == 2 and result["failed"] == 0
    assert [(m, p) for m, p in writes(hilos)] == [("POST", "/api/contact"), ("POST", "/api/contact")]
    held = hilos.contact(first["id"])
    assert held["first_name"] == "Ana" and held["meta"]["plan"] == "pro" and held["meta"]["ltv"] == "42"
    assert sorted(t["name"] for t in held["tags"]) == ["lead", "vip"]
    other = hilos.contact(second["id"])
    assert other["meta"] == {**second["meta"], "plan": "enterprise"} and other["first_name"] == second["first_name"]
    hilos.clear_requests()
    again, _ = run(tmp_path, **kwargs)
    assert (again["unchanged"], again["write_requests"]) == (2, 0)  # the snapshot says they are as desired
    # removing a property rewrites the whole meta, which needs what Hilos holds: without a listing it is not sent
    path.write_text(f"phone,meta.ltv\n{first['phone']},-\n")
    with pytest.raises(HilosBatchError) as stopped:
        run(tmp_path, **kwargs)
    assert stopped.value.result["failed_rows"][0]["error"].endswith("use compare_with='hilos'")
    assert hilos.contact(first["id"])["meta"]["ltv"] == "42" and writes(hilos) == []


def test_a_write_the_api_refused_is_retried_next_run_whatever_the_diff_says(warehouse, hilos, tmp_path):
    edit(warehouse, "ALTER TABLE customers ADD COLUMN owner INTEGER")
    edit(warehouse, "UPDATE customers SET first = 'Changed', owner = 999 WHERE rowid = 1")  # no such user: a 400
    sql = "SELECT mobile, first, email, meta, ltv, tags, owner FROM customers"
    column_map = {"mobile": "phone", "first": "first_name", "ltv": "meta.ltv", "owner": "default_assignees"}
    with pytest.raises(HilosBatchError) as failed:
        run(tmp_path, sql=sql, column_map=column_map)
    assert failed.value.result["failed"] == 1 and "default_assignees" in failed.value.result["failed_rows"][0]["error"]
    edit(warehouse, "UPDATE customers SET owner = NULL WHERE rowid = 1")  # fixed; first_name still differs
    first = hilos.contact(hilos.contact_ids()[-1])  # (any contact: the refused one was not written)
    hilos.clear_requests()
    result, _ = run(tmp_path, sql=sql, column_map=column_map)
    assert (result["retried_from_last_run"], result["updated"], result["failed"]) == (1, 1, 0)
    assert first["id"] and len([r for r in hilos.requests() if r["method"] == "PATCH"]) == 1


def test_the_lineage_names_the_warehouse_table_and_hilos_contacts(warehouse, hilos, tmp_path):
    op = task(tmp_path, log_table=None)
    op.execute({"ti": FakeTI(task_id="contacts")})
    lineage = op.get_openlineage_facets_on_complete(None)
    assert [d.name for d in lineage.outputs] == ["contacts"] and lineage.inputs
