"""The operators in real DAG runs (``dag.test()``): payloads from XCom and templates, mapping, failures, plain
values, dry runs, Asset events, Airflow's retries."""

from __future__ import annotations

import json
from importlib.metadata import version

import pytest

from airflow_provider_hilos.links import CONVERSATION_URL_XCOM_KEY
from airflow_provider_hilos.operators.conversation import (
    ConversationBatchUpdateOperator,
)
from airflow_provider_hilos.sandbox import HilosSandbox
from tests.conftest import AIRFLOW_V3, TEST_DAGS, TEST_TOKEN, dag_bag, rendered_fields, run_dag, xcom_value
from tests.helpers import MISSING, bodies, patches, rows_for

pytestmark = pytest.mark.usefixtures("airflow_db")

PAYLOAD = {"status": "CLOSED", "tags": [{"name": "vip"}, {"name": "renewal"}], "assigned": [{"id": 3}]}


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


def asset_event_extras(dag_run) -> list[dict]:
    from airflow.utils.session import create_session

    if AIRFLOW_V3:
        from airflow.models.asset import AssetEvent as Event
    else:
        from airflow.models.dataset import DatasetEvent as Event
    with create_session() as session:
        events = session.query(Event).filter(Event.source_run_id == dag_run.run_id).all()
        return [dict(event.extra) for event in events]


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


def test_plain_tags_and_ids_and_none_mean_the_same_in_every_path(sandbox, output):
    cid, *ids = sandbox.conversation_ids()[:5]
    before = {c: sandbox.conversation(c) for c in ids}
    dag_run = run_dag("hilos_test_plain_values", {"conversation_id": cid, "ids": ids})
    assert dag_run.state == "success", states(dag_run)

    sent = bodies(sandbox)
    # names trimmed, the repeated "vip" sent once, ids as the API's objects, "{{ params.team }}" -> "2" -> 2
    assert sent[cid] == {
        "status": "IN_PROGRESS",
        "tags": [{"name": "vip"}, {"name": "renewal"}],
        "assigned": [{"id": 3}, {"id": 1}],
        "assigned_team": 2,
    }
    # the same warehouse rows (None = SQL NULL = not given) mapped, then in a batch: the same requests
    first_row = {"status": "RESOLVED", "tags": [{"name": "churn"}]}
    second_row = {"assigned": [{"id": 2}], "assigned_team": 1}
    assert [sent[ids[0]], sent[ids[1]]] == [first_row, second_row]  # mapped
    assert [sent[ids[2]], sent[ids[3]]] == [first_row, second_row]  # batch
    for conversation in (ids[0], ids[2]):
        after = sandbox.conversation(conversation)
        assert after["status"] == "RESOLVED" and [t["name"] for t in after["tags"]] == ["churn"]
        assert after["assigned"] == before[conversation]["assigned"]  # None left it as it was
        assert after["channel"] == before[conversation]["channel"]
    assert sandbox.conversation(cid)["assigned_team"] == 2
    assert TEST_TOKEN not in output()


def test_mapped_tasks_show_their_conversation_id(sandbox):
    cid, *ids = sandbox.conversation_ids()[:5]
    dag_run = run_dag("hilos_test_plain_values", {"conversation_id": cid, "ids": ids})
    assert dag_run.state == "success", states(dag_run)
    mapped = sorted(
        (ti.map_index, ti.rendered_map_index) for ti in dag_run.get_task_instances() if ti.task_id == "mapped"
    )
    assert mapped == [(0, ids[0]), (1, ids[1])]


def test_a_dry_run_sends_nothing_and_says_what_it_would_send(sandbox, output):
    cid, *ids = sandbox.conversation_ids()[:3]
    before = {c: sandbox.conversation(c) for c in sandbox.conversation_ids()}
    rows = [{"conversation_id": c, "status": "CLOSED", "tags": "vip"} for c in ids]
    rows[1]["tags"] = ["vip", "renewal"]
    rows[0]["tags"] = ["vip"]
    dag_run = run_dag("hilos_test_dry_run", {"conversation_id": cid, "rows": rows})
    assert dag_run.state == "success", states(dag_run)

    assert patches(sandbox) == []  # nothing was sent
    assert {c: sandbox.conversation(c) for c in before} == before
    url = f"{sandbox.url}/api/inbox/conversation/{cid}/update"
    single = xcom_value(dag_run, "single")
    assert single == {
        "dry_run": True,
        "method": "PATCH",
        "url": url,
        "body": {"status": "CLOSED", "tags": [{"name": "vip"}]},
    }
    batch = xcom_value(dag_run, "batch")
    assert (batch["dry_run"], batch["total"], batch["to_send"], batch["skipped"]) == (True, 2, 2, 0)
    assert [request["url"] for request in batch["requests"]] == [
        f"{sandbox.url}/api/inbox/conversation/{c}/update" for c in ids
    ]
    assert batch["requests"][1]["body"] == {"status": "CLOSED", "tags": [{"name": "vip"}, {"name": "renewal"}]}
    text = output()
    assert (
        f'Dry run, nothing sent: would send PATCH {url} with body {{"status": "CLOSED", "tags": [{{"name": "vip"}}]}}'
        in text
    )
    assert "Hilos batch dry run, nothing sent: 2 row(s), 2 would be sent as PATCH" in text
    assert f"Dry run: row 2: PATCH {sandbox.url}/api/inbox/conversation/{ids[1]}/update" in text
    assert TEST_TOKEN not in text and TEST_TOKEN not in json.dumps([single, batch])


def test_a_successful_batch_announces_its_counts_on_its_asset(sandbox):
    ids = sandbox.conversation_ids()[:3]
    rows = [{"conversation_id": c, "status": "RESOLVED"} for c in ids]
    if not AIRFLOW_V3:  # Airflow 2 records an event only for a dataset it knows (the DAG processor would write it)
        dag_bag(TEST_DAGS).get_dag("hilos_test_asset_outlet").sync_to_db()
    dag_run = run_dag("hilos_test_asset_outlet", {"rows": rows})
    assert dag_run.state == "success", states(dag_run)
    (extra,) = asset_event_extras(dag_run)
    assert {k: extra[k] for k in ("total", "updated", "failed", "skipped", "not_sent")} == {
        "total": 3,
        "updated": 3,
        "failed": 0,
        "skipped": 0,
        "not_sent": 0,
    }
    assert set(extra) == set(ConversationBatchUpdateOperator.ASSET_EXTRA_FIELDS)


@pytest.mark.usefixtures("airflow_db")
def test_batch_operator_in_a_dag_run_with_updates_from_xcom(sb):
    ids = sb.conversation_ids()[:50]
    dag_run = run_dag("hilos_test_batch", {"ids": ids})
    assert dag_run.state == "success"
    result = xcom_value(dag_run, "batch")
    assert (result["total"], result["updated"], result["failed"]) == (50, 50, 0)
    assert all(sb.conversation(cid)["status"] == "RESOLVED" for cid in ids)


@pytest.mark.usefixtures("airflow_db")
def test_in_a_dag_run_airflow_retries_only_what_can_succeed(sb, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_HILOS_REVOKED",
        json.dumps({"conn_type": "hilos", "host": sb.url, "password": TEST_TOKEN + "-revoked"}),
    )
    with HilosSandbox(
        conversations=2, token=TEST_TOKEN, faults={"error_rate": 1, "error_statuses": [503], "retry_after_seconds": 0}
    ) as down:
        monkeypatch.setenv("AIRFLOW_CONN_HILOS_DOWN", down.connection_json(max_attempts=2))
        dag_run = run_dag("hilos_test_retries", {"conversation_id": sb.conversation_ids()[0]})
        down_requests = len(patches(down))
    tries = {ti.task_id: (ti.state, ti.try_number) for ti in dag_run.get_task_instances()}
    assert tries["revoked_token"] == ("failed", 1)  # retries=2, yet one try: a refused token stays refused
    assert tries["api_down"] == ("failed", 3)  # retried twice by Airflow: the API may be back
    assert len(patches(sb)) == 1 and down_requests == 3 * 2


@pytest.mark.usefixtures("airflow_db")
def test_the_readme_alert_pattern_keeps_a_failed_batch_red(sb):
    rows = [*rows_for(sb.conversation_ids()[:5]), {"conversation_id": MISSING.format(0), "status": "NEW"}]
    dag_run = run_dag("hilos_test_alert_pattern", {"rows": rows})
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert states == {"apply": "failed", "summary": "success", "fail_run_if_batch_failed": "failed"}
    assert dag_run.state == "failed"  # the summary ran, and the run still says the sync failed
    summary = xcom_value(dag_run, "summary")
    assert (summary["updated"], summary["failed"]) == (5, 1)


def test_partial_expand_and_default_args_know_the_options(sb):
    """``sharded()`` passes ``max_requests_per_second`` through ``partial()``; ``default_args`` may set an option."""
    dag_run = run_dag("hilos_test_templated_options", {"ids": sb.conversation_ids()[:6], "rate": 25})
    assert dag_run.state == "success"
    result = xcom_value(dag_run, "batch")
    assert (result["total"], result["updated"]) == (6, 6)
    rendered = rendered_fields(dag_run, "batch")
    assert rendered["max_requests_per_second"] in (25, "25")  # from params, rendered
    assert rendered["max_concurrency"] in (3, "3")  # from default_args
