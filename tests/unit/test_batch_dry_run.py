"""One dry run for every path: validate, resolve the connection, say what would be sent, send nothing."""

from __future__ import annotations

import json
import logging

import pytest

from airflow_provider_hilos.batch import BatchOptions
from airflow_provider_hilos.batch.dry_run import dry_run
from airflow_provider_hilos.batch.pipeline import pipeline_for
from airflow_provider_hilos.exceptions import HilosConfigurationError, HilosValidationError
from airflow_provider_hilos.operators.conversation import ConversationBatchUpdateOperator
from tests.conftest import FakeTI
from tests.helpers import StubHook, ids, patches


def test_a_dry_run_still_refuses_bad_input_and_a_bad_connection(sandbox, monkeypatch):
    with pytest.raises(HilosValidationError, match="status: 'DONE' is not a valid status"):
        ConversationBatchUpdateOperator(
            task_id="t", updates=[{"conversation_id": sandbox.conversation_ids()[0], "status": "DONE"}], dry_run=True
        ).execute({"ti": FakeTI()})
    monkeypatch.setenv("AIRFLOW_CONN_HILOS_DEFAULT", json.dumps({"conn_type": "hilos", "host": sandbox.url}))

    with pytest.raises(HilosConfigurationError, match="has no API token"):
        ConversationBatchUpdateOperator(
            task_id="t", updates=[{"conversation_id": sandbox.conversation_ids()[0], "status": "NEW"}], dry_run=True
        ).execute({"ti": FakeTI()})
    assert patches(sandbox) == []


def test_the_plan_counts_every_row_and_lists_the_first_requests(caplog):
    caplog.set_level(logging.INFO, logger="stub-sender")
    rows = [{"conversation_id": cid, "status": "CLOSED"} for cid in ids(30)] + [{"conversation_id": "x"}]
    hook = StubHook()
    plan = dry_run(hook, pipeline_for(rows), BatchOptions(skip_invalid_rows=True), shown=5)
    assert (plan["total"], plan["to_send"], plan["skipped"], plan["already_applied"]) == (31, 30, 1, 0)
    assert [request["row"] for request in plan["requests"]] == [1, 2, 3, 4, 5]
    assert plan["requests"][0]["body"] == {"status": "CLOSED"} and not hook.sent  # nothing was sent
    assert "Dry run: ... and 25 more request(s)" in caplog.text
    json.dumps(plan)  # XCom-ready
    with pytest.raises(HilosValidationError):
        dry_run(hook, pipeline_for(rows), BatchOptions())  # refused as a real run would be
