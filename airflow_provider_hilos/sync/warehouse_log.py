"""The sync log in the warehouse: one row per conversation a run changed or could not change, inserted in chunks
through the SQL connection's hook (``DbApiHook.insert_rows``), so data teams query a sync's outcomes where their
data is.

The table (create it once; any SQL dialect's text and timestamp types do)::

    CREATE TABLE hilos_sync_log (
        run_id          VARCHAR(250) NOT NULL,  -- the Airflow run
        logged_at       VARCHAR(32)  NOT NULL,  -- ISO 8601, UTC
        conversation_id VARCHAR(36),
        action          VARCHAR(16)  NOT NULL,  -- update, not_found, invalid
        outcome         VARCHAR(16)  NOT NULL,  -- updated, already_applied, failed, not_sent, not_found, invalid
        changes         TEXT,                   -- {"status": {"from": "NEW", "to": "CLOSED"}, ...} as JSON
        error           TEXT                    -- why it failed (never a token)
    );
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from airflow_provider_hilos.exceptions import HilosConfigurationError
from airflow_provider_hilos.sync.diff import Action, PlanEntry
from airflow_provider_hilos.sync.plan import entry_record

#: The table's columns, in order.
LOG_COLUMNS = ("run_id", "logged_at", "conversation_id", "action", "outcome", "changes", "error")
#: Rows inserted per statement batch.
LOG_CHUNK_SIZE = 1_000
#: The DDL of the log table (SQLite, PostgreSQL and most warehouses take it as is).
LOG_TABLE_DDL = """CREATE TABLE {table} (
    run_id VARCHAR(250) NOT NULL,
    logged_at VARCHAR(32) NOT NULL,
    conversation_id VARCHAR(36),
    action VARCHAR(16) NOT NULL,
    outcome VARCHAR(16) NOT NULL,
    changes TEXT,
    error TEXT
)"""
_ERROR_CHARS = 1_000


def log_rows(
    entries: list[PlanEntry], outcomes: Mapping[str, Mapping[str, Any]], *, run_id: str
) -> Iterator[tuple[Any, ...]]:
    """The log's rows: every update with its outcome, every not_found and invalid row."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    for entry in entries:
        if entry.action is Action.UNCHANGED:
            continue
        record = entry_record(entry)
        changes = json.dumps(record["changes"], ensure_ascii=False, sort_keys=True) if "changes" in record else None
        if entry.action is Action.UPDATE:
            outcome = outcomes.get(entry.conversation_id or "", {})
            status = str(outcome.get("outcome") or "not_sent")
            error = outcome.get("error")
        else:
            status, error = entry.action.value, entry.reason or None
        yield (
            run_id,
            now,
            entry.conversation_id,
            entry.action.value,
            status,
            changes,
            None if error is None else str(error)[:_ERROR_CHARS],
        )


def write_log(hook: Any, table: str, rows: Iterator[tuple[Any, ...]]) -> int:
    """Insert ``rows`` into ``table`` through a ``DbApiHook``, ``LOG_CHUNK_SIZE`` at a time; how many.

    :raises HilosConfigurationError: the insert failed (the table is missing, or has other columns).
    """
    written = 0
    chunk: list[tuple[Any, ...]] = []
    try:
        for row in rows:
            chunk.append(row)
            if len(chunk) >= LOG_CHUNK_SIZE:
                hook.insert_rows(table, chunk, target_fields=list(LOG_COLUMNS), commit_every=LOG_CHUNK_SIZE)
                written += len(chunk)
                chunk = []
        if chunk:
            hook.insert_rows(table, chunk, target_fields=list(LOG_COLUMNS), commit_every=LOG_CHUNK_SIZE)
            written += len(chunk)
    except Exception as exc:
        raise HilosConfigurationError(
            f"Hilos sync: the sync log could not be written to {table!r} (log_table) after {written} row(s): "
            f"{type(exc).__name__}; create the table with the DDL in airflow_provider_hilos.sync.warehouse_log "
            f"(LOG_TABLE_DDL: columns {', '.join(LOG_COLUMNS)}), or leave log_table out"
        ) from exc
    return written
