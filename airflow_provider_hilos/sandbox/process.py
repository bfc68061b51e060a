"""The sandbox in a process of its own (``hilos-sandbox``), driven over its inspection API.

In its own process the sandbox does not share the client's interpreter lock: what it measures (the arrival time of
each request, its token bucket) is not skewed by the client's threads. Benchmarks and timing tests use this;
:class:`~airflow_provider_hilos.sandbox.server.HilosSandbox` (a thread) is lighter for everything else.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from types import TracebackType
from typing import Any

import requests

from airflow_provider_hilos.sandbox.server import connection_for, warn_if_truncated
from airflow_provider_hilos.sandbox.state import payload_mismatches


class SandboxProcess:
    """``hilos-sandbox`` started in a child process on a free loopback port, and stopped by its process id.

    :param token: the API token it accepts (a random one when omitted).
    :param args: more command-line arguments (``--conversations 600``, ``--rate-limit-per-second 120`` ...).
    :param priority: a scheduling priority for the process (``os.setpriority``; negative: ahead of the clients),
        where this machine allows it. A test that times what the API received (its token bucket, its one-second
        windows) gives it one, so that on a machine busy with other work the sandbox is not starved and then stamps
        a queue of requests at once: the real API's clock does not run on the client's cores.
    """

    def __init__(self, *args: str, token: str | None = None, priority: int | None = None) -> None:
        self.args = args
        self.token = token or f"sandbox-{secrets.token_urlsafe(18)}"
        self.priority = priority
        self.url = ""
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> SandboxProcess:
        command = [sys.executable, "-m", "airflow_provider_hilos.sandbox.server", "--port", "0", "--token", self.token]
        self._process = subprocess.Popen(
            [*command, *self.args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        assert self._process.stdout is not None
        if self.priority is not None:
            try:
                os.setpriority(os.PRIO_PROCESS, self._process.pid, self.priority)
            except OSError:  # not allowed here (an unprivileged user): the default priority
                pass
        self.url = self._process.stdout.readline().strip()
        if not self.url.startswith("http://127.0.0.1:"):
            self.stop()
            raise RuntimeError("the sandbox process did not start")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL after 30 s)."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
        self._process = None

    def _get(self, path: str) -> Any:
        response = requests.get(f"{self.url}/_sandbox{path}", timeout=120)
        response.raise_for_status()
        return response.json()

    @property
    def auth(self) -> dict[str, str]:
        """The header a change to the sandbox (faults, reset, clearing the log) carries: its API token."""
        return {"Authorization": f"Token {self.token}"}

    def _change(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        response = requests.request(method, f"{self.url}/_sandbox{path}", headers=self.auth, timeout=60, **kwargs)
        response.raise_for_status()
        return response

    def connection(self, **extra: Any) -> dict[str, Any]:
        """A Hilos Airflow connection in JSON form (for ``AIRFLOW_CONN_<ID>``) pointing here."""
        return connection_for(self.url, self.token, extra)

    def connection_json(self, **extra: Any) -> str:
        return json.dumps(self.connection(**extra))

    def conversation_ids(self) -> list[str]:
        return list(self._get("/conversations"))

    def conversation(self, conversation_id: str) -> dict[str, Any]:
        return dict(self._get(f"/conversations/{conversation_id}"))

    def mismatches(self, conversation_id: str, payload: dict[str, Any]) -> list[str]:
        """The fields of ``payload`` the conversation does not show as sent: ``[]`` when it landed."""
        return payload_mismatches(payload, self.conversation(conversation_id))

    def contact(self, contact_id: str) -> dict[str, Any]:
        return dict(self._get(f"/contacts/{contact_id}"))

    def contacts(self) -> list[dict[str, Any]]:
        """Every contact (as ``GET /api/contact/{id}`` shows it)."""
        return list(self._get("/contacts"))

    def requests(self) -> list[dict[str, Any]]:
        """The request log, oldest first (a warning when it dropped older requests: ``--request-log-limit``)."""
        log = self._get("/requests")
        warn_if_truncated(log["total"], log["kept"], log["limit"])
        return list(log["requests"])

    def request_count(self) -> int:
        """Every request the sandbox answered, the dropped ones included."""
        return int(self._get("/requests")["total"])

    def set_faults(self, **settings: Any) -> None:
        self._change("PUT", "/faults", json=settings)

    def fail_next(self, kind: str, count: int = 1) -> None:
        self._change("POST", "/faults/next", json={"kind": kind, "count": count})

    def clear_requests(self) -> None:
        self._change("DELETE", "/requests")

    def reset(self) -> None:
        self._change("POST", "/reset")
