"""How fast a connection sends: an adaptive pacer that finds and holds the rate the API allows (under the
connection's quota), and a circuit breaker that notices when the API looks down.

The hook's transport owns one pacer and one breaker, shared by every request the hook sends, from every thread:
single updates, batches, listings. It asks the pacer for a slot before each request and tells it how the request was
answered; it tells the breaker every answer. A batch stops when the breaker opens. Throttled rows are not retried by
the worker that sent them: the batch puts them back with a not-before time (``Retry-After``), so no thread sleeps and
the pace alone decides how fast requests go out.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any


def check_rate(value: float | None, name: str = "max_requests_per_second") -> float | None:
    """A rate limit (``max_requests_per_second``, or the argument ``name``): a number greater than 0, or
    ``None`` (no limit)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
        raise ValueError(f"{name}={value!r} must be a number greater than 0 (or None: no limit)")
    return value


class AdaptivePacer:
    """Paces the requests of a connection: additive increase, multiplicative decrease, checked against noise.

    * Until the API answers 429 the requests are not paced (or paced at ``max_requests_per_second``, the quota).
    * When 429s exceed the background level, the pace is cut once per *window* (the requests sent
      after the last change; a 429 for an older request does not cut again): to 90 % of what the API
      let through over the last second, or by up to half when most requests are refused.
    * A cut is checked: if the share of 429s does not fall once the batch has slowed down, those 429s
      were not about the rate (an API that refuses a few requests at random): the cut is undone and
      that share becomes the background level.
    * Between cuts the pace grows linearly, by 5 % of the best rate the API accepted per second (at
      least 1 request/s), up to ``max_requests_per_second``: never stuck at the floor (1 request/s).
    * It holds just under the rate at which 429s began: a cut made while the API still accepted most requests
      remembers the rate it accepted (its limit, found); growing back, the pace slows to a tenth of its growth
      once it reaches 95 % of that limit, for half a minute, instead of probing past the limit again at once
      (each probe past it costs a burst of 429s). A wall of 429s (an outage) does not lower that limit.

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
    MAX_LATE = 0.05  #: seconds a thread may wake after its slot (or one interval, if longer) and still use it
    HOLD = 0.95  #: growing back, the pace slows down at this share of the rate at which 429s began
    PROBE = 0.1  #: the share of its growth the pace keeps above that point
    HOLD_SECONDS = 30.0  #: for this long after reaching it; then it grows as before (a quota may have been raised)

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
        #: (pace before the cut, 429 share that caused it, the limit before it)
        self._check: tuple[float | None, float, float | None] | None = None
        #: the rate the API accepted when 429s began (``None``: not found yet)
        self.limit: float | None = None
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
        """Block until this thread may send; return its ticket (the window the request belongs to).

        A thread that wakes up well after its slot (the process was busy: an import, another thread holding the
        interpreter) takes a new slot instead of sending late: honoured late, the slots of every thread that was held
        up would all be sent at once, a burst over the pace.
        """
        while True:
            with self._lock:
                now = self._clock()
                if self._first_send is None:
                    self._first_send = now
                slot = max(now, self._next_slot)
                if rate := self._rate(now):
                    self._next_slot = slot + 1.0 / rate
                ticket = self.generation
            if slot > now:
                self._sleep(slot - now)
            if not rate or self._clock() - slot <= max(1.0 / rate, self.MAX_LATE):
                break
        with self._lock:
            self._sends.append(slot)
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
        growth, elapsed = max(1.0, self.GROWTH * self._best), now - self._changed_at
        grown = self._pace + growth * elapsed
        if self.limit is not None and grown > (hold := self.HOLD * self.limit):
            reached = max(0.0, (hold - self._pace) / growth)  # seconds after the change it got there
            held = min(elapsed - reached, self.HOLD_SECONDS)
            grown = max(self._pace, hold) + growth * (self.PROBE * held + (elapsed - reached - held))
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
        before, share_before, limit_before = self._check
        self._check = None
        share = self._throttled_since_change / self._answers_since_change
        if max(0.01, share_before / 2) <= share <= self.MAX_NOISE:
            self.noise, self.undone = share, self.undone + 1
            self.limit = limit_before  # those 429s said nothing about the rate
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
        limit = self.limit
        if self._first_answer is not None and now - self._first_answer >= self.WINDOW / 2 and self._accepted:
            accepted = self._measured(self._accepted, now, self._first_answer)
            if accepted >= current / 2:  # the API still accepted most: 429s began at about this rate
                limit = accepted
            current = min(current, accepted)
        factor = min(self.CUT, max(self.DEEPEST_CUT, (1 - share) * 0.95))
        self._check = (None if self._pace is None else self._rate(now), share, self.limit)
        self.limit = limit
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


class CircuitBreaker:
    """Notices when the API looks unavailable, from every request one connection's hook sends.

    It opens after ``max_failed_attempts`` consecutive failed requests (5xx, connection errors,
    timeouts) with no answer from a working API in between, or after ``max_failed_rows`` consecutive
    updates that failed after all their retries (whatever the cause, 429 included) with no success in
    between. A 429 alone neither opens nor resets it: the pacer deals with throttling.

    Once open it stays open for a cool-down (:meth:`cool_down`: 15 s, doubling with every opening in a row up to
    5 minutes); a batch stops sending (or, deferrable, waits that long in the triggerer). After the cool-down it
    is half-open: the next failed request opens it again at once, the next success closes it.

    Thread-safe: the hook's requests report to it from every worker thread.

    :param max_failed_attempts: consecutive failed requests that open it.
    :param max_failed_rows: consecutive updates failed after every retry that open it.
    :param opened_before: how many times it opened in a row before (a resumed task passes it on).
    :param clock: monotonic clock (tests inject one).
    """

    COOL_DOWN = 15.0  #: seconds of the first cool-down
    MAX_COOL_DOWN = 300.0  #: the longest cool-down

    def __init__(
        self,
        max_failed_attempts: int,
        max_failed_rows: int,
        *,
        opened_before: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failed_attempts = max_failed_attempts
        self.max_failed_rows = max_failed_rows
        self.failed_attempts = 0
        self.failed_rows = 0
        self.failing_since: datetime | None = None
        self.last_problem = ""
        #: how many times it opened with no success in between (it opens again at once while half-open)
        self.openings = opened_before
        self._half_open = opened_before > 0
        self._opened_at: float | None = None
        self._reason = ""
        self._clock = clock
        self._lock = threading.Lock()

    @classmethod
    def for_concurrency(cls, max_concurrency: int, **kwargs: Any) -> CircuitBreaker:
        """Thresholds that let a flaky API through (30 % errors never open it) and stop an outage after
        at most four requests per worker."""
        return cls(max_failed_attempts=max(20, 4 * max_concurrency), max_failed_rows=max(5, max_concurrency), **kwargs)

    def resize(self, max_concurrency: int) -> None:
        """Raise the thresholds for ``max_concurrency`` requests in flight (never lowers them)."""
        with self._lock:
            self.max_failed_attempts = max(self.max_failed_attempts, 4 * max_concurrency)
            self.max_failed_rows = max(self.max_failed_rows, max_concurrency)

    @property
    def open(self) -> bool:
        """Whether it is open (it stays open, once opened, until a success closes it)."""
        return self._opened_at is not None

    def succeeded(self) -> None:
        """A request was answered with success: the API works."""
        with self._lock:
            self.failed_attempts = self.failed_rows = 0
            self.failing_since = None
            self._opened_at = None
            self._half_open = False
            self.openings = 0

    def refused(self) -> None:
        """The API answered with a refusal (4xx): it is up, even if this request was wrong."""
        with self._lock:
            self.failed_attempts = 0
            if self.failed_rows == 0:
                self.failing_since = None

    def attempt_failed(self, problem: str) -> None:
        """A request failed in a way retrying may fix (5xx, connection error, timeout)."""
        with self._lock:
            self._failing(problem)
            self.failed_attempts += 1
            if self._half_open or self.failed_attempts >= self.max_failed_attempts:
                self._trip()

    def row_failed(self, problem: str) -> None:
        """An update failed after every retry."""
        with self._lock:
            self._failing(problem)
            self.failed_rows += 1
            if self.failed_rows >= self.max_failed_rows:
                self._trip()

    def cool_down(self) -> float:
        """Seconds this opening waits before the API is tried again."""
        return min(self.COOL_DOWN * 2.0 ** max(self.openings - 1, 0), self.MAX_COOL_DOWN)

    def retry_in(self) -> float:
        """Seconds left of the cool-down (0 when closed, or when it is over)."""
        with self._lock:
            if self._opened_at is None:
                return 0.0
            return max(0.0, self._opened_at + self.cool_down() - self._clock())

    def half_open(self) -> None:
        """The cool-down is over: let requests through; the next failure opens it again at once."""
        with self._lock:
            self._opened_at = None
            self._half_open = True
            self.failed_attempts = self.failed_rows = 0

    def describe(self) -> str:
        """Why it opened, as it was when it opened (one number for the log and the error):
        ``64 consecutive failed requests since 2025-01-01 18:43:02 UTC (last: HTTP 503)``."""
        with self._lock:
            return self._reason or self._describe()

    def _failing(self, problem: str) -> None:
        self.last_problem = problem
        if self.failing_since is None:
            self.failing_since = datetime.now(UTC)

    def _trip(self) -> None:
        if self._opened_at is not None:
            return
        self.openings += 1
        self._opened_at = self._clock()
        self._reason = self._describe()

    def _describe(self) -> str:
        since = self.failing_since.strftime("%Y-%m-%d %H:%M:%S UTC") if self.failing_since else "now"
        if self.failed_rows >= self.max_failed_rows:
            what = f"{self.failed_rows} consecutive rows failed after every retry"
        elif self._half_open and self.failed_attempts < self.max_failed_attempts:
            what = "it was still failing after a cool-down"
        else:
            what = f"{self.failed_attempts} consecutive failed requests"
        return f"{what} since {since} (last: {self.last_problem})"
