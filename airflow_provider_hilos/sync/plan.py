"""A sync's plan, summed up: counts per action, per field and per transition, the first diffs in full, what ``add``
mode left alone, the conversations not found; and the plan's JSON Lines (one line per desired conversation that is
not unchanged, unless the unchanged ones are asked for), written next to the report."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, Any

from airflow_provider_hilos.contacts import ABSENT
from airflow_provider_hilos.sync.diff import UNKNOWN, WRITING, Action, FieldChange, PlanEntry

#: How many transitions per field the summary names (the others are counted together).
MAX_TRANSITIONS = 10
#: Distinct transitions counted per field: past that many, a new one is counted only as "other" (a contact's name
#: or a custom property can change to a million different values: the summary's memory must not grow with them;
#: the common transitions are seen long before the limit).
MAX_TRACKED_TRANSITIONS = 2_000
#: How many drift corrections (and not-found, unreadable conversations) the summary lists by conversation id.
MAX_LISTED_DRIFT = 50
#: How many not-found conversations the log names (all are in the plan and the sync log).
LOGGED_NOT_FOUND = 20


def plain(value: Any) -> Any:
    """A normal value as JSON has it (tuples as lists; ``UNKNOWN`` and ``ABSENT`` as ``None`` with their own flags
    elsewhere)."""
    if value is UNKNOWN or value is ABSENT:
        return None
    return list(value) if isinstance(value, tuple) else value


def entry_record(entry: PlanEntry, key_field: str = "conversation_id", id_field: str | None = None) -> dict[str, Any]:
    """One line of the plan file (``key_field``: the key's name, ``id_field``: the Hilos id's, for a contact)."""
    record: dict[str, Any] = {key_field: entry.key, "action": entry.action.value}
    if id_field and entry.object_id:
        record[id_field] = entry.object_id
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
    if change.before is ABSENT:
        flags["from_absent"] = True
    if change.after is ABSENT:
        flags["removed"] = True
    if change.from_last_sync:
        flags["from_last_sync"] = True
    if change.drift:
        flags["drift"] = True
    return flags


def transitions(change: FieldChange) -> list[str]:
    """How the summary names a change: ``CLOSED→RESOLVED`` for a value, ``+vip`` / ``-renewal`` for list items,
    ``pro→∅`` for a custom property removed."""
    if isinstance(change.after, tuple):
        if change.before is UNKNOWN or not isinstance(change.before, tuple):
            return [f"={_short(change.after)}"]  # nothing known to compare with: the list is set as a whole
        added = [f"+{item}" for item in change.after if item not in change.before]
        removed = [f"-{item}" for item in change.before if item not in change.after]
        return added + removed
    before = "?" if change.before is UNKNOWN else _short(change.before)
    return [f"{before}→{_short(change.after)}"]


def _short(value: Any) -> str:
    if value is ABSENT:
        return "∅"
    text = "null" if value is None else ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass
class PlanSummary:
    """The plan's counts, built entry by entry (constant memory but for the listed drift ids)."""

    actions: Counter[str] = field(default_factory=Counter)
    fields: Counter[str] = field(default_factory=Counter)
    transitions: dict[str, Counter[str]] = field(default_factory=dict)
    #: per field, the transitions counted only as "other" (see :data:`MAX_TRACKED_TRANSITIONS`)
    untracked: Counter[str] = field(default_factory=Counter)
    retried: int = 0
    #: planned updates that put back a hand edit (what a real run's ``drift_corrected`` counts when they land)
    drift_found: int = 0
    drift_ids: list[str] = field(default_factory=list)
    invalid_rows: list[dict[str, Any]] = field(default_factory=list)
    not_found_ids: list[str] = field(default_factory=list)
    unreadable_rows: list[dict[str, Any]] = field(default_factory=list)
    #: per list field in add mode: items kept, removals ignored, and how many conversations each concerns
    left_alone: dict[str, Counter[str]] = field(default_factory=dict)
    #: per writing action (update, create), the changed fields: what a dry run would create and update
    action_fields: dict[str, Counter[str]] = field(default_factory=dict)
    shown: list[dict[str, Any]] = field(default_factory=list)
    shown_limit: int = 20
    #: the key's name in records (``conversation_id``, a contact's ``phone``) and the Hilos id's (``contact_id``)
    key_field: str = "conversation_id"
    id_field: str | None = None

    def add(self, entry: PlanEntry) -> None:
        """Count one entry (and keep it in full if it is among the first ``shown_limit`` writes)."""
        self.actions[entry.action.value] += 1
        for left in entry.left_alone:
            counts = self.left_alone.setdefault(left.field, Counter())
            counts["kept"] += len(left.kept)
            counts["removals_ignored"] += len(left.removals_ignored)
            counts["conversations_keeping_items"] += bool(left.kept)
            counts["conversations_with_removals_ignored"] += bool(left.removals_ignored)
        key = self.key_field
        if entry.action is Action.INVALID and len(self.invalid_rows) < MAX_LISTED_DRIFT:
            self.invalid_rows.append({"row": entry.row, key: entry.key, "error": entry.reason})
        if entry.action is Action.NOT_FOUND and entry.key and len(self.not_found_ids) < MAX_LISTED_DRIFT:
            self.not_found_ids.append(entry.key)
        if entry.action is Action.UNREADABLE and len(self.unreadable_rows) < MAX_LISTED_DRIFT:
            self.unreadable_rows.append({key: entry.key, "error": entry.reason})
        if entry.action not in WRITING:
            return
        self.retried += entry.retry
        if entry.drift:
            self.drift_found += 1
            if len(self.drift_ids) < MAX_LISTED_DRIFT and entry.key:
                self.drift_ids.append(entry.key)
        per_action = self.action_fields.setdefault(entry.action.value, Counter())
        for change in entry.changes:
            self.fields[change.field] += 1
            per_action[change.field] += 1
            counter = self.transitions.setdefault(change.field, Counter())
            for name in transitions(change):
                if name in counter or len(counter) < MAX_TRACKED_TRANSITIONS:
                    counter[name] += 1
                else:
                    self.untracked[change.field] += 1
        if len(self.shown) < self.shown_limit:
            self.shown.append(entry_record(entry, self.key_field, self.id_field))

    def add_unchanged(self, count: int) -> None:
        """Count ``count`` unchanged entries (what :meth:`add` does with each of them)."""
        self.actions[Action.UNCHANGED.value] += count

    def count(self, action: Action) -> int:
        return self.actions[action.value]

    def field_lines(self) -> list[str]:
        """``status: 80 (CLOSED→RESOLVED 60, NEW→CLOSED 20)``, one line per changed field."""
        lines = []
        for name, number in self.fields.most_common():
            named = self.transitions.get(name, Counter()).most_common(MAX_TRANSITIONS)
            rest = sum(self.transitions.get(name, Counter()).values()) - sum(n for _, n in named) + self.untracked[name]
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
            "fields_by_action": {action: dict(counts) for action, counts in self.action_fields.items()},
            "first_updates": list(self.shown),
        }

    def left_alone_lines(self) -> list[str]:
        """``tags_mode='add': 147 tag removal(s) from the warehouse ignored (in 120 conversations), 60 extra tag(s)
        kept (in 45 conversations)``, one line per list field in add mode."""
        lines = []
        for name, counts in self.left_alone.items():
            noun = "tag" if name == "tags" else "assignee"  # assigned, default_assignees
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

    def __init__(
        self,
        stream: IO[str] | None,
        *,
        unchanged: bool = False,
        key_field: str = "conversation_id",
        id_field: str | None = None,
    ) -> None:
        self.stream = stream
        self.unchanged = unchanged
        self.key_field = key_field
        self.id_field = id_field
        self.lines = 0

    def write(self, entry: PlanEntry) -> None:
        if self.stream is not None and (self.unchanged or entry.action is not Action.UNCHANGED):
            self.write_record(json.dumps(entry_record(entry, self.key_field, self.id_field), ensure_ascii=False))

    def write_record(self, line: str) -> None:
        """One entry already made into its JSON line."""
        if self.stream is not None:
            self.stream.write(line + "\n")
            self.lines += 1
