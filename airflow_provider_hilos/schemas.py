"""The Hilos conversation schemas, modelled once.

Mirrors ``PatchedConversationEdit`` / ``ConversationEdit`` of the two published OpenAPI descriptions
of the API (``tests/contract/openapi-hilos-native-conversation.json``, Hilos's own, and
``tests/contract/openapi-conversation-update.json``, ActiveCampaign's copy). The hook, the operator
and the batch path all validate through :func:`validate_update`, so a rule lives in one place.
Requests accept the union of both documents. Answers are not modelled here: the provider passes them
on as the API sent them, so a value it does not know yet is never rejected.
"""

from __future__ import annotations

import ast
import difflib
import enum
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
)

from airflow_provider_hilos.exceptions import HilosValidationError

TAG_NAME_MAX_LENGTH = 100
#: The largest id the API can store (its ids are 64-bit database keys); ids start at 1.
MAX_ID = 2**63 - 1
#: At most this many tags, or assignees, in one update: more is a data bug, not a CRM state.
MAX_LIST_ITEMS = 100
#: The explicit "clear this field" value: ``channel=CLEAR`` sends ``"channel": null``; ``tags=CLEAR`` and
#: ``assigned=CLEAR`` send an empty list (as ``[]`` does). ``None`` never clears: it means "leave unchanged".
#: In a CSV change set, a cell holding ``-`` is this value.
CLEAR = "-"
_DIGITS = re.compile(r"\s*[0-9]{1,30}\s*", re.ASCII)
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


def _no_nul(name: str) -> str:
    if "\x00" in name:
        raise ValueError("nul")
    return name


def _id_from_digits(value: Any) -> Any:
    """A string of ASCII digits is read as the number it spells (a template renders ``3`` as ``"3"``), as the
    API's own framework does; anything else is left for the type check to refuse."""
    return int(value) if isinstance(value, str) and _DIGITS.fullmatch(value) else value


def _trimmed(value: Any) -> Any:
    """Tag names lose surrounding whitespace, as the API trims them (its length limit counts what is left)."""
    return value.strip() if isinstance(value, str) else value


def _as_reference(key: str) -> Any:
    """A plain value where an object is expected becomes that object: ``"vip"`` -> ``{"name": "vip"}``,
    ``5`` or ``"5"`` -> ``{"id": 5}``. Other values are left for the type check to refuse."""

    def wrap(value: Any) -> Any:
        plain = isinstance(value, str) or (key == "id" and isinstance(value, int) and not isinstance(value, bool))
        return {key: value} if plain else value

    return wrap


def _clear_to(empty: Any) -> Any:
    """``CLEAR`` (``"-"``) means "empty this field": ``[]`` for a list, ``None`` (null) for the channel."""

    def clear(value: Any) -> Any:
        return empty if isinstance(value, str) and value == CLEAR else value

    return clear


#: An id the API can store: a whole number from 1 to 2**63 - 1 (bools refused), or a string of its digits.
ObjectId = Annotated[StrictInt, Field(ge=1, le=MAX_ID), BeforeValidator(_id_from_digits)]
TagName = Annotated[
    StrictStr, Field(min_length=1, max_length=TAG_NAME_MAX_LENGTH), AfterValidator(_no_nul), BeforeValidator(_trimmed)
]


class UserRef(_Strict):
    """``UserBasicEdit``: a Hilos user, by id (``5``, ``"5"`` and ``{"id": 5}`` all mean user 5)."""

    id: ObjectId


class TagRef(_Strict):
    """A tag to set on a conversation, by name (``"vip"`` and ``{"name": "vip"}`` both work; the API assigns
    tag ids itself)."""

    name: TagName


UserRefs = Annotated[
    list[Annotated[UserRef, BeforeValidator(_as_reference("id"))]],
    Field(max_length=MAX_LIST_ITEMS),
    BeforeValidator(_clear_to([])),
]
TagRefs = Annotated[
    list[Annotated[TagRef, BeforeValidator(_as_reference("name"))]],
    Field(max_length=MAX_LIST_ITEMS),
    BeforeValidator(_clear_to([])),
]


class ConversationUpdate(_Strict):
    """The writable part of ``PatchedConversationEdit``: what a PATCH may change.

    Every field is optional; only the fields that were given are sent (a field given as ``None`` is not
    given). ``channel=CLEAR`` sends ``null`` (the API's ``nullable``); the others cannot be null.
    """

    status: ConversationStatus = None  # type: ignore[assignment]
    assigned: UserRefs = None  # type: ignore[assignment]
    tags: TagRefs = None  # type: ignore[assignment]
    assigned_team: ObjectId = None  # type: ignore[assignment]
    channel: Annotated[ObjectId | None, BeforeValidator(_clear_to(None))] = None

    def to_body(self) -> dict[str, Any]:
        """The JSON body to send: only the fields that were given, in the API's shapes, each tag and user
        once (the first time it appears), as the API itself keeps them."""
        body = self.model_dump(mode="json", exclude_unset=True)
        for field, key in (("tags", "name"), ("assigned", "id")):
            if field in body:
                first: dict[Any, Any] = {}
                for item in body[field]:
                    first.setdefault(item[key], item)
                body[field] = list(first.values())
        return body


#: The fields a PATCH may change, in the order the API documents them: the one list every path derives its
#: fields from (operator arguments, CSV columns, the sync's managed fields).
WRITABLE_FIELDS: tuple[str, ...] = tuple(ConversationUpdate.model_fields)
#: The writable fields that hold a list (tag names, user ids): a whole list is sent, the API replaces it.
LIST_FIELDS: tuple[str, ...] = tuple(
    name for name, info in ConversationUpdate.model_fields.items() if get_origin(info.annotation) is list
)
#: Fields of ``PatchedConversationEdit`` this provider refuses, and why.
REFUSED_FIELDS: dict[str, str] = {
    "created_on": "is read-only (the API sets it); remove it from the payload",
    "source": "is read-only (the API sets it); remove it from the payload",
    "id": "is the conversation's own id; pass it as conversation_id, not in the payload",
    "contact": "moving a conversation to another contact is not supported by this provider; remove it from the payload",
}
_FIELD_HINTS: dict[str, str] = {
    "status": "one of " + ", ".join(ConversationStatus),
    "assigned": 'a list of user ids, e.g. [12, 14] or [{"id": 12}]',
    "tags": 'a list of tag names, e.g. ["vip", "renewal"] or [{"name": "vip"}]',
    "assigned_team": "a team id (a whole number), e.g. 3",
    "channel": f"a channel id (a whole number), or {CLEAR!r} to clear it",
}
_LIST_EXAMPLES: dict[str, str] = {
    "tags": 'a list of tag names, e.g. ["vip", "renewal"]',
    "assigned": "a list of user ids, e.g. [12, 14]",
}
_NATIVE_HINT = (
    "; a template renders text unless the DAG sets render_template_as_native_obj=True (a string of digits "
    "like '3' is read as an id; a list must be rendered as JSON, e.g. {{ params.tags | tojson }})"
)


@dataclass(frozen=True)
class ValidatedUpdate:
    """A conversation update that passed validation: safe to send as is.

    :param conversation_id: the canonical, lower-case UUID.
    :param body: the JSON body of the PATCH.
    """

    conversation_id: str
    body: dict[str, Any]

    @property
    def key(self) -> str:
        """What a batch's report and checkpoint name it by: the conversation's id."""
        return self.conversation_id

    @property
    def digest_body(self) -> dict[str, Any]:
        """What a checkpoint's fingerprint covers (the body: the same body lands the same)."""
        return self.body


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


def id_key(conversation_id: str) -> int:
    """A compact key of a conversation id: its UUID's 128-bit number (``6513270E-...`` and ``6513270e-...`` are one
    key). For ids already in the canonical 8-4-4-4-12 form (every validated id is); faster than ``uuid.UUID``.

    :raises ValueError: not hexadecimal.
    """
    return int(conversation_id.replace("-", ""), 16)


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


def parse_rendered(value: str | bytes, *, field: str, expected: type, example: str) -> Any:
    """A value a template rendered as text, read back: JSON (``{{ x | tojson }}``), or the Python repr a
    template gives a dict or list without ``render_template_as_native_obj`` (read as a literal: nothing runs).

    :param value: the rendered text.
    :param field: the argument it came from, named in the error.
    :param expected: ``dict`` or ``list``.
    :param example: what a good value looks like, for the error.
    :raises HilosValidationError: it is neither, or not of the ``expected`` type.
    """
    text = value.decode() if isinstance(value, bytes) else value
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError) as exc:
        reason = (
            f"{exc.msg} at character {exc.pos}"
            if isinstance(exc, json.JSONDecodeError)
            else ("nested too deeply" if isinstance(exc, RecursionError) else str(exc))
        )
        try:
            parsed = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            kind = "a JSON object" if expected is dict else "JSON"
            raise HilosValidationError(
                [
                    (
                        field,
                        f"is a string but not {kind} ({reason}): {show(text)}. Pass {example}, an XComArg "
                        f"(upstream_task.output), or a template that renders JSON, e.g. {{{{ ... | tojson }}}}; "
                        "or set render_template_as_native_obj=True on the DAG",
                    )
                ],
                f"Invalid Hilos {field}",
            ) from None
    if not isinstance(parsed, expected):
        raise HilosValidationError(
            [(field, f"rendered to a {type(parsed).__name__}, {show(parsed)}; it must be {example}")],
            f"Invalid Hilos {field}",
        )
    return parsed


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
    if value == CLEAR and len(loc) == 1 and top != "channel":
        return field, f"cannot be cleared ({CLEAR!r} clears the channel, or empties tags and assigned); leave it out"
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
        return field, "tag name is empty (or only whitespace); give a name or remove the tag"
    if kind == "value_error" and loc[-1] == "name":
        return field, "tag name contains a NUL character (\\x00), which the API refuses; remove it"
    if kind == "too_long":
        noun = "tags" if top == "tags" else "assignees"
        return field, f"{len(value)} {noun} in one update; at most {MAX_LIST_ITEMS} are allowed"
    if kind in {"greater_than_equal", "less_than_equal"}:
        return field, f"{show(value)} is not an id the API can store: use a whole number from 1 to {MAX_ID}"
    if kind.endswith("_type") or kind == "none_required":
        got = "null" if value is None else f"{type(value).__name__} {show(value)}"
        expected = hint if len(loc) == 1 else _nested_expectation(loc)
        return field, f"expected {expected}, got {got}" + (_NATIVE_HINT if isinstance(value, str) else "")
    return field, f"{error['msg']} (got {show(value)}); expected {hint}"


def _nested_expectation(loc: tuple[Any, ...]) -> str:
    top, last = loc[0], loc[-1]
    if isinstance(last, int):
        return {
            "assigned": 'a user id like 12 (or {"id": 12})',
            "tags": 'a tag name like "vip" (or {"name": "vip"})',
        }.get(str(top), "an object")
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
    problems = _payload_key_problems(payload)
    # None means "not given", on every path (operator arguments, payloads, batch rows, SQL NULLs): CLEAR clears
    known = {k: v for k, v in payload.items() if isinstance(k, str) and k in WRITABLE_FIELDS and v is not None}
    for field in LIST_FIELDS:
        value = known.get(field)
        if isinstance(value, (str, bytes)) and value != CLEAR:
            # a list a template rendered as text ('["vip"]', "['vip']"): read back, on every path alike
            try:
                known[field] = parse_rendered(value, field=field, expected=list, example=_LIST_EXAMPLES[field])
            except HilosValidationError as exc:
                problems += exc.problems
                known.pop(field)
    if not known and not problems:
        given = (
            f"every field given is None (None leaves a field unchanged; {CLEAR!r} clears tags, assigned or channel)"
            if payload
            else "is empty (a field given as None counts as not given)"
        )
        return [("payload", f"{given}: nothing to update; give at least one of {', '.join(WRITABLE_FIELDS)}")], None
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
