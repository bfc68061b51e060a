"""What a batch did: :class:`BatchResult`, small enough for XCom."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class StopReason(StrEnum):
    """Why a batch stopped sending before the end of its input."""

    #: an error every row would share (a missing endpoint, a rejected token)
    REFUSED = "refused"
    #: the circuit breaker opened: the API looks unavailable
    API_UNAVAILABLE = "api_unavailable"
    #: ``fail_fast``: more rows failed than allowed
    FAIL_FAST = "fail_fast"
    #: the task was killed (``on_kill``: marked failed, timed out)
    KILLED = "killed"
    #: progress could not be written to the checkpoint
    CHECKPOINT = "checkpoint"
    #: the API asked (``Retry-After``) for a longer wait than the batch may hold its worker (the hook's
    #: ``longest_hold``: a deferrable operator's ``defer_after_seconds``)
    THROTTLED = "throttled"
    #: a sync lost its lease (another run of it took over): it must not go on changing what that run plans from
    LEASE_LOST = "lease_lost"
    #: the per-row report could not be written (a full disk, a lost permission)
    REPORT = "report"


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
    :param stop_reason: the kind of stop (a :class:`StopReason` value), if it did.
    :param retry_after: the wait the API asked for when the batch stopped for it (``throttled``), in seconds.
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
    stop_reason: str | None = None
    retry_after: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def sendable(self) -> int:
        """Rows that were valid: the ones the failure policy counts."""
        return self.total - self.skipped

    def stop(self, reason: StopReason, message: str) -> bool:
        """Record the first reason the batch stopped (later ones are consequences). Returns whether it was the first."""
        if self.stop_reason is not None:
            return False
        self.stop_reason, self.stopped = reason.value, message
        return True
