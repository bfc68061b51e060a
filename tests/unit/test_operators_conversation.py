"""The update operators without a scheduler: arguments, templating, checks when the DAG is parsed, execute."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

from airflow.providers.common.compat.sdk import AirflowFailException, BaseHook

from airflow_provider_hilos.checkpoint import Checkpoint
from airflow_provider_hilos.exceptions import (
    HilosAPIError,
    HilosBatchError,
    HilosPermanentAPIError,
    HilosValidationError,
)
from airflow_provider_hilos.links import CONVERSATION_URL_XCOM_KEY, HilosConversationLink
from airflow_provider_hilos.operators.conversation import (
    ConversationBatchUpdateOperator,
    ConversationUpdateOperator,
    parse_payload,
)
from airflow_provider_hilos.rows import shard_problem
from airflow_provider_hilos.sandbox import HilosSandbox
from airflow_provider_hilos.storage import storage_path
from tests.conftest import TEST_TOKEN, FakeTI
from tests.helpers import CID, MISSING, URL, patches, run_csv

EDIT = {
    "id": CID,
    "contact": CID,
    "status": "CLOSED",
    "assigned": [],
    "tags": [],
    "created_on": "2025-01-01T00:00:00Z",
    "source": "API",
    "assigned_team": None,
    "channel": 1,
}


def test_every_argument_is_templated_and_payload_renders_as_json():
    op = ConversationUpdateOperator(task_id="t", conversation_id=CID)
    assert set(op.template_fields) == {
        "hilos_dry_run",
        "conversation_id",
        "payload",
        "status",
        "tags",
        "assigned",
        "assigned_team",
        "channel",
        "hilos_conn_id",
    }
    assert op.template_fields_renderers["payload"] == "json"
    assert [type(link) for link in op.operator_extra_links] == [HilosConversationLink]
    assert HilosConversationLink().name == "Hilos conversation"


def test_init_touches_no_network_and_no_connection(monkeypatch, requests_mock):
    monkeypatch.setattr(BaseHook, "get_connection", classmethod(lambda *a: (_ for _ in ()).throw(AssertionError)))
    ConversationUpdateOperator(
        task_id="t", conversation_id="{{ params.id }}", payload="{{ ti.xcom_pull() }}", hilos_conn_id="nowhere"
    )
    assert not requests_mock.called


def test_explicit_fields_override_payload_without_mutating_it():
    payload = {"status": "NEW", "tags": [{"name": "a"}], "channel": 2}
    op = ConversationUpdateOperator(
        task_id="t", conversation_id=CID, payload=payload, status="CLOSED", assigned=[{"id": 1}], assigned_team=4
    )
    assert op.build_payload() == {
        "status": "CLOSED",
        "tags": [{"name": "a"}],
        "channel": 2,
        "assigned": [{"id": 1}],
        "assigned_team": 4,
    }
    assert payload == {"status": "NEW", "tags": [{"name": "a"}], "channel": 2}


def test_explicit_fields_alone_make_a_payload():
    op = ConversationUpdateOperator(task_id="t", conversation_id=CID, tags=[{"name": "vip"}])
    assert op.build_payload() == {"tags": [{"name": "vip"}]}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"status": "CLOSED", "channel": null}', {"status": "CLOSED", "channel": None}),
        ("{'status': 'CLOSED', 'channel': None}", {"status": "CLOSED", "channel": None}),
        (b'{"tags": []}', {"tags": []}),
    ],
)
def test_string_payloads_are_parsed(text, expected):
    assert parse_payload(text) == expected


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("not json", "is a string but not a JSON object"),
        ("[1, 2]", "rendered to a list"),
        ("__import__('os').system('true')", "not a JSON object"),
        ("", "not a JSON object"),
        (42, "must be a dict of fields to update"),
        ('"CLOSED"', "rendered to a str"),
    ],
)
def test_bad_payload_strings_are_refused_clearly(value, match):
    with pytest.raises(HilosValidationError, match=match) as err:
        parse_payload(value)
    assert err.value.fields == ["payload"]


def test_execute_sends_validated_update_pushes_link_and_returns_edit(hilos_conn, requests_mock):
    hilos_conn()
    requests_mock.patch(URL, json=EDIT)
    ti = FakeTI()
    op = ConversationUpdateOperator(task_id="t", conversation_id=CID.upper(), payload='{"status": "CLOSED"}')
    assert op.execute({"ti": ti}) == EDIT
    assert requests_mock.last_request.json() == {"status": "CLOSED"}
    assert ti.pushed == {CONVERSATION_URL_XCOM_KEY: f"https://app.hilos.io/inbox/conversation/{CID}"}
    assert TEST_TOKEN not in repr(op.execute({"ti": ti}))


def test_web_link_base_comes_from_connection_extras(hilos_conn, requests_mock):
    hilos_conn(extra={"web_base_url": "https://hilos.example.com/"})
    requests_mock.patch(URL, json=EDIT)
    ti = FakeTI()
    ConversationUpdateOperator(task_id="t", conversation_id=CID, status="NEW").execute({"ti": ti})
    assert ti.pushed[CONVERSATION_URL_XCOM_KEY] == f"https://hilos.example.com/inbox/conversation/{CID}"


def test_bad_input_fails_without_retry_and_sends_nothing(requests_mock):
    op = ConversationUpdateOperator(task_id="t", conversation_id="../../x", payload={"status": "DONE"})
    with pytest.raises(HilosValidationError) as err:
        op.execute({"ti": FakeTI()})
    assert isinstance(err.value, AirflowFailException)  # Airflow does not retry a bad payload
    assert isinstance(err.value, ValueError)
    assert err.value.fields == ["conversation_id", "status"]
    assert not requests_mock.called


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "exactly one of updates"),
        ({"updates": [], "updates_path": "x"}, "exactly one of updates"),
        ({"updates": [], "failure_policy": "sometimes"}, "not one of fail_at_end, fail_fast, never"),
        ({"updates": [], "max_concurrency": 0}, "from 1 to 256"),
        ({"updates": [], "max_failed_ratio": 2}, "from 0 to 1"),
        ({"updates": [], "max_requests_per_second": 0}, "greater than 0"),
    ],
)
def test_operator_arguments_are_checked_at_parse_time(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ConversationBatchUpdateOperator(task_id="b", **kwargs)


def test_bad_batch_format_arguments_fail_when_the_dag_is_parsed(tmp_path):
    with pytest.raises(ValueError, match="input_format='xlsx' is not one of jsonl, csv"):
        ConversationBatchUpdateOperator(task_id="t", updates_path="x.xlsx", input_format="xlsx")
    with pytest.raises(ValueError, match="list_separator=';;' must be one character"):
        ConversationBatchUpdateOperator(task_id="t", updates_path="x.csv", list_separator=";;")
    with pytest.raises(HilosValidationError, match="list_separator: ',' also separates the columns"):
        run_csv(tmp_path, "conversation_id,tags\n", list_separator=",")


@pytest.mark.parametrize(
    ("index", "count", "message"),
    [
        (0, None, "give shard_index and shard_count together"),
        (None, 4, "give shard_index and shard_count together"),
        (4, 4, "shard_index=4: must be from 0 to shard_count - 1 (3)"),
        (-1, 4, "shard_index=-1: must be from 0"),
        (0, 0, "shard_count=0: must be at least 1"),
        (True, 4, "shard_index=True"),
        ("1", 4, "shard_index='1'"),
    ],
)
def test_bad_shard_arguments_are_refused_when_the_dag_is_parsed(index, count, message):
    assert message in (shard_problem(index, count) or "")
    with pytest.raises(ValueError, match="'b'") as info:
        ConversationBatchUpdateOperator(task_id="b", updates=[], shard_index=index, shard_count=count)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"shards": 0}, "shards=0: must be an integer, at least 1"),
        ({"shards": True}, "shards=True"),
        ({"shards": 2, "max_requests_per_second": 5}, "sets max_requests_per_second itself"),
        ({"shards": 2, "shard_index": 1}, "sets shard_index itself"),
        ({"shards": 2, "total_requests_per_second": 0}, "total_requests_per_second=0 must be a number greater than 0"),
    ],
)
def test_sharded_refuses_what_it_cannot_honour(kwargs, message):
    with pytest.raises(ValueError) as info:
        ConversationBatchUpdateOperator.sharded(task_id="s", updates_path="x.jsonl", **kwargs)
    assert message in str(info.value)


def test_sharded_maps_one_task_per_shard_at_a_share_of_the_quota():
    from airflow.providers.common.compat.sdk import DAG

    with DAG("sharded_shape", schedule=None):
        mapped = ConversationBatchUpdateOperator.sharded(
            task_id="s", shards=4, total_requests_per_second=100, updates_path="x.jsonl", pool="hilos_api"
        )
    op = mapped
    assert op.partial_kwargs["shard_count"] == 4
    assert op.partial_kwargs["max_requests_per_second"] == 25.0
    assert op.partial_kwargs["pool"] == "hilos_api"
    assert op.expand_input.value == {"shard_index": [0, 1, 2, 3]}
    assert op.partial_kwargs["map_index_template"] == "shard {{ task.shard_index }} of 4"


@pytest.mark.parametrize(("status", "fault"), [(401, None), (404, None), (400, None)])
def test_refusals_fail_the_single_task_without_airflow_retries(sb, monkeypatch, status, fault):
    cid = sb.conversation_ids()[0]
    kwargs = {"status": "CLOSED"}
    if status == 401:
        monkeypatch.setenv(
            "AIRFLOW_CONN_HILOS_DEFAULT",
            json.dumps({"conn_type": "hilos", "host": sb.url, "password": TEST_TOKEN + "-revoked"}),
        )
    elif status == 404:
        cid = MISSING.format(1)
    else:
        kwargs = {"assigned_team": 99}  # valid here, refused by the API: no such team
    with pytest.raises(HilosPermanentAPIError) as err:
        ConversationUpdateOperator(task_id="t", conversation_id=cid, **kwargs).execute({"ti": FakeTI()})
    assert isinstance(err.value, AirflowFailException) and err.value.status_code == status
    assert len(patches(sb)) == 1


def test_exhausted_server_errors_stay_retryable_for_airflow(sb, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_HILOS_DEFAULT", sb.connection_json(max_attempts=2))
    sb.set_faults(error_rate=1, error_statuses=[503], retry_after_seconds=0)
    with pytest.raises(HilosAPIError) as err:
        ConversationUpdateOperator(task_id="t", conversation_id=sb.conversation_ids()[0], status="NEW").execute(
            {"ti": FakeTI()}
        )
    assert not isinstance(err.value, AirflowFailException) and err.value.retryable


# -- on_kill: a task marked failed or timed out stops sending --------------------------------------------------


def test_a_killed_batch_starts_no_request_after_the_signal_and_its_checkpoint_holds_what_landed(tmp_path, monkeypatch):
    """SIGTERM in the task's process, handled as Airflow's task runner does (its handler calls ``on_kill``): at most
    the ``max_concurrency`` requests already in flight arrive after it, and every update the API accepted is in the
    checkpoint for the next try."""
    concurrency = 8
    with HilosSandbox(
        conversations=600, seed=21, token=TEST_TOKEN, request_log_limit=10_000, faults={"latency_ms": 60}
    ) as sandbox:
        monkeypatch.setenv("AIRFLOW_CONN_HILOS_DEFAULT", sandbox.connection_json())
        rows = [{"conversation_id": cid, "status": "RESOLVED"} for cid in sandbox.conversation_ids()]
        op = ConversationBatchUpdateOperator(
            task_id="b", updates=rows, max_concurrency=concurrency, checkpoint_path=str(tmp_path)
        )
        killed_at: list[float] = []

        def on_term(signum, frame):  # what Airflow's task runner installs
            killed_at.append(time.time())
            op.on_kill()

        previous = signal.signal(signal.SIGTERM, on_term)

        def kill_when_busy() -> None:
            while len(sandbox.requests()) < 80:
                time.sleep(0.01)
            os.kill(os.getpid(), signal.SIGTERM)

        killer = threading.Thread(target=kill_when_busy, daemon=True)
        killer.start()
        try:
            with pytest.raises(HilosBatchError, match="the task was stopped") as err:
                op.execute({"ti": FakeTI(run_id="killed")})
        finally:
            signal.signal(signal.SIGTERM, previous)
        killer.join()
        sent = sandbox.requests()
    assert killed_at
    after = [r for r in sent if r["time"] > killed_at[0]]
    assert len(after) <= concurrency, len(after)
    result = err.value.result
    assert result["stop_reason"] == "killed" and result["not_sent"] >= 400
    assert result["updated"] + result["not_sent"] + result["failed"] == 600
    landed = {r["path"].split("/")[-2] for r in sent if r["status"] == 200}
    (folder,) = tmp_path.iterdir()  # the task instance's own checkpoint folder
    recorded = set(Checkpoint(storage_path(str(folder))).applied())
    assert recorded == landed and len(landed) == result["updated"]


def test_a_killed_single_update_does_not_retry(hilos_conn, requests_mock):
    hilos_conn()
    op = ConversationUpdateOperator(task_id="t", conversation_id=CID, status="CLOSED")
    calls = []

    def answer(request, context):
        calls.append(request)
        op.on_kill()  # killed while the first attempt is in flight: it finishes, no retry starts
        context.status_code = 503
        return {"detail": "down"}

    requests_mock.patch(URL, json=answer)
    with pytest.raises(HilosAPIError, match="not sent \\(again\\): the task was stopped"):
        op.execute({"ti": FakeTI()})
    assert len(calls) == 1


# -- issue 28: agents by email, teams by name ------------------------------------------------------------------


def test_an_update_may_name_agents_by_email_and_the_team_by_name(sandbox):
    cid = sandbox.conversation_ids()[0]
    op = ConversationUpdateOperator(
        task_id="assign", conversation_id=cid, assigned='["LUIS@example.com", 1]', assigned_team="support"
    )
    op.execute({"ti": FakeTI()})
    held = sandbox.conversation(cid)
    assert sorted(u["id"] for u in held["assigned"]) == [1, 2] and held["assigned_team"] == 2
    assert [r["path"] for r in sandbox.requests()].count("/api/account-member") == 1


def test_an_unknown_email_fails_the_update_before_it_is_sent(sandbox):
    cid = sandbox.conversation_ids()[0]
    op = ConversationUpdateOperator(task_id="assign", conversation_id=cid, assigned=["nobody@example.com"])
    with pytest.raises(HilosValidationError, match=r"'nobody@example.com' is not the email of a member"):
        op.execute({"ti": FakeTI()})
    assert [r for r in sandbox.requests() if r["method"] == "PATCH"] == []


def test_an_update_naming_nobody_by_email_reads_no_members(sandbox):
    cid = sandbox.conversation_ids()[0]
    ConversationUpdateOperator(task_id="assign", conversation_id=cid, assigned=[3]).execute({"ti": FakeTI()})
    assert "/api/account-member" not in [r["path"] for r in sandbox.requests()]


def test_a_batch_resolves_emails_once_and_an_unknown_one_is_an_invalid_row_naming_it(sandbox):
    ids = sandbox.conversation_ids()[:3]
    rows = [
        {"conversation_id": ids[0], "assigned": ["ana@example.com"]},
        {"conversation_id": ids[1], "assigned_team": "Billing"},
        {"conversation_id": ids[2], "assigned": ["ghost@example.com"]},
    ]
    with pytest.raises(HilosValidationError) as refused:
        ConversationBatchUpdateOperator(task_id="b", updates=rows).execute({"ti": FakeTI()})
    assert "row 3" in str(refused.value) and "'ghost@example.com' is not the email of a member" in str(refused.value)
    result = ConversationBatchUpdateOperator(task_id="b", updates=rows, skip_invalid_rows=True).execute(
        {"ti": FakeTI()}
    )
    assert result["updated"] == 2 and result["skipped"] == 1
    assert [u["id"] for u in sandbox.conversation(ids[0])["assigned"]] == [1]
    assert sandbox.conversation(ids[1])["assigned_team"] == 3
    assert [r["path"] for r in sandbox.requests()].count("/api/account-member") == 2  # once per run
