"""One run of a sync at a time, enforced, across processes: two processes syncing one state store send every change
once; a lease left by a killed process expires and the next run takes over (the operator's own waiting, deferral and
lost lease are in tests/unit/test_operators_sync.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from airflow_provider_hilos.sandbox.process import SandboxProcess
from tests.conftest import ROOT, TEST_TOKEN

#: One sync of the rows in argv[1] (a JSON Lines file), with its state in argv[2], as one run (argv[3]) of the task.
SYNC = textwrap.dedent("""
    import json, sys
    from airflow_provider_hilos.operators.sync import ConversationSyncOperator

    ConversationSyncOperator.LEASE_SECONDS = float(sys.argv[4])
    ConversationSyncOperator.LEASE_POLL_SECONDS = 0.2

    class TI:
        dag_id, task_id, map_index, try_number = "hilos_tests", "sync", -1, 1
        run_id = sys.argv[3]

        def xcom_push(self, key, value):
            pass

    op = ConversationSyncOperator(
        task_id="sync", state_path=sys.argv[1], state_store=sys.argv[2], checkpoint_path=sys.argv[2] + "/cp",
        max_concurrency=1, progress_interval=3600, wait_for_other_run=120,
    )
    print("RESULT " + json.dumps(op.execute({"ti": TI()})), flush=True)
""")


def start(desired: Path, state: Path, run_id: str, sandbox: SandboxProcess, lease: float = 60.0) -> subprocess.Popen:
    env = {**os.environ, "AIRFLOW_CONN_HILOS_DEFAULT": sandbox.connection_json(), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", SYNC, str(desired), str(state), run_id, str(lease)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def result_of(process: subprocess.Popen) -> tuple[dict, str]:
    out, _ = process.communicate(timeout=180)
    assert process.returncode == 0, out[-3000:]
    line = next(line for line in out.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :]), out


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def landed_patches(sandbox: SandboxProcess) -> Counter:
    return Counter(r["path"].split("/")[-2] for r in sandbox.requests() if r["method"] == "PATCH")


@pytest.fixture
def slow_sandbox():
    # 50 updates, one at a time, 200 ms each: a 10-second apply, longer than a second process takes to start
    with SandboxProcess("--conversations", "60", "--seed", "4", "--latency-ms", "200", token=TEST_TOKEN) as sandbox:
        yield sandbox


def desired_file(tmp_path: Path, sandbox: SandboxProcess) -> Path:
    ids = sandbox.conversation_ids()[:50]
    for cid in ids:  # every one differs from what is desired
        assert sandbox.conversation(cid)["status"] != "FLOW_PAUSED"
    path = tmp_path / "desired.jsonl"
    path.write_text("".join(json.dumps({"conversation_id": cid, "status": "FLOW_PAUSED"}) + "\n" for cid in ids))
    return path


def test_two_processes_syncing_one_store_send_each_change_once(tmp_path, slow_sandbox):
    desired, state = desired_file(tmp_path, slow_sandbox), tmp_path / "state"
    first = start(desired, state, "scheduled__1", slow_sandbox)
    wait_for(lambda: any(state.glob("*/lease.json")))  # the first run holds the lease
    second = start(desired, state, "manual__1", slow_sandbox)  # a manual run beside the scheduled one
    one, _ = result_of(first)
    two, said = result_of(second)
    sent = landed_patches(slow_sandbox)
    assert one["updated"] == 50 and sum(sent.values()) == 50 and set(sent.values()) == {1}  # 50 changes, 50 PATCHes
    assert two["to_update"] == 0 and two["unchanged"] == 50 and two["write_requests"] == 0
    assert "another run of this sync is under way (run scheduled__1" in said, said
    assert not (state / "lease.json").exists() and not any(state.glob("*/lease.json"))


def test_a_lease_left_by_kill_9_expires_and_the_next_run_takes_over(tmp_path, slow_sandbox):
    desired, state = desired_file(tmp_path, slow_sandbox), tmp_path / "state"
    killed = start(desired, state, "scheduled__1", slow_sandbox, lease=8.0)
    wait_for(lambda: any(state.glob("*/lease.json")))
    nxt = start(desired, state, "scheduled__2", slow_sandbox, lease=8.0)  # starts up while the first one applies
    wait_for(lambda: sum(landed_patches(slow_sandbox).values()) >= 10)
    os.kill(killed.pid, signal.SIGKILL)  # the worker dies holding the lease; nobody renews it any more
    killed.wait()
    result, said = result_of(nxt)
    assert "another run of this sync is under way (run scheduled__1" in said, said  # the dead run's lease, named
    assert "took over the lease of run scheduled__1, which had expired" in said
    assert result["failed"] == 0
    ids = slow_sandbox.conversation_ids()[:50]
    assert [cid for cid in ids if slow_sandbox.conversation(cid)["status"] != "FLOW_PAUSED"] == []
    assert sum(landed_patches(slow_sandbox).values()) <= 50 + 1  # at most the request in flight at the kill, twice
