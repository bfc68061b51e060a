"""Whether a batch passed: pure functions of what it found and did, and the options.

:func:`validation_verdict` runs before anything is sent (from the validation pass); :func:`batch_verdict` after
(from the :class:`~airflow_provider_hilos.batch.result.BatchResult` alone). Each returns the exception to raise,
or ``None``: the same result and options always give the same verdict.
"""

from __future__ import annotations

from airflow_provider_hilos.batch.options import BatchOptions, FailurePolicy
from airflow_provider_hilos.batch.pipeline import Survey
from airflow_provider_hilos.batch.result import BatchResult, StopReason
from airflow_provider_hilos.batch.wording import BATCH, Wording
from airflow_provider_hilos.exceptions import (
    HilosAPIUnavailableError,
    HilosBatchError,
    HilosCheckpointError,
    HilosPermanentBatchError,
    HilosValidationError,
)


def allowed_failures(options: BatchOptions, sendable: int) -> int:
    """How many of ``sendable`` rows may fail before the batch fails (``max_failed_ratio``)."""
    return int(options.max_failed_ratio * sendable)


def validation_verdict(survey: Survey, options: BatchOptions, words: Wording = BATCH) -> HilosValidationError | None:
    """Refuse the batch before sending, if its invalid rows say so. A shard decides on the whole change set's
    rows: its verdict is the one the unsharded batch would reach, so all shards pass or all refuse.

    :param words: how the message names the batch and its rows (a sync speaks of the sync).
    :return: the error listing the invalid rows, or ``None`` when the valid rows may be sent.
    """
    # sharded: the whole change set's counts, so every shard reaches the verdict the unsharded batch would
    invalid, total = (survey.set_invalid, survey.set_total) if survey.sharded else (survey.invalid, survey.total)
    if not invalid:
        return None
    listed = list(survey.listed)
    if invalid > len(listed):
        listed.append(("...", f"and {invalid - len(listed)} more invalid row(s)"))
    whole = " of the whole change set (every shard decides on it alike)" if survey.sharded else ""
    if not options.skip_invalid_rows:
        return HilosValidationError(
            listed,
            f"{words.label} refused: {invalid} of {total} {words.unit}(s){whole} are invalid and nothing was sent "
            f"(fix them, or set skip_invalid_rows=True to {words.rest})",
        )
    allowed = total - 1 if options.max_invalid_ratio is None else int(options.max_invalid_ratio * total)
    if invalid <= allowed:
        return None
    share = (
        "every row is invalid"
        if invalid == total
        else f"more than max_invalid_ratio={options.max_invalid_ratio} of them are invalid"
    )
    return HilosValidationError(
        listed,
        f"{words.label} refused: {invalid} of {total} {words.unit}(s){whole} are invalid, and {share}, so nothing "
        "was sent: "
        "the input is probably not what was meant (a CSV read as JSON Lines?). Fix it, or raise "
        "max_invalid_ratio (1.0 allows a batch of invalid rows only)",
    )


def batch_verdict(result: BatchResult, options: BatchOptions, words: Wording = BATCH) -> HilosBatchError | None:
    """Fail the batch if it stopped early, or if its failure policy says so (``words``: how the message names the
    batch and its rows).

    :return: ``None`` when it passed, else the error to raise (the result attached):
        :class:`HilosPermanentBatchError` when every failure is a refusal another try cannot fix (Airflow does not
        retry it) or the batch stopped on an error every row shared; :class:`HilosAPIUnavailableError` when the API
        looked down (retryable); :class:`HilosCheckpointError` when progress could not be recorded;
        :class:`HilosBatchError` when too many rows failed, some for reasons another try may fix.
    """
    sendable = result.sendable
    label, unit = words.label, words.unit
    counts = (
        f"{result.updated + result.already_applied} of {sendable} {unit}(s) applied ({result.updated} now, "
        f"{result.already_applied} by an earlier try), {result.failed} failed, {result.not_sent} not sent"
    )
    payload = result.to_dict()
    stop = result.stop_reason
    if stop == StopReason.REFUSED:
        return HilosPermanentBatchError(
            f"{label} stopped at its first answers, as every {unit} would fail the same way: {result.stopped} "
            f"{counts}.",
            result=payload,
        )
    if stop == StopReason.API_UNAVAILABLE:
        detail = (result.stopped or "").partition(": ")[2]
        return HilosAPIUnavailableError(
            f"Hilos API looks unavailable: {detail}. The {label.split()[-1]} stopped sending; {counts}. "
            "A retry of the task resumes after the rows already applied.",
            result=payload,
        )
    if stop == StopReason.THROTTLED:
        return HilosAPIUnavailableError(
            f"Hilos API throttled this {label.split()[-1]}: {result.stopped}. It stopped sending; {counts}. A "
            "deferrable "
            "task waits in the triggerer and resumes after the rows already applied (so does a retry of the task).",
            result=payload,
        )
    if stop == StopReason.CHECKPOINT:
        return HilosCheckpointError(f"{label} stopped sending: {result.stopped}; {counts}.", result=payload)
    if stop in (StopReason.REPORT, StopReason.LEASE_LOST):
        return HilosBatchError(f"{label} stopped sending: {result.stopped}; {counts}.", result=payload)
    if stop == StopReason.KILLED:
        return HilosBatchError(f"{label} stopped sending: {result.stopped}; {counts}.", result=payload)
    if result.skipped and not options.skip_invalid_rows:  # validated updates refused one by one (a repeat)
        return HilosPermanentBatchError(
            f"{label}: {result.skipped} update(s) were invalid and not sent (set skip_invalid_rows=True to "
            f"allow that); {counts}.",
            result=payload,
        )
    if options.policy is FailurePolicy.NEVER or not (result.failed or result.not_sent):
        return None
    allowed = allowed_failures(options, sendable)
    if result.failed <= allowed and not result.not_sent:
        return None
    first = "; ".join(
        f"{_named(words, r['row'], r.get(words.key_field))}: {r['error']}" for r in result.failed_rows[:5]
    )
    permanent = result.failed == result.failed_permanently
    error_class = HilosPermanentBatchError if permanent else HilosBatchError
    return error_class(
        f"{label} failed: {result.failed} of {sendable} {unit}(s) failed (allowed: {allowed}, "
        f"max_failed_ratio={options.max_failed_ratio}); {counts}"
        + (" (every failure is a refusal another try cannot fix: Airflow will not retry)" if permanent else "")
        + f". First failures: {first}",
        result=payload,
    )


def _named(words: Wording, number: int, conversation_id: str | None) -> str:
    """A failed row as the verdict names it: ``row 3 (<id>)`` in a batch, ``conversation <id>`` in a sync."""
    return words.row(number, conversation_id) if words.by_key else f"row {number} ({conversation_id})"
