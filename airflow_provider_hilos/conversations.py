"""The read side: a conversation as Hilos holds it, in the same normal form as an update.

The list endpoint returns ``ConversationReadSimple`` rows: assignees as user objects, tags as ``{id, name}``, plus
fields no update writes (``contact``, ``created_on``, ``source``, ``first_message``). An update takes user ids and
tag names. :func:`state_from_row` reads a list row leniently (unknown fields and statuses are kept, never refused:
the API may add some), and :func:`normal_fields` turns either side, a :class:`ConversationState` or the body of a
:class:`~airflow_provider_hilos.schemas.ValidatedUpdate`, into one normal form, so "the warehouse wants what Hilos
has" is ``normal_fields(desired) == normal_fields(current)`` restricted to the fields the warehouse declares.

The normal form of the writable fields: ``status`` a string; ``assigned`` a sorted tuple of user ids; ``tags`` a
sorted tuple of names (order carries no meaning in either document); ``assigned_team`` and ``channel`` an integer or
``None``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from airflow_provider_hilos.schemas import WRITABLE_FIELDS

#: One writable field's value in the normal form.
NormalValue = str | int | tuple[Any, ...] | None


class _Unknown:
    """The value of a field nobody read: a list row that lacks it or shows it in a shape that can't be read, a field
    the last sync did not manage, or ``compare_with="nothing"``. Never equal to a value (not even to empty)."""

    _instance: _Unknown | None = None

    def __new__(cls) -> _Unknown:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNKNOWN"


#: A field's value when it was not (or could not be) read.
UNKNOWN: Final = _Unknown()


@dataclass(frozen=True)
class ConversationState:
    """A conversation as the list endpoint shows it, read leniently.

    :param id: the conversation id (as the API spelt it, lower-cased).
    :param contact: the contact id, if shown.
    :param status: as shown (an unknown status is kept as it is).
    :param tags: the tag names, sorted.
    :param assigned: the assigned user ids, sorted.
    :param assigned_team: the team id, or ``None``.
    :param channel: the channel id, or ``None``.
    :param created_on: as shown.
    :param source: as shown.
    :param extra: every other field of the row, kept as it came (``first_message``, fields added later).
    """

    id: str
    contact: str | None = None
    status: str | None = None
    tags: tuple[str, ...] = ()
    assigned: tuple[int | str, ...] = ()
    assigned_team: int | None = None
    channel: int | None = None
    created_on: str | None = None
    source: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def fields(self) -> dict[str, NormalValue]:
        """The writable fields in the normal form (see the module)."""
        return {
            "status": self.status,
            "assigned": self.assigned,
            "tags": self.tags,
            "assigned_team": self.assigned_team,
            "channel": self.channel,
        }

    def change_row(self) -> dict[str, Any]:
        """The conversation as a change-set row (what the batch operator reads): feeding it back sets what it holds.

        Lists are plain lists; ``None`` stays ``None`` (in JSON Lines; in CSV it is written ``-``, "clear").
        """
        row: dict[str, Any] = {"conversation_id": self.id}
        for name, value in self.fields().items():
            row[name] = list(value) if isinstance(value, tuple) else value
        return row


_KNOWN = ("id", "contact", "status", "tags", "assigned", "assigned_team", "channel", "created_on", "source")


def state_from_row(row: Mapping[str, Any]) -> ConversationState:
    """A list row (``ConversationReadSimple``) as a :class:`ConversationState`.

    Lenient: assignees may be objects ``{"id": ...}`` or plain ids, tags ``{"name": ...}`` objects or plain names,
    ids integers or digit strings; unknown fields go to ``extra``.

    :raises ValueError: the row is not an object or has no ``id`` (naming neither value: it is the API's data).
    """
    if not isinstance(row, Mapping) or not isinstance(row.get("id"), str) or not row["id"]:
        raise ValueError("a conversation list row without an id (not a ConversationReadSimple object)")
    return ConversationState(
        id=row["id"].strip().lower(),
        contact=_text(row.get("contact")),
        status=_text(row.get("status")),
        tags=tuple(sorted({name for name in (_tag_name(tag) for tag in _items(row.get("tags"))) if name is not None})),
        assigned=_sorted_ids(_user_id(user) for user in _items(row.get("assigned"))),
        assigned_team=_int(row.get("assigned_team")),
        channel=_int(row.get("channel")),
        created_on=_text(row.get("created_on")),
        source=_text(row.get("source")),
        extra={key: value for key, value in row.items() if key not in _KNOWN},
    )


def row_fields(row: Mapping[str, Any]) -> dict[str, NormalValue | _Unknown]:
    """The writable fields of a list row in the normal form, as a sync compares them (for every listed
    conversation), each :data:`UNKNOWN` when the row does not show it readably: a field missing or ``null`` (only
    the channel may be null, and a team may be shown as null: no team), a list that is not a list, a tag without a
    name, an assignee without an id, a team or channel that is not an id. A sync never builds a union nor calls a
    conversation unchanged on a field it could not read."""
    status = row.get("status")
    return {
        "status": status if isinstance(status, str) and status else UNKNOWN,
        "assigned": _strict_ids(row.get("assigned")),
        "tags": _strict_tags(row.get("tags")),
        "assigned_team": _strict_int(row, "assigned_team"),
        "channel": _strict_int(row, "channel"),
    }


def _strict_tags(value: Any) -> tuple[str, ...] | _Unknown:
    if not isinstance(value, list):
        return UNKNOWN
    names = set()
    for tag in value:
        name = _tag_name(tag)
        if name is None:
            return UNKNOWN
        names.add(name)
    return tuple(sorted(names))


def _strict_ids(value: Any) -> tuple[int | str, ...] | _Unknown:
    if not isinstance(value, list):
        return UNKNOWN
    if all(type(user) is dict and type(user.get("id")) is int for user in value):  # the API's shape, quickly
        return tuple(sorted({user["id"] for user in value}))
    ids = []
    for user in value:
        number = _int(user.get("id") if isinstance(user, Mapping) else user)
        if number is None:
            return UNKNOWN
        ids.append(number)
    return _sorted_ids(ids)


def _strict_int(row: Mapping[str, Any], name: str) -> int | _Unknown | None:
    if name not in row:
        return UNKNOWN
    value = row[name]
    if value is None:
        return None
    number = _int(value)
    return UNKNOWN if number is None else number


def normal_fields(values: Mapping[str, Any] | ConversationState) -> dict[str, NormalValue]:
    """The writable fields of an update body (``ValidatedUpdate.body``: ``{"assigned": [{"id": 3}], "tags":
    [{"name": "vip"}], ...}``), of a change row (plain ids and names) or of a :class:`ConversationState`, in the
    normal form. Only the fields present are returned (a body that leaves ``tags`` alone has no ``tags``)."""
    if isinstance(values, ConversationState):
        return values.fields()
    normal: dict[str, NormalValue] = {}
    for name in WRITABLE_FIELDS:
        if name not in values:
            continue
        value = values[name]
        if name == "tags":
            normal[name] = tuple(sorted({n for n in (_tag_name(tag) for tag in _items(value)) if n is not None}))
        elif name == "assigned":
            normal[name] = _sorted_ids(_user_id(user) for user in _items(value))
        elif name in ("assigned_team", "channel"):
            normal[name] = _int(value)
        else:
            normal[name] = _text(value)
    return normal


def _sorted_ids(ids: Iterable[int | str | None]) -> tuple[int | str, ...]:
    """Unique ids, numbers first in numeric order (3 before 10), then any that aren't numbers."""
    unique = {i for i in ids if i is not None}
    if all(type(i) is int for i in unique):
        return tuple(sorted(unique))
    return tuple(sorted(unique, key=lambda i: (0, i, "") if isinstance(i, int) else (1, 0, str(i))))


def _items(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None if value is None else str(value)


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    if isinstance(value, Mapping):  # an object with an id (a team or channel shown in full)
        return _int(value.get("id"))
    return None


def _user_id(user: Any) -> int | str | None:
    if isinstance(user, Mapping):
        user = user.get("id")
    number = _int(user)
    return number if number is not None else (user if isinstance(user, str) and user else None)


def _tag_name(tag: Any) -> str | None:
    if isinstance(tag, Mapping):
        tag = tag.get("name")
    return tag.strip() if isinstance(tag, str) and tag.strip() else None
