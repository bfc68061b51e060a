"""A conversation, to the sync engine: keyed by its id, its fields those of ``PatchedConversationEdit`` (status,
tags, assignees, team, channel), read from the conversation list, written by "Partially update a Conversation"."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_provider_hilos.batch.wording import SYNC_ROWS, SYNC_UPDATES
from airflow_provider_hilos.conversations import normal_fields, row_fields
from airflow_provider_hilos.exceptions import HilosValidationError
from airflow_provider_hilos.rows import RowChecker, value_key
from airflow_provider_hilos.schemas import (
    WRITABLE_FIELDS,
    ValidatedUpdate,
    canonical_conversation_id,
    conversation_id_problem,
)
from airflow_provider_hilos.sync.desired import CONVERSATION_COLUMNS
from airflow_provider_hilos.sync.diff import CONVERSATION_FIELDS, ListMode, PlanEntry
from airflow_provider_hilos.sync.objects import SyncObject

if TYPE_CHECKING:
    from airflow_provider_hilos.hooks.hilos import HilosHook
    from airflow_provider_hilos.resources.paging import Paginator


_UNSEEN: Any = object()


class ConversationObject(SyncObject):
    """Conversations.

    :param tags_mode: ``"replace"`` or ``"add"``.
    :param assigned_mode: ``"replace"`` or ``"add"``.
    :param send_not_found: send a desired conversation the listing did not show.
    """

    name = "conversation"
    key_column = "conversation_id"
    columns = CONVERSATION_COLUMNS
    fields = CONVERSATION_FIELDS
    rows_words = SYNC_ROWS
    updates_words = SYNC_UPDATES
    listed_columns = ("id", "status", "tags", "assigned", "assigned_team", "channel")

    def __init__(
        self,
        *,
        tags_mode: ListMode = ListMode.REPLACE,
        assigned_mode: ListMode = ListMode.REPLACE,
        send_not_found: bool = False,
    ) -> None:
        super().__init__({"tags": ListMode(tags_mode), "assigned": ListMode(assigned_mode)})
        self.send_not_found = send_not_found
        self._checker = RowChecker(refuse_repeats=False)
        self._writes = RowChecker(refuse_repeats=False)  # the writes: the changed fields of valid rows
        #: the normal form of each field value already found valid, by :func:`~airflow_provider_hilos.rows.value_key`
        self._normal: dict[tuple[Any, ...], Any] = {}

    def send_missing(self) -> bool:
        return self.send_not_found

    def desired(self, number: int, row: Any) -> tuple[str, dict[str, Any]]:
        """A row's canonical id and managed fields; a row whose managed cells are all NULL (only its id is left)
        manages nothing."""
        if isinstance(row, Mapping) and "conversation_id" in row and len(row) == 1:
            canonical = canonical_conversation_id(row["conversation_id"])
            if canonical is None:
                problem = conversation_id_problem(row["conversation_id"]) or "is not a conversation UUID"
                raise HilosValidationError([("conversation_id", problem)], "Invalid row")
            return canonical, {}
        known = self._known(row)
        if known is not None:
            return known
        update = self._checker.check(number, row)
        fields = normal_fields(update.body)
        self._remember(row, fields)
        return update.conversation_id, fields

    def _known(self, row: Any) -> tuple[str, dict[str, Any]] | None:
        """A row made only of field values seen before in valid rows: its id and fields straight from what those
        rows gave (each field is validated and normalised on its own: no rule of the API ties two fields), or
        ``None`` (validated in full)."""
        if type(row) is not dict or "payload" in row:
            return None
        canonical = canonical_conversation_id(row.get("conversation_id"))
        if canonical is None:
            return None
        normal, found = self._normal, {}
        for name, value in row.items():
            if value is None or name == "conversation_id":
                continue
            key = value_key(name, value)
            field = normal.get(key, _UNSEEN) if key is not None else _UNSEEN
            if field is _UNSEEN:
                return None
            found[name] = field
        if not found:
            return None
        return canonical, {name: found[name] for name in WRITABLE_FIELDS if name in found}

    def _remember(self, row: Any, fields: Mapping[str, Any]) -> None:
        if type(row) is not dict or "payload" in row or len(self._normal) >= RowChecker.MEMO_SIZE:
            return
        for name, value in row.items():
            if value is not None and name != "conversation_id" and name in fields:
                key = value_key(name, value)
                if key is not None:
                    self._normal[key] = fields[name]

    def listed(self, row: Any) -> tuple[str | None, str | None, dict[str, Any]]:
        cid, _ = self.listed_key(row)
        if cid is None:
            return None, None, {}
        return cid, cid, row_fields(row)

    def listed_key(self, row: Any) -> tuple[str | None, str | None]:
        cid = canonical_conversation_id(row.get("id")) if isinstance(row, Mapping) else None
        return cid, cid

    def listed_fields(self, row: Any) -> dict[str, Any]:
        return row_fields(row)

    def paginator(self, hook: HilosHook) -> Paginator:
        return hook.conversations.paginator()

    def write(self, entry: PlanEntry, *, current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> Any:
        return self._writes.validate(entry.change_row())

    def stored(self, write: Any) -> Any:
        assert isinstance(write, ValidatedUpdate)
        return ("conversation", write.conversation_id, write.body)

    def restored(self, data: Any) -> Any:
        _, cid, body = data
        return ValidatedUpdate(conversation_id=cid, body=body)
