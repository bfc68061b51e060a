"""Where batch rows come from, and what makes one valid.

A source is a callable that returns ``(row number, row)`` pairs afresh each time it is called: the
batch reads it twice (once to validate every row, once to send), so a file is streamed twice and never
held in memory.
"""

from __future__ import annotations

import csv
import difflib
import json
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any

from airflow_provider_hilos.exceptions import HilosValidationError
from airflow_provider_hilos.schemas import CLEAR, ValidatedUpdate, parse_rendered, show, validate_update

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


def rows_from_json_lines(open_text: Callable[[], IO[str]], *, name: str = "updates_path") -> RowSource:
    """A re-iterable source of ``(line_number, row)`` read line by line from a JSON Lines file.

    Blank lines are ignored; a line that is not JSON becomes a row that fails validation. A file whose
    first line is a CSV header is refused at once, saying so (rather than as a hundred lines that are not JSON).

    :param open_text: opens the file for reading text (called once per pass).
    :param name: what the file is called in the error.
    """

    def iterate() -> Iterator[tuple[int, Any]]:
        with open_text() as handle:
            # readline, not iteration: Airflow 2's ObjectStoragePath file wrapper is not iterable
            for number, line in enumerate(iter(handle.readline, ""), start=1):
                if not line.strip():
                    continue
                if number == 1 and _looks_like_csv_header(line):
                    raise HilosValidationError(
                        [
                            (
                                name,
                                f"looks like CSV, not JSON Lines: its first line is a header ({show(line.strip())}); "
                                "name the file .csv, or set input_format='csv'",
                            )
                        ],
                        "Invalid Hilos batch input",
                    )
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as exc:
                    yield number, _Unparsable(f"line is not JSON ({exc.msg} at character {exc.pos})")
                except (ValueError, RecursionError) as exc:  # a 5,000-digit number, nesting too deep
                    reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
                    yield number, _Unparsable(f"line is not usable JSON ({reason})")

    return iterate


#: The columns of a CSV change set: an empty cell leaves the field unchanged; ``-`` clears it.
CSV_COLUMNS = ("conversation_id", "status", "tags", "assigned", "assigned_team", "channel")
_LIST_COLUMNS = ("tags", "assigned")


def rows_from_csv(open_text: Callable[[], IO[str]], *, separator: str = "|", name: str = "updates_path") -> RowSource:
    """A re-iterable source of ``(line_number, row)`` read line by line from a CSV change set.

    Columns are separated by commas, or by semicolons or tabs if the header uses them (as spreadsheets
    in many locales export); a leading byte-order mark is ignored. The header names the columns, in any
    order: ``conversation_id`` (required), ``status``, ``tags`` (names joined by ``separator``:
    ``vip|renewal``), ``assigned`` (user ids joined by ``separator``), ``assigned_team``, ``channel``. An
    empty cell leaves that field unchanged (like a SQL NULL); ``-`` clears it (``tags`` and ``assigned``
    become empty, ``channel`` null).

    :param open_text: opens the file for reading text (called once per pass).
    :param separator: what joins the names and ids inside one cell.
    :param name: what the file is called in errors.
    :raises HilosValidationError: (when read) a header with an unknown or missing column.
    """
    if problem := list_separator_problem(separator):
        raise HilosValidationError([("list_separator", problem)], "Invalid Hilos batch input")

    def iterate() -> Iterator[tuple[int, Any]]:
        with open_text() as handle:
            first = handle.readline().removeprefix("\ufeff")  # the byte-order mark spreadsheet exports start with
            # commas, or the semicolons (tabs) spreadsheets in many locales write: the header says which
            delimiter = next((d for d in ",;\t" if d in first), ",")
            if delimiter == separator:
                raise HilosValidationError(
                    [("list_separator", f"{separator!r} also separates the columns of {name}; choose another one")],
                    "Invalid Hilos batch input",
                )
            header = [column.strip() for column in next(csv.reader([first], delimiter=delimiter), [])]
            _check_header(header, name)
            # readline: Airflow 2's file wrapper is not iterable
            reader = csv.reader(iter(handle.readline, ""), delimiter=delimiter)
            for cells in reader:
                line = reader.line_num + 1  # the header was line 1
                if not any(cell.strip() for cell in cells):
                    continue
                if len(cells) != len(header):
                    yield line, _Unparsable(f"has {len(cells)} cells, the header has {len(header)} columns")
                    continue
                row: dict[str, Any] = {}
                for column, cell in zip(header, cells, strict=True):
                    value = cell.strip()
                    if not value:
                        continue  # empty: not given
                    if column in _LIST_COLUMNS and value != CLEAR:
                        row[column] = [part.strip() for part in value.split(separator) if part.strip()]
                    else:
                        row[column] = value
                yield line, row

    return iterate


def list_separator_problem(separator: Any) -> str | None:
    """What is wrong with a CSV cell's list separator, or ``None``."""
    if not isinstance(separator, str) or len(separator) != 1 or separator in '"\r\n':
        return f"{separator!r} must be one character, not a quote or a line break (e.g. '|')"
    return None


def _check_header(header: list[str], name: str) -> None:
    problems = []
    for column in header:
        if column not in CSV_COLUMNS:
            close = difflib.get_close_matches(column, CSV_COLUMNS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            problems.append(
                (
                    f"column {column!r}",
                    f"is not a column of a change set; {hint}the columns are {', '.join(CSV_COLUMNS)}",
                )
            )
    if "conversation_id" not in header:
        problems.append(("header", f"has no conversation_id column (its columns: {', '.join(header) or 'none'})"))
    if problems:
        raise HilosValidationError(problems, f"Invalid Hilos batch input: the CSV header of {name}")


def _looks_like_csv_header(line: str) -> bool:
    text = line.strip()
    return not text.startswith(("{", "[")) and "conversation_id" in text and any(sep in text for sep in ",;\t")


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


def rows_in_shard(source: RowSource, shard_index: int, shard_count: int) -> RowSource:
    """The rows of ``source`` that belong to shard ``shard_index`` of ``shard_count`` (row numbers kept, so an
    error still names the file's line)."""
    if problem := shard_problem(shard_index, shard_count):
        raise ValueError(problem)

    def rows() -> Iterator[tuple[int, Any]]:
        return ((number, row) for number, row in source() if shard_of(row, shard_count) == shard_index)

    return rows
