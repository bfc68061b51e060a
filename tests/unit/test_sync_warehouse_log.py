"""The sync log written back to the warehouse: a row per changed, failed, not found or invalid conversation."""

from __future__ import annotations

import json
import sqlite3

import pytest

from airflow_provider_hilos.exceptions import HilosConfigurationError, HilosSyncLogError
from airflow_provider_hilos.storage import storage_path
from airflow_provider_hilos.sync.diff import Action, FieldChange, PlanEntry
from airflow_provider_hilos.sync.warehouse_log import (
    LOG_COLUMNS,
    LOG_TABLE_DDL,
    PendingLog,
    check_log_table,
    flush_pending,
    log_rows,
    pending_count,
    planned_rows,
    table_name_problem,
    write_log,
)

A = "6513270e-269e-4d37-b2a7-4de452e6b438"
B = "7513270e-269e-4d37-b2a7-4de452e6b438"


class SqliteLike:
    """The part of a DbApiHook the log uses, on an in-memory SQLite database."""

    def __init__(self) -> None:
        self.db = sqlite3.connect(":memory:", check_same_thread=False)
        self.calls = 0

    def get_conn(self):
        db = self.db

        class Conn:
            def cursor(self):
                return db.cursor()

            def close(self):
                pass

        return Conn()

    def insert_rows(self, table, rows, target_fields, commit_every):
        self.calls += 1
        marks = ", ".join("?" for _ in target_fields)
        self.db.executemany(f"INSERT INTO {table} ({', '.join(target_fields)}) VALUES ({marks})", rows)


def test_changed_failed_not_found_and_invalid_rows_are_logged_in_chunks(monkeypatch):
    monkeypatch.setattr("airflow_provider_hilos.sync.warehouse_log.LOG_CHUNK_SIZE", 2)
    hook = SqliteLike()
    hook.db.execute(LOG_TABLE_DDL.format(table="hilos_sync_log"))
    entries = [
        PlanEntry(A, Action.UPDATE, (FieldChange("status", "NEW", "CLOSED"),)),
        PlanEntry(B, Action.UPDATE, (FieldChange("status", "NEW", "CLOSED"),)),
        PlanEntry(A, Action.UNCHANGED),
        PlanEntry(None, Action.INVALID, reason="row 4: conversation_id: is missing"),
        PlanEntry(B, Action.NOT_FOUND),
    ]
    outcomes = {A: {"outcome": "updated"}, B: {"outcome": "failed", "error": "HTTP 400: Invalid pk"}}
    assert write_log(hook, "hilos_sync_log", log_rows(entries, outcomes, run_id="r1")) == 4
    assert hook.calls == 2
    rows = hook.db.execute("SELECT object_key, action, outcome, changes, error, object FROM hilos_sync_log").fetchall()
    assert {r[5] for r in rows} == {"conversation"} and hook.db.execute(
        f"SELECT {', '.join(LOG_COLUMNS)} FROM hilos_sync_log"
    ).fetchall()
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (A, "update", "updated"),
        (B, "update", "failed"),
        (None, "invalid", "invalid"),
        (B, "not_found", "not_found"),
    ]
    assert (
        json.loads(rows[0][3]) == {"status": {"from": "NEW", "to": "CLOSED"}} and rows[1][4] == "HTTP 400: Invalid pk"
    )


def test_a_failed_insert_is_a_retryable_error_naming_the_table():
    with pytest.raises(HilosSyncLogError, match="could not be written to 'nowhere'") as caught:
        write_log(SqliteLike(), "nowhere", log_rows([PlanEntry(A, Action.NOT_FOUND)], {}, run_id="r"))
    assert not isinstance(caught.value, HilosConfigurationError)  # the warehouse may take them later: a retry helps


# -- issue 27: the log's table is an identifier, checked first; a row is never lost ---------------------------


@pytest.mark.parametrize(
    "name",
    [
        "hilos_sync_log (run_id) SELECT 'INJECTED', sql FROM sqlite_master --",
        "log; DROP TABLE crm",
        "a.b.c.d",
        "",
        "log table",
        '"unclosed',
        '"a"b"',
    ],
)
def test_a_log_table_that_is_not_a_table_name_is_refused(name):
    assert table_name_problem(name) is not None
    with pytest.raises(HilosConfigurationError, match="must be a table name"):
        check_log_table(SqliteLike(), name)


@pytest.mark.parametrize("name", ["hilos_sync_log", "crm.hilos_sync_log", "db.crm.log_2", '"My Schema"."Sync Log"'])
def test_dotted_and_quoted_table_names_are_table_names(name):
    assert table_name_problem(name) is None


def test_a_missing_table_or_column_is_found_by_one_query_that_reads_nothing():
    hook = SqliteLike()
    with pytest.raises(
        HilosConfigurationError, match=r"'hilos_sync_log' .* can't be read .*no such table.*LOG_TABLE_DDL"
    ):
        check_log_table(hook, "hilos_sync_log")
    hook.db.execute("CREATE TABLE hilos_sync_log (run_id TEXT, logged_at TEXT, conversation_id TEXT, action TEXT)")
    with pytest.raises(HilosConfigurationError, match=r"lacks the column.s. object, object_key.*an earlier release"):
        check_log_table(hook, "hilos_sync_log")
    hook.db.execute("DROP TABLE hilos_sync_log")
    hook.db.execute(LOG_TABLE_DDL.format(table="hilos_sync_log"))
    check_log_table(hook, "hilos_sync_log")


class Flaky(SqliteLike):
    """Refuses inserts while ``down``, and counts the rows it took."""

    def __init__(self) -> None:
        super().__init__()
        self.db.execute(LOG_TABLE_DDL.format(table="log"))
        self.down = False

    def insert_rows(self, table, rows, target_fields, commit_every):
        if self.down:
            raise RuntimeError("database is locked")
        super().insert_rows(table, rows, target_fields, commit_every)

    def logged(self):
        return self.db.execute("SELECT object_key, outcome, error FROM log ORDER BY rowid").fetchall()


def planned(n: int) -> list[dict]:
    return list(planned_rows(PlanEntry(f"{i:08d}-269e-4d37-b2a7-4de452e6b438", Action.UPDATE, ()) for i in range(n)))


def test_rows_the_warehouse_refused_are_written_by_the_next_run_exactly_once(tmp_path, monkeypatch):
    monkeypatch.setattr("airflow_provider_hilos.sync.warehouse_log.LOG_CHUNK_SIZE", 3)
    folder = storage_path(str(tmp_path / "state"))
    folder.mkdir(parents=True)
    hook = Flaky()
    journal = PendingLog(folder, "run-1")
    rows = planned(7)
    journal.save(rows)
    for row in rows:
        journal.outcome({"conversation_id": row["key"], "outcome": "updated"})
    journal.close_outcomes()
    calls = [0]
    real = Flaky.insert_rows

    def second_chunk_fails(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 2:
            raise RuntimeError("database is locked")
        real(self, *args, **kwargs)

    monkeypatch.setattr(Flaky, "insert_rows", second_chunk_fails)
    with pytest.raises(HilosSyncLogError, match="database is locked") as caught:
        journal.write_to(hook, "log")
    assert caught.value.pending == 4 and len(hook.logged()) == 3  # the first chunk is in, and known to be
    assert pending_count(folder) == 4
    monkeypatch.setattr(Flaky, "insert_rows", real)
    assert flush_pending(folder, hook, "log", logging_log()) == 4  # the next run, first
    logged = hook.logged()
    assert len(logged) == 7 and len({row[0] for row in logged}) == 7  # every row once
    assert {row[1] for row in logged} == {"updated"} and pending_count(folder) == 0
    assert [p.name for p in folder.iterdir()] == []


def test_the_rows_of_a_run_whose_worker_died_are_written_with_what_is_known(tmp_path):
    folder = storage_path(str(tmp_path / "state"))
    folder.mkdir(parents=True)
    journal = PendingLog(folder, "run-killed")
    rows = planned(3) + list(planned_rows([PlanEntry(A, Action.NOT_FOUND)]))
    journal.save(rows)
    journal.outcome({"conversation_id": rows[0]["key"], "outcome": "updated"})
    journal.outcome({"conversation_id": rows[1]["key"], "outcome": "failed", "error": "HTTP 400"})
    # kill -9 here: the third update's outcome never arrived, and nothing was written to the warehouse
    hook = Flaky()
    assert flush_pending(folder, hook, "log", logging_log()) == 4
    assert hook.logged() == [
        (rows[0]["key"], "updated", None),
        (rows[1]["key"], "failed", "HTTP 400"),
        (rows[2]["key"], "unknown", hook.logged()[2][2]),
        (A, "not_found", None),
    ]
    assert "its worker died" in hook.logged()[2][2]


def logging_log():
    import logging

    return logging.getLogger("test-sync-log")
