"""One run of a sync at a time, enforced: two processes syncing one state store send every change once; a lease
left by a killed process expires and the next run takes over; a deferrable run waits in the triggerer; a run whose
lease was taken over stops sending and leaves the state alone."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from airflow_provider_hilos.exceptions import HilosSyncBusyError
from airflow_provider_hilos.operators.sync import SYNC_RESULT_XCOM_KEY, ConversationSyncOperator
from airflow_provider_hilos.sandbox import HilosSandbox
from airflow_provider_hilos.sandbox.process import SandboxProcess
from tests.conftest import ROOT, TEST_TOKEN, FakeTI
from tests.helpers import patches

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
    killed = start(desired, state, "scheduled__1", slow_sandbox, lease=15.0)
    wait_for(lambda: sum(landed_patches(slow_sandbox).values()) >= 10)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    landed_before = sum(landed_patches(slow_sandbox).values())
    began = time.monotonic()
    nxt = start(desired, state, "scheduled__2", slow_sandbox, lease=15.0)
    result, said = result_of(nxt)
    waited = time.monotonic() - began
    assert "another run of this sync is under way (run scheduled__1" in said, said  # the dead run's lease, named
    assert "took over the lease of run scheduled__1, which had expired" in said
    assert waited < 60  # it waited for the lease to expire (15 s after its last renewal), not forever
    assert result["failed"] == 0 and result["updated"] + landed_before >= 50
    wrong = [
        cid for cid in slow_sandbox.conversation_ids()[:50] if slow_sandbox.conversation(cid)["status"] != "FLOW_PAUSED"
    ]
    assert wrong == []
    assert sum(landed_patches(slow_sandbox).values()) <= 50 + 1  # at most the request in flight at the kill, twice


def test_a_run_that_waits_too_long_fails_naming_the_holder_and_sends_nothing(sb, tmp_path):
    from airflow_provider_hilos.storage import storage_path
    from airflow_provider_hilos.sync.lease import SyncLease
    from airflow_provider_hilos.sync.state import SyncStateStore, sync_owner

    store = SyncStateStore(storage_path(str(tmp_path / "state")), sync_owner("hilos_tests", "sync"))
    other = SyncLease(store.folder, run_id="scheduled__busy", try_number=3)
    assert other.try_acquire() is None
    task = ConversationSyncOperator(
        task_id="sync",
        state=[{"conversation_id": sb.conversation_ids()[0], "status": "CLOSED"}],
        state_store=str(tmp_path / "state"),
        wait_for_other_run=0.5,
    )
    task.LEASE_POLL_SECONDS = 0.1
    with pytest.raises(
        HilosSyncBusyError, match=r"holds its state \(run scheduled__busy \(try 3\) on .*waited"
    ) as busy:
        task.execute({"ti": FakeTI(task_id="sync")})
    assert "fails without sending anything" in str(busy.value) and sb.requests() == []
    other.release()


def test_a_deferrable_run_waits_for_the_other_run_in_the_triggerer(sb, tmp_path):
    from airflow.providers.common.compat.sdk import TaskDeferred

    from airflow_provider_hilos.storage import storage_path
    from airflow_provider_hilos.sync.lease import SyncLease
    from airflow_provider_hilos.sync.state import SyncStateStore, sync_owner

    store = SyncStateStore(storage_path(str(tmp_path / "state")), sync_owner("hilos_tests", "sync"))
    other = SyncLease(store.folder, run_id="scheduled__busy")
    assert other.try_acquire() is None
    rows = [{"conversation_id": cid, "status": "CLOSED"} for cid in sb.conversation_ids()[:5]]
    task = ConversationSyncOperator(
        task_id="sync", state=rows, state_store=str(tmp_path / "state"), deferrable=True, wait_for_other_run=600
    )
    ti = FakeTI(task_id="sync")
    with pytest.raises(TaskDeferred) as deferred:
        task.execute({"ti": ti})
    trigger = deferred.value.trigger
    _, kwargs = trigger.serialize()
    assert set(kwargs) == {"state_folder", "deadline", "poll_interval", "holder"}
    assert TEST_TOKEN not in json.dumps(kwargs) and rows[0]["conversation_id"] not in json.dumps(kwargs)
    assert sb.requests() == []  # nothing read while it waits
    trigger.poll_interval = 0.1
    threading.Timer(0.5, other.release).start()  # the other run ends

    async def first_event():
        async for event in trigger.run():
            return event.payload

    event = asyncio.run(first_event())
    assert event["status"] == "free"
    result = task.execute_after_lease({"ti": ti}, event, **deferred.value.kwargs)
    assert result["updated"] + result["unchanged"] == 5 and ti.pushed[SYNC_RESULT_XCOM_KEY] == result


def test_a_run_whose_lease_is_taken_over_stops_sending_and_leaves_the_state_alone(monkeypatch, tmp_path):
    with HilosSandbox(conversations=80, seed=2, token=TEST_TOKEN, faults={"latency_ms": 40}) as sandbox:
        monkeypatch.setenv("AIRFLOW_CONN_HILOS_DEFAULT", sandbox.connection_json())
        rows = [{"conversation_id": cid, "status": "FLOW_PAUSED"} for cid in sandbox.conversation_ids()]
        task = ConversationSyncOperator(
            task_id="sync", state=rows, state_store=str(tmp_path / "state"), max_concurrency=1, resume=False
        )
        task.LEASE_SECONDS = 0.6  # renewed every 0.2 s
        lease_files = []

        def take_over() -> None:  # another run takes the lease, as if this one had been stalled past it
            wait_for(lambda: len(patches(sandbox)) >= 5)
            (path,) = list((tmp_path / "state").glob("*/lease.json"))
            record = json.loads(path.read_text())
            path.write_text(json.dumps({**record, "token": "the-other-run", "run_id": "other"}))
            lease_files.append(path)

        thief = threading.Thread(target=take_over)
        thief.start()
        ti = FakeTI(task_id="sync")
        with pytest.raises(HilosSyncBusyError, match="lost its lease"):
            task.execute({"ti": ti})
        thief.join()
        sent = len(patches(sandbox))
        assert 5 <= sent < 40  # it stopped sending
        assert not list((tmp_path / "state").glob("*/state.jsonl"))  # nor wrote its state over the other run's
        assert json.loads(lease_files[0].read_text())["token"] == "the-other-run"  # and left the other's lease
        assert ti.pushed[SYNC_RESULT_XCOM_KEY]["state_path"] is None
