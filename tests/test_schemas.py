"""The update schema: every rule in one model, every problem reported at once."""

from __future__ import annotations

import uuid

import pytest

from airflow_provider_hilos.exceptions import HilosValidationError
from airflow_provider_hilos.schemas import (
    CLEAR,
    WRITABLE_FIELDS,
    ConversationStatus,
    canonical_conversation_id,
    validate_update,
)

CID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"


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


def test_the_old_module_name_still_imports():
    """``models`` was renamed ``schemas`` (Airflow people read "models" as database models); DAGs that import
    the old name keep working."""
    from airflow_provider_hilos import models, schemas

    assert models.validate_update is schemas.validate_update
    assert models.ConversationStatus is schemas.ConversationStatus
