"""A contact to the sync engine: its desired row (phone in E.164, NULL unmanaged, ``meta`` as an object or
``meta.<name>`` columns), its list row, and the write of a planned change, held to the document's merge semantics
(the sandbox's contact book) by property tests: applying the plan gives the desired state, ``merge`` never removes a
property it does not manage, an unchanged contact sends nothing, two spellings of one phone are one contact."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_hilos.contacts import ABSENT, META_KEYS
from airflow_provider_hilos.conversations import UNKNOWN
from airflow_provider_hilos.exceptions import HilosValidationError
from airflow_provider_hilos.resources.contacts import CREATE, DELETE, UPDATE, ContactWrite
from airflow_provider_hilos.sandbox.contacts import ContactBook
from airflow_provider_hilos.sync.diff import Action, CompareWith, ListMode, PlanEntry
from airflow_provider_hilos.sync.objects import NotWritable
from airflow_provider_hilos.sync.objects.contact import ContactObject

PHONE = "+525512345678"
USERS = {
    i: {
        "id": i,
        "first_name": "U",
        "last_name": "V",
        "email": f"u{i}@example.com",
        "account": 1,
        "profile_image": None,
        "date_joined": "2024-01-01T00:00:00Z",
    }
    for i in (1, 2, 3)
}


def plan(obj: ContactObject, desired: dict, current: dict | None, previous: dict | None = None) -> PlanEntry:
    return obj.plan(
        PHONE,
        desired,
        compare_with=CompareWith.HILOS,
        current=current,
        previous=previous,
        failed_before=False,
        row=1,
        object_id=None if current is None else "c1",
    )


def test_a_desired_row_in_the_normal_form():
    obj = ContactObject(default_region="MX")
    key, fields = obj.desired(
        1,
        {
            "phone": "55 1234 5678",
            "first_name": " Ana ",
            "last_name": None,  # NULL: not managed
            "email": "-",  # must be empty
            "tags": ["vip", "lead", "vip"],
            "default_assignees": ["2", 1],
            "meta": {"plan": "pro", "ltv": 42, "gone": "-", "skip": None},
            "meta.score": 0.5,
        },
    )
    assert key == PHONE and "last_name" not in fields
    assert fields["first_name"] == "Ana" and fields["email"] is None
    assert fields["tags"] == ("lead", "vip") and fields["default_assignees"] == (1, 2)
    assert fields["meta.plan"] == "pro" and fields["meta.ltv"] == "42" and fields["meta.score"] == "0.5"
    assert fields["meta.gone"] is ABSENT and "meta.skip" not in fields and META_KEYS not in fields


def test_replace_mode_declares_the_whole_meta():
    _, fields = ContactObject(meta_mode=ListMode.REPLACE).desired(1, {"phone": PHONE, "meta.plan": "pro"})
    assert fields[META_KEYS] == ("plan",)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"first_name": "Ana"}, "phone: is missing"),
        ({"phone": "55 1234 5678"}, "no country code"),
        ({"phone": PHONE, "email": 3}, "email: expected text"),
        ({"phone": PHONE, "tags": "not json"}, "tags: expected a list"),
        ({"phone": PHONE, "default_assignees": [0]}, "not a user id"),
        ({"phone": PHONE, "meta": "plan=pro"}, "must be an object of custom properties"),
        ({"phone": PHONE, "meta.bad name": "x"}, "not a custom property name"),
        ({"phone": PHONE, "email": "nope"}, "not an email address"),
        ("phone", "must be an object"),
    ],
)
def test_an_invalid_row_names_every_field_and_the_fix(row, message):
    with pytest.raises(HilosValidationError, match=message):
        ContactObject().desired(1, row)


def test_a_list_row_gives_its_key_id_and_fields():
    key, cid, fields = ContactObject().listed({"id": "ABC", "phone": "+52 55 1234 5678", "meta": {"plan": "pro"}})
    assert (key, cid, fields["meta.plan"]) == (PHONE, "abc", "pro")
    assert ContactObject().listed("junk") == (None, None, {})


def test_a_write_sends_only_what_differs_with_the_overwrite_flag_where_an_item_must_go():
    obj = ContactObject()
    current = {
        "first_name": "Ana",
        "tags": ("lead", "vip"),
        "meta.plan": "pro",
        "meta.ltv": "1",
        META_KEYS: ("ltv", "plan"),
    }
    desired = {"first_name": "Ana", "tags": ("vip",), "meta.plan": "enterprise"}
    entry = plan(obj, desired, current)
    write = obj.write(entry, current=current, desired=desired)
    assert isinstance(write, ContactWrite) and write.action == UPDATE and write.contact_id == "c1"
    assert write.body == {"tags": [{"name": "vip"}], "overwrite_tags": True, "meta": {"plan": "enterprise"}}


def test_removing_a_property_rewrites_the_meta_keeping_the_agents_others():
    obj = ContactObject()
    current = {"meta.plan": "pro", "meta.note": "call after 5", META_KEYS: ("note", "plan")}
    desired = {"meta.plan": ABSENT}
    write = obj.write(plan(obj, desired, current), current=current, desired=desired)
    assert write.body == {"meta": {"note": "call after 5"}, "overwrite_meta": True}
    with pytest.raises(NotWritable, match="compare_with='hilos'"):
        obj.write(plan(obj, desired, current), current={"meta.plan": "pro", META_KEYS: UNKNOWN}, desired=desired)


def test_add_mode_sends_only_the_missing_items_for_the_api_to_merge():
    obj = ContactObject(tags_mode=ListMode.ADD)
    current = {"tags": ("lead",)}
    desired = {"tags": ("lead", "vip")}
    write = obj.write(plan(obj, desired, current), current=current, desired=desired)
    assert write.body == {"tags": [{"name": "vip"}]}  # no overwrite_tags: the agent's tags stay


def test_a_contact_hilos_does_not_have_is_created_whole_or_not_found_in_update_mode():
    desired = {"first_name": "Ana", "tags": ("vip",), "meta.plan": "pro", "meta.old": ABSENT}
    obj = ContactObject()
    entry = plan(obj, desired, None)
    write = obj.write(entry, current=None, desired=desired)
    assert entry.action is Action.CREATE and write.action == CREATE
    assert write.body == {
        "phone": PHONE,
        "first_name": "Ana",
        "tags": [{"name": "vip"}],
        "overwrite_tags": True,
        "meta": {"plan": "pro"},
    }
    assert plan(ContactObject(mode="update"), desired, None).action is Action.NOT_FOUND


def test_a_delete_and_the_stored_form_of_every_write():
    obj = ContactObject(mode="mirror")
    delete = obj.write(PlanEntry(PHONE, Action.DELETE, object_id="c1"), current={}, desired={})
    assert delete == ContactWrite(PHONE, DELETE, "c1", None)
    for write in (delete, ContactWrite(PHONE, UPDATE, "c1", {"first_name": "A"})):
        assert obj.restored(obj.stored(write)) == write


def test_default_assignees_are_compared_with_what_the_last_sync_applied():
    obj = ContactObject()
    desired = {"default_assignees": (1, 2)}
    first = plan(obj, desired, {"first_name": None})
    assert first.action is Action.UPDATE and first.changes[0].from_last_sync
    assert plan(obj, desired, {"first_name": None}, previous={"default_assignees": (1, 2)}).action is Action.UNCHANGED


# -- the properties, against the document's semantics as the sandbox's contact book applies them -------------

NAMES = st.sampled_from(["Ana", "Luis", "Sofia"])
PROPS = ["plan", "ltv", "owner", "note"]
VALUES = st.sampled_from(["a", "b", "42"]) | st.integers(0, 50)
TAGS = st.lists(st.sampled_from(["vip", "lead", "b2b", "trial"]), unique=True, max_size=4)


@st.composite
def cases(draw):
    held = {
        "first_name": draw(st.none() | NAMES),
        "tags": [{"name": t} for t in draw(TAGS)],
        "meta": {p: str(v) for p, v in draw(st.dictionaries(st.sampled_from(PROPS), VALUES, max_size=4)).items()},
    }
    row: dict = {"phone": draw(st.sampled_from([PHONE, "525512345678", "+52 55 1234 5678", "+52 1 55 1234 5678"]))}
    if draw(st.booleans()):
        row["first_name"] = draw(NAMES | st.just("-"))
    if draw(st.booleans()):
        row["tags"] = draw(TAGS)
    props = draw(st.dictionaries(st.sampled_from(PROPS), VALUES | st.just("-"), max_size=3))
    if draw(st.booleans()):
        row["meta"] = props
    else:
        row.update({f"meta.{p}": v for p, v in props.items()})
    modes = {
        "tags_mode": draw(st.sampled_from([ListMode.REPLACE, ListMode.ADD])),
        "meta_mode": draw(st.sampled_from([ListMode.MERGE, ListMode.REPLACE])),
    }
    return held, row, modes


def apply(book: ContactBook, cid: str, write: ContactWrite | None) -> None:
    if write is None:
        return
    if write.action == CREATE:
        book.create_or_update(write.body or {})
    else:
        book.update(cid, write.body or {}, partial=True)


@settings(max_examples=300, deadline=None)
@given(cases())
def test_applying_the_plan_gives_the_desired_state_and_keeps_what_it_does_not_manage(case):
    held, row, modes = case
    book = ContactBook([], USERS, seed=1)
    _, made = book.create_or_update({"phone": PHONE, **held, "overwrite_meta": True, "overwrite_tags": True})
    cid = made["id"]
    obj = ContactObject(**modes)
    key, desired = obj.desired(1, row)
    assert key == PHONE  # every spelling is the one contact
    before_key, _, current = obj.listed(book.list_row(cid))
    assert before_key == key
    entry = plan(obj, desired, current)
    write = obj.write(entry, current=current, desired=desired) if entry.action is not Action.UNCHANGED else None
    apply(book, cid, write)
    after = book.list_row(cid)
    meta, tags = after["meta"], {t["name"] for t in after["tags"]}
    if "first_name" in desired:
        assert after["first_name"] == desired["first_name"]
    if "tags" in desired:
        wanted = set(desired["tags"])
        assert (
            tags == wanted
            if modes["tags_mode"] is ListMode.REPLACE
            else tags == wanted | {t["name"] for t in held["tags"]}
        )
    for name, value in desired.items():
        if name.startswith("meta."):
            prop = name[len("meta.") :]
            assert (prop not in meta) if value is ABSENT else meta.get(prop) == value
    managed = {name[len("meta.") :] for name in desired if name.startswith("meta.")}
    declared = META_KEYS in desired
    for prop, value in held["meta"].items():
        if prop not in managed and not declared:  # merge: an agent's property is never removed or changed
            assert meta.get(prop) == value
    if declared:
        assert set(meta) == {p for p in managed if desired[f"meta.{p}"] is not ABSENT}
    # and the next run finds nothing to do: an unchanged contact sends no request
    _, _, now = obj.listed(after)
    assert plan(obj, desired, now).action is Action.UNCHANGED


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(PROPS), VALUES, min_size=1, max_size=4))
def test_a_warehouse_number_equals_hilos_string_so_nothing_is_written(props):
    obj = ContactObject()
    _, desired = obj.desired(1, {"phone": PHONE, **{f"meta.{p}": v for p, v in props.items()}})
    current = {f"meta.{p}": str(v) for p, v in props.items()} | {META_KEYS: tuple(sorted(props))}
    assert plan(obj, desired, current).action is Action.UNCHANGED
