"""Property-based tests: every invalid id or payload is refused by name before anything is sent, and
every valid payload goes through and lands."""

from __future__ import annotations

import re
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_provider_hilos.exceptions import HilosValidationError
from airflow_provider_hilos.hooks.hilos import HilosHook
from airflow_provider_hilos.operators.conversation import parse_payload
from airflow_provider_hilos.sandbox import HilosSandbox
from airflow_provider_hilos.schemas import CLEAR, WRITABLE_FIELDS, ConversationStatus, validate_update
from tests.conftest import TEST_TOKEN

UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)


junk = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


user_ids = st.integers(1, 12)


#: a user as a DAG author writes it: 5, "5", " 5 ", or the API's {"id": 5}
users = user_ids | user_ids.map(str) | user_ids.map(lambda i: f" {i} ") | user_ids.map(lambda i: {"id": i})


tag_names = st.text(st.characters(categories=("L", "N")), min_size=1, max_size=100)


#: a tag as a DAG author writes it: "vip", " vip ", or the API's {"name": "vip"}
tags = tag_names | tag_names.map(lambda n: f" {n} ") | tag_names.map(lambda n: {"name": n})


valid_payloads = st.fixed_dictionaries(
    {},
    optional={
        "status": st.sampled_from([s.value for s in ConversationStatus]) | st.none(),
        "assigned": st.lists(users, max_size=4) | st.just(CLEAR) | st.none(),
        "tags": st.lists(tags, max_size=5) | st.just(CLEAR) | st.none(),
        "assigned_team": st.integers(1, 4) | st.integers(1, 4).map(str) | st.none(),
        "channel": st.integers(1, 3) | st.integers(1, 3).map(str) | st.just(CLEAR) | st.none(),
    },
).filter(lambda payload: any(value is not None for value in payload.values()))


def expected_body(payload: dict) -> dict:
    """What must be sent for ``payload``, worked out here (not by the package): None dropped, plain names and ids
    in the API's shapes, names trimmed, digit strings read as ids, each tag and user once, CLEAR as [] or null."""
    body: dict = {}
    for field, value in payload.items():
        if value is None:
            continue
        if field == "tags":
            names = [] if value == CLEAR else [(t["name"] if isinstance(t, dict) else t).strip() for t in value]
            body[field] = [{"name": n} for n in dict.fromkeys(names)]
        elif field == "assigned":
            ids = [] if value == CLEAR else [int(u["id"] if isinstance(u, dict) else u) for u in value]
            body[field] = [{"id": i} for i in dict.fromkeys(ids)]
        elif field == "channel":
            body[field] = None if value == CLEAR else int(value)
        elif field == "assigned_team":
            body[field] = int(value)
        else:
            body[field] = value
    return body


@pytest.fixture(scope="module")
def sandbox():
    with HilosSandbox(conversations=5, seed=1, token=TEST_TOKEN) as sb:
        yield sb


@pytest.fixture
def hook(sandbox, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_HILOS_DEFAULT", sandbox.connection_json())
    sandbox.clear_requests()
    return HilosHook(max_attempts=1)


def refused(hook, sandbox, conversation_id, payload) -> HilosValidationError:
    sandbox.clear_requests()  # one fixture, many examples
    with pytest.raises(HilosValidationError) as err:
        hook.update_conversation(conversation_id, payload)
    assert sandbox.requests() == [], "an invalid update reached the server"
    return err.value


@SETTINGS
@given(
    bad_id=st.text(max_size=80).filter(lambda s: not UUID_RE.fullmatch(s))
    | junk.filter(lambda v: not isinstance(v, str))
)
def test_any_non_uuid_id_is_refused_before_sending(hook, sandbox, bad_id):
    error = refused(hook, sandbox, bad_id, {"status": "NEW"})
    assert error.fields == ["conversation_id"]


@SETTINGS
@given(
    field=st.sampled_from(["status", "assigned", "tags", "assigned_team"]), value=junk.filter(lambda v: v is not None)
)
def test_wrong_values_are_refused_naming_the_field(hook, sandbox, field, value):
    payload = {field: value}
    try:
        validate_update(str(uuid.uuid4()), payload)
    except HilosValidationError:
        pass
    else:  # the junk happened to be valid (e.g. an empty list of tags)
        return
    error = refused(hook, sandbox, sandbox.conversation_ids()[0], payload)
    assert all(f.split("[")[0].split(".")[0] == field for f in error.fields), error.fields


@SETTINGS
@given(
    extra=st.dictionaries(
        st.text(min_size=1, max_size=12).filter(lambda k: k not in WRITABLE_FIELDS), junk, min_size=1, max_size=3
    )
)
def test_unknown_and_read_only_keys_are_refused_by_name(hook, sandbox, extra):
    error = refused(hook, sandbox, sandbox.conversation_ids()[0], {"status": "NEW", **extra})
    assert set(error.fields) == set(extra)


@SETTINGS
@given(text=st.text(max_size=60))
def test_non_object_strings_from_xcom_are_refused_clearly(text):
    try:
        parsed = parse_payload(text)
    except HilosValidationError as err:
        assert err.fields == ["payload"]
    else:
        assert isinstance(parsed, dict)


@SETTINGS
@given(payload=valid_payloads)
def test_every_valid_payload_lands(hook, sandbox, payload):
    cid = sandbox.conversation_ids()[1]
    sandbox.clear_requests()  # one fixture, many examples
    answer = hook.update_conversation(cid, payload)
    (sent,) = sandbox.requests()
    body = expected_body(payload)
    assert sent["body"] == body
    for field, value in body.items():
        if field == "tags":
            assert [t["name"] for t in answer["tags"]] == [t["name"] for t in value]
        else:
            assert answer[field] == value


@pytest.mark.parametrize(
    "hostile",
    [
        "../",
        "../../admin",
        "%2F",
        "%2e%2e%2f",
        "3fa85f64-5717-4562-b3fc-2c963f66afa6/../x",
        "3fa85f64-5717-4562-b3fc-2c963f66afa6?x=1",
        "3fa85f64-5717-4562-b3fc-2c963f66afa6#f",
        " 3fa85f64-5717-4562-b3fc-2c963f66afa6",
        "3fa85f64-5717-4562-b3fc-2c963f66afa6\t",
        "3fa85f64\u20135717-4562-b3fc-2c963f66afa6",  # en dash
        "３fa85f64-5717-4562-b3fc-2c963f66afa6",  # full-width digit
        "3fa85f64-5717-4562-b3fc-2c963f66аfa6",  # Cyrillic a
        "3fa85f64-5717-4562-b3fc-2c963f66afa6\u200b",  # zero-width space
        "a" * 100_000,
        "",
        None,
        0,
        [],
        {},
    ],
)
def test_hostile_ids_from_upstream_data(hook, sandbox, hostile):
    assert refused(hook, sandbox, hostile, {"status": "NEW"}).fields == ["conversation_id"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"tags": [{"name": "x" * 101}] * 3}, "tags[0].name"),
        ({"tags": [{"name": "ok"}] * 2 + [None]}, "tags[2]"),
        ({"assigned": [[{"id": 1}]]}, "assigned[0]"),
        ({"status": {"$ne": None}}, "status"),
        ({"status": None, "assigned": None, "tags": None, "assigned_team": None}, "payload"),  # None: not given
        ({"assigned_team": 1.0}, "assigned_team"),
        ({"assigned_team": "1x"}, "assigned_team"),
        ({"channel": True}, "channel"),
    ],
)
def test_oversized_nested_and_null_junk(hook, sandbox, payload, field):
    assert field in refused(hook, sandbox, sandbox.conversation_ids()[0], payload).fields


def test_up_to_a_hundred_tags_are_sent_as_given_and_more_are_refused(hook, sandbox):
    """The documents set no limit; a hundred tags on one conversation is already a data bug, so more is refused."""
    tags = [{"name": f"tag-{i}"} for i in range(100)]
    answer = hook.update_conversation(sandbox.conversation_ids()[2], {"tags": tags})
    assert len(answer["tags"]) == 100 and len(sandbox.requests()[0]["body"]["tags"]) == 100
    error = refused(hook, sandbox, sandbox.conversation_ids()[2], {"tags": [*tags, {"name": "one-more"}]})
    assert error.problems == [("tags", "101 tags in one update; at most 100 are allowed")]
