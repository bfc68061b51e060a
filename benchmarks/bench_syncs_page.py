"""Benchmark: the "Hilos syncs" page for 50 syncs with 100 runs each (target: under a second).

A metadata database (SQLite, the ``xcom`` table Airflow's model creates) holds the records of 5,000 sync runs
(``hilos_sync_run``), made by the operator's ``run_record`` from results shaped as the syncs write them (counts,
requests, the approval, 20 first diffs, failed rows, the plan's path). Measured, 7 times
each: reading them (``read_syncs``, the page's query and decoding) and rendering the page (``render``), and the
whole request through the FastAPI app (authentication stubbed: the page's own work). Medians printed and written to
``benchmarks/results/bench_syncs_page.json``.

    python3 scripts/dev.py bench-syncs-page       # or: uv run python benchmarks/bench_syncs_page.py
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from results import Report

SYNCS, RUNS, REPEAT = 50, 100, 7
TARGET_SECONDS = 1.0


def a_result(sync: int, run: int) -> dict:
    updated = 20 + (run * 7 + sync) % 40 + (900 if run == 60 else 0)  # one spike per sync
    diff = {
        "conversation_id": f"00000000-0000-4000-8000-{run:012d}",
        "action": "update",
        "changes": {"status": {"from": "NEW", "to": "CLOSED"}, "tags": {"from": ["a"], "to": ["a", "vip"]}},
    }
    return {
        "dry_run": False,
        "object": "conversation" if sync % 2 else "contact",
        "compare_with": "hilos",
        "desired": 20_000,
        "unchanged": 20_000 - updated,
        "to_update": updated,
        "updated": updated,
        "failed": 2,
        "not_found": 1,
        "invalid": 0,
        "unreadable": 0,
        "drift_found": 3,
        "drift_corrected": 3,
        "read_requests": 201,
        "write_requests": updated,
        "retried_requests": 1,
        "duration_seconds": 12.5,
        "listed_rows": 20_000,
        "summary": {
            "fields": {"status": updated},
            "transitions": {"status": {"NEW→CLOSED": updated}},
            "first_updates": [diff] * 20,
        },
        "costs": {"hilos": {"reads": 201, "writes": updated}, "last_sync": {"reads": 0, "writes": updated + 5}},
        "approval": {"decision": "apply", "digest": "0123456789abcdef0123", "approved_by": None},
        "failed_rows": [{"conversation_id": f"c-{i}", "error": "422 status: not a valid choice"} for i in range(2)],
        "plan_path": f"/data/hilos/plans/sync-{sync}/run-{run}.plan.jsonl",
    }


def main() -> int:
    from fastapi.testclient import TestClient
    from sqlalchemy import create_engine
    from sqlalchemy.orm import sessionmaker

    from airflow.api_fastapi.common.db.common import _get_session
    from airflow.api_fastapi.core_api.security import get_user
    from airflow.models.taskinstance import TaskInstance  # noqa: F401  (the table xcom's key refers to)
    from airflow.models.xcom import XComModel

    from airflow_provider_hilos import syncs_page
    from airflow_provider_hilos.operators.sync import run_record

    report = Report("bench_syncs_page", "python3 scripts/dev.py bench-syncs-page")
    with tempfile.TemporaryDirectory() as folder:
        engine = create_engine(f"sqlite:///{Path(folder) / 'airflow.db'}")
        XComModel.__table__.create(engine)
        session = sessionmaker(bind=engine)()
        start = datetime(2026, 12, 1, tzinfo=UTC)
        session.add_all(
            XComModel(
                dag_run_id=s * RUNS + r,
                task_id="sync",
                map_index=-1,
                key="hilos_sync_run",
                dag_id=f"crm_{s:02d}",
                run_id=f"scheduled__{r:04d}",
                value=json.dumps(run_record(a_result(s, r))),
                timestamp=start + timedelta(hours=r),
            )
            for s in range(SYNCS)
            for r in range(RUNS)
        )
        session.commit()
        size = sum(len(json.dumps(run_record(a_result(0, r)))) for r in range(RUNS)) * SYNCS
        reads, renders, requests = [], [], []
        for _ in range(REPEAT):
            began = time.perf_counter()
            syncs = syncs_page.read_syncs(session, None)
            reads.append(time.perf_counter() - began)
            began = time.perf_counter()
            page = syncs_page.render(syncs, base="/hilos")
            renders.append(time.perf_counter() - began)
        assert len(syncs) == SYNCS and syncs_page.runs_of(syncs) == SYNCS * RUNS
        app = syncs_page.create_app()
        app.dependency_overrides[_get_session] = lambda: session
        app.dependency_overrides[get_user] = lambda: object()
        syncs_page._readable_dags = lambda user: None
        client = TestClient(app)
        for _ in range(REPEAT):
            began = time.perf_counter()
            response = client.get("/syncs")
            requests.append(time.perf_counter() - began)
            assert response.status_code == 200
        session.close()
    read, rendered, whole = (statistics.median(v) for v in (reads, renders, requests))
    met = whole <= TARGET_SECONDS
    report.line(
        f"Hilos syncs page: {SYNCS} syncs x {RUNS} runs ({size / 2**20:.1f} MB of run records), medians of {REPEAT}"
    )
    report.line(f"  read the records   {read * 1000:8.0f} ms")
    report.line(f"  render the page    {rendered * 1000:8.0f} ms ({len(page) / 2**20:.1f} MB of HTML)")
    report.line(
        f"  the whole request  {whole * 1000:8.0f} ms  (target <= {TARGET_SECONDS * 1000:.0f} ms: "
        f"{'met' if met else 'MISSED'})"
    )
    report.write(
        syncs=SYNCS,
        runs_per_sync=RUNS,
        read_ms=round(read * 1000),
        render_ms=round(rendered * 1000),
        request_ms=round(whole * 1000),
        html_mb=round(len(page) / 2**20, 2),
        target_met=met,
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
