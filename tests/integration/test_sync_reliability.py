"""A sync killed with SIGKILL half-way through its apply, then retried (the same task instance, as Airflow's retry):
nothing is lost, and at most ``max_concurrency`` updates (those in flight at the kill) are sent twice."""

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

from airflow_provider_hilos.sandbox import HilosSandbox, warehouse
from tests.conftest import ROOT, TEST_TOKEN
from tests.helpers import patches

KILLED_SYNC = textwrap.dedent("""
    import sys
    from airflow_provider_hilos.operators.sync import ConversationSyncOperator

    class TI:  # the same task instance both times: Airflow's retry of it
        dag_id, run_id, task_id, map_index = "hilos_tests", "crash_run", "sync", -1

        def xcom_push(self, key, value):
            pass

    ConversationSyncOperator.LEASE_SECONDS = 5  # the killed run's lease expires soon: the retry waits 5 s, not 60
    op = ConversationSyncOperator(
        task_id="sync", state_path=sys.argv[1], state_store=sys.argv[2], checkpoint_path=sys.argv[2] + "/checkpoints",
        compare_with=sys.argv[3], max_concurrency=int(sys.argv[4]), progress_interval=3600,
        column_map={"assignee_ids": "assigned", "team_id": "assigned_team"},
    )
    result = op.execute({"ti": TI()})
    print("RESULT", result["updated"], result["to_update"], result["unchanged"])
""")


@pytest.mark.parametrize("compare_with", ["hilos", "last_sync"])
def test_kill_9_during_the_apply_then_a_retry_loses_nothing(tmp_path, compare_with):
    concurrency = 8
    with HilosSandbox(
        conversations=1000, seed=9, token=TEST_TOKEN, request_log_limit=100_000, faults={"latency_ms": 5}
    ) as sandbox:
        rows = warehouse.desired_rows(sandbox.conversation_ids()[:900], seed=3)
        differing = sum(1 for row in rows if warehouse.mismatches(row, sandbox.conversation(row["conversation_id"])))
        desired = tmp_path / "desired.jsonl"
        desired.write_text("".join(json.dumps(row) + "\n" for row in rows))
        env = {**os.environ, "AIRFLOW_CONN_HILOS_DEFAULT": sandbox.connection_json(), "PYTHONPATH": str(ROOT)}
        args = [
            sys.executable,
            "-c",
            KILLED_SYNC,
            str(desired),
            str(tmp_path / "state"),
            compare_with,
            str(concurrency),
        ]
        first = subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while len([r for r in patches(sandbox) if r["status"] == 200]) < differing // 2 and time.monotonic() < deadline:
            assert first.poll() is None, first.stderr.read().decode()[-3000:]
            time.sleep(0.01)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
        applied_before = Counter(r["path"].split("/")[-2] for r in patches(sandbox) if r["status"] == 200)
        assert differing // 2 <= len(applied_before) < differing, "the sync should have been killed half-way"
        second = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stderr[-3000:]
        applied_all = Counter(r["path"].split("/")[-2] for r in patches(sandbox) if r["status"] == 200)
        lost = [row for row in rows if warehouse.mismatches(row, sandbox.conversation(row["conversation_id"]))]
        assert lost == []
        resent = [cid for cid in applied_before if applied_all[cid] > 1]
        assert len(resent) <= concurrency  # at most the requests in flight at the kill
        # hilos sends the conversations that differ; last_sync, with no snapshot yet, every desired one
        planned = differing if compare_with == "hilos" else len(rows)
        assert planned <= sum(applied_all.values()) <= planned + concurrency
    assert TEST_TOKEN not in second.stdout + second.stderr


KILLED_CONTACT_SYNC = textwrap.dedent("""
    import sys
    from airflow_provider_hilos.operators.contacts import ContactSyncOperator

    class TI:
        dag_id, run_id, task_id, map_index = "hilos_tests", "crash_run", "contacts", -1

        def xcom_push(self, key, value):
            pass

    ContactSyncOperator.LEASE_SECONDS = 5  # the killed run's lease expires soon: the retry waits 5 s, not 60
    op = ContactSyncOperator(
        task_id="contacts", state_path=sys.argv[1], state_store=sys.argv[2],
        checkpoint_path=sys.argv[2] + "/checkpoints", max_concurrency=int(sys.argv[3]), progress_interval=3600,
        column_map={"plan": "meta.plan"},
    )
    result = op.execute({"ti": TI()})
    print("RESULT", result["created"], result["updated"], result["unchanged"])
""")


def test_kill_9_during_a_contact_sync_then_a_retry_loses_nothing_and_creates_no_contact_twice(tmp_path):
    concurrency = 8
    with HilosSandbox(
        conversations=10,
        seed=9,
        token=TEST_TOKEN,
        request_log_limit=100_000,
        extra_contacts=600,
        faults={"latency_ms": 5},
    ) as sandbox:
        existing = [sandbox.contact(cid) for cid in sandbox.contact_ids()[:400]]
        rows = [{"phone": c["phone"], "first_name": f"Changed {i}", "plan": "pro"} for i, c in enumerate(existing)]
        rows += [{"phone": f"+5256{i:08d}", "first_name": f"New {i}", "plan": "trial"} for i in range(300)]
        before = len(sandbox.contact_ids())
        desired = tmp_path / "customers.jsonl"
        desired.write_text("".join(json.dumps(row) + "\n" for row in rows))
        env = {**os.environ, "AIRFLOW_CONN_HILOS_DEFAULT": sandbox.connection_json(), "PYTHONPATH": str(ROOT)}
        args = [sys.executable, "-c", KILLED_CONTACT_SYNC, str(desired), str(tmp_path / "state"), str(concurrency)]

        def landed() -> list[dict]:
            return [r for r in sandbox.requests() if r["method"] in ("POST", "PATCH") and r["status"] in (200, 201)]

        first = subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while len(landed()) < len(rows) // 2 and time.monotonic() < deadline:
            assert first.poll() is None, first.stderr.read().decode()[-3000:]
            time.sleep(0.01)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
        assert len(rows) // 2 <= len(landed()) < len(rows), "the sync should have been killed half-way"
        second = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stderr[-3000:]
        assert len(sandbox.contact_ids()) == before + 300  # every new customer created, none twice
        for row in rows:
            held = sandbox.contact_by_phone(row["phone"])
            assert held["first_name"] == row["first_name"] and held["meta"]["plan"] == row["plan"]
        assert len(landed()) <= len(rows) + concurrency  # at most the writes in flight at the kill, sent again
    assert TEST_TOKEN not in second.stdout + second.stderr
