"""A sync task's state between runs: the snapshot of what it applied, and the conversations that failed.

One JSON Lines file per sync task (DAG, task and map index: not per run, a run reads what the run before it left)
under ``state_store``. Its first line says whose state it is; then one line per conversation::

    {"format": "hilos-sync-state", "version": 1, "owner": {...}, "run_id": "...", "written_at": "..."}
    {"id": "<uuid>", "fields": {"status": "CLOSED", "tags": ["vip"]}}
    {"id": "<uuid>", "fields": {...}, "failed": true}

``fields`` is what the sync last made Hilos hold on the fields it manages (the desired values, in the normal form,
lists as lists). ``failed`` marks a conversation whose update failed or was not sent: the next run sends it
whatever its diff says. The file is written to a temporary name and moved into place after each run, failed
runs included (so failed keys are never forgotten); a run that could not read it stops before sending anything.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

from airflow_provider_hilos.checkpoint import folder_name
from airflow_provider_hilos.conversations import NormalValue
from airflow_provider_hilos.exceptions import HilosConfigurationError
from airflow_provider_hilos.schemas import WRITABLE_FIELDS
from airflow_provider_hilos.storage import AtomicText, StoragePath

STATE_FORMAT = "hilos-sync-state"
STATE_VERSION = 1
STATE_FILE = "state.jsonl"


def sync_owner(dag_id: str, task_id: str, map_index: int | None = None) -> dict[str, Any]:
    """Whose state it is: the sync task, not the run (each run reads what the last one left): ``run_id`` is
    ``None``, which no run's id equals, so a state folder is never a checkpoint's (see
    :func:`~airflow_provider_hilos.checkpoint.folder_name`)."""
    index = map_index if isinstance(map_index, int) and map_index >= 0 else -1
    return {"dag_id": str(dag_id), "run_id": None, "task_id": str(task_id), "map_index": index}


@dataclass
class Snapshot:
    """What a sync task's last run left: per conversation (by its UUID's number) the id, the fields it manages, and
    whether it failed."""

    entries: dict[int, tuple[str, dict[str, NormalValue]]] = field(default_factory=dict)
    failed: set[int] = field(default_factory=set)
    run_id: str | None = None
    found: bool = False

    def fields_of(self, key: int) -> dict[str, NormalValue] | None:
        entry = self.entries.get(key)
        return None if entry is None else entry[1]

    def __len__(self) -> int:
        return len(self.entries)


class SyncStateStore:
    """Where one sync task keeps its :class:`Snapshot`.

    :param root: the ``state_store`` folder (an ``ObjectStoragePath``: local, ``s3://`` ...).
    :param owner: :func:`sync_owner` of the task.
    """

    def __init__(self, root: StoragePath, owner: Mapping[str, Any]) -> None:
        self.owner = dict(owner)
        self.folder = root / folder_name(self.owner)
        self.path = self.folder / STATE_FILE

    def __repr__(self) -> str:
        return f"SyncStateStore({str(self.path)!r})"

    def load(self) -> Snapshot:
        """The last run's snapshot (empty if this task never ran).

        :raises HilosConfigurationError: the file can't be read, is not a sync state, or belongs to another task.
        """
        snapshot = Snapshot()
        try:
            if not self.path.exists():
                return snapshot
            with self.path.open("r", encoding="utf-8") as handle:
                lines = _read_lines(handle)
                header = _json_line(next(lines, ""), self.path, 1)
                if header.get("format") != STATE_FORMAT or header.get("version") != STATE_VERSION:
                    raise HilosConfigurationError(
                        f"Hilos sync: {self.path} is not a sync state file of this version (format "
                        f"{STATE_FORMAT!r}, version {STATE_VERSION}); remove it to start over (the next run then "
                        "compares with Hilos, or sends everything with compare_with='last_sync')"
                    )
                if header.get("owner") != self.owner:
                    raise HilosConfigurationError(
                        f"Hilos sync: the state {self.path} belongs to another task ({_describe(header.get('owner'))}),"
                        f" not this one ({_describe(self.owner)}); give each sync task its own state_store"
                    )
                snapshot.run_id = header.get("run_id")
                for number, line in enumerate(lines, start=2):
                    record = _json_line(line, self.path, number)
                    cid = record.get("id")
                    if not isinstance(cid, str):
                        raise HilosConfigurationError(f"Hilos sync: {self.path} line {number} has no conversation id")
                    try:
                        key = uuid.UUID(cid).int
                    except ValueError:
                        raise HilosConfigurationError(
                            f"Hilos sync: the state {self.path} line {number} holds a conversation id that is not a "
                            "UUID; remove the file to start over"
                        ) from None
                    snapshot.entries[key] = (cid, _normal(record.get("fields")))
                    if record.get("failed"):
                        snapshot.failed.add(key)
        except OSError as exc:
            raise HilosConfigurationError(
                f"Hilos sync: the state {self.path} can't be read ({exc.strerror or type(exc).__name__}); check "
                "state_store"
            ) from None
        snapshot.found = True
        return snapshot

    def save(self, snapshot: Snapshot, *, run_id: str | None) -> None:
        """Write ``snapshot`` whole, to a temporary name first (a killed task leaves the last state as it was).

        :raises HilosConfigurationError: it can't be written.
        """
        writer = AtomicText(self.path)
        try:
            handle = writer.open()
            handle.write(
                json.dumps(
                    {
                        "format": STATE_FORMAT,
                        "version": STATE_VERSION,
                        "owner": self.owner,
                        "run_id": run_id,
                        "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
                        "conversations": len(snapshot.entries),
                        "failed": len(snapshot.failed),
                    },
                    sort_keys=True,
                )
                + "\n"
            )
            lines = _lines(snapshot)
            while chunk := "".join(itertools.islice(lines, 2_000)):  # few large writes: a file on fsspec is slow
                handle.write(chunk)
            writer.commit()
        except OSError as exc:
            raise HilosConfigurationError(
                f"Hilos sync: the state {self.path} can't be written ({exc.strerror or type(exc).__name__}); set "
                "state_store to a writable folder (on distributed executors, shared storage such as s3://...)"
            ) from None
        finally:
            writer.abort()


def _read_lines(handle: IO[str]) -> Iterator[str]:
    """The lines of a file read a megabyte at a time (line by line through fsspec is slow, and Airflow 2's file
    wrapper is not iterable)."""
    rest = ""
    while chunk := handle.read(1 << 20):
        *lines, rest = (rest + chunk).split("\n")
        yield from lines
    if rest:
        yield rest


def _normal(fields: Any) -> dict[str, NormalValue]:
    """Fields as :func:`_lines` wrote them (the normal form, lists as JSON arrays) back in the normal form."""
    if not isinstance(fields, Mapping):
        return {}
    return {
        name: tuple(value) if isinstance(value, list) else value
        for name, value in fields.items()
        if name in WRITABLE_FIELDS
    }


def _lines(snapshot: Snapshot) -> Iterator[str]:
    for key, (cid, fields) in snapshot.entries.items():
        record: dict[str, Any] = {
            "id": cid,
            "fields": {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()},
        }
        if key in snapshot.failed:
            record["failed"] = True
        yield json.dumps(record, ensure_ascii=False) + "\n"


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
