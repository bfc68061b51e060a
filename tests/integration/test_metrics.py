"""The provider's metrics reach a real statsd socket."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

from tests.conftest import ROOT, TEST_TOKEN

METRICS_SCRIPT = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, sys.argv[1])
    from airflow_provider_hilos.operators.conversation import ConversationUpdateOperator
    from airflow_provider_hilos.hooks.hilos import HilosHook
    from airflow_provider_hilos.sandbox import HilosSandbox
    from tests.conftest import FakeTI

    with HilosSandbox(conversations=10, token=os.environ["TOKEN"]) as sb:
        os.environ["AIRFLOW_CONN_HILOS_DEFAULT"] = sb.connection_json()
        ids = sb.conversation_ids()
        sb.fail_next("429")  # the single update is throttled once, then applied
        ConversationUpdateOperator(task_id="one", conversation_id=ids[0], status="CLOSED").execute({"ti": FakeTI()})
        sb.fail_next("503", 2)  # two batch rows are retried once each
        missing = "00000000-0000-4000-8000-000000000000"
        rows = [{"conversation_id": c, "status": "RESOLVED"} for c in ids[1:6]] + [
            {"conversation_id": missing, "status": "NEW"}
        ]
        result = HilosHook(backoff_base=0.01).update_conversations(rows, max_concurrency=1, failure_policy="never")
        print("RESULT", result.updated, result.failed, result.retried)
    """
)


def test_metrics_reach_statsd(tmp_path):
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(0.5)
    env = {
        **os.environ,
        "TOKEN": TEST_TOKEN,
        "AIRFLOW__METRICS__STATSD_ON": "True",
        "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
        "AIRFLOW__METRICS__STATSD_PORT": str(listener.getsockname()[1]),
        "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
    }
    try:
        done = subprocess.run(
            [sys.executable, "-c", METRICS_SCRIPT, str(ROOT)], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert "RESULT 5 1 2" in done.stdout
        packets = []
        while True:
            try:
                packets.append(listener.recv(65536).decode())
            except TimeoutError:
                break
    finally:
        listener.close()
    lines = [line for packet in packets for line in packet.splitlines() if line.startswith("airflow.hilos.")]
    counters: dict[str, int] = {}
    timings = 0
    for line in lines:
        name, rest = line.split(":", 1)
        value, kind = rest.split("|")[:2]
        if kind == "c":
            counters[name] = counters.get(name, 0) + int(float(value))
        elif kind == "ms" and name == "airflow.hilos.request.duration":
            timings += 1
            assert float(value) >= 0
    assert counters == {
        "airflow.hilos.updates.applied": 6,  # the single update and five batch rows
        "airflow.hilos.updates.failed": 1,  # the unknown conversation
        "airflow.hilos.requests.retried": 3,  # one retry after the 429, two batch retries after 503s
        "airflow.hilos.requests.throttled": 1,
    }
    assert timings == 2 + 6 + 2  # every request answered: 429 + 200, six batch rows, two 503s
    assert TEST_TOKEN not in "".join(packets)
