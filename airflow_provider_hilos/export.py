"""Writing conversations out: a change-set file (JSON Lines or CSV) that the batch operator reads back as is.

The file is written to a temporary name beside the target and moved into place once every page was read
(:class:`~airflow_provider_hilos.storage.AtomicText`): a failed export leaves no half file under the target name.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Iterable
from typing import IO, Any

from airflow_provider_hilos.conversations import ConversationState
from airflow_provider_hilos.exceptions import HilosValidationError
from airflow_provider_hilos.inputs import CSV_COLUMNS, INPUT_FORMATS, list_separator_problem
from airflow_provider_hilos.schemas import CLEAR, LIST_FIELDS
from airflow_provider_hilos.storage import AtomicText, StoragePath


def output_format(path: str, chosen: str | None) -> str:
    """``chosen``, or the format the path's extension says (``.csv``: CSV; anything else: JSON Lines).

    :raises HilosValidationError: ``chosen`` is not a known format.
    """
    fmt = chosen or ("csv" if str(path).lower().endswith(".csv") else "jsonl")
    if fmt not in INPUT_FORMATS:
        raise HilosValidationError(
            [("output_format", f"must be one of {', '.join(INPUT_FORMATS)} (default: by the extension)")],
            "Invalid Hilos export arguments",
        )
    return fmt


class ChangeSetWriter:
    """Writes :class:`ConversationState` rows in the change-set format.

    :param stream: an open text stream.
    :param fmt: ``jsonl`` or ``csv``.
    :param separator: what joins the names and ids of one CSV cell.
    """

    def __init__(self, stream: IO[str], fmt: str, separator: str = "|") -> None:
        if problem := list_separator_problem(separator):
            raise HilosValidationError([("list_separator", problem)], "Invalid Hilos export arguments")
        self.stream, self.fmt, self.separator = stream, fmt, separator
        self._csv = csv.writer(stream, lineterminator="\n") if fmt == "csv" else None
        if self._csv is not None:
            self._csv.writerow(CSV_COLUMNS)
        self.written = 0

    def write(self, state: ConversationState) -> None:
        row = state.change_row()
        if self._csv is None:
            self.stream.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
        else:
            self._csv.writerow([self._cell(column, row.get(column)) for column in CSV_COLUMNS])
        self.written += 1

    def _cell(self, column: str, value: Any) -> str:
        # "-" is "clear" in a change set: an empty list or a missing team/channel is written so it round-trips
        if column in LIST_FIELDS:
            return self.separator.join(str(item) for item in value) if value else CLEAR
        if value is None:
            return "" if column == "status" else CLEAR  # a status can't be cleared: empty leaves it as it is
        return str(value)


def write_change_set(
    target: StoragePath,
    states: Iterable[ConversationState],
    *,
    fmt: str,
    separator: str = "|",
    log: Any = None,
    progress_interval: float = 30.0,
) -> int:
    """Write ``states`` to ``target`` atomically; return how many were written.

    :param log: a logger for a progress line every ``progress_interval`` seconds.
    """
    file = AtomicText(target)
    try:
        writer = ChangeSetWriter(file.open(), fmt, separator)
        last = time.monotonic()
        for state in states:
            writer.write(state)
            if log is not None and time.monotonic() - last >= progress_interval:
                last = time.monotonic()
                log.info("Hilos export: %d conversation(s) written so far", writer.written)
        file.commit()
    finally:
        file.abort()  # a no-op once committed
    return writer.written
