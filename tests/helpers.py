"""What several test files share: ids and rows, a stub hook, request-log filters, a recording server."""

from __future__ import annotations

import http.server
import json
import logging
import threading
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import requests

from airflow_provider_hilos.connection import HilosConnectionSettings
from airflow_provider_hilos.exceptions import (
    HilosAPIError,
    HilosPermanentAPIError,
)
from airflow_provider_hilos.hooks.hilos import HilosHook
from airflow_provider_hilos.operators.conversation import (
    ConversationBatchUpdateOperator,
)
from airflow_provider_hilos.pacing import AdaptivePacer, CircuitBreaker
from airflow_provider_hilos.sandbox import HilosSandbox
from airflow_provider_hilos.schemas import ValidatedUpdate
from tests.conftest import TEST_TOKEN, FakeTI

CID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"


URL = f"https://api.hilos.io/api/inbox/conversation/{CID}/update"


EDIT = {
    "id": CID,
    "contact": "8c8d5e2a-55c4-4a4e-9d5b-3b0b7e1b2f10",
    "status": "CLOSED",
    "assigned": [{"id": 3}],
    "tags": [{"id": 1, "name": "vip"}],
    "created_on": "2025-01-01T00:00:00Z",
    "source": "API",
    "assigned_team": 2,
    "channel": 1,
}


def _serve(handler) -> tuple[http.server.HTTPServer, str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list[dict]] = []
    paths: ClassVar[list[tuple[str, str]]] = []

    def do_PATCH(self):
        type(self).seen.append(dict(self.headers))
        type(self).paths.append((self.command, self.path))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    do_GET = do_PATCH

    def log_message(self, *args):
        pass


#: The paths of each family, spelled out (not taken from the package, so a wrong path cannot pass).
NATIVE = "/api/inbox/conversation"


ACTIVECAMPAIGN = "/channel/whatsapp/inbox/conversation"


def run_csv(tmp_path: Path, text: str, name: str = "changes.csv", **kwargs) -> dict:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    report = tmp_path / "report.jsonl"
    result = ConversationBatchUpdateOperator(
        task_id="t", updates_path=str(path), report_path=str(report), **kwargs
    ).execute({"ti": FakeTI()})
    result["report"] = [json.loads(line) for line in report.read_text().splitlines()]
    return result


def patches(sandbox) -> list[dict]:
    return [r for r in sandbox.requests() if r["method"] == "PATCH"]


MISSING = "00000000-0000-4000-8000-{:012d}"


class StubHook:
    """Answers each conversation with the next status of its script (the last one repeats); 200 by default.

    Like the hook's transport, it tells its circuit breaker how each request was answered."""

    def __init__(self, script: dict[str, list[int]] | None = None, *, max_attempts: int = 3) -> None:
        self.script = {cid: list(statuses) for cid, statuses in (script or {}).items()}
        self.max_attempts = max_attempts
        self.longest_hold: float | None = None  # every Retry-After is held, as a hook's by default
        self.sent: Counter[str] = Counter()
        self.log = logging.getLogger("stub-sender")
        self.settings = HilosConnectionSettings(conn_id="stub", base_url="https://api.hilos.io", token="t0ken")
        self.pacer = AdaptivePacer()
        self.breaker = CircuitBreaker.for_concurrency(1)
        self._lock = threading.Lock()

    def ensure_pool(self, size: int) -> None:
        self.breaker.resize(size)

    def send_update(self, update: ValidatedUpdate, *, attempt: int | None = None) -> dict[str, Any]:
        cid = update.conversation_id
        with self._lock:
            self.sent[cid] += 1
            statuses = self.script.get(cid, [200])
            status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
        if status == 200:
            self.breaker.succeeded()
            return {"id": cid}
        retryable = status in (429, 500, 502, 503, 504) or status == 0
        if not retryable:
            self.breaker.refused()
        elif status != 429:
            self.breaker.attempt_failed(f"HTTP {status}")
        error_class = HilosAPIError if retryable else HilosPermanentAPIError
        raise error_class(
            f"stub answer {status} for {cid}",
            status_code=status or None,
            method="PATCH",
            path=f"/api/inbox/conversation/{cid}/update",
            attempts=attempt or 1,
        )

    def planned_update(self, update: ValidatedUpdate) -> dict[str, Any]:
        return {"method": "PATCH", "url": self.settings.url(f"/x/{update.conversation_id}"), "body": update.body}

    def backoff_delay(self, attempt: int, retry_after: float | None = None) -> float:
        return 0.0

    def redact(self, text: str) -> str:
        return text


def ids(count: int) -> list[str]:
    return [str(uuid.UUID(int=i + 1)) for i in range(count)]


def fast_hook() -> HilosHook:
    """A hook whose retry waits are short (the logic is the same)."""
    return HilosHook(backoff_base=0.01, max_wait=0.05)


def landed(sandbox, rows: list[dict]) -> bool:
    return all(
        sandbox.mismatches(r["conversation_id"], {k: v for k, v in r.items() if k != "conversation_id"}) == []
        for r in rows
    )


def rows_for(ids: list[str], status: str = "RESOLVED") -> list[dict]:
    return [{"conversation_id": cid, "status": status, "tags": [{"name": f"w-{i % 5}"}]} for i, cid in enumerate(ids)]


def bodies(sandbox) -> dict[str, dict]:
    """The body of every PATCH the sandbox received, by conversation id."""
    return {entry["path"].split("/")[-2]: entry["body"] for entry in patches(sandbox)}


def patch(sb: HilosSandbox, cid: str, body, headers=None, **kwargs) -> requests.Response:
    return requests.patch(
        f"{sb.url}{NATIVE}/{cid}/update", json=body, headers=AUTH if headers is None else headers, timeout=10, **kwargs
    )


AUTH = {"Authorization": f"Token {TEST_TOKEN}"}
