"""The write model: what a PATCH may carry, normalised once, refused before anything is sent."""

from __future__ import annotations

import uuid

import pytest

from airflow_provider_hilos.exceptions import HilosValidationError
from airflow_provider_hilos.hooks.hilos import HilosHook
from airflow_provider_hilos.operators.conversation import parse_payload
from airflow_provider_hilos.schemas import (
    CLEAR,
    LIST_FIELDS,
    WRITABLE_FIELDS,
    ConversationStatus,
    canonical_conversation_id,
    validate_update,
)
from tests.helpers import CID, URL


def problems(conversation_id, payload) -> dict[str, str]:
    with pytest.raises(HilosValidationError) as err:
        validate_update(conversation_id, payload)
    assert isinstance(err.value, ValueError)
    return dict(err.value.problems)


def test_valid_update_is_normalised():
    update = validate_update(
        CID.upper(),
        {
            "status": "RESOLVED",
            "assigned": [{"id": 3}],
            "tags": [{"name": "vip"}],
            "assigned_team": 2,
            "channel": CLEAR,
        },
    )
    assert update.conversation_id == CID
    assert update.body == {
        "status": "RESOLVED",
        "assigned": [{"id": 3}],
        "tags": [{"name": "vip"}],
        "assigned_team": 2,
        "channel": None,
    }


def test_only_given_fields_are_sent():
    assert validate_update(uuid.UUID(CID), {"tags": []}).body == {"tags": []}


def test_writable_fields_and_statuses_match_the_seed():
    assert WRITABLE_FIELDS == ("status", "assigned", "tags", "assigned_team", "channel")
    assert [s.value for s in ConversationStatus] == [
        "CREATED",
        "FLOW",
        "FLOW_PAUSED",
        "NEW",
        "IN_PROGRESS",
        "RESOLVED",
        "CLOSED",
    ]


@pytest.mark.parametrize(
    "bad_id",
    [
        "../x",
        "%2F",
        f"{CID}?x=1",
        f" {CID}",
        f"{CID}\n",
        f"{CID}/../a",
        "",
        "3fa85f64571745",
        CID.replace("a", "а"),  # Cyrillic look-alike
        "{" + CID + "}",
        "urn:uuid:" + CID,
        CID.replace("-", ""),
        "x" * 5000,
        42,
        None,
    ],
)
def test_conversation_id_must_be_a_plain_uuid(bad_id):
    found = problems(bad_id, {"status": "NEW"})
    assert list(found) == ["conversation_id"]
    assert canonical_conversation_id(bad_id) is None


def test_every_problem_is_reported_together_with_its_fix():
    found = problems(
        "../x",
        {
            "status": "DONE",
            "assigned": [{"id": "7x"}, 5.5],
            "tags": [{"name": "x" * 101}, {"id": 1, "name": "a"}],
            "assigned_team": "3x",
            "channel": 1.5,
            "created_on": "2025-01-01",
            "source": "API",
            "stauts": "NEW",
            "contact": CID,
            "id": CID,
        },
    )
    assert found["conversation_id"].startswith("'../x' is not a conversation UUID")
    assert "use one of CREATED, FLOW, FLOW_PAUSED, NEW, IN_PROGRESS, RESOLVED, CLOSED" in found["status"]
    assert "got str '7x'" in found["assigned[0].id"]
    assert 'a user id like 12 (or {"id": 12})' in found["assigned[1]"]
    assert "101 characters, the API allows at most 100" in found["tags[0].name"]
    assert "tag ids are read-only" in found["tags[1].id"]
    assert "got str '3x'" in found["assigned_team"] and "render_template_as_native_obj" in found["assigned_team"]
    assert "a channel id (a whole number), or '-' to clear it" in found["channel"]
    assert "read-only" in found["created_on"] and "read-only" in found["source"]
    assert "did you mean 'status'?" in found["stauts"]
    assert "pass it as conversation_id" in found["id"]
    assert "contact" in found


def test_empty_and_non_object_payloads_are_refused():
    assert "nothing to update" in problems(CID, {})["payload"]
    assert "must be a JSON object" in problems(CID, None)["payload"]
    assert "got list" in problems(CID, [{"status": "NEW"}])["payload"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"status": None, "assigned_team": True}, "assigned_team"),
        ({"assigned": None, "assigned_team": "-"}, "assigned_team"),
        ({"assigned_team": True}, "assigned_team"),
        ({"assigned": [{"id": True}]}, "assigned[0].id"),
        ({"assigned": [{}]}, "assigned[0].id"),
        ({"tags": [{"name": ""}]}, "tags[0].name"),
        ({"tags": [{"name": 5}]}, "tags[0].name"),
        ({"tags": [{"name": "a", "color": "red"}]}, "tags[0].color"),
        ({"status": "closed"}, "status"),
    ],
)
def test_wrong_types_and_nulls(payload, field):
    assert field in problems(CID, payload)


def test_channel_may_be_cleared_and_tag_name_may_be_100_chars():
    assert validate_update(CID, {"channel": CLEAR, "tags": [{"name": "x" * 100}]}).body["channel"] is None


@pytest.mark.parametrize("field", ["status", "assigned_team"])
def test_only_tags_assigned_and_channel_can_be_cleared(field):
    assert problems(CID, {field: CLEAR})[field].startswith("cannot be cleared ('-' clears the channel, or empties")
    body = validate_update(CID, {"tags": CLEAR, "assigned": CLEAR, "channel": CLEAR}).body
    assert body == {"tags": [], "assigned": [], "channel": None}


def test_message_names_the_conversation():
    with pytest.raises(HilosValidationError) as err:
        validate_update(CID, {"status": "DONE"})
    assert str(err.value).startswith(f"Invalid Hilos conversation update for conversation {CID}: 1 problem:")


@pytest.mark.parametrize("text", ["[" * 100_000, '{"status": ' + "[" * 100_000, "{'a': " * 50_000])
def test_a_deeply_nested_payload_string_is_a_validation_error(text):
    with pytest.raises(HilosValidationError) as err:
        parse_payload(text)
    assert err.value.fields == ["payload"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"assigned_team": 10**5000}, "assigned_team"),
        ({"assigned_team": 2**63}, "assigned_team"),
        ({"channel": 0}, "channel"),
        ({"assigned": [{"id": -1}]}, "assigned[0].id"),
        ({"assigned": [{"id": 10**30}]}, "assigned[0].id"),
    ],
)
def test_ids_are_bounded_to_what_the_api_can_store(requests_mock, payload, field):
    with pytest.raises(HilosValidationError) as err:
        HilosHook().update_conversation(CID, payload)
    assert field in err.value.fields
    assert "a whole number from 1 to 9223372036854775807" in dict(err.value.problems)[field]
    assert not requests_mock.called


def test_the_largest_id_the_api_can_store_is_accepted(hilos_conn, requests_mock):
    hilos_conn()
    requests_mock.patch(URL, json={})
    HilosHook().update_conversation(CID, {"assigned_team": 2**63 - 1})
    assert requests_mock.last_request.json() == {"assigned_team": 2**63 - 1}


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"tags": [{"name": "   "}]}, "tags[0].name"),
        ({"tags": [{"name": "\t\n"}]}, "tags[0].name"),
        ({"tags": [{"name": "vi\x00p"}]}, "tags[0].name"),
        ({"status": "CLOSED\x00"}, "status"),
        ({"tags": [{"name": f"t{i}"} for i in range(101)]}, "tags"),
    ],
)
def test_blank_names_nul_characters_and_too_many_tags_are_refused_before_sending(requests_mock, payload, field):
    with pytest.raises(HilosValidationError) as err:
        HilosHook().update_conversation(CID, payload)
    assert field in err.value.fields
    assert not requests_mock.called


@pytest.mark.parametrize(
    "rendered",
    ['["vip", "renewal"]', "['vip', 'renewal']", b'["vip", "renewal"]', ["vip", "renewal"]],
    ids=["json", "python repr", "bytes", "a list"],
)
def test_one_normaliser_reads_a_list_rendered_as_text_on_every_path(rendered):
    """The single operator's argument, its payload, and a batch row: the same value, the same update."""
    from airflow_provider_hilos.operators.conversation import ConversationUpdateOperator
    from airflow_provider_hilos.rows import validate_row

    expected = validate_update(CID, {"tags": ["vip", "renewal"], "assigned": [3]})
    single = ConversationUpdateOperator(task_id="t", conversation_id=CID, tags=rendered, assigned="[3]")
    assert validate_update(CID, single.build_payload()) == expected
    payload = ConversationUpdateOperator(
        task_id="t", conversation_id=CID, payload={"tags": rendered, "assigned": "[3]"}
    )
    assert validate_update(CID, payload.build_payload()) == expected
    assert validate_row({"conversation_id": CID, "tags": rendered, "assigned": "[3]"}) == expected


def test_a_list_field_given_text_that_is_not_a_list_names_the_field_and_the_fix():
    with pytest.raises(HilosValidationError) as err:
        validate_update(CID, {"tags": "vip", "status": "DONE"})
    assert err.value.fields == ["tags", "status"]  # every problem, at once
    assert "is a string but not JSON" in str(err.value) and "tojson" in str(err.value)
    assert validate_update(CID, {"tags": CLEAR}).body == {"tags": []}  # CLEAR is not rendered text


def test_every_writable_field_is_an_argument_of_the_single_operator():
    """The field list is written once (the schema); the operator's explicit arguments must match it."""
    import inspect

    from airflow_provider_hilos.operators.conversation import ConversationUpdateOperator

    parameters = inspect.signature(ConversationUpdateOperator.__init__).parameters
    assert {name for name in parameters if name in WRITABLE_FIELDS} == set(WRITABLE_FIELDS)
    assert LIST_FIELDS == ("assigned", "tags")


def test_an_id_key_is_the_uuids_number_whatever_the_case():
    import uuid

    from airflow_provider_hilos.schemas import id_key

    cid = "6513270e-269e-4d37-b2a7-4de452e6b438"
    assert id_key(cid) == uuid.UUID(cid).int == id_key(cid.upper())
    with pytest.raises(ValueError):
        id_key("not-a-uuid")
