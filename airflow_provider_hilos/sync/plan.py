"""A sync's plan, summed up: counts per action, per field and per transition, the first diffs in full, what ``add``
mode left alone, the conversations not found; and the plan's JSON Lines (one line per desired conversation that is
not unchanged, unless the unchanged ones are asked for), written next to the report."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, Any

from airflow_provider_hilos.sync.diff import LIST_FIELDS, UNKNOWN, Action, FieldChange, PlanEntry

#: How many transitions per field the summary names (the others are counted together).
MAX_TRANSITIONS = 10
#: How many drift corrections (and not-found, unreadable conversations) the summary lists by conversation id.
MAX_LISTED_DRIFT = 50
#: How many not-found conversations the log names (all are in the plan and the sync log).
LOGGED_NOT_FOUND = 20


def plain(value: Any) -> Any:
    """A normal value as JSON has it (tuples as lists; ``UNKNOWN`` as ``None`` with its own flag elsewhere)."""
    if value is UNKNOWN:
        return None
    return list(value) if isinstance(value, tuple) else value


def entry_record(entry: PlanEntry) -> dict[str, Any]:
    """One line of the plan file."""
    record: dict[str, Any] = {"conversation_id": entry.conversation_id, "action": entry.action.value}
    if entry.row:
        record["row"] = entry.row
    if entry.changes:
        record["changes"] = {
            change.field: {"from": plain(change.before), "to": plain(change.after), **_flags(change)}
            for change in entry.changes
        }
    if entry.retry:
        record["retry"] = True
    if entry.drift:
        record["drift"] = True
    if entry.left_alone:
        record["left_alone"] = {
            left.field: {"kept": list(left.kept), "removals_ignored": list(left.removals_ignored)}
            for left in entry.left_alone
        }
    if entry.reason:
        record["reason"] = entry.reason
    return record


def _flags(change: FieldChange) -> dict[str, bool]:
    flags: dict[str, bool] = {}
    if change.before is UNKNOWN:
        flags["from_unknown"] = True
    if change.drift:
        flags["drift"] = True
    return flags


def transitions(change: FieldChange) -> list[str]:
    """How the summary names a change: ``CLOSED→RESOLVED`` for a value, ``+vip`` / ``-renewal`` for list items."""
    if change.field in LIST_FIELDS and isinstance(change.after, tuple):
        if change.before is UNKNOWN or not isinstance(change.before, tuple):
            return [f"={_short(change.after)}"]  # nothing known to compare with: the list is set as a whole
        added = [f"+{item}" for item in change.after if item not in change.before]
        removed = [f"-{item}" for item in change.before if item not in change.after]
        return added + removed
    before = "?" if change.before is UNKNOWN else _short(change.before)
    return [f"{before}→{_short(change.after)}"]


def _short(value: Any) -> str:
    text = "null" if value is None else ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass
class PlanSummary:
    """The plan's counts, built entry by entry (constant memory but for the listed drift ids)."""

    actions: Counter[str] = field(default_factory=Counter)
    fields: Counter[str] = field(default_factory=Counter)
    transitions: dict[str, Counter[str]] = field(default_factory=dict)
    retried: int = 0
    #: planned updates that put back a hand edit (what a real run's ``drift_corrected`` counts when they land)
    drift_found: int = 0
    drift_ids: list[str] = field(default_factory=list)
    invalid_rows: list[dict[str, Any]] = field(default_factory=list)
    not_found_ids: list[str] = field(default_factory=list)
    unreadable_rows: list[dict[str, Any]] = field(default_factory=list)
    #: per list field in add mode: items kept, removals ignored, and how many conversations each concerns
    left_alone: dict[str, Counter[str]] = field(default_factory=dict)
    shown: list[dict[str, Any]] = field(default_factory=list)
    shown_limit: int = 20

    def add(self, entry: PlanEntry) -> None:
        """Count one entry (and keep it in full if it is among the first ``shown_limit`` updates)."""
        self.actions[entry.action.value] += 1
        for left in entry.left_alone:
            counts = self.left_alone.setdefault(left.field, Counter())
            counts["kept"] += len(left.kept)
            counts["removals_ignored"] += len(left.removals_ignored)
            counts["conversations_keeping_items"] += bool(left.kept)
            counts["conversations_with_removals_ignored"] += bool(left.removals_ignored)
        if entry.action is Action.INVALID and len(self.invalid_rows) < MAX_LISTED_DRIFT:
            self.invalid_rows.append(
                {"row": entry.row, "conversation_id": entry.conversation_id, "error": entry.reason}
            )
        if entry.action is Action.NOT_FOUND and entry.conversation_id and len(self.not_found_ids) < MAX_LISTED_DRIFT:
            self.not_found_ids.append(entry.conversation_id)
        if entry.action is Action.UNREADABLE and len(self.unreadable_rows) < MAX_LISTED_DRIFT:
            self.unreadable_rows.append({"conversation_id": entry.conversation_id, "error": entry.reason})
        if entry.action is not Action.UPDATE:
            return
        self.retried += entry.retry
        if entry.drift:
            self.drift_found += 1
            if len(self.drift_ids) < MAX_LISTED_DRIFT and entry.conversation_id:
                self.drift_ids.append(entry.conversation_id)
        for change in entry.changes:
            self.fields[change.field] += 1
            counter = self.transitions.setdefault(change.field, Counter())
            counter.update(transitions(change))
        if len(self.shown) < self.shown_limit:
            self.shown.append(entry_record(entry))

    def count(self, action: Action) -> int:
        return self.actions[action.value]

    def field_lines(self) -> list[str]:
        """``status: 80 (CLOSED→RESOLVED 60, NEW→CLOSED 20)``, one line per changed field."""
        lines = []
        for name, number in self.fields.most_common():
            named = self.transitions.get(name, Counter()).most_common(MAX_TRANSITIONS)
            rest = sum(self.transitions.get(name, Counter()).values()) - sum(n for _, n in named)
            parts = [f"{what} {n}" for what, n in named] + ([f"{rest} other"] if rest > 0 else [])
            lines.append(f"{name}: {number} ({', '.join(parts)})")
        return lines

    def to_dict(self) -> dict[str, Any]:
        """The summary as JSON (for XCom and the dry run's return value)."""
        return {
            "actions": {action.value: self.actions[action.value] for action in Action},
            "fields": dict(self.fields),
            "transitions": {
                name: dict(counter.most_common(MAX_TRANSITIONS)) for name, counter in self.transitions.items()
            },
            "retried": self.retried,
            "drift_found": self.drift_found,
            "drift_conversations": list(self.drift_ids),
            "invalid_rows": list(self.invalid_rows),
            "not_found_conversations": list(self.not_found_ids),
            "unreadable_conversations": list(self.unreadable_rows),
            "left_alone": {name: dict(counts) for name, counts in self.left_alone.items()},
            "first_updates": list(self.shown),
        }

    def left_alone_lines(self) -> list[str]:
        """``tags_mode='add': 147 tag removal(s) from the warehouse ignored (in 120 conversations), 60 extra tag(s)
        kept (in 45 conversations)``, one line per list field in add mode."""
        lines = []
        for name, counts in self.left_alone.items():
            noun = "tag" if name == "tags" else "assignee"
            lines.append(
                f"{name}_mode='add' left alone {counts['removals_ignored']} {noun} removal(s) from the warehouse (in "
                f"{counts['conversations_with_removals_ignored']} conversation(s): add mode never removes) and kept "
                f"{counts['kept']} {noun}(s) the warehouse does not ask for (in "
                f"{counts['conversations_keeping_items']} conversation(s))"
            )
        return lines


class PlanFile:
    """The plan as JSON Lines: one line per desired conversation that is not unchanged (see :func:`entry_record`).

    :param stream: an open text stream, or ``None`` (no file).
    :param unchanged: list the unchanged conversations too (a day-1 plan of 20,000 would otherwise be 20,000 lines
        saying nothing).
    """

    def __init__(self, stream: IO[str] | None, *, unchanged: bool = False) -> None:
        self.stream = stream
        self.unchanged = unchanged
        self.lines = 0

    def write(self, entry: PlanEntry) -> None:
        if self.stream is not None and (self.unchanged or entry.action is not Action.UNCHANGED):
            self.stream.write(json.dumps(entry_record(entry), ensure_ascii=False) + "\n")
            self.lines += 1
