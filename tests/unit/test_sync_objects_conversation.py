"""A conversation to the sync engine: keyed by its canonical id, its desired row validated as every update is, its
list row read as the diff reads it, and its write the one validated PATCH."""

from __future__ import annotations

import pytest

from airflow_provider_hilos.exceptions import HilosValidationError
from airflow_provider_hilos.schemas import ValidatedUpdate
from airflow_provider_hilos.sync.diff import Action, CompareWith, ListMode
from airflow_provider_hilos.sync.objects.conversation import ConversationObject

CID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"


def test_a_desired_row_is_validated_and_keyed_by_its_canonical_id():
    obj = ConversationObject()
    key, fields = obj.desired(1, {"conversation_id": CID.upper(), "status": "CLOSED", "tags": ["vip", "lead"]})
    assert key == CID and fields == {"status": "CLOSED", "tags": ("lead", "vip")}
    assert obj.desired(2, {"conversation_id": CID}) == (CID, {})  # only its id: manages nothing
    with pytest.raises(HilosValidationError, match="conversation_id"):
        obj.desired(3, {"conversation_id": "nope"})
    with pytest.raises(HilosValidationError, match="status"):
        obj.desired(4, {"conversation_id": CID, "status": "SHOUTING"})


def test_a_list_row_is_keyed_by_its_id_and_read_as_the_diff_reads_it():
    key, oid, fields = ConversationObject().listed(
        {"id": CID.upper(), "status": "NEW", "tags": [{"id": 1, "name": "vip"}], "assigned": [{"id": 3}]}
    )
    assert key == oid == CID and fields["status"] == "NEW" and fields["tags"] == ("vip",)
    assert ConversationObject().listed({"id": "x"}) == (None, None, {})


def test_the_write_is_the_one_validated_update_and_survives_storage():
    obj = ConversationObject(tags_mode=ListMode.REPLACE)
    entry = obj.plan(
        CID,
        {"status": "CLOSED"},
        compare_with=CompareWith.HILOS,
        current={"status": "NEW"},
        previous=None,
        failed_before=False,
        row=1,
        object_id=CID,
    )
    write = obj.write(entry, current={"status": "NEW"}, desired={"status": "CLOSED"})
    assert isinstance(write, ValidatedUpdate) and write.body == {"status": "CLOSED"}
    assert obj.restored(obj.stored(write)) == write


def test_a_conversation_hilos_did_not_list_is_not_found_unless_sent_anyway():
    common = dict(
        compare_with=CompareWith.HILOS, current=None, previous=None, failed_before=False, row=1, object_id=None
    )
    assert ConversationObject().plan(CID, {"status": "CLOSED"}, **common).action is Action.NOT_FOUND
    sent = ConversationObject(send_not_found=True).plan(CID, {"status": "CLOSED"}, **common)
    assert sent.action is Action.UPDATE and "send_not_found" in sent.reason


def test_a_row_of_values_seen_before_is_read_as_a_fresh_object_reads_it():
    """Field values already found valid are not validated again: each row still gives exactly what a new object
    gives it, and a row with a new, invalid value is still refused, naming it."""
    rows = [
        {"conversation_id": CID.upper(), "status": "CLOSED", "tags": ["vip", "lead"], "assigned": [3, 1]},
        {"conversation_id": CID, "status": "CLOSED", "tags": ["lead", "vip"], "assigned": ["1", 3]},
        {"conversation_id": CID, "status": "CLOSED", "tags": ["vip", "lead"], "assigned_team": 2},
        {"conversation_id": CID, "status": "NEW", "tags": ["vip", "lead"], "assigned": [3, 1]},
        {"conversation_id": CID, "status": "CLOSED", "tags": [], "assigned": [3, 1], "channel": 4},
    ]
    obj = ConversationObject()
    for number, row in enumerate(rows * 2, 1):
        assert obj.desired(number, row) == ConversationObject().desired(number, row)
    assert obj._normal  # the values were remembered
    with pytest.raises(HilosValidationError, match="status"):
        obj.desired(99, {"conversation_id": CID, "status": "SHOUTING", "tags": ["vip", "lead"]})
    with pytest.raises(HilosValidationError, match="conversation_id"):
        obj.desired(100, {"conversation_id": "nope", "status": "CLOSED"})
