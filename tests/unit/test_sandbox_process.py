"""The sandbox in a process of its own: started on a free loopback port, driven over HTTP, stopped by its pid."""

from __future__ import annotations

import os

import pytest
import requests

from airflow_provider_hilos.sandbox.process import SandboxProcess


@pytest.mark.slow  # starts the sandbox in a process of its own: not in the --fast tier
def test_a_sandbox_process_serves_the_api_and_its_inspection_and_stops_with_its_process():
    with SandboxProcess("--conversations", "3", "--seed", "5") as sandbox:
        assert sandbox.url.startswith("http://127.0.0.1:")
        pid = sandbox._process.pid  # type: ignore[union-attr]
        ids = sandbox.conversation_ids()
        assert len(ids) == 3
        answer = requests.patch(
            f"{sandbox.url}/api/inbox/conversation/{ids[0]}/update",
            json={"status": "CLOSED"},
            headers={"Authorization": f"Token {sandbox.token}"},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        assert sandbox.mismatches(ids[0], {"status": "CLOSED"}) == []
        assert [r["method"] for r in sandbox.requests()] == ["PATCH"]
        sandbox.set_faults(error_rate=1, error_statuses=[503])
        failed = requests.patch(
            f"{sandbox.url}/api/inbox/conversation/{ids[1]}/update",
            json={"status": "CLOSED"},
            headers={"Authorization": f"Token {sandbox.token}"},
            timeout=10,
        )
        assert failed.status_code == 503
        sandbox.reset()
        assert sandbox.requests() == []
        assert sandbox.connection()["password"] == sandbox.token
    with pytest.raises(ProcessLookupError):  # stopped: the process is gone
        os.kill(pid, 0)


@pytest.mark.slow
def test_a_sandbox_process_can_run_at_another_priority():
    with SandboxProcess("--conversations", "1", priority=5) as sandbox:  # a positive one is always allowed
        assert os.getpriority(os.PRIO_PROCESS, sandbox._process.pid) == 5  # type: ignore[union-attr]
        assert len(sandbox.conversation_ids()) == 1
