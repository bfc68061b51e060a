"""The sandbox's data: seeded conversations, users, teams, tags, and the request log.

Pure Python (no web framework), so it can be unit-tested and inspected directly.
Behaves like the Django REST Framework ``partial_update`` behind the real endpoint.
"""

from __future__ import annotations

import copy
import random
import threading
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow_provider_hilos.models import TAG_NAME_MAX_LENGTH, ConversationSource, ConversationStatus

FIRST_NAMES = ("Ana", "Luis", "Maria", "Jorge", "Sofia", "Diego", "Lucia", "Pedro", "Elena", "Raul", "Carmen", "Tomas")
TEAM_NAMES = ("Sales", "Support", "Billing", "Onboarding")
TAG_NAMES = ("vip", "lead", "churn-risk", "renewal", "complaint", "billing", "new-customer", "follow-up")
CHANNEL_IDS = (1, 2, 3)


@dataclass
class SandboxData:
    """Everything the sandbox stores. Use :meth:`seeded` to build it."""

    conversations: dict[str, dict[str, Any]] = field(default_factory=dict)
    users: dict[int, dict[str, Any]] = field(default_factory=dict)
    teams: dict[int, dict[str, Any]] = field(default_factory=dict)
    tags: dict[str, int] = field(default_factory=dict)  # name -> id
    channels: tuple[int, ...] = CHANNEL_IDS

    @classmethod
    def seeded(cls, conversations: int = 100, seed: int = 7) -> SandboxData:
        """Deterministic data: the same ``seed`` and ``conversations`` give the same ids and fields."""
        rng = random.Random(seed)
        data = cls()
        for i, name in enumerate(FIRST_NAMES, start=1):
            data.users[i] = {"id": i, "first_name": name, "email": f"{name.lower()}@example.com"}
        for i, name in enumerate(TEAM_NAMES, start=1):
            data.teams[i] = {"id": i, "name": name}
        for i, name in enumerate(TAG_NAMES, start=1):
            data.tags[name] = i
        start = datetime(2025, 1, 1, tzinfo=timezone.utc)
        statuses = list(ConversationStatus)
        sources = list(ConversationSource)
        for _ in range(conversations):
            conv_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            created = start + timedelta(seconds=rng.randrange(0, 365 * 24 * 3600))
            data.conversations[conv_id] = {
                "id": conv_id,
                "contact": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "status": rng.choice(statuses).value,
                "assigned": [{"id": uid} for uid in sorted(rng.sample(sorted(data.users), rng.randint(0, 2)))],
                "tags": [{"id": data.tags[n], "name": n} for n in sorted(rng.sample(TAG_NAMES, rng.randint(0, 3)))],
                "created_on": created.isoformat().replace("+00:00", "Z"),
                "source": rng.choice(sources).value,
                "assigned_team": rng.choice(sorted(data.teams)),
                "channel": rng.choice(CHANNEL_IDS),
            }
        return data


def payload_mismatches(payload: Mapping[str, Any], conversation: Mapping[str, Any]) -> list[str]:
    """The fields of a PATCH payload that ``conversation`` does not show as sent.

    Tags are compared by name (the API assigns their ids); every other field by value.
    """
    wrong = []
    for field, value in payload.items():
        got = conversation.get(field)
        if field == "tags":
            got, value = [tag["name"] for tag in got or []], [tag["name"] for tag in value]
        if got != value:
            wrong.append(field)
    return wrong


class DRFValidationError(Exception):
    """A 400 answer in Django REST Framework's shape: ``{"field": ["message", ...]}``."""

    def __init__(self, errors: dict[str, Any]) -> None:
        super().__init__(errors)
        self.errors = errors


class NotFound(Exception):
    """A 404 answer."""


def _int_error(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return None  # DRF's IntegerField accepts numeric strings
        return "A valid integer is required."
    return None


def _as_int(value: Any) -> int:
    return int(value)


class SandboxState:
    """Thread-safe sandbox state: the data plus a capped request log.

    :param conversations: how many conversations to seed.
    :param seed: the random seed (same seed, same data).
    :param request_log_limit: how many requests the log keeps (oldest dropped first).
    """

    def __init__(self, conversations: int = 100, seed: int = 7, request_log_limit: int = 10_000) -> None:
        self.seed = seed
        self.conversation_count = conversations
        self._lock = threading.Lock()
        self.data = SandboxData.seeded(conversations, seed)
        self.request_log: deque[dict[str, Any]] = deque(maxlen=request_log_limit)
        self.request_count = 0

    def reset(self) -> None:
        """Back to the seeded data, with an empty request log."""
        with self._lock:
            self.data = SandboxData.seeded(self.conversation_count, self.seed)
            self.request_log.clear()
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
        with self._lock:
            self.request_count += 1
            self.request_log.append(entry)

    def requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.request_log)

    def clear_requests(self) -> None:
        with self._lock:
            self.request_log.clear()
            self.request_count = 0

    # -- the API ------------------------------------------------------------------------------

    def list_conversations(self, *, page: int, page_size: int, contact: str | None, search: str | None) -> tuple[int, list[dict[str, Any]]]:
        """``ConversationReadSimple`` rows of one page, and the total count."""
        with self._lock:
            rows = list(self.data.conversations.values())
            if contact:
                rows = [c for c in rows if c["contact"] == contact.lower()]
            if search:
                needle = search.lower()
                rows = [c for c in rows if needle in c["id"] or needle in c["contact"] or any(
                    needle in t["name"] for t in c["tags"])]
            total = len(rows)
            chosen = rows[(page - 1) * page_size: page * page_size]
            simple = [
                {k: copy.deepcopy(c[k]) for k in ("id", "contact", "status", "created_on", "source",
                                                  "assigned", "tags", "assigned_team", "channel")}
                for c in chosen
            ]
        return total, simple

    def partial_update(self, conversation_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Apply a PATCH the way DRF's ``partial_update`` would: validate everything, then change
        only the fields sent; read-only and unknown fields are ignored.

        :raises NotFound: no such conversation.
        :raises DRFValidationError: a field is invalid; nothing was changed.
        """
        with self._lock:
            conv = self.data.conversations.get(conversation_id.lower())
            if conv is None:
                raise NotFound(conversation_id)
            changes = self._validate(body)
            for key, value in changes.items():
                if key == "tags":
                    value = [{"id": self.data.tags.setdefault(n, len(self.data.tags) + 1), "name": n} for n in value]
                conv[key] = value
            return copy.deepcopy(conv)

    def _validate(self, body: dict[str, Any]) -> dict[str, Any]:
        errors: dict[str, Any] = {}
        changes: dict[str, Any] = {}
        if "status" in body:
            value = body["status"]
            if value is None:
                errors["status"] = ["This field may not be null."]
            elif value not in {s.value for s in ConversationStatus}:
                errors["status"] = [f'"{value}" is not a valid choice.']
            else:
                changes["status"] = value
        if "assigned" in body:
            self._check_assigned(body["assigned"], errors, changes)
        if "tags" in body:
            self._check_tags(body["tags"], errors, changes)
        if "assigned_team" in body:
            value = body["assigned_team"]
            if value is None:
                errors["assigned_team"] = ["This field may not be null."]
            elif msg := _int_error(value):
                errors["assigned_team"] = [msg]
            elif _as_int(value) not in self.data.teams:
                errors["assigned_team"] = [f'Invalid pk "{value}" - object does not exist.']
            else:
                changes["assigned_team"] = _as_int(value)
        if "channel" in body:
            value = body["channel"]
            if value is None:
                changes["channel"] = None
            elif msg := _int_error(value):
                errors["channel"] = [msg]
            elif _as_int(value) not in self.data.channels:
                errors["channel"] = [f'Invalid pk "{value}" - object does not exist.']
            else:
                changes["channel"] = _as_int(value)
        if "contact" in body:
            value = body["contact"]
            try:
                changes["contact"] = str(uuid.UUID(str(value)))
            except ValueError:
                errors["contact"] = ["Must be a valid UUID."]
        if errors:
            raise DRFValidationError(errors)
        return changes

    def _check_assigned(self, value: Any, errors: dict[str, Any], changes: dict[str, Any]) -> None:
        if not isinstance(value, list):
            errors["assigned"] = {"non_field_errors": [f'Expected a list of items but got type "{type(value).__name__}".']}
            return
        item_errors: list[dict[str, Any]] = []
        ids: list[int] = []
        for item in value:
            if not isinstance(item, dict):
                item_errors.append({"non_field_errors": ["Invalid data. Expected a dictionary, but got "
                                                         f"{type(item).__name__}."]})
            elif "id" not in item:
                item_errors.append({"id": ["This field is required."]})
            elif msg := _int_error(item["id"]):
                item_errors.append({"id": [msg]})
            elif _as_int(item["id"]) not in self.data.users:
                item_errors.append({"id": [f'Invalid pk "{item["id"]}" - object does not exist.']})
            else:
                item_errors.append({})
                ids.append(_as_int(item["id"]))
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
                item_errors.append({"non_field_errors": ["Invalid data. Expected a dictionary, but got "
                                                         f"{type(item).__name__}."]})
                continue
            name = item.get("name")
            if name is None:
                item_errors.append({"name": ["This field is required."]})
            elif not isinstance(name, str):
                item_errors.append({"name": ["Not a valid string."]})
            elif not name.strip():
                item_errors.append({"name": ["This field may not be blank."]})
            elif len(name) > TAG_NAME_MAX_LENGTH:
                item_errors.append({"name": [f"Ensure this field has no more than {TAG_NAME_MAX_LENGTH} characters."]})
            else:
                item_errors.append({})
                names.append(name.strip())
        if any(item_errors):
            errors["tags"] = item_errors
        else:
            changes["tags"] = list(dict.fromkeys(names))
