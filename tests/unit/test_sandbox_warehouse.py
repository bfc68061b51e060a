"""The embedded warehouse of the sync demo: a desired state per conversation, day-2 changes, SQLite and PostgreSQL
shapes, and the check that Hilos holds it."""

from __future__ import annotations

import sqlite3

from airflow_provider_hilos.rows import validate_row
from airflow_provider_hilos.sandbox import warehouse
from airflow_provider_hilos.sync.desired import RowShaper
from tests.conftest import EXAMPLE_DAGS

IDS = [f"00000000-0000-4000-8000-{i:012d}" for i in range(1, 201)]


def test_the_desired_state_is_seeded_and_valid():
    rows = warehouse.desired_rows(IDS, seed=1)
    assert rows == warehouse.desired_rows(IDS, seed=1) and rows != warehouse.desired_rows(IDS, seed=2)
    shaper = RowShaper({"assignee_ids": "assigned", "team_id": "assigned_team"}, "|", "sql")
    for row in rows:
        validate_row(shaper.shape(row))  # each is a valid update


def test_day_two_changes_the_share_asked_for(tmp_path):
    rows = warehouse.desired_rows(IDS)
    before = {row["conversation_id"]: row["status"] for row in rows}
    changed = warehouse.change_some(rows, 0.01)
    assert len(changed) == 2
    assert all(before[cid] != row["status"] for row in rows for cid in changed if row["conversation_id"] == cid)


def test_the_sqlite_table_is_what_the_example_query_reads(tmp_path):
    rows = warehouse.desired_rows(IDS[:3])
    warehouse.write_sqlite(tmp_path / "w.db", rows)
    warehouse.write_sqlite(tmp_path / "w.db", rows)  # again: replaced, and the log table kept
    query = (EXAMPLE_DAGS / "sql" / "crm_desired_state.sql").read_text()
    with sqlite3.connect(tmp_path / "w.db") as db:
        got = db.execute(query).fetchall()
        assert db.execute("SELECT COUNT(*) FROM hilos_sync_log").fetchone() == (0,)
    assert got == [
        (r["conversation_id"], r["status"], "|".join(r["tags"]), "|".join(map(str, r["assignee_ids"])), r["team_id"])
        for r in rows
    ]
    assert warehouse.postgres_rows(rows)[0][2] == rows[0]["tags"]


def test_mismatches_name_the_fields_that_differ():
    row = {"conversation_id": IDS[0], "status": "CLOSED", "tags": ["vip"], "assignee_ids": [3], "team_id": 2}
    held = {"status": "CLOSED", "tags": [{"name": "vip"}], "assigned": [{"id": 3}], "assigned_team": 2}
    assert warehouse.mismatches(row, held) == []
    assert warehouse.mismatches(row, {**held, "status": "NEW", "assigned_team": 1}) == ["status", "assigned_team"]


def test_the_crm_contact_table_is_derived_from_the_sandbox_and_changes_on_day_2(tmp_path):
    import json
    import sqlite3

    from airflow_provider_hilos.sandbox import HilosSandbox, warehouse

    with HilosSandbox(conversations=30, seed=7) as sb:
        contacts = [sb.contact(cid) for cid in sb.contact_ids()[:20]]
        rows = warehouse.desired_contacts(contacts, new=2)
        assert rows == warehouse.desired_contacts(contacts, new=2)  # the same seed, the same warehouse
        assert len(rows) == 22 and rows[0]["phone"] == contacts[0]["phone"].lstrip("+")  # a CRM's spelling
        assert all(r["owner_email"] in warehouse.OWNER_EMAILS for r in rows)
        changed = warehouse.change_contacts(rows, 0.1, new=1)
        assert len(changed) == 3 and len(rows) == 23
        path = tmp_path / "w.db"
        warehouse.write_contacts_sqlite(path, rows)
        with sqlite3.connect(path) as db:
            stored = db.execute(f"SELECT phone, meta, tags FROM {warehouse.CONTACT_TABLE} ORDER BY rowid").fetchall()
            assert db.execute(f"SELECT count(*) FROM {warehouse.LOG_TABLE}").fetchone() == (0,)
        assert len(stored) == 23 and json.loads(stored[0][1]) == {"plan": rows[0]["plan"]}
        owners = {m["email"]: m["id"] for m in sb.state.account_members({})}
        held = sb.contact(contacts[0]["id"])
        assert "default_assignees" in warehouse.contact_mismatches(rows[0], held, owners)
        assert warehouse.contact_mismatches(rows[-1], None, owners) == ["missing"]
