"""Benchmark: exporting 100,000 conversations from the sandbox (the read side).

Prints, measured in one run: the requests an export takes (against the bound ``ceil(N / page size)``, retries
counted), the peak memory of the exporting process above an idle Python with the provider imported, and the share of
a 100 requests/s token bucket the listing uses. The sandbox runs in its own process; each figure is one export.

    python3 scripts/dev.py bench-export     # or: uv run python benchmarks/bench_export.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import requests
from results import Report

from airflow_provider_hilos.sandbox.process import SandboxProcess

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-token-0123456789"

CHILD = textwrap.dedent("""
    import gc, json, sys, threading, time
    import airflow_provider_hilos.operators.export  # the provider, imported
    from airflow_provider_hilos.conversations import state_from_row
    from airflow_provider_hilos.export import write_change_set
    from airflow_provider_hilos.hooks.hilos import HilosHook
    from airflow_provider_hilos.storage import storage_path

    def status(field):
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # MB
    mode, path, page_size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    gc.collect()
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # reset the peak (VmHWM) to the current RSS: imports no longer count
    start = status("VmRSS")
    count, seconds = 0, 0.0
    if mode == "export":
        began = time.perf_counter()
        with HilosHook() as hook:
            rows = hook.iter_conversations(page_size=page_size)
            count = write_change_set(storage_path(path), (state_from_row(r) for r in rows), fmt="csv")
        seconds = time.perf_counter() - began
    else:
        time.sleep(0.5)
    print(json.dumps({"start_mb": start, "peak_mb": status("VmHWM"), "count": count, "seconds": seconds}))
""")


def export(sb: SandboxProcess, page_size: int, **extra: Any) -> dict[str, Any]:
    """One export in a child process; its figures and the sandbox's request counts."""
    sb.clear_requests()
    out = Path(tempfile.mkdtemp(prefix="hilos-bench-export-")) / "all.csv"
    env = {**os.environ, "AIRFLOW_CONN_HILOS_DEFAULT": sb.connection_json(**extra)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, "export", str(out), str(page_size)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    log = requests.get(f"{sb.url}/_sandbox/requests", timeout=60).json()
    figures["requests"] = log["total"]
    figures["throttled"] = sum(1 for r in log["requests"] if r.get("status") == 429)
    figures["lines"] = sum(1 for _ in out.open()) - 1
    out.unlink()
    return figures


def idle(sb: SandboxProcess) -> float:
    env = {**os.environ, "AIRFLOW_CONN_HILOS_DEFAULT": sb.connection_json()}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, "idle", "-", "1"], env=env, check=True, capture_output=True, text=True, cwd=ROOT
    )
    return float(json.loads(done.stdout.strip().splitlines()[-1])["peak_mb"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 conversations (a smoke run)")
    args = parser.parse_args()
    n = 10_000 if args.quick else 100_000
    page_size = 100
    started = time.perf_counter()
    report = Report("bench_export", "python3 scripts/dev.py bench-export")
    report.line(
        f"Hilos export benchmark: {n:,} conversations, sandbox in its own process, page size {page_size}; "
        f"{os.cpu_count()} CPU(s), Python {sys.version.split()[0]}"
    )
    with SandboxProcess("--conversations", str(n), "--seed", "4", "--request-log-limit", "200000", token=TOKEN) as sb:
        baseline = idle(sb)
        calm = export(sb, page_size)
        bound = math.ceil(n / page_size)
        grown = calm["peak_mb"] - baseline
        report.line(
            f"calm: {calm['count']:,} conversations in {calm['seconds']:.1f} s, {calm['requests']:,} requests "
            f"(bound ceil({n:,} / {page_size}) = {bound:,}; retries counted), {calm['lines']:,} CSV rows"
        )
        report.line(
            f"memory: idle Python with the provider imported {baseline:.1f} MB; exporting peaked at "
            f"{calm['peak_mb']:.1f} MB (+{grown:.1f} MB; target <= 50 MB)"
        )
    # the quota: small pages, so the listing is bound by the bucket (not by building 100-row pages)
    quota_n, quota_page = (2_000, 10) if args.quick else (10_000, 10)
    quota_bound = math.ceil(quota_n / quota_page)
    with SandboxProcess(
        "--conversations", str(quota_n), "--seed", "5", "--request-log-limit", "200000", token=TOKEN
    ) as sb:
        sb.set_faults(rate_limit_per_second=100, rate_limit_burst=10)
        bucket = export(sb, quota_page)
        used = quota_bound / bucket["seconds"] / 100
        report.line(
            f"token bucket 100/s (burst 10), no client rate, {quota_n:,} conversations in pages of {quota_page}: "
            f"{bucket['seconds']:.1f} s for {quota_bound:,} pages = {used:.1%} of the quota (no target: a listing is "
            f"sequential, so each 429 costs its Retry-After), {bucket['requests']:,} requests of which "
            f"{bucket['throttled']} answered 429"
        )
        capped = export(sb, quota_page, max_requests_per_second=100)
        used_capped = quota_bound / capped["seconds"] / 100
        report.line(
            f"token bucket 100/s, max_requests_per_second=100: {capped['seconds']:.1f} s = {used_capped:.1%} of the "
            f"quota (target >= 90%), {capped['requests']:,} requests of which {capped['throttled']} answered 429"
        )
    met = calm["requests"] == bound and grown <= 50 and used_capped >= 0.9 and calm["count"] == n
    verdict = "all targets met" if met else "A TARGET WAS MISSED"
    report.line(f"{verdict}; benchmark wall time {time.perf_counter() - started:.0f} s")
    report.write(
        conversations=n,
        page_size=page_size,
        requests=calm["requests"],
        requests_bound=bound,
        seconds=round(calm["seconds"], 2),
        peak_mb_over_idle=round(grown, 1),
        quota_conversations=quota_n,
        quota_page_size=quota_page,
        quota_used=round(used, 3),
        quota_used_capped=round(used_capped, 3),
        throttled=bucket["throttled"],
        met=met,
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
