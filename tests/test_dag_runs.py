"""Real DAG runs (``dag.test()`` on a migrated SQLite DB) against the Hilos sandbox.

Each run asserts what the server really received (method, path, headers, JSON body) and
what changed in its state, plus XCom, the extra link, rendered fields and the token's absence.
"""

from __future__ import annotations

import json
from importlib.metadata import version

import pytest

from airflow_provider_hilos.links import CONVERSATION_URL_XCOM_KEY
from tests.conftest import AIRFLOW_V3, TEST_TOKEN, run_dag, xcom_value

pytestmark = pytest.mark.usefixtures("airflow_db")

PAYLOAD = {"status": "CLOSED", "tags": [{"name": "vip"}, {"name": "renewal"}], "assigned": [{"id": 3}]}


def patches(sandbox) -> list[dict]:
    return [r for r in sandbox.requests() if r["method"] == "PATCH"]


def assert_exact_patch(entry: dict, conversation_id: str, body: dict) -> None:
    assert entry["method"] == "PATCH"
    assert entry["path"] == f"/api/inbox/conversation/{conversation_id}/update"  # the default family: Hilos's own
    assert entry["query"] == ""
    headers = entry["headers"]
    assert headers["authorization"] == "Token <sandbox-token>"  # the sandbox saw exactly "Token <its token>"
    assert headers["accept"] == "application/json"
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"].startswith(f"airflow-provider-hilos/0.1.0 apache-airflow/{version('apache-airflow')} ")
    assert entry["body"] == body
    assert entry["status"] == 200


def states(dag_run) -> dict[tuple[str, int], str]:
    return {(ti.task_id, ti.map_index): ti.state for ti in dag_run.get_task_instances()}


def rendered_fields(dag_run, task_id: str) -> dict:
    from airflow.models.renderedtifields import RenderedTaskInstanceFields as RTIF
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.query(RTIF).filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id, task_id=task_id).one()
        return dict(row.rendered_fields)


def test_payload_from_xcomarg_and_native_jinja(sandbox, output):
    first, second = sandbox.conversation_ids()[:2]
    before = sandbox.conversation(first)
    dag_run = run_dag("hilos_test_xcom_native", {"conversation_id": first, "second_id": second})
    assert dag_run.state == "success", states(dag_run)

    sent = {e["path"].split("/")[-2]: e for e in patches(sandbox)}
    assert set(sent) == {first, second}
    assert_exact_patch(sent[first], first, PAYLOAD)
    assert_exact_patch(sent[second], second, {**PAYLOAD, "assigned_team": 2})

    after = sandbox.conversation(first)
    assert after["status"] == "CLOSED"
    assert [t["name"] for t in after["tags"]] == ["vip", "renewal"]
    assert after["assigned"] == [{"id": 3}]
    assert {k: after[k] for k in ("contact", "created_on", "source", "channel", "assigned_team")} == {
        k: before[k] for k in ("contact", "created_on", "source", "channel", "assigned_team")
    }
    assert sandbox.conversation(second)["assigned_team"] == 2

    # the operator's return value is the API's ConversationEdit, in XCom
    assert xcom_value(dag_run, "via_xcomarg") == after
    # the extra link's URL is stored per task instance
    url = f"https://app.hilos.io/inbox/conversation/{first}"
    assert xcom_value(dag_run, "via_xcomarg", CONVERSATION_URL_XCOM_KEY) == url
    if not AIRFLOW_V3:  # Airflow 2's webserver calls get_link; Airflow 3 serves the XCom (tests/e2e checks it)
        from airflow_provider_hilos.links import HilosConversationLink

        (ti,) = [t for t in dag_run.get_task_instances() if t.task_id == "via_xcomarg"]
        assert HilosConversationLink().get_link(None, ti_key=ti.key) == url
    text = output()
    assert TEST_TOKEN not in text


def test_payload_from_jinja_string_is_parsed(sandbox, output):
    first, second = sandbox.conversation_ids()[2:4]
    dag_run = run_dag("hilos_test_xcom_string", {"conversation_id": first, "second_id": second})
    assert dag_run.state == "success", states(dag_run)
    sent = {e["path"].split("/")[-2]: e for e in patches(sandbox)}
    assert_exact_patch(sent[first], first, PAYLOAD)
    assert_exact_patch(sent[second], second, {**PAYLOAD, "status": "RESOLVED"})
    assert sandbox.conversation(second)["status"] == "RESOLVED"

    rendered = rendered_fields(dag_run, "via_jinja_json")
    assert json.loads(rendered["payload"]) == PAYLOAD  # the rendered template really was a JSON string
    assert rendered["conversation_id"] == first
    assert TEST_TOKEN not in json.dumps(rendered)
    text = output()
    assert TEST_TOKEN not in text


def test_dynamic_task_mapping_with_expand_kwargs(sandbox):
    ids = sandbox.conversation_ids()[4:9]
    dag_run = run_dag("hilos_test_mapped", {"ids": ids})
    assert dag_run.state == "success", states(dag_run)
    assert sorted(i for (t, i), s in states(dag_run).items() if t == "update" and s == "success") == list(range(5))
    for entry in patches(sandbox):
        assert entry["body"] == {"status": "IN_PROGRESS", "assigned_team": 1}
    for index, cid in enumerate(ids):
        assert sandbox.conversation(cid)["status"] == "IN_PROGRESS"
        assert xcom_value(dag_run, "update", CONVERSATION_URL_XCOM_KEY, map_index=index).endswith(cid)


def test_failures_fail_loudly_and_never_show_the_token(sandbox, monkeypatch, output):
    monkeypatch.setenv(
        "AIRFLOW_CONN_HILOS_BAD_TOKEN",
        json.dumps({"conn_type": "hilos", "host": sandbox.url, "password": TEST_TOKEN + "-wrong"}),
    )
    cid = sandbox.conversation_ids()[9]
    before = sandbox.conversation(cid)
    missing = "00000000-0000-4000-8000-000000000000"
    dag_run = run_dag("hilos_test_failures", {"conversation_id": cid, "missing_id": missing})
    assert dag_run.state == "failed"
    assert set(states(dag_run).values()) == {"failed"}
    # the bad payload never reached the server; the bad token and the unknown id did, once each
    paths = sorted(e["path"] for e in patches(sandbox))
    assert paths == sorted([f"/api/inbox/conversation/{cid}/update", f"/api/inbox/conversation/{missing}/update"])
    assert sandbox.conversation(cid) == before
    text = output()
    assert "rejected the API token of connection 'hilos_bad_token'" in text
    assert f"Hilos conversation {missing} was not found" in text
    assert "status: 'DONE' is not a valid status" in text
    assert TEST_TOKEN not in text
