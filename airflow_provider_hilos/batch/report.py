"""The per-row report: one JSON line per row, in input order, whatever order the outcomes arrive in."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from typing import IO, Any

#: Told every row's outcome record as it arrives (a sync keeps its state from these).
OutcomeListener = Callable[[dict[str, Any]], None]


class ReportWriter:
    """Writes the outcome of every row of a batch, in the order the rows were read.

    Outcomes arrive in any order (workers, retries); a row's line is held until the lines of every row read
    before it are written, so the report lists rows as the input does.

    :param stream: where the lines go (``None``: no report; every call is then free).
    :param listener: told each outcome record as it arrives (in the order outcomes arrive, not input order).
    """

    def __init__(self, stream: IO[str] | None, listener: OutcomeListener | None = None) -> None:
        self.stream = stream
        self.listener = listener
        #: why the report could not be written (a full disk, a lost permission): the batch stops, and says so
        self.failed: OSError | None = None
        #: row numbers read and not yet written, in reading order; and records waiting for an earlier row's
        self._order: deque[int] = deque()
        self._held: dict[int, dict[str, Any]] = {}

    def row_read(self, number: int) -> None:
        """Row ``number`` was read: its line comes after those of the rows read before it."""
        if self.stream is not None:
            self._order.append(number)

    def outcome(self, record: dict[str, Any]) -> None:
        """Report one row's outcome (``record["row"]`` is its number); written once the rows before it are."""
        if self.listener is not None:
            self.listener(record)
        if self.stream is None:
            return
        self._held[record["row"]] = record
        order, held = self._order, self._held
        try:
            while order and order[0] in held:
                self.stream.write(json.dumps(held.pop(order.popleft())) + "\n")
        except OSError as exc:  # the outcomes still reach the listener (a sync's state, its pending log)
            self.failed, self.stream = exc, None
            held.clear()
            order.clear()

    def flush(self) -> None:
        """Write whatever is still held (only a row that never got an outcome, which a finished batch rules out)."""
        if self.stream is not None:
            try:
                for number in sorted(self._held):
                    self.stream.write(json.dumps(self._held.pop(number)) + "\n")
                self.stream.flush()
            except OSError as exc:
                self.failed, self.stream = exc, None
            self._order.clear()
