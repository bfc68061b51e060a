"""The contact resource: create-or-update by phone, get, partial update, delete and the list, each write checked
against the document before it is sent, through the hook's transport (quota, breaker, redaction)."""

from __future__ import annotations

import pytest

from airflow_provider_hilos.exceptions import HilosAPIError, HilosConfigurationError, HilosValidationError
from airflow_provider_hilos.hooks.hilos import HilosHook
from airflow_provider_hilos.resources.contacts import CREATE, DELETE, UPDATE, ContactWrite, contact_write
from tests.conftest import TEST_TOKEN


def writes(sandbox) -> list[tuple[str, str]]:
    return [(r["method"], r["path"]) for r in sandbox.requests() if r["method"] in ("POST", "PATCH", "DELETE")]


def test_a_write_is_checked_before_it_is_made():
    assert contact_write("+525512345678", CREATE, body={"phone": "+525512345678"}).action == CREATE
    for action, kwargs, message in (
        ("upsert", {"body": {"phone": "+1"}}, "not one of create, update, delete"),
        (UPDATE, {"body": {"first_name": "A"}}, "needs the contact's id"),
        (CREATE, {"body": {"first_name": "A"}}, "a create sends the phone"),
        (UPDATE, {"contact_id": "c", "body": {}}, "at least one field"),
        (UPDATE, {"contact_id": "c", "body": {"email": "nope"}}, "not an email address"),
    ):
        with pytest.raises(HilosValidationError, match=message):
            contact_write("+525512345678", action, **kwargs)
    write = contact_write("+525512345678", DELETE, contact_id="c")
    assert write.key == "+525512345678" and write.digest_body == {"action": "delete", "id": "c", "body": None}


def test_create_or_update_by_phone_then_patch_get_and_delete(sandbox):
    with HilosHook() as hook:
        contacts = hook.contacts
        made = contacts.create_or_update({"phone": "+52 55 0000 1111", "first_name": "Ana", "meta": {"plan": "pro"}})
        again = contacts.create_or_update({"phone": "+525500001111", "last_name": "Garcia"})  # the same phone
        assert again["id"] == made["id"] and again["first_name"] == "Ana" and again["last_name"] == "Garcia"
        updated = contacts.update(made["id"], {"meta": {"ltv": "42"}})
        assert updated["meta"] == {"plan": "pro", "ltv": "42"}  # merged: no overwrite_meta
        detail = contacts.get(made["id"])
        assert detail["canonical_phone"] == "+525500001111" and "default_assignees" in detail
        contacts.delete(made["id"])
        with pytest.raises(HilosAPIError) as gone:
            contacts.get(made["id"])
    assert gone.value.status_code == 404
    assert writes(sandbox) == [
        ("POST", "/api/contact"),
        ("POST", "/api/contact"),
        ("PATCH", f"/api/contact/{made['id']}"),
        ("DELETE", f"/api/contact/{made['id']}"),
    ]


def test_an_invalid_body_is_refused_before_any_request(sandbox):
    with HilosHook() as hook, pytest.raises(HilosValidationError, match="external_url"):
        hook.contacts.update(sandbox.contact_ids()[0], {"external_url": "ftp://x"})
    with HilosHook() as hook, pytest.raises(TypeError, match="ContactWrite"):
        hook.contacts.send({"phone": "+1"})  # type: ignore[arg-type]
    assert writes(sandbox) == []


def test_the_api_refusing_a_write_names_the_field_and_never_the_token(sandbox):
    with HilosHook() as hook, pytest.raises(HilosAPIError) as refused:
        hook.contacts.update(sandbox.contact_ids()[0], {"default_assignees": [999]})  # no such user
    assert refused.value.status_code == 400 and "default_assignees" in str(refused.value)
    assert TEST_TOKEN not in str(refused.value) + repr(refused.value)


def test_the_list_and_search_read_every_contact_once(sandbox):
    with HilosHook() as hook:
        every = list(hook.contacts.rows(page_size=6, concurrency=2))
        phone = sandbox.contact(sandbox.contact_ids()[3])["phone"]
        found = hook.contacts.list(search=phone[-8:])
    assert sorted(r["id"] for r in every) == sorted(sandbox.contact_ids())
    assert [r["id"] for r in found["results"]] == [sandbox.contact_ids()[3]]


def test_contacts_need_hilos_own_api(hilos_conn):
    hilos_conn(host="https://acme.api-us1.com/api/3")
    with HilosHook() as hook, pytest.raises(HilosConfigurationError, match=r"no contact endpoints.*api\.hilos\.io"):
        hook.contacts.list()


def test_a_stored_write_is_a_plain_frozen_value():
    write = ContactWrite("+525512345678", UPDATE, "c1", {"first_name": "Ana"})
    with pytest.raises(AttributeError):
        write.phone = "+1"  # type: ignore[misc]
