"""How fast a batch sends: an adaptive pacer that finds and holds the rate the API allows, and a
circuit breaker that stops sending when the API looks down.

Both are shared by every worker thread of one batch. The batch asks the pacer for a slot before each
request and tells it how the request was answered; it tells the breaker every answer, and stops
when the breaker opens. Throttled rows are not retried by the worker that sent them: the batch puts
them back with a not-before time (``Retry-After``), so no thread sleeps and the pace alone decides
how fast requests go out.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


def check_rate(value: float | None, name: str = "max_requests_per_second") -> float | None:
    """A rate limit (``max_requests_per_second``, or the argument ``name``): a number greater than 0, or
    ``None`` (no limit)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
        raise ValueError(f"{name}={value!r} must be a number greater than 0 (or None: no limit)")
    return value


class AdaptivePacer:
    """Paces the requests of a batch: additive increase, multiplicative decrease, checked against noise.

    * Until the API answers 429 the batch is not paced (or paced at ``max_requests_per_second``).
    * When 429s exceed the background level, the pace is cut once per *window* (the requests sent
      after the last change; a 429 for an older request does not cut again): to 90 % of what the API
      let through over the last second, or by up to half when most requests are refused.
    * A cut is checked: if the share of 429s does not fall once the batch has slowed down, those 429s
      were not about the rate (an API that refuses a few requests at random): the cut is undone and
      that share becomes the background level.
    * Between cuts the pace grows linearly, by 5 % of the best rate the API accepted per second (at
      least 1 request/s), up to ``max_requests_per_second``: never stuck at the floor (1 request/s).

    :param max_requests_per_second: the ceiling (a configured quota), or ``None``.
    :param clock: monotonic clock (tests inject one).
    :param sleep: sleep function (tests inject one).
    """

    FLOOR = 1.0  #: requests per second the pace never goes below
    CUT = 0.9  #: a cut keeps at most this share of the rate
    DEEPEST_CUT = 0.5  #: and at least this share, however many 429s
    GROWTH = 0.05  #: the pace grows by this share of the best accepted rate, per second
    WINDOW = 1.0  #: seconds of answers the 429 share is measured over
    OVERLOAD = 0.5  #: a 429 share at which the pace is cut even while the last cut is being checked
    MIN_SAMPLES = 20  #: answers before a 429 share below OVERLOAD may cut
    CHECK_SAMPLES = 50  #: answers after a cut before it is checked against noise
    MAX_NOISE = 0.10  #: the highest background 429 share the pacer accepts as noise

    def __init__(
        self,
        max_requests_per_second: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.ceiling = check_rate(max_requests_per_second)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._pace: float | None = None  # None: not paced (the ceiling, if any, applies)
        self._changed_at = 0.0
        self._next_slot = 0.0
        self.generation = 0
        self._recent: deque[tuple[float, bool]] = deque()  # answers to this generation's requests, last WINDOW s
        self._accepted: deque[float] = deque()  # non-429 answers, last WINDOW s
        self._sends: deque[float] = deque()  # send times, last WINDOW s
        self._first_send: float | None = None
        self._first_answer: float | None = None
        self._best = 0.0
        self._answers_since_change = 0
        self._throttled_since_change = 0
        self._check: tuple[float | None, float] | None = None  # (pace before the cut, 429 share that caused it)
        self.noise = 0.0  #: the background share of 429s found so far
        self.cuts = 0  #: how many times the pace was cut
        self.undone = 0  #: cuts undone because the 429s did not respond to them
        self.throttled = 0  #: 429 answers seen

    @property
    def rate(self) -> float | None:
        """The current pace in requests per second (``None``: not paced)."""
        with self._lock:
            return self._rate(self._clock())

    def acquire(self) -> int:
        """Block until this thread may send; return its ticket (the window the request belongs to)."""
        with self._lock:
            now = self._clock()
            if self._first_send is None:
                self._first_send = now
            slot = max(now, self._next_slot)
            if rate := self._rate(now):
                self._next_slot = slot + 1.0 / rate
            self._sends.append(slot)
            ticket = self.generation
        if slot > now:
            self._sleep(slot - now)
        return ticket

    def answered(self, ticket: int, throttled: bool) -> None:
        """Tell the pacer how the request holding ``ticket`` was answered (``throttled``: HTTP 429)."""
        with self._lock:
            now = self._clock()
            self._observe(now, throttled)
            if ticket != self.generation:
                return  # sent before the last change: its answer says nothing about the new pace
            self._recent.append((now, throttled))
            _trim(self._recent, now - self.WINDOW, key=lambda item: item[0])
            self._answers_since_change += 1
            self._throttled_since_change += throttled
            checking = self._check is not None and self._answers_since_change >= self.CHECK_SAMPLES
            if checking and self._undo_if_noise(now):
                return
            if throttled:
                self._cut_if_over_noise(now)

    # -- the rules --------------------------------------------------------------------------------

    def _rate(self, now: float) -> float | None:
        if self._pace is None:
            return self.ceiling
        grown = self._pace + max(1.0, self.GROWTH * self._best) * (now - self._changed_at)
        return min(grown, self.ceiling) if self.ceiling is not None else grown

    def _observe(self, now: float, throttled: bool) -> None:
        if self._first_answer is None:
            self._first_answer = now
        if throttled:
            self.throttled += 1
        else:
            self._accepted.append(now)
        _trim(self._accepted, now - self.WINDOW)
        if now - self._first_answer >= self.WINDOW / 2:
            self._best = max(self._best, len(self._accepted) / self._span(now, self._first_answer))

    def _undo_if_noise(self, now: float) -> bool:
        assert self._check is not None
        before, share_before = self._check
        self._check = None
        share = self._throttled_since_change / self._answers_since_change
        if max(0.01, share_before / 2) <= share <= self.MAX_NOISE:
            self.noise, self.undone = share, self.undone + 1
            self._change(now, before)
            return True
        return False

    def _cut_if_over_noise(self, now: float) -> None:
        answers = len(self._recent)
        share = sum(throttled for _, throttled in self._recent) / answers
        margin = 2 * math.sqrt(max(self.noise, 0.01) * (1 - self.noise) / answers) + 0.01
        overloaded = answers >= 5 and share >= self.OVERLOAD
        above_noise = self._check is None and answers >= self.MIN_SAMPLES and share > self.noise + margin
        if not (overloaded or above_noise):
            return
        current = min(self._rate(now) or math.inf, self._measured(self._sends, now, self._first_send))
        if self._first_answer is not None and now - self._first_answer >= self.WINDOW / 2 and self._accepted:
            current = min(current, self._measured(self._accepted, now, self._first_answer))
        factor = min(self.CUT, max(self.DEEPEST_CUT, (1 - share) * 0.95))
        self._check = (None if self._pace is None else self._rate(now), share)
        self.cuts += 1
        self._change(now, max(self.FLOOR, factor * current))

    def _measured(self, times: deque[float], now: float, since: float | None) -> float:
        _trim(times, now - self.WINDOW)
        return len(times) / self._span(now, since if since is not None else now)

    def _span(self, now: float, since: float) -> float:
        return min(self.WINDOW, max(now - since, 1e-3))

    def _change(self, now: float, pace: float | None) -> None:
        self._pace = pace
        self._changed_at = now
        self.generation += 1
        self._recent.clear()
        self._answers_since_change = self._throttled_since_change = 0


def _itself(moment: float) -> float:
    return moment


def _trim(times: deque[Any], oldest: float, key: Callable[[Any], float] = _itself) -> None:
    while times and key(times[0]) < oldest:
        times.popleft()


@dataclass
class CircuitBreaker:
    """Stops a batch when the API looks unavailable, instead of trying every row ``max_attempts`` times.

    It opens after ``max_failed_attempts`` consecutive failed requests (5xx, connection errors,
    timeouts) with no answer from a working API in between, or after ``max_failed_rows`` consecutive
    rows that failed after all their retries (whatever the cause, 429 included) with no success in
    between. A 429 alone neither opens nor resets it: the pacer deals with throttling.

    :param max_failed_attempts: consecutive failed requests that open it.
    :param max_failed_rows: consecutive rows failed after every retry that open it.
    """

    max_failed_attempts: int
    max_failed_rows: int
    failed_attempts: int = 0
    failed_rows: int = 0
    failing_since: datetime | None = None
    last_problem: str = ""
    open: bool = False

    @classmethod
    def for_concurrency(cls, max_concurrency: int) -> CircuitBreaker:
        """Thresholds that let a flaky API through (30 % errors never open it) and stop an outage after
        at most four requests per worker."""
        return cls(max_failed_attempts=max(20, 4 * max_concurrency), max_failed_rows=max(5, max_concurrency))

    def succeeded(self) -> None:
        """A row was applied: the API works."""
        self.failed_attempts = self.failed_rows = 0
        self.failing_since = None

    def refused(self) -> None:
        """The API answered with a refusal (4xx): it is up, even if this request was wrong."""
        self.failed_attempts = 0
        if self.failed_rows == 0:
            self.failing_since = None

    def attempt_failed(self, problem: str) -> None:
        """A request failed in a way retrying may fix (5xx, connection error, timeout)."""
        self._failing(problem)
        self.failed_attempts += 1
        self.open = self.open or self.failed_attempts >= self.max_failed_attempts

    def row_failed(self, problem: str) -> None:
        """A row failed after every retry."""
        self._failing(problem)
        self.failed_rows += 1
        self.open = self.open or self.failed_rows >= self.max_failed_rows

    def _failing(self, problem: str) -> None:
        self.last_problem = problem
        if self.failing_since is None:
            self.failing_since = datetime.now(UTC)

    def describe(self) -> str:
        """Why it opened: ``64 consecutive failed requests since 18:43:02 UTC (last: HTTP 503 ...)``."""
        since = self.failing_since.strftime("%Y-%m-%d %H:%M:%S UTC") if self.failing_since else "now"
        what = (
            f"{self.failed_attempts} consecutive failed requests"
            if self.failed_attempts >= self.max_failed_attempts
            else f"{self.failed_rows} consecutive rows failed after every retry"
        )
        return f"{what} since {since} (last: {self.last_problem})"
