"""A contact, to the sync engine: keyed by its phone in E.164, its fields a contact's writable ones (names, email,
external URL, tags, default assignees, custom properties), read from the contact list, written by ``POST
/api/contact`` (create, or update by phone), ``PATCH /api/contact/{id}`` and ``DELETE /api/contact/{id}``.

Writes send only the fields that differ. The API merges ``tags``, ``default_assignees`` and ``meta`` into what a
contact has unless an ``overwrite_*`` flag is set, so: a list in ``"replace"`` mode is sent whole with its flag, in
``"add"`` mode only its missing items (the API adds them); properties in ``"merge"`` mode are sent as they differ
(the API merges them), and whole with ``overwrite_meta`` when one must go (``-`` in the warehouse) or in
``"replace"`` mode (the warehouse's meta is the whole meta).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_provider_hilos.batch.wording import Wording
from airflow_provider_hilos.contacts import (
    ABSENT,
    CONTACT_FIELDS,
    LIST_FIELDS,
    META_KEYS,
    META_PREFIX,
    TEXT_FIELDS,
    canonical_phone,
    clear_value,
    listed_fields,
    listed_key,
    meta_text,
    meta_value,
    property_name_problem,
    write_problems,
)
from airflow_provider_hilos.conversations import UNKNOWN
from airflow_provider_hilos.exceptions import HilosValidationError
from airflow_provider_hilos.resources.contacts import CREATE, DELETE, UPDATE, ContactWrite, contact_write
from airflow_provider_hilos.schemas import CLEAR, MAX_ID, show
from airflow_provider_hilos.sync.desired import Columns
from airflow_provider_hilos.sync.diff import Action, FieldSet, ListMode, PlanEntry
from airflow_provider_hilos.sync.objects import NotWritable, SyncObject

if TYPE_CHECKING:
    from airflow_provider_hilos.hooks.hilos import HilosHook
    from airflow_provider_hilos.resources.paging import Paginator


class SyncMode:
    """What a contact sync does with contacts the listing does not show, and with those that left the query."""

    #: create those Hilos does not have (default)
    UPSERT = "upsert"
    #: never create: those Hilos does not have are ``not_found``
    UPDATE = "update"
    #: upsert, and delete the contacts this sync created or managed that left the query (guarded)
    MIRROR = "mirror"
    ALL = (UPSERT, UPDATE, MIRROR)


#: A contact's columns in the desired state.
CONTACT_COLUMNS = Columns("phone", (*CONTACT_FIELDS, "meta"), LIST_FIELDS, objects=("meta",), prefix=META_PREFIX)

#: A contact's fields: names, email (compared ignoring case) and URL exactly, lists as sets, each custom property as
#: a field of its own, ``default_assignees`` against what the last sync applied (no list row shows it).
CONTACT_FIELD_SET = FieldSet(
    order=CONTACT_FIELDS,
    lists=frozenset({*LIST_FIELDS, META_KEYS}),
    from_last_sync=frozenset({"default_assignees"}),
    compare={"email": str.casefold},
    current_value=lambda current, name: (
        meta_value(current, name) if name.startswith(META_PREFIX) else current.get(name, UNKNOWN)
    ),
)

CONTACT_ROWS = Wording("Hilos sync", "desired row", by_key=True, rest="sync the valid rows only", key_field="phone")
CONTACT_UPDATES = Wording("Hilos sync", "write", by_key=True, rest="sync the valid rows only", key_field="phone")


class ContactObject(SyncObject):
    """Contacts.

    :param mode: ``"upsert"``, ``"update"`` or ``"mirror"`` (:class:`SyncMode`).
    :param default_region: the country of phones written without ``+`` (``"MX"``), or ``None``.
    :param tags_mode: ``"replace"`` or ``"add"``.
    :param default_assignees_mode: ``"replace"`` or ``"add"``.
    :param meta_mode: ``"merge"`` (only the properties the warehouse names are managed) or ``"replace"`` (its meta is
        the whole meta: others are removed).
    """

    name = "contact"
    key_column = "phone"
    columns = CONTACT_COLUMNS
    fields = CONTACT_FIELD_SET
    rows_words = CONTACT_ROWS
    updates_words = CONTACT_UPDATES
    listed_columns = ("id", "canonical_phone", "phone", *TEXT_FIELDS, "tags", "meta")
    id_field = "contact_id"
    lifecycle = True

    def __init__(
        self,
        *,
        mode: str = SyncMode.UPSERT,
        default_region: str | None = None,
        tags_mode: ListMode = ListMode.REPLACE,
        default_assignees_mode: ListMode = ListMode.REPLACE,
        meta_mode: ListMode = ListMode.MERGE,
    ) -> None:
        super().__init__(
            {
                "tags": ListMode(tags_mode),
                "default_assignees": ListMode(default_assignees_mode),
                META_KEYS: ListMode.REPLACE,
            }
        )
        self.mode = mode
        self.default_region = default_region.upper() if default_region else None
        self.meta_mode = ListMode(meta_mode)

    @property
    def mirrors(self) -> bool:
        return self.mode == SyncMode.MIRROR

    def missing(self) -> Action:
        return Action.NOT_FOUND if self.mode == SyncMode.UPDATE else Action.CREATE

    # -- the desired rows --

    def desired(self, number: int, row: Any) -> tuple[str, dict[str, Any]]:
        """A row's E.164 phone and managed fields (normal form).

        :raises HilosValidationError: naming every problem of the row.
        """
        if not isinstance(row, Mapping):
            raise HilosValidationError(
                [("row", f"must be an object like {{'phone': '+525512345678', ...}}, got {type(row).__name__}")],
                "Invalid row",
            )
        problems: list[tuple[str, str]] = []
        key = ""
        if "phone" not in row:
            problems.append(("phone", "is missing; every contact row needs its phone number"))
        else:
            try:
                key = canonical_phone(row["phone"], self.default_region)
            except ValueError as exc:
                problems.append(("phone", str(exc)))
        fields: dict[str, Any] = {}
        for name in TEXT_FIELDS:
            if row.get(name) is not None:  # a NULL cell: the field is not managed
                value = row[name]
                if clear_value(value):
                    fields[name] = None
                elif isinstance(value, str):
                    fields[name] = value.strip()
                else:
                    problems.append((name, f"expected text, got {type(value).__name__} {show(value)}"))
        for name in LIST_FIELDS:
            if row.get(name) is not None:
                self._list(name, row[name], fields, problems)
        properties: dict[str, Any] = {}
        meta = row.get("meta")
        if meta is not None:
            if not isinstance(meta, Mapping):
                problems.append(("meta", f"must be an object of custom properties (JSON), got {show(meta)}"))
            else:
                for prop, value in meta.items():
                    if value is not None:
                        properties[str(prop)] = value
        for column, value in row.items():
            if isinstance(column, str) and column.startswith(META_PREFIX) and value is not None:
                properties[column[len(META_PREFIX) :]] = value
        for prop, value in properties.items():
            if problem := property_name_problem(prop):
                problems.append((f"meta.{str(prop)[:40]}", problem))
                continue
            fields[META_PREFIX + prop] = (
                ABSENT if isinstance(value, str) and value.strip() == CLEAR else meta_text(value)
            )
        if self.meta_mode is ListMode.REPLACE and (meta is not None or any(k.startswith(META_PREFIX) for k in row)):
            fields[META_KEYS] = tuple(
                sorted(
                    k[len(META_PREFIX) :] for k, v in fields.items() if k.startswith(META_PREFIX) and v is not ABSENT
                )
            )
        if not problems:
            problems += write_problems(self._create_body(key or "+0", fields))
        if problems:
            raise HilosValidationError(problems, "Invalid row")
        return key, fields

    def _list(self, name: str, value: Any, fields: dict[str, Any], problems: list[tuple[str, str]]) -> None:
        if isinstance(value, str):
            text = value.strip()
            if text in ("", CLEAR):
                value = []
            else:
                try:
                    value = json.loads(text)
                except ValueError:
                    problems.append((name, f"expected a list, got text {show(value)}"))
                    return
        if not isinstance(value, list | tuple):
            problems.append((name, f"expected a list, got {type(value).__name__} {show(value)}"))
            return
        if name == "tags":
            names = []
            for item in value:
                tag = item.get("name") if isinstance(item, Mapping) else item
                if not isinstance(tag, str) or not tag.strip():
                    problems.append((name, f"{show(item)} is not a tag name"))
                else:
                    names.append(tag.strip())
            fields[name] = tuple(sorted(set(names)))
        else:
            ids = []
            for item in value:
                number = int(item) if isinstance(item, str) and item.strip().isdigit() else item
                if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= MAX_ID:
                    problems.append((name, f"{show(item)} is not a user id (or the email of a member)"))
                else:
                    ids.append(number)
            fields[name] = tuple(sorted(set(ids)))

    # -- the list --

    def listed(self, row: Any) -> tuple[str | None, str | None, dict[str, Any]]:
        if not isinstance(row, Mapping):
            return None, None, {}
        return (*self.listed_key(row), listed_fields(row))

    def listed_key(self, row: Any) -> tuple[str | None, str | None]:
        if not isinstance(row, Mapping):
            return None, None
        cid = row.get("id")
        return listed_key(row), (cid.lower() if isinstance(cid, str) and cid else None)

    def listed_fields(self, row: Any) -> dict[str, Any]:
        return listed_fields(row)

    def paginator(self, hook: HilosHook) -> Paginator:
        return hook.contacts.paginator()

    # -- the writes --

    def write(self, entry: PlanEntry, *, current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> Any:
        key = entry.key or ""
        if entry.action is Action.DELETE:
            return contact_write(key, DELETE, contact_id=entry.object_id)
        if entry.action is Action.CREATE:
            return contact_write(key, CREATE, body=self._create_body(key, desired))
        body = self._changed_body(entry, current, desired)
        if entry.object_id:
            return contact_write(key, UPDATE, contact_id=entry.object_id, body=body)
        return contact_write(key, CREATE, body={"phone": key, **body})  # no id known: the API updates by phone

    def _create_body(self, phone: str, desired: Mapping[str, Any]) -> dict[str, Any]:
        """A new contact's body: every desired field (a cleared one is left out), with the ``overwrite_*`` flags of
        the fields the warehouse declares whole (the API may find a contact with this phone after all: it then
        holds exactly what is desired)."""
        body: dict[str, Any] = {"phone": phone}
        for name in TEXT_FIELDS:
            if desired.get(name) is not None:
                body[name] = desired[name]
        if "tags" in desired:
            body["tags"] = [{"name": name} for name in desired["tags"]]
            if self.modes["tags"] is ListMode.REPLACE:
                body["overwrite_tags"] = True
        if "default_assignees" in desired:
            body["default_assignees"] = list(desired["default_assignees"])
            if self.modes["default_assignees"] is ListMode.REPLACE:
                body["overwrite_default_assignees"] = True
        meta = {k[len(META_PREFIX) :]: v for k, v in desired.items() if k.startswith(META_PREFIX) and v is not ABSENT}
        if meta or META_KEYS in desired:
            body["meta"] = meta
            if self.meta_mode is ListMode.REPLACE:
                body["overwrite_meta"] = True
        return body

    def _changed_body(
        self, entry: PlanEntry, current: Mapping[str, Any] | None, desired: Mapping[str, Any]
    ) -> dict[str, Any]:
        """An update's body: only the fields that differ (see the module)."""
        body: dict[str, Any] = {}
        changed_meta: dict[str, Any] = {}
        rewrite = False
        for change in entry.changes:
            name = change.field
            if name in TEXT_FIELDS:
                body[name] = change.after
            elif name in LIST_FIELDS:
                items = list(change.after)
                if self.modes[name] is ListMode.ADD:
                    have = change.before if isinstance(change.before, tuple) else ()
                    items = [item for item in items if item not in have]  # the API adds them to what it has
                else:
                    body[f"overwrite_{name}"] = True
                body[name] = [{"name": item} for item in items] if name == "tags" else items
            elif name == META_KEYS:
                rewrite = True  # replace mode: properties the warehouse does not name must go
            elif name.startswith(META_PREFIX):
                changed_meta[name[len(META_PREFIX) :]] = change.after
                rewrite = rewrite or change.after is ABSENT
        if rewrite:
            body["meta"] = self._whole_meta(current, desired)
            body["overwrite_meta"] = True
        elif changed_meta:
            body["meta"] = changed_meta
        return body

    def _whole_meta(self, current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> dict[str, Any]:
        """The contact's meta after the write: the warehouse's (``"replace"``), or what Hilos holds with the
        warehouse's properties set and removed (``"merge"``: needs the meta Hilos showed)."""
        wanted = {k[len(META_PREFIX) :]: v for k, v in desired.items() if k.startswith(META_PREFIX)}
        if self.meta_mode is ListMode.REPLACE:
            return {k: v for k, v in wanted.items() if v is not ABSENT}
        if current is None or current.get(META_KEYS, UNKNOWN) is UNKNOWN:
            raise NotWritable(
                "removing a custom property rewrites the contact's whole meta (overwrite_meta), and the meta Hilos "
                "holds was not read: use compare_with='hilos'"
            )
        held = {k[len(META_PREFIX) :]: v for k, v in current.items() if k.startswith(META_PREFIX)}
        held.update(wanted)
        return {k: v for k, v in held.items() if v is not ABSENT}

    def stored(self, write: Any) -> Any:
        assert isinstance(write, ContactWrite)
        return ("contact", write.phone, write.action, write.contact_id, write.body)

    def restored(self, data: Any) -> Any:
        _, phone, action, contact_id, body = data
        return ContactWrite(phone, action, contact_id, body)
