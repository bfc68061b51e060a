"""The sandbox's contacts and account members, as Hilos's own document describes them
(``tests/contract/openapi-hilos-native-contacts.json``).

* Each seeded conversation's ``contact`` is a seeded contact (the same id); ``extra`` contacts have no conversation
  (an account holding many more contacts than chats).
* ``POST /api/contact`` creates a contact, or partially updates the one with the same phone (compared in E.164).
  Every write *merges* ``meta`` (values kept as strings), ``tags`` and ``default_assignees`` into what the contact
  has, unless the matching ``overwrite_*`` flag is set; a ``PUT`` replaces the ones it sends.
* The list is paginated like DRF's and ordered by last update, most recent first (a write moves a contact to the
  front, as on a busy account); ``search`` matches the phone, names, email and external URL.
* Fields are validated as DRF would: max lengths, an email and a URL that look like one, a phone the phone library
  can read, user ids that exist; nothing is changed by a write with an invalid field.

Pure Python (no web framework); the web routes are in :mod:`~airflow_provider_hilos.sandbox.app`.
"""

from __future__ import annotations

import copy
import random
import re
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow_provider_hilos.contacts import MAX_LENGTHS, canonical_phone

CONTACT_TAG_NAMES = ("customer", "lead", "vip", "churned", "newsletter", "b2b", "trial", "partner")
PLANS = ("free", "starter", "pro", "enterprise")
SOURCES = ("website", "api", "import", "inbox")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_URL = re.compile(r"https?://[^\s/$.?#][^\s]*", re.IGNORECASE)


class ContactInvalid(Exception):
    """A 400 in DRF's shape: ``{"field": ["message", ...]}``."""

    def __init__(self, errors: dict[str, Any]) -> None:
        super().__init__(errors)
        self.errors = errors


def seeded_phone(contact_id: str, taken: Mapping[str, Any] | None = None) -> str:
    """The phone a seeded contact has: a Mexico City number derived from its id (E.164), or, when ``taken`` already
    holds it (two ids, one number: a few in 50,000), the next free one, as Hilos keeps one contact per phone."""
    number = uuid.UUID(contact_id).int % 10**8
    while taken is not None and f"+5255{number:08d}" in taken:
        number = (number + 1) % 10**8
    return f"+5255{number:08d}"


class ContactBook:
    """The contacts of the sandbox's account.

    :param contact_ids: the seeded conversations' contacts, in their order.
    :param users: the account's users (id -> user), for ``default_assignees``.
    :param seed: the data's seed.
    :param extra: contacts to seed beyond the conversations' (no conversation of their own).
    """

    def __init__(self, contact_ids: Iterable[str], users: Mapping[int, Mapping[str, Any]], seed: int, extra: int = 0):
        self.users = users
        self.contacts: dict[str, dict[str, Any]] = {}
        self.by_phone: dict[str, str] = {}
        self.tag_ids: dict[str, int] = {name: i for i, name in enumerate(CONTACT_TAG_NAMES, start=1)}
        #: ids by last update, most recent last (the list shows the most recent first)
        self.activity: dict[str, None] = {}
        self._listed: list[str] | None = None
        self._rows: dict[str, dict[str, Any]] = {}
        self.conversations_of: dict[str, list[str]] = {}
        rng = random.Random(f"{seed}-contacts")
        ids = list(dict.fromkeys(contact_ids))
        extra_rng = random.Random(f"{seed}-extra-contacts")
        ids += [str(uuid.UUID(int=extra_rng.getrandbits(128), version=4)) for _ in range(extra)]
        created = datetime(2024, 6, 1, tzinfo=UTC)
        for number, cid in enumerate(ids):
            phone = seeded_phone(cid, self.by_phone)
            first = ("Ana", "Luis", "Maria", "Jorge", "Sofia", "Diego", "Lucia", "Pedro")[rng.randrange(8)]
            last = ("Garcia", "Lopez", "Martinez", "Hernandez", "Perez", "Sanchez")[rng.randrange(6)]
            when = (created + timedelta(minutes=number)).isoformat().replace("+00:00", "Z")
            contact: dict[str, Any] = {
                "id": cid,
                "phone": phone,
                "canonical_phone": phone,
                "first_name": first,
                "last_name": last,
                "email": f"{first.lower()}.{last.lower()}.{number}@example.org" if rng.random() < 0.8 else None,
                "external_url": f"https://crm.example.org/people/{number}" if rng.random() < 0.5 else None,
                "meta": {"plan": rng.choice(PLANS), "ltv": str(rng.randrange(0, 5000))},
                "tags": [
                    {"id": self.tag_ids[n], "name": n} for n in sorted(rng.sample(CONTACT_TAG_NAMES, rng.randint(0, 2)))
                ],
                "default_assignees": sorted(rng.sample(sorted(users), rng.randint(0, 1))) if users else [],
                "source": rng.choice(SOURCES),
                "created_by": 1,
                "created_on": when,
                "last_updated_on": when,
            }
            self.contacts[cid] = contact
            self.by_phone[contact["canonical_phone"]] = cid
        self.activity = dict.fromkeys(reversed(ids))  # the first seeded is the most recently updated

    # -- reading --

    def __len__(self) -> int:
        return len(self.contacts)

    def touch(self, cid: str) -> None:
        self.activity.pop(cid, None)
        self.activity[cid] = None
        self._listed = None
        self._rows.pop(cid, None)

    def ordered(self) -> list[str]:
        if self._listed is None:
            self._listed = list(reversed(self.activity))
        return self._listed

    def move_oldest_to_front(self, count: int) -> None:
        for cid in list(self.activity)[:count]:
            self.touch(cid)

    def list_row(self, cid: str) -> dict[str, Any]:
        """``ContactListReadPublic`` (built once until the contact changes; never mutated)."""
        row = self._rows.get(cid)
        if row is None:
            contact = self.contacts[cid]
            row = {k: contact[k] for k in ("id", "phone", "canonical_phone", "first_name", "last_name", "email")}
            row.update(
                meta=dict(contact["meta"]),
                external_url=contact["external_url"],
                tags=[dict(tag) for tag in contact["tags"]],
                source=contact["source"],
                created_by=contact["created_by"],
                created_on=contact["created_on"],
                last_updated_on=contact["last_updated_on"],
            )
            self._rows[cid] = row
        return row

    def page(self, page: int, page_size: int, search: str | None) -> tuple[int, list[dict[str, Any]]]:
        ids = self.ordered()
        if search:
            needle = search.lower()
            ids = [cid for cid in ids if any(needle in str(v).lower() for v in self._searchable(cid))]
        return len(ids), [self.list_row(cid) for cid in ids[(page - 1) * page_size : page * page_size]]

    def _searchable(self, cid: str) -> list[Any]:
        contact = self.contacts[cid]
        return [
            contact[k] or "" for k in ("phone", "canonical_phone", "first_name", "last_name", "email", "external_url")
        ]

    def detail(self, cid: str, *, public: bool = True) -> dict[str, Any]:
        """``ContactDetailReadPublic`` (``public=False``: ``ContactDetailRead``, with notes, as ``GET`` shows)."""
        contact = self.contacts[cid]
        out = {k: copy.deepcopy(v) for k, v in contact.items() if k != "default_assignees"}
        out["default_assignees"] = [self._user_basic(uid) for uid in contact["default_assignees"]]
        out["inbox_contacts"] = [
            {"id": conversation, "url": f"https://app.hilos.io/inbox/conversation/{conversation}", "channel": 1}
            for conversation in self.conversations_of.get(cid, [])
        ]
        out["default_conversation_url"] = f"https://app.hilos.io/inbox/contact/{cid}"
        if not public:
            out.update(notes=[], is_deleted=False, contact_import=None, default_channel=None)
        return out

    def _user_basic(self, uid: int) -> dict[str, Any]:
        user = self.users[uid]
        return {
            k: user[k] for k in ("id", "first_name", "last_name", "email", "account", "profile_image", "date_joined")
        }

    # -- writing --

    def create_or_update(self, body: Mapping[str, Any]) -> tuple[bool, dict[str, Any]]:
        """``POST``: a contact with the body's phone is partially updated, else one is created. ``(created, detail)``.

        :raises ContactInvalid: a field is invalid (nothing was changed).
        """
        changes, phone = self._validate(body, require_phone=True)
        assert phone is not None
        existing = self.by_phone.get(phone)
        if existing is not None:
            self._apply(existing, changes, replace=False)
            return False, self.detail(existing)
        cid = str(uuid.uuid4())
        now = _now()
        self.contacts[cid] = {
            "id": cid,
            "phone": changes.pop("phone"),
            "canonical_phone": phone,
            "first_name": None,
            "last_name": None,
            "email": None,
            "external_url": None,
            "meta": {},
            "tags": [],
            "default_assignees": [],
            "source": "website",
            "created_by": 1,
            "created_on": now,
            "last_updated_on": now,
        }
        self.by_phone[phone] = cid
        self._apply(cid, changes, replace=True)
        return True, self.detail(cid)

    def update(self, cid: str, body: Mapping[str, Any], *, partial: bool) -> dict[str, Any]:
        """``PATCH`` (``partial``: merges) or ``PUT`` (replaces what it sends; needs the phone).

        :raises KeyError: no such contact.
        :raises ContactInvalid: a field is invalid, or the phone is another contact's.
        """
        if cid not in self.contacts:
            raise KeyError(cid)
        changes, phone = self._validate(body, require_phone=not partial)
        if phone is not None and self.by_phone.get(phone, cid) != cid:
            raise ContactInvalid({"phone": ["contact with this phone already exists."]})
        self._apply(cid, changes, replace=not partial)
        return self.detail(cid)

    def delete(self, cid: str) -> None:
        """``DELETE``: the contact is gone from the list and the detail (its conversations stay).

        :raises KeyError: no such contact.
        """
        contact = self.contacts.pop(cid)
        self.by_phone.pop(contact["canonical_phone"], None)
        self.activity.pop(cid, None)
        self._listed = None
        self._rows.pop(cid, None)

    def _apply(self, cid: str, changes: dict[str, Any], *, replace: bool) -> None:
        contact = self.contacts[cid]
        flags = {name: changes.pop(f"overwrite_{name}", False) for name in ("meta", "tags", "default_assignees")}
        if "phone" in changes:
            phone = changes.pop("phone")
            self.by_phone.pop(contact["canonical_phone"], None)
            contact["phone"], contact["canonical_phone"] = phone, canonical_phone(phone)
            self.by_phone[contact["canonical_phone"]] = cid
        for name in ("first_name", "last_name", "email", "external_url", "source"):
            if name in changes:
                contact[name] = changes[name]
        if "meta" in changes:
            given = {str(k): _as_text(v) for k, v in changes["meta"].items()}
            contact["meta"] = given if (replace or flags["meta"]) else {**contact["meta"], **given}
        if "tags" in changes:
            names = changes["tags"]
            for name in names:
                self.tag_ids.setdefault(name, len(self.tag_ids) + 1)
            if replace or flags["tags"]:
                kept = list(dict.fromkeys(names))
            else:
                kept = list(dict.fromkeys([t["name"] for t in contact["tags"]] + names))
            contact["tags"] = [{"id": self.tag_ids[name], "name": name} for name in kept]
        if "default_assignees" in changes:
            ids = changes["default_assignees"]
            merged = ids if (replace or flags["default_assignees"]) else [*contact["default_assignees"], *ids]
            contact["default_assignees"] = sorted(dict.fromkeys(merged))
        contact["last_updated_on"] = _now()
        self.touch(cid)

    def _validate(self, body: Mapping[str, Any], *, require_phone: bool) -> tuple[dict[str, Any], str | None]:
        errors: dict[str, Any] = {}
        changes: dict[str, Any] = {}
        phone: str | None = None
        if "phone" in body:
            value = body["phone"]
            if not isinstance(value, str) or not value.strip():
                errors["phone"] = ["This field may not be blank." if value == "" else "Not a valid string."]
            elif len(value) > MAX_LENGTHS["phone"]:
                errors["phone"] = [f"Ensure this field has no more than {MAX_LENGTHS['phone']} characters."]
            else:
                try:
                    phone = canonical_phone(value.strip())
                    changes["phone"] = value.strip()
                except ValueError:
                    errors["phone"] = ["Enter a valid phone number."]
        elif require_phone:
            errors["phone"] = ["This field is required."]
        for name in ("first_name", "last_name", "email", "external_url"):
            if name not in body:
                continue
            value = body[name]
            if value is None or value == "":
                changes[name] = None
            elif not isinstance(value, str):
                errors[name] = ["Not a valid string."]
            elif len(value.strip()) > MAX_LENGTHS[name]:
                errors[name] = [f"Ensure this field has no more than {MAX_LENGTHS[name]} characters."]
            elif name == "email" and not _EMAIL.fullmatch(value.strip()):
                errors[name] = ["Enter a valid email address."]
            elif name == "external_url" and not _URL.fullmatch(value.strip()):
                errors[name] = ["Enter a valid URL."]
            else:
                changes[name] = value.strip()
        if "source" in body:
            value = body["source"]
            if isinstance(value, str) and len(value) <= 255:
                changes["source"] = value
            else:
                errors["source"] = ["Not a valid string."]
        if "meta" in body:
            value = body["meta"]
            if not isinstance(value, Mapping):
                errors["meta"] = [f'Expected a dictionary of items but got type "{type(value).__name__}".']
            else:
                changes["meta"] = dict(value)
        if "tags" in body:
            self._tags(body["tags"], errors, changes)
        if "default_assignees" in body:
            self._assignees(body["default_assignees"], errors, changes)
        for name in ("overwrite_tags", "overwrite_meta", "overwrite_default_assignees"):
            if name in body:
                value = body[name]
                if isinstance(value, bool):
                    changes[name] = value
                elif value in ("true", "True", "1", "false", "False", "0"):
                    changes[name] = value in ("true", "True", "1")
                else:
                    errors[name] = ["Must be a valid boolean."]
        if errors:
            raise ContactInvalid(errors)
        return changes, phone

    @staticmethod
    def _tags(value: Any, errors: dict[str, Any], changes: dict[str, Any]) -> None:
        if not isinstance(value, list):
            errors["tags"] = {"non_field_errors": [f'Expected a list of items but got type "{type(value).__name__}".']}
            return
        names, item_errors = [], []
        for item in value:
            name = item.get("name") if isinstance(item, Mapping) else None
            if not isinstance(item, Mapping):
                item_errors.append({"non_field_errors": ["Invalid data. Expected a dictionary."]})
            elif not isinstance(name, str) or not name.strip():
                item_errors.append({"name": ["This field may not be blank."]})
            elif len(name.strip()) > 100:
                item_errors.append({"name": ["Ensure this field has no more than 100 characters."]})
            elif "\x00" in name:
                item_errors.append({"name": ["Null characters are not allowed."]})
            else:
                item_errors.append({})
                names.append(name.strip())
        if any(item_errors):
            errors["tags"] = item_errors
        else:
            changes["tags"] = names

    def _assignees(self, value: Any, errors: dict[str, Any], changes: dict[str, Any]) -> None:
        if not isinstance(value, list):
            errors["default_assignees"] = [f'Expected a list of items but got type "{type(value).__name__}".']
            return
        ids, problems = [], []
        for item in value:
            if isinstance(item, bool) or not isinstance(item, int | str) or not str(item).strip().isdigit():
                problems.append("A valid integer is required.")
            elif int(item) not in self.users:
                problems.append(f'Invalid pk "{item}" - object does not exist.')
            else:
                ids.append(int(item))
        if problems:
            errors["default_assignees"] = problems
        else:
            changes["default_assignees"] = ids


def _as_text(value: Any) -> str:
    """A meta value as Hilos keeps it: "we parse all these attributes as strings"."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "True" if value else "False"  # Python's str(), as a Django view's would give
    return str(value)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def account_members(
    users: Mapping[int, Mapping[str, Any]], teams: Mapping[int, Mapping[str, Any]], channels: Iterable[int]
) -> list[dict[str, Any]]:
    """``AccountMemberUser`` rows: every user, with the teams each belongs to (user ``i`` in team ``i % n`` and, for
    even users, the next one too), the account's channels, and a role."""
    team_ids = sorted(teams)
    roles = ("AGENT", "MANAGER", "ADMIN", "AGENT")
    members = []
    for uid, user in users.items():
        own = {team_ids[uid % len(team_ids)], *([team_ids[(uid + 1) % len(team_ids)]] if uid % 2 == 0 else [])}
        members.append(
            {
                **{k: user[k] for k in ("id", "first_name", "last_name", "email", "account", "profile_image")},
                "date_joined": user["date_joined"],
                "teams": [{**teams[t], "assignment_strategy": "ROUND_ROBIN"} for t in sorted(own)],
                "user_permissions": [],
                "available_channels": [
                    {"id": c, "channel_type": "WHATSAPP", "name": f"WhatsApp {c}", "channel_id": f"{c:012d}"}
                    for c in channels
                ],
                "role": roles[uid % len(roles)],
            }
        )
    return members
