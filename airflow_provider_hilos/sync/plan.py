"""A sync's plan, summed up: counts per action, per field and per transition, the first diffs in full, and the
plan's JSON Lines (one line per desired conversation, written next to the report)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, Any

from airflow_provider_hilos.sync.diff import LIST_FIELDS, UNKNOWN, Action, FieldChange, PlanEntry

#: How many transitions per field the summary names (the others are counted together).
MAX_TRANSITIONS = 10
#: How many drift corrections the summary lists by conversation id.
MAX_LISTED_DRIFT = 50


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
    drift_corrected: int = 0
    drift_ids: list[str] = field(default_factory=list)
    invalid_rows: list[dict[str, Any]] = field(default_factory=list)
    shown: list[dict[str, Any]] = field(default_factory=list)
    shown_limit: int = 20

    def add(self, entry: PlanEntry) -> None:
        """Count one entry (and keep it in full if it is among the first ``shown_limit`` updates)."""
        self.actions[entry.action.value] += 1
        if entry.action is Action.INVALID and len(self.invalid_rows) < MAX_LISTED_DRIFT:
            self.invalid_rows.append(
                {"row": entry.row, "conversation_id": entry.conversation_id, "error": entry.reason}
            )
        if entry.action is not Action.UPDATE:
            return
        self.retried += entry.retry
        if entry.drift:
            self.drift_corrected += 1
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
            "drift_corrected": self.drift_corrected,
            "drift_conversations": list(self.drift_ids),
            "invalid_rows": list(self.invalid_rows),
            "first_updates": list(self.shown),
        }


class PlanFile:
    """The plan as JSON Lines: one line per desired conversation (see :func:`entry_record`).

    :param stream: an open text stream, or ``None`` (no file).
    """

    def __init__(self, stream: IO[str] | None) -> None:
        self.stream = stream

    def write(self, entry: PlanEntry) -> None:
        if self.stream is not None:
            self.stream.write(json.dumps(entry_record(entry), ensure_ascii=False) + "\n")
