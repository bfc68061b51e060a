"""Change sets in files: JSON Lines and CSV, read line by line (twice, never held in memory), through Airflow's
``ObjectStoragePath`` (a local path, ``file://``, ``s3://``, ``gs://`` ... with the matching provider installed).

Each reader returns a :data:`~airflow_provider_hilos.rows.RowSource`: ``(line number, row)`` pairs, afresh on each
call. A line that cannot be read becomes a row that fails validation naming its line.
"""

from __future__ import annotations

import csv
import difflib
import json
from collections.abc import Callable, Iterator
from typing import IO, Any

from airflow_provider_hilos.exceptions import HilosValidationError
from airflow_provider_hilos.rows import RowSource, Unparsable
from airflow_provider_hilos.schemas import CLEAR, LIST_FIELDS, WRITABLE_FIELDS, show
from airflow_provider_hilos.storage import StoragePath, storage_path

#: The formats ``updates_path`` may be in (by default, chosen by its extension: ``.csv`` or anything else).
INPUT_FORMATS = ("jsonl", "csv")


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
                    yield number, Unparsable(f"line is not JSON ({exc.msg} at character {exc.pos})")
                except (ValueError, RecursionError) as exc:  # a 5,000-digit number, nesting too deep
                    reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
                    yield number, Unparsable(f"line is not usable JSON ({reason})")

    return iterate


#: The columns of a CSV change set (the conversation id, then every writable field): an empty cell leaves the field
#: unchanged; ``-`` clears it.
CSV_COLUMNS: tuple[str, ...] = ("conversation_id", *WRITABLE_FIELDS)


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
                    yield line, Unparsable(f"has {len(cells)} cells, the header has {len(header)} columns")
                    continue
                row: dict[str, Any] = {}
                for column, cell in zip(header, cells, strict=True):
                    value = cell.strip()
                    if not value:
                        continue  # empty: not given
                    if column in LIST_FIELDS and value != CLEAR:
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


def rows_from_path(
    path: str | StoragePath,
    *,
    input_format: str | None = None,
    list_separator: str = "|",
    name: str = "updates_path",
) -> RowSource:
    """The rows of a change-set file, in the format its extension (or ``input_format``) says.

    :param path: a local path or an ``ObjectStoragePath`` URL.
    :param input_format: ``jsonl`` or ``csv``; ``None``: ``csv`` for a ``.csv`` file, else ``jsonl``.
    :param list_separator: what separates the names and ids in one CSV cell.
    :param name: what the file is called in errors (the argument it came from).
    :raises HilosValidationError: the file does not exist, or the format is unknown.
    """
    location = storage_path(path)
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

    def open_text() -> IO[str]:
        return location.open("r", encoding="utf-8", newline="")

    if fmt == "csv":
        return rows_from_csv(open_text, separator=list_separator, name=name)
    return rows_from_json_lines(open_text, name=name)
