"""The plan's summary: counts per field and per transition, drift listed, the plan's lines."""

from __future__ import annotations

import io
import json

from airflow_provider_hilos.sync.diff import UNKNOWN, Action, FieldChange, PlanEntry
from airflow_provider_hilos.sync.plan import PlanFile, PlanSummary, entry_record, transitions

A = "6513270e-269e-4d37-b2a7-4de452e6b438"


def update(*changes: FieldChange, cid: str = A) -> PlanEntry:
    return PlanEntry(cid, Action.UPDATE, tuple(changes))


def test_transitions_name_values_and_list_items():
    assert transitions(FieldChange("status", "CLOSED", "RESOLVED")) == ["CLOSED→RESOLVED"]
    assert transitions(FieldChange("tags", ("a", "b"), ("b", "c"))) == ["+c", "-a"]
    assert transitions(FieldChange("channel", UNKNOWN, None)) == ["?→null"]
    assert transitions(FieldChange("tags", UNKNOWN, ("vip",))) == ["=vip"]


def test_the_summary_counts_per_field_and_transition_and_lists_drift():
    summary = PlanSummary(shown_limit=1)
    for _ in range(3):
        summary.add(update(FieldChange("status", "CLOSED", "RESOLVED")))
    summary.add(update(FieldChange("status", "NEW", "CLOSED", drift=True), FieldChange("tags", (), ("vip",))))
    summary.add(PlanEntry(A, Action.UNCHANGED))
    summary.add(PlanEntry(None, Action.INVALID, reason="row 7: status: 'DONE' is not a valid status", row=7))
    assert summary.field_lines() == ["status: 4 (CLOSED→RESOLVED 3, NEW→CLOSED 1)", "tags: 1 (+vip 1)"]
    data = summary.to_dict()
    assert data["actions"] == {
        "unchanged": 1,
        "update": 4,
        "not_found": 0,
        "invalid": 1,
        "unreadable": 0,
        "create": 0,
        "delete": 0,
    }
    assert data["drift_found"] == 1 and data["drift_conversations"] == [A]
    assert len(data["first_updates"]) == 1 and data["invalid_rows"][0]["row"] == 7
    json.dumps(data)  # XCom-ready


def test_the_summary_counts_at_most_so_many_distinct_transitions_a_field_the_rest_as_other(monkeypatch):
    from airflow_provider_hilos.sync import plan

    monkeypatch.setattr(plan, "MAX_TRACKED_TRANSITIONS", 3)
    summary = PlanSummary()
    for name in ["Ana", "Ana", "Beto", "Caro", "Dani", "Eva", "Ana", "Dani"]:  # a name changes to many values
        summary.add(update(FieldChange("first_name", UNKNOWN, name)))
    assert summary.transitions["first_name"] == {"?→Ana": 3, "?→Beto": 1, "?→Caro": 1}  # no more than 3 kept
    # every change still counted: the field's total, and the ones not kept as "other"
    assert summary.field_lines() == ["first_name: 8 (?→Ana 3, ?→Beto 1, ?→Caro 1, 3 other)"]
    assert summary.to_dict()["fields"] == {"first_name": 8}


def test_a_plan_line_says_from_to_and_why():
    record = entry_record(
        PlanEntry(A, Action.UPDATE, (FieldChange("channel", UNKNOWN, None),), retry=True, reason="r", row=3)
    )
    assert record == {
        "conversation_id": A,
        "action": "update",
        "row": 3,
        "changes": {"channel": {"from": None, "to": None, "from_unknown": True}},
        "retry": True,
        "reason": "r",
    }
    stream = io.StringIO()
    PlanFile(stream).write(PlanEntry(A, Action.NOT_FOUND))
    assert json.loads(stream.getvalue()) == {"conversation_id": A, "action": "not_found"}
