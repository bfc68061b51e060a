"""The "Hilos syncs" page: every sync with its recent runs read from the records the syncs keep (the
``hilos_sync_run`` XComs), a spike shown, failed keys and why, the plan link; every value escaped; behind
Airflow's authentication; only the DAGs a user may read."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

pytest.importorskip("airflow.api_fastapi", reason="the page is an Airflow 3 api-server app")

from fastapi.testclient import TestClient
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

from airflow_provider_hilos import syncs_page
from airflow_provider_hilos.syncs_page import SyncRun, chart, create_app, read_syncs, render
from tests.conftest import TEST_TOKEN

START = datetime(2026, 12, 1, tzinfo=UTC)


def result(updated: int, *, obj: str = "conversation", failed_rows=(), plan: str | None = None, **more) -> dict:
    """A run's record, as a sync pushes it from its result."""
    from airflow_provider_hilos.operators.sync import run_record

    return run_record(
        {
            "object": obj,
            "dry_run": False,
            "updated": updated,
            "unchanged": 100 - updated,
            "failed": len(failed_rows),
            "failed_rows": list(failed_rows),
            "read_requests": 2,
            "write_requests": updated,
            "drift_corrected": 1,
            "plan_path": plan,
            **more,
        }
    )


@pytest.fixture
def db(tmp_path):
    """A metadata database holding the ``xcom`` table (the page reads nothing else)."""
    from airflow.models.taskinstance import TaskInstance  # noqa: F401  (the table xcom's key refers to)
    from airflow.models.xcom import XComModel

    engine = create_engine(f"sqlite:///{tmp_path / 'airflow.db'}")
    XComModel.__table__.create(engine)
    session = sessionmaker(bind=engine)()

    def add(dag_id: str, task_id: str, run: int, value: dict, key: str = "hilos_sync_run") -> None:
        session.add(
            XComModel(
                dag_run_id=run,
                task_id=task_id,
                map_index=-1,
                key=key,
                dag_id=dag_id,
                run_id=f"scheduled__{run:04d}",
                value=json.dumps(value),
                timestamp=START + timedelta(hours=run),
            )
        )
        session.commit()

    yield session, add
    session.close()


def test_every_sync_with_its_runs_newest_first_and_only_readable_dags(db):
    session, add = db
    for run in range(1, 6):
        add("crm", "sync_conversations", run, result(run))
        add("crm", "sync_contacts", 100 + run, result(run * 2, obj="contact", created=1, deleted=0))
    add("secret", "sync_conversations", 500, result(1))
    add("crm", "other_task", 600, {"not": "a sync"}, key="return_value")
    syncs = read_syncs(session, {"crm"})
    assert [s.name for s in syncs] == ["crm.sync_contacts", "crm.sync_conversations"]
    assert [r.run_id for r in syncs[1].runs] == [f"scheduled__{n:04d}" for n in (5, 4, 3, 2, 1)]
    assert syncs[0].runs[0].changes == 11 and syncs[1].runs[0].changes == 5
    assert len(read_syncs(session, None)) == 3 and len(read_syncs(session, {"crm"}, runs_per_sync=2)[0].runs) == 2


def test_a_spike_stands_out_and_outcomes_are_named():
    runs = [SyncRun(f"r{i}", None, result(n)) for i, n in enumerate([10, 12, 9, 400, 11])]
    svg = chart(runs)
    assert svg.count('class="spike"') == 1 and svg.count('class="bar"') == 4 and "r3: 400 change(s)" in svg
    assert SyncRun("w", None, {"awaiting_approval": True, "to_update": 30}).outcome == "waiting for approval"
    assert SyncRun("w", None, {"awaiting_approval": True, "to_update": 30}).changes == 30
    assert SyncRun("x", None, {"refused": "no", "to_update": 3}).outcome == "refused"
    assert SyncRun("d", None, {"dry_run": True}).outcome == "dry run"


def test_the_page_escapes_every_value_and_shows_failed_keys_and_plans(db):
    session, add = db
    bad = "<script>alert(1)</script>"
    failed = [{"conversation_id": "c-1", "error": f"422 {bad}"}, {"phone": "+5215512345678", "error": "timeout"}]
    add(
        "crm",
        "sync_conversations",
        1,
        result(3, failed_rows=failed, plan="/data/plan.jsonl", approval={"approved_by": bad}),
    )
    page = render(read_syncs(session, None), base="/hilos")
    assert bad not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "c-1" in page and "+5215512345678" in page and "timeout" in page
    assert "/hilos/plan?dag_id=crm&task_id=sync_conversations&map_index=-1&run_id=scheduled__0001" in page
    assert TEST_TOKEN not in page


@pytest.fixture
def client(db, monkeypatch):
    from airflow.api_fastapi.common.db.common import _get_session
    from airflow.api_fastapi.core_api.security import get_user

    session, add = db
    app = create_app()
    return app, TestClient(app), session, add, _get_session, get_user


def test_a_request_without_a_session_or_token_is_refused(client):
    from airflow.api_fastapi.app import init_auth_manager, purge_cached_app

    init_auth_manager()  # Airflow's own (the api-server initialises it before mounting the plugin's app)
    _, http, *_ = client
    try:
        _refused(http)
    finally:
        purge_cached_app()


def _refused(http) -> None:
    for path in ("/syncs", "/plan?dag_id=crm&task_id=t&run_id=r"):
        response = http.get(path)
        assert response.status_code in (401, 403), (path, response.status_code)
        assert "Hilos syncs" not in response.text
    assert http.get("/syncs", headers={"Authorization": "Bearer not-a-valid-jwt"}).status_code in (401, 403)


def test_an_authenticated_user_reads_the_page_and_a_plan_of_a_dag_it_may_read(client, monkeypatch, tmp_path):
    app, http, session, add, get_session, get_user = client
    plan = tmp_path / "plan.jsonl"
    plan.write_text('{"conversation_id": "c-1", "action": "update"}\n')
    add("crm", "sync", 1, result(3, plan=str(plan)))
    add("hidden", "sync", 2, result(3, plan=str(plan)))
    app.dependency_overrides[get_session] = lambda: session
    app.dependency_overrides[get_user] = lambda: object()
    monkeypatch.setattr(syncs_page, "_readable_dags", lambda user: {"crm"})
    page = http.get("/syncs")
    assert page.status_code == 200 and "crm.sync" in page.text and "hidden.sync" not in page.text
    got = http.get("/plan", params={"dag_id": "crm", "task_id": "sync", "run_id": "scheduled__0001"})
    assert got.status_code == 200 and got.text == plan.read_text()
    assert (
        http.get("/plan", params={"dag_id": "hidden", "task_id": "sync", "run_id": "scheduled__0002"}).status_code
        == 403
    )
    assert http.get("/plan", params={"dag_id": "crm", "task_id": "sync", "run_id": "nope"}).status_code == 404
