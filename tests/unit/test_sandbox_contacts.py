"""The sandbox's contacts and account members, as Hilos's own document describes them: the merge semantics of a
create-or-update by phone and of a partial update, the ``overwrite_*`` flags, DRF's 400 shapes, delete, the list's
order and search, and the fault knobs and request log on these paths."""

from __future__ import annotations

import pytest
import requests

from airflow_provider_hilos.sandbox import HilosSandbox
from airflow_provider_hilos.sandbox.contacts import ContactBook, ContactInvalid, seeded_phone
from tests.conftest import TEST_TOKEN

USERS = {
    i: {
        "id": i,
        "first_name": n,
        "last_name": "Garcia",
        "email": f"{n.lower()}@example.com",
        "account": 1,
        "profile_image": None,
        "date_joined": "2024-01-01T00:00:00Z",
    }
    for i, n in ((1, "Ana"), (2, "Luis"), (3, "Maria"))
}


def book(extra: int = 0) -> ContactBook:
    return ContactBook(["3fa85f64-5717-4562-b3fc-2c963f66afa6"], USERS, seed=1, extra=extra)


def test_seeded_contacts_are_the_conversations_contacts_plus_the_extra_ones():
    with HilosSandbox(conversations=10, seed=4, token=TEST_TOKEN, extra_contacts=5) as sb:
        ids = set(sb.contact_ids())
        owners = {sb.conversation(cid)["contact"] for cid in sb.conversation_ids()}
        assert owners <= ids and len(ids) == len(owners) + 5
        some = sb.contact(next(iter(owners)))
        assert some["phone"] == seeded_phone(some["id"]) and sb.contact_by_phone(some["phone"])["id"] == some["id"]


def test_create_or_update_by_phone_merges_unless_told_to_overwrite():
    contacts = book()
    created, first = contacts.create_or_update(
        {"phone": "+52 55 0000 1111", "meta": {"plan": "pro"}, "tags": [{"name": "vip"}], "default_assignees": [1]}
    )
    assert created and first["canonical_phone"] == "+525500001111"
    again, merged = contacts.create_or_update(
        {"phone": "+525500001111", "meta": {"ltv": 42}, "tags": [{"name": "lead"}], "default_assignees": [2]}
    )
    assert not again and merged["id"] == first["id"]
    assert merged["meta"] == {"plan": "pro", "ltv": "42"}  # kept as strings
    assert [t["name"] for t in merged["tags"]] == ["vip", "lead"]
    assert [u["id"] for u in merged["default_assignees"]] == [1, 2]
    _, replaced = contacts.create_or_update(
        {
            "phone": "+525500001111",
            "meta": {"plan": "free"},
            "overwrite_meta": True,
            "tags": [],
            "overwrite_tags": "true",
            "default_assignees": [3],
            "overwrite_default_assignees": True,
        }
    )
    assert replaced["meta"] == {"plan": "free"} and replaced["tags"] == []
    assert [u["id"] for u in replaced["default_assignees"]] == [3]


def test_a_put_replaces_what_it_sends_and_a_patch_merges():
    contacts = book()
    cid = next(iter(contacts.contacts))
    before = contacts.detail(cid)
    patched = contacts.update(cid, {"meta": {"extra": "1"}}, partial=True)
    assert patched["meta"] == {**before["meta"], "extra": "1"}
    put = contacts.update(cid, {"phone": before["phone"], "meta": {"only": "this"}}, partial=False)
    assert put["meta"] == {"only": "this"} and put["first_name"] == before["first_name"]
    with pytest.raises(ContactInvalid) as missing_phone:
        contacts.update(cid, {"first_name": "x"}, partial=False)
    assert missing_phone.value.errors == {"phone": ["This field is required."]}


def test_invalid_fields_are_refused_in_drf_shapes_and_nothing_changes():
    contacts = book()
    cid = next(iter(contacts.contacts))
    before = contacts.detail(cid)
    with pytest.raises(ContactInvalid) as refused:
        contacts.update(
            cid,
            {
                "email": "nope",
                "external_url": "x",
                "first_name": "y" * 101,
                "tags": [{"name": ""}, {"name": "ok"}],
                "default_assignees": [99, "a"],
                "meta": [1],
                "overwrite_tags": "maybe",
            },
            partial=True,
        )
    errors = refused.value.errors
    assert errors["email"] == ["Enter a valid email address."] and errors["external_url"] == ["Enter a valid URL."]
    assert errors["first_name"] == ["Ensure this field has no more than 100 characters."]
    assert errors["tags"] == [{"name": ["This field may not be blank."]}, {}]
    assert errors["default_assignees"] == ['Invalid pk "99" - object does not exist.', "A valid integer is required."]
    assert errors["meta"] == ['Expected a dictionary of items but got type "list".']
    assert errors["overwrite_tags"] == ["Must be a valid boolean."]
    assert contacts.detail(cid) == before
    other = contacts.create_or_update({"phone": "+525500002222"})[1]
    with pytest.raises(ContactInvalid, match="already exists"):
        contacts.update(other["id"], {"phone": before["phone"]}, partial=True)


def test_the_list_is_by_last_update_and_a_delete_removes_the_contact():
    contacts = book(extra=4)
    oldest = contacts.ordered()[-1]
    contacts.update(oldest, {"first_name": "Moved"}, partial=True)
    assert contacts.ordered()[0] == oldest  # a write moves it to the front
    total, rows = contacts.page(1, 2, None)
    assert total == 5 and [r["id"] for r in rows] == contacts.ordered()[:2]
    assert contacts.page(1, 10, "moved")[1][0]["id"] == oldest
    contacts.delete(oldest)
    assert oldest not in contacts.ordered() and contacts.page(1, 10, None)[0] == 4
    with pytest.raises(KeyError):
        contacts.delete(oldest)


def test_the_http_routes_answer_as_the_document_says_with_faults_and_the_request_log():
    with HilosSandbox(conversations=5, seed=2, token=TEST_TOKEN) as sb:
        session = requests.Session()
        session.headers["Authorization"] = f"Token {TEST_TOKEN}"
        base = sb.url
        page = session.get(f"{base}/api/contact", params={"page_size": 2}).json()
        assert page["count"] == 5 and len(page["results"]) == 2 and page["next"]
        made = session.post(f"{base}/api/contact", json={"phone": "+525500003333", "first_name": "Ana"})
        assert made.status_code == 201
        same = session.post(f"{base}/api/contact", json={"phone": "5500003333"})
        assert same.status_code == 400 and "phone" in same.json()  # no country code: not a valid phone
        cid = made.json()["id"]
        assert session.patch(f"{base}/api/contact/{cid}", json={"last_name": "Lopez"}).json()["last_name"] == "Lopez"
        sb.fail_next("503")
        assert session.get(f"{base}/api/contact/{cid}").status_code == 503
        assert session.delete(f"{base}/api/contact/{cid}").status_code == 204
        assert session.get(f"{base}/api/contact/{cid}").status_code == 404
        members = session.get(f"{base}/api/account-member").json()
        assert isinstance(members, list) and {"id", "email", "teams", "role"} <= set(members[0])
        assert requests.get(f"{base}/api/contact").status_code == 401  # no token
        logged = [(r["method"], r["path"]) for r in sb.requests()]
        assert ("POST", "/api/contact") in logged and ("DELETE", f"/api/contact/{cid}") in logged


def test_only_hilos_own_family_serves_contacts():
    with HilosSandbox(conversations=3, seed=2, token=TEST_TOKEN, api_family="activecampaign") as sb:
        answer = requests.get(
            f"{sb.url}/api/contact", headers={"Api-Token": TEST_TOKEN, "Authorization": f"Token {TEST_TOKEN}"}
        )
        assert answer.status_code == 404


def test_two_seeded_ids_with_one_derived_number_get_two_phones():
    cid = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
    phone = seeded_phone(cid)
    assert seeded_phone(cid, {phone: "other"}) != phone
    contacts = book(extra=20_000)  # ~2 derived numbers shared, as in any 20,000 ids
    assert len({c["canonical_phone"] for c in contacts.contacts.values()}) == len(contacts) == 20_001


def test_the_inspection_route_lists_every_phone_in_the_list_order():
    with HilosSandbox(conversations=4, seed=2, token=TEST_TOKEN, extra_contacts=3) as sb:
        phones = requests.get(f"{sb.url}/_sandbox/contact-phones").json()
        assert phones == [sb.contact(cid)["canonical_phone"] for cid in sb.contact_ids()] and len(phones) == 7
