"""The token never leaks: DAGs that succeed and DAGs that fail (401, 5xx exhausted, bad payload, a
failing batch) are scanned wherever a user, or an attacker with UI access, could read."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from airflow_provider_hilos.hooks.hilos import HilosHook
from airflow_provider_hilos.sandbox import HilosSandbox
from tests.conftest import TEST_TOKEN, run_dag, stored_xcoms

pytestmark = pytest.mark.usefixtures("airflow_db")


def everything_stored_for(dag_run) -> str:
    """XComs and rendered template fields of the run, as text."""
    from airflow.models.renderedtifields import RenderedTaskInstanceFields as RTIF
    from airflow.utils.session import create_session

    xcoms = stored_xcoms(dag_run)
    with create_session() as session:
        rendered = session.query(RTIF).filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id).all()
        text = json.dumps(xcoms, default=str) + json.dumps(
            [[r.task_id, r.rendered_fields] for r in rendered], default=str
        )
        assert xcoms and rendered
    return text


def test_no_output_or_stored_value_contains_the_token(sandbox, monkeypatch, output):
    with HilosSandbox(conversations=2, token=TEST_TOKEN, faults={"error_rate": 1, "error_statuses": [500]}) as failing:
        monkeypatch.setenv(
            "AIRFLOW_CONN_HILOS_BAD_TOKEN",
            json.dumps({"conn_type": "hilos", "host": sandbox.url, "password": TEST_TOKEN + "x"}),
        )
        monkeypatch.setenv("AIRFLOW_CONN_HILOS_FAILING", failing.connection_json(max_attempts=2))
        cid = sandbox.conversation_ids()[0]
        dag_run = run_dag(
            "hilos_test_secrecy", {"conversation_id": cid, "missing_id": "00000000-0000-4000-8000-000000000000"}
        )
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert states == {
        "succeeds": "success",
        "unauthorized": "failed",
        "server_errors_exhausted": "failed",
        "bad_payload": "failed",
        "batch_with_failures": "failed",
    }
    printed = output()
    # the failures really were reported (so the scan below looked at real error text)
    assert "rejected the API token of connection 'hilos_bad_token'" in printed
    assert "after 2 attempt(s): last answer HTTP 500" in printed
    assert "status: 'DONE' is not a valid status" in printed
    assert "Hilos batch failed: 2 of 2 row(s) failed" in printed
    assert TEST_TOKEN not in printed
    stored = everything_stored_for(dag_run)
    assert "hilos_batch_result" in stored and cid in stored
    assert TEST_TOKEN not in stored
    logs = Path(os.environ["AIRFLOW_HOME"]) / "logs"
    for path in logs.rglob("*") if logs.exists() else []:
        if path.is_file():
            assert TEST_TOKEN not in path.read_text(errors="replace"), path
    assert all(TEST_TOKEN not in json.dumps(r) for r in sandbox.requests())


def test_hook_and_settings_reprs_hide_the_token(sandbox):
    hook = HilosHook()
    hook.test_connection()
    assert TEST_TOKEN not in repr(hook) and TEST_TOKEN not in str(hook.__dict__.get("settings"))
    assert TEST_TOKEN not in repr(hook.settings)
