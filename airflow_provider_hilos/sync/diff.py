"""The diff of a sync: what one conversation needs so that Hilos holds what the warehouse declares.

A pure function of values, with no Airflow, no HTTP and no files in it (property-tested in
``tests/unit/test_sync_diff.py``). Values are in the normal form of :mod:`airflow_provider_hilos.conversations`:
``status`` a string; ``tags`` a sorted tuple of names; ``assigned`` a sorted tuple of user ids; ``assigned_team`` and
``channel`` an integer or ``None``.

The rules:

* Only the fields the desired row declares are managed (a column not selected, or a NULL cell, is not).
* ``status``, ``assigned_team`` and ``channel`` are compared exactly; ``tags`` and ``assigned`` as sets (the normal
  form sorts them). In ``"add"`` mode a list field only has to *contain* the desired items: the update sends the
  union of what Hilos holds and what is desired, so items agents added are kept; the entry says what it left alone
  (the items it kept, and the items the warehouse removed since the last sync that Hilos still has).
* A field Hilos's list row does not show readably is :data:`UNKNOWN`, never empty: in ``"replace"`` mode the desired
  value is sent (from unknown); in ``"add"`` mode there is nothing to add to, so the conversation is ``unreadable``
  (not sent, reported, sent again next run).
* What the desired state is compared with (:class:`CompareWith`): what Hilos holds now (the listing), the snapshot
  the last successful sync left, or nothing (every desired field is sent).
* A conversation that failed in the last run is sent again even if nothing differs (its update may have landed
  or not).
* With ``"hilos"``, a conversation whose field differs from what the last sync applied, although the warehouse did
  not change that field, was edited by hand in Hilos: the update puts it back, and the entry says ``drift``. In
  ``"add"`` mode only a desired item that the last sync applied and Hilos lacks now is a hand edit (an item an agent
  added is kept, not put back).
* A desired row that manages no field (every cell NULL) is ``unchanged``: there is nothing to compare.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from airflow_provider_hilos.conversations import UNKNOWN, NormalValue, _Unknown

__all__ = ["UNKNOWN", "Action", "CompareWith", "FieldChange", "LeftAlone", "ListMode", "PlanEntry", "plan_conversation"]

#: The fields a sync can manage, in the order plans list them.
SYNC_FIELDS: Final = ("status", "tags", "assigned", "assigned_team", "channel")
#: The fields compared as sets (and that ``"add"`` mode can merge).
LIST_FIELDS: Final = ("tags", "assigned")


class CompareWith(StrEnum):
    """What the desired state is compared with."""

    #: what Hilos holds now, read through the list endpoint before any write (catches hand edits)
    HILOS = "hilos"
    #: the snapshot of what the last successful run applied (no reads; misses hand edits)
    LAST_SYNC = "last_sync"
    #: nothing: every desired field is sent (a first load, a forced resync)
    NOTHING = "nothing"


class ListMode(StrEnum):
    """How a desired list (tags, assignees) is applied."""

    #: the desired list is the whole list
    REPLACE = "replace"
    #: the desired items must be there; others are kept (the update sends the union)
    ADD = "add"


class Action(StrEnum):
    """What the plan does with one desired conversation."""

    UNCHANGED = "unchanged"
    UPDATE = "update"
    NOT_FOUND = "not_found"
    INVALID = "invalid"
    #: Hilos listed it, but not a field an ``"add"`` mode must add to: not sent, reported, sent again next run
    UNREADABLE = "unreadable"


@dataclass(frozen=True, slots=True)
class LeftAlone:
    """What ``"add"`` mode left alone in one list field of one conversation.

    :param field: ``tags`` or ``assigned``.
    :param kept: items Hilos has that the warehouse does not ask for (agents' additions), kept.
    :param removals_ignored: items the warehouse removed since the last sync that Hilos still has: add mode never
        removes, so they stay.
    """

    field: str
    kept: tuple[Any, ...] = ()
    removals_ignored: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One field of one conversation: what it holds (or :data:`UNKNOWN`), and what it must hold.

    :param field: the field's name.
    :param before: what Hilos holds (``"hilos"``), what the last sync applied (``"last_sync"``), or ``UNKNOWN``.
    :param after: what the update sends.
    :param drift: Hilos differs from what the last sync applied while the warehouse did not change this field (a
        hand edit being put back).
    """

    field: str
    before: NormalValue | _Unknown
    after: NormalValue
    drift: bool = False


@dataclass(frozen=True, slots=True)
class PlanEntry:
    """The plan for one desired conversation.

    :param conversation_id: the canonical (lower-case) UUID; for an invalid row, the id as given (or ``None``).
    :param action: unchanged, update, not_found or invalid.
    :param changes: for an update, the fields it sends, each with its before and after.
    :param retry: the conversation failed in the last run, so it is sent again whatever the diff says.
    :param reason: why a row is invalid or unreadable, or why a conversation is sent although it was not listed.
    :param row: the desired row's number in its source (for invalid rows and the sync log).
    :param left_alone: in ``"add"`` mode, what each list field kept and which removals it ignored.
    """

    conversation_id: str | None
    action: Action
    changes: tuple[FieldChange, ...] = ()
    retry: bool = False
    reason: str = ""
    row: int = 0
    left_alone: tuple[LeftAlone, ...] = ()

    @property
    def drift(self) -> bool:
        """Whether the update puts back a hand edit (see :class:`FieldChange`)."""
        return any(change.drift for change in self.changes)

    def sent_fields(self) -> dict[str, NormalValue]:
        """What the update sends, field by field (empty unless the action is update)."""
        return {change.field: change.after for change in self.changes}

    def change_row(self) -> dict[str, Any]:
        """The update as a change-set row (plain tag names and user ids; ``"-"`` clears the channel), the input
        :func:`~airflow_provider_hilos.rows.validate_row` turns into the PATCH body."""
        row: dict[str, Any] = {"conversation_id": self.conversation_id}
        for name, value in self.sent_fields().items():
            if isinstance(value, tuple):
                row[name] = list(value)
            elif value is None:
                row[name] = "-"  # schemas.CLEAR: the only field that can be null is the channel
            else:
                row[name] = value
        return row


def plan_conversation(
    conversation_id: str,
    desired: Mapping[str, NormalValue],
    *,
    compare_with: CompareWith,
    current: Mapping[str, NormalValue | _Unknown] | None = None,
    previous: Mapping[str, NormalValue] | None = None,
    failed_before: bool = False,
    tags_mode: ListMode = ListMode.REPLACE,
    assigned_mode: ListMode = ListMode.REPLACE,
    send_not_found: bool = False,
    row: int = 0,
) -> PlanEntry:
    """The plan for one conversation.

    :param conversation_id: the canonical UUID.
    :param desired: the managed fields and their desired values (normal form); a field absent is not managed.
    :param compare_with: what ``desired`` is compared with.
    :param current: what Hilos holds (``"hilos"``; a field it did not show readably is :data:`UNKNOWN`); ``None``:
        the listing did not show this conversation.
    :param previous: what the last successful sync applied to it (its snapshot entry), or ``None``.
    :param failed_before: its update failed (or was not sent) in the last run: send it even if nothing differs.
    :param tags_mode: ``"replace"`` or ``"add"`` (needs ``current``: it is the union that is sent).
    :param assigned_mode: the same, for the assignees.
    :param send_not_found: with ``"hilos"``, send a conversation the listing did not show (else it is not_found).
    :param row: the desired row's number in its source.
    :raises ValueError: ``"add"`` mode without a current state to add to.
    """
    modes = {"tags": ListMode(tags_mode), "assigned": ListMode(assigned_mode)}
    merging = [name for name, mode in modes.items() if mode is ListMode.ADD and name in desired]
    if (  # the common case, a conversation already as desired: one comparison per managed field
        compare_with is CompareWith.HILOS
        and current is not None
        and not failed_before
        and not merging
        and all(current.get(name, UNKNOWN) == value for name, value in desired.items())
    ):
        return PlanEntry(conversation_id, Action.UNCHANGED, row=row)
    compare_with = CompareWith(compare_with)
    reason = ""
    if compare_with is CompareWith.HILOS:
        if current is None:
            if not send_not_found:
                return PlanEntry(conversation_id, Action.NOT_FOUND, row=row)
            reason = "not listed by Hilos; sent because send_not_found=True"
        before = current
    elif compare_with is CompareWith.LAST_SYNC:
        before = previous
    else:
        before = None
    if merging and (before is None or compare_with is not CompareWith.HILOS):
        raise ValueError(mode_problem(compare_with, merging[0], send_not_found=send_not_found) or "")
    unread = [name for name in merging if before is not None and not isinstance(before.get(name, UNKNOWN), tuple)]
    if unread:
        return PlanEntry(
            conversation_id,
            Action.UNREADABLE,
            reason=f"Hilos listed this conversation without readable {' and '.join(unread)}: {unread[0]}_mode='add' "
            "can't add to what it could not read, so nothing is sent (it is tried again next run)",
            row=row,
        )
    changes: list[FieldChange] = []
    left_alone: list[LeftAlone] = []
    targets: dict[str, tuple[NormalValue | _Unknown, NormalValue]] = {}
    for name in SYNC_FIELDS:
        if name not in desired:
            continue
        want = desired[name]
        have: NormalValue | _Unknown = UNKNOWN if before is None else before.get(name, UNKNOWN)
        last = None if previous is None else previous.get(name)
        target = want
        drift = False
        if name in merging and isinstance(have, tuple) and isinstance(want, tuple):
            target = _union(have, want)
            removed = set(last) - set(want) if isinstance(last, tuple) else set()
            left = LeftAlone(
                name,
                kept=tuple(item for item in have if item not in want),
                removals_ignored=tuple(item for item in have if item in removed),
            )
            if left.kept or left.removals_ignored:
                left_alone.append(left)
            # a hand edit is a desired item the last sync applied that Hilos lacks now; an agent's addition is kept
            drift = (
                compare_with is CompareWith.HILOS
                and isinstance(last, tuple)
                and bool((set(want) & set(last)) - set(have))
            )
        elif compare_with is CompareWith.HILOS and have is not UNKNOWN:
            drift = previous is not None and name in previous and previous[name] == want
        targets[name] = (have, target)
        if have is UNKNOWN or have != target:
            changes.append(FieldChange(name, have, target, drift and have != target))
    retry = False
    if not changes and failed_before:  # sent again as it is meant to be (in add mode: the union, never less)
        retry = True
        changes = [FieldChange(name, have, target) for name, (have, target) in targets.items()]
    if not changes:
        return PlanEntry(conversation_id, Action.UNCHANGED, row=row, left_alone=tuple(left_alone))
    return PlanEntry(
        conversation_id,
        Action.UPDATE,
        tuple(changes),
        retry=retry or failed_before,
        reason=reason,
        row=row,
        left_alone=tuple(left_alone),
    )


def mode_problem(compare_with: CompareWith | str, field: str, *, send_not_found: bool = False) -> str | None:
    """Why ``<field>_mode="add"`` can't work with these settings, or ``None``: adding needs what Hilos holds now."""
    if CompareWith(compare_with) is not CompareWith.HILOS:
        return (
            f"{field}_mode='add' needs what Hilos holds now, to add to it (it sends the union): use "
            f"compare_with='hilos', or {field}_mode='replace'"
        )
    if send_not_found:
        return (
            f"{field}_mode='add' can't send a conversation Hilos did not list (its current {field} are unknown, and "
            "the update would replace them): use send_not_found=False"
        )
    return None


def apply_entry(current: Mapping[str, NormalValue], entry: PlanEntry) -> dict[str, NormalValue]:
    """What a conversation holds after ``entry``'s update landed on ``current`` (a PATCH changes only the fields it
    sends). The property tests check that this equals the desired state on every managed field."""
    return {**current, **entry.sent_fields()}


def _union(have: tuple[Any, ...], want: tuple[Any, ...]) -> tuple[Any, ...]:
    merged = set(have) | set(want)
    return tuple(sorted(merged, key=lambda i: (0, i, "") if isinstance(i, int) else (1, 0, str(i))))
