"""Benchmark: bulk conversation updates against the Hilos sandbox, versus the alternatives.

Prints one table, measured in one run: updates/s and the ratio to the ideal bound
``N x latency / concurrency`` for

1. the batch path (``HilosHook.update_conversations``, what ConversationBatchUpdateOperator runs),
2. a sequential loop over ``HilosHook.update_conversation``,
3. ``apache-airflow-providers-http``'s ``HttpHook`` in a loop (the peer a user would reach for today),
4. mapped ``ConversationUpdateOperator`` tasks run by Airflow (``airflow dags test``),

then the peak RSS of streaming 100,000 updates from a JSON Lines file, against an idle Python
with the provider imported. The sandbox runs in its own process, 20 ms latency per request.

    python3 scripts/dev.py bench            # or: uv run python benchmarks/bench_batch.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from results import Report

from airflow_provider_hilos.sandbox.process import SandboxProcess as Sandbox

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-token-0123456789"
LATENCY_MS = 20.0


class SandboxProcess(Sandbox):
    """``hilos-sandbox`` in a child process (so its CPU does not share the client's GIL), with a short request log
    and its conversation ids at hand."""

    def __init__(self, *args: str) -> None:
        super().__init__("--request-log-limit", "100", *args, token=TOKEN)

    def __enter__(self) -> SandboxProcess:
        super().__enter__()
        self.ids: list[str] = self.conversation_ids()
        return self


def rows(ids: list[str], n: int, status: str) -> list[dict[str, Any]]:
    return [
        {"conversation_id": ids[i % len(ids)], "status": status, "tags": [{"name": f"bench-{i % 7}"}]} for i in range(n)
    ]


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_batch(sb: SandboxProcess, n: int, concurrency: int, repeats: int) -> float:
    from airflow_provider_hilos.hooks.hilos import HilosHook

    hook = HilosHook(pool_maxsize=concurrency)
    data = rows(sb.ids, n, "RESOLVED")

    def run() -> None:
        result = hook.update_conversations(data, max_concurrency=concurrency, progress_interval=3600)
        assert result.updated == n, result

    return timed(run, repeats)


def bench_sequential(sb: SandboxProcess, n: int, repeats: int) -> float:
    from airflow_provider_hilos.hooks.hilos import HilosHook

    hook = HilosHook()
    data = rows(sb.ids, n, "IN_PROGRESS")

    def run() -> None:
        for row in data:
            hook.update_conversation(row["conversation_id"], {k: v for k, v in row.items() if k != "conversation_id"})

    return timed(run, repeats)


def bench_http_hook(sb: SandboxProcess, n: int, repeats: int) -> float:
    from airflow.providers.http.hooks.http import HttpHook

    os.environ["AIRFLOW_CONN_HILOS_HTTP"] = json.dumps(
        {"conn_type": "http", "host": sb.url, "extra": {"Authorization": f"Token {TOKEN}"}}
    )
    hook = HttpHook(method="PATCH", http_conn_id="hilos_http")
    data = rows(sb.ids, n, "NEW")

    def run() -> None:
        for row in data:
            body = {k: v for k, v in row.items() if k != "conversation_id"}
            hook.run(f"api/inbox/conversation/{row['conversation_id']}/update", json=body)

    return timed(run, repeats)


MAPPED_DAG = textwrap.dedent("""
    import pendulum
    from airflow.sdk import DAG, task
    from airflow_provider_hilos.operators.conversation import ConversationUpdateOperator

    with DAG("bench_mapped", schedule=None, start_date=pendulum.datetime(2025, 1, 1), catchup=False):
        @task
        def changes(**context):
            return [{"conversation_id": cid, "payload": {"status": "CLOSED"}} for cid in context["dag_run"].conf["ids"]]

        ConversationUpdateOperator.partial(task_id="update").expand_kwargs(changes())
""")


def bench_mapped(sb: SandboxProcess, n: int) -> tuple[float, float]:
    """Wall time of ``airflow dags test`` for N mapped updates, and for 1 (the fixed cost)."""
    home = Path(tempfile.mkdtemp(prefix="hilos-bench-airflow-"))
    dags = home / "dags"
    dags.mkdir()
    (dags / "bench_mapped.py").write_text(MAPPED_DAG)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__MAX_MAP_LENGTH": "100000",
            "AIRFLOW_CONN_HILOS_DEFAULT": sb.connection_json(),
        }
    )
    quiet = {"env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, **quiet)

    def run(count: int) -> float:
        conf = json.dumps({"ids": sb.ids[:count]})
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "airflow", "dags", "test", "bench_mapped", "-c", conf], check=True, **quiet
        )
        return time.perf_counter() - start

    return run(n), run(1)


RSS_CHILD = textwrap.dedent("""
    import gc, json, sys, threading, time
    import airflow_provider_hilos.operators.conversation  # the provider, imported
    from airflow_provider_hilos.inputs import rows_from_json_lines
    from airflow_provider_hilos.hooks.hilos import HilosHook

    def status(field):
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # MB
    mode, path = sys.argv[1], sys.argv[2]
    gc.collect()
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # reset the peak (VmHWM) to the current RSS: imports no longer count
    start = status("VmRSS")
    samples = []
    stop = threading.Event()
    def sample():
        while not stop.wait(0.5):
            samples.append(status("VmRSS"))
    threading.Thread(target=sample, daemon=True).start()
    result = None
    if mode == "stream":
        hook = HilosHook(pool_maxsize=32)
        result = hook.update_conversations(rows_from_json_lines(lambda: open(path, encoding="utf-8")),
                                           max_concurrency=32, progress_interval=3600).to_dict()
    elif mode == "list":  # control: the same rows held in memory, to show the measure sees growth
        rows = [json.loads(line) for line in open(path, encoding="utf-8")]
        time.sleep(1)
    else:
        time.sleep(1)
    stop.set()
    print(json.dumps({"start_mb": start, "peak_mb": status("VmHWM"), "end_mb": status("VmRSS"),
                      "samples": len(samples), "updated": result and result["updated"],
                      "seconds": result and result["duration_seconds"]}))
""")


def bench_rss(n: int) -> dict[str, Any]:
    with SandboxProcess("--conversations", str(n), "--seed", "2") as sb:  # one row per conversation
        path = Path(tempfile.mkdtemp(prefix="hilos-bench-")) / "updates.jsonl"
        with path.open("w") as handle:
            for row in rows(sb.ids, n, "CLOSED"):
                handle.write(json.dumps(row) + "\n")
        env = {**os.environ, "AIRFLOW_CONN_HILOS_DEFAULT": sb.connection_json()}

        def child(mode: str) -> dict[str, Any]:
            out = subprocess.run(
                [sys.executable, "-c", RSS_CHILD, mode, str(path)], env=env, check=True, capture_output=True, text=True
            ).stdout
            return json.loads(out.strip().splitlines()[-1])

        measured = {mode: child(mode) for mode in ("idle", "stream", "list")}
        measured["file_mb"] = path.stat().st_size / 1e6
        path.unlink()
    return measured


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller N, one repeat (a smoke run)")
    args = parser.parse_args()
    quick = args.quick
    n_batch, n_loop, n_mapped, n_rss = (500, 50, 20, 5_000) if quick else (5_000, 250, 200, 100_000)
    repeats = 1 if quick else 3
    concurrency = 16
    lat = LATENCY_MS / 1000
    rows_out: list[tuple[str, int, int, float]] = []
    started = time.perf_counter()
    report = Report("bench_batch", "python3 scripts/dev.py bench")
    report.line(
        f"Hilos batch benchmark: sandbox in its own process, {LATENCY_MS:g} ms latency per request, "
        f"median of {repeats} run(s); {os.cpu_count()} CPU(s), Python {sys.version.split()[0]}"
    )
    with SandboxProcess("--conversations", "5000", "--seed", "1", "--latency-ms", str(LATENCY_MS)) as sb:
        os.environ["AIRFLOW_CONN_HILOS_DEFAULT"] = sb.connection_json()
        rows_out.append(
            ("batch path (update_conversations)", n_batch, concurrency, bench_batch(sb, n_batch, concurrency, repeats))
        )
        rows_out.append(("sequential HilosHook.update_conversation", n_loop, 1, bench_sequential(sb, n_loop, repeats)))
        rows_out.append(("HttpHook(method='PATCH').run in a loop", n_loop, 1, bench_http_hook(sb, n_loop, repeats)))
        mapped, fixed = bench_mapped(sb, n_mapped)
        rows_out.append(("mapped ConversationUpdateOperator (dags test)", n_mapped, 1, mapped))
    header = f"{'path':45} {'N':>6} {'conc':>5} {'wall s':>8} {'updates/s':>10} {'ideal s':>8} {'of ideal':>9}"
    report.line()
    report.line(header)
    report.line("-" * len(header))
    rates = {}
    for name, n, conc, seconds in rows_out:
        ideal = n * lat / conc
        rates[name] = n / seconds
        report.line(
            f"{name:45} {n:>6} {conc:>5} {seconds:>8.2f} {n / seconds:>10.1f} {ideal:>8.2f} {ideal / seconds:>8.1%}"
        )
    batch_rate = rates["batch path (update_conversations)"]
    seq_rate = rates["sequential HilosHook.update_conversation"]
    report.line()
    report.line(
        f"batch path vs sequential loop: {batch_rate / seq_rate:.1f}x; vs HttpHook loop: "
        f"{batch_rate / rates['HttpHook(method=' + chr(39) + 'PATCH' + chr(39) + ').run in a loop']:.1f}x"
    )
    report.line(
        f"mapped tasks: {mapped / n_mapped:.3f} s per update over the whole run; "
        f"{(mapped - fixed) / max(n_mapped - 1, 1):.3f} s per extra update (a 1-update run takes {fixed:.1f} s)"
    )
    rss = bench_rss(n_rss)
    idle, stream, listed = rss["idle"], rss["stream"], rss["list"]
    report.line(
        f"memory, {n_rss:,} updates in a {rss['file_mb']:.1f} MB JSON Lines file (latency 0, concurrency 32; "
        "peak = VmHWM after the imports, reset via /proc/self/clear_refs):"
    )
    report.line(f"  idle Python with the provider imported: {idle['start_mb']:.1f} MB, peak {idle['peak_mb']:.1f} MB")
    report.line(
        f"  streamed through the batch path:        {stream['start_mb']:.1f} MB at start, peak "
        f"{stream['peak_mb']:.1f} MB (+{stream['peak_mb'] - idle['peak_mb']:.1f} MB over idle), "
        f"{stream['updated']:,} updated in {stream['seconds']:.1f} s"
    )
    report.line(
        f"  control, the same rows loaded as a list: peak {listed['peak_mb']:.1f} MB "
        f"(+{listed['peak_mb'] - idle['peak_mb']:.1f} MB over idle)"
    )
    report.line(f"benchmark wall time {time.perf_counter() - started:.0f} s")
    if not quick:
        report.write(
            batch_updates_per_second=round(batch_rate, 1),
            batch_share_of_ideal=round(n_batch * lat / concurrency / (n_batch / batch_rate), 3),
            batch_vs_sequential=round(batch_rate / seq_rate, 1),
            stream_peak_mb_over_idle=round(stream["peak_mb"] - idle["peak_mb"], 1),
            list_peak_mb_over_idle=round(listed["peak_mb"] - idle["peak_mb"], 1),
            mapped_seconds_per_extra_update=round((mapped - fixed) / max(n_mapped - 1, 1), 3),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
