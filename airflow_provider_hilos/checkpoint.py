"""Resume a batch after a crash: which conversations an earlier try of the same task already updated.

A batch writes one line per applied update (the conversation id and a fingerprint of what was sent) as soon as
the API accepted it, from the worker that sent it. A later try of the same task (Airflow's retry, a re-run after
``kill -9``, another worker) reads those lines and skips an update only if the same conversation is to get the
same body: if the input changed, the update is sent again. Progress is keyed by conversation, not by row number,
so a re-derived input (a query read again, a plan built again, in another order) resumes just as well.

Where: a folder per task instance (DAG, run, task, map index) under a root that is an
``ObjectStoragePath`` (a local folder, or ``s3://``, ``gs://``... with their provider installed).
On a local disk every line is flushed as it is written, so a killed process loses at most the rows
whose requests were in flight. Object stores only show a file once it is closed, so there the lines
go to small files (segments) closed every ``segment_rows`` rows or ``segment_seconds``; a crash loses
at most the open segment (the batch re-sends those rows: a PATCH with absolute values lands the same).
The checkpoint is removed when the batch succeeds, so a later run of a succeeded task sends everything.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Mapping
from typing import IO, Any

from airflow_provider_hilos.exceptions import HilosConfigurationError
from airflow_provider_hilos.storage import StoragePath

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: One checkpoint line: a canonical conversation id and the 16-hex-digit fingerprint of what was sent.
_LINE = re.compile(
    r"(?P<conversation>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}) (?P<digest>[0-9a-f]{16})\n"
)


def fingerprint(conversation_id: str, body: Mapping[str, Any]) -> str:
    """A short digest of what a row sends (16 hex characters)."""
    text = conversation_id + "\n" + json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def task_key(dag_id: str, run_id: str, task_id: str, map_index: int | None) -> str:
    """``dag/run/task`` (``task.3`` for map index 3), each part safe as a file or object name."""
    parts = [_UNSAFE.sub("_", str(part)) for part in (dag_id, run_id, task_id)]
    if map_index is not None and map_index >= 0:
        parts[-1] += f".{map_index}"
    return "/".join(parts)


class Checkpoint:
    """The applied rows of one batch task instance.

    :param folder: the task instance's own folder (``root / task_key(...)``).
    :param segment_rows: on an object store, rows per segment file.
    :param segment_seconds: on an object store, seconds before a segment is closed anyway.
    """

    def __init__(self, folder: StoragePath, *, segment_rows: int = 500, segment_seconds: float = 5.0) -> None:
        self.folder = folder
        protocol = str(getattr(folder, "protocol", "") or "")
        self.local = protocol in ("", "file", "local")
        self.segment_rows = segment_rows
        self.segment_seconds = segment_seconds
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        self._in_segment = 0
        self._opened_at = 0.0
        self._segments = 0
        self.recorded = 0

    def __repr__(self) -> str:
        return f"Checkpoint({str(self.folder)!r})"

    def applied(self) -> dict[str, str]:
        """Conversation id -> fingerprint of every update an earlier try recorded as applied (the last one wins)."""
        updates: dict[str, str] = {}
        if not self.folder.exists():
            return updates
        for part in sorted(self.folder.iterdir(), key=str):
            with part.open("r", encoding="utf-8") as handle:
                for line in iter(handle.readline, ""):  # readline: Airflow 2's file wrapper is not iterable
                    if match := _LINE.fullmatch(line):  # a line cut short by a crash is ignored
                        updates[match["conversation"]] = match["digest"]
        return updates

    def record(self, conversation_id: str, digest: str) -> None:
        """The update of ``conversation_id`` (with fingerprint ``digest``) was applied: write it down now
        (thread-safe)."""
        with self._lock:
            if self._file is None:
                self._open_segment()
            assert self._file is not None
            self._file.write(f"{conversation_id} {digest}\n")
            self.recorded += 1
            self._in_segment += 1
            if self.local:
                self._file.flush()
            elif self._in_segment >= self.segment_rows or time.monotonic() - self._opened_at >= self.segment_seconds:
                self._close_segment()

    def close(self) -> None:
        """Write out what is buffered (the checkpoint stays for a later try)."""
        with self._lock:
            self._close_segment()

    def clear(self) -> None:
        """The batch succeeded: forget its applied rows, so a later run sends every row."""
        self.close()
        if self.folder.exists():
            for part in list(self.folder.iterdir()):
                part.unlink()
            try:
                self.folder.rmdir()
            except OSError:  # object stores have no folders to remove
                pass

    def _open_segment(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise HilosConfigurationError(
                f"Hilos batch: cannot create the checkpoint folder {self.folder} ({exc}); set checkpoint_path to a "
                "writable location, or resume=False"
            ) from None
        self._segments += 1
        name = f"applied-{int(time.time() * 1000)}-{os.getpid()}-{self._segments}.txt"
        self._file = (self.folder / name).open("w", encoding="utf-8")
        self._in_segment = 0
        self._opened_at = time.monotonic()

    def _close_segment(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
