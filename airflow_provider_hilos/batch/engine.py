"""The batch engine: sends the rows of a :mod:`~airflow_provider_hilos.batch.pipeline` concurrently through one
hook, at the pace the connection allows, and accounts for every row.

The calls go one way: the engine reads the pipeline, asks the :class:`~airflow_provider_hilos.batch.scheduler.Scheduler`
what to do next, hands rows to worker threads that send them through the hook (whose transport paces every request
and tells the circuit breaker how it was answered), records each outcome in the
:class:`~airflow_provider_hilos.batch.result.BatchResult` and the report, and stops when the breaker opens, the
failure policy says so, or the task is killed. Whether the batch passed is then
:func:`~airflow_provider_hilos.batch.verdict.batch_verdict` of that result alone.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import IO, TYPE_CHECKING, NamedTuple

from airflow_provider_hilos import metrics
from airflow_provider_hilos.batch.options import BatchOptions, FailurePolicy
from airflow_provider_hilos.batch.pipeline import Item, ItemKind, Pipeline
from airflow_provider_hilos.batch.report import OutcomeListener, ReportWriter
from airflow_provider_hilos.batch.result import BatchResult, StopReason
from airflow_provider_hilos.batch.scheduler import Action, Clock, Scheduler
from airflow_provider_hilos.batch.verdict import allowed_failures, validation_verdict
from airflow_provider_hilos.batch.wording import BATCH, Wording
from airflow_provider_hilos.exceptions import (
    HilosAPIError,
    HilosCheckpointError,
    HilosConfigurationError,
    HilosEndpointNotFoundError,
    HilosError,
)
from airflow_provider_hilos.pacing import AdaptivePacer
from airflow_provider_hilos.storage import AtomicText
from airflow_provider_hilos.transport import Log, asks_too_long

if TYPE_CHECKING:
    from airflow_provider_hilos.checkpoint import Checkpoint
    from airflow_provider_hilos.hooks.hilos import HilosHook

#: Where the per-row report goes: an open stream, a callable opening one (closed at the end), or a file written
#: to a temporary name and moved into place once every row is accounted for.
ReportTarget = IO[str] | Callable[[], IO[str]] | AtomicText | None

#: How many skipped invalid rows are logged with their reasons (the rest are counted).
MAX_LOGGED_SKIPS = 20
_ERROR_CHARS = 300


class _Flight(NamedTuple):
    """A row on its way: how many attempts it had, and why the last one failed."""

    item: Item
    attempts: int = 0
    last_error: HilosAPIError | None = None


class _Outcome(NamedTuple):
    """What a worker reports for one attempt of one row."""

    flight: _Flight
    error: HilosError | None = None
    #: False when the batch had stopped before this row's turn came
    sent: bool = True
    #: the error stops the whole batch: no other row can succeed either
    stops: bool = False


class BatchEngine:
    """Send the rows of one batch through one hook.

    :param hook: what sends each update (a :class:`~airflow_provider_hilos.hooks.hilos.HilosHook`: its transport
        paces the requests and keeps the circuit breaker, shared with everything else the hook sends).
    :param options: how to send, and when to fail.
    :param report: where the per-row JSON Lines report goes (opened only once validation passed).
    :param checkpoint: where applied rows are recorded, and read back to skip them on a later try.
    :param log: where progress and failures are logged; the hook's by default.
    :param clock: the clock retries are scheduled on (tests pass their own).
    :param on_outcome: told every row's outcome record (``{"row", "conversation_id", "outcome", ...}``, as the
        report has it) as it arrives, report or not.
    :param words: how messages name the batch and its rows (a sync's speak of the sync and name conversations).
    """

    def __init__(
        self,
        hook: HilosHook,
        options: BatchOptions | None = None,
        *,
        report: ReportTarget = None,
        checkpoint: Checkpoint | None = None,
        log: Log | None = None,
        clock: Clock | None = None,
        on_outcome: OutcomeListener | None = None,
        words: Wording = BATCH,
    ) -> None:
        self.hook = hook
        self.on_outcome = on_outcome
        self.words = words
        self.options = options or BatchOptions()
        self.report_target = report
        self.checkpoint = checkpoint
        self.log = log or hook.log
        #: the batch's own share, if it has one: a pacer that is told no answers holds its ceiling
        rate = self.options.max_requests_per_second
        self.rate = AdaptivePacer(rate) if rate else None
        self.scheduler: Scheduler[_Flight] = Scheduler(2 * self.options.max_concurrency, clock)
        self.result = BatchResult()
        self._report = ReportWriter(None, on_outcome)
        self._halt = threading.Event()  # set when the batch stops: rows waiting for a worker are not sent
        self._outcomes: queue.SimpleQueue[_Outcome] = queue.SimpleQueue()  # workers' outcomes: O(1) per row
        self._busy = 0  # attempts running in a worker right now
        self._idle = threading.Condition()
        self._sendable = 0
        self._allowed = 0
        self._started = self._last_progress = time.monotonic()

    # -- stopping from outside (on_kill) --

    def stop(self, reason: StopReason, message: str) -> None:
        """Stop sending: no new request starts; those in flight finish (or time out) and are accounted for."""
        self._halt.set()
        if self.result.stop(reason, message):
            self.log.warning("%s: %s; it stops sending", self.words.label, message)

    def wait_idle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the requests in flight to finish; returns whether they did."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def halted(self) -> bool:
        """Whether the batch stopped sending."""
        return self._halt.is_set()

    # -- the run --

    def run(self, pipeline: Pipeline) -> BatchResult:
        """Validate every row (raw rows: one pass over the input), then send the valid ones.

        :raises HilosValidationError: invalid rows, before anything is sent (unless the options allow them).
        :return: the result; whether it passed is :func:`~airflow_provider_hilos.batch.verdict.batch_verdict`'s call.
        """
        survey = pipeline.survey()
        if refusal := validation_verdict(survey, self.options, self.words):
            raise refusal
        _ = self.hook.settings  # a bad connection fails here, once, not in every worker
        self._sendable = survey.total - survey.invalid
        self._allowed = allowed_failures(self.options, self._sendable)
        applied: dict[str, str] = {}
        if self.checkpoint is not None:  # writable, ours and locked before the first request, or a clear error
            self.checkpoint.open()
            applied = self.checkpoint.applied()
        if applied:
            self.log.info(
                "%s: resuming from %s: %d %s(s) were applied by an earlier try",
                self.words.label,
                self.checkpoint,
                len(applied),
                self.words.unit,
            )
        target, stream = self.report_target, None
        try:
            try:
                stream = target.open() if isinstance(target, AtomicText) else target() if callable(target) else target
            except OSError as exc:  # before the first request
                where = target.target if isinstance(target, AtomicText) else "the report"
                raise HilosConfigurationError(
                    f"{self.words.label}: the report {where} can't be written ({exc.strerror or type(exc).__name__});"
                    " give report_path the path of a file in a writable folder. Nothing was sent"
                ) from None
            self._report = ReportWriter(stream, self.on_outcome)
            self._send(pipeline.items(applied))
            self._report.flush()
            if self._report.failed is not None:
                self._report_failed(target)
            elif isinstance(target, AtomicText):
                target.commit()  # every row is accounted for: the report is complete
        finally:
            if isinstance(target, AtomicText):
                target.abort()  # a no-op once committed
            elif callable(target) and stream is not None:
                stream.close()
            if self.checkpoint is not None:
                self.checkpoint.close()
        return self.result

    def _send(self, items: Iterator[Item]) -> None:
        result, scheduler = self.result, self.scheduler
        breaker = self.hook.breaker
        if breaker.open:
            if breaker.retry_in() > 0:  # another batch of this hook found the API down moments ago
                self._stop_unavailable()
            else:
                breaker.half_open()
        self._started = self._last_progress = time.monotonic()
        self.hook.ensure_pool(self.options.max_concurrency)
        pending = next(items, None)
        with ThreadPoolExecutor(self.options.max_concurrency, thread_name_prefix="hilos-batch") as pool:
            try:
                while not self.halted():
                    self._collect(block=False)
                    if self.halted():
                        break
                    step = scheduler.next_step(more_input=pending is not None)
                    if step.action is Action.RETRY:
                        self._submit(pool, scheduler.take_retry())
                    elif step.action is Action.READ:
                        assert pending is not None
                        self._take(pool, pending)
                        pending = next(items, None)
                    elif step.action is Action.WAIT_FOR_ANSWER:
                        self._collect(block=True, until=step.until)
                    elif step.action is Action.SLEEP:
                        assert step.until is not None
                        scheduler.clock.sleep(max(0.0, min(step.until - scheduler.clock.now(), 1.0)))
                    else:
                        break
            except BaseException:
                self._halt.set()  # an exception (a task timeout) left the loop: queued rows must not go out
                raise
            while scheduler.in_flight:
                self._collect(block=True)
        for flight in scheduler.drain():  # the batch stopped with these rows waiting for a retry
            self._failed(flight, flight.last_error or HilosAPIError("not retried: the batch stopped"))
        while pending is not None:  # the batch stopped before these rows: accounted for all the same
            self._take(None, pending)
            pending = next(items, None)
        result.duration_seconds = round(time.monotonic() - self._started, 3)
        finished = result.updated + result.failed
        result.rate_per_second = round(finished / result.duration_seconds, 1) if result.duration_seconds else 0.0
        if result.skipped_rows_omitted:
            self.log.warning(
                "%s: %d more invalid row(s) skipped (all are in the report)",
                self.words.label,
                result.skipped_rows_omitted,
            )
        self._progress(final=True)

    def _take(self, pool: ThreadPoolExecutor | None, item: Item) -> None:
        """A row read from the input: skip it (invalid, already applied) or send it."""
        result = self.result
        result.total += 1
        self._report.row_read(item.number)
        if item.kind is ItemKind.INVALID:
            self._skipped(item)
        elif item.kind is ItemKind.ALREADY_APPLIED:
            result.already_applied += 1
            self._report.outcome(
                {"row": item.number, self.words.key_field: item.conversation_id, "outcome": "already_applied"}
            )
        elif pool is None:  # the batch stopped before this row's turn
            self._not_sent(item)
        else:
            self._submit(pool, _Flight(item))

    def _submit(self, pool: ThreadPoolExecutor, flight: _Flight) -> None:
        pool.submit(self._work, flight)
        self.scheduler.sent()

    # -- what a worker does with one row --

    def _work(self, flight: _Flight) -> None:
        outcome = _Outcome(flight, HilosAPIError("the batch worker stopped before this row was sent"))
        with self._idle:
            self._busy += 1
        try:
            outcome = self._attempt(flight)
        finally:  # always report, or the batch would wait for this row forever
            with self._idle:
                self._busy -= 1
                self._idle.notify_all()
            self._outcomes.put(outcome)

    def _attempt(self, flight: _Flight) -> _Outcome:
        """Send one attempt of one row, unless the batch stopped while the row waited for a worker."""
        if self.halted():
            return _Outcome(flight, sent=False)
        if self.rate is not None:
            self.rate.acquire()
            if self.halted():
                return _Outcome(flight, sent=False)
        update = flight.item.update
        assert update is not None
        try:
            self.hook.send_update(update, attempt=flight.attempts + 1)
        except HilosAPIError as exc:
            stops = isinstance(exc, HilosEndpointNotFoundError) or exc.status_code == 401
            if stops:
                self._halt.set()  # at once: a worker must not pick up another row before the batch sees this
            return _Outcome(flight, exc, stops=stops)
        except Exception as exc:  # a failed row must never kill the batch or vanish
            error = HilosAPIError(self.hook.redact(f"{type(exc).__name__}: {exc}"), problem=type(exc).__name__)
            return _Outcome(flight, error)
        if self.checkpoint is not None:  # before the outcome is collected: a crash now re-sends only rows in flight
            try:
                self.checkpoint.record(update.key, flight.item.digest)
            except HilosCheckpointError as exc:
                self._halt.set()
                return _Outcome(flight, exc)
        return _Outcome(flight)

    # -- collecting outcomes, on the engine's thread --

    def _collect(self, block: bool, until: float | None = None) -> None:
        """Record the outcomes that are in; with ``block``, wait for one first (at most until ``until``)."""
        scheduler = self.scheduler
        timeout = self.options.progress_interval or None
        if until is not None:
            left = max(0.0, until - scheduler.clock.now())
            timeout = left if timeout is None else min(timeout, left)
        while scheduler.in_flight:
            try:
                outcome = self._outcomes.get(timeout=timeout) if block else self._outcomes.get_nowait()
            except queue.Empty:
                break
            block = False  # got one: take whatever else is ready, then go on
            scheduler.answered()
            self._handle(outcome)
        result = self.result
        if self._report.failed is not None and not self.halted():
            self._report_failed(self.report_target)
        if self.options.policy is FailurePolicy.FAIL_FAST and result.failed > self._allowed and not self.halted():
            self.stop(
                StopReason.FAIL_FAST, f"fail_fast: {result.failed} row(s) failed, more than the {self._allowed} allowed"
            )
        if time.monotonic() - self._last_progress >= self.options.progress_interval:
            self._progress()

    def _handle(self, outcome: _Outcome) -> None:
        flight, error = outcome.flight, outcome.error
        item = flight.item
        if not outcome.sent:
            self._not_sent(item)
            return
        if isinstance(error, HilosCheckpointError):  # the row landed; recording it did not
            self._updated(item)
            self.stop(StopReason.CHECKPOINT, str(error))
            return
        if error is None:
            self._updated(item)
            return
        if outcome.stops:
            if self.result.stop(StopReason.REFUSED, str(error)):
                self.log.error("%s stopped sending: %s", self.words.label, error)
            self._failed(flight, error)
            return
        assert isinstance(error, HilosAPIError)
        breaker = self.hook.breaker
        if error.status_code == 429:
            self.result.throttled += 1
        if not error.retryable:
            self._failed(flight, error)
            return
        if asks_too_long(error.retry_after, self.hook.longest_hold):
            self._stop_throttled(flight, error)
            return
        attempts = flight.attempts + 1
        if attempts < self.hook.max_attempts and not breaker.open and not self.halted():
            delay = self.hook.backoff_delay(attempts, error.retry_after)
            self.scheduler.retry_later(flight._replace(attempts=attempts, last_error=error), delay)
            self.result.retried += 1
            metrics.incr(metrics.RETRIED)
            self.log.debug(
                "%s: %s: %s; retry %d in %.2f s",
                self.words.label,
                self.words.row(item.number, item.conversation_id),
                error.problem,
                attempts,
                delay,
            )
        else:
            if attempts >= self.hook.max_attempts:
                breaker.row_failed(error.problem)
            self._failed(flight, error)
        if breaker.open and not self.halted():
            self._stop_unavailable()

    def _stop_throttled(self, flight: _Flight, error: HilosAPIError) -> None:
        """The API asked for a longer wait than this batch may hold its worker (the hook's ``longest_hold``): stop
        sending, and keep the wait in the result, for the operator to wait it out (deferred) and resume."""
        self._halt.set()
        self._failed(flight, error)  # not applied: the next try (its checkpoint lacks it) sends it again
        wait = float(error.retry_after or 0.0)
        self.result.retry_after = max(self.result.retry_after or 0.0, wait)
        if self.result.stop(
            StopReason.THROTTLED,
            f"the API asked to wait {wait:.0f} s (Retry-After), longer than this batch waits in its worker",
        ):
            self.log.warning("%s stops sending: %s", self.words.label, self.result.stopped)

    def _report_failed(self, target: ReportTarget) -> None:
        """The report could not be written: the batch stopped (or ended) without it; the result says so."""
        error = self._report.failed
        assert error is not None
        where = target.target if isinstance(target, AtomicText) else "the report"
        self.stop(
            StopReason.REPORT,
            f"the report {where} could not be written ({error.strerror or type(error).__name__}); free or fix that "
            "storage (every outcome is in the result and the checkpoint)",
        )

    def _stop_unavailable(self) -> None:
        self._halt.set()
        if self.result.stop(StopReason.API_UNAVAILABLE, f"the API looks unavailable: {self.hook.breaker.describe()}"):
            self.log.error("%s stops sending: %s", self.words.label, self.result.stopped)

    # -- accounting --

    def _updated(self, item: Item) -> None:
        self.result.updated += 1
        done = getattr(item.update, "done_word", "updated")  # a contact's create or delete says so
        self._report.outcome({"row": item.number, self.words.key_field: item.conversation_id, "outcome": done})

    def _failed(self, flight: _Flight, error: HilosError) -> None:
        result, item = self.result, flight.item
        result.failed += 1
        metrics.incr(metrics.FAILED)
        if not (isinstance(error, HilosAPIError) and error.retryable):
            result.failed_permanently += 1
        status = error.status_code if isinstance(error, HilosAPIError) else None
        short = _short(str(error))
        self.log.warning(
            "%s: %s failed: %s", self.words.label, self.words.row(item.number, item.conversation_id), short
        )
        if len(result.failed_rows) < self.options.max_failed_rows:
            result.failed_rows.append(
                {"row": item.number, self.words.key_field: item.conversation_id, "status_code": status, "error": short}
            )
        else:
            result.failed_rows_omitted += 1
        self._report.outcome(
            {
                "row": item.number,
                self.words.key_field: item.conversation_id,
                "outcome": "failed",
                "status_code": status,
                "error": str(error),
            }
        )

    def _not_sent(self, item: Item) -> None:
        self.result.not_sent += 1
        self._report.outcome({"row": item.number, self.words.key_field: item.conversation_id, "outcome": "not_sent"})

    def _skipped(self, item: Item) -> None:
        result = self.result
        result.skipped += 1
        why = _short(item.reason)
        if result.skipped <= MAX_LOGGED_SKIPS:
            self.log.warning("%s: row %d%s skipped, it is invalid: %s", self.words.label, item.number, item.label, why)
        if len(result.skipped_rows) < self.options.max_failed_rows:
            result.skipped_rows.append({"row": item.number, self.words.key_field: item.conversation_id, "error": why})
        else:
            result.skipped_rows_omitted += 1
        self._report.outcome(
            {"row": item.number, self.words.key_field: item.conversation_id, "outcome": "skipped", "error": why}
        )

    def _progress(self, final: bool = False) -> None:
        result, sendable = self.result, self._sendable
        if not sendable:
            why = f"all {result.skipped} row(s) were skipped as invalid" if result.skipped else "the input has no rows"
            self.log.info("%s%s: nothing to send: %s", self.words.label, " finished" if final else "", why)
            return
        now = time.monotonic()
        elapsed = now - self._started
        self._last_progress = now
        done = result.updated + result.already_applied + result.failed + result.not_sent
        rate = (result.updated + result.failed) / elapsed if elapsed > 0 else 0.0
        remaining = sendable - done
        eta = f"{remaining / rate:.0f} s" if rate > 0 and not final else "-"
        pace = _slowest(self.hook.pacer.rate, self.options.max_requests_per_second)
        self.log.info(
            "%s%s: %d/%d done (%.1f%%), %d updated, %d already applied, %d failed, %d skipped, "
            "%d retried, %d throttled, %.1f req/s%s, ETA %s",
            self.words.label,
            " finished" if final else "",
            done,
            sendable,
            100.0 * done / sendable if sendable else 100.0,
            result.updated,
            result.already_applied,
            result.failed,
            result.skipped,
            result.retried,
            result.throttled,
            rate,
            f" (paced at {pace:.1f}/s)" if pace else "",
            eta,
        )


def _slowest(*rates: float | None) -> float | None:
    """The lowest of the rates that are set (``None``: none is)."""
    return min((rate for rate in rates if rate), default=None)


def _short(text: str) -> str:
    return text if len(text) <= _ERROR_CHARS else text[: _ERROR_CHARS - 3] + "..."
