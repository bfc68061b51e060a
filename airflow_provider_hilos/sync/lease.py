"""One run of a sync at a time: a lease in the sync's state folder.

Two runs of one sync task at once (a manual run beside the scheduled one, a retry beside a zombie) would both plan
against the same state and both send every change. So a run takes the lease before it reads anything, and keeps it
until its state is written:

* the lease is a small JSON file, ``lease.json``, in the state folder: who holds it (run, try, host, process), a
  random token, and when it expires;
* on a local file system it is read, taken, renewed and released under an exclusive ``flock`` of ``lease.lock`` in
  the same folder, so checking and taking it is one step for every process of the machine (on a network file
  system, as far as it supports ``flock``), and it is written to a temporary name and moved into place (never seen
  half written); on an object store, which has neither, by writing it and reading it back (best effort: keep one
  try at a time there, which Airflow's heartbeat normally ensures);
* it is renewed while the run lives (every third of its duration, by a background thread), so a long apply keeps
  it;
* a lease past its expiry belongs to a run that died (``kill -9``, a lost worker): the next run takes it over, after
  at most one lease duration;
* a run that could not renew it in time (its process was stalled longer than the lease) has lost it: it stops
  sending, and does not write its state over the state of the run that took over.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_hilos.exceptions import HilosConfigurationError
from airflow_provider_hilos.storage import StoragePath, is_local, local_path, make_folder

LEASE_FILE = "lease.json"
LOCK_FILE = "lease.lock"
#: How long a lease lasts without renewal (seconds): a run that died holds up the next one at most this long.
DEFAULT_LEASE_SECONDS = 60.0


@dataclass(frozen=True)
class Holder:
    """Who holds a lease, as the lease file says."""

    run_id: str
    try_number: int | None
    host: str
    pid: int
    expires_at: float
    token: str = ""

    def describe(self) -> str:
        """``run manual__2026-01-01 (try 2) on worker-3, process 4711, for 42 s more``."""
        attempt = f" (try {self.try_number})" if self.try_number else ""
        left = max(0.0, self.expires_at - time.time())
        return f"run {self.run_id}{attempt} on {self.host}, process {self.pid}, lease valid {left:.0f} s more"

    @property
    def expired(self) -> bool:
        return self.expires_at <= time.time()


class SyncLease:
    """The lease of one sync task's state folder.

    :param folder: the sync task's state folder (see :class:`~airflow_provider_hilos.sync.state.SyncStateStore`).
    :param run_id: the run taking it (named to a run that finds it held).
    :param try_number: the task instance's try, if known.
    :param seconds: how long the lease lasts without renewal.
    """

    def __init__(
        self,
        folder: StoragePath,
        *,
        run_id: str,
        try_number: int | None = None,
        seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> None:
        self.folder = folder
        self.path = folder / LEASE_FILE
        self.local = is_local(folder)
        self.run_id = str(run_id)
        self.try_number = try_number
        self.seconds = float(seconds)
        self.token = uuid.uuid4().hex
        self.held = False
        #: set when a renewal found the lease taken over or unwritable: the run must stop
        self.lost = threading.Event()
        self.lost_reason = ""
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._on_lost: Callable[[str], None] | None = None
        #: the expired lease this run took over, if it did (a run that died: say so)
        self.taken_over: Holder | None = None

    def __repr__(self) -> str:
        return f"SyncLease({str(self.path)!r})"

    # -- taking it --

    def try_acquire(self) -> Holder | None:
        """Take the lease if it is free or expired.

        :return: ``None`` when this run holds it now, else who does.
        :raises HilosConfigurationError: the state folder can't be written (before any request: the run would be
            unable to keep its state).
        """
        try:
            make_folder(self.folder)
            with self._locked():
                holder = self.holder()
                if holder is not None and not holder.expired and holder.token != self.token:
                    return holder
                if holder is not None and holder.token != self.token:
                    self.taken_over = holder  # an expired lease: its run died (or was stalled past it)
                self._write(self._record())
            if not self.local:  # no lock there: another run writing at the same moment, the last write wins
                time.sleep(0.05)
                holder = self.holder()
                if holder is None or holder.token != self.token:
                    return holder or Holder("unknown", None, "unknown", 0, time.time() + self.seconds)
        except OSError as exc:
            raise HilosConfigurationError(
                f"Hilos sync: the state folder {self.folder} can't be written ({exc.strerror or type(exc).__name__}); "
                "set state_store to a writable folder (on distributed executors, shared storage such as s3://...). "
                "Nothing was sent"
            ) from None
        self.held = True
        return None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """An exclusive ``flock`` of the folder's lock file (locally; on an object store, nothing)."""
        if not self.local:
            yield
            return
        import fcntl

        fd = os.open(os.path.join(local_path(self.folder), LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def _record(self) -> dict[str, Any]:
        return {
            "token": self.token,
            "run_id": self.run_id,
            "try_number": self.try_number,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "acquired_at": time.time(),
            "expires_at": time.time() + self.seconds,
        }

    def holder(self) -> Holder | None:
        """Who holds the lease now, or ``None`` when nobody does (an unreadable file counts as expired)."""
        try:
            if not self.path.exists():
                return None
            with self.path.open("r", encoding="utf-8") as handle:
                record = json.loads(handle.read(64 * 1024) or "{}")
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return Holder("unreadable", None, "unknown", 0, 0.0)
        if not isinstance(record, Mapping):
            return Holder("unreadable", None, "unknown", 0, 0.0)
        try:
            return Holder(
                run_id=str(record.get("run_id")),
                try_number=record.get("try_number") if isinstance(record.get("try_number"), int) else None,
                host=str(record.get("host")),
                pid=int(record.get("pid") or 0),
                expires_at=float(record.get("expires_at") or 0.0),
                token=str(record.get("token") or ""),
            )
        except (TypeError, ValueError):
            return Holder("unreadable", None, "unknown", 0, 0.0)

    # -- keeping it --

    def keep(self, on_lost: Callable[[str], None] | None = None) -> None:
        """Renew the lease in the background until :meth:`release`; ``on_lost`` is told if it is lost."""
        self._on_lost = on_lost
        if self._renewer is None:
            self._renewer = threading.Thread(target=self._renew_loop, name="hilos-sync-lease", daemon=True)
            self._renewer.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            self.renew()
            if self.lost.is_set():
                return

    def renew(self) -> None:
        """Push the expiry forward, if the lease is still ours (else mark it lost)."""
        try:
            with self._locked():
                holder = self.holder()
                if holder is None or holder.token != self.token:
                    who = "nobody holds it" if holder is None else holder.describe()
                    self._lose(
                        f"the lease was taken over ({who}): this run was stalled for longer than {self.seconds:g} s"
                    )
                    return
                self._write(self._record())
        except OSError as exc:
            self._lose(f"the lease could not be renewed ({exc.strerror or type(exc).__name__})")

    def _write(self, record: Mapping[str, Any]) -> None:
        text = json.dumps(record, sort_keys=True)
        if self.local:
            temporary = f"{local_path(self.path)}.{uuid.uuid4().hex[:8]}.tmp"
            with open(temporary, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.replace(temporary, local_path(self.path))
        else:
            with self.path.open("w", encoding="utf-8") as handle:
                handle.write(text)

    def _lose(self, reason: str) -> None:
        if self.lost.is_set():
            return
        self.lost_reason = reason
        self.lost.set()
        self.held = False
        if self._on_lost is not None:
            self._on_lost(reason)

    def release(self) -> None:
        """Stop renewing and remove the lease, if it is still ours."""
        self._stop.set()
        if self._renewer is not None and self._renewer is not threading.current_thread():
            self._renewer.join(timeout=5)
        if not self.held:
            return
        self.held = False
        try:
            with self._locked():
                holder = self.holder()
                if holder is not None and holder.token == self.token:
                    self.path.unlink()
        except OSError:
            pass  # it expires on its own


def lease_is_free(folder: StoragePath) -> bool:
    """Whether nobody holds the lease of ``folder`` (no file, or an expired one): what a waiting run checks."""
    holder = SyncLease(folder, run_id="").holder()
    return holder is None or holder.expired
