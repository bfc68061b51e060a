"""The diff of a sync: what one object (a conversation, a contact) needs so that Hilos holds what the warehouse
declares.

A pure function of values, with no Airflow, no HTTP and no files in it (property-tested in
``tests/unit/test_sync_diff.py`` and ``tests/unit/test_sync_objects_contact.py``). What an object's fields are and how
each compares is a :class:`FieldSet`; the values are in the object's normal form
(:mod:`airflow_provider_hilos.conversations`, :mod:`airflow_provider_hilos.contacts`).

The rules:

* Only the fields the desired row declares are managed (a column not selected, or a NULL cell, is not).
* A plain field is compared exactly (an email ignoring case); a list field (tags, assignees) as a set. In ``"add"``
  mode a list field only has to *contain* the desired items: the write sends the union (or only what is missing,
  where the API merges), so items agents added are kept; the entry says what it left alone (the items it kept, and
  the items the warehouse removed since the last sync that Hilos still has).
* A field Hilos's list row does not show readably is :data:`UNKNOWN`, never empty: in ``"replace"`` mode the desired
  value is sent (from unknown); in ``"add"`` mode there is nothing to add to, so the object is ``unreadable``
  (not sent, reported, sent again next run). A field no list row shows (a contact's ``default_assignees``) is
  compared with what the last sync applied.
* What the desired state is compared with (:class:`CompareWith`): what Hilos holds now (the listing), the snapshot
  the last successful sync left, or nothing (every desired field is sent).
* An object whose write failed in the last run is sent again even if nothing differs (it may have landed or not).
* With ``"hilos"``, a field that differs from what the last sync applied, although the warehouse did not change it,
  was edited by hand in Hilos: the write puts it back, and the entry says ``drift``. In ``"add"`` mode only a desired
  item that the last sync applied and Hilos lacks now is a hand edit (an item an agent added is kept, not put back).
* A desired row that manages no field (every cell NULL) of an object Hilos has is ``unchanged``.
* An object the listing did not show is ``not_found`` (a conversation; a contact in ``"update"`` mode), or is created
  (a contact in ``"upsert"`` and ``"mirror"`` mode: ``create``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from airflow_provider_hilos.conversations import UNKNOWN, NormalValue, _Unknown

__all__ = [
    "UNKNOWN",
    "Action",
    "CompareWith",
    "FieldChange",
    "FieldSet",
    "LeftAlone",
    "ListMode",
    "PlanEntry",
    "plan_conversation",
    "plan_entry",
]

#: The fields a conversation sync can manage, in the order plans list them.
SYNC_FIELDS: Final = ("status", "tags", "assigned", "assigned_team", "channel")
#: The conversation fields compared as sets (and that ``"add"`` mode can merge).
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
    """How a desired list (tags, assignees) or a contact's custom properties are applied."""

    #: the desired list is the whole list (for properties: the whole meta; others are removed)
    REPLACE = "replace"
    #: the desired items must be there; others are kept (the write sends the union)
    ADD = "add"
    #: (custom properties) only the properties the warehouse names are managed; others are kept
    MERGE = "merge"


class Action(StrEnum):
    """What the plan does with one desired (or, in a mirror, managed) object."""

    UNCHANGED = "unchanged"
    UPDATE = "update"
    NOT_FOUND = "not_found"
    INVALID = "invalid"
    #: Hilos listed it, but not a field an ``"add"`` mode must add to: not sent, reported, sent again next run
    UNREADABLE = "unreadable"
    #: (contacts) not in Hilos: created (``POST /api/contact``, which updates a contact with that phone if it exists)
    CREATE = "create"
    #: (contacts, mirror) managed by this sync, no longer in the desired state: deleted
    DELETE = "delete"


#: The actions that send a write.
WRITING: Final = frozenset({Action.UPDATE, Action.CREATE, Action.DELETE})


@dataclass(frozen=True, slots=True)
class LeftAlone:
    """What ``"add"`` mode left alone in one list field of one object.

    :param field: ``tags``, ``assigned`` or ``default_assignees``.
    :param kept: items Hilos has that the warehouse does not ask for (agents' additions), kept.
    :param removals_ignored: items the warehouse removed since the last sync that Hilos still has: add mode never
        removes, so they stay.
    """

    field: str
    kept: tuple[Any, ...] = ()
    removals_ignored: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One field of one object: what it holds (or :data:`UNKNOWN`), and what it must hold.

    :param field: the field's name.
    :param before: what Hilos holds (``"hilos"``), what the last sync applied (``"last_sync"``), or ``UNKNOWN``.
    :param after: what the write sends.
    :param drift: Hilos differs from what the last sync applied while the warehouse did not change this field (a
        hand edit being put back).
    :param from_last_sync: ``before`` is what the last sync applied, not what Hilos holds (a field no list row shows,
        such as a contact's ``default_assignees``: a hand edit of it is not seen).
    """

    field: str
    before: Any
    after: Any
    drift: bool = False
    from_last_sync: bool = False


@dataclass(frozen=True, slots=True)
class PlanEntry:
    """The plan for one object.

    :param key: the object's key: a conversation's canonical (lower-case) UUID, a contact's E.164 phone; for an
        invalid row, the key as given (or ``None``).
    :param action: unchanged, update, create, delete, not_found, invalid or unreadable.
    :param changes: for a write, the fields it sends, each with its before and after.
    :param retry: the object failed in the last run, so it is sent again whatever the diff says.
    :param reason: why a row is invalid or unreadable, why it is deleted, or why it is sent although not listed.
    :param row: the desired row's number in its source (for invalid rows and the sync log).
    :param left_alone: in ``"add"`` mode, what each list field kept and which removals it ignored.
    :param object_id: the object's id in Hilos, when known (a contact's UUID).
    """

    key: str | None
    action: Action
    changes: tuple[FieldChange, ...] = ()
    retry: bool = False
    reason: str = ""
    row: int = 0
    left_alone: tuple[LeftAlone, ...] = ()
    object_id: str | None = None

    @property
    def conversation_id(self) -> str | None:
        """The key, as a conversation sync names it."""
        return self.key

    @property
    def drift(self) -> bool:
        """Whether the write puts back a hand edit (see :class:`FieldChange`)."""
        return any(change.drift for change in self.changes)

    def sent_fields(self) -> dict[str, Any]:
        """What the write sends, field by field (empty unless the action writes)."""
        return {change.field: change.after for change in self.changes}

    def change_row(self) -> dict[str, Any]:
        """A conversation update as a change-set row (plain tag names and user ids; ``"-"`` clears the channel), the
        input :func:`~airflow_provider_hilos.rows.validate_row` turns into the PATCH body."""
        row: dict[str, Any] = {"conversation_id": self.key}
        for name, value in self.sent_fields().items():
            if isinstance(value, tuple):
                row[name] = list(value)
            elif value is None:
                row[name] = "-"  # schemas.CLEAR: the only field that can be null is the channel
            else:
                row[name] = value
        return row


@dataclass(frozen=True)
class FieldSet:
    """What an object's fields are, and how each compares.

    :param order: the fields in the order plans list them (others, such as ``meta.<name>``, come after, by name).
    :param lists: the fields compared as sets (``"add"`` mode can merge them).
    :param from_last_sync: the fields no list row shows: compared with what the last sync applied.
    :param compare: per field, the value a comparison uses (``str.casefold`` for an email).
    :param current_value: what Hilos holds for a field, read from the listed fields (a contact's ``meta.<name>``
        is absent, not unknown, when the row shows a meta without it).
    """

    order: Sequence[str]
    lists: frozenset[str]
    from_last_sync: frozenset[str] = frozenset()
    compare: Mapping[str, Callable[[Any], Any]] = field(default_factory=dict)
    current_value: Callable[[Mapping[str, Any], str], Any] | None = None

    def sorted(self, names: Any) -> list[str]:
        rank = {name: i for i, name in enumerate(self.order)}
        return sorted(names, key=lambda name: (rank.get(name, len(rank)), name))

    def held(self, current: Mapping[str, Any], name: str) -> Any:
        if self.current_value is not None:
            return self.current_value(current, name)
        return current.get(name, UNKNOWN)

    def equal(self, name: str, have: Any, want: Any) -> bool:
        if have is UNKNOWN:
            return False
        compare = self.compare.get(name)
        if compare is not None and isinstance(have, str) and isinstance(want, str):
            return bool(compare(have) == compare(want))
        return bool(have == want)


#: A conversation's fields.
CONVERSATION_FIELDS: Final = FieldSet(order=SYNC_FIELDS, lists=frozenset(LIST_FIELDS))


def already_as_desired(
    desired: Mapping[str, Any],
    *,
    fields: FieldSet,
    compare_with: CompareWith,
    current: Mapping[str, Any] | None,
    failed_before: bool = False,
    modes: Mapping[str, ListMode] | None = None,
) -> bool:
    """Whether :func:`plan_entry` plans this object unchanged at once: compared with what Hilos listed, every
    managed field already equal, its last write not failed, no list field in ``"add"`` mode and no field known only
    from the last sync (the sync engine asks this as each list page arrives, so that most objects of a day 2 are
    never planned again; see :func:`plan_entry` for the parameters)."""
    if compare_with is not CompareWith.HILOS or current is None or failed_before:
        return False
    if modes and any(modes.get(name) is ListMode.ADD and name in fields.lists for name in desired):
        return False
    if fields.from_last_sync and not fields.from_last_sync.isdisjoint(desired):
        return False
    if fields.current_value is None and not fields.compare:  # plain fields (a conversation's): fields.equal, inline
        get = current.get
        return all((have := get(name, UNKNOWN)) is not UNKNOWN and have == value for name, value in desired.items())
    return all(fields.equal(name, fields.held(current, name), value) for name, value in desired.items())


def plan_entry(
    key: str,
    desired: Mapping[str, Any],
    *,
    fields: FieldSet,
    compare_with: CompareWith,
    current: Mapping[str, Any] | None = None,
    previous: Mapping[str, Any] | None = None,
    failed_before: bool = False,
    modes: Mapping[str, ListMode] | None = None,
    missing: Action = Action.NOT_FOUND,
    send_missing: bool = False,
    row: int = 0,
    object_id: str | None = None,
) -> PlanEntry:
    """The plan for one object.

    :param key: its key (a conversation's UUID, a contact's E.164 phone).
    :param desired: the managed fields and their desired values (normal form); a field absent is not managed.
    :param fields: the object's fields (:class:`FieldSet`).
    :param compare_with: what ``desired`` is compared with.
    :param current: what Hilos holds (``"hilos"``; a field it did not show readably is :data:`UNKNOWN`); ``None``:
        the listing did not show this object.
    :param previous: what the last successful sync applied to it (its snapshot entry), or ``None``.
    :param failed_before: its write failed (or was not sent) in the last run: send it even if nothing differs.
    :param modes: ``"replace"`` or ``"add"`` per list field (``"add"`` needs ``current``: it adds to it).
    :param missing: what an object Hilos did not list becomes: ``not_found`` or ``create``.
    :param send_missing: with ``"hilos"``, send an object the listing did not show as an update (a conversation's
        ``send_not_found``).
    :param row: the desired row's number in its source.
    :param object_id: its id in Hilos, when known.
    :raises ValueError: ``"add"`` mode without a current state to add to.
    """
    modes = modes or {}
    merging = [name for name in desired if modes.get(name) is ListMode.ADD and name in fields.lists]
    compare_with = CompareWith(compare_with)
    if already_as_desired(  # the common case: one comparison per managed field
        desired, fields=fields, compare_with=compare_with, current=current, failed_before=failed_before, modes=modes
    ):
        return PlanEntry(key, Action.UNCHANGED, row=row, object_id=object_id)
    reason = ""
    action = Action.UPDATE
    if compare_with is CompareWith.HILOS:
        if current is None:
            if missing is Action.CREATE:
                action = Action.CREATE
            elif not send_missing:
                return PlanEntry(key, Action.NOT_FOUND, row=row)
            else:
                reason = "not listed by Hilos; sent because send_not_found=True"
        before = current
    elif compare_with is CompareWith.LAST_SYNC:
        before = previous
    else:
        before = None
    if merging and (before is None or compare_with is not CompareWith.HILOS) and action is not Action.CREATE:
        raise ValueError(mode_problem(compare_with, merging[0], send_not_found=send_missing) or "")
    if action is Action.CREATE:
        created = tuple(FieldChange(name, UNKNOWN, desired[name]) for name in fields.sorted(desired))
        return PlanEntry(key, Action.CREATE, created, retry=failed_before, row=row)
    unread = [
        name
        for name in merging
        if before is not None and name not in fields.from_last_sync and not isinstance(fields.held(before, name), tuple)
    ]
    if unread:
        return PlanEntry(
            key,
            Action.UNREADABLE,
            reason=f"Hilos listed it without readable {' and '.join(unread)}: {unread[0]}_mode='add' can't add to "
            "what it could not read, so nothing is sent (it is tried again next run)",
            row=row,
            object_id=object_id,
        )
    changes: list[FieldChange] = []
    left_alone: list[LeftAlone] = []
    targets: dict[str, tuple[Any, Any, bool]] = {}
    for name in fields.sorted(desired):
        want = desired[name]
        old = name in fields.from_last_sync and compare_with is CompareWith.HILOS
        if old:  # no list row shows it: what the last sync applied is the best that is known
            have: Any = UNKNOWN if previous is None else previous.get(name, UNKNOWN)
        else:
            have = UNKNOWN if before is None else fields.held(before, name)
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
                and not old
                and isinstance(last, tuple)
                and bool((set(want) & set(last)) - set(have))
            )
        elif compare_with is CompareWith.HILOS and have is not UNKNOWN and not old:
            drift = previous is not None and name in previous and previous[name] == want
        targets[name] = (have, target, old)
        if not fields.equal(name, have, target):
            changes.append(FieldChange(name, have, target, drift, from_last_sync=old))
    retry = False
    if not changes and failed_before:  # sent again as it is meant to be (in add mode: the union, never less)
        retry = True
        changes = [FieldChange(name, have, target, from_last_sync=old) for name, (have, target, old) in targets.items()]
    if not changes:
        return PlanEntry(key, Action.UNCHANGED, row=row, left_alone=tuple(left_alone), object_id=object_id)
    return PlanEntry(
        key,
        Action.UPDATE,
        tuple(changes),
        retry=retry or failed_before,
        reason=reason,
        row=row,
        left_alone=tuple(left_alone),
        object_id=object_id,
    )


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
    """The plan for one conversation (:func:`plan_entry` with a conversation's fields).

    :param conversation_id: the canonical UUID.
    :param desired: the managed fields and their desired values (normal form); a field absent is not managed.
    :param compare_with: what ``desired`` is compared with.
    :param current: what Hilos holds (``"hilos"``); ``None``: the listing did not show this conversation.
    :param previous: what the last successful sync applied to it (its snapshot entry), or ``None``.
    :param failed_before: its update failed (or was not sent) in the last run: send it even if nothing differs.
    :param tags_mode: ``"replace"`` or ``"add"`` (needs ``current``: it is the union that is sent).
    :param assigned_mode: the same, for the assignees.
    :param send_not_found: with ``"hilos"``, send a conversation the listing did not show (else it is not_found).
    :param row: the desired row's number in its source.
    :raises ValueError: ``"add"`` mode without a current state to add to.
    """
    return plan_entry(
        conversation_id,
        desired,
        fields=CONVERSATION_FIELDS,
        compare_with=compare_with,
        current=current,
        previous=previous,
        failed_before=failed_before,
        modes={"tags": ListMode(tags_mode), "assigned": ListMode(assigned_mode)},
        send_missing=send_not_found,
        row=row,
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


def apply_entry(current: Mapping[str, Any], entry: PlanEntry) -> dict[str, Any]:
    """What an object holds after ``entry``'s write landed on ``current`` (a write changes only the fields it
    sends). The property tests check that this equals the desired state on every managed field."""
    return {**current, **entry.sent_fields()}


def _union(have: tuple[Any, ...], want: tuple[Any, ...]) -> tuple[Any, ...]:
    merged = set(have) | set(want)
    return tuple(sorted(merged, key=lambda i: (0, i, "") if isinstance(i, int) else (1, 0, str(i))))
