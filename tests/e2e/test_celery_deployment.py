"""The sharded CRM sync on Airflow 3's CeleryExecutor: PostgreSQL, Redis, two workers, one API quota.

A deployment as data teams run one, on loopback: a throwaway PostgreSQL cluster as the metadata DB,
Redis as the Celery broker, api-server, scheduler and dag-processor, and two Celery workers as separate
processes with their own hostnames (``worker-a``, ``worker-b``). The Hilos sandbox is the API, with a
token bucket of exactly the example DAG's ``API_QUOTA``. Workers get the ``hilos_default`` connection
from the environment (nothing in the DAG). Everything is stopped by process id, also when a test fails.

1. 20,000 updates over 4 shards: every one lands, shards ran on both workers, no one-second window
   over the quota (+10 %), no 429.
2. A worker is killed with SIGKILL mid-run: its shards are retried on the other worker and skip the
   rows they had applied (at most ``max_concurrency`` sent again each); nothing is lost.
3. The token is in none of the task or worker logs.

Figures (updates/s over the 4 shards against the quota) are printed; run with ``-s`` to see them.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import shutil
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import pytest

from airflow_provider_hilos.sandbox import HilosSandbox
from tests.conftest import EXAMPLE_DAGS, ROOT
from tests.e2e.airflow_deployment import AirflowDeployment
from tests.e2e.services import PostgresServer, RedisServer

pytestmark = pytest.mark.e2e  # the whole file runs on one xdist worker (scripts/dev.py: --dist loadfile)

TOKEN = "hilos-CELERY-token-Zx4Pq9Lm"
DAG_ID = "hilos_crm_sync_sharded"
WORKERS = ("worker-a", "worker-b")
ROWS = 20_000
KILL_ROWS = 8_000
ARTIFACTS = ROOT / "test-artifacts" / "celery"
FIGURES = ROOT / "test-artifacts" / "celery-figures.txt"


def example():
    spec = importlib.util.spec_from_file_location("example_sharded", EXAMPLE_DAGS / f"{DAG_ID}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SHARDED = example()


@pytest.fixture(scope="module")
def sandbox():
    quota = SHARDED.API_QUOTA
    faults = {"rate_limit_per_second": quota, "rate_limit_burst": int(quota // 4)}  # 250 ms of slack
    with HilosSandbox(conversations=ROWS, seed=11, token=TOKEN, request_log_limit=4 * ROWS, faults=faults) as sb:
        yield sb


@pytest.fixture(scope="module")
def celery(sandbox, tmp_path_factory):
    """The deployment; yields it with ``workers``: name -> Popen."""
    pg, redis = PostgresServer(), RedisServer()
    atexit.register(pg.stop)
    atexit.register(redis.stop)
    deployment: AirflowDeployment | None = None
    try:
        pg.start()
        redis.start()
        deployment = AirflowDeployment(
            EXAMPLE_DAGS,
            {
                "AIRFLOW_CONN_HILOS_DEFAULT": sandbox.connection_json(),
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg.url,
                "AIRFLOW__CELERY__BROKER_URL": redis.url,
                "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + pg.url,
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
                "AIRFLOW__CORE__PARALLELISM": "16",
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.e2e.worker_hostname.hostname",
                "PYTHONPATH": str(ROOT),
                # a lost worker is noticed in seconds, and its task retried at once (production: minutes)
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "15",
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "3",
                "AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY": "1",
            },
            components=("api-server", "scheduler", "dag-processor"),
        )
        atexit.register(deployment.stop)
        deployment.start()
        workers = {}
        for name in WORKERS:
            workers[name] = deployment.spawn(
                name,
                ["celery", "worker", "--celery-hostname", name, "--concurrency", "2", "--skip-serve-logs"],
                {"HILOS_TEST_WORKER_NAME": name},
            )
        deadline = time.monotonic() + 120
        while not all(f"{name} ready" in (deployment.home / f"{name}.log").read_text() for name in WORKERS):
            for name, proc in workers.items():
                assert proc.poll() is None, deployment.log_tail(name)
            assert time.monotonic() < deadline, "\n".join(deployment.log_tail(n) for n in WORKERS)
            time.sleep(1)
        deployment.wait_for_dag(DAG_ID)
        response = deployment.api(
            "POST", "/api/v2/pools", json={"name": SHARDED.POOL, "slots": SHARDED.SHARDS, "include_deferred": False}
        )
        assert response.status_code == 201, response.text
        response = deployment.api("PATCH", f"/api/v2/dags/{DAG_ID}", json={"is_paused": False})
        assert response.status_code == 200, response.text
        deployment.workers = workers
        yield deployment
    finally:
        if deployment is not None:
            deployment.stop()
            shutil.rmtree(ARTIFACTS, ignore_errors=True)
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            for log in deployment.home.glob("*.log"):
                shutil.copy(log, ARTIFACTS / log.name)
            if (deployment.home / "logs").exists():
                shutil.copytree(deployment.home / "logs", ARTIFACTS / "task-logs", dirs_exist_ok=True)
        redis.stop()
        pg.stop()
        if deployment is not None:
            left = [p for p in (pg.process, redis.process, *deployment.processes.values()) if p and p.poll() is None]
            deployment.cleanup()
            assert not left, f"still running after the deployment stopped: {left}"


def change_set(path: Path, ids: list[str], wave: int) -> dict[str, dict[str, Any]]:
    """A JSON Lines change set as a warehouse would export it (plain tag names and ids); returns the intent."""
    statuses = ["CLOSED", "RESOLVED", "IN_PROGRESS", "FLOW_PAUSED"]
    intent = {}
    for i, cid in enumerate(ids):
        tags = [f"wave-{wave}", f"segment-{i % 7}"]
        intent[cid] = {"status": statuses[(i + wave) % 4], "tags": tags, "assigned_team": i % 4 + 1}
    path.write_text("".join(json.dumps({"conversation_id": cid, **fields}) + "\n" for cid, fields in intent.items()))
    return intent


def trigger(celery, updates_path: Path) -> str:
    conf = {"updates_path": str(updates_path)}
    response = celery.api("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": conf})
    assert response.status_code == 200, response.text
    return response.json()["dag_run_id"]


def start_sync(celery, sandbox, folder: Path, rows: int, wave: int) -> tuple[str, dict[str, dict[str, Any]]]:
    """Write a change set for the first ``rows`` conversations, clear the sandbox's log, trigger the DAG;
    returns the run id and the intent."""
    intent = change_set(folder / "changes.jsonl", sandbox.conversation_ids()[:rows], wave=wave)
    sandbox.clear_requests()
    return trigger(celery, folder / "changes.jsonl"), intent


def not_landed(sandbox, intent: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """The conversations whose intended fields the sandbox does not show, with those fields."""
    return {cid: m for cid, fields in intent.items() if (m := sandbox.mismatches(cid, fields))}


def shard_instances(celery, run_id: str) -> list[dict[str, Any]]:
    response = celery.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances", params={"limit": 100})
    return sorted(
        (ti for ti in response.json()["task_instances"] if ti["task_id"] == "sync_shard"), key=lambda t: t["map_index"]
    )


def patches(sandbox) -> list[dict[str, Any]]:
    return [r for r in sandbox.requests() if r["method"] == "PATCH"]


def busiest_second(requests: list[dict[str, Any]]) -> int:
    """The most requests the sandbox saw in any one-second window (windows starting at every request)."""
    times = sorted(r["time"] for r in requests)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best


def figures(label: str, sent: list[dict[str, Any]], quota: float) -> str:
    span = max(r["time"] for r in sent) - min(r["time"] for r in sent)
    rate = len(sent) / span if span else float("nan")
    line = (
        f"{label}: {len(sent)} PATCHes in {span:.1f} s = {rate:.0f} updates/s over {SHARDED.SHARDS} shards, "
        f"{rate / quota:.0%} of the {quota:.0f}/s quota; busiest one-second window {busiest_second(sent)}"
    )
    print(line)
    return line


def test_sharded_sync_spreads_over_both_workers_under_the_quota(celery, sandbox, tmp_path):
    quota = SHARDED.API_QUOTA
    run_id, intent = start_sync(celery, sandbox, tmp_path, ROWS, wave=1)
    run = celery.wait_for_run(DAG_ID, run_id, timeout=400)
    assert run["state"] == "success", "\n".join(celery.log_tail(n) for n in ("scheduler", *WORKERS))

    instances = shard_instances(celery, run_id)
    assert [ti["map_index"] for ti in instances] == list(range(SHARDED.SHARDS))
    assert {ti["hostname"] for ti in instances} == set(WORKERS), instances  # both workers took shards
    sent = patches(sandbox)
    assert Counter(r["status"] for r in sent) == {200: ROWS}  # every row once, no 429, nothing else
    assert busiest_second(sent) <= quota * 1.1
    assert not_landed(sandbox, intent) == {}
    xcom = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/summarize/xcomEntries/return_value"
    value = celery.api("GET", xcom).json()["value"]
    value = json.loads(value) if isinstance(value, str) else value
    assert (value["total"], value["updated"], value["failed"], value["throttled"]) == (ROWS, ROWS, 0, 0)
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    with FIGURES.open("w") as out:
        out.write(figures("20,000 updates, 2 workers", sent, quota) + "\n")
    assert_no_token_in_any_log(celery)


def test_a_killed_worker_s_shards_finish_on_the_other_worker(celery, sandbox, tmp_path):
    quota = SHARDED.API_QUOTA
    run_id, intent = start_sync(celery, sandbox, tmp_path, KILL_ROWS, wave=2)

    # wait until every shard is running and has applied some rows, then take a worker away (kill -9)
    deadline = time.monotonic() + 180
    while True:
        running = [ti for ti in shard_instances(celery, run_id) if ti["state"] == "running"]
        if len(running) == SHARDED.SHARDS and sandbox.state.request_count >= KILL_ROWS // 5:
            break
        assert time.monotonic() < deadline, f"shards not running: {shard_instances(celery, run_id)}"
        time.sleep(0.2)
    victim = running[0]["hostname"]
    (survivor,) = set(WORKERS) - {victim}
    lost = [ti["map_index"] for ti in running if ti["hostname"] == victim]
    process = celery.workers[victim]
    tree = [process.pid] + [c.pid for c in psutil.Process(process.pid).children(recursive=True)]
    os.killpg(process.pid, signal.SIGKILL)
    for pid in tree:  # the worker, its pool and the task processes: a machine lost, not a polite stop
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait(timeout=10)
    applied_at_kill = sandbox.state.request_count

    run = celery.wait_for_run(DAG_ID, run_id, timeout=400)
    assert run["state"] == "success", "\n".join(celery.log_tail(n) for n in ("scheduler", survivor))
    assert not [pid for pid in tree if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]

    instances = {ti["map_index"]: ti for ti in shard_instances(celery, run_id)}
    for index in lost:  # retried by Airflow, on the worker that is left
        assert instances[index]["try_number"] == 2, instances[index]
        assert instances[index]["hostname"] == survivor
        tries = celery.api(
            "GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/sync_shard/{index}/tries"
        ).json()["task_instances"]
        assert [(t["try_number"], t["hostname"]) for t in tries][:2] == [(1, victim), (2, survivor)]

    sent = patches(sandbox)
    assert Counter(r["status"] for r in sent).keys() == {200}  # no 429
    assert busiest_second(sent) <= quota * 1.1
    assert not_landed(sandbox, intent) == {}
    per_conversation = Counter(r["path"].split("/")[-2] for r in sent)
    assert set(per_conversation) == set(intent)
    sent_again = sum(n - 1 for n in per_conversation.values())
    max_concurrency = SHARDED.dag.get_task("sync_shard").partial_kwargs["max_concurrency"]
    assert sent_again <= max_concurrency * len(lost), (sent_again, lost)
    line = figures(f"{KILL_ROWS:,} updates, worker killed after {applied_at_kill}", sent, quota)
    with FIGURES.open("a") as out:
        out.write(f"{line}; shards {lost} retried on {survivor}; {sent_again} row(s) sent twice\n")
    assert_no_token_in_any_log(celery)


def assert_no_token_in_any_log(celery) -> None:
    """The token is in no worker or task log of the deployment (called by each test once its DAG ran: with
    pytest-xdist, a test on its own could meet a fresh deployment that has no logs yet)."""
    logs = [p for p in celery.home.rglob("*") if p.is_file() and (p.suffix == ".log" or "logs" in p.parts)]
    task_logs = [p for p in logs if "dag_id=" in str(p)]
    assert task_logs, "no task logs were written"
    assert any("sync_shard" in str(p) for p in task_logs)
    assert [p for p in logs if TOKEN in p.read_text(errors="replace")] == []
