"""Where batch rows come from, and what makes one valid.

A source is a callable that returns ``(row number, row)`` pairs afresh each time it is called: the
batch reads it twice (once to validate every row, once to send), so a file is streamed twice and never
held in memory.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any

from airflow_provider_hilos.exceptions import HilosValidationError
from airflow_provider_hilos.schemas import ValidatedUpdate, show, validate_update

#: A re-iterable source of ``(row number, row)`` pairs.
RowSource = Callable[[], Iterator[tuple[int, Any]]]


def rows_from_updates(updates: Any) -> RowSource:
    """A re-iterable source of ``(row_number, row)`` from a list (or a JSON string of a list).

    :raises HilosValidationError: when ``updates`` is not a list of rows.
    """
    if isinstance(updates, (str, bytes)):
        try:
            updates = json.loads(updates)
        except (ValueError, RecursionError) as exc:
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            raise HilosValidationError(
                [
                    (
                        "updates",
                        f"is a string but not JSON ({reason}): {show(updates)}; pass a list of rows, an XComArg, "
                        "or a template rendering a JSON list",
                    )
                ],
                "Invalid Hilos batch input",
            ) from None
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


def rows_from_json_lines(open_text: Callable[[], IO[str]]) -> RowSource:
    """A re-iterable source of ``(line_number, row)`` read line by line from a JSON Lines file.

    Blank lines are ignored; a line that is not JSON becomes a row that fails validation.

    :param open_text: opens the file for reading text (called once per pass).
    """

    def iterate() -> Iterator[tuple[int, Any]]:
        with open_text() as handle:
            # readline, not iteration: Airflow 2's ObjectStoragePath file wrapper is not iterable
            for number, line in enumerate(iter(handle.readline, ""), start=1):
                if not line.strip():
                    continue
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as exc:
                    yield number, _Unparsable(f"line is not JSON ({exc.msg} at character {exc.pos})")
                except (ValueError, RecursionError) as exc:  # a 5,000-digit number, nesting too deep
                    reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
                    yield number, _Unparsable(f"line is not usable JSON ({reason})")

    return iterate


@dataclass(frozen=True)
class _Unparsable:
    reason: str


def validate_row(row: Any) -> ValidatedUpdate:
    """Validate one batch row: ``{"conversation_id": ..., <fields>}`` (or ``{"conversation_id", "payload"}``).

    :raises HilosValidationError: naming every problem of the row.
    """
    if isinstance(row, _Unparsable):
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

    def __init__(self) -> None:
        self._first_row: dict[int, int] = {}

    def check(self, number: int, row: Any) -> ValidatedUpdate:
        """The validated update of row ``number``.

        :raises HilosValidationError: the row is invalid, or repeats an earlier row's conversation.
        """
        update = validate_row(row)
        first = self._first_row.setdefault(uuid.UUID(update.conversation_id).int, number)
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


def row_label(row: Any) -> str:
    cid = row.get("conversation_id") if isinstance(row, Mapping) else None
    return f" (conversation {show(cid)})" if cid is not None else ""


def reasons(exc: HilosValidationError) -> str:
    return "; ".join(f"{f}: {m}" for f, m in exc.problems)


def plain_conversation_id(row: Any) -> str | None:
    cid = row.get("conversation_id") if isinstance(row, Mapping) else None
    return cid if isinstance(cid, str) else None
