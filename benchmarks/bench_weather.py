"""Benchmark: the batch path in a real API's weather (issue 11's five scenarios), figures from one run.

Against the sandbox in its own process (``hilos-sandbox``), 20 ms latency per request, concurrency 16,
N = 2,000 unless said:

1. calm: wall time ``t0``;
2. 5 % of requests answered 429 at random with ``Retry-After: 1``:
   target wall <= t0 + (429s x 1 s / concurrency) x 1.5;
3. a token-bucket limit of 100 requests/s (burst 10, a tenth of a second's worth), no client rate set:
   target >= 90 % of 100/s over the whole run, <= 5 % of requests answered 429; with
   ``max_requests_per_second=100``: >= 97 %, <= 1 %;
4. an outage (every request answered 500/502/503), 5,000 rows, ``fail_at_end``: target <= 10 x
   concurrency requests before the batch stops, with a message saying the API is unavailable;
5. a crash: ``kill -9`` of the process running a 20,000-row batch about half-way, then the task again:
   target 0 rows lost, <= concurrency already-applied rows sent again.

    python3 scripts/dev.py bench-weather      # or: uv run python benchmarks/bench_weather.py
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import requests
from bench_batch import LATENCY_MS, ROOT, SandboxProcess, rows
from results import Report

CONCURRENCY = 16


def sandbox_stats(sb: SandboxProcess) -> dict[str, Any]:
    faults = requests.get(f"{sb.url}/_sandbox/faults", timeout=30).json()
    total = requests.get(f"{sb.url}/_sandbox/requests", timeout=60).json()["total"]
    return {"requests": total, "429": faults["injected"].get("429", 0)}


def reset(sb: SandboxProcess, **faults: Any) -> None:
    sb.reset()
    sb.set_faults(latency_ms=LATENCY_MS, **faults)


def run_batch(sb: SandboxProcess, n: int, **kwargs: Any) -> tuple[float, Any, Exception | None]:
    from airflow_provider_hilos.hooks.hilos import HilosHook

    hook = HilosHook(pool_maxsize=CONCURRENCY)
    data = rows(sb.ids, n, "RESOLVED")
    start = time.perf_counter()
    error: Exception | None = None
    result = None
    try:
        result = hook.update_conversations(data, max_concurrency=CONCURRENCY, progress_interval=3600, **kwargs)
    except Exception as exc:  # the outage scenario ends in HilosAPIUnavailableError
        error = exc
    finally:
        hook.close()
    return time.perf_counter() - start, result, error


CRASH_CHILD = textwrap.dedent("""
    import sys
    from airflow_provider_hilos.operators.conversation import ConversationBatchUpdateOperator

    class TI:  # the same task instance both times, as Airflow's retry of it
        dag_id, run_id, task_id, map_index = "bench", "crash", "batch", -1

        def xcom_push(self, key, value):
            pass

    op = ConversationBatchUpdateOperator(task_id="batch", updates_path=sys.argv[1], checkpoint_path=sys.argv[2],
                                         max_concurrency=int(sys.argv[3]), progress_interval=3600)
    result = op.execute({"ti": TI()})
    print("RESULT", result["updated"], result["already_applied"], result["duration_seconds"])
""")


def crash(n: int) -> dict[str, Any]:
    with SandboxProcess(
        "--conversations", str(n), "--seed", "4", "--latency-ms", str(LATENCY_MS), "--request-log-limit", str(3 * n)
    ) as sb:
        work = Path(tempfile.mkdtemp(prefix="hilos-bench-crash-"))
        data = rows(sb.ids, n, "CLOSED")  # one row per conversation
        updates = work / "updates.jsonl"
        updates.write_text("".join(json.dumps(r) + "\n" for r in data))
        env = {**os.environ, "AIRFLOW_CONN_HILOS_DEFAULT": sb.connection_json()}
        args = [sys.executable, "-c", CRASH_CHILD, str(updates), str(work / "checkpoints"), str(CONCURRENCY)]

        def applied() -> Counter:
            log = requests.get(f"{sb.url}/_sandbox/requests", timeout=120).json()["requests"]
            return Counter(r["path"].split("/")[-2] for r in log if r["method"] == "PATCH" and r["status"] == 200)

        first = subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while requests.get(f"{sb.url}/_sandbox/requests", timeout=60).json()["total"] < n // 2:
            time.sleep(0.05)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        before = applied()
        second = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, check=True)
        after = applied()
        state = requests.get(f"{sb.url}/_sandbox/state", timeout=120).json()["conversations"]
        lost = sum(state[r["conversation_id"]]["status"] != "CLOSED" for r in data)
        updated, already, seconds = second.stdout.split("RESULT")[1].split()
        return {
            "applied_before_kill": len(before),
            "resent": sum(after[c] > 1 for c in before),
            "lost": lost,
            "second_updated": int(updated),
            "second_already_applied": int(already),
            "second_seconds": float(seconds),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller N (a smoke run; targets not meaningful)")
    args = parser.parse_args()
    n, n_outage, n_crash = (400, 1000, 4000) if args.quick else (2000, 5000, 20_000)
    started = time.perf_counter()
    out = Report("bench_weather", "python3 scripts/dev.py bench-weather")
    out.line(
        f"Hilos batch weather benchmark: sandbox in its own process, {LATENCY_MS:g} ms latency, concurrency "
        f"{CONCURRENCY}, one run each; {os.cpu_count()} CPU(s), Python {sys.version.split()[0]}"
    )
    lines: list[str] = []
    verdicts: list[bool] = []

    def report(line: str, ok: bool) -> None:
        verdicts.append(ok)
        lines.append(f"{'met ' if ok else 'MISS'}  {line}")
        print(lines[-1], flush=True)

    with SandboxProcess("--conversations", str(n_outage), "--seed", "1", "--latency-ms", str(LATENCY_MS)) as sb:
        os.environ["AIRFLOW_CONN_HILOS_DEFAULT"] = sb.connection_json()
        reset(sb)
        t0, result, _ = run_batch(sb, n)
        report(f"1 calm: {n} updates in {t0:.2f} s ({n / t0:.0f}/s)", result.updated == n)

        reset(sb, throttle_rate=0.05, retry_after_seconds=1, fault_seed=11)
        wall, result, _ = run_batch(sb, n)
        throttled = sandbox_stats(sb)["429"]
        bound = t0 + throttled * 1.0 / CONCURRENCY * 1.5
        report(
            f"2 5% random 429 (Retry-After 1): {wall:.2f} s for {n} updates, {throttled} 429s; target <= "
            f"{t0:.2f} + {throttled} x 1 s / {CONCURRENCY} x 1.5 = {bound:.2f} s ({wall / bound:.0%} of it); "
            f"{result.retried} retries",
            wall <= bound and result.updated == n,
        )

        for ceiling, min_share, max_429 in ((None, 0.90, 0.05), (100, 0.97, 0.01)):
            reset(sb, rate_limit_per_second=100, rate_limit_burst=10, retry_after_seconds=1)
            wall, result, _ = run_batch(sb, n, max_requests_per_second=ceiling)
            stats = sandbox_stats(sb)
            rate, share = n / wall, stats["429"] / stats["requests"]
            label = "no client rate" if ceiling is None else "max_requests_per_second=100"
            report(
                f"3 token bucket 100/s (burst 10), {label}: {rate:.1f} updates/s = {rate / 100:.1%} of 100/s over "
                f"the whole run ({wall:.1f} s), {stats['429']} of {stats['requests']} requests answered 429 "
                f"({share:.1%}); target >= {min_share:.0%}, <= {max_429:.0%}",
                rate >= min_share * 100 and share <= max_429 and result.updated == n,
            )

        reset(sb, error_rate=1, error_statuses=[500, 502, 503], retry_after_seconds=1)
        wall, result, error = run_batch(sb, n_outage)
        sent = sandbox_stats(sb)["requests"]
        message = str(error or "")
        report(
            f"4 outage, {n_outage} rows, fail_at_end: stopped after {sent} requests in {wall:.1f} s (target <= "
            f"{10 * CONCURRENCY}); {type(error).__name__}: {message[:150]}...",
            sent <= 10 * CONCURRENCY and "looks unavailable" in message,
        )

    crashed = crash(n_crash)
    report(
        f"5 crash: kill -9 of a {n_crash}-row batch after {crashed['applied_before_kill']} rows applied; the next "
        f"try: {crashed['second_already_applied']} already applied skipped, {crashed['second_updated']} sent in "
        f"{crashed['second_seconds']:.1f} s; lost {crashed['lost']} (target 0), already-applied rows sent again "
        f"{crashed['resent']} (target <= {CONCURRENCY})",
        crashed["lost"] == 0 and crashed["resent"] <= CONCURRENCY,
    )
    for line in lines:
        out.lines.append(line)
    out.line(
        f"{sum(verdicts)} of {len(verdicts)} targets met; benchmark wall time {time.perf_counter() - started:.0f} s"
    )
    if not args.quick:
        out.write(targets_met=sum(verdicts), targets=len(verdicts), calm_seconds=round(t0, 2))
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
