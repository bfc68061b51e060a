"""The sandbox's data: seeded conversations, users, teams, tags, and the request log.

Pure Python (no web framework), so it can be unit-tested and inspected directly.
Behaves like the Django REST Framework serializer behind the real endpoints: ``partial_update``
(PATCH) and ``update`` (PUT) validate every field first and change nothing when one is invalid,
with DRF's field rules (integers from digit strings, ``CharField`` trimming, blank and NUL refused).
No input makes it fail with anything but a 400 in DRF's shape.
"""

from __future__ import annotations

import copy
import itertools
import json
import random
import re
import threading
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow_provider_hilos.sandbox.contacts import ContactBook, account_members, seeded_phone
from airflow_provider_hilos.schemas import TAG_NAME_MAX_LENGTH, ConversationSource, ConversationStatus, update_problems

FIRST_NAMES = ("Ana", "Luis", "Maria", "Jorge", "Sofia", "Diego", "Lucia", "Pedro", "Elena", "Raul", "Carmen", "Tomas")
LAST_NAMES = ("Garcia", "Lopez", "Martinez", "Hernandez", "Perez", "Sanchez")
TEAM_NAMES = ("Sales", "Support", "Billing", "Onboarding")
TAG_NAMES = ("vip", "lead", "churn-risk", "renewal", "complaint", "billing", "new-customer", "follow-up")
CHANNEL_IDS = (1, 2, 3)
ACCOUNT_ID = 1
#: The statuses seeded conversations start in: the six both documents share, in a fixed order, so that
#: the same seed gives the same data whatever statuses the API adds (``FLOW_PAUSED`` is only ever set).
SEEDED_STATUSES = ("CREATED", "FLOW", "NEW", "IN_PROGRESS", "RESOLVED", "CLOSED")
STATUSES = frozenset(status.value for status in ConversationStatus)
#: Fields PUT (a full update) requires, as ``ConversationEdit`` marks them (read-only ones aside).
PUT_REQUIRED = ("id", "contact", "assigned")

# DRF IntegerField: int(re.sub(r"\.0*\s*$", "", str(data))), i.e. digits with an optional ".0".
_DRF_INTEGER = re.compile(r"\s*[+-]?[0-9]+(?:\.0*)?\s*", re.ASCII)
_DRF_MAX_STRING_LENGTH = 1000
_MESSAGE_NAMESPACE = uuid.UUID("6f1c1a52-3c5e-4a5c-9d41-0d6a5b2f7e11")


@dataclass
class SandboxData:
    """Everything the sandbox stores. Use :meth:`seeded` to build it."""

    conversations: dict[str, dict[str, Any]] = field(default_factory=dict)
    users: dict[int, dict[str, Any]] = field(default_factory=dict)
    teams: dict[int, dict[str, Any]] = field(default_factory=dict)
    tags: dict[str, int] = field(default_factory=dict)  # name -> id
    channels: tuple[int, ...] = CHANNEL_IDS
    #: each conversation's first message, derived once (id -> ((contact, created_on), message))
    _first_messages: dict[str, tuple[tuple[str, str], dict[str, Any]]] = field(default_factory=dict, repr=False)

    @classmethod
    def seeded(cls, conversations: int = 100, seed: int = 7) -> SandboxData:
        """Deterministic data: the same ``seed`` and ``conversations`` give the same ids and fields."""
        rng = random.Random(seed)
        data = cls()
        for i, name in enumerate(FIRST_NAMES, start=1):
            data.users[i] = {
                "id": i,
                "first_name": name,
                "last_name": LAST_NAMES[i % len(LAST_NAMES)],
                "email": f"{name.lower()}@example.com",
                "account": ACCOUNT_ID,
                "profile_image": f"https://app.hilos.io/static/avatars/{i}.png",
                "date_joined": f"2024-0{1 + i % 9}-1{i % 10}T09:00:00Z",
            }
        for i, name in enumerate(TEAM_NAMES, start=1):
            data.teams[i] = {"id": i, "name": name}
        for i, name in enumerate(TAG_NAMES, start=1):
            data.tags[name] = i
        for _ in range(conversations):
            data.add_conversation(rng)
        return data

    def add_conversation(self, rng: random.Random) -> dict[str, Any]:
        """A new conversation with random fields drawn from ``rng`` (stored, and returned)."""
        conv_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        created = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(0, 365 * 24 * 3600))
        conversation = {
            "id": conv_id,
            "contact": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "status": rng.choice(SEEDED_STATUSES),
            "assigned": [{"id": uid} for uid in sorted(rng.sample(sorted(self.users), rng.randint(0, 2)))],
            "tags": [{"id": self.tags[n], "name": n} for n in sorted(rng.sample(TAG_NAMES, rng.randint(0, 3)))],
            "created_on": created.isoformat().replace("+00:00", "Z"),
            "source": rng.choice(list(ConversationSource)).value,
            "assigned_team": rng.choice(sorted(self.teams)),
            "channel": rng.choice(CHANNEL_IDS),
        }
        self.conversations[conv_id] = conversation
        return conversation

    def read_simple(self, conversation: Mapping[str, Any]) -> dict[str, Any]:
        """A conversation as the list endpoint shows it (``ConversationReadSimple``): assignees in full,
        and its first message (derived from the conversation, so the seeded data stays the same)."""
        # copies of what an update may change later (the row is serialised after the state's lock is released);
        # the values inside are strings and numbers, so one level of copying is enough (and deepcopy is slow)
        row = {
            k: conversation[k] for k in ("id", "contact", "status", "created_on", "source", "assigned_team", "channel")
        }
        row["tags"] = [dict(tag) for tag in conversation["tags"]]
        row["assigned"] = [dict(self.users[user["id"]]) for user in conversation["assigned"]]
        cached = self._first_messages.get(conversation["id"])
        if cached is None or cached[0] != (conversation["contact"], conversation["created_on"]):
            cached = (conversation["contact"], conversation["created_on"]), _first_message(conversation)
            self._first_messages[conversation["id"]] = cached
        message = cached[1]
        row["first_message"] = {**message, "sent_by": dict(message["sent_by"]), "content": dict(message["content"])}
        return row


def _first_message(conversation: Mapping[str, Any]) -> dict[str, Any]:
    """``WhatsAppMessageSimple``: the inbound message that opened the conversation."""
    at = conversation["created_on"]
    number = seeded_phone(conversation["contact"])  # the contact's own phone
    return {
        "id": str(uuid.uuid5(_MESSAGE_NAMESPACE, conversation["id"])),
        "to_number": "+5215500000000",
        "from_number": number,
        "body": "Hola, quisiera información",
        "direction": "INBOUND",
        "timestamp": at,
        "contact": conversation["contact"],
        "status": "received",
        "queued_on": at,
        "accepted_on": at,
        "sent_on": at,
        "delivered_on": at,
        "read_on": at,
        "failed_on": at,
        "provider_id": "wamid." + conversation["id"].replace("-", ""),
        "provider_error_code": "",
        "provider_error_message": "",
        "sent_by": {
            "id": 1,
            "first_name": "Ana",
            "last_name": "",
            "email": "ana@example.com",
            "profile_image": None,
            "role": "AGENT",
        },
        "is_deleted": False,
        "content": {},
        "whatsapp_template": str(uuid.UUID(int=0)),
        "content_type": "text/plain",
        "content_url": None,
        "msg_type": "text",
        "failed_attempts": 0,
        "source": "INBOUND",
    }


def payload_mismatches(payload: Mapping[str, Any], conversation: Mapping[str, Any]) -> list[str]:
    """The fields of a PATCH payload that ``conversation`` does not show as sent.

    The payload may be in any form the operators accept (plain tag names and user ids, ids as digit strings,
    ``None`` for "not given", ``CLEAR``): it is read by the provider's own rules first, so a test can say
    what it meant the way its DAG says it. Tags are compared by name (the API assigns their ids); every
    other field by value.

    :raises ValueError: the payload is not a valid update.
    """
    problems, update = update_problems(payload)
    if update is None:
        raise ValueError("not a valid update payload: " + "; ".join(f"{f}: {m}" for f, m in problems))
    wrong = []
    for name, value in update.to_body().items():
        got = conversation.get(name)
        if name == "tags":
            got, value = [tag["name"] for tag in got or []], [tag["name"] for tag in value]
        if got != value:
            wrong.append(name)
    return wrong


class DRFValidationError(Exception):
    """A 400 answer in Django REST Framework's shape: ``{"field": ["message", ...]}``."""

    def __init__(self, errors: dict[str, Any]) -> None:
        super().__init__(errors)
        self.errors = errors


class NotFound(Exception):
    """A 404 answer."""


def drf_integer(value: Any) -> int | None:
    """The integer DRF's ``IntegerField`` reads from ``value``, or ``None`` when it refuses it.

    Accepts ints and strings of ASCII digits (an optional sign, an optional ``.0``), as DRF does;
    refuses bools, other floats, and anything else.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() and abs(value) < 2**63 else None
    if isinstance(value, str) and len(value) <= _DRF_MAX_STRING_LENGTH and _DRF_INTEGER.fullmatch(value):
        return int(value.strip().split(".")[0])
    return None


def _shown(value: Any) -> str:
    """How DRF would quote an invalid input in a message, kept short and safe to build."""
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        text = value if isinstance(value, str) else repr(value) if abs(value) < 10**100 else "<a huge number>"
        return text if len(text) <= 100 else text[:100] + "..."
    return type(value).__name__


class SandboxState:
    """Thread-safe sandbox state: the data plus a capped request log.

    :param conversations: how many conversations to seed.
    :param seed: the random seed (same seed, same data).
    :param request_log_limit: how many requests the log keeps (oldest dropped first).
    :param request_log_bytes: about how many bytes the log keeps (oldest dropped first).
    :param extra_contacts: contacts seeded beyond the conversations' own (each conversation's ``contact`` is one).
    """

    def __init__(
        self,
        conversations: int = 100,
        seed: int = 7,
        request_log_limit: int = 10_000,
        request_log_bytes: int = 64 * 1024 * 1024,
        extra_contacts: int = 0,
    ) -> None:
        self.seed = seed
        self.extra_contacts = extra_contacts
        self._contacts: ContactBook | None = None
        self.seeded_count = self.conversation_count = conversations
        self._lock = threading.Lock()
        self.data = SandboxData.seeded(conversations, seed)
        self._start_activity()
        self.request_log: deque[dict[str, Any]] = deque(maxlen=request_log_limit)
        self.request_log_bytes = request_log_bytes
        self._sizes: deque[int] = deque()
        self._log_bytes = 0
        self.request_count = 0

    def reset(self) -> None:
        """Back to the seeded data, with an empty request log."""
        with self._lock:
            self.conversation_count = self.seeded_count
            self.data = SandboxData.seeded(self.seeded_count, self.seed)
            self._contacts = None
            self._start_activity()
            self.request_log.clear()
            self._sizes.clear()
            self._log_bytes = 0
            self.request_count = 0

    # -- inspection ---------------------------------------------------------------------------

    def conversation(self, conversation_id: str) -> dict[str, Any]:
        with self._lock:
            conv = self.data.conversations.get(conversation_id.lower())
            if conv is None:
                raise NotFound(conversation_id)
            return copy.deepcopy(conv)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Every conversation, by id (a deep copy)."""
        with self._lock:
            return copy.deepcopy(self.data.conversations)

    def conversation_ids(self) -> list[str]:
        with self._lock:
            return list(self.data.conversations)

    def log_request(self, entry: dict[str, Any]) -> None:
        """Keep ``entry`` (the oldest go once the log holds ``request_log_limit`` entries or ``request_log_bytes``)."""
        size = _entry_size(entry)
        with self._lock:
            self.request_count += 1
            if len(self.request_log) == self.request_log.maxlen:
                self._log_bytes -= self._sizes.popleft()
            self.request_log.append(entry)
            self._sizes.append(size)
            self._log_bytes += size
            while self._log_bytes > self.request_log_bytes and len(self.request_log) > 1:
                self.request_log.popleft()
                self._log_bytes -= self._sizes.popleft()

    def requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.request_log)

    def clear_requests(self) -> None:
        with self._lock:
            self.request_log.clear()
            self._sizes.clear()
            self._log_bytes = 0
            self.request_count = 0

    # -- contacts and account members (seeded on first use: most tests never ask) ------------

    @property
    def contacts(self) -> ContactBook:
        """The account's contacts (call with the lock held, or before serving)."""
        if self._contacts is None:
            book = ContactBook(
                (c["contact"] for c in self.data.conversations.values()),
                self.data.users,
                self.seed,
                extra=self.extra_contacts,
            )
            for conversation in self.data.conversations.values():
                book.conversations_of.setdefault(conversation["contact"], []).append(conversation["id"])
            self._contacts = book
        return self._contacts

    def list_contacts(self, *, page: int, page_size: int, search: str | None) -> tuple[int, list[dict[str, Any]]]:
        with self._lock:
            return self.contacts.page(page, page_size, search)

    def contact_detail(self, contact_id: str, *, public: bool = True) -> dict[str, Any]:
        """:raises NotFound: no such contact."""
        with self._lock:
            if contact_id.lower() not in self.contacts.contacts:
                raise NotFound(contact_id)
            return self.contacts.detail(contact_id.lower(), public=public)

    def contact_ids(self) -> list[str]:
        with self._lock:
            return list(self.contacts.contacts)

    def contact_phones(self) -> list[str]:
        with self._lock:
            book = self.contacts
            return [book.contacts[cid]["canonical_phone"] for cid in book.ordered()]

    def create_or_update_contact(self, body: Mapping[str, Any]) -> tuple[bool, dict[str, Any]]:
        with self._lock:
            return self.contacts.create_or_update(body)

    def update_contact(self, contact_id: str, body: Mapping[str, Any], *, partial: bool) -> dict[str, Any]:
        """:raises NotFound: no such contact."""
        with self._lock:
            try:
                return self.contacts.update(contact_id.lower(), body, partial=partial)
            except KeyError:
                raise NotFound(contact_id) from None

    def delete_contact(self, contact_id: str) -> None:
        """:raises NotFound: no such contact."""
        with self._lock:
            try:
                self.contacts.delete(contact_id.lower())
            except KeyError:
                raise NotFound(contact_id) from None

    def move_oldest_contacts_to_front(self, count: int) -> None:
        with self._lock:
            self.contacts.move_oldest_to_front(count)

    def account_members(self, query: Mapping[str, str]) -> list[dict[str, Any]]:
        """``AccountMemberUser`` rows, filtered as the document's ``email__iexact``, ``email__icontains`` and
        ``search`` (email, first or last name) filters do."""
        members = account_members(self.data.users, self.data.teams, self.data.channels)
        if "email__iexact" in query:
            members = [m for m in members if m["email"].lower() == query["email__iexact"].lower()]
        if "email__icontains" in query:
            members = [m for m in members if query["email__icontains"].lower() in m["email"].lower()]
        if needle := (query.get("search") or "").lower():
            members = [m for m in members if any(needle in m[k].lower() for k in ("email", "first_name", "last_name"))]
        return members

    # -- the API ------------------------------------------------------------------------------

    def _start_activity(self) -> None:
        # ids by activity, most recent last (the seeded order lists the most recent first); new ones from their own dice
        self._activity: dict[str, None] = dict.fromkeys(reversed(list(self.data.conversations)))
        self._listed: list[str] | None = None
        #: list rows already built, by id (dropped when the conversation changes): a page is served from these
        self._rows: dict[str, dict[str, Any]] = {}
        self._arrivals = random.Random(f"{self.seed}-arrivals")

    def _touch(self, conversation_id: str) -> None:
        """``conversation_id`` had activity now: it moves to the front of the list."""
        self._activity.pop(conversation_id, None)
        self._activity[conversation_id] = None
        self._listed = None
        self._rows.pop(conversation_id, None)

    def _by_activity(self) -> list[str]:
        """Every id, most recent activity first (cached until the next change)."""
        if self._listed is None:
            self._listed = list(reversed(self._activity))
        return self._listed

    def insert_conversations(self, count: int) -> list[str]:
        """``count`` new conversations arrive (at the front of the list, as new activity): the ids."""
        with self._lock:
            added = [self.data.add_conversation(self._arrivals)["id"] for _ in range(count)]
            for conversation_id in added:
                self._touch(conversation_id)
            self.conversation_count = len(self.data.conversations)
            return added

    def move_oldest_to_front(self, count: int) -> list[str]:
        """The ``count`` conversations with the oldest activity have new activity (a message came in): they move to
        the front of the list. The ids, in the order they moved."""
        with self._lock:
            moved = list(itertools.islice(iter(self._activity), count))
            for conversation_id in moved:
                self._touch(conversation_id)
            return moved

    def _row(self, conversation_id: str) -> dict[str, Any]:
        """The list row of a conversation, built once until it changes (never mutated: a change replaces it)."""
        row = self._rows.get(conversation_id)
        if row is None:
            row = self._rows[conversation_id] = self.data.read_simple(self.data.conversations[conversation_id])
        return row

    def list_conversations(
        self, *, page: int, page_size: int, contact: str | None, search: str | None
    ) -> tuple[int, list[dict[str, Any]]]:
        """``ConversationReadSimple`` rows of one page, and the total count, most recent activity first (an update
        or a new conversation moves it to the front, as on a busy account)."""
        with self._lock:
            conversations = self.data.conversations
            if not contact and not search:  # the common case, without copying every row
                ordered = self._by_activity()
                chosen_ids = ordered[(page - 1) * page_size : page * page_size]
                return len(ordered), [self._row(cid) for cid in chosen_ids]
            rows = [conversations[cid] for cid in self._by_activity()]
            if contact:
                rows = [c for c in rows if c["contact"] == contact.lower()]
            if search:
                needle = search.lower()
                rows = [
                    c
                    for c in rows
                    if needle in c["id"] or needle in c["contact"] or any(needle in t["name"] for t in c["tags"])
                ]
            total = len(rows)
            chosen = rows[(page - 1) * page_size : page * page_size]
            return total, [self.data.read_simple(c) for c in chosen]

    def partial_update(self, conversation_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Apply a PATCH the way DRF's ``partial_update`` would: validate everything, then change
        only the fields sent; read-only and unknown fields are ignored.

        :raises NotFound: no such conversation.
        :raises DRFValidationError: a field is invalid; nothing was changed.
        """
        return self.update(conversation_id, body, partial=True)

    def update(self, conversation_id: str, body: Mapping[str, Any], *, partial: bool = False) -> dict[str, Any]:
        """Apply a PATCH (``partial``) or a PUT: a PUT also requires ``id``, ``contact`` and ``assigned``.

        :raises NotFound: no such conversation.
        :raises DRFValidationError: a field is invalid or missing; nothing was changed.
        """
        with self._lock:
            conv = self.data.conversations.get(conversation_id.lower())
            if conv is None:
                raise NotFound(conversation_id)
            changes = self._validate(body, partial=partial)
            for key, value in changes.items():
                if key == "tags":
                    value = [{"id": self.data.tags.setdefault(n, len(self.data.tags) + 1), "name": n} for n in value]
                conv[key] = value
            self._touch(conv["id"])
            return copy.deepcopy(conv)

    def _validate(self, body: Mapping[str, Any], *, partial: bool) -> dict[str, Any]:
        errors: dict[str, Any] = {}
        changes: dict[str, Any] = {}
        if not partial:
            for name in PUT_REQUIRED:
                if name not in body:
                    errors[name] = ["This field is required."]
        if "status" in body:
            value = body["status"]
            if value is None:
                errors["status"] = ["This field may not be null."]
            elif not isinstance(value, str) or value not in STATUSES:
                errors["status"] = [f'"{_shown(value)}" is not a valid choice.']
            else:
                changes["status"] = value
        if "assigned" in body:
            self._check_assigned(body["assigned"], errors, changes)
        if "tags" in body:
            self._check_tags(body["tags"], errors, changes)
        for name, table in (("assigned_team", self.data.teams), ("channel", self.data.channels)):
            if name in body:
                self._check_pk(name, body[name], table, nullable=name == "channel", errors=errors, changes=changes)
        if "contact" in body:
            if (contact := _drf_uuid(body["contact"])) is None:
                errors["contact"] = ["Must be a valid UUID."]
            else:
                changes["contact"] = contact
        if errors:
            raise DRFValidationError(errors)
        return changes

    @staticmethod
    def _check_pk(
        name: str, value: Any, table: Any, *, nullable: bool, errors: dict[str, Any], changes: dict[str, Any]
    ) -> None:
        if value is None or (value == "" and nullable):
            if nullable:
                changes[name] = None
            else:
                errors[name] = ["This field may not be null."]
            return
        number = drf_integer(value)
        if number is None:
            errors[name] = ["A valid integer is required."]
        elif number not in table:
            errors[name] = [f'Invalid pk "{_shown(value)}" - object does not exist.']
        else:
            changes[name] = number

    def _check_assigned(self, value: Any, errors: dict[str, Any], changes: dict[str, Any]) -> None:
        if not isinstance(value, list):
            errors["assigned"] = {
                "non_field_errors": [f'Expected a list of items but got type "{type(value).__name__}".']
            }
            return
        item_errors: list[dict[str, Any]] = []
        ids: list[int] = []
        for item in value:
            if not isinstance(item, dict):
                item_errors.append(
                    {"non_field_errors": [f"Invalid data. Expected a dictionary, but got {type(item).__name__}."]}
                )
                continue
            if "id" not in item:
                item_errors.append({"id": ["This field is required."]})
                continue
            number = drf_integer(item["id"])
            if number is None:
                item_errors.append({"id": ["A valid integer is required."]})
            elif number not in self.data.users:
                item_errors.append({"id": [f'Invalid pk "{_shown(item["id"])}" - object does not exist.']})
            else:
                item_errors.append({})
                ids.append(number)
        if any(item_errors):
            errors["assigned"] = item_errors
        else:
            changes["assigned"] = [{"id": i} for i in dict.fromkeys(ids)]

    def _check_tags(self, value: Any, errors: dict[str, Any], changes: dict[str, Any]) -> None:
        if not isinstance(value, list):
            errors["tags"] = {"non_field_errors": [f'Expected a list of items but got type "{type(value).__name__}".']}
            return
        item_errors: list[dict[str, Any]] = []
        names: list[str] = []
        for item in value:
            if not isinstance(item, dict):
                item_errors.append(
                    {"non_field_errors": [f"Invalid data. Expected a dictionary, but got {type(item).__name__}."]}
                )
                continue
            problem, name = _tag_name(item.get("name")) if "name" in item else ("This field is required.", "")
            if problem:
                item_errors.append({"name": [problem]})
            else:
                item_errors.append({})
                names.append(name)
        if any(item_errors):
            errors["tags"] = item_errors
        else:
            changes["tags"] = list(dict.fromkeys(names))


def _drf_uuid(value: Any) -> str | None:
    """DRF ``UUIDField``: a UUID string (any of Python's spellings) or a 128-bit int, else ``None``."""
    try:
        if isinstance(value, str) and len(value) <= _DRF_MAX_STRING_LENGTH:
            return str(uuid.UUID(value))
        if isinstance(value, int) and not isinstance(value, bool):
            return str(uuid.UUID(int=value))
    except ValueError:
        pass
    return None


def _tag_name(value: Any) -> tuple[str | None, str]:
    """DRF ``CharField(max_length=100)``: ``(problem, trimmed name)``.

    Numbers are read as their text; surrounding whitespace is trimmed before the length check;
    blank names and NUL characters are refused.
    """
    if value is None:
        return "This field may not be null.", ""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return "Not a valid string.", ""
    text = value if isinstance(value, str) else _shown(value)
    name = text.strip()
    if not name:
        return "This field may not be blank.", ""
    if len(name) > TAG_NAME_MAX_LENGTH:
        return f"Ensure this field has no more than {TAG_NAME_MAX_LENGTH} characters.", ""
    if "\x00" in name:
        return "Null characters are not allowed.", ""
    return None, name


def _entry_size(entry: dict[str, Any]) -> int:
    """About how many bytes a log entry holds (its body counts as its text)."""
    body = entry.get("body")
    body_size = len(body) if isinstance(body, str) else len(json.dumps(body, default=str)) if body is not None else 0
    return 512 + body_size + sum(len(k) + len(v) for k, v in entry.get("headers", {}).items())
