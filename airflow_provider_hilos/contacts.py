"""Contacts: a contact's key (its phone, in E.164), its fields in one normal form for the warehouse's side and
Hilos's, and the validation of what a write may send.

Hilos's own document (``tests/contract/openapi-hilos-native-contacts.json``) describes the contact endpoints:
``GET/POST /api/contact`` (a POST creates a contact, or partially updates the one with the same phone),
``GET/PATCH/PUT/DELETE /api/contact/{id}``. A write's ``meta``, ``tags`` and ``default_assignees`` are *merged* into
what the contact has unless the matching ``overwrite_*`` flag is set; ``meta`` values are kept as strings.

The normal form (what a sync compares, on both sides):

* ``first_name``, ``last_name``, ``email``, ``external_url``: a string, or ``None`` (empty);
* ``tags``: a sorted tuple of names; ``default_assignees``: a sorted tuple of user ids;
* each custom property as its own field ``meta.<name>``, its value a string (a warehouse ``42`` is ``"42"``, as
  Hilos keeps it), or :data:`ABSENT` (the property must not be there);
* ``meta`` (only when the warehouse declares the whole meta, ``meta_mode="replace"``): the sorted tuple of property
  names, so a property Hilos has and the warehouse does not is a difference.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Annotated, Any, Final

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError

from airflow_provider_hilos.conversations import UNKNOWN, _Unknown
from airflow_provider_hilos.schemas import CLEAR, MAX_ID, MAX_LIST_ITEMS, TAG_NAME_MAX_LENGTH, show

#: A contact's plain fields (a string or empty), as the document names them.
TEXT_FIELDS: Final = ("first_name", "last_name", "email", "external_url")
#: Its list fields (compared as sets).
LIST_FIELDS: Final = ("tags", "default_assignees")
#: Every field a contact sync manages, in the order plans list them (``meta.<name>`` properties after these).
CONTACT_FIELDS: Final = (*TEXT_FIELDS, *LIST_FIELDS)
#: The prefix of a custom property's field (``meta.plan``).
META_PREFIX: Final = "meta."
#: The field that holds the set of property names when the warehouse declares the whole meta.
META_KEYS: Final = "meta"
#: The longest text each field takes (the document's ``maxLength``).
MAX_LENGTHS: Final = {"first_name": 100, "last_name": 100, "email": 254, "external_url": 200, "phone": 30}
#: At most this many custom properties in one contact: more is a data bug.
MAX_META_PROPERTIES = 200
#: A property's name: letters, digits, ``_``, ``-`` and ``.`` (it becomes a key of ``meta`` and a column name).
_PROPERTY_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,99}", re.ASCII)
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


class _Absent:
    """A custom property that must not be there (the warehouse says ``-``, or ``meta_mode="replace"`` leaves it
    out): not the same as an empty string."""

    _instance: _Absent | None = None

    def __new__(cls) -> _Absent:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ABSENT"


#: A custom property that must not exist.
ABSENT: Final = _Absent()

#: One field's value in the contact's normal form.
ContactValue = str | tuple[Any, ...] | None | _Absent


def phone_problem(value: Any, default_region: str | None) -> str | None:
    """Why ``value`` is not a phone this sync can key a contact by, or ``None`` (see :func:`canonical_phone`)."""
    try:
        canonical_phone(value, default_region)
    except ValueError as exc:
        return str(exc)
    return None


def canonical_phone(value: Any, default_region: str | None = None) -> str:
    """A phone number in E.164 (``+525512345678``), the one key of a contact: ``"+52 55 1234 5678"``,
    ``"(55) 1234-5678"`` with ``default_region="MX"`` and ``525512345678`` are one contact.

    Parsed by Google's libphonenumber (the ``phonenumbers`` port); a number is accepted when the library can parse
    it and its length is possible for its country (validity by number ranges is not required: the library's ranges
    lag new numbers). Mexico's old mobile spelling ``+52 1 55 1234 5678`` (still WhatsApp's own ``wa_id`` for
    Mexican numbers) is the same contact as ``+52 55 1234 5678``: the ``1`` is dropped, as Mexico's 2019 dialling plan
    does.

    :param value: the phone as the warehouse has it (text, or a number of digits). Without ``default_region``, digits
        alone, 11 or more (``525512345678``, WhatsApp's ``wa_id``), are read as the country code and the number; any
        other spelling needs its ``+``.
    :param default_region: the country (ISO 3166 code: ``"MX"``, ``"US"``) of numbers written without a ``+``
        country code; ``None``: every number must start with ``+``.
    :raises ValueError: what is wrong with it (never more of the value than its length).
    """
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"expected a phone number (text), got {type(value).__name__}")
    text = str(value).strip()
    if not text:
        raise ValueError("is empty; every contact needs its phone number")
    if len(text) > 40:
        raise ValueError(f"is {len(text)} characters long, longer than any phone number")
    if default_region is None and text.isdigit() and len(text.lstrip("0")) >= 11:
        text = "+" + text.lstrip("0")  # only digits, as many as a country code and a number: WhatsApp's wa_id
    try:
        number = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException as exc:
        if exc.error_type == phonenumbers.NumberParseException.INVALID_COUNTRY_CODE:
            hint = (
                "it has no country code: write it as +<country code><number>, or set default_region (e.g. 'MX')"
                if default_region is None
                else f"its country code is unknown (default_region={default_region!r})"
            )
            raise ValueError(f"{show(value)} is not a phone number this sync can read: {hint}") from None
        raise ValueError(f"{show(value)} is not a phone number ({_parse_error(exc)})") from None
    national = str(number.national_number)
    if number.country_code == 52 and len(national) == 11 and national.startswith("1"):
        number.national_number = int(national[1:])  # +52 1 <10 digits>: a Mexican mobile, spelled the old way
    if not phonenumbers.is_possible_number(number):
        raise ValueError(
            f"{show(value)} is not a possible phone number for its country (+{number.country_code}): check its "
            "digits" + ("" if default_region else ", or set default_region for numbers written without +")
        )
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _parse_error(exc: phonenumbers.NumberParseException) -> str:
    return {
        phonenumbers.NumberParseException.NOT_A_NUMBER: "no digits a number is made of",
        phonenumbers.NumberParseException.TOO_SHORT_NSN: "too short",
        phonenumbers.NumberParseException.TOO_SHORT_AFTER_IDD: "too short",
        phonenumbers.NumberParseException.TOO_LONG: "too long",
    }.get(exc.error_type, "unreadable")


def region_problem(region: Any) -> str | None:
    """What is wrong with a ``default_region`` (an ISO 3166 country code phonenumbers knows), or ``None``."""
    if region is None:
        return None
    if not isinstance(region, str) or region.upper() not in phonenumbers.SUPPORTED_REGIONS:
        return f"{show(region)} is not a country code the phone library knows; give an ISO 3166 code such as 'MX'"
    return None


def meta_text(value: Any) -> str:
    """A custom property's value as Hilos keeps it (a string), written the same way whatever the warehouse's type:
    ``42`` and ``42.0`` and ``Decimal("42.00")`` are ``"42"``, ``True`` is ``"true"``, a date is ISO 8601."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, Decimal):
        if value.is_finite() and value == value.to_integral_value():
            return str(int(value))
        return format(value.normalize(), "f")
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    return str(value)


def property_name_problem(name: Any) -> str | None:
    """What is wrong with a custom property's name, or ``None``."""
    if not isinstance(name, str) or not _PROPERTY_NAME.fullmatch(name):
        return (
            f"{show(name)} is not a custom property name (letters, digits, _, - and ., at most 100 characters, "
            "starting with a letter, a digit or _)"
        )
    return None


# -- what Hilos shows: a list row (ContactListReadPublic) -----------------------------------------------------


def listed_key(row: Mapping[str, Any]) -> str | None:
    """The E.164 phone a list row is keyed by: its ``canonical_phone`` (else its ``phone``), or ``None`` when it has
    no phone this sync can read (such a row is never matched to a desired contact)."""
    for name in ("canonical_phone", "phone"):
        value = row.get(name)
        if isinstance(value, str) and value.strip():
            try:
                return canonical_phone(value, None)
            except ValueError:
                continue
    return None


def listed_fields(row: Mapping[str, Any]) -> dict[str, ContactValue | _Unknown]:
    """The fields a list row shows, in the normal form; a field it lacks, or shows in a shape that can't be read,
    is :data:`~airflow_provider_hilos.conversations.UNKNOWN` (``default_assignees`` is never in a list row: the
    sync compares it with what the last sync applied). ``meta.<name>`` for each property shown, and ``meta`` (the
    sorted names) when the row shows a meta object; a row without one makes every property unknown
    (:func:`meta_value` says so)."""
    fields: dict[str, ContactValue | _Unknown] = {}
    for name in TEXT_FIELDS:
        if name not in row:
            fields[name] = UNKNOWN
        else:
            value = row[name]
            fields[name] = None if value is None or value == "" else (value if isinstance(value, str) else UNKNOWN)
    fields["tags"] = _tag_names(row.get("tags"))
    fields["default_assignees"] = UNKNOWN
    meta = row.get("meta")
    if isinstance(meta, Mapping):
        for name, value in meta.items():
            fields[META_PREFIX + str(name)] = meta_text(value)
        fields[META_KEYS] = tuple(sorted(str(name) for name in meta))
    else:
        fields[META_KEYS] = UNKNOWN
    return fields


def meta_value(current: Mapping[str, Any], field: str) -> ContactValue | _Unknown:
    """What Hilos holds for a ``meta.<name>`` field: the value, :data:`ABSENT` when the row showed a meta object
    without it, :data:`~airflow_provider_hilos.conversations.UNKNOWN` when the row showed no meta."""
    if field in current:
        value: ContactValue | _Unknown = current[field]
        return value
    return UNKNOWN if current.get(META_KEYS, UNKNOWN) is UNKNOWN else ABSENT


def _tag_names(value: Any) -> tuple[str, ...] | _Unknown:
    if not isinstance(value, list):
        return UNKNOWN
    names = set()
    for tag in value:
        name = tag.get("name") if isinstance(tag, Mapping) else tag
        if not isinstance(name, str) or not name.strip():
            return UNKNOWN
        names.add(name.strip())
    return tuple(sorted(names))


def detail_assignees(detail: Mapping[str, Any]) -> tuple[int, ...] | _Unknown:
    """The default assignees a contact's detail (``GET /api/contact/{id}``) shows, as sorted ids."""
    value = detail.get("default_assignees")
    if not isinstance(value, list):
        return UNKNOWN
    ids = []
    for user in value:
        number = user.get("id") if isinstance(user, Mapping) else user
        if isinstance(number, bool) or not isinstance(number, int):
            return UNKNOWN
        ids.append(number)
    return tuple(sorted(set(ids)))


# -- what a write may send: PatchedContactEditPublic --------------------------------------------------------


class _TagRef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Annotated[StrictStr, Field(min_length=1, max_length=TAG_NAME_MAX_LENGTH)]


class ContactWriteModel(BaseModel):
    """The writable part of ``PatchedContactEditPublic`` a sync sends (every field optional; ``None`` clears a text
    field, which the document allows: they are ``nullable``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    phone: Annotated[StrictStr, Field(min_length=1, max_length=MAX_LENGTHS["phone"])] | None = None
    first_name: Annotated[StrictStr, Field(max_length=MAX_LENGTHS["first_name"])] | None = None
    last_name: Annotated[StrictStr, Field(max_length=MAX_LENGTHS["last_name"])] | None = None
    email: Annotated[StrictStr, Field(max_length=MAX_LENGTHS["email"])] | None = None
    external_url: Annotated[StrictStr, Field(max_length=MAX_LENGTHS["external_url"])] | None = None
    meta: dict[str, StrictStr] | None = None
    tags: Annotated[list[_TagRef], Field(max_length=MAX_LIST_ITEMS)] | None = None
    default_assignees: Annotated[list[Annotated[int, Field(ge=1, le=MAX_ID)]], Field(max_length=MAX_LIST_ITEMS)] | (
        None
    ) = None
    overwrite_tags: bool | None = None
    overwrite_meta: bool | None = None
    overwrite_default_assignees: bool | None = None


def write_problems(body: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Every problem of a contact write's body (the schema's rules, plus an email and a URL that look like one)."""
    problems: list[tuple[str, str]] = []
    try:
        ContactWriteModel.model_validate(body)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            loc = ".".join(str(part) for part in error["loc"])
            kind = error["type"]
            if kind == "string_too_long":
                top = str(error["loc"][0])
                limit = TAG_NAME_MAX_LENGTH if top == "tags" else MAX_LENGTHS.get(top, 0)
                problems.append((loc, f"is {len(error['input'])} characters, the API allows at most {limit}"))
            elif kind == "too_long":
                problems.append((loc, f"{len(error['input'])} items in one write; at most {MAX_LIST_ITEMS}"))
            elif kind in ("greater_than_equal", "less_than_equal"):
                problems.append((loc, f"{show(error['input'])} is not a user id (a whole number from 1)"))
            elif kind == "string_too_short":
                problems.append((loc, "is empty"))
            else:
                problems.append((loc, f"{error['msg']} (got {show(error.get('input'))})"))
    email = body.get("email")
    if isinstance(email, str) and not _EMAIL.fullmatch(email):
        problems.append(("email", f"{show(email)} is not an email address"))
    url = body.get("external_url")
    if isinstance(url, str) and not url.startswith(("https://", "http://")):
        problems.append(("external_url", f"{show(url)} is not an http(s) URL"))
    meta = body.get("meta")
    if isinstance(meta, Mapping):
        if len(meta) > MAX_META_PROPERTIES:
            problems.append(("meta", f"{len(meta)} custom properties; at most {MAX_META_PROPERTIES}"))
        for name in meta:
            if problem := property_name_problem(name):
                problems.append((f"meta.{str(name)[:40]}", problem))
    return problems


def clear_value(value: Any) -> bool:
    """Whether a cell says "must be empty" (``-``, or an empty string)."""
    return isinstance(value, str) and value.strip() in ("", CLEAR)
