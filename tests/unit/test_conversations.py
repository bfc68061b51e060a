"""The read model: a list row and an update body in one normal form."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airflow_provider_hilos.conversations import ConversationState, normal_fields, state_from_row
from airflow_provider_hilos.schemas import validate_update
from tests.helpers import CID

ROW = {
    "id": CID.upper(),
    "contact": "892f902b-d23f-4824-928b-2f330c5c7fd0",
    "status": "IN_PROGRESS",
    "created_on": "2025-09-10T19:08:56Z",
    "source": "FLOW",
    "tags": [{"id": 2, "name": "vip"}, {"id": 1, "name": "renewal"}],
    "assigned_team": 2,
    "channel": 1,
    "assigned": [{"id": 10, "first_name": "Raul", "email": "raul@example.com"}, {"id": 3}],
    "first_message": {"id": "m1", "body": "Hola"},
}


def test_a_list_row_reads_as_names_and_ids_sorted_with_unknown_fields_kept():
    state = state_from_row(ROW)
    assert state.id == CID.lower()
    assert state.tags == ("renewal", "vip") and state.assigned == (3, 10)
    assert (state.assigned_team, state.channel, state.status, state.source) == (2, 1, "IN_PROGRESS", "FLOW")
    assert state.extra == {"first_message": {"id": "m1", "body": "Hola"}}


def test_unknown_statuses_and_fields_are_kept_not_refused():
    state = state_from_row({"id": CID, "status": "SNOOZED", "priority": "high", "assigned": None, "tags": "x"})
    assert state.status == "SNOOZED" and state.extra == {"priority": "high"}
    assert state.assigned == () and state.tags == ()


def test_a_row_without_an_id_is_refused():
    with pytest.raises(ValueError, match="without an id"):
        state_from_row({"status": "NEW"})


def test_desired_equals_current_is_one_comparison():
    current = state_from_row(ROW)
    desired = validate_update(CID, {"tags": ["vip", "renewal"], "assigned": [10, "3"], "status": "IN_PROGRESS"})
    wanted = normal_fields(desired.body)
    assert {name: normal_fields(current)[name] for name in wanted} == wanted
    changed = validate_update(CID, {"tags": ["vip"]})
    assert normal_fields(changed.body) != {"tags": normal_fields(current)["tags"]}


def test_an_exported_row_reads_back_to_the_same_update():
    state = state_from_row(ROW)
    row = state.change_row()
    assert row == {
        "conversation_id": CID.lower(),
        "status": "IN_PROGRESS",
        "assigned": [3, 10],
        "tags": ["renewal", "vip"],
        "assigned_team": 2,
        "channel": 1,
    }
    body = validate_update(row["conversation_id"], {k: v for k, v in row.items() if k != "conversation_id"}).body
    assert normal_fields(body) == state.fields()


@given(
    tags=st.lists(st.sampled_from(["vip", "renewal", "churn", "b2b"]), max_size=6),
    users=st.lists(st.integers(min_value=1, max_value=50), max_size=5),
)
def test_order_and_repeats_carry_no_meaning_on_either_side(tags, users):
    row = {"id": CID, "tags": [{"name": t} for t in reversed(tags)], "assigned": [{"id": u} for u in users]}
    body = validate_update(CID, {"tags": tags, "assigned": users}).body
    assert {k: normal_fields(body)[k] for k in ("tags", "assigned")} == {
        k: state_from_row(row).fields()[k] for k in ("tags", "assigned")
    }
    assert isinstance(state_from_row(row), ConversationState)


def test_row_fields_are_the_states_fields_without_the_rest():
    from airflow_provider_hilos.conversations import row_fields

    row = {
        "id": "6513270E-269e-4d37-b2a7-4de452e6b438",
        "status": "NEW",
        "tags": [{"id": 2, "name": "vip "}, {"name": "b2b"}, "vip"],
        "assigned": [{"id": 10}, {"id": 3}, "7"],
        "assigned_team": "4",
        "channel": None,
        "contact": "x",
    }
    assert row_fields(row) == state_from_row(row).fields()
    assert row_fields(row) == {
        "status": "NEW",
        "assigned": (3, 7, 10),
        "tags": ("b2b", "vip"),
        "assigned_team": 4,
        "channel": None,
    }
