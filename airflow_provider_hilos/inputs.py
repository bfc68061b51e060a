"""Change sets in files: JSON Lines and CSV, read line by line (twice, never held in memory), through Airflow's
``ObjectStoragePath`` (a local path, ``file://``, ``s3://``, ``gs://`` ... with the matching provider installed).

Each reader returns a :data:`~airflow_provider_hilos.rows.RowSource`: ``(line number, row)`` pairs, afresh on each
call. A line that cannot be read becomes a row that fails validation naming its line.
"""

from __future__ import annotations

import csv
import difflib
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any, cast

from airflow_provider_hilos.exceptions import HilosValidationError
from airflow_provider_hilos.rows import RowSource, Unparsable
from airflow_provider_hilos.schemas import CLEAR, LIST_FIELDS, WRITABLE_FIELDS, show
from airflow_provider_hilos.storage import StoragePath, storage_path

#: The formats ``updates_path`` may be in (by default, chosen by its extension: ``.csv`` or anything else).
INPUT_FORMATS = ("jsonl", "csv")


#: The longest line (and so the longest CSV cell) a change-set file may hold, in bytes of UTF-8: a row is at most a
#: few kilobytes, so a longer line is a wrong file, not a row.
MAX_LINE_BYTES = 1024 * 1024


def _invalid(field: str, message: str) -> HilosValidationError:
    return HilosValidationError([(field, message)], "Invalid Hilos batch input")


def text_lines(
    open_binary: Callable[[], IO[bytes]] | Callable[[], IO[str]], *, name: str = "updates_path"
) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of a UTF-8 file (opened as bytes; a file opened as text works too), each line read
    on its own and bounded by :data:`MAX_LINE_BYTES` (memory stays bounded whatever the file holds); a leading
    byte-order mark is dropped.

    :raises HilosValidationError: a line longer than the bound, bytes that are not UTF-8 (naming the file and
        the line), a folder, or a file that can't be read.
    """
    number = 0
    try:
        with open_binary() as handle:
            # readline, not iteration: Airflow 2's ObjectStoragePath file wrapper is not iterable
            while True:
                try:
                    raw = handle.readline(MAX_LINE_BYTES + 1)
                except UnicodeDecodeError:  # a file opened as text by the caller: decoded ahead of the line
                    raise _invalid(
                        f"{name} near line {number + 1}", "is not UTF-8 text; save the file as UTF-8"
                    ) from None
                if not raw:
                    break
                if isinstance(raw, str):  # a file opened as text by the caller (then the bound is in characters)
                    raw = raw.encode("utf-8", "surrogatepass")
                number += 1
                if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                    raise _invalid(
                        f"{name} line {number}",
                        f"is longer than {MAX_LINE_BYTES:,} bytes (a row takes a few hundred): is it the right file?",
                    )
                if number == 1:
                    raw = raw.removeprefix(b"\xef\xbb\xbf")  # the byte-order mark some editors write
                try:
                    yield number, raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    utf16 = number == 1 and raw[:2] in (b"\xff\xfe", b"\xfe\xff")
                    hint = "it looks like UTF-16" if utf16 else f"byte {exc.start + 1} of the line is not UTF-8"
                    raise _invalid(
                        f"{name} line {number}", f"is not UTF-8 text ({hint}); save the file as UTF-8"
                    ) from None
    except IsADirectoryError:
        raise _invalid(name, "is a folder, not a file; give the path of the change-set file") from None
    except MemoryError:
        raise _invalid(f"{name} line {number + 1}", "does not fit in memory; is it the right file?") from None


def rows_from_json_lines(
    open_binary: Callable[[], IO[bytes]] | Callable[[], IO[str]], *, name: str = "updates_path"
) -> RowSource:
    """A re-iterable source of ``(line_number, row)`` read line by line from a JSON Lines file (UTF-8, a leading
    byte-order mark allowed, lines of at most :data:`MAX_LINE_BYTES`).

    Blank lines are ignored; a line that is not JSON becomes a row that fails validation. A file whose
    first line is a CSV header is refused at once, saying so (rather than as a hundred lines that are not JSON).

    :param open_binary: opens the file for reading bytes (called once per pass).
    :param name: what the file is called in the error.
    """

    def iterate() -> Iterator[tuple[int, Any]]:
        for number, line in text_lines(open_binary, name=name):
            if not line.strip():
                continue
            if number == 1 and _looks_like_csv_header(line):
                raise _invalid(
                    name,
                    f"looks like CSV, not JSON Lines: its first line is a header ({show(line.strip())}); "
                    "name the file .csv, or set input_format='csv'",
                )
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                yield number, Unparsable(f"line is not JSON ({exc.msg} at character {exc.pos})")
            except (ValueError, RecursionError) as exc:  # a 5,000-digit number, nesting too deep
                reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
                yield number, Unparsable(f"line is not usable JSON ({reason})")

    return iterate


#: The columns of a CSV change set (the conversation id, then every writable field): an empty cell leaves the field
#: unchanged; ``-`` clears it.
CSV_COLUMNS: tuple[str, ...] = ("conversation_id", *WRITABLE_FIELDS)


@dataclass(frozen=True)
class CsvColumns:
    """The columns a CSV file may have: the key's, the others (``prefix``: more named columns, a contact's
    ``meta.<name>``), and which hold lists (names or ids joined by the list separator)."""

    key: str
    names: tuple[str, ...]
    lists: tuple[str, ...]
    prefix: str | None = None

    def known(self, column: str) -> bool:
        return column in self.names or bool(
            self.prefix and column.startswith(self.prefix) and len(column) > len(self.prefix)
        )


#: A conversation change set's columns.
CHANGE_SET_COLUMNS = CsvColumns("conversation_id", CSV_COLUMNS, LIST_FIELDS)


def rows_from_csv(
    open_binary: Callable[[], IO[bytes]] | Callable[[], IO[str]],
    *,
    separator: str = "|",
    name: str = "updates_path",
    columns: CsvColumns = CHANGE_SET_COLUMNS,
) -> RowSource:
    """A re-iterable source of ``(line_number, row)`` read line by line from a CSV change set (UTF-8, a leading
    byte-order mark allowed, lines of at most :data:`MAX_LINE_BYTES`).

    Columns are separated by commas, or by semicolons or tabs if the header uses them (as spreadsheets
    in many locales export). The header names the columns, once each, in any order: ``conversation_id``
    (required), ``status``, ``tags`` (names joined by ``separator``: ``vip|renewal``), ``assigned`` (user ids
    joined by ``separator``), ``assigned_team``, ``channel``. An empty cell leaves that field unchanged (like a
    SQL NULL); ``-`` clears it (``tags`` and ``assigned`` become empty, ``channel`` null).

    One line is one row: a cell may be quoted (``"a,b"``), but no column holds a line break, so a quote that is
    not closed on its line makes that row invalid (naming the line) instead of swallowing the lines after it.

    :param open_binary: opens the file for reading bytes (called once per pass).
    :param separator: what joins the names and ids inside one cell.
    :param name: what the file is called in errors.
    :param columns: the columns it may have (default: a conversation change set's; a contact sync's desired state
        has ``phone``, its fields and ``meta.<name>``).
    :raises HilosValidationError: (when read) a header with an unknown, repeated or missing column.
    """
    if problem := list_separator_problem(separator):
        raise HilosValidationError([("list_separator", problem)], "Invalid Hilos batch input")

    def iterate() -> Iterator[tuple[int, Any]]:
        lines = text_lines(open_binary, name=name)
        _, first = next(lines, (1, ""))
        # commas, or the semicolons (tabs) spreadsheets in many locales write: the header says which
        delimiter = next((d for d in ",;\t" if d in first), ",")
        if delimiter == separator:
            raise _invalid("list_separator", f"{separator!r} also separates the columns of {name}; choose another one")
        header_cells, problem = _cells(first, delimiter)
        if problem:
            raise _invalid(f"{name} line 1", f"the header {problem}")
        header = [column.strip() for column in header_cells]
        _check_header(header, name, columns)
        for line, text in lines:
            if not text.strip():
                continue
            cells, problem = _cells(text, delimiter)
            if problem:
                yield line, Unparsable(problem)
                continue
            if len(cells) != len(header):
                yield line, Unparsable(f"has {len(cells)} cells, the header has {len(header)} columns")
                continue
            if not any(cell.strip() for cell in cells):
                continue
            row: dict[str, Any] = {}
            for column, cell in zip(header, cells, strict=True):
                value = cell.strip()
                if not value:
                    continue  # empty: not given
                if column in columns.lists and value != CLEAR:
                    row[column] = [part.strip() for part in value.split(separator) if part.strip()]
                else:
                    row[column] = value
            yield line, row

    return iterate


def _cells(text: str, delimiter: str) -> tuple[list[str], str | None]:
    """The cells of one CSV line, or what is wrong with it (a quote left open, a stray quote)."""
    line = text.rstrip("\r\n")
    if "\n" in line or "\r" in line:
        return [], "holds a line break inside the line; a cell can't span lines"
    try:
        cells = next(csv.reader([line], delimiter=delimiter, strict=True), [])
    except csv.Error as exc:
        if "end of data" in str(exc) or "unexpected end" in str(exc):
            return [], "has a quote that is not closed on this line; a cell can't span lines (close the quote)"
        return [], f'is not valid CSV ({exc}); quote a cell holding {delimiter!r} or \'"\' as "..." with "" inside'
    return cells, None


def list_separator_problem(separator: Any) -> str | None:
    """What is wrong with a CSV cell's list separator, or ``None``."""
    if not isinstance(separator, str) or len(separator) != 1 or separator in '"\r\n':
        return f"{separator!r} must be one character, not a quote or a line break (e.g. '|')"
    return None


#: At most this many unknown columns are named in an error (the rest are counted).
MAX_LISTED_COLUMNS = 10


def _check_header(header: list[str], name: str, columns: CsvColumns = CHANGE_SET_COLUMNS) -> None:
    problems = []
    unknown = [column for column in header if not columns.known(column)]
    listed = ", ".join(columns.names) + (f", {columns.prefix}<name>" if columns.prefix else "")
    for column in unknown[:MAX_LISTED_COLUMNS]:
        close = difflib.get_close_matches(column, columns.names, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        problems.append((f"column {show(column)}", f"is not a column of a change set; {hint}the columns are {listed}"))
    if len(unknown) > MAX_LISTED_COLUMNS:
        problems.append(("header", f"has {len(unknown) - MAX_LISTED_COLUMNS:,} more unknown columns"))
    counts = Counter(column for column in header if columns.known(column))
    for column, count in counts.items():
        if count > 1:
            problems.append(
                (
                    f"column {column!r}",
                    f"appears {count} times; a change set names each column once (remove the copies)",
                )
            )
    if columns.key not in header:
        have = ", ".join(_short(column) for column in header[:MAX_LISTED_COLUMNS]) or "none"
        more = f" and {len(header) - MAX_LISTED_COLUMNS:,} more" if len(header) > MAX_LISTED_COLUMNS else ""
        problems.append(("header", f"has no {columns.key} column (its columns: {have}{more})"))
    if problems:
        raise HilosValidationError(problems, f"Invalid Hilos batch input: the CSV header of {name}")


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _looks_like_csv_header(line: str) -> bool:
    text = line.strip()
    return (
        not text.startswith(("{", "["))
        and ("conversation_id" in text or "phone" in text)
        and any(sep in text for sep in ",;\t")
    )


def rows_from_path(
    path: str | StoragePath,
    *,
    input_format: str | None = None,
    list_separator: str = "|",
    name: str = "updates_path",
    columns: CsvColumns = CHANGE_SET_COLUMNS,
) -> RowSource:
    """The rows of a change-set file, in the format its extension (or ``input_format``) says.

    :param path: a local path or an ``ObjectStoragePath`` URL.
    :param input_format: ``jsonl`` or ``csv``; ``None``: ``csv`` for a ``.csv`` file, else ``jsonl``.
    :param list_separator: what separates the names and ids in one CSV cell.
    :param name: what the file is called in errors (the argument it came from).
    :raises HilosValidationError: the file does not exist, or the format is unknown.
    """
    location = storage_path(path)
    if location.exists() and location.is_dir():
        raise _invalid(name, f"{str(path)!r} is a folder, not a file; give the path of the change-set file")
    if not location.exists():
        raise HilosValidationError(
            [
                (
                    name,
                    f"{str(path)!r} does not exist; check the path (and that the task writing it ran first), or pass "
                    "the rows as updates",
                )
            ],
            "Invalid Hilos batch input",
        )
    fmt = input_format or ("csv" if str(path).lower().endswith(".csv") else "jsonl")
    if fmt not in INPUT_FORMATS:
        raise HilosValidationError(
            [("input_format", f"{fmt!r} is not one of {', '.join(INPUT_FORMATS)}")], "Invalid Hilos batch input"
        )

    def open_binary() -> IO[bytes]:
        return cast(IO[bytes], location.open("rb"))

    # errors about the file's content name the argument and the file
    label = name if name == str(path) else f"{name} {str(path)!r}"
    if fmt == "csv":
        return rows_from_csv(open_binary, separator=list_separator, name=label, columns=columns)
    return rows_from_json_lines(open_binary, name=label)
