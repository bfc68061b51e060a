"""The state a sync keeps between runs: per object, the fields it last made Hilos hold (its *snapshot*), its id in
Hilos, and whether its write failed (then the next run sends it again, whatever its diff says).

One JSON Lines file per sync task, ``<state_store>/<task folder>/state.jsonl``. Its first line says what it is and
whose; then one compact line per object::

    {"format": "hilos-sync-state", "version": 2, "object": "contact", "owner": {...}, "run_id": "...", ...}
    ["+525512345678", "9c1f...", {"first_name": "Ana", "tags": ["vip"], "meta.plan": "pro"}, 0]
    ["+525587654321", null, {...}, 1]

(the key, the Hilos id or ``null``, the fields in the normal form with lists as lists and a custom property that
must be absent as ``{"absent": true}``, and ``1`` when its write failed). The file is written to a temporary name and
moved into place after each run, failed runs included (so failed keys are never forgotten), and read back line by
line, never whole: a state of a million objects is read into the run's work database, not into memory. A run that
could not read it stops before sending anything. Version 1 files (conversations, written by earlier releases:
``{"id": ..., "fields": ..., "failed": true}`` lines) are read as they are.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

from airflow_provider_hilos.checkpoint import folder_name
from airflow_provider_hilos.contacts import ABSENT
from airflow_provider_hilos.exceptions import HilosConfigurationError
from airflow_provider_hilos.schemas import WRITABLE_FIELDS
from airflow_provider_hilos.storage import AtomicText, StoragePath

STATE_FORMAT = "hilos-sync-state"
STATE_VERSION = 2
#: The versions this release reads.
READ_VERSIONS = (1, 2)
STATE_FILE = "state.jsonl"
_ABSENT = {"absent": True}

#: One object of a snapshot: ``(key, Hilos id or None, fields, failed)``.
StateEntry = tuple[str, str | None, dict[str, Any], bool]


def sync_owner(dag_id: str, task_id: str, map_index: int | None = None) -> dict[str, Any]:
    """Whose state it is: the sync task, not the run (each run reads what the last one left): ``run_id`` is
    ``None``, which no run's id equals, so a state folder is never a checkpoint's (see
    :func:`~airflow_provider_hilos.checkpoint.folder_name`)."""
    index = map_index if isinstance(map_index, int) and map_index >= 0 else -1
    return {"dag_id": str(dag_id), "run_id": None, "task_id": str(task_id), "map_index": index}


def sync_name(dag_id: str, task_id: str, map_index: int | None = None) -> str:
    """A sync task as a person reads it: ``dag.task``, ``dag.task[3]`` for a mapped one."""
    index = map_index if isinstance(map_index, int) and map_index >= 0 else -1
    return f"{dag_id}.{task_id}" + (f"[{index}]" if index >= 0 else "")


@dataclass
class Snapshot:
    """What a sync task's last run left, in memory (tests and small syncs; a run streams it instead): per object,
    by key, the Hilos id, the fields it manages, and whether it failed."""

    entries: dict[Any, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    failed: set[Any] = field(default_factory=set)
    run_id: str | None = None
    found: bool = False
    ids: dict[Any, str | None] = field(default_factory=dict)

    def fields_of(self, key: Any) -> dict[str, Any] | None:
        entry = self.entries.get(key)
        return None if entry is None else entry[1]

    def __len__(self) -> int:
        return len(self.entries)


@dataclass
class StateHeader:
    """The state file's first line, read."""

    run_id: str | None
    count: int
    failed: int
    version: int


class SyncStateStore:
    """Where one sync task keeps its state.

    :param root: the ``state_store`` folder (an ``ObjectStoragePath``: local, ``s3://`` ...).
    :param owner: :func:`sync_owner` of the task.
    :param object_name: what it syncs (``conversation``, ``contact``): a state of another object is refused.
    """

    def __init__(self, root: StoragePath, owner: Mapping[str, Any], object_name: str = "conversation") -> None:
        self.owner = dict(owner)
        self.object_name = object_name
        self.folder = root / folder_name(self.owner)
        self.path = self.folder / STATE_FILE

    def __repr__(self) -> str:
        return f"SyncStateStore({str(self.path)!r})"

    def exists(self) -> bool:
        try:
            return bool(self.path.exists())
        except OSError as exc:
            raise self._unreadable(exc) from None

    def _unreadable(self, exc: OSError) -> HilosConfigurationError:
        return HilosConfigurationError(
            f"Hilos sync: the state {self.path} can't be read ({exc.strerror or type(exc).__name__}); check state_store"
        )

    def read(self) -> tuple[StateHeader | None, Iterator[StateEntry]]:
        """The header (``None``: this task never ran) and the entries, read line by line.

        :raises HilosConfigurationError: the file can't be read, is not a sync state, is another task's or another
            object's.
        """
        if not self.exists():
            return None, iter(())
        try:
            handle = self.path.open("r", encoding="utf-8")
        except OSError as exc:
            raise self._unreadable(exc) from None
        lines = _read_lines(handle)
        try:
            header = self._header(_json_line(next(lines, ""), self.path, 1))
        except BaseException:
            handle.close()
            raise
        return header, self._entries(handle, lines, header.version)

    def _header(self, header: Mapping[str, Any]) -> StateHeader:
        version = header.get("version")
        if header.get("format") != STATE_FORMAT or version not in READ_VERSIONS:
            raise HilosConfigurationError(
                f"Hilos sync: {self.path} is not a sync state file this release reads (format {STATE_FORMAT!r}, "
                f"version {' or '.join(map(str, READ_VERSIONS))}); remove it to start over (the next run then "
                "compares with Hilos, or sends everything with compare_with='last_sync')"
            )
        if header.get("owner") != self.owner:
            raise HilosConfigurationError(
                f"Hilos sync: the state {self.path} belongs to another task ({_describe(header.get('owner'))}), not "
                f"this one ({_describe(self.owner)}); give each sync task its own state_store"
            )
        kept = header.get("object", "conversation")
        if kept != self.object_name:
            raise HilosConfigurationError(
                f"Hilos sync: the state {self.path} is a {kept} sync's, and this task syncs {self.object_name}s; give "
                "each sync task its own state_store (or remove the file to start over)"
            )
        return StateHeader(
            run_id=header.get("run_id"),
            count=int(header.get("conversations", header.get("count", 0)) or 0),
            failed=int(header.get("failed", 0) or 0),
            version=int(version),
        )

    def _entries(self, handle: IO[str], lines: Iterator[str], version: int) -> Iterator[StateEntry]:
        try:
            for number, line in enumerate(lines, start=2):
                if not line.strip():
                    continue
                if version == 1:
                    yield self._v1(line, number)
                else:
                    yield self._v2(line, number)
        except OSError as exc:
            raise self._unreadable(exc) from None
        finally:
            handle.close()

    def _v1(self, line: str, number: int) -> StateEntry:
        record = _json_line(line, self.path, number)
        cid = record.get("id")
        if not isinstance(cid, str):
            raise HilosConfigurationError(f"Hilos sync: {self.path} line {number} has no conversation id")
        try:
            cid = str(uuid.UUID(cid))
        except ValueError:
            raise HilosConfigurationError(
                f"Hilos sync: the state {self.path} line {number} holds a conversation id that is not a UUID; remove "
                "the file to start over"
            ) from None
        fields = record.get("fields")
        normal = (
            {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items() if k in WRITABLE_FIELDS}
            if isinstance(fields, Mapping)
            else {}
        )
        return cid, cid, normal, bool(record.get("failed"))

    def _v2(self, line: str, number: int) -> StateEntry:
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if (
            not isinstance(record, list)
            or len(record) != 4
            or not isinstance(record[0], str)
            or not isinstance(record[2], dict)
        ):
            raise HilosConfigurationError(
                f"Hilos sync: the state {self.path} is damaged at line {number} (not a [key, id, fields, failed] "
                "line); remove it to start over"
            )
        key, oid, fields, failed = record
        return key, oid if isinstance(oid, str) else None, _decoded(fields), bool(failed)

    def load(self) -> Snapshot:
        """The whole state in memory (small syncs and tests; a run streams it with :meth:`read`)."""
        header, entries = self.read()
        snapshot = Snapshot()
        if header is None:
            return snapshot
        for key, oid, fields, failed in entries:
            snapshot.entries[key] = (key, fields)
            snapshot.ids[key] = oid
            if failed:
                snapshot.failed.add(key)
        snapshot.run_id, snapshot.found = header.run_id, True
        return snapshot

    def write(self, entries: Iterable[StateEntry], *, run_id: str | None) -> tuple[int, int]:
        """Write the state, to a temporary name first (a killed task leaves the last state as it was); the counts
        go into a trailing summary line's place in the header only as ``written``: the entries are streamed.

        :return: how many entries were written, and how many of them failed.
        :raises HilosConfigurationError: it can't be written.
        """
        writer = AtomicText(self.path)
        count = failed = 0
        try:
            handle = writer.open()
            handle.write(
                json.dumps(
                    {
                        "format": STATE_FORMAT,
                        "version": STATE_VERSION,
                        "object": self.object_name,
                        "owner": self.owner,
                        "run_id": run_id,
                        "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
                    },
                    sort_keys=True,
                )
                + "\n"
            )

            def lines() -> Iterator[str]:
                nonlocal count, failed
                for key, oid, fields, was_failed in entries:
                    count += 1
                    failed += bool(was_failed)
                    yield json.dumps([key, oid, _encoded(fields), int(bool(was_failed))], ensure_ascii=False) + "\n"

            stream = lines()
            while chunk := "".join(itertools.islice(stream, 2_000)):  # few large writes: a file on fsspec is slow
                handle.write(chunk)
            writer.commit()
        except OSError as exc:
            raise HilosConfigurationError(
                f"Hilos sync: the state {self.path} can't be written ({exc.strerror or type(exc).__name__}); set "
                "state_store to a writable folder (on distributed executors, shared storage such as s3://...)"
            ) from None
        finally:
            writer.abort()
        return count, failed

    def save(self, snapshot: Snapshot, *, run_id: str | None) -> None:
        """Write a :class:`Snapshot` (see :meth:`write`)."""
        self.write(
            (
                (str(key), snapshot.ids.get(key), fields, key in snapshot.failed)
                for key, (_, fields) in snapshot.entries.items()
            ),
            run_id=run_id,
        )


def _encoded(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else _ABSENT if v is ABSENT else v for k, v in fields.items()}


def _decoded(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else ABSENT if v == _ABSENT else v for k, v in fields.items()}


def _read_lines(handle: IO[str]) -> Iterator[str]:
    """The lines of a file read a megabyte at a time (line by line through fsspec is slow, and Airflow 2's file
    wrapper is not iterable)."""
    rest = ""
    while chunk := handle.read(1 << 20):
        *lines, rest = (rest + chunk).split("\n")
        yield from lines
    if rest:
        yield rest


def _json_line(line: str, path: StoragePath, number: int) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise HilosConfigurationError(
            f"Hilos sync: the state {path} is damaged at line {number} (not a JSON object); remove it to start over"
        )
    return value


def _describe(owner: Any) -> str:
    if not isinstance(owner, Mapping):
        return "unknown"
    return ", ".join(f"{k}={owner[k]}" for k in ("dag_id", "task_id", "map_index") if k in owner)
