"""The work of one sync run, in an embedded SQLite database in the task's temporary folder: the desired rows, what
the listing showed, the last run's state, the plan and the outcomes, joined by key, so that a run's memory does not
grow with the account (a million desired rows and a million listed ones are rows on disk, not Python objects).

The standard library's :mod:`sqlite3`, with durability off (the file is thrown away when the run ends: the state
between runs is the state file, written atomically): no journal, no fsync, a bounded page cache. Field values are
kept as :mod:`marshal` blobs of the normal form (fast to write and read back, and only this run reads them).

Tables, each keyed by the object's key (a conversation's id, a contact's E.164 phone):

* ``rows``: every desired row, by its number in the source (``n``), its key and fields; a key in several rows is a
  duplicate (all its rows invalid);
* ``previous``: the last run's snapshot (what it applied, failed keys, the Hilos id);
* ``listed``: what the listing showed for each key it showed (the latest copy wins); a key of no interest has no
  fields (it is kept only to tell a new row from a repeat), nor has a desired key its copy showed already as desired
  (``same``: it is planned unchanged without being read again);
* ``plan``: what the plan does with each key (its entry as the plan file has it, and the write to send); a desired
  key without a row here is unchanged (most keys of a day 2: they are not written at all);
* ``outcome``: what the apply did with each key.
"""

from __future__ import annotations

import marshal
import os
import shutil
import socket
import sqlite3
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from airflow_provider_hilos.contacts import ABSENT
from airflow_provider_hilos.conversations import UNKNOWN

#: Rows written per statement batch.
CHUNK = 2_000
#: How many keys one ``IN (...)`` asks for (under SQLite's limit of bound variables).
IN_CHUNK = 900
#: What ``listed.id`` holds when the Hilos id is the key itself (a conversation's): the id is not kept twice (a
#: shorter row in a table of a million random keys); the queries read it back as the key (:data:`_LISTED_ID`).
_ID_IS_KEY = ""
_LISTED_ID = "CASE l.id WHEN '' THEN l.k ELSE l.id END"
_UNKNOWN_MARK = ("\x00unknown",)
_ABSENT_MARK = ("\x00absent",)


def pack(fields: Mapping[str, Any] | None) -> bytes | None:
    """A fields dict (normal form, with ``UNKNOWN`` / ``ABSENT``) as a blob."""
    if fields is None:
        return None
    return marshal.dumps(
        {k: _UNKNOWN_MARK if v is UNKNOWN else _ABSENT_MARK if v is ABSENT else v for k, v in fields.items()}
    )


def unpack(blob: bytes | None) -> dict[str, Any] | None:
    """A blob back as the fields dict (``None`` stays ``None``)."""
    if blob is None:
        return None
    fields = marshal.loads(blob)
    for name, value in fields.items():
        if value == _UNKNOWN_MARK:
            fields[name] = UNKNOWN
        elif value == _ABSENT_MARK:
            fields[name] = ABSENT
    return fields  # type: ignore[no-any-return]


#: A work folder's name: the host and process that made it (so a later run can tell one left by a killed worker).
_PREFIX = "hilos-sync-work-"
#: A folder of a gone process is removed only once it is this old (seconds): a process of the same host name in
#: another pid namespace (two containers sharing a /tmp) may use the same pid.
LEFT_BEHIND_AFTER = 6 * 3600.0


def _host() -> str:
    return "".join(c if c.isalnum() else "_" for c in socket.gethostname())[:40] or "host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process: alive
    return True


def sweep_left_behind(folder: str | None = None, *, older_than: float = LEFT_BEHIND_AFTER) -> list[str]:
    """Remove the work folders that runs killed on this host left behind (``kill -9``, the OOM killer: their
    ``close`` never ran): made by this host, by a process that is gone, and untouched for ``older_than`` seconds.
    The folders removed.

    :param folder: where work folders are made (default: the system's temporary folder).
    """
    root = folder or tempfile.gettempdir()
    host, now = _host(), time.time()
    removed: list[str] = []
    try:
        names = os.listdir(root)
    except OSError:
        return removed
    for name in names:
        if not name.startswith(f"{_PREFIX}{host}-"):
            continue
        pid_text = name[len(_PREFIX) + len(host) + 1 :].split("-", 1)[0]
        path = os.path.join(root, name)
        try:
            old = now - os.path.getmtime(path) > older_than
        except OSError:
            continue
        if pid_text.isdigit() and old and not _alive(int(pid_text)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


class WorkStore:
    """The work database of one run (a temporary folder, removed by :meth:`close`; one left by a killed run is
    removed by a later run on the same host, :func:`sweep_left_behind`).

    :param folder: where to make the temporary folder (default: the system's temporary folder).
    """

    def __init__(self, folder: str | None = None) -> None:
        self.swept = sweep_left_behind(folder)
        self.folder = tempfile.mkdtemp(prefix=f"{_PREFIX}{_host()}-{os.getpid()}-", dir=folder)
        self.path = os.path.join(self.folder, "work.sqlite")
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        for pragma in (
            "journal_mode = OFF",
            "synchronous = OFF",
            "temp_store = FILE",
            "cache_size = -16000",  # 16 MB of page cache, whatever the size of the run
            "locking_mode = EXCLUSIVE",
        ):
            self.db.execute(f"PRAGMA {pragma}")
        self.db.executescript(
            """
            CREATE TABLE rows (n INTEGER PRIMARY KEY, k TEXT NOT NULL, f BLOB NOT NULL);
            CREATE TABLE dup (k TEXT PRIMARY KEY) WITHOUT ROWID;
            CREATE TABLE previous (k TEXT PRIMARY KEY, id TEXT, f BLOB, failed INTEGER NOT NULL DEFAULT 0,
                                   extra BLOB) WITHOUT ROWID;
            CREATE TABLE listed (k TEXT PRIMARY KEY, id TEXT, f BLOB, seq INTEGER NOT NULL,
                                 same INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
            CREATE TABLE plan (k TEXT PRIMARY KEY, n INTEGER, action TEXT NOT NULL, drift INTEGER NOT NULL,
                               entry TEXT, w BLOB, h TEXT) WITHOUT ROWID;
            CREATE TABLE approved (k TEXT PRIMARY KEY, h TEXT NOT NULL) WITHOUT ROWID;
            CREATE TABLE outcome (k TEXT PRIMARY KEY, outcome TEXT NOT NULL, error TEXT) WITHOUT ROWID;
            """
        )
        self._seq = 0
        self._keys_indexed = False
        self._has_previous = False
        self._planned = False

    def close(self) -> None:
        """Close the database and remove its folder."""
        try:
            self.db.close()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Hold the writes in one transaction (committed at the end, also when the work inside fails: the database
        then holds what it would have held without one). Each statement outside a transaction commits on its own,
        and a commit writes every page it changed: a page of listed rows changes about as many of the listing's
        B-tree pages as it has rows, a million random keys over the run. Inside another transaction: that one.
        """
        if self.db.in_transaction:
            yield
            return
        self.db.execute("BEGIN")
        try:
            yield
        finally:
            self.db.execute("COMMIT")

    def __enter__(self) -> WorkStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the desired rows --

    def add_desired(self, rows: Sequence[tuple[int, str, Mapping[str, Any]]]) -> None:
        """Keep desired rows: ``(number, key, fields)``."""
        self.db.executemany("INSERT INTO rows VALUES (?, ?, ?)", [(n, k, pack(f)) for n, k, f in rows])

    def finish_desired(self) -> list[tuple[str, list[int]]]:
        """Index the keys; the keys in several rows (their row numbers), which are then left out of the plan."""
        self.db.execute("CREATE INDEX rows_k ON rows (k)")
        self._keys_indexed = True
        repeated = self.db.execute(
            "SELECT k, group_concat(n) FROM rows GROUP BY k HAVING count(*) > 1 ORDER BY min(n)"
        ).fetchall()
        self.db.executemany("INSERT INTO dup VALUES (?)", [(k,) for k, _ in repeated])
        return [(k, sorted(int(n) for n in numbers.split(","))) for k, numbers in repeated]

    def desired_count(self) -> int:
        """Desired keys that are not duplicates."""
        row = self.db.execute("SELECT count(*) FROM rows WHERE k NOT IN (SELECT k FROM dup)").fetchone()
        return int(row[0])

    def managed_field_count(self) -> int:
        """Desired rows (not duplicates) that manage at least one field."""
        empty = marshal.dumps({})
        row = self.db.execute(
            "SELECT count(*) FROM rows WHERE k NOT IN (SELECT k FROM dup) AND f != ?", (empty,)
        ).fetchone()
        return int(row[0])

    # -- the last run's state --

    def add_previous(self, rows: Iterable[tuple[str, str | None, Mapping[str, Any] | None, bool]]) -> int:
        """Keep the last run's snapshot: ``(key, Hilos id, fields, failed)``; how many."""
        count = 0
        chunk: list[tuple[Any, ...]] = []
        for key, oid, fields, failed in rows:
            chunk.append((key, oid, pack(fields), int(failed)))
            if len(chunk) >= CHUNK:
                count += self._insert_previous(chunk)
                chunk = []
        if chunk:
            count += self._insert_previous(chunk)
        return count

    def _insert_previous(self, chunk: list[tuple[Any, ...]]) -> int:
        self.db.executemany("INSERT OR REPLACE INTO previous (k, id, f, failed) VALUES (?, ?, ?, ?)", chunk)
        self._has_previous = True
        return len(chunk)

    def previous_count(self) -> tuple[int, int]:
        """Keys in the last run's snapshot, and how many of them failed."""
        total, failed = self.db.execute("SELECT count(*), coalesce(sum(failed), 0) FROM previous").fetchone()
        return int(total), int(failed)

    # -- the listing --

    def interesting(self, keys: Sequence[str]) -> tuple[set[str], set[str], set[str]]:
        """Of ``keys`` (one page's): those desired, those in the last snapshot, and those listed before (repeats)
        (:meth:`of_interest` without the fields)."""
        desired, previous, before = self.of_interest(keys)
        return set(desired), set(previous), before

    def of_interest(
        self, keys: Sequence[str]
    ) -> tuple[dict[str, bytes], dict[str, tuple[bytes | None, bool]], set[str]]:
        """Of ``keys`` (one page's): the desired ones with their fields as kept (:func:`unpack` reads them), those in
        the last snapshot with theirs and whether they failed, and those listed before (repeats)."""
        desired: dict[str, bytes] = {}
        previous: dict[str, tuple[bytes | None, bool]] = {}
        before: set[str] = set()
        for start in range(0, len(keys), IN_CHUNK):
            part = list(keys[start : start + IN_CHUNK])
            marks = ",".join("?" * len(part))
            desired.update(self.db.execute(f"SELECT k, f FROM rows WHERE k IN ({marks})", part))
            if self._has_previous:
                for k, f, failed in self.db.execute(f"SELECT k, f, failed FROM previous WHERE k IN ({marks})", part):
                    previous[k] = (f, bool(failed))
            before.update(k for (k,) in self.db.execute(f"SELECT k FROM listed WHERE k IN ({marks})", part))
        return desired, previous, before

    def add_listed(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """What the listing showed: ``(key, Hilos id, fields or None for a key of no interest)``, and optionally
        ``same`` (1: a desired key already as desired, 2: the same, and differing from the last snapshot; its fields
        are not kept); a later copy replaces an earlier one."""
        batch = []
        for key, oid, fields, *rest in rows:
            self._seq += 1
            same = rest[0] if rest else 0
            batch.append((key, _ID_IS_KEY if oid == key else oid, None if same else pack(fields), self._seq, same))
        self.db.executemany(
            "INSERT INTO listed VALUES (?, ?, ?, ?, ?) ON CONFLICT (k) DO UPDATE SET id = excluded.id, "
            "f = excluded.f, seq = excluded.seq, same = excluded.same",
            batch,
        )

    def listed_count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM listed").fetchone()[0])

    def unlisted_desired(self) -> set[str]:
        """The desired keys the listing did not show."""
        return {
            k
            for (k,) in self.db.execute(
                "SELECT k FROM rows WHERE k NOT IN (SELECT k FROM listed) AND k NOT IN (SELECT k FROM dup)"
            )
        }

    def unlisted_count(self) -> int:
        row = self.db.execute(
            "SELECT count(*) FROM rows WHERE k NOT IN (SELECT k FROM listed) AND k NOT IN (SELECT k FROM dup)"
        ).fetchone()
        return int(row[0])

    # -- the plan --

    def to_plan(self) -> Iterator[tuple[int, str, dict[str, Any] | None, str | None, Any, Any, Any, bool]]:
        """Every desired row to plan, in row order: ``(n, key, desired, Hilos id, current or None, previous fields
        or None, previous id, failed before)`` (:meth:`plan_rows` without ``same``: a row listed already as desired
        comes without its fields)."""
        for *row, _ in self.plan_rows():
            yield tuple(row)

    def plan_rows(
        self, *, same: bool = True
    ) -> Iterator[tuple[int, str, dict[str, Any] | None, str | None, Any, Any, Any, bool, int]]:
        """Every desired row to plan, in row order: ``(n, key, desired, Hilos id, current or None, previous fields
        or None, previous id, failed before, same)``; a row listed already as desired (``same``, see
        :meth:`add_listed`) comes without its fields (``None`` for desired, current and previous: it is planned
        unchanged).

        :param same: with the rows listed already as desired (without: :meth:`same_counts` counts them).
        """
        cursor = self.db.execute(
            f"SELECT r.n, r.k, CASE WHEN l.same THEN NULL ELSE r.f END, {_LISTED_ID}, l.f, "
            "CASE WHEN l.same THEN NULL ELSE p.f END, p.id, coalesce(p.failed, 0), coalesce(l.same, 0) FROM rows r "
            "LEFT JOIN listed l ON l.k = r.k LEFT JOIN previous p ON p.k = r.k "
            f"WHERE r.k NOT IN (SELECT k FROM dup){'' if same else ' AND NOT coalesce(l.same, 0)'} ORDER BY r.n"
        )
        while chunk := cursor.fetchmany(CHUNK):
            for n, k, f, oid, cf, pf, pid, failed, same in chunk:  # a same row's blobs are NULL: unpacked to None
                yield n, k, unpack(f), oid, unpack(cf), unpack(pf), pid, bool(failed), same

    def same_counts(self) -> tuple[int, int]:
        """The desired rows (not duplicates) listed already as desired, and how many of them ``compare_with=
        "last_sync"`` would have written (``same`` 2, see :meth:`add_listed`): what :meth:`plan_rows` leaves out
        without ``same``."""
        row = self.db.execute(
            "SELECT count(*), coalesce(sum(l.same = 2), 0) FROM rows r JOIN listed l ON l.k = r.k "
            "WHERE l.same AND r.k NOT IN (SELECT k FROM dup)"
        ).fetchone()
        return int(row[0]), int(row[1])

    def managed_not_desired(self) -> Iterator[tuple[str, str | None, dict[str, Any] | None, dict[str, Any] | None]]:
        """Keys the last run managed that no desired row names: ``(key, Hilos id if listed, listed fields or None,
        previous fields)`` (a mirror deletes the listed ones)."""
        cursor = self.db.execute(
            f"SELECT p.k, {_LISTED_ID}, l.f, p.f FROM previous p LEFT JOIN listed l ON l.k = p.k "
            "WHERE p.k NOT IN (SELECT k FROM rows) ORDER BY p.k"
        )
        while chunk := cursor.fetchmany(CHUNK):
            for k, oid, cf, pf in chunk:
                yield k, oid, unpack(cf), unpack(pf)

    def managed_count(self) -> int:
        """Keys in the last snapshot (what this sync created or managed)."""
        return int(self.db.execute("SELECT count(*) FROM previous").fetchone()[0])

    def add_plan(self, rows: Sequence[tuple[str, int, str, bool, str | None, Any, str | None]]) -> None:
        """Plan entries: ``(key, row number, action, drift, entry record JSON or None, write or None, the write's
        hash or None)`` (a dry run keeps the hash of a write, not the write)."""
        self.db.executemany(
            "INSERT OR REPLACE INTO plan VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(k, n, a, int(d), e, None if w is None else marshal.dumps(w), h) for k, n, a, d, e, w, h in rows],
        )

    def planned(self) -> None:
        """Every desired key is planned: from now on a key without a plan row is unchanged (the plan does not
        write the unchanged ones, most keys of a day 2)."""
        self._planned = True

    def hashes(self) -> Iterator[tuple[str, str]]:
        """Every planned write's ``(key, hash)``, in key order (what the plan's digest is made of)."""
        cursor = self.db.execute("SELECT k, h FROM plan WHERE h IS NOT NULL ORDER BY k")
        while chunk := cursor.fetchmany(CHUNK):
            yield from chunk

    def add_approved(self, rows: Iterable[tuple[str, str]]) -> None:
        """The writes a person approved: ``(key, hash)``."""
        chunk: list[tuple[str, str]] = []
        for row in rows:
            chunk.append(row)
            if len(chunk) >= CHUNK:
                self.db.executemany("INSERT OR REPLACE INTO approved VALUES (?, ?)", chunk)
                chunk = []
        self.db.executemany("INSERT OR REPLACE INTO approved VALUES (?, ?)", chunk)

    def hold_back_unapproved(self) -> list[tuple[str, int]]:
        """Drop every planned write that is not one of the approved ones (another key, or the same key with another
        write); the keys held back and their row numbers, in row order."""
        held = self.db.execute(
            "SELECT p.k, p.n FROM plan p LEFT JOIN approved a ON a.k = p.k WHERE p.h IS NOT NULL "
            "AND (a.h IS NULL OR a.h != p.h) ORDER BY p.n, p.k"
        ).fetchall()
        self.db.executemany("UPDATE plan SET w = NULL WHERE k = ?", [(k,) for k, _ in held])
        return [(str(k), int(n or 0)) for k, n in held]

    def writes(self) -> Iterator[tuple[int, str, Any]]:
        """The writes to send, in row order: ``(row number, key, write as stored)``."""
        cursor = self.db.execute("SELECT n, k, w FROM plan WHERE w IS NOT NULL ORDER BY n")
        while chunk := cursor.fetchmany(CHUNK):
            for n, k, w in chunk:
                yield n, k, marshal.loads(w)

    def write_count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM plan WHERE w IS NOT NULL").fetchone()[0])

    def entries(self, *, unchanged: bool = False) -> Iterator[tuple[str, str, str]]:
        """Plan entries in row order (``(key, action, entry JSON)``), the unchanged ones only with ``unchanged``."""
        where = "" if unchanged else "WHERE action != 'unchanged'"
        cursor = self.db.execute(f"SELECT k, action, entry FROM plan {where} ORDER BY n, k")
        while chunk := cursor.fetchmany(CHUNK):
            yield from chunk

    def actions(self) -> dict[str, int]:
        return {a: int(c) for a, c in self.db.execute("SELECT action, count(*) FROM plan GROUP BY action")}

    # -- the outcomes --

    def add_outcomes(self, rows: Sequence[tuple[str, str, str | None]]) -> None:
        self.db.executemany("INSERT OR REPLACE INTO outcome VALUES (?, ?, ?)", list(rows))

    def outcome_counts(self) -> dict[str, int]:
        return {o: int(c) for o, c in self.db.execute("SELECT outcome, count(*) FROM outcome GROUP BY outcome")}

    def drift_landed(self, done: Sequence[str]) -> int:
        marks = ",".join("?" * len(done))
        row = self.db.execute(
            f"SELECT count(*) FROM plan p JOIN outcome o ON o.k = p.k WHERE p.drift = 1 AND o.outcome IN ({marks})",
            list(done),
        ).fetchone()
        return int(row[0])

    def outcomes(self) -> dict[str, tuple[str, str | None]]:
        """Every outcome by key (for the pending sync log: as many as there were writes)."""
        return {k: (o, e) for k, o, e in self.db.execute("SELECT k, outcome, error FROM outcome")}

    # -- what the next run reads --

    def for_snapshot(self) -> Iterator[tuple[str, dict[str, Any], str | None, str | None, str | None, Any, Any, bool]]:
        """Every key the next snapshot may hold: ``(key, desired fields or {} , action, outcome, Hilos id,
        previous fields, previous id, failed before)`` for the desired keys (a key the plan has no row for is
        unchanged once :meth:`planned` was called), then the managed keys no desired row names (desired fields
        ``None``)."""
        cursor = self.db.execute(
            f"SELECT r.k, r.f, coalesce(pl.action, ?), o.outcome, {_LISTED_ID}, p.f, p.id, coalesce(p.failed, 0) "
            "FROM rows r LEFT JOIN plan pl ON pl.k = r.k LEFT JOIN outcome o ON o.k = r.k "
            "LEFT JOIN listed l ON l.k = r.k LEFT JOIN previous p ON p.k = r.k "
            "WHERE r.k NOT IN (SELECT k FROM dup) ORDER BY r.n",
            ("unchanged" if self._planned else None,),
        )
        while chunk := cursor.fetchmany(CHUNK):
            for k, f, action, outcome, oid, pf, pid, failed in chunk:
                yield k, unpack(f) or {}, action, outcome, oid, unpack(pf), pid, bool(failed)
        cursor = self.db.execute(
            f"SELECT p.k, NULL, pl.action, o.outcome, {_LISTED_ID}, p.f, p.id, p.failed FROM previous p "
            "LEFT JOIN plan pl ON pl.k = p.k LEFT JOIN outcome o ON o.k = p.k LEFT JOIN listed l ON l.k = p.k "
            "WHERE p.k NOT IN (SELECT k FROM rows) ORDER BY p.k"
        )
        while chunk := cursor.fetchmany(CHUNK):
            for k, _, action, outcome, oid, pf, pid, failed in chunk:
                yield k, {}, action, outcome, oid, unpack(pf), pid, bool(failed)

    def size_on_disk(self) -> int:
        try:
            return os.path.getsize(self.path)
        except OSError:
            return 0
