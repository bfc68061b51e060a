"""What an object is to the one sync engine: both objects answer the same questions, and the engine asks nothing
else of them."""

from __future__ import annotations

import inspect

import pytest

from airflow_provider_hilos.sync.diff import Action, CompareWith
from airflow_provider_hilos.sync.objects import SyncObject
from airflow_provider_hilos.sync.objects.contact import ContactObject, SyncMode
from airflow_provider_hilos.sync.objects.conversation import ConversationObject

OBJECTS = [ConversationObject(), ContactObject()]


@pytest.mark.parametrize("obj", OBJECTS, ids=lambda o: o.name)
def test_each_object_says_its_key_fields_wording_and_list(obj: SyncObject):
    assert obj.plural == f"{obj.name}s" and obj.columns.key == obj.key_column
    assert obj.rows_words.key_field == obj.key_column and obj.updates_words.key_field == obj.key_column
    assert set(obj.fields.order) <= set(obj.columns.names)


def test_the_abstract_object_cannot_be_made_without_its_parts():
    with pytest.raises(TypeError, match="abstract"):
        SyncObject()  # type: ignore[abstract]
    abstract = {name for name, member in inspect.getmembers(SyncObject) if getattr(member, "__isabstractmethod__", 0)}
    assert abstract == {"desired", "listed", "listed_key", "listed_fields", "paginator", "write", "stored", "restored"}


def test_what_an_object_missing_from_the_listing_becomes_and_what_is_deleted():
    assert ConversationObject().missing() is Action.NOT_FOUND and not ConversationObject().lifecycle
    assert ConversationObject(send_not_found=True).send_missing()
    assert ContactObject().missing() is Action.CREATE and ContactObject().lifecycle
    assert ContactObject(mode=SyncMode.UPDATE).missing() is Action.NOT_FOUND
    assert ContactObject(mode=SyncMode.MIRROR).mirrors and not ContactObject().mirrors
    assert not ConversationObject().mirrors


@pytest.mark.parametrize("obj", OBJECTS, ids=lambda o: o.name)
def test_the_one_diff_plans_both_objects(obj: SyncObject):
    key, desired = (
        ("3fa85f64-5717-4562-b3fc-2c963f66afa6", {"status": "CLOSED"})
        if obj.name == "conversation"
        else ("+525512345678", {"first_name": "Ana"})
    )
    current = {name: None for name in desired}
    entry = obj.plan(
        key,
        desired,
        compare_with=CompareWith.HILOS,
        current=current,
        previous=None,
        failed_before=False,
        row=1,
        object_id="id-1",
    )
    assert entry.action is Action.UPDATE and entry.key == key and [c.field for c in entry.changes] == list(desired)
    same = obj.plan(
        key,
        desired,
        compare_with=CompareWith.HILOS,
        current=dict(desired),
        previous=None,
        failed_before=False,
        row=1,
        object_id="id-1",
    )
    assert same.action is Action.UNCHANGED
