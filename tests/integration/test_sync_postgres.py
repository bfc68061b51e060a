"""The sync against a real PostgreSQL (Debian's, started by this test on loopback and stopped by its process id):
``text[]`` and ``int[]`` columns, NULL cells, a ``column_map``, a server-side cursor read in chunks, and the sync log
inserted into the warehouse."""

from __future__ import annotations

import json

import pytest

from airflow_provider_hilos.operators.sync import ConversationSyncOperator
from airflow_provider_hilos.sandbox import HilosSandbox, warehouse
from airflow_provider_hilos.sync.warehouse_log import LOG_TABLE_DDL
from tests.conftest import TEST_TOKEN, FakeTI
from tests.e2e.services import PostgresServer


@pytest.fixture(scope="module")
def postgres():
    with PostgresServer() as server:
        yield server


@pytest.fixture
def warehouse_conn(postgres, monkeypatch):
    conn = {
        "conn_type": "postgres",
        "host": "127.0.0.1",
        "port": postgres.port,
        "login": "airflow",
        "schema": "airflow",
    }
    monkeypatch.setenv("AIRFLOW_CONN_PG_WAREHOUSE", json.dumps(conn))
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    hook = PostgresHook(postgres_conn_id="pg_warehouse")
    hook.run(
        [
            f"DROP TABLE IF EXISTS {warehouse.TABLE}",
            "DROP TABLE IF EXISTS hilos_sync_log",
            warehouse.POSTGRES_DDL,
            LOG_TABLE_DDL.format(table="hilos_sync_log"),
        ]
    )
    return hook


def test_a_postgres_table_with_arrays_and_nulls_is_synced_and_logged(warehouse_conn, monkeypatch, tmp_path):
    with HilosSandbox(conversations=300, seed=5, token=TEST_TOKEN) as sb:
        monkeypatch.setenv("AIRFLOW_CONN_HILOS_DEFAULT", sb.connection_json())
        rows = warehouse.desired_rows(sb.conversation_ids()[:250], seed=4)
        values = warehouse.postgres_rows(rows)
        values = [(*v[:4], None) if i % 5 == 0 else v for i, v in enumerate(values)]  # NULL team: unmanaged
        with warehouse_conn.get_conn() as conn, conn.cursor() as cursor:  # lists as arrays (text[], int[])
            cursor.executemany(f"INSERT INTO {warehouse.TABLE} VALUES (%s, %s, %s, %s, %s)", values)
            conn.commit()
        untouched_teams = {
            rows[i]["conversation_id"]: sb.conversation(rows[i]["conversation_id"])["assigned_team"]
            for i in range(0, 250, 5)
        }
        task = ConversationSyncOperator(
            task_id="sync",
            sql=f"SELECT conversation_id, status, tags, assignee_ids, team_id FROM {warehouse.TABLE}",
            sql_conn_id="pg_warehouse",
            column_map={"assignee_ids": "assigned", "team_id": "assigned_team"},
            chunk_size=100,
            log_table="hilos_sync_log",
            report_path=str(tmp_path / "report.jsonl"),
        )
        from airflow_provider_hilos.sync import desired

        cursors: list[str] = []
        real_cursor = desired._cursor
        monkeypatch.setattr(desired, "_cursor", lambda conn: cursors.append(str((c := real_cursor(conn)).name)) or c)
        ti = FakeTI(task_id="sync")
        result = task.execute({"ti": ti})
        # a named (server-side) cursor, psycopg 2 or 3: the database holds the result, the worker fetches 100 at a time
        assert len(cursors) == 1 and cursors[0].startswith("hilos_sync_")
        assert result["desired"] == 250 and result["failed"] == 0 and result["updated"] == result["to_update"]
        for i, row in enumerate(rows):
            held = sb.conversation(row["conversation_id"])
            wrong = warehouse.mismatches(row, held)
            if i % 5 == 0:  # the team was not managed: it is what it was
                assert (
                    wrong in ([], ["assigned_team"])
                    and held["assigned_team"] == untouched_teams[row["conversation_id"]]
                )
            else:
                assert wrong == []
        logged = warehouse_conn.get_records("SELECT run_id, outcome, changes FROM hilos_sync_log")
        assert len(logged) == result["updated"] and {r[1] for r in logged} == {"updated"}
        assert all(r[0] == ti.run_id and json.loads(r[2]) for r in logged)
        # OpenLineage: the warehouse table in, the Hilos conversations out (from the query's text: no query run)
        lineage = task.get_openlineage_facets_on_complete(None)
        (table,) = lineage.inputs
        assert table.namespace == f"postgres://127.0.0.1:{warehouse_conn.get_connection('pg_warehouse').port}"
        assert table.name == f"airflow.public.{warehouse.TABLE}"
        assert [(o.namespace, o.name) for o in lineage.outputs] == [
            (f"hilos://{sb.url.split('://')[1]}", "conversations")
        ]
        # the next run reads the same table and finds nothing to send
        again = task.execute({"ti": FakeTI(task_id="sync")})
        assert (again["to_update"], again["unchanged"], again["write_requests"]) == (0, 250, 0)


def test_contacts_from_jsonb_meta_text_arrays_and_meta_columns_are_synced_then_left_alone(
    warehouse_conn, monkeypatch, tmp_path
):
    from airflow_provider_hilos.operators.contacts import ContactSyncOperator

    warehouse_conn.run(
        [
            "DROP TABLE IF EXISTS customers",
            "CREATE TABLE customers (phone text, first_name text, email text, meta jsonb, tags text[], ltv numeric, "
            "owner text)",
        ]
    )
    with HilosSandbox(conversations=60, seed=5, token=TEST_TOKEN) as sb:
        monkeypatch.setenv("AIRFLOW_CONN_HILOS_DEFAULT", sb.connection_json())
        contacts = [sb.contact(cid) for cid in sb.contact_ids()[:50]]
        values = [
            (
                c["phone"].removeprefix("+52") if i % 2 else c["phone"],  # national numbers: default_region MX
                f"Cliente {i}",
                c["email"],
                json.dumps({"plan": "pro", "score": i, "gone": None}),  # a JSON null: that property is not managed
                ["vip", "b2b"] if i % 3 else [],
                None if i % 4 == 0 else f"{i}.00",  # numeric: Decimal('7.00') is Hilos's "7"
                "Ana@Example.com",
            )
            for i, c in enumerate(contacts)
        ]
        values.append(("+52 56 1111 2222", "Nueva", None, json.dumps({"plan": "trial"}), ["lead"], "0", None))
        with warehouse_conn.get_conn() as conn, conn.cursor() as cursor:
            cursor.executemany("INSERT INTO customers VALUES (%s, %s, %s, %s::jsonb, %s, %s, %s)", values)
            conn.commit()

        def task() -> ContactSyncOperator:
            return ContactSyncOperator(
                task_id="contacts",
                sql="SELECT phone, first_name, email, meta, tags, ltv, owner FROM customers",
                sql_conn_id="pg_warehouse",
                column_map={"ltv": "meta.ltv", "owner": "default_assignees"},
                default_region="MX",
                chunk_size=20,
                log_table="hilos_sync_log",
                state_store=str(tmp_path / "state"),
            )

        result = task().execute({"ti": FakeTI(task_id="contacts")})
        assert (result["desired"], result["created"], result["failed"], result["invalid"]) == (51, 1, 0, 0)
        assert result["updated"] == 50
        for i, c in enumerate(contacts):
            held = sb.contact(c["id"])
            assert held["first_name"] == f"Cliente {i}" and held["meta"]["plan"] == "pro"
            assert held["meta"]["score"] == str(i)
            assert held["meta"]["ltv"] == (c["meta"]["ltv"] if i % 4 == 0 else str(i))  # a NULL cell: Hilos's kept
            assert sorted(t["name"] for t in held["tags"]) == (["b2b", "vip"] if i % 3 else [])
            assert [u["id"] for u in held["default_assignees"]] == [1]
        assert sb.contact_by_phone("+525611112222")["first_name"] == "Nueva"
        sb.clear_requests()
        again = task().execute({"ti": FakeTI(task_id="contacts")})
        assert (again["unchanged"], again["write_requests"]) == (51, 0)  # '7.00' and 7 and "7" are one value
        logged = warehouse_conn.get_records("SELECT object, outcome, count(*) FROM hilos_sync_log GROUP BY 1, 2")
        assert sorted(logged) == [("contact", "created", 1), ("contact", "updated", 50)]
