"""Bulk conversation updates: validate every row first, then send them concurrently over the hook's
one pooled session, paced, slowing the whole batch down when the API answers 429.

Rows are read as a stream (twice: once to validate, once to send) so memory stays flat however
large the input is; responses are counted and dropped, never kept.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import IO, TYPE_CHECKING, Any, NamedTuple

from airflow_provider_hilos.exceptions import (
    HilosAPIError,
    HilosBatchError,
    HilosEndpointNotFoundError,
    HilosError,
    HilosValidationError,
)
from airflow_provider_hilos.models import ValidatedUpdate, show, validate_update

if TYPE_CHECKING:
    from airflow_provider_hilos.hooks.hilos import HilosHook

#: How many invalid rows an error message lists (all of them are counted, and written to the report).
MAX_LISTED_INVALID_ROWS = 50
_ERROR_CHARS = 300


class FailurePolicy(str, Enum):
    """What a batch does when rows fail.

    * ``fail_at_end``: send every row, then fail if more rows failed than ``max_failed_ratio`` allows.
    * ``fail_fast``: stop sending as soon as that many rows failed (rows not sent are reported).
    * ``never``: send every row and never fail; read the counts and the report.
    """

    FAIL_AT_END = "fail_at_end"
    FAIL_FAST = "fail_fast"
    NEVER = "never"


class RequestPacer:
    """Shared pacing for every thread of a batch: a rate limit, and a slow-down on 429.

    ``acquire()`` spaces requests at most ``max_per_second`` apart (no limit when ``None``) and returns
    a ticket: the pace generation the request was scheduled under. ``throttled(retry_after, ticket)``
    pauses *every* thread until ``Retry-After`` has passed and halves the pace, once per burst: 429s
    for requests scheduled before the last slow-down only extend the pause. Each success then raises
    the pace by 2 % until the limit (or none) is back.

    :param max_per_second: the client-side rate limit, or ``None``.
    :param clock: monotonic clock (tests inject one).
    :param sleep: sleep function (tests inject one).
    """

    MIN_RATE = 0.5

    def __init__(self, max_per_second: float | None = None, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.max_per_second = check_rate(max_per_second)
        self.rate: float | None = max_per_second
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_slot = 0.0
        self._pause_until = 0.0
        self._generation = 0
        self._recent: deque[float] = deque(maxlen=64)
        self.throttle_events = 0

    def acquire(self) -> int:
        """Block until this thread may send its next request; return its ticket (the pace generation)."""
        with self._lock:
            now = self._clock()
            slot = max(now, self._next_slot, self._pause_until)
            if self.rate:
                self._next_slot = slot + 1.0 / self.rate
            self._recent.append(slot)
            ticket = self._generation
        if slot > now:
            self._sleep(slot - now)
        return ticket

    def throttled(self, retry_after: float | None, ticket: int | None = None) -> None:
        """The API answered 429: pause everyone; go on at half the pace unless this burst already did.

        :param retry_after: the seconds ``Retry-After`` asked for (1 when absent).
        :param ticket: what :meth:`acquire` returned for the throttled request.
        """
        with self._lock:
            now = self._clock()
            self._pause_until = max(self._pause_until, now + (retry_after if retry_after is not None else 1.0))
            self._next_slot = max(self._next_slot, self._pause_until)
            if ticket is not None and ticket < self._generation:
                return  # scheduled before the last slow-down: part of a burst already answered
            self._generation += 1
            self.throttle_events += 1
            current = self.rate or self._observed_rate(now)
            self.rate = max(self.MIN_RATE, current / 2)

    def succeeded(self) -> None:
        """A request went through: recover the pace slowly."""
        if self.rate is None or self.rate == self.max_per_second:
            return
        with self._lock:
            if self.rate is None:
                return
            self.rate *= 1.02
            if self.max_per_second is not None and self.rate >= self.max_per_second:
                self.rate = self.max_per_second

    def _observed_rate(self, now: float) -> float:
        if len(self._recent) < 2:
            return 10.0
        span = max(now - self._recent[0], 1e-3)
        return len(self._recent) / span


@dataclass
class BatchResult:
    """What a batch did; small enough for XCom (``failed_rows`` is capped).

    :param total: rows read.
    :param updated: rows the API accepted.
    :param failed: rows the API refused or that failed after every retry.
    :param skipped: invalid rows skipped (``skip_invalid_rows``).
    :param not_sent: valid rows not sent because ``fail_fast`` stopped the batch.
    :param duration_seconds: wall time of the sending phase.
    :param rate_per_second: requests finished per second in that phase.
    :param failed_rows: the first failed rows: row number, conversation id, status code, error.
    :param failed_rows_omitted: failed rows not listed in ``failed_rows`` (they are in the log and report).
    :param throttled: how many times the API answered 429 and the batch slowed down.
    :param report_path: where the full per-row report was written, if anywhere.
    """

    total: int = 0
    updated: int = 0
    failed: int = 0
    skipped: int = 0
    not_sent: int = 0
    duration_seconds: float = 0.0
    rate_per_second: float = 0.0
    failed_rows: list[dict[str, Any]] = field(default_factory=list)
    failed_rows_omitted: int = 0
    throttled: int = 0
    report_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- row sources ------------------------------------------------------------------------------


def rows_from_updates(updates: Any) -> Callable[[], Iterator[tuple[int, Any]]]:
    """A re-iterable source of ``(row_number, row)`` from a list (or a JSON string of a list).

    :raises HilosValidationError: when ``updates`` is not a list of rows.
    """
    if isinstance(updates, (str, bytes)):
        try:
            updates = json.loads(updates)
        except (ValueError, RecursionError) as exc:
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            raise HilosValidationError(
                [("updates", f"is a string but not JSON ({reason}): {show(updates)}; pass a list of rows, an XComArg, "
                  "or a template rendering a JSON list")], "Invalid Hilos batch input") from None
    if isinstance(updates, Mapping) or not isinstance(updates, Iterable):
        raise HilosValidationError(
            [("updates", f"must be a list of {{\"conversation_id\": ..., <fields>}} rows, got "
              f"{type(updates).__name__} {show(updates)}")], "Invalid Hilos batch input")
    rows = updates if isinstance(updates, (list, tuple)) else list(updates)
    return lambda: enumerate(rows, start=1)


def rows_from_json_lines(open_text: Callable[[], IO[str]]) -> Callable[[], Iterator[tuple[int, Any]]]:
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


class _Outcome(NamedTuple):
    """What a worker reports for one row."""

    number: int
    conversation_id: str
    status: int | None = None
    error: str | None = None
    #: the error, when no other row can succeed either (the batch must stop)
    stopper: HilosError | None = None
    #: False when the batch had stopped before this row's turn came
    sent: bool = True


def validate_row(row: Any) -> ValidatedUpdate:
    """Validate one batch row: ``{"conversation_id": ..., <fields>}`` (or ``{"conversation_id", "payload"}``).

    :raises HilosValidationError: naming every problem of the row.
    """
    if isinstance(row, _Unparsable):
        raise HilosValidationError([("row", row.reason)], "Invalid row")
    if not isinstance(row, Mapping):
        raise HilosValidationError(
            [("row", f'must be an object like {{"conversation_id": "...", "status": "CLOSED"}}, got '
              f"{type(row).__name__} {show(row)}")], "Invalid row")
    fields = {k: v for k, v in row.items() if k not in ("conversation_id", "payload")}
    payload = row.get("payload")
    if payload is not None:
        if not isinstance(payload, Mapping):
            raise HilosValidationError([("payload", f"must be an object, got {show(payload)}")], "Invalid row")
        fields = {**payload, **fields}
    if "conversation_id" not in row:
        raise HilosValidationError([("conversation_id", "is missing; every row needs the conversation's UUID")],
                                   "Invalid row")
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
                [("conversation_id", f"{update.conversation_id} is already updated by row {first}; two rows for "
                  "one conversation would race: keep one row per conversation (its last change), or send the "
                  "rows in separate batches")],
                "Invalid row",
            )
        return update


def _row_label(row: Any) -> str:
    cid = row.get("conversation_id") if isinstance(row, Mapping) else None
    return f" (conversation {show(cid)})" if cid is not None else ""


# -- the batch --------------------------------------------------------------------------------


class BatchUpdater:
    """Send many conversation updates through one hook.

    :param hook: the hook whose pooled session carries every request (``pool_maxsize`` should be
        at least ``max_concurrency``).
    :param max_concurrency: requests in flight at once.
    :param max_requests_per_second: client-side rate limit, or ``None``.
    :param failure_policy: ``fail_at_end``, ``fail_fast`` or ``never`` (see :class:`FailurePolicy`).
    :param max_failed_ratio: the share of rows allowed to fail before the batch fails (0: none).
    :param skip_invalid_rows: skip invalid rows (counted and reported) instead of refusing the batch.
    :param report: where the per-row JSON Lines report goes: an open text stream, a callable that opens
        one (called only once validation passed, and closed at the end), or ``None``.
    :param max_failed_rows: how many failed rows the result lists (all are logged and reported).
    :param progress_interval: seconds between progress lines in the log.
    :param log: where progress and failures are logged (``logging.Logger``-like).
    """

    def __init__(
        self,
        hook: HilosHook,
        *,
        max_concurrency: int = 16,
        max_requests_per_second: float | None = None,
        failure_policy: FailurePolicy | str = FailurePolicy.FAIL_AT_END,
        max_failed_ratio: float = 0.0,
        skip_invalid_rows: bool = False,
        report: IO[str] | Callable[[], IO[str]] | None = None,
        max_failed_rows: int = 100,
        progress_interval: float = 10.0,
        log: Any = None,
    ) -> None:
        self.hook = hook
        self.max_concurrency = check_concurrency(max_concurrency)
        self.pacer = RequestPacer(max_requests_per_second)
        self.failure_policy = check_failure_policy(failure_policy)
        self.max_failed_ratio = check_ratio(max_failed_ratio)
        self.skip_invalid_rows = skip_invalid_rows
        self._report_target = report
        self.report: IO[str] | None = None
        self.max_failed_rows = max_failed_rows
        self.progress_interval = progress_interval
        self.log = log or hook.log
        #: An error that no other row could escape (the endpoint does not exist): the batch stopped on it.
        self.stopped_by: HilosError | None = None
        self._halt = threading.Event()  # set when the batch stops: rows waiting for a worker are not sent

    # -- phase 1: validate everything before sending anything --

    def validate_all(self, rows: Callable[[], Iterator[tuple[int, Any]]]) -> tuple[int, int]:
        """Read every row once and validate it. Returns ``(total, invalid)``.

        :raises HilosValidationError: listing the invalid rows, unless ``skip_invalid_rows``.
        """
        total = invalid = 0
        listed: list[tuple[str, str]] = []
        checker = RowChecker()
        for number, row in rows():
            total += 1
            try:
                checker.check(number, row)
            except HilosValidationError as exc:
                invalid += 1
                if len(listed) < MAX_LISTED_INVALID_ROWS:
                    reasons = "; ".join(f"{f}: {m}" for f, m in exc.problems)
                    listed.append((f"row {number}{_row_label(row)}", reasons))
        if invalid and not self.skip_invalid_rows:
            if invalid > len(listed):
                listed.append(("...", f"and {invalid - len(listed)} more invalid row(s)"))
            raise HilosValidationError(
                listed,
                f"Hilos batch refused: {invalid} of {total} row(s) are invalid and nothing was sent "
                "(fix them, or set skip_invalid_rows=True to send the valid rows only)",
            )
        return total, invalid

    # -- phase 2: send --

    def run(self, rows: Callable[[], Iterator[tuple[int, Any]]]) -> BatchResult:
        """Validate every row, then send the valid ones. Never raises for failed rows: see :meth:`check`."""
        total, invalid = self.validate_all(rows)
        opens_report = callable(self._report_target)
        self.report = self._report_target() if opens_report else self._report_target  # type: ignore[operator]
        try:
            return self._send_all(rows, total, invalid)
        finally:
            if opens_report and self.report is not None:
                self.report.close()

    def allowed_failures(self, sendable: int) -> int:
        """How many of ``sendable`` rows may fail before the batch fails (``max_failed_ratio``)."""
        return int(self.max_failed_ratio * sendable)

    def _send_all(self, rows: Callable[[], Iterator[tuple[int, Any]]], total: int, invalid: int) -> BatchResult:
        result = BatchResult(total=total)
        sendable = total - invalid
        allowed_failures = self.allowed_failures(sendable)
        started = last_progress = time.monotonic()
        # Workers put each outcome on a queue: collecting is O(1) per row however many are in flight.
        done: queue.SimpleQueue[_Outcome] = queue.SimpleQueue()
        pending = 0
        with ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="hilos-batch") as pool:

            def collect(block: bool) -> None:
                nonlocal pending, last_progress
                wait_for = (self.progress_interval or None) if block else None  # a blocking wait never spins
                while pending:
                    try:
                        outcome = done.get(block=block, timeout=wait_for) if block else done.get_nowait()
                    except queue.Empty:
                        break
                    block = False  # got one: take whatever else is ready, then go on
                    pending -= 1
                    self._record(result, outcome)
                    if outcome.stopper is not None and self.stopped_by is None:
                        self.stopped_by = outcome.stopper
                        self.log.error("Hilos batch stopped sending: %s", outcome.stopper)
                if (self.failure_policy is FailurePolicy.FAIL_FAST and result.failed > allowed_failures
                        and not self._halt.is_set()):
                    self._halt.set()
                    self.log.error("Hilos batch: %d row(s) failed, more than the %d allowed; fail_fast stops "
                                   "sending", result.failed, allowed_failures)
                now = time.monotonic()
                if now - last_progress >= self.progress_interval:
                    last_progress = now
                    self._progress(result, sendable, now - started)

            checker = RowChecker()  # the same verdicts as the validation pass
            for number, row in rows():
                try:
                    update = checker.check(number, row)
                except HilosValidationError as exc:
                    result.skipped += 1
                    self._write({"row": number, "conversation_id": _plain(row), "outcome": "skipped",
                                 "error": _short(str(exc))})
                    continue
                if self._halt.is_set():
                    self._record(result, _Outcome(number, update.conversation_id, sent=False))
                    continue
                while pending >= 2 * self.max_concurrency:
                    collect(block=True)
                pool.submit(self._send_into, done, number, update)
                pending += 1
                collect(block=False)
            while pending:
                collect(block=True)
        result.duration_seconds = round(time.monotonic() - started, 3)
        finished = result.updated + result.failed
        result.rate_per_second = round(finished / result.duration_seconds, 1) if result.duration_seconds else 0.0
        result.throttled = self.pacer.throttle_events
        self._progress(result, sendable, result.duration_seconds, final=True)
        return result

    def check(self, result: BatchResult) -> None:
        """Raise if the failure policy says the batch failed.

        :raises HilosBatchError: naming the counts and the first failed rows; carries the result.
        """
        sendable = result.total - result.skipped
        if self.stopped_by is not None:
            raise HilosBatchError(
                f"Hilos batch stopped at its first answers, as every row would fail the same way: {self.stopped_by} "
                f"{result.updated} of {sendable} row(s) updated, {result.failed} failed, {result.not_sent} not sent.",
                result=result.to_dict(),
            )
        if self.failure_policy is FailurePolicy.NEVER or not (result.failed or result.not_sent):
            return
        allowed = self.allowed_failures(sendable)
        if result.failed <= allowed and not result.not_sent:
            return
        first = "; ".join(f"row {r['row']} ({r['conversation_id']}): {r['error']}" for r in result.failed_rows[:5])
        raise HilosBatchError(
            f"Hilos batch failed: {result.failed} of {sendable} row(s) failed (allowed: {allowed}, "
            f"max_failed_ratio={self.max_failed_ratio}); {result.updated} updated, {result.not_sent} not sent. "
            f"First failures: {first}",
            result=result.to_dict(),
        )

    def _send_into(self, done: queue.SimpleQueue, number: int, update: ValidatedUpdate) -> None:
        outcome = _Outcome(number, update.conversation_id, error="the batch worker stopped before this row was sent")
        try:
            outcome = self._send(number, update)
        finally:  # always report, or the batch would wait for this row forever
            done.put(outcome)

    def _send(self, number: int, update: ValidatedUpdate) -> _Outcome:
        """Send one row, unless the batch stopped while the row waited for a worker."""
        cid = update.conversation_id
        if self._halt.is_set():
            return _Outcome(number, cid, sent=False)
        try:
            self.hook.send_update(cid, update.body, pacer=self.pacer)
        except HilosEndpointNotFoundError as exc:
            self._halt.set()  # at once: a worker must not pick up another row before the collector sees this
            return _Outcome(number, cid, exc.status_code, str(exc), stopper=exc)
        except HilosAPIError as exc:
            return _Outcome(number, cid, exc.status_code, str(exc))
        except HilosError as exc:
            return _Outcome(number, cid, error=str(exc))
        except Exception as exc:  # a failed row must never kill the batch or vanish
            return _Outcome(number, cid, error=self.hook.redact(f"{type(exc).__name__}: {exc}"))
        return _Outcome(number, cid, 200)

    def _record(self, result: BatchResult, outcome: _Outcome) -> None:
        number, cid, status, error = outcome.number, outcome.conversation_id, outcome.status, outcome.error
        if not outcome.sent:
            result.not_sent += 1
            self._write({"row": number, "conversation_id": cid, "outcome": "not_sent"})
            return
        if error is None:
            result.updated += 1
            self._write({"row": number, "conversation_id": cid, "outcome": "updated", "status_code": status})
            return
        result.failed += 1
        short = _short(error)
        self.log.warning("Hilos batch: row %d (conversation %s) failed: %s", number, cid, short)
        if len(result.failed_rows) < self.max_failed_rows:
            result.failed_rows.append({"row": number, "conversation_id": cid, "status_code": status, "error": short})
        else:
            result.failed_rows_omitted += 1
        self._write({"row": number, "conversation_id": cid, "outcome": "failed", "status_code": status,
                     "error": error})

    def _write(self, record: dict[str, Any]) -> None:
        if self.report is not None:
            self.report.write(json.dumps(record) + "\n")

    def _progress(self, result: BatchResult, sendable: int, elapsed: float, final: bool = False) -> None:
        done = result.updated + result.failed + result.not_sent
        rate = (result.updated + result.failed) / elapsed if elapsed > 0 else 0.0
        remaining = sendable - done
        eta = f"{remaining / rate:.0f} s" if rate > 0 and not final else "-"
        self.log.info(
            "Hilos batch%s: %d/%d done (%.1f%%), %d updated, %d failed, %d skipped, %.1f req/s, ETA %s",
            " finished" if final else "", done, sendable, 100.0 * done / sendable if sendable else 100.0,
            result.updated, result.failed, result.skipped, rate, eta,
        )


def _plain(row: Any) -> Any:
    cid = row.get("conversation_id") if isinstance(row, Mapping) else None
    return cid if isinstance(cid, str) else None


def _short(text: str) -> str:
    return text if len(text) <= _ERROR_CHARS else text[: _ERROR_CHARS - 3] + "..."


def check_concurrency(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 256:
        raise ValueError(f"max_concurrency={value!r} must be a whole number from 1 to 256")
    return value


def check_failure_policy(value: FailurePolicy | str) -> FailurePolicy:
    try:
        return FailurePolicy(value)
    except ValueError:
        allowed = ", ".join(p.value for p in FailurePolicy)
        raise ValueError(f"failure_policy={value!r} is not one of {allowed}") from None


def check_rate(value: float | None) -> float | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
        raise ValueError(f"max_requests_per_second={value!r} must be a number greater than 0 (or None: no limit)")
    return value


def check_ratio(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"max_failed_ratio={value!r} must be a number from 0 to 1")
    return float(value)
