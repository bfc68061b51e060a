"""The sync log in the warehouse: one row per object (conversation, contact) a run changed or could not change,
inserted in chunks through the SQL connection's hook (``DbApiHook.insert_rows``), so data teams query a sync's
outcomes where their data is. One format for every object's sync.

The table (create it once; any SQL dialect's text and timestamp types do)::

    CREATE TABLE hilos_sync_log (
        run_id      VARCHAR(250) NOT NULL,  -- the Airflow run
        logged_at   VARCHAR(32)  NOT NULL,  -- ISO 8601, UTC
        object      VARCHAR(16)  NOT NULL,  -- conversation, contact
        object_key  VARCHAR(64),            -- the conversation's id, the contact's phone (E.164)
        object_id   VARCHAR(36),            -- its id in Hilos, when known (a contact's)
        row_number  INTEGER,                -- its row in the desired state (0: none, e.g. a mirror's delete)
        action      VARCHAR(16)  NOT NULL,  -- update, create, delete, not_found, invalid, unreadable
        outcome     VARCHAR(16)  NOT NULL,  -- updated, created, deleted, already_applied, failed, not_sent,
                                            -- unknown, not_found, invalid, unreadable
        changes     TEXT,                   -- {"status": {"from": "NEW", "to": "CLOSED"}, ...} as JSON
        error       TEXT,                   -- why it failed (never a token)
        approved_by VARCHAR(250)            -- who approved the plan, when it waited for approval
    );

No row is lost: a run writes the rows it will log into its state folder before it sends anything (the *pending*
log), and the outcome of every update next to them as it arrives; the rows leave the pending log only once the
warehouse took them. Rows the warehouse refused (busy, a permission), or of a run whose worker died, are written
first by the next run or retry of the sync (an update whose outcome never arrived is logged ``unknown``).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import IO, Any

from airflow_provider_hilos.exceptions import HilosConfigurationError, HilosSyncLogError
from airflow_provider_hilos.storage import AtomicText, StoragePath, is_local, local_path
from airflow_provider_hilos.sync.diff import Action, PlanEntry
from airflow_provider_hilos.sync.plan import entry_record

#: The table's columns, in order.
LOG_COLUMNS = (
    "run_id",
    "logged_at",
    "object",
    "object_key",
    "object_id",
    "row_number",
    "action",
    "outcome",
    "changes",
    "error",
    "approved_by",
)
#: Rows inserted per statement batch.
LOG_CHUNK_SIZE = 1_000
#: The DDL of the log table (SQLite, PostgreSQL and most warehouses take it as is).
LOG_TABLE_DDL = """CREATE TABLE {table} (
    run_id VARCHAR(250) NOT NULL,
    logged_at VARCHAR(32) NOT NULL,
    object VARCHAR(16) NOT NULL,
    object_key VARCHAR(64),
    object_id VARCHAR(36),
    row_number INTEGER,
    action VARCHAR(16) NOT NULL,
    outcome VARCHAR(16) NOT NULL,
    changes TEXT,
    error TEXT,
    approved_by VARCHAR(250)
)"""
_ERROR_CHARS = 1_000

#: One part of a table name: a plain identifier, or one quoted as SQL dialects quote them (``"..."``, `` `...` ``,
#: ``[...]``), without its quote character inside.
_NAME_PART = r'(?:[A-Za-z_][A-Za-z0-9_$]{0,127}|"[^"\x00]{1,128}"|`[^`\x00]{1,128}`|\[[^\]\x00]{1,128}\])'
_TABLE_NAME = re.compile(rf"{_NAME_PART}(?:\.{_NAME_PART}){{0,2}}")


def table_name_problem(name: Any) -> str | None:
    """What is wrong with ``log_table`` as a table name, or ``None``. The name goes into the SQL of the insert, so
    it must be an identifier: ``table``, ``schema.table`` or ``database.schema.table``, each part plain (letters,
    digits, ``_``) or quoted as the dialect quotes (``"My Table"``)."""
    if not isinstance(name, str) or not _TABLE_NAME.fullmatch(name):
        return (
            "must be a table name: table, schema.table or database.schema.table, each part letters, digits and _ "
            '(or quoted, e.g. "My Table"); it goes into the SQL of the insert as it is'
        )
    return None


def check_log_table(hook: Any, table: str) -> None:
    """Find a missing table or missing columns before the first request (one cheap query that reads no row).

    :raises HilosConfigurationError: the name is not a table name, or the table is missing or lacks columns.
    """
    if problem := table_name_problem(table):
        raise HilosConfigurationError(f"Hilos sync: log_table {problem}")
    try:
        with _closing_cursor(hook) as cursor:
            cursor.execute(f"SELECT * FROM {table} WHERE 1 = 0")
            have = {str(column[0]).lower() for column in cursor.description or []}
    except HilosConfigurationError:
        raise
    except Exception as exc:
        raise HilosConfigurationError(
            f"Hilos sync: the sync log table {table!r} (log_table) can't be read ({type(exc).__name__}: "
            f"{_first_line(exc)}); create it with the DDL in airflow_provider_hilos.sync.warehouse_log "
            "(LOG_TABLE_DDL), or leave log_table out. Nothing was sent"
        ) from None
    missing = [column for column in LOG_COLUMNS if column not in have]
    if missing:
        older = "conversation_id" in have and "object_key" not in have
        raise HilosConfigurationError(
            f"Hilos sync: the sync log table {table!r} (log_table) lacks the column(s) {', '.join(missing)}; its "
            f"columns must include {', '.join(LOG_COLUMNS)} (LOG_TABLE_DDL in airflow_provider_hilos.sync."
            "warehouse_log)"
            + (
                ". It has the layout of an earlier release (conversation_id): create the table anew, or add the "
                "columns (object and object_key take what conversation_id held)"
                if older
                else ""
            )
            + ". Nothing was sent"
        )


class _closing_cursor:
    def __init__(self, hook: Any) -> None:
        self.hook = hook

    def __enter__(self) -> Any:
        self.conn = self.hook.get_conn()
        self.cursor = self.conn.cursor()
        return self.cursor

    def __exit__(self, *exc: object) -> None:
        try:
            self.cursor.close()
        finally:
            self.conn.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text[:300]


#: The actions whose outcome the apply decides (until it arrives: ``not_sent``).
_WRITES = (Action.UPDATE.value, Action.CREATE.value, Action.DELETE.value)


def planned_rows(
    entries: Iterable[PlanEntry | Mapping[str, Any]],
    *,
    object_name: str = "conversation",
    key_field: str = "conversation_id",
    id_field: str | None = None,
) -> Iterator[dict[str, Any]]:
    """The log rows of a plan, before any outcome: every write (outcome ``not_sent`` until one arrives), every
    not_found, invalid and unreadable entry; unchanged entries are not logged.

    :param entries: plan entries, or their records (as the plan file has them).
    """
    for entry in entries:
        record = entry_record(entry, key_field, id_field) if isinstance(entry, PlanEntry) else entry
        action = record["action"]
        if action == Action.UNCHANGED.value:
            continue
        changes = json.dumps(record["changes"], ensure_ascii=False, sort_keys=True) if "changes" in record else None
        if action in _WRITES:
            outcome, error = "not_sent", None
        else:
            outcome, error = action, record.get("reason") or None
        yield {
            "object": object_name,
            "key": record.get(key_field),
            "object_id": record.get(id_field) if id_field else record.get(key_field),
            "row": int(record.get("row") or 0),
            "action": action,
            "outcome": outcome,
            "changes": changes,
            "error": error,
        }


def as_table_rows(
    rows: Iterable[Mapping[str, Any]],
    outcomes: Mapping[str, Mapping[str, Any]],
    *,
    run_id: str,
    logged_at: str,
    approved_by: str | None = None,
) -> Iterator[tuple[Any, ...]]:
    """Rows in the table's column order, each write with its outcome (``not_sent`` when it was never sent)."""
    for row in rows:
        outcome, error = row["outcome"], row.get("error")
        if row["action"] in _WRITES:
            got = outcomes.get(row.get("key") or "")
            if got is not None:
                outcome, error = str(got.get("outcome") or "not_sent"), got.get("error")
        yield (
            run_id,
            logged_at,
            row.get("object", "conversation"),
            row.get("key"),
            row.get("object_id"),
            row.get("row", 0),
            row["action"],
            outcome,
            row.get("changes"),
            None if error is None else str(error)[:_ERROR_CHARS],
            approved_by,
        )


def log_rows(
    entries: list[PlanEntry], outcomes: Mapping[str, Mapping[str, Any]], *, run_id: str
) -> Iterator[tuple[Any, ...]]:
    """The log's rows of a conversation plan and its outcomes (by conversation id): every update with its outcome,
    every not_found and invalid row."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    return as_table_rows(planned_rows(entries), outcomes, run_id=run_id, logged_at=now)


def write_log(hook: Any, table: str, rows: Iterable[tuple[Any, ...]], *, on_chunk: Any = None) -> int:
    """Insert ``rows`` into ``table`` through a ``DbApiHook``, ``LOG_CHUNK_SIZE`` at a time (each chunk its own
    transaction); how many.

    :param on_chunk: told how many rows are written so far, after each chunk (the pending log keeps its place).
    :raises HilosSyncLogError: an insert failed (retryable: what was not written stays pending).
    """
    written = 0
    chunk: list[tuple[Any, ...]] = []

    def insert() -> None:
        nonlocal written, chunk
        hook.insert_rows(table, chunk, target_fields=list(LOG_COLUMNS), commit_every=LOG_CHUNK_SIZE)
        written += len(chunk)
        chunk = []
        if on_chunk is not None:
            on_chunk(written)

    try:
        for row in rows:
            chunk.append(row)
            if len(chunk) >= LOG_CHUNK_SIZE:
                insert()
        if chunk:
            insert()
    except Exception as exc:
        raise HilosSyncLogError(
            f"Hilos sync: the sync log could not be written to {table!r} (log_table) after {written} row(s) "
            f"({type(exc).__name__}: {_first_line(exc)}); the rows not written are kept with the sync's state and "
            "written first by the next run or retry",
            pending=-1,
        ) from exc
    return written


# -- the pending log: rows not yet in the warehouse, kept in the state folder ----------------------------------

PENDING_FORMAT = "hilos-sync-log-pending"
PENDING_VERSION = 1
_PENDING = re.compile(r"log-pending-(?P<name>[0-9a-f]{12}-[0-9a-f]{8})\.jsonl")


class PendingLog:
    """The log rows of one run not yet written to the warehouse, in the sync's state folder.

    ``log-pending-<run>-<token>.jsonl`` holds the planned rows (a header, then one row per line), written whole
    before the first request; ``log-outcomes-<run>-<token>.jsonl`` gets one line per update outcome as it arrives
    (flushed on a local disk; on an object store, written when the apply ends); ``log-written-...`` how many rows
    the warehouse took (so a retry after a half-written log does not insert them twice).

    :param folder: the sync task's state folder.
    :param run_id: the run whose rows they are.
    :param name: the journal's name (a new one for a new journal; read from the file for an existing one).
    :param key_field: the key's name in the outcome records the batch engine reports (``conversation_id``,
        ``phone``).
    """

    def __init__(
        self, folder: StoragePath, run_id: str, name: str | None = None, *, key_field: str = "conversation_id"
    ) -> None:
        self.folder = folder
        self.key_field = key_field
        self.approved_by: str | None = None
        self.run_id = run_id
        self.name = name or f"{hashlib.sha256(run_id.encode()).hexdigest()[:12]}-{uuid.uuid4().hex[:8]}"
        self.rows_path = folder / f"log-pending-{self.name}.jsonl"
        self.outcomes_path = folder / f"log-outcomes-{self.name}.jsonl"
        self.written_path = folder / f"log-written-{self.name}.txt"
        self.logged_at = datetime.now(UTC).isoformat(timespec="seconds")
        self.count = 0
        self._outcomes: dict[str, dict[str, Any]] = {}
        self._stream: IO[str] | None = None

    # -- writing --

    def save(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Write the planned rows (atomically); how many."""
        rows = list(rows)
        target = AtomicText(self.rows_path)
        try:
            handle = target.open()
            header = {
                "format": PENDING_FORMAT,
                "version": PENDING_VERSION,
                "run_id": self.run_id,
                "logged_at": self.logged_at,
                "rows": len(rows),
                "approved_by": self.approved_by,
            }
            handle.write(json.dumps(header, sort_keys=True) + "\n")
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
            target.commit()
        except OSError as exc:
            raise HilosConfigurationError(
                f"Hilos sync: the pending sync log {self.rows_path} can't be written "
                f"({exc.strerror or type(exc).__name__}); check state_store. Nothing was sent"
            ) from None
        finally:
            target.abort()
        self.count = len(rows)
        return self.count

    def outcome(self, record: Mapping[str, Any]) -> None:
        """A write's outcome arrived (from the batch engine's report)."""
        cid = record.get(self.key_field)
        if not isinstance(cid, str):
            return
        kept = {"key": cid, "outcome": record.get("outcome"), "error": record.get("error")}
        self._outcomes[cid] = kept
        if not is_local(self.folder):
            return  # an object store shows a file only once it is closed: written by close_outcomes
        try:
            if self._stream is None:
                self._stream = open(local_path(self.outcomes_path), "a", encoding="utf-8")  # noqa: SIM115
            self._stream.write(json.dumps(kept, ensure_ascii=False) + "\n")
            self._stream.flush()
        except OSError:
            self._stream = None  # the outcomes are still in memory; the rows are logged "unknown" only if we die

    def close_outcomes(self) -> None:
        """The apply ended: every outcome is on disk."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        if not is_local(self.folder) and self._outcomes:
            try:
                with self.outcomes_path.open("w", encoding="utf-8") as handle:
                    for kept in self._outcomes.values():
                        handle.write(json.dumps(kept, ensure_ascii=False) + "\n")
            except OSError:
                pass

    # -- reading back and writing to the warehouse --

    @classmethod
    def found_in(cls, folder: StoragePath) -> list[PendingLog]:
        """The journals an earlier run or try left in ``folder`` (oldest first)."""
        try:
            if not folder.exists():
                return []
            names = sorted(part.name for part in folder.iterdir())
        except OSError:
            return []
        journals = []
        for name in names:
            if match := _PENDING.fullmatch(name):
                journal = cls(folder, run_id="", name=match["name"])
                if journal._read_header():
                    journals.append(journal)
        return journals

    def _read_header(self) -> bool:
        try:
            with self.rows_path.open("r", encoding="utf-8") as handle:
                header = json.loads(handle.readline() or "{}")
        except (OSError, ValueError):
            return False
        if not isinstance(header, dict) or header.get("format") != PENDING_FORMAT:
            return False
        self.run_id = str(header.get("run_id") or "")
        self.logged_at = str(header.get("logged_at") or self.logged_at)
        approved = header.get("approved_by")
        self.approved_by = approved if isinstance(approved, str) else None
        self.count = int(header.get("rows") or 0)
        return True

    def _rows(self) -> Iterator[dict[str, Any]]:
        with self.rows_path.open("r", encoding="utf-8") as handle:
            handle.readline()
            while line := handle.readline():
                if line.strip():
                    yield json.loads(line)

    def _read_outcomes(self) -> dict[str, dict[str, Any]]:
        outcomes = dict(self._outcomes)
        try:
            if self.outcomes_path.exists():
                with self.outcomes_path.open("r", encoding="utf-8") as handle:
                    while line := handle.readline():
                        if line.endswith("\n"):  # a line cut by a crash is ignored
                            record = json.loads(line)
                            outcomes[record["key"]] = record
        except (OSError, ValueError, KeyError):
            pass
        return outcomes

    def _written(self) -> int:
        try:
            if self.written_path.exists():
                with self.written_path.open("r", encoding="utf-8") as handle:
                    return int(handle.read().strip() or 0)
        except (OSError, ValueError):
            pass
        return 0

    def table_rows(self, *, stopped: bool) -> Iterator[tuple[Any, ...]]:
        """The rows as the table takes them, after those already written; ``stopped``: the run that planned them
        ended without an outcome for some updates (it died): those are ``unknown``."""
        outcomes = self._read_outcomes()
        rows: Iterable[dict[str, Any]] = self._rows()
        if stopped:
            rows = (_unknown_if_unsent(row, outcomes) for row in rows)
        skip = self._written()
        table = as_table_rows(
            rows, outcomes, run_id=self.run_id, logged_at=self.logged_at, approved_by=self.approved_by
        )
        for number, row in enumerate(table):
            if number >= skip:
                yield row

    def pending(self) -> int:
        """Rows not written yet."""
        return max(0, self.count - self._written())

    def write_to(self, hook: Any, table: str, *, stopped: bool = False) -> int:
        """Insert the rows not written yet into ``table``; then forget the journal. How many were written.

        :raises HilosSyncLogError: the insert failed (the journal stays, with its place).
        """
        if self._stream is not None:
            self.close_outcomes()
        start = self._written()
        try:
            written = write_log(
                hook, table, self.table_rows(stopped=stopped), on_chunk=lambda n: self._mark_written(start + n)
            )
        except HilosSyncLogError as exc:
            exc.pending = self.pending()
            raise
        self.clear()
        return written

    def _mark_written(self, count: int) -> None:
        try:
            with self.written_path.open("w", encoding="utf-8") as handle:
                handle.write(str(count))
        except OSError:
            pass

    def clear(self) -> None:
        """Remove the journal's files (every row is in the warehouse)."""
        for path in (self.rows_path, self.outcomes_path, self.written_path):
            try:
                path.unlink()
            except (FileNotFoundError, OSError):
                pass


def _unknown_if_unsent(row: dict[str, Any], outcomes: Mapping[str, Any]) -> dict[str, Any]:
    if row["action"] in _WRITES and row.get("key") not in outcomes:
        return {
            **row,
            "outcome": "unknown",
            "error": "the run stopped before this write's outcome was known (its worker died or was killed); the "
            "next run compares it again",
        }
    return row


def flush_pending(folder: StoragePath, hook: Any, table: str, log: Any) -> int:
    """Write the rows earlier runs or tries left pending (before this run sends anything); how many.

    :raises HilosSyncLogError: the warehouse still refuses them (nothing of this run was sent).
    """
    total = 0
    for journal in PendingLog.found_in(folder):
        started = time.monotonic()
        count = journal.write_to(hook, table, stopped=True)
        total += count
        log.info(
            "Hilos sync: wrote %d sync log row(s) that run %s left pending, to %s (%.1f s)",
            count,
            journal.run_id,
            table,
            time.monotonic() - started,
        )
    return total


def pending_count(folder: StoragePath) -> int:
    """How many log rows earlier runs left pending in ``folder``."""
    return sum(journal.pending() for journal in PendingLog.found_in(folder))
