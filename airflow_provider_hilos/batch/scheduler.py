"""Which row goes out next: new rows, and rows waiting for a retry, with never more than ``max_in_flight`` requests
in flight. Retries are scheduled, not slept through: a row answered 429, 5xx or not at all waits here with a
not-before time (``Retry-After``, or the hook's backoff) while the workers go on with other rows.

Time comes from a :class:`Clock`, so tests decide what "now" is and never sleep.
"""

from __future__ import annotations

import heapq
import time
from enum import Enum
from typing import Generic, NamedTuple, Protocol, TypeVar

Row = TypeVar("Row")


class Clock(Protocol):
    """Monotonic time and a way to wait."""

    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock: ``time.monotonic`` and ``time.sleep``."""

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class Action(Enum):
    """What the engine does next."""

    RETRY = "retry"  #: send the row whose retry is due (:meth:`Scheduler.take_retry`)
    READ = "read"  #: take the next row of the input
    WAIT_FOR_ANSWER = "wait_for_answer"  #: wait for a request in flight to finish, at most until ``until``
    SLEEP = "sleep"  #: nothing in flight: wait until ``until``, when a retry is due
    DONE = "done"  #: no input left, nothing in flight, nothing waiting


class Step(NamedTuple):
    action: Action
    #: for WAIT_FOR_ANSWER and SLEEP: when the next retry is due (``None``: no retry waiting)
    until: float | None = None


class Scheduler(Generic[Row]):
    """Decides the next step of a batch from what is in flight, what waits for a retry, and the clock.

    :param max_in_flight: requests submitted and not yet answered, at most (bounds memory; keeps every worker busy).
    :param clock: the clock retry times are read on.
    """

    def __init__(self, max_in_flight: int, clock: Clock | None = None) -> None:
        self.max_in_flight = max_in_flight
        self.clock: Clock = clock or SystemClock()
        self.in_flight = 0
        self._waiting: list[tuple[float, int, Row]] = []
        self._order = 0  # ties between equal times keep the order they were scheduled in

    @property
    def waiting(self) -> int:
        """Rows waiting for a retry."""
        return len(self._waiting)

    def sent(self) -> None:
        """A request was submitted."""
        self.in_flight += 1

    def answered(self) -> None:
        """A request's outcome was collected."""
        self.in_flight -= 1

    def retry_later(self, row: Row, delay: float) -> float:
        """Send ``row`` again ``delay`` seconds from now; returns the not-before time."""
        not_before = self.clock.now() + max(delay, 0.0)
        self._order += 1
        heapq.heappush(self._waiting, (not_before, self._order, row))
        return not_before

    def next_step(self, *, more_input: bool) -> Step:
        """The next step: due retries first, then new rows, then waiting."""
        due = self._waiting[0][0] if self._waiting else None
        if self.in_flight >= self.max_in_flight:
            return Step(Action.WAIT_FOR_ANSWER, None)
        if due is not None and due <= self.clock.now():
            return Step(Action.RETRY)
        if more_input:
            return Step(Action.READ)
        if self.in_flight:
            return Step(Action.WAIT_FOR_ANSWER, due)
        if due is not None:
            return Step(Action.SLEEP, due)
        return Step(Action.DONE)

    def take_retry(self) -> Row:
        """The row whose retry is due (call after :attr:`Action.RETRY`)."""
        return heapq.heappop(self._waiting)[2]

    def drain(self) -> list[Row]:
        """Every row still waiting for a retry, in the order they were due (the batch stopped)."""
        rows = [row for _, _, row in sorted(self._waiting)]
        self._waiting.clear()
        return rows
