"""Faults survived: every intended update lands exactly as intended, nothing else changes, retries
stay within their bounds, and when they run out the error names the conversation and the cause.

Uses the sandbox's fault knobs on the single path (HilosHook.update_conversation, and the operator)
and on the batch path (HilosHook.update_conversations)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter

import pytest

from airflow_provider_hilos.exceptions import (
    HilosAPIError,
)
from airflow_provider_hilos.hooks.hilos import HilosHook
from airflow_provider_hilos.operators.conversation import (
    ConversationUpdateOperator,
)
from airflow_provider_hilos.sandbox import HilosSandbox
from airflow_provider_hilos.transport import HilosTransport
from tests.conftest import ROOT, TEST_TOKEN, FakeTI
from tests.helpers import landed, patches, rows_for

STATUSES = ["NEW", "IN_PROGRESS", "RESOLVED", "CLOSED"]


MAX_ATTEMPTS = 8


FAULTS = {
    "30% 500/502/503": {"error_rate": 0.3},
    "429 bursts with Retry-After": {"throttle_rate": 0.3, "retry_after_seconds": 0},
    "connections dropped mid-response": {"drop_rate": 0.3},
    "slower than the read timeout": {"slow_rate": 0.2, "slow_seconds": 0.5},
    "HTML page instead of JSON": {"error_rate": 0.3, "error_statuses": [502], "html_rate": 0.1},
    "truncated JSON": {"truncate_rate": 0.3},
}


@pytest.fixture
def sb(monkeypatch):
    with HilosSandbox(conversations=120, seed=5, token=TEST_TOKEN) as sandbox:
        monkeypatch.setenv("AIRFLOW_CONN_HILOS_DEFAULT", sandbox.connection_json(read_timeout=0.25))
        yield sandbox


def intent_for(ids: list[str], salt: int = 0) -> list[dict]:
    return [
        {
            "conversation_id": cid,
            "status": STATUSES[(i + salt) % 4],
            "tags": [{"name": f"t{salt}-{i}"}],
            "assigned": [{"id": 1 + (i % 12)}],
            "assigned_team": 1 + i % 4,
        }
        for i, cid in enumerate(ids)
    ]


def assert_exactly(sandbox: HilosSandbox, intent: list[dict], before: dict[str, dict]) -> None:
    """Every intended change landed exactly; every other conversation is as it was."""
    intended = {row["conversation_id"]: row for row in intent}
    for cid, old in before.items():
        now = sandbox.conversation(cid)
        if cid not in intended:
            assert now == old, f"{cid} changed but was not in the intent"
            continue
        row = intended[cid]
        expected = {**old, "status": row["status"], "assigned": row["assigned"], "assigned_team": row["assigned_team"]}
        assert {k: v for k, v in now.items() if k != "tags"} == {k: v for k, v in expected.items() if k != "tags"}
        assert [t["name"] for t in now["tags"]] == [t["name"] for t in row["tags"]]


def attempts_per_conversation(sandbox: HilosSandbox) -> Counter:
    return Counter(r["path"].split("/")[-2] for r in sandbox.requests() if r["method"] == "PATCH")


def fast_hook(**kwargs) -> HilosHook:
    return HilosHook(max_attempts=MAX_ATTEMPTS, backoff_base=0.01, max_wait=0.05, **kwargs)


KILLED_BATCH = textwrap.dedent("""
    import sys
    from airflow_provider_hilos.operators.conversation import ConversationBatchUpdateOperator

    class TI:  # the same task instance both times: Airflow's retry of it
        dag_id, run_id, task_id, map_index = "hilos_tests", "crash_run", "batch", -1

        def xcom_push(self, key, value):
            pass

    op = ConversationBatchUpdateOperator(task_id="b", updates_path=sys.argv[1], checkpoint_path=sys.argv[2],
                                         max_concurrency=int(sys.argv[3]), progress_interval=3600)
    result = op.execute({"ti": TI()})
    print("RESULT", result["updated"], result["already_applied"])
""")


@pytest.mark.parametrize("fault", list(FAULTS), ids=list(FAULTS))
def test_single_path_survives(sb, fault):
    sb.set_faults(fault_seed=7, **FAULTS[fault])
    ids = sb.conversation_ids()
    before = {cid: sb.conversation(cid) for cid in ids}
    intent = intent_for(ids[:30])
    hook = fast_hook()
    for row in intent:
        hook.update_conversation(row["conversation_id"], {k: v for k, v in row.items() if k != "conversation_id"})
    assert_exactly(sb, intent, before)
    attempts = attempts_per_conversation(sb)
    assert max(attempts.values()) <= MAX_ATTEMPTS
    assert sum(attempts.values()) > 30, "the fault should have forced some retries"
    assert sum(sb.faults.injected.get(k, 0) for k in sb.faults.injected if k != "ok") > 0


@pytest.mark.parametrize("fault", list(FAULTS), ids=list(FAULTS))
def test_batch_path_survives(sb, fault):
    sb.set_faults(fault_seed=11, **FAULTS[fault])
    ids = sb.conversation_ids()
    before = {cid: sb.conversation(cid) for cid in ids}
    intent = intent_for(ids[:100], salt=1)
    result = fast_hook().update_conversations(intent, max_concurrency=16)
    assert (result.updated, result.failed) == (100, 0)
    assert_exactly(sb, intent, before)
    assert max(attempts_per_conversation(sb).values()) <= MAX_ATTEMPTS


@pytest.mark.parametrize(
    ("fault", "cause"),
    [
        ({"error_rate": 1, "error_statuses": [503]}, "last answer HTTP 503"),
        ({"error_rate": 1, "error_statuses": [502]}, "non-JSON body (text/html)"),
        ({"throttle_rate": 1, "retry_after_seconds": 0}, "last answer HTTP 429"),
        ({"drop_rate": 1}, "connection"),
        ({"slow_rate": 1, "slow_seconds": 0.6}, "no answer within the read timeout (0.25 s)"),
        ({"truncate_rate": 1}, "unreadable body"),
        ({"html_rate": 1}, "non-JSON body (text/html)"),
    ],
    ids=["503", "502 html", "429", "drop", "slow", "truncated", "html 200"],
)
def test_exhausted_retries_fail_the_task_naming_conversation_and_cause(sb, monkeypatch, fault, cause):
    monkeypatch.setenv("AIRFLOW_CONN_HILOS_DEFAULT", sb.connection_json(read_timeout=0.25, max_attempts=3))
    monkeypatch.setattr(HilosTransport, "backoff_delay", lambda self, attempt, retry_after=None: 0.0)
    sb.set_faults(**fault)
    cid = sb.conversation_ids()[0]
    op = ConversationUpdateOperator(task_id="t", conversation_id=cid, status="CLOSED")

    with pytest.raises(HilosAPIError) as err:
        op.execute({"ti": FakeTI()})
    message = str(err.value)
    assert cid in message and cause in message and "3 attempt(s)" in message
    assert TEST_TOKEN not in message
    assert attempts_per_conversation(sb)[cid] == 3


def test_soak_small(monkeypatch):
    """The CI-sized soak: 2,000 updates, concurrency 32, ~10% faults; zero lost, zero extra.

    benchmarks/soak.py runs the full one (20,000 updates) and measures memory.
    """
    with HilosSandbox(
        conversations=2_100,
        seed=8,
        token=TEST_TOKEN,
        faults={
            "error_rate": 0.04,
            "drop_rate": 0.02,
            "truncate_rate": 0.02,
            "throttle_rate": 0.02,
            "retry_after_seconds": 0,
            "fault_seed": 3,
        },
    ) as sandbox:
        monkeypatch.setenv("AIRFLOW_CONN_HILOS_DEFAULT", sandbox.connection_json())
        ids = sandbox.conversation_ids()
        before = {cid: sandbox.conversation(cid) for cid in ids}
        intent = intent_for(ids[:2_000], salt=2)
        result = fast_hook().update_conversations(intent, max_concurrency=32)
        assert (result.total, result.updated, result.failed) == (2_000, 2_000, 0)
        assert_exactly(sandbox, intent, before)  # the 100 conversations outside the intent are untouched
        injected = sum(v for k, v in sandbox.faults.injected.items() if k != "ok")
        assert injected > 100
        assert max(attempts_per_conversation(sandbox).values()) <= MAX_ATTEMPTS


def test_kill_9_half_way_then_the_next_try_resends_at_most_the_rows_in_flight(tmp_path, monkeypatch):
    concurrency = 8
    with HilosSandbox(
        conversations=1200, seed=9, token=TEST_TOKEN, request_log_limit=100_000, faults={"latency_ms": 5}
    ) as sandbox:
        rows = rows_for(sandbox.conversation_ids()[:1200])
        updates = tmp_path / "updates.jsonl"
        updates.write_text("".join(json.dumps(r) + "\n" for r in rows))
        env = {**os.environ, "AIRFLOW_CONN_HILOS_DEFAULT": sandbox.connection_json(), "PYTHONPATH": str(ROOT)}
        args = [sys.executable, "-c", KILLED_BATCH, str(updates), str(tmp_path / "checkpoints"), str(concurrency)]
        first = subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while len([r for r in patches(sandbox) if r["status"] == 200]) < 600 and time.monotonic() < deadline:
            assert first.poll() is None, first.stderr.read().decode()[-3000:]
            time.sleep(0.01)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
        applied_before = Counter(r["path"].split("/")[-2] for r in patches(sandbox) if r["status"] == 200)
        assert 600 <= len(applied_before) < 1200, "the batch should have been killed half-way"
        second = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stderr[-3000:]
        applied_all = Counter(r["path"].split("/")[-2] for r in patches(sandbox) if r["status"] == 200)
        assert landed(sandbox, rows)  # lost: none
        resent = [cid for cid in applied_before if applied_all[cid] > 1]
        assert len(resent) <= concurrency  # re-sent: at most the requests in flight at the kill
        updated, already = map(int, second.stdout.split("RESULT")[1].split())
        assert updated + already == 1200 and already >= len(applied_before) - concurrency
    assert TEST_TOKEN not in second.stdout + second.stderr
