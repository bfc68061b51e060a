"""Soak: 20,000 updates through the batch path at concurrency 32 with ~10% injected faults.

Prints what was lost (intended changes missing), what was extra (conversations changed outside the
intent), the faults injected, the retries, throughput, and the client's RSS over the run.
The CI-sized version is tests/test_reliability.py::test_soak_small.

    uv run python benchmarks/soak.py [--updates 20000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

import requests

TOKEN = "soak-token-0123456789"
FAULTS = [
    "--error-rate",
    "0.04",
    "--drop-rate",
    "0.02",
    "--truncate-rate",
    "0.02",
    "--throttle-rate",
    "0.02",
    "--retry-after",
    "0",
    "--fault-seed",
    "5",
]
STATUSES = ["NEW", "IN_PROGRESS", "RESOLVED", "CLOSED"]


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    n = args.updates
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_provider_hilos.sandbox.server",
            "--port",
            "0",
            "--token",
            TOKEN,
            "--conversations",
            str(n + 500),
            "--seed",
            "4",
            "--request-log-limit",
            "10",
            *FAULTS,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        url = proc.stdout.readline().strip()
        root = url
        os.environ["AIRFLOW_CONN_HILOS_DEFAULT"] = json.dumps({"conn_type": "hilos", "host": url, "password": TOKEN})
        from airflow_provider_hilos.hooks.hilos import HilosHook

        before = requests.get(f"{root}/_sandbox/state", timeout=120).json()["conversations"]
        ids = list(before)
        intent = [
            {
                "conversation_id": cid,
                "status": STATUSES[i % 4],
                "tags": [{"name": f"soak-{i}"}],
                "assigned_team": 1 + i % 4,
            }
            for i, cid in enumerate(ids[:n])
        ]
        samples: list[float] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(1.0):
                samples.append(rss_mb())

        start_rss = rss_mb()
        threading.Thread(target=sample, daemon=True).start()
        hook = HilosHook(pool_maxsize=args.concurrency, max_attempts=10, backoff_base=0.05, max_wait=2)
        started = time.perf_counter()
        result = hook.update_conversations(
            intent, max_concurrency=args.concurrency, failure_policy="never", progress_interval=10
        )
        elapsed = time.perf_counter() - started
        end_rss = rss_mb()
        stop.set()
        after_state = requests.get(f"{root}/_sandbox/state", timeout=120).json()
        faults = requests.get(f"{root}/_sandbox/faults", timeout=30).json()["injected"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    after = after_state["conversations"]
    wanted = {row["conversation_id"]: row for row in intent}
    lost = [
        cid
        for cid, row in wanted.items()
        if (after[cid]["status"], [t["name"] for t in after[cid]["tags"]], after[cid]["assigned_team"])
        != (row["status"], [t["name"] for t in row["tags"]], row["assigned_team"])
    ]
    extra = [cid for cid in ids if cid not in wanted and after[cid] != before[cid]]
    injected = sum(v for k, v in faults.items() if k != "ok")
    print(
        f"soak: {n:,} updates, concurrency {args.concurrency}, faults injected {injected:,} "
        f"({100 * injected / after_state['requests']:.1f}% of {after_state['requests']:,} requests: "
        f"{ {k: v for k, v in sorted(faults.items()) if k != 'ok'} })"
    )
    print(
        f"  updated {result.updated:,}, failed {result.failed}, lost {len(lost)}, extra {len(extra)}; "
        f"retries {after_state['requests'] - n:,}; {elapsed:.1f} s, {n / elapsed:.0f} updates/s"
    )
    print(
        f"  client RSS: {start_rss:.1f} MB at start, peak {max(samples or [start_rss]):.1f} MB, "
        f"end {end_rss:.1f} MB ({len(samples)} samples, 1 s apart, during the batch only)"
    )
    return 0 if not lost and not extra and result.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
