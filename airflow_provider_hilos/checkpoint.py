"""Resume a batch after a crash: which conversations an earlier try of the same task already updated.

A batch writes one line per applied update (the conversation id and a fingerprint of what was sent) as soon as
the API accepted it, from the worker that sent it. A later try of the same task (Airflow's retry, a re-run after
``kill -9``, another worker) reads those lines and skips an update only if the same conversation is to get the
same body: if the input changed, the update is sent again. Progress is keyed by conversation, not by row number,
so a re-derived input (a query read again, a plan built again, in another order) resumes just as well.

Where: one folder per task instance, directly under a root that is an ``ObjectStoragePath`` (a local folder, or
``s3://``, ``gs://``... with their provider installed). The folder's name is a readable prefix of the DAG and
task ids plus a hash of the exact ids (DAG, run, task, map index): two task instances never share a folder,
whatever characters their ids hold, and no id (``..``, ``a/b``) can place it outside the root. The folder holds
``owner.json`` (whose checkpoint it is; a folder owned by another task instance is refused), the ``applied-*.txt``
segments, and the lock.

On a local disk every line is flushed as it is written, so a killed process loses at most the rows whose
requests were in flight. Object stores only show a file once it is closed, so there the lines go to small files
(segments) closed every ``segment_rows`` rows or ``segment_seconds``; a crash loses at most the open segment (the
batch re-sends those rows: a PATCH with absolute values lands the same).

Two tries of one task instance at once (a zombie and its retry): the second waits for the first (up to
``lock_timeout`` seconds), then reads what the first applied and skips it. Locally the lock is ``flock`` on a file
in the folder (exclusive between processes of one machine; on a network file system only if it supports
``flock``). On an object store it is a lease object renewed while the batch runs and taken over once expired:
best effort (object stores have no atomic create in fsspec), so prefer one try at a time there (Airflow's
heartbeat normally ensures it).

The checkpoint is removed when the batch succeeds (only the files it consists of), so a later run of a succeeded
task sends everything; if another try is waiting, the lines are left for it to skip.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from typing import IO, Any

from airflow_provider_hilos.exceptions import HilosCheckpointError, HilosConfigurationError, HilosValidationError
from airflow_provider_hilos.storage import StoragePath, is_local, local_path, make_folder

_SLUG = re.compile(r"[^A-Za-z0-9_-]+")
#: One checkpoint line: a key (a canonical conversation id, a contact's E.164 phone) and the 16-hex-digit fingerprint of
#: what was sent.
_LINE = re.compile(
    r"(?P<conversation>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|\+[0-9]{4,16}) "
    r"(?P<digest>[0-9a-f]{16})\n"
)
_SEGMENT = re.compile(r"applied-[0-9]+-[0-9]+-[0-9a-f]+-[0-9]+\.txt")
_WAITING = re.compile(r"waiting-[0-9a-f]{32}")
OWNER_FILE = "owner.json"
LOCK_FILE = "lock"
LEASE_FILE = "lease.json"
#: The longest checkpoint line read (a longer one is not a checkpoint line).
_MAX_LINE = 200


def fingerprint(conversation_id: str, body: Mapping[str, Any]) -> str:
    """A short digest of what a row sends (16 hex characters)."""
    text = conversation_id + "\n" + json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def task_owner(dag_id: str, run_id: str, task_id: str, map_index: int | None) -> dict[str, Any]:
    """The exact identity of a task instance, as recorded in its checkpoint's ``owner.json``."""
    index = map_index if isinstance(map_index, int) and map_index >= 0 else -1
    return {"dag_id": str(dag_id), "run_id": str(run_id), "task_id": str(task_id), "map_index": index}


def folder_name(owner: Mapping[str, Any]) -> str:
    """The checkpoint folder of a task instance: a readable prefix (``[A-Za-z0-9_-]`` only, so never ``..`` nor a
    path) and a hash of the exact ids, so different task instances never share a folder.

    :param owner: see :func:`task_owner`.
    """
    exact = json.dumps(
        [owner["dag_id"], owner["run_id"], owner["task_id"], owner["map_index"]], ensure_ascii=False
    ).encode("utf-8", "surrogatepass")
    digest = hashlib.sha256(exact).hexdigest()[:32]
    prefix = "__".join(_SLUG.sub("_", str(owner[part]))[:40].strip("_") or "_" for part in ("dag_id", "task_id"))
    if owner["map_index"] >= 0:
        prefix += f"__{owner['map_index']}"
    return f"{prefix}-{digest}"


class Checkpoint:
    """The applied rows of one batch task instance.

    :param folder: the task instance's own folder (see :meth:`for_task`).
    :param owner: whose checkpoint it is (:func:`task_owner`): recorded in the folder, and a folder recorded as
        someone else's is refused. ``None``: the folder is the caller's, unchecked.
    :param segment_rows: on an object store, rows per segment file.
    :param segment_seconds: on an object store, seconds before a segment is closed anyway.
    :param lock_timeout: seconds to wait for another try of the same task instance to finish.
    :param lease_seconds: on an object store, how long a lease lasts without renewal.
    """

    def __init__(
        self,
        folder: StoragePath,
        *,
        owner: Mapping[str, Any] | None = None,
        segment_rows: int = 500,
        segment_seconds: float = 5.0,
        lock_timeout: float = 600.0,
        lease_seconds: float = 60.0,
    ) -> None:
        self.folder = folder
        self.owner = dict(owner) if owner is not None else None
        self.local = is_local(folder)
        self.segment_rows = segment_rows
        self.segment_seconds = segment_seconds
        self.lock_timeout = lock_timeout
        self.lease_seconds = lease_seconds
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        self._in_segment = 0
        self._opened_at = 0.0
        self._segments = 0
        self._token = uuid.uuid4().hex
        self._lock_fd: int | None = None
        self._lease_renewed = 0.0
        self._held = False
        self._known: set[str] = set()  # segment names this checkpoint read or wrote: the only ones clear() removes
        self.recorded = 0

    @classmethod
    def for_task(cls, root: StoragePath, owner: Mapping[str, Any], **kwargs: Any) -> Checkpoint:
        """The checkpoint of the task instance ``owner`` (:func:`task_owner`) under ``root``."""
        return cls(root / folder_name(owner), owner=owner, **kwargs)

    def __repr__(self) -> str:
        return f"Checkpoint({str(self.folder)!r})"

    # -- before the first request --

    def open(self) -> None:
        """Make the checkpoint ready before anything is sent: create the folder, check whose it is and that it can
        be written, and take the lock (waiting for a concurrent try of the same task instance).

        :raises HilosConfigurationError: the folder can't be created or written, or belongs to another task
            instance, or another try held it for longer than ``lock_timeout``.
        """
        if self._held:
            return
        for _ in range(10):  # a try that succeeds meanwhile may remove the folder under us: start again
            try:
                self._make_folder()
                self._check_owner()
                self._acquire()
            except _FolderGone:
                continue
            self._held = True
            return
        raise HilosConfigurationError(f"Hilos batch: the checkpoint folder {self.folder} keeps disappearing")

    def _make_folder(self) -> None:
        try:
            make_folder(self.folder)
        except FileExistsError:
            # another try removed the folder while this one created it (os.makedirs found it made, then gone): again
            raise _FolderGone from None
        except OSError as exc:
            self._unwritable(exc, created=False)

    def _unwritable(self, exc: OSError, *, created: bool = True) -> None:
        if created and isinstance(exc, FileNotFoundError):  # the folder was there a moment ago
            raise _FolderGone from None
        reason = exc.strerror or type(exc).__name__
        raise HilosConfigurationError(
            f"Hilos batch: the checkpoint folder {self.folder} can't be written ({reason}); set checkpoint_path to a "
            "writable folder (on distributed executors, shared storage such as s3://...), or resume=False"
        ) from None

    def _check_owner(self) -> None:
        path = self.folder / OWNER_FILE
        recorded = self._read_json(path)
        if recorded is None:
            try:
                self._write_json(path, self.owner or {})
            except OSError as exc:
                self._unwritable(exc)
            return
        if self.owner is not None and recorded != self.owner:
            raise HilosConfigurationError(
                f"Hilos batch: the checkpoint folder {self.folder} belongs to another task instance "
                f"({_describe(recorded)}), not this one ({_describe(self.owner)}); give each task its own "
                "checkpoint_path, or remove that folder if it is left over"
            )

    def _acquire(self) -> None:
        deadline = time.monotonic() + self.lock_timeout
        if self._try_lock():
            return
        marker = self.folder / f"waiting-{self._token}"
        try:
            self._write_text(marker, "")
        except OSError as exc:
            self._unwritable(exc)
        try:
            while time.monotonic() < deadline:
                time.sleep(0.2)
                if self._try_lock():
                    return
        finally:
            _remove(marker)
        raise HilosConfigurationError(
            f"Hilos batch: another try of this task instance has held the checkpoint {self.folder} for more than "
            f"{self.lock_timeout:g} s and is still sending ({self._holder()}); wait for it to end (or mark it "
            "failed), then run this task again"
        )

    def _try_lock(self) -> bool:
        if self.local:
            return self._try_flock()
        return self._try_lease()

    def _try_flock(self) -> bool:
        import fcntl

        path = os.path.join(local_path(self.folder), LOCK_FILE)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            self._unwritable(exc)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        try:  # the holder before us may have removed the file as it let go: lock the file that is there
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid()}).encode())
        self._lock_fd = fd
        return True

    def _try_lease(self) -> bool:
        path = self.folder / LEASE_FILE
        lease = self._read_json(path)
        if lease is not None and lease.get("token") != self._token and float(lease.get("expires", 0)) > time.time():
            return False
        self._renew_lease()
        time.sleep(0.05)  # another try writing at the same moment: the last write wins, and both read it back
        lease = self._read_json(path)
        return lease is not None and lease.get("token") == self._token

    def _renew_lease(self) -> None:
        try:
            self._write_json(
                self.folder / LEASE_FILE,
                {
                    "token": self._token,
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                    "expires": time.time() + self.lease_seconds,
                },
            )
        except OSError as exc:
            self._unwritable(exc)
        self._lease_renewed = time.monotonic()

    def _holder(self) -> str:
        if self.local:
            try:
                with open(os.path.join(local_path(self.folder), LOCK_FILE), encoding="utf-8") as handle:
                    holder = json.loads(handle.read() or "{}")
            except (OSError, ValueError):
                return "holder unknown"
        else:
            holder = self._read_json(self.folder / LEASE_FILE) or {}
        return f"process {holder.get('pid', '?')} on {holder.get('host', '?')}"

    # -- reading and writing progress --

    def applied(self) -> dict[str, str]:
        """Conversation id -> fingerprint of every update an earlier try recorded as applied (the last one wins).

        :raises HilosValidationError: a segment that is not a checkpoint (not text), naming it and the line.
        """
        updates: dict[str, str] = {}
        if not self.folder.exists():
            return updates
        for part in sorted(self.folder.iterdir(), key=str):
            if not _SEGMENT.fullmatch(part.name):
                continue
            self._known.add(part.name)
            number = 0
            try:
                with part.open("r", encoding="utf-8") as handle:
                    # readline: Airflow 2's file wrapper is not iterable; bounded: a checkpoint line is short
                    for number, line in enumerate(iter(functools.partial(handle.readline, _MAX_LINE), ""), start=1):
                        if match := _LINE.fullmatch(line):
                            updates[match["conversation"]] = match["digest"]
                        elif line.endswith("\n"):  # only the last line may be cut short (by a crash): ignored
                            raise HilosValidationError(
                                [(f"{part} line {number}", "is not a checkpoint line (an id and a digest)")],
                                "Hilos batch: a damaged checkpoint; remove that file (its rows are then sent again)",
                            )
            except UnicodeDecodeError:
                raise HilosValidationError(
                    [(f"{part} line {number + 1}", "is not a checkpoint line (not UTF-8 text)")],
                    "Hilos batch: a damaged checkpoint; remove that file (its rows are then sent again)",
                ) from None
        return updates

    def record(self, conversation_id: str, digest: str) -> None:
        """The update of ``conversation_id`` (with fingerprint ``digest``) was applied: write it down now
        (thread-safe).

        :raises HilosCheckpointError: the write failed (a full disk, a lost permission).
        """
        with self._lock:
            try:
                if self._file is None:
                    self._open_segment()
                assert self._file is not None
                self._file.write(f"{conversation_id} {digest}\n")
                self.recorded += 1
                self._in_segment += 1
                if self.local:
                    self._file.flush()
                elif (
                    self._in_segment >= self.segment_rows or time.monotonic() - self._opened_at >= self.segment_seconds
                ):
                    self._close_segment()
                if not self.local and time.monotonic() - self._lease_renewed >= self.lease_seconds / 3:
                    self._renew_lease()
            except (OSError, HilosConfigurationError) as exc:
                reason = (exc.strerror if isinstance(exc, OSError) else None) or type(exc).__name__
                self._file = None
                raise HilosCheckpointError(
                    f"Hilos batch: could not record progress in the checkpoint {self.folder} ({reason}); the batch "
                    "stopped sending. Free or fix that storage: the next try resumes from what it holds",
                    result={},
                ) from None

    def close(self) -> None:
        """Write out what is buffered (the checkpoint stays for a later try; the lock is kept)."""
        with self._lock:
            try:
                self._close_segment()
            except OSError:
                self._file = None

    def release(self) -> None:
        """Write out what is buffered and let go of the lock (another try may now take the checkpoint)."""
        self.close()
        if not self._held:
            return
        self._held = False
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None
        elif not self.local:
            lease = self._read_json(self.folder / LEASE_FILE)
            if lease is not None and lease.get("token") == self._token:
                _remove(self.folder / LEASE_FILE)

    def clear(self) -> None:
        """The batch succeeded: forget its applied rows, so a later run sends every row. Removes only the files a
        checkpoint consists of; if another try of the task instance waits for it, the lines are left for that try
        to skip. Releases the lock."""
        self.close()
        try:
            if not self.folder.exists():
                return
            waiting = any(_WAITING.fullmatch(part.name) for part in self.folder.iterdir())
            if waiting:
                return
            for name in sorted(self._known):
                _remove(self.folder / name)
            _remove(self.folder / OWNER_FILE)
            if self.local:
                _remove(self.folder / LOCK_FILE)  # a try that opens it meanwhile sees it is gone (see _try_flock)
        finally:
            self.release()
        if self.local:
            try:
                os.rmdir(local_path(self.folder))
            except OSError:  # not empty (another try's files) or already gone
                pass

    # -- files --

    def _open_segment(self) -> None:
        if not self._held:
            self.open()
        self._segments += 1
        name = f"applied-{int(time.time() * 1000)}-{os.getpid()}-{self._token[:8]}-{self._segments}.txt"
        self._known.add(name)
        self._file = (self.folder / name).open("w", encoding="utf-8")
        self._in_segment = 0
        self._opened_at = time.monotonic()

    def _close_segment(self) -> None:
        if self._file is not None:
            handle, self._file = self._file, None
            handle.close()

    def _read_json(self, path: StoragePath) -> dict[str, Any] | None:
        try:
            if not path.exists():
                return None
            with path.open("r", encoding="utf-8") as handle:
                value = json.loads(handle.read(64 * 1024) or "null")
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def _write_json(self, path: StoragePath, value: Mapping[str, Any]) -> None:
        self._write_text(path, json.dumps(value, ensure_ascii=False, sort_keys=True))

    def _write_text(self, path: StoragePath, text: str) -> None:
        if self.local:  # to a temporary name, then moved into place: never half written
            target = local_path(path)
            temporary = f"{target}.{uuid.uuid4().hex[:8]}.tmp"
            with open(temporary, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.replace(temporary, target)
        else:  # an object appears whole once closed
            with path.open("w", encoding="utf-8") as handle:
                handle.write(text)


class _FolderGone(Exception):
    """The checkpoint folder was removed (by a try that just succeeded) while this one was opening it."""


def _remove(path: StoragePath) -> None:
    try:
        path.unlink()
    except (FileNotFoundError, OSError):
        pass


def _describe(owner: Mapping[str, Any]) -> str:
    parts = [f"{key} {json.dumps(owner.get(key), ensure_ascii=False)}" for key in ("dag_id", "run_id", "task_id")]
    if isinstance(owner.get("map_index"), int) and owner["map_index"] >= 0:
        parts.append(f"map index {owner['map_index']}")
    return ", ".join(parts)
