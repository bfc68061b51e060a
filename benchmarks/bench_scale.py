"""Benchmark: the sync at account scale, in bounded memory.

Each figure is measured in one run, each sync in a child process of its own (the sandbox in another, no quota
unless said), its desired state in an embedded SQLite warehouse:

* a dry-run plan of 1,000,000 conversations, and of 100,000 (a day 2: the warehouse as Hilos holds it, 1 % of its
  rows changed; and at 100,000 a first run, every row different): the peak memory of the planning process above an idle
  process with the provider imported (target <= 200 MB at 1,000,000, and <= 1.5x the figure at 100,000), its wall
  time against the time a minimal client takes to read and JSON-decode the same pages from the same sandbox (target
  <= 1.3x: that client is the physical bound of this path on this machine), and its client CPU per row;
* a listing behind a 200 requests/s token bucket with 20 ms of latency per page: the share of the quota it uses
  (target >= 90 %);
* a dry-run plan of 1,000,000 contacts, under the same memory bound;
* the state file of 1,000,000 rows: its size on disk, and the time to write it and to read it back.

    python3 scripts/dev.py bench-scale       # or: uv run python benchmarks/bench_scale.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from bench_sync import TOKEN, sandbox_rows  # what the sandbox holds, as warehouse rows
from results import Report

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from airflow_provider_hilos.sandbox import warehouse  # noqa: E402
from airflow_provider_hilos.sandbox.process import SandboxProcess  # noqa: E402

PAGE_SIZE = 1000
RATE = 200
LATENCY_MS = 20

# a dry-run sync in a child process: its figures as the last line of stdout
CHILD = textwrap.dedent("""
    import gc, json, sys, time
    import airflow_provider_hilos.operators.contacts, airflow_provider_hilos.operators.sync  # imported: idle's too
    from airflow_provider_hilos.operators.contacts import ContactSyncOperator
    from airflow_provider_hilos.operators.sync import ConversationSyncOperator

    def status(field):
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # MB

    class TI:
        dag_id, run_id, task_id, map_index = "bench", "scale", "sync", -1
        def xcom_push(self, key, value):
            pass

    kind, state, sql, page_size, concurrency = sys.argv[1:6]
    gc.collect()
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # the peak (VmHWM) from here: the imports do not count
    start, cpu = status("VmRSS"), time.process_time()
    began = time.perf_counter()
    result = {}
    if kind != "idle":
        operator = ConversationSyncOperator if kind == "conversations" else ContactSyncOperator
        op = operator(
            task_id="sync", sql=sql, sql_conn_id="warehouse", state_store=state, dry_run=True, show_diffs=0,
            page_size=int(page_size), list_concurrency=int(concurrency), progress_interval=3600,
            **({"column_map": {"assignee_ids": "assigned", "team_id": "assigned_team"}}
               if kind == "conversations" else {}),
        )
        result = op.execute({"ti": TI()})
    print(json.dumps({"start_mb": start, "peak_mb": status("VmHWM"), "cpu": time.process_time() - cpu,
                      "seconds": time.perf_counter() - began,
                      "result": {k: v for k, v in result.items() if not isinstance(v, (dict, list))}}))
""")

# the physical bound: read and decode every page, one after the other, doing nothing with the rows
MINIMAL = textwrap.dedent("""
    import json, sys, time
    import requests
    url, token, page_size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    session = requests.Session()
    session.headers["Authorization"] = f"Token {token}"
    began, cpu, rows, page = time.perf_counter(), time.process_time(), 0, 1
    while True:
        answer = session.get(url, params={"page": page, "page_size": page_size}, timeout=120).json()
        rows += len(answer["results"])
        if not answer["next"]:
            break
        page += 1
    print(json.dumps({"seconds": time.perf_counter() - began, "cpu": time.process_time() - cpu, "rows": rows,
                      "pages": page}))
""")

# the state file of N rows: written, then read back entry by entry
STATE = textwrap.dedent("""
    import json, os, sys, time, uuid
    from airflow_provider_hilos.storage import storage_path
    from airflow_provider_hilos.sync.state import SyncStateStore, sync_owner
    n, folder = int(sys.argv[1]), sys.argv[2]
    store = SyncStateStore(storage_path(folder), sync_owner("bench", "sync"))
    def entries():
        for i in range(n):
            key = str(uuid.UUID(int=i + 1, version=4))
            fields = {"status": "CLOSED", "tags": ("vip", "renewal"), "assigned": (3, 12), "assigned_team": 2}
            yield key, key, fields, i % 1000 == 0
    began = time.perf_counter()
    store.write(entries(), run_id="bench")
    wrote = time.perf_counter() - began
    size = os.path.getsize(str(store.path))
    began = time.perf_counter()
    header, read = store.read()
    count = sum(1 for _ in read)
    took = time.perf_counter() - began
    print(json.dumps({"rows": count, "bytes": size, "write_seconds": wrote, "read_seconds": took}))
""")

# a listing behind the quota: a dry run of one desired row reads every page
LISTING_SQL = f"SELECT conversation_id, status FROM {warehouse.TABLE} LIMIT 1"


def child(script: str, args: list[str], env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"the benchmark's child {args[:2]} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def environment(sb: SandboxProcess, database: Path, **extra: Any) -> dict[str, str]:
    return {
        **os.environ,
        "AIRFLOW_CONN_HILOS_DEFAULT": sb.connection_json(**extra),
        "AIRFLOW_CONN_WAREHOUSE": json.dumps({"conn_type": "sqlite", "host": str(database)}),
    }


def write_contacts(database: Path, phones: list[str]) -> None:
    """A customer record for every phone: a name, a plan and a lifetime value (as meta.<name> columns)."""
    with sqlite3.connect(database) as db:
        db.execute("DROP TABLE IF EXISTS customers")
        db.execute('CREATE TABLE customers (phone TEXT, first_name TEXT, "meta.plan" TEXT, "meta.ltv" INTEGER)')
        db.executemany(
            "INSERT INTO customers VALUES (?, ?, ?, ?)",
            ((phone, f"Cliente {i}", ("free", "pro")[i % 2], i % 5000) for i, phone in enumerate(phones)),
        )


def plan_case(
    report: Report, work: Path, kind: str, n: int, idle: dict[str, Any], *, first_run: bool = False
) -> dict[str, Any]:
    """A dry-run plan of ``n`` objects, and the minimal client's read of the same pages.

    Conversations: a day 2 (the warehouse as Hilos holds it, then 1 % of its rows changed), or with ``first_run`` a
    warehouse that differs from Hilos in every row. Contacts: a first run (every contact gets a name, a plan and a
    lifetime value)."""
    database = work / f"{kind}-{n}.db"
    args = ("--conversations", str(n)) if kind == "conversations" else ("--conversations", "0")
    extra = ("--extra-contacts", str(n)) if kind == "contacts" else ()
    began = time.perf_counter()
    with SandboxProcess(*args, *extra, "--seed", "3", "--request-log-limit", "1000", token=TOKEN) as sb:
        if kind == "conversations" and first_run:
            sandbox_rows(sb)  # every page read once: the sandbox is warm for both clients
            warehouse.write_sqlite(database, warehouse.desired_rows(sandbox_ids(sb, "conversation"), seed=2))
            sql, path = (
                f"SELECT conversation_id, status, tags, assignee_ids, team_id FROM {warehouse.TABLE}",
                "/api/inbox/conversation",
            )
        elif kind == "conversations":
            rows = sandbox_rows(sb)  # every page read once: the sandbox is warm for both clients
            warehouse.change_some(rows, 0.01, seed=5)
            warehouse.write_sqlite(database, rows)
            del rows
            sql, path = (
                f"SELECT conversation_id, status, tags, assignee_ids, team_id FROM {warehouse.TABLE}",
                "/api/inbox/conversation",
            )
        else:
            write_contacts(database, sandbox_ids(sb, "contact"))
            sql, path = 'SELECT phone, first_name, "meta.plan", "meta.ltv" FROM customers', "/api/contact"
        ready = time.perf_counter() - began
        env = environment(sb, database)
        minimal = child(MINIMAL, [f"{sb.url}{path}", TOKEN, str(PAGE_SIZE)], env)
        dry = child(CHILD, [kind, str(work / f"state-{kind}-{n}"), sql, str(PAGE_SIZE), "16"], env)
    grown = dry["peak_mb"] - idle["peak_mb"]
    ratio = dry["seconds"] / minimal["seconds"]
    result = dry["result"]
    what = "first run, every row differs" if first_run or kind == "contacts" else "day 2, 1 % of the rows changed"
    report.line(
        f"dry-run plan of {n:,} {kind} ({what}; page_size {PAGE_SIZE}, 16 pages at once, no quota): "
        f"{result['to_update']:,} to update, {result['read_requests']:,} list pages, {dry['seconds']:.1f} s "
        f"({result['plan_rows_per_second']:,} rows/s); peak memory +{grown:.1f} MB over an idle process with the "
        f"provider imported (the run says {result['peak_memory_mb']:.0f} MB peak, work database "
        f"{result['work_db_mb']:.0f} MB on disk); client CPU {dry['cpu'] / n * 1e6:.0f} µs per row; a minimal client "
        f"reads and decodes the same {minimal['pages']:,} pages in {minimal['seconds']:.1f} s "
        f"({minimal['cpu'] / n * 1e6:.0f} µs CPU per row): {ratio:.2f}x (sandbox and warehouse ready in {ready:.0f} s)"
    )
    return {
        "rows": n,
        "peak_mb_over_idle": round(grown, 1),
        "seconds": round(dry["seconds"], 2),
        "rows_per_second": result["plan_rows_per_second"],
        "cpu_us_per_row": round(dry["cpu"] / n * 1e6, 1),
        "minimal_client_seconds": round(minimal["seconds"], 2),
        "minimal_client_cpu_us_per_row": round(minimal["cpu"] / n * 1e6, 1),
        "time_vs_minimal_client": round(ratio, 2),
        "work_db_mb": result["work_db_mb"],
    }


def sandbox_ids(sb: SandboxProcess, kind: str) -> list[str]:
    """Every conversation id (for the desired state), or every contact's phone."""
    import requests

    if kind == "conversation":
        return list(requests.get(f"{sb.url}/_sandbox/conversations", timeout=600).json())
    return list(requests.get(f"{sb.url}/_sandbox/contact-phones", timeout=600).json())


def listing_case(report: Report, work: Path, pages: int, idle: dict[str, Any]) -> dict[str, Any]:
    """A listing of ``pages`` pages of 100 behind a 200 requests/s bucket, 20 ms per page."""
    database = work / "listing.db"
    with SandboxProcess("--conversations", str(pages * 100), "--seed", "4", token=TOKEN) as sb:
        warehouse.write_sqlite(database, warehouse.desired_rows(sandbox_ids(sb, "conversation")[:1], seed=2))
        sandbox_rows(sb)  # every page read once: the sandbox builds each list row once, then serves it
        sb.set_faults(rate_limit_per_second=RATE, rate_limit_burst=20, latency_ms=LATENCY_MS)
        env = environment(sb, database, max_requests_per_second=RATE)  # the quota, as the connection says it
        sb.clear_requests()
        dry = child(CHILD, ["conversations", str(work / "state-listing"), LISTING_SQL, "100", "16"], env)
        log = [r for r in sb.requests() if r["path"] == "/api/inbox/conversation"]
        throttled = sum(1 for r in log if r.get("status") == 429)
    result = dry["result"]
    # the listing's own rate: its requests as the API received them, first to last
    listing_seconds = max(log[-1]["time"] - log[0]["time"], 1e-9)
    rate = (len(log) - 1) / listing_seconds
    share = rate / RATE
    plan_rate = result["read_requests"] / result["plan_seconds"]
    report.line(
        f"listing behind a {RATE} requests/s bucket (the connection's quota {RATE}/s), {LATENCY_MS} ms per page: "
        f"{len(log):,} requests ({throttled} answered 429) received in {listing_seconds:.1f} s = {rate:.0f} "
        f"requests/s, {share:.0%} of the quota (target >= 90 %); the whole dry run, its start included: "
        f"{plan_rate:.0f} requests/s over {result['plan_seconds']:.1f} s; client CPU {dry['cpu'] / dry['seconds']:.0%} "
        "of the wall time"
    )
    return {
        "pages": pages,
        "requests": len(log),
        "throttled": throttled,
        "listing_seconds": round(listing_seconds, 2),
        "requests_per_second": round(rate, 1),
        "plan_requests_per_second": round(plan_rate, 1),
        "quota_share": round(share, 3),
        "client_cpu_share": round(dry["cpu"] / dry["seconds"], 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 and 10,000 rows (a smoke run)")
    args = parser.parse_args()
    large, small, listing_pages = (100_000, 10_000, 400) if args.quick else (1_000_000, 100_000, 3_000)
    started = time.perf_counter()
    report = Report("bench_scale", "python3 scripts/dev.py bench-scale")
    report.line(f"Hilos sync at account scale: {os.cpu_count()} CPU(s), Python {sys.version.split()[0]}")
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"hilos-bench-scale-{os.getpid()}"
    work.mkdir(parents=True)
    try:
        return measure(report, work, large, small, listing_pages, started)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the warehouses, work databases and state files: gigabytes


def measure(report: Report, work: Path, large: int, small: int, listing_pages: int, started: float) -> int:
    """Every case, its figures printed and written; 0 when every target is met."""
    with SandboxProcess("--conversations", "10", token=TOKEN) as sb:
        idle = child(CHILD, ["idle", "-", "-", "100", "1"], environment(sb, work / "idle.db"))
    report.line(f"idle process with the provider imported: {idle['peak_mb']:.1f} MB peak")
    small_plan = plan_case(report, work, "conversations", small, idle)
    large_plan = plan_case(report, work, "conversations", large, idle)
    growth = large_plan["peak_mb_over_idle"] / max(small_plan["peak_mb_over_idle"], 1e-9)
    report.line(
        f"peak memory over idle: {large_plan['peak_mb_over_idle']:.1f} MB at {large:,} rows, "
        f"{small_plan['peak_mb_over_idle']:.1f} MB at {small:,}: {growth:.2f}x (target <= 1.5x, and <= 200 MB)"
    )
    first_run = plan_case(report, work, "conversations", small, idle, first_run=True)
    listing = listing_case(report, work, listing_pages, idle)
    contacts = plan_case(report, work, "contacts", large, idle)
    state = child(STATE, [str(large), str(work / "state-file")], dict(os.environ))
    report.line(
        f"state file of {state['rows']:,} rows: {state['bytes'] / 2**20:.1f} MB on disk "
        f"({state['bytes'] / state['rows']:.0f} bytes a row), written in {state['write_seconds']:.1f} s, read back "
        f"in {state['read_seconds']:.1f} s"
    )
    met = (
        large_plan["peak_mb_over_idle"] <= 200
        and growth <= 1.5
        and large_plan["time_vs_minimal_client"] <= 1.3
        and listing["quota_share"] >= 0.9
        and contacts["peak_mb_over_idle"] <= 200
    )
    verdict = "all targets met" if met else "A TARGET WAS MISSED"
    report.line(f"{verdict}; benchmark wall time {time.perf_counter() - started:.0f} s")
    report.write(
        conversations_large=large_plan,
        conversations_small=small_plan,
        conversations_small_first_run=first_run,
        peak_growth=round(growth, 2),
        listing=listing,
        contacts_large=contacts,
        state_file={
            "rows": state["rows"],
            "mb": round(state["bytes"] / 2**20, 1),
            "bytes_per_row": round(state["bytes"] / state["rows"], 1),
            "write_seconds": round(state["write_seconds"], 2),
            "read_seconds": round(state["read_seconds"], 2),
        },
        met=met,
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
