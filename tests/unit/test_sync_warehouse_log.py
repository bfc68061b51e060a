"""The sync log written back to the warehouse: a row per changed, failed, not found or invalid conversation."""

from __future__ import annotations

import json
import sqlite3

import pytest

from airflow_provider_hilos.exceptions import HilosConfigurationError
from airflow_provider_hilos.sync.diff import Action, FieldChange, PlanEntry
from airflow_provider_hilos.sync.warehouse_log import LOG_COLUMNS, LOG_TABLE_DDL, log_rows, write_log

A = "6513270e-269e-4d37-b2a7-4de452e6b438"
B = "7513270e-269e-4d37-b2a7-4de452e6b438"


class SqliteLike:
    """The part of a DbApiHook the log uses, on an in-memory SQLite database."""

    def __init__(self) -> None:
        self.db = sqlite3.connect(":memory:")
        self.calls = 0

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
    rows = hook.db.execute(f"SELECT {', '.join(LOG_COLUMNS)} FROM hilos_sync_log").fetchall()
    assert [(r[2], r[3], r[4]) for r in rows] == [
        (A, "update", "updated"),
        (B, "update", "failed"),
        (None, "invalid", "invalid"),
        (B, "not_found", "not_found"),
    ]
    assert (
        json.loads(rows[0][5]) == {"status": {"from": "NEW", "to": "CLOSED"}} and rows[1][6] == "HTTP 400: Invalid pk"
    )


def test_a_missing_log_table_names_the_ddl():
    with pytest.raises(HilosConfigurationError, match="LOG_TABLE_DDL"):
        write_log(SqliteLike(), "nowhere", log_rows([PlanEntry(A, Action.NOT_FOUND)], {}, run_id="r"))
