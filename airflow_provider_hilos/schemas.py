"""The Hilos conversation schemas, modelled once.

Mirrors ``PatchedConversationEdit`` / ``ConversationEdit`` of the two published OpenAPI descriptions
of the API (``tests/contract/openapi-hilos-native-conversation.json``, Hilos's own, and
``tests/contract/openapi-conversation-update.json``, ActiveCampaign's copy). The hook, the operator
and the batch path all validate through :func:`validate_update`, so a rule lives in one place.
Requests accept the union of both documents. Answers are not modelled here: the provider passes them
on as the API sent them, so a value it does not know yet is never rejected.
"""

from __future__ import annotations

import difflib
import enum
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from airflow_provider_hilos.exceptions import HilosValidationError

TAG_NAME_MAX_LENGTH = 100
#: The largest id the API can store (its ids are 64-bit database keys); ids start at 1.
MAX_ID = 2**63 - 1
#: At most this many tags, or assignees, in one update: more is a data bug, not a CRM state.
MAX_LIST_ITEMS = 100
_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.ASCII | re.IGNORECASE)
_EXAMPLE_UUID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"


class ConversationStatus(enum.StrEnum):
    """``ConversationStatusEnum``: where a conversation is in its life cycle.

    The union of both documents: Hilos's own adds ``FLOW_PAUSED``.
    """

    CREATED = "CREATED"
    FLOW = "FLOW"
    FLOW_PAUSED = "FLOW_PAUSED"
    NEW = "NEW"
    IN_PROGRESS = "IN_PROGRESS"
    RESOLVED = "RESOLVED"
    CLOSED = "CLOSED"


class ConversationSource(enum.StrEnum):
    """``ConversationSourceEnum``: how a conversation started (read-only)."""

    INBOX = "INBOX"
    AUTO_RESPONSE = "AUTO_RESPONSE"
    API = "API"
    BROADCAST = "BROADCAST"
    FLOW = "FLOW"
    UNKNOWN = "UNKNOWN"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _no_blank_or_nul(name: str) -> str:
    if not name.strip():
        raise ValueError("blank")
    if "\x00" in name:
        raise ValueError("nul")
    return name


#: An id the API can store: a whole number from 1 to 2**63 - 1 (bools refused).
ObjectId = Annotated[StrictInt, Field(ge=1, le=MAX_ID)]
TagName = Annotated[StrictStr, Field(min_length=1, max_length=TAG_NAME_MAX_LENGTH), AfterValidator(_no_blank_or_nul)]


class UserRef(_Strict):
    """``UserBasicEdit``: a Hilos user, by id."""

    id: ObjectId


class TagRef(_Strict):
    """A tag to set on a conversation, by name (the API assigns tag ids itself)."""

    name: TagName


class ConversationUpdate(_Strict):
    """The writable part of ``PatchedConversationEdit``: what a PATCH may change.

    Every field is optional; only the fields that were given are sent. ``channel`` may be ``None``
    (the API's ``nullable``); the others may not.
    """

    status: ConversationStatus = None  # type: ignore[assignment]
    assigned: Annotated[list[UserRef], Field(max_length=MAX_LIST_ITEMS)] = None  # type: ignore[assignment]
    tags: Annotated[list[TagRef], Field(max_length=MAX_LIST_ITEMS)] = None  # type: ignore[assignment]
    assigned_team: ObjectId = None  # type: ignore[assignment]
    channel: ObjectId | None = None

    def to_body(self) -> dict[str, Any]:
        """The JSON body to send: only the fields that were given."""
        return self.model_dump(mode="json", exclude_unset=True)


#: The fields a PATCH may change, in the order the API documents them.
WRITABLE_FIELDS: tuple[str, ...] = tuple(ConversationUpdate.model_fields)
#: Fields of ``PatchedConversationEdit`` this provider refuses, and why.
REFUSED_FIELDS: dict[str, str] = {
    "created_on": "is read-only (the API sets it); remove it from the payload",
    "source": "is read-only (the API sets it); remove it from the payload",
    "id": "is the conversation's own id; pass it as conversation_id, not in the payload",
    "contact": "moving a conversation to another contact is not supported by this provider; remove it from the payload",
}
_FIELD_HINTS: dict[str, str] = {
    "status": "one of " + ", ".join(ConversationStatus),
    "assigned": 'a list of users, e.g. [{"id": 12}]',
    "tags": 'a list of tags, e.g. [{"name": "vip"}]',
    "assigned_team": "a team id (integer), e.g. 3",
    "channel": "a channel id (integer), or null",
}


@dataclass(frozen=True)
class ValidatedUpdate:
    """A conversation update that passed validation: safe to send as is.

    :param conversation_id: the canonical, lower-case UUID.
    :param body: the JSON body of the PATCH.
    """

    conversation_id: str
    body: dict[str, Any]


def show(value: Any, limit: int = 60) -> str:
    """A short, safe ``repr`` of a bad value for an error message (whatever the value is)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"<a {len(str(abs(value))) if value.bit_length() < 13_000 else 'more than 4000'}-digit number>"
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # ints past Python's digit limit, self-nested containers
        return f"<a {type(value).__name__}>"
    return text if len(text) <= limit else f"{text[: limit - 15]}...({len(text)} chars)"


def canonical_conversation_id(value: Any) -> str | None:
    """``value`` as the canonical lower-case UUID string the URL will carry, or ``None`` if it is not one.

    Built from the value's data, never from its ``__str__`` (a subclass may override it), so the
    id that was checked is the id that is sent.
    """
    if isinstance(value, uuid.UUID):
        return str(uuid.UUID(int=value.int))
    if isinstance(value, str):
        text = str.__str__(value)  # the characters themselves, whatever the subclass says
        return text.lower() if _UUID_RE.fullmatch(text) else None
    return None


def conversation_id_problem(value: Any) -> str | None:
    """Why ``value`` is not a usable conversation id, or ``None`` when it is fine."""
    if canonical_conversation_id(value) is not None:
        return None
    if not isinstance(value, str):
        return f"expected a UUID string, got {type(value).__name__} {show(value)}"
    return (
        f"{show(value)} is not a conversation UUID (expected 36 characters like {_EXAMPLE_UUID}, "
        "no spaces, slashes or other characters: it goes into the URL path)"
    )


def _payload_key_problems(payload: Mapping[Any, Any]) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for key in payload:
        if not isinstance(key, str):
            problems.append((show(key), "payload keys must be strings"))
        elif key in REFUSED_FIELDS:
            problems.append((key, REFUSED_FIELDS[key]))
        elif key not in WRITABLE_FIELDS:
            close = difflib.get_close_matches(key, WRITABLE_FIELDS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            problems.append((key, f"unknown field; {hint}fields you can update: {', '.join(WRITABLE_FIELDS)}"))
    return problems


def _location(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _pydantic_problem(error: Mapping[str, Any]) -> tuple[str, str]:
    loc = tuple(error["loc"])
    field = _location(loc)
    top = str(loc[0]) if loc else "payload"
    kind = error["type"]
    value: Any = error.get("input")
    hint = _FIELD_HINTS.get(top, "")
    if kind == "enum":
        return field, f"{show(value)} is not a valid status; use {hint}"
    if kind == "extra_forbidden":
        if loc[-1] == "id" and top == "tags":
            return field, 'tag ids are read-only (the API assigns them); send tags by name only, e.g. {"name": "vip"}'
        return field, f"unknown key; {top} must be {hint}"
    if kind == "missing":
        return field, f"is required; {top} must be {hint}"
    if kind == "string_too_long":
        return field, (f"tag name is {len(value)} characters, the API allows at most {TAG_NAME_MAX_LENGTH}; shorten it")
    if kind == "string_too_short":
        return field, "tag name is empty; give a name or remove the tag"
    if kind == "value_error" and loc[-1] == "name":
        if "blank" in error["msg"]:
            return field, "tag name is only whitespace; give a name or remove the tag"
        return field, "tag name contains a NUL character (\\x00), which the API refuses; remove it"
    if kind == "too_long":
        noun = "tags" if top == "tags" else "assignees"
        return field, f"{len(value)} {noun} in one update; at most {MAX_LIST_ITEMS} are allowed"
    if kind in {"greater_than_equal", "less_than_equal"}:
        return field, f"{show(value)} is not an id the API can store: use a whole number from 1 to {MAX_ID}"
    if kind in {"int_type", "string_type", "list_type", "model_type", "dict_type", "none_required"} or (
        kind.endswith("_type")
    ):
        got = "null" if value is None else f"{type(value).__name__} {show(value)}"
        expected = hint if len(loc) == 1 else _nested_expectation(loc)
        return field, f"expected {expected}, got {got}"
    return field, f"{error['msg']} (got {show(value)}); expected {hint}"


def _nested_expectation(loc: tuple[Any, ...]) -> str:
    top, last = loc[0], loc[-1]
    if isinstance(last, int):
        return {"assigned": 'a user object like {"id": 12}', "tags": 'a tag object like {"name": "vip"}'}.get(
            str(top), "an object"
        )
    if last == "id":
        return "a user id (integer)"
    if last == "name":
        return "a tag name (string)"
    return _FIELD_HINTS.get(str(top), "a valid value")


def update_problems(payload: Any) -> tuple[list[tuple[str, str]], ConversationUpdate | None]:
    """Every problem with a PATCH payload, and the parsed update when there are none."""
    if not isinstance(payload, Mapping):
        got = "null" if payload is None else f"{type(payload).__name__} {show(payload)}"
        return [("payload", f"must be a JSON object (dict) of fields to update, got {got}")], None
    if not payload:
        return [("payload", f"is empty: nothing to update; give at least one of {', '.join(WRITABLE_FIELDS)}")], None
    problems = _payload_key_problems(payload)
    known = {k: v for k, v in payload.items() if isinstance(k, str) and k in WRITABLE_FIELDS}
    try:
        model = ConversationUpdate.model_validate(known)
    except ValidationError as exc:
        problems += [_pydantic_problem(err) for err in exc.errors(include_url=False)]
        return problems, None
    return problems, (None if problems else model)


def validate_update(conversation_id: Any, payload: Any, *, subject: str | None = None) -> ValidatedUpdate:
    """Validate one conversation update completely, before anything is sent.

    :param conversation_id: the conversation's UUID (it goes into the URL path).
    :param payload: the fields to change, e.g. ``{"status": "CLOSED", "tags": [{"name": "vip"}]}``.
    :param subject: the first line of the error message (defaults to naming the conversation).
    :return: the canonical id and the JSON body to send.
    :raises HilosValidationError: naming every bad field, its value and the fix, all at once.
    """
    problems: list[tuple[str, str]] = []
    if id_problem := conversation_id_problem(conversation_id):
        problems.append(("conversation_id", id_problem))
    payload_problems, model = update_problems(payload)
    problems += payload_problems
    canonical = canonical_conversation_id(conversation_id)
    if problems or model is None or canonical is None:
        if subject is None:
            subject = "Invalid Hilos conversation update" + (f" for conversation {canonical}" if canonical else "")
        raise HilosValidationError(problems, subject)
    return ValidatedUpdate(conversation_id=canonical, body=model.to_body())
