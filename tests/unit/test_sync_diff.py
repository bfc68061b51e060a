"""The diff of a sync, by properties: applying the plan gives the desired state, an equal conversation costs
nothing, ``add`` mode never removes, and a hand edit is called drift only when the warehouse did not move."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_hilos.sync.diff import (
    UNKNOWN,
    Action,
    CompareWith,
    ListMode,
    apply_entry,
    mode_problem,
    plan_conversation,
)

CID = "6513270e-269e-4d37-b2a7-4de452e6b438"
statuses = st.sampled_from(["NEW", "IN_PROGRESS", "RESOLVED", "CLOSED"])
tag_sets = st.frozensets(st.sampled_from(["vip", "renewal", "churn", "b2b", "late"]), max_size=4).map(
    lambda s: tuple(sorted(s))
)
user_sets = st.frozensets(st.integers(1, 20), max_size=3).map(lambda s: tuple(sorted(s)))
teams = st.integers(1, 5)
channels = st.one_of(st.none(), st.integers(1, 4))
FIELDS = ("status", "tags", "assigned", "assigned_team", "channel")

current_states = st.fixed_dictionaries(
    {
        "status": statuses,
        "tags": tag_sets,
        "assigned": user_sets,
        "assigned_team": st.one_of(st.none(), teams),
        "channel": channels,
    }
)
# a desired row manages any subset of the fields (a column not selected, or a NULL cell, is not managed)
desired_states = st.fixed_dictionaries(
    {},
    optional={"status": statuses, "tags": tag_sets, "assigned": user_sets, "assigned_team": teams, "channel": channels},
)


@settings(max_examples=300, deadline=None)
@given(desired=desired_states, current=current_states)
def test_applying_the_plan_gives_the_desired_state_on_every_managed_field(desired, current):
    entry = plan_conversation(CID, desired, compare_with=CompareWith.HILOS, current=current)
    after = apply_entry(current, entry)
    assert {name: after[name] for name in desired} == desired
    # and a field the warehouse does not manage is never sent
    assert set(entry.sent_fields()) <= set(desired)


@settings(max_examples=300, deadline=None)
@given(desired=desired_states, current=current_states)
def test_a_conversation_already_as_desired_costs_no_request(desired, current):
    aligned = {**current, **desired}
    entry = plan_conversation(CID, desired, compare_with=CompareWith.HILOS, current=aligned)
    assert entry.action is Action.UNCHANGED and entry.changes == ()
    # and once applied, the next run finds nothing to do
    applied = apply_entry(current, plan_conversation(CID, desired, compare_with=CompareWith.HILOS, current=current))
    again = plan_conversation(CID, desired, compare_with=CompareWith.HILOS, current=applied)
    assert again.action is Action.UNCHANGED


@settings(max_examples=300, deadline=None)
@given(desired=desired_states, current=current_states)
def test_add_mode_never_removes_a_tag_or_an_assignee(desired, current):
    entry = plan_conversation(
        CID,
        desired,
        compare_with=CompareWith.HILOS,
        current=current,
        tags_mode=ListMode.ADD,
        assigned_mode=ListMode.ADD,
    )
    after = apply_entry(current, entry)
    for name in ("tags", "assigned"):
        assert set(current[name]) <= set(after[name])
        if name in desired:
            assert set(desired[name]) <= set(after[name])


@settings(max_examples=200, deadline=None)
@given(desired=desired_states, current=current_states, previous=desired_states)
def test_drift_is_a_change_the_warehouse_did_not_make(desired, current, previous):
    entry = plan_conversation(CID, desired, compare_with=CompareWith.HILOS, current=current, previous=previous)
    for change in entry.changes:
        assert change.drift == (change.field in previous and previous[change.field] == desired[change.field])


def test_a_hand_edit_is_put_back_and_called_drift():
    entry = plan_conversation(
        CID,
        {"status": "CLOSED", "tags": ("vip",)},
        compare_with=CompareWith.HILOS,
        current={"status": "NEW", "tags": ("vip",)},
        previous={"status": "CLOSED", "tags": ("vip",)},
    )
    assert entry.action is Action.UPDATE and entry.drift
    assert entry.change_row() == {"conversation_id": CID, "status": "CLOSED"}  # only what differs is sent


def test_a_warehouse_change_is_not_drift():
    entry = plan_conversation(
        CID,
        {"status": "RESOLVED"},
        compare_with=CompareWith.HILOS,
        current={"status": "CLOSED"},
        previous={"status": "CLOSED"},
    )
    assert entry.action is Action.UPDATE and not entry.drift


def test_not_listed_is_not_found_unless_asked_to_send():
    assert plan_conversation(CID, {"status": "CLOSED"}, compare_with=CompareWith.HILOS).action is Action.NOT_FOUND
    sent = plan_conversation(CID, {"status": "CLOSED"}, compare_with=CompareWith.HILOS, send_not_found=True)
    assert sent.action is Action.UPDATE and sent.changes[0].before is UNKNOWN and "send_not_found" in sent.reason


def test_last_sync_compares_with_the_snapshot_and_nothing_sends_everything():
    desired = {"status": "CLOSED", "tags": ("vip",)}
    same = plan_conversation(CID, desired, compare_with=CompareWith.LAST_SYNC, previous=dict(desired))
    assert same.action is Action.UNCHANGED
    newly_managed = plan_conversation(CID, desired, compare_with=CompareWith.LAST_SYNC, previous={"status": "CLOSED"})
    assert [c.field for c in newly_managed.changes] == ["tags"]
    everything = plan_conversation(CID, desired, compare_with=CompareWith.NOTHING, previous=dict(desired))
    assert sorted(everything.sent_fields()) == ["status", "tags"]


def test_a_conversation_that_failed_last_time_is_sent_again_even_if_equal():
    desired = {"status": "CLOSED"}
    entry = plan_conversation(
        CID, desired, compare_with=CompareWith.HILOS, current={"status": "CLOSED"}, failed_before=True
    )
    assert entry.action is Action.UPDATE and entry.retry and entry.sent_fields() == desired


def test_clearing_the_channel_sends_the_clear_marker():
    entry = plan_conversation(CID, {"channel": None}, compare_with=CompareWith.HILOS, current={"channel": 3})
    assert entry.change_row() == {"conversation_id": CID, "channel": "-"}


def test_add_mode_needs_a_listing():
    assert "compare_with='hilos'" in (mode_problem("last_sync", "tags") or "")
    assert "send_not_found=False" in (mode_problem("hilos", "assigned", send_not_found=True) or "")
    assert mode_problem("hilos", "tags") is None
    with pytest.raises(ValueError, match="tags_mode='add' needs what Hilos holds now"):
        plan_conversation(CID, {"tags": ("vip",)}, compare_with=CompareWith.NOTHING, tags_mode=ListMode.ADD)


# -- issue 27: unknown is not empty (A1, A6), add mode says what it left alone, all-NULL rows -------------------


@pytest.mark.parametrize("field", ["tags", "assigned"])
def test_add_mode_never_builds_a_union_on_a_field_hilos_did_not_show(field):
    current = {"status": "NEW", "tags": UNKNOWN, "assigned": UNKNOWN, "assigned_team": 1, "channel": None}
    entry = plan_conversation(
        CID,
        {field: ("vip",) if field == "tags" else (3,)},
        compare_with=CompareWith.HILOS,
        current=current,
        **{f"{field}_mode": ListMode.ADD},
    )
    assert entry.action is Action.UNREADABLE and entry.sent_fields() == {}
    assert f"without readable {field}" in entry.reason


@settings(max_examples=200, deadline=None)
@given(desired=desired_states, current=current_states, missing=st.sets(st.sampled_from(sorted(FIELDS))))
def test_replace_mode_sends_a_field_hilos_did_not_show_and_never_calls_it_unchanged(desired, current, missing):
    shown = {name: (UNKNOWN if name in missing else value) for name, value in current.items()}
    entry = plan_conversation(CID, desired, compare_with=CompareWith.HILOS, current=shown)
    for name in set(desired) & missing:
        assert entry.sent_fields().get(name) == desired[name]  # sent, from unknown: not taken for empty
        assert not any(c.drift for c in entry.changes if c.field == name)  # and never a hand edit


def test_add_mode_reports_the_removals_it_ignored_and_the_items_it_kept_and_calls_neither_drift():
    previous = {"tags": ("renewal", "vip")}  # the last sync applied vip and renewal
    current = {"tags": ("agent-note", "renewal", "vip")}  # an agent added agent-note
    entry = plan_conversation(  # the warehouse dropped renewal since: add mode never removes
        CID,
        {"tags": ("vip",)},
        compare_with=CompareWith.HILOS,
        current=current,
        previous=previous,
        tags_mode=ListMode.ADD,
    )
    assert entry.action is Action.UNCHANGED and not entry.drift
    (left,) = entry.left_alone
    assert (left.field, left.kept, left.removals_ignored) == ("tags", ("agent-note", "renewal"), ("renewal",))
    # an agent removed vip (applied by the last sync): that is a hand edit, put back; agent-note is kept, not drift
    edited = plan_conversation(
        CID,
        {"tags": ("vip",)},
        compare_with=CompareWith.HILOS,
        current={"tags": ("agent-note",)},
        previous={"tags": ("vip",)},
        tags_mode=ListMode.ADD,
    )
    (change,) = edited.changes
    assert change.after == ("agent-note", "vip") and change.drift
    # a desired item the last sync never applied is not a hand edit
    new = plan_conversation(
        CID,
        {"tags": ("vip", "new")},
        compare_with=CompareWith.HILOS,
        current={"tags": ("vip",)},
        previous={"tags": ("vip",)},
        tags_mode=ListMode.ADD,
    )
    assert new.action is Action.UPDATE and not new.drift


def test_a_retried_conversation_in_add_mode_is_sent_the_union_never_less():
    entry = plan_conversation(
        CID,
        {"tags": ("vip",)},
        compare_with=CompareWith.HILOS,
        current={"tags": ("agent-note", "vip")},
        failed_before=True,
        tags_mode=ListMode.ADD,
    )
    assert entry.retry and entry.sent_fields() == {"tags": ("agent-note", "vip")}


def test_a_row_that_manages_no_field_is_unchanged():
    for compare_with in CompareWith:
        current = {"status": "NEW"} if compare_with is CompareWith.HILOS else None
        assert plan_conversation(CID, {}, compare_with=compare_with, current=current).action is Action.UNCHANGED
