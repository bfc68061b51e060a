"""ConversationUpdateOperator without a scheduler: arguments, templating, payload parsing, execute."""

from __future__ import annotations

import pytest

from airflow.providers.common.compat.sdk import AirflowFailException, BaseHook

from airflow_provider_hilos.exceptions import HilosValidationError
from airflow_provider_hilos.links import CONVERSATION_URL_XCOM_KEY, HilosConversationLink
from airflow_provider_hilos.operators.conversation import ConversationUpdateOperator, parse_payload
from tests.conftest import TEST_TOKEN, FakeTI

CID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
URL = f"https://api.hilos.io/api/inbox/conversation/{CID}/update"
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
