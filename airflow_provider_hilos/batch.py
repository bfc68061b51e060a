"""Bulk conversation updates: validate every row first, then send them concurrently over the hook's
one pooled session, at the pace the API allows, resuming after the rows an earlier try applied.

Rows are read as a stream (twice: once to validate, once to send) so memory stays flat however
large the input is; responses are counted and dropped, never kept.

Retries are scheduled here, not slept through: a row answered 429, 5xx or not at all goes back into
the batch with a not-before time (``Retry-After``, or exponential backoff), and its worker moves on to
the next row. The :class:`~airflow_provider_hilos.pacing.AdaptivePacer` sets the pace; the
:class:`~airflow_provider_hilos.pacing.CircuitBreaker` stops the batch when the API looks down.
"""

from __future__ import annotations

import heapq
import json
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import IO, Any, NamedTuple, Protocol

from airflow_provider_hilos import metrics
from airflow_provider_hilos.checkpoint import Checkpoint, fingerprint
from airflow_provider_hilos.connection import HilosConnectionSettings
from airflow_provider_hilos.exceptions import (
    HilosAPIError,
    HilosAPIUnavailableError,
    HilosBatchError,
    HilosEndpointNotFoundError,
    HilosError,
    HilosPermanentBatchError,
    HilosValidationError,
)
from airflow_provider_hilos.pacing import AdaptivePacer, CircuitBreaker, check_rate
from airflow_provider_hilos.rows import RowChecker, RowSource, plain_conversation_id, reasons, row_label
from airflow_provider_hilos.schemas import ValidatedUpdate
from airflow_provider_hilos.transport import Log


class Sender(Protocol):
    """What a batch needs from :class:`~airflow_provider_hilos.hooks.hilos.HilosHook` (tests pass a stub)."""

    @property
    def log(self) -> Log: ...

    @property
    def settings(self) -> HilosConnectionSettings: ...

    @property
    def max_attempts(self) -> int: ...

    def send_update(self, update: ValidatedUpdate, *, attempt: int | None = None) -> dict[str, Any]: ...

    def planned_update(self, update: ValidatedUpdate) -> dict[str, Any]: ...

    def backoff_delay(self, attempt: int, retry_after: float | None = None) -> float: ...

    def redact(self, text: str) -> str: ...


#: How many invalid rows an error message lists (all of them are counted, and written to the report).
MAX_LISTED_INVALID_ROWS = 50
#: How many skipped invalid rows are logged with their reasons (the rest are counted).
MAX_LOGGED_SKIPS = 20
_ERROR_CHARS = 300


class FailurePolicy(StrEnum):
    """What a batch does when rows fail.

    * ``fail_at_end``: send every row, then fail if more rows failed than ``max_failed_ratio`` allows.
    * ``fail_fast``: stop sending as soon as that many rows failed (rows not sent are reported).
    * ``never``: send every row and never fail; read the counts and the report.

    Whatever the policy, a batch stops at once on an error every row would share (a missing endpoint,
    a rejected token), and when the API looks unavailable (see :class:`~airflow_provider_hilos.pacing.CircuitBreaker`).
    """

    FAIL_AT_END = "fail_at_end"
    FAIL_FAST = "fail_fast"
    NEVER = "never"


@dataclass(frozen=True)
class BatchOptions:
    """How a batch sends, and when it fails. Checked once, when it is made (an operator's, when the DAG
    file is parsed); the operator, ``HilosHook.update_conversations`` and :class:`BatchUpdater` share it.

    :param max_concurrency: requests in flight at once (1 to 256); the session's pool is sized to match.
    :param max_requests_per_second: the most the batch may send (your quota, if you know it), or
        ``None``: no limit. Either way, the batch slows down to the rate the API allows when it answers 429.
    :param failure_policy: ``fail_at_end`` (send all, then fail if too many failed), ``fail_fast``
        (stop sending once too many failed) or ``never``. See :class:`FailurePolicy`.
    :param max_failed_ratio: the share of rows that may fail without failing the batch (0 to 1).
    :param skip_invalid_rows: send the valid rows and report the invalid ones as skipped (each logged
        with its reasons), instead of refusing the whole batch before sending anything.
    :param max_invalid_ratio: with ``skip_invalid_rows``, the share of rows that may be invalid;
        ``None``: any share but all (a batch of invalid rows only, the wrong file, fails).
    :param max_failed_rows: how many failed (and skipped) rows the result lists; all are logged and reported.
    :param progress_interval: seconds between progress lines (done/total, failures, req/s, ETA).
    """

    max_concurrency: int = 16
    max_requests_per_second: float | None = None
    failure_policy: FailurePolicy | str = FailurePolicy.FAIL_AT_END
    max_failed_ratio: float = 0.0
    skip_invalid_rows: bool = False
    max_invalid_ratio: float | None = None
    max_failed_rows: int = 100
    progress_interval: float = 10.0

    def __post_init__(self) -> None:
        check_concurrency(self.max_concurrency)
        check_rate(self.max_requests_per_second)
        object.__setattr__(self, "failure_policy", check_failure_policy(self.failure_policy))
        check_ratio(self.max_failed_ratio)
        if self.max_invalid_ratio is not None:
            check_ratio(self.max_invalid_ratio, "max_invalid_ratio")
        if (
            isinstance(self.max_failed_rows, bool)
            or not isinstance(self.max_failed_rows, int)
            or self.max_failed_rows < 0
        ):
            raise ValueError(f"max_failed_rows={self.max_failed_rows!r} must be a whole number, 0 or more")
        if (
            isinstance(self.progress_interval, bool)
            or not isinstance(self.progress_interval, (int, float))
            or self.progress_interval < 0
        ):
            raise ValueError(f"progress_interval={self.progress_interval!r} must be a number of seconds, 0 or more")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The options' names, in order."""
        return tuple(f.name for f in fields(cls))

    @property
    def policy(self) -> FailurePolicy:
        """``failure_policy`` as a :class:`FailurePolicy` (it is one once checked)."""
        return FailurePolicy(self.failure_policy)


@dataclass
class BatchResult:
    """What a batch did; small enough for XCom (``failed_rows`` and ``skipped_rows`` are capped).

    :param total: rows read.
    :param updated: rows the API accepted in this try.
    :param already_applied: rows an earlier try of the same task applied (skipped, from its checkpoint).
    :param failed: rows the API refused, or that failed after every retry.
    :param failed_permanently: of those, the rows the API refused for good (400, 404, ...).
    :param skipped: invalid rows skipped (``skip_invalid_rows``).
    :param not_sent: valid rows not sent because the batch stopped (``fail_fast``, an outage, ...).
    :param retried: retries sent (a row answered 429, 5xx or not at all, sent again).
    :param throttled: requests answered 429.
    :param duration_seconds: wall time of the sending phase.
    :param rate_per_second: rows finished per second in that phase.
    :param failed_rows: the first failed rows: row number, conversation id, status code, error.
    :param failed_rows_omitted: failed rows not listed in ``failed_rows`` (they are in the log and report).
    :param skipped_rows: the first skipped invalid rows: row number, conversation id, reasons.
    :param skipped_rows_omitted: skipped rows not listed in ``skipped_rows``.
    :param stopped: why the batch stopped sending early, if it did.
    """

    total: int = 0
    updated: int = 0
    already_applied: int = 0
    failed: int = 0
    failed_permanently: int = 0
    skipped: int = 0
    not_sent: int = 0
    retried: int = 0
    throttled: int = 0
    duration_seconds: float = 0.0
    rate_per_second: float = 0.0
    failed_rows: list[dict[str, Any]] = field(default_factory=list)
    failed_rows_omitted: int = 0
    skipped_rows: list[dict[str, Any]] = field(default_factory=list)
    skipped_rows_omitted: int = 0
    stopped: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- the batch --------------------------------------------------------------------------------


class _Row(NamedTuple):
    """A valid row on its way: how many attempts it had, and why the last one failed."""

    number: int
    update: ValidatedUpdate
    digest: str
    attempts: int = 0
    last_error: HilosAPIError | None = None


class _Outcome(NamedTuple):
    """What a worker reports for one attempt of one row."""

    row: _Row
    error: HilosError | None = None
    #: False when the batch had stopped before this row's turn came
    sent: bool = True
    #: the error stops the whole batch: no other row can succeed either
    stops: bool = False


class BatchUpdater:
    """Send many conversation updates through one hook.

    :param hook: what sends each update (a :class:`~airflow_provider_hilos.hooks.hilos.HilosHook`, whose
        pooled session should hold ``options.max_concurrency`` connections).
    :param options: how to send, and when to fail.
    :param report: where the per-row JSON Lines report goes: an open text stream, a callable that opens
        one (called only once validation passed, and closed at the end), or ``None``.
    :param checkpoint: where applied rows are recorded, and read back to skip them on a later try.
    :param log: where progress and failures are logged (``logging.Logger``-like); the hook's by default.
    """

    def __init__(
        self,
        hook: Sender,
        options: BatchOptions | None = None,
        *,
        report: IO[str] | Callable[[], IO[str]] | None = None,
        checkpoint: Checkpoint | None = None,
        log: Log | None = None,
    ) -> None:
        self.hook = hook
        self.options = options or BatchOptions()
        self.pacer = AdaptivePacer(self.options.max_requests_per_second)
        self.breaker = CircuitBreaker.for_concurrency(self.options.max_concurrency)
        self._report_target = report
        self.report: IO[str] | None = None
        #: row numbers read and not yet in the report, in reading order, and records that wait for an earlier
        #: row's: outcomes arrive in any order (workers, retries), the report lists rows in input order
        self._report_order: deque[int] = deque()
        self._report_held: dict[int, dict[str, Any]] = {}
        self.checkpoint = checkpoint
        self.log = log or hook.log
        #: An error that no other row could escape (no endpoint, a rejected token): the batch stopped on it.
        self.stopped_by: HilosError | None = None
        self._halt = threading.Event()  # set when the batch stops: rows waiting for a worker are not sent

    # -- phase 1: validate everything before sending anything --

    def validate_all(self, rows: RowSource) -> tuple[int, int]:
        """Read every row once and validate it. Returns ``(total, invalid)``.

        :raises HilosValidationError: listing the invalid rows, unless ``skip_invalid_rows`` allows them.
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
                    listed.append((f"row {number}{row_label(row)}", reasons(exc)))
        if invalid > len(listed):
            listed.append(("...", f"and {invalid - len(listed)} more invalid row(s)"))
        if invalid and not self.options.skip_invalid_rows:
            raise HilosValidationError(
                listed,
                f"Hilos batch refused: {invalid} of {total} row(s) are invalid and nothing was sent "
                "(fix them, or set skip_invalid_rows=True to send the valid rows only)",
            )
        allowed = total - 1 if self.options.max_invalid_ratio is None else int(self.options.max_invalid_ratio * total)
        if invalid and invalid > allowed:
            share = (
                "every row is invalid"
                if invalid == total
                else f"more than max_invalid_ratio={self.options.max_invalid_ratio} of them are invalid"
            )
            raise HilosValidationError(
                listed,
                f"Hilos batch refused: {invalid} of {total} row(s) are invalid, and {share}, so nothing was sent: "
                "the input is probably not what was meant (a CSV read as JSON Lines?). Fix it, or raise "
                "max_invalid_ratio (1.0 allows a batch of invalid rows only)",
            )
        return total, invalid

    # -- phase 2: send --

    def run(self, rows: RowSource) -> BatchResult:
        """Validate every row, then send the valid ones. Never raises for failed rows: see :meth:`check`."""
        total, invalid = self.validate_all(rows)
        _ = self.hook.settings  # a bad connection fails here, once, not in every worker
        target = self._report_target
        opens_report = callable(target)
        self.report = target() if callable(target) else target
        try:
            return _Run(self, total, invalid).send(rows)
        finally:
            self.flush_report()
            if opens_report and self.report is not None:
                self.report.close()
            if self.checkpoint is not None:
                self.checkpoint.close()

    def plan(self, rows: RowSource, *, shown: int = 20) -> dict[str, Any]:
        """A dry run: validate every row, resolve the connection, log what would be sent, send nothing.

        :param rows: the rows.
        :param shown: how many planned requests are logged in full and returned.
        """
        total, invalid = self.validate_all(rows)
        applied = self.checkpoint.applied() if self.checkpoint is not None else {}
        checker = RowChecker()
        planned: list[dict[str, Any]] = []
        to_send = already = 0
        for number, raw in rows():
            try:
                update = checker.check(number, raw)
            except HilosValidationError:
                continue
            if applied.get(number) == fingerprint(update.conversation_id, update.body):
                already += 1
                continue
            to_send += 1
            if len(planned) < shown:
                planned.append({"row": number, **self.hook.planned_update(update)})
        family = self.hook.settings.api_family
        url = self.hook.settings.url(family.update_path("{id}"))
        self.log.info(
            "Hilos batch dry run, nothing sent: %d row(s), %d would be sent as PATCH %s, %d invalid "
            "(skipped), %d already applied by an earlier try",
            total,
            to_send,
            url,
            invalid,
            already,
        )
        for request in planned:
            self.log.info(
                "Dry run: row %d: %s %s %s",
                request["row"],
                request["method"],
                request["url"],
                json.dumps(request["body"], sort_keys=True),
            )
        if to_send > len(planned):
            self.log.info("Dry run: ... and %d more request(s)", to_send - len(planned))
        return {
            "dry_run": True,
            "total": total,
            "to_send": to_send,
            "skipped": invalid,
            "already_applied": already,
            "method": "PATCH",
            "url": url,
            "requests": planned,
        }

    def allowed_failures(self, sendable: int) -> int:
        """How many of ``sendable`` rows may fail before the batch fails (``max_failed_ratio``)."""
        return int(self.options.max_failed_ratio * sendable)

    def check(self, result: BatchResult) -> None:
        """Raise if the batch failed: it stopped early, or its failure policy says so.

        :raises HilosPermanentBatchError: every failure was a refusal another try cannot fix (Airflow
            does not retry it), or the batch stopped on an error every row shared.
        :raises HilosAPIUnavailableError: the API looked down and the batch stopped sending (retryable).
        :raises HilosBatchError: too many rows failed, some of them for reasons another try may fix.
        """
        sendable = result.total - result.skipped
        counts = (
            f"{result.updated + result.already_applied} of {sendable} row(s) applied ({result.updated} now, "
            f"{result.already_applied} by an earlier try), {result.failed} failed, {result.not_sent} not sent"
        )
        if self.stopped_by is not None:
            raise HilosPermanentBatchError(
                f"Hilos batch stopped at its first answers, as every row would fail the same way: {self.stopped_by} "
                f"{counts}.",
                result=result.to_dict(),
            )
        if self.breaker.open:
            raise HilosAPIUnavailableError(
                f"Hilos API looks unavailable: {self.breaker.describe()}. The batch stopped sending; {counts}. "
                "A retry of the task resumes after the rows already applied.",
                result=result.to_dict(),
            )
        if self.options.policy is FailurePolicy.NEVER or not (result.failed or result.not_sent):
            return
        allowed = self.allowed_failures(sendable)
        if result.failed <= allowed and not result.not_sent:
            return
        first = "; ".join(f"row {r['row']} ({r['conversation_id']}): {r['error']}" for r in result.failed_rows[:5])
        permanent = result.failed == result.failed_permanently
        error_class = HilosPermanentBatchError if permanent else HilosBatchError
        raise error_class(
            f"Hilos batch failed: {result.failed} of {sendable} row(s) failed (allowed: {allowed}, "
            f"max_failed_ratio={self.options.max_failed_ratio}); {counts}"
            + (" (every failure is a refusal another try cannot fix: Airflow will not retry)" if permanent else "")
            + f". First failures: {first}",
            result=result.to_dict(),
        )

    # -- what a worker does with one row --

    def send_row(self, row: _Row) -> _Outcome:
        """Send one attempt of one row, unless the batch stopped while the row waited for a worker."""
        if self._halt.is_set():
            return _Outcome(row, sent=False)
        ticket = self.pacer.acquire()
        if self._halt.is_set():
            return _Outcome(row, sent=False)
        try:
            self.hook.send_update(row.update, attempt=row.attempts + 1)
        except HilosAPIError as exc:
            if exc.status_code is not None and exc.status_code < 500:  # an answer from the API itself
                self.pacer.answered(ticket, throttled=exc.status_code == 429)
            stops = isinstance(exc, HilosEndpointNotFoundError) or exc.status_code == 401
            if stops:
                self._halt.set()  # at once: a worker must not pick up another row before the batch sees this
            return _Outcome(row, exc, stops=stops)
        except Exception as exc:  # a failed row must never kill the batch or vanish
            error = HilosAPIError(self.hook.redact(f"{type(exc).__name__}: {exc}"), problem=type(exc).__name__)
            return _Outcome(row, error)
        self.pacer.answered(ticket, throttled=False)
        if self.checkpoint is not None:  # before the outcome is collected: a crash now re-sends only rows in flight
            self.checkpoint.record(row.number, row.digest)
        return _Outcome(row)

    def expect(self, number: int) -> None:
        """Row ``number`` was read: its report line comes after those of the rows read before it."""
        if self.report is not None:
            self._report_order.append(number)

    def write(self, record: dict[str, Any]) -> None:
        """Report one row's outcome; it is written once the outcomes of all rows read before it are."""
        if self.report is None:
            return
        self._report_held[record["row"]] = record
        order, held = self._report_order, self._report_held
        while order and order[0] in held:
            self.report.write(json.dumps(held.pop(order.popleft())) + "\n")

    def flush_report(self) -> None:
        """Write what is still held (only if a row never got an outcome, which a finished batch rules out)."""
        if self.report is not None:
            for number in sorted(self._report_held):
                self.report.write(json.dumps(self._report_held.pop(number)) + "\n")
            self._report_order.clear()

    def halt(self) -> None:
        self._halt.set()

    @property
    def halted(self) -> bool:
        return self._halt.is_set()


class _Run:
    """One sending pass of a :class:`BatchUpdater`: the scheduler, on the calling thread."""

    def __init__(self, updater: BatchUpdater, total: int, invalid: int) -> None:
        self.u = updater
        self.result = BatchResult(total=total)
        self.sendable = total - invalid
        self.allowed_failures = updater.allowed_failures(self.sendable)
        self.done: queue.SimpleQueue[_Outcome] = queue.SimpleQueue()  # workers' outcomes: O(1) per row
        self.in_flight = 0
        self.waiting: list[tuple[float, int, _Row]] = []  # rows to retry: (not before, row number, row)
        self.started = self.last_progress = time.monotonic()
        self.applied = updater.checkpoint.applied() if updater.checkpoint is not None else {}
        if self.applied:
            updater.log.info(
                "Hilos batch: resuming from %s: %d row(s) were applied by an earlier try",
                updater.checkpoint,
                len(self.applied),
            )

    def send(self, rows: RowSource) -> BatchResult:
        u, result = self.u, self.result
        source = self._valid_rows(rows)
        cap = 2 * u.options.max_concurrency  # submitted and not yet collected: bounds memory, keeps every worker busy
        with ThreadPoolExecutor(u.options.max_concurrency, thread_name_prefix="hilos-batch") as pool:

            def submit(row: _Row) -> None:
                pool.submit(self._work, row)
                self.in_flight += 1

            while True:
                self._collect(block=False)
                if u.halted:
                    break
                now = time.monotonic()
                if self.in_flight >= cap:
                    self._collect(block=True)
                elif self.waiting and self.waiting[0][0] <= now:
                    submit(heapq.heappop(self.waiting)[2])
                elif (row := next(source, None)) is not None:
                    submit(row)
                elif self.in_flight:
                    self._collect(block=True, until=self.waiting[0][0] if self.waiting else None)
                elif self.waiting:
                    time.sleep(min(self.waiting[0][0] - now, 1.0))
                else:
                    break
            while self.in_flight:
                self._collect(block=True)
            for _, _, row in self.waiting:  # the batch stopped with these rows waiting for a retry
                self._failed(row, row.last_error or HilosAPIError("not retried: the batch stopped"))
            for row in source:
                self._not_sent(row)
        result.duration_seconds = round(time.monotonic() - self.started, 3)
        finished = result.updated + result.failed
        result.rate_per_second = round(finished / result.duration_seconds, 1) if result.duration_seconds else 0.0
        result.throttled = u.pacer.throttled
        if result.skipped_rows_omitted:
            u.log.warning(
                "Hilos batch: %d more invalid row(s) skipped (all are in the report)", result.skipped_rows_omitted
            )
        self._progress(final=True)
        return result

    def _valid_rows(self, rows: RowSource) -> Iterator[_Row]:
        """The rows to send, in order; invalid and already applied rows are accounted for on the way."""
        checker = RowChecker()  # the same verdicts as the validation pass
        for number, raw in rows():
            self.u.expect(number)
            try:
                update = checker.check(number, raw)
            except HilosValidationError as exc:
                self._skipped(number, raw, exc)
                continue
            digest = fingerprint(update.conversation_id, update.body)
            if self.applied.get(number) == digest:
                self.result.already_applied += 1
                self.u.write({"row": number, "conversation_id": update.conversation_id, "outcome": "already_applied"})
                continue
            yield _Row(number, update, digest)

    def _work(self, row: _Row) -> None:
        outcome = _Outcome(row, HilosAPIError("the batch worker stopped before this row was sent"))
        try:
            outcome = self.u.send_row(row)
        finally:  # always report, or the batch would wait for this row forever
            self.done.put(outcome)

    def _collect(self, block: bool, until: float | None = None) -> None:
        """Record the outcomes that are in; with ``block``, wait for one first (at most until ``until``)."""
        u = self.u
        timeout = u.options.progress_interval or None
        if until is not None:
            timeout = (
                max(0.0, until - time.monotonic())
                if timeout is None
                else min(timeout, max(0.0, until - time.monotonic()))
            )
        while self.in_flight:
            try:
                outcome = self.done.get(timeout=timeout) if block else self.done.get_nowait()
            except queue.Empty:
                break
            block = False  # got one: take whatever else is ready, then go on
            self.in_flight -= 1
            self._handle(outcome)
        if u.options.policy is FailurePolicy.FAIL_FAST and self.result.failed > self.allowed_failures and not u.halted:
            u.halt()
            self.result.stopped = (
                f"fail_fast: {self.result.failed} row(s) failed, more than the {self.allowed_failures} allowed"
            )
            u.log.error("Hilos batch: %s; it stops sending", self.result.stopped)
        if time.monotonic() - self.last_progress >= u.options.progress_interval:
            self._progress()

    def _handle(self, outcome: _Outcome) -> None:
        u, row, error = self.u, outcome.row, outcome.error
        if not outcome.sent:
            self._not_sent(row)
            return
        if error is None:
            u.breaker.succeeded()
            self.result.updated += 1
            metrics.incr(metrics.APPLIED)
            u.write({"row": row.number, "conversation_id": row.update.conversation_id, "outcome": "updated"})
            return
        if outcome.stops:
            if u.stopped_by is None:
                u.stopped_by = error
                self.result.stopped = str(error)
                u.log.error("Hilos batch stopped sending: %s", error)
            self._failed(row, error)
            return
        assert isinstance(error, HilosAPIError)
        if not error.retryable:
            u.breaker.refused()
            self._failed(row, error)
            return
        if error.status_code != 429:
            u.breaker.attempt_failed(error.problem)
        attempts = row.attempts + 1
        if attempts < u.hook.max_attempts and not u.breaker.open and not u.halted:
            delay = u.hook.backoff_delay(attempts, error.retry_after)
            heapq.heappush(
                self.waiting, (time.monotonic() + delay, row.number, row._replace(attempts=attempts, last_error=error))
            )
            self.result.retried += 1
            metrics.incr(metrics.RETRIED)
            u.log.debug(
                "Hilos batch: row %d (%s): %s; retry %d in %.2f s",
                row.number,
                row.update.conversation_id,
                error.problem,
                attempts,
                delay,
            )
        else:
            if attempts >= u.hook.max_attempts:
                u.breaker.row_failed(error.problem)
            self._failed(row, error)
        if u.breaker.open and not u.halted:
            u.halt()
            self.result.stopped = f"the API looks unavailable: {u.breaker.describe()}"
            u.log.error("Hilos batch stops sending: %s", self.result.stopped)

    def _failed(self, row: _Row, error: HilosError) -> None:
        result, u = self.result, self.u
        result.failed += 1
        metrics.incr(metrics.FAILED)
        if not (isinstance(error, HilosAPIError) and error.retryable):
            result.failed_permanently += 1
        status = error.status_code if isinstance(error, HilosAPIError) else None
        short = _short(str(error))
        cid = row.update.conversation_id
        u.log.warning("Hilos batch: row %d (conversation %s) failed: %s", row.number, cid, short)
        if len(result.failed_rows) < u.options.max_failed_rows:
            result.failed_rows.append(
                {"row": row.number, "conversation_id": cid, "status_code": status, "error": short}
            )
        else:
            result.failed_rows_omitted += 1
        u.write(
            {"row": row.number, "conversation_id": cid, "outcome": "failed", "status_code": status, "error": str(error)}
        )

    def _not_sent(self, row: _Row) -> None:
        self.result.not_sent += 1
        self.u.write({"row": row.number, "conversation_id": row.update.conversation_id, "outcome": "not_sent"})

    def _skipped(self, number: int, raw: Any, exc: HilosValidationError) -> None:
        result, u = self.result, self.u
        result.skipped += 1
        why = _short(reasons(exc))
        if result.skipped <= MAX_LOGGED_SKIPS:
            u.log.warning("Hilos batch: row %d%s skipped, it is invalid: %s", number, row_label(raw), why)
        if len(result.skipped_rows) < u.options.max_failed_rows:
            result.skipped_rows.append({"row": number, "conversation_id": plain_conversation_id(raw), "error": why})
        else:
            result.skipped_rows_omitted += 1
        u.write({"row": number, "conversation_id": plain_conversation_id(raw), "outcome": "skipped", "error": why})

    def _progress(self, final: bool = False) -> None:
        result, sendable = self.result, self.sendable
        if not sendable:
            why = f"all {result.skipped} row(s) were skipped as invalid" if result.skipped else "the input has no rows"
            self.u.log.info("Hilos batch%s: nothing to send: %s", " finished" if final else "", why)
            return
        elapsed = time.monotonic() - self.started
        self.last_progress = time.monotonic()
        done = result.updated + result.already_applied + result.failed + result.not_sent
        rate = (result.updated + result.failed) / elapsed if elapsed > 0 else 0.0
        remaining = sendable - done
        eta = f"{remaining / rate:.0f} s" if rate > 0 and not final else "-"
        pace = self.u.pacer.rate
        self.u.log.info(
            "Hilos batch%s: %d/%d done (%.1f%%), %d updated, %d already applied, %d failed, %d skipped, "
            "%d retried, %d throttled, %.1f req/s%s, ETA %s",
            " finished" if final else "",
            done,
            sendable,
            100.0 * done / sendable if sendable else 100.0,
            result.updated,
            result.already_applied,
            result.failed,
            result.skipped,
            result.retried,
            self.u.pacer.throttled,
            rate,
            f" (paced at {pace:.1f}/s)" if pace else "",
            eta,
        )


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


def check_ratio(value: float, name: str = "max_failed_ratio") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}={value!r} must be a number from 0 to 1")
    return float(value)
