"""What a batch row is and what makes one valid; rows given as a list; which shard a row belongs to.

A source is a callable that returns ``(row number, row)`` pairs afresh each time it is called: the
batch reads it twice (once to validate every row, once to send), so a file is streamed twice and never
held in memory. Files are read by :mod:`~airflow_provider_hilos.inputs`.
"""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_hilos.exceptions import HilosValidationError
from airflow_provider_hilos.schemas import (
    WRITABLE_FIELDS,
    ValidatedUpdate,
    canonical_conversation_id,
    id_key,
    parse_rendered,
    show,
    update_problems,
    validate_update,
)

#: A re-iterable source of ``(row number, row)`` pairs.
RowSource = Callable[[], Iterator[tuple[int, Any]]]


def rows_from_updates(updates: Any) -> RowSource:
    """A re-iterable source of ``(row_number, row)`` from a list, or from the text a template rendered it as
    (JSON, or the list's Python repr), as the single update's ``payload`` accepts.

    :raises HilosValidationError: when ``updates`` is not a list of rows.
    """
    if isinstance(updates, (str, bytes)):
        updates = parse_rendered(
            updates,
            field="updates",
            expected=list,
            example='a list of rows, e.g. [{"conversation_id": "...", "status": "CLOSED"}]',
        )
    if isinstance(updates, Mapping) or not isinstance(updates, Iterable):
        raise HilosValidationError(
            [
                (
                    "updates",
                    f'must be a list of {{"conversation_id": ..., <fields>}} rows, got '
                    f"{type(updates).__name__} {show(updates)}",
                )
            ],
            "Invalid Hilos batch input",
        )
    rows = updates if isinstance(updates, (list, tuple)) else list(updates)
    return lambda: enumerate(rows, start=1)


@dataclass(frozen=True)
class Unparsable:
    """A row that could not be read (a line that is not JSON, a CSV line with the wrong number of cells): it fails
    validation with ``reason``, naming its line, like any invalid row."""

    reason: str


def validate_row(row: Any) -> ValidatedUpdate:
    """Validate one batch row: ``{"conversation_id": ..., <fields>}`` (or ``{"conversation_id", "payload"}``).

    :raises HilosValidationError: naming every problem of the row.
    """
    if isinstance(row, Unparsable):
        raise HilosValidationError([("row", row.reason)], "Invalid row")
    if not isinstance(row, Mapping):
        raise HilosValidationError(
            [
                (
                    "row",
                    f'must be an object like {{"conversation_id": "...", "status": "CLOSED"}}, got '
                    f"{type(row).__name__} {show(row)}",
                )
            ],
            "Invalid row",
        )
    fields = {k: v for k, v in row.items() if k not in ("conversation_id", "payload")}
    payload = row.get("payload")
    if payload is not None:
        if not isinstance(payload, Mapping):
            raise HilosValidationError([("payload", f"must be an object, got {show(payload)}")], "Invalid row")
        fields = {**payload, **fields}
    if "conversation_id" not in row:
        raise HilosValidationError(
            [("conversation_id", "is missing; every row needs the conversation's UUID")], "Invalid row"
        )
    return validate_update(row["conversation_id"], fields, subject="Invalid row")


class RowChecker:
    """Validates batch rows one by one, and refuses a conversation that an earlier row already updates.

    Two rows for one conversation would be in flight together and could land in either order, so the
    batch could not promise the intended final state; the first row wins, the repeat is invalid.
    Remembers one integer pair per row (about 10 MB per 100,000 rows).
    """

    #: How many distinct field values are remembered (rows of one change set repeat a few statuses, tag lists,
    #: assignee lists and teams, in any combination).
    MEMO_SIZE = 8_192

    def __init__(self, *, refuse_repeats: bool = True) -> None:
        #: refuse a row repeating an earlier row's conversation (a sync judges repeats itself: every row of a
        #: repeated conversation is invalid there, not the first one kept)
        self.refuse_repeats = refuse_repeats
        self._first_row: dict[int, int] = {}
        #: the body of each field value already validated, by ``(field, value)`` (see :meth:`validate`)
        self._parts: dict[tuple[Any, ...], Any] = {}

    def validate(self, row: Any) -> ValidatedUpdate:
        """:func:`validate_row`, remembering the body of each field value: the fields of an update are checked
        each on its own (no rule of the API's ``PatchedConversationEdit`` ties two fields), so a row made of values
        seen before in valid rows gets their bodies, its id checked on its own. A row with a problem, or one that
        can't be remembered (a nested ``payload``, a field that is not writable, unhashable cells, no field given),
        is validated in full: its error names every problem at once, as :func:`validate_row` says them."""
        if type(row) is not dict or "payload" in row:
            return validate_row(row)
        canonical = canonical_conversation_id(row.get("conversation_id"))
        if canonical is None:
            return validate_row(row)
        body: dict[str, Any] = {}
        parts = self._parts
        for name, value in row.items():
            if value is None or name == "conversation_id":
                continue
            key = value_key(name, value)
            if key is None:
                return validate_row(row)
            part = parts.get(key, _MISSING)
            if part is _MISSING:
                part = self._part(name, value)
                if part is _MISSING:
                    return validate_row(row)
                if len(parts) < self.MEMO_SIZE:
                    parts[key] = part
            body[name] = part
        if not body:
            return validate_row(row)
        return ValidatedUpdate(conversation_id=canonical, body={k: body[k] for k in WRITABLE_FIELDS if k in body})

    @staticmethod
    def _part(name: str, value: Any) -> Any:
        """One writable field's body, or ``_MISSING`` when it is not writable or not valid."""
        if name not in WRITABLE_FIELDS:
            return _MISSING
        problems, model = update_problems({name: value})
        if problems or model is None:
            return _MISSING
        return model.to_body()[name]

    def check(self, number: int, row: Any) -> ValidatedUpdate:
        """The validated update of row ``number``.

        :raises HilosValidationError: the row is invalid, or repeats an earlier row's conversation.
        """
        update = self.validate(row)
        if not self.refuse_repeats:
            return update
        first = self._first_row.setdefault(id_key(update.conversation_id), number)
        if first != number:
            raise HilosValidationError(
                [
                    (
                        "conversation_id",
                        f"{update.conversation_id} is already updated by row {first}; two rows for "
                        "one conversation would race: keep one row per conversation (its last change), or send the "
                        "rows in separate batches",
                    )
                ],
                "Invalid row",
            )
        return update


_MISSING: Any = object()


def value_key(name: str, value: Any) -> tuple[Any, ...] | None:
    """A field's value as a hashable key (its type kept: ``1`` and ``"1"`` validate apart), or ``None`` when it
    can't be one."""
    kind = type(value)
    if kind is list:
        if not all(type(item) in (str, int) for item in value):
            return None
        return (name, "list", *((type(item) is int, item) for item in value))  # order kept: a body lists as given
    if kind is str or kind is int:
        return (name, kind is int, value)
    return None


def row_label(row: Any) -> str:
    cid = row.get("conversation_id") if isinstance(row, Mapping) else None
    return f" (conversation {show(cid)})" if cid is not None else ""


def reasons(exc: HilosValidationError) -> str:
    return "; ".join(f"{f}: {m}" for f, m in exc.problems)


def plain_conversation_id(row: Any) -> str | None:
    cid = row.get("conversation_id") if isinstance(row, Mapping) else None
    return cid if isinstance(cid, str) else None


# -- shards: one change set split over several tasks ---------------------------------------------


def shard_problem(shard_index: Any, shard_count: Any) -> str | None:
    """What is wrong with a ``shard_index`` / ``shard_count`` pair, or ``None`` (both ``None``: not sharded)."""
    if shard_index is None and shard_count is None:
        return None
    for name, value in (("shard_count", shard_count), ("shard_index", shard_index)):
        if isinstance(value, bool) or not isinstance(value, int):
            return (
                f"{name}={show(value)}: give shard_index and shard_count together, as integers "
                "(e.g. .expand(shard_index=range(4)) with shard_count=4), or neither"
            )
    if shard_count < 1:
        return f"shard_count={shard_count}: must be at least 1"
    if not 0 <= shard_index < shard_count:
        return f"shard_index={shard_index}: must be from 0 to shard_count - 1 ({shard_count - 1})"
    return None


def shard_of(row: Any, shard_count: int) -> int:
    """The shard (``0`` to ``shard_count - 1``) a row belongs to: a stable hash of its conversation id, the
    same whichever process computes it. Every row of one conversation lands in the same shard, so the batch's
    refusal of a conversation repeated in one change set still holds (split by row number, two shards could
    send a repeated conversation at once, in either order). A row without a usable conversation id goes to
    shard 0, where it is reported once (not once per shard)."""
    cid = row.get("conversation_id") if isinstance(row, Mapping) else None
    if isinstance(cid, bool) or not isinstance(cid, (str, int)):
        return 0
    key = str(cid).strip()
    try:
        key = str(uuid.UUID(key))  # 6513270E-... and 6513270e-... are one conversation
    except ValueError:
        pass
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) % shard_count
