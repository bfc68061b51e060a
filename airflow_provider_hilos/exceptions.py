"""Errors raised by the Hilos provider.

``HilosValidationError`` is raised before anything is sent; ``HilosAPIError`` after the API
answered with an error (once the hook's retries are exhausted). None ever contains the token.

Airflow retries a failed task (when the task has ``retries``) unless its error is an
``AirflowFailException``. So every error that another try cannot fix is one: bad input
(``HilosValidationError``), a bad connection (``HilosConfigurationError``), a request the API refused
(``HilosPermanentAPIError``: 400, 401, 403, 404, ...), a batch whose failures are all such refusals
(``HilosPermanentBatchError``). Throttling, server errors, timeouts and outages stay retryable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException


class HilosError(AirflowException):
    """Base class of every error this provider raises on purpose."""

    def __reduce__(self) -> tuple[Callable[..., HilosError], tuple[Any, ...]]:
        # Airflow ships errors across processes: keep the message and every attribute through pickling,
        # whatever the subclass's __init__ takes.
        return (_rebuild, (type(self), str(self), self.__dict__.copy()))


#: At most this many problems are written out in a :class:`HilosValidationError` message (the rest are counted).
MAX_LISTED_PROBLEMS = 50


class HilosValidationError(HilosError, AirflowFailException, ValueError):
    """Bad input, found before any request was sent.

    It is a ``ValueError`` for Python callers and an ``AirflowFailException`` for Airflow,
    so a task with a bad payload fails at once instead of being retried with the same payload.

    :param problems: one ``(field, message)`` pair per problem, e.g.
        ``("status", "'DONE' is not one of CREATED, FLOW, ...")``.
    :param subject: what was being validated, used as the first line of the message.
    """

    def __init__(self, problems: Sequence[tuple[str, str]], subject: str = "Invalid Hilos input") -> None:
        self.problems: list[tuple[str, str]] = list(problems)
        self.subject = subject
        count = len(self.problems)
        lines = [f"{subject}: {count} problem{'s' if count != 1 else ''}:"]
        lines += [f"  - {field}: {message}" for field, message in self.problems[:MAX_LISTED_PROBLEMS]]
        if count > MAX_LISTED_PROBLEMS:
            lines.append(f"  ... and {count - MAX_LISTED_PROBLEMS} more (all of them are in .problems)")
        super().__init__("\n".join(lines))

    @property
    def fields(self) -> list[str]:
        """The names of the bad fields, in the order they were found."""
        return [field for field, _ in self.problems]


class HilosConfigurationError(HilosError, AirflowFailException, ValueError):
    """The Airflow connection is unusable (missing token, bad host, ...). Fix the connection."""


class HilosAPIError(HilosError):
    """The Hilos API answered with an error, or could not be reached, after all retries.

    :param message: the human-readable explanation (what failed and what to fix).
    :param status_code: the HTTP status, or ``None`` when no response was received.
    :param method: the HTTP method, e.g. ``"PATCH"``.
    :param path: the request path (no host, no query string, never a header).
    :param detail: the API's own ``detail`` text when it sent one.
    :param field_errors: the API's field errors (Django REST Framework's ``{"field": ["msg"]}``).
    :param attempts: how many attempts were made.
    :param problem: the cause in a few words (``HTTP 503``, ``no answer within the read timeout (30 s)``).
    :param retry_after: the seconds the API asked to wait (``Retry-After``), if it did.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        method: str = "",
        path: str = "",
        detail: str | None = None,
        field_errors: dict[str, Any] | None = None,
        attempts: int = 1,
        problem: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code  # type: ignore[assignment]  # Airflow's is an HTTPStatus; ours, what the API said
        self.method = method
        self.path = path
        self.detail = detail
        self.field_errors = field_errors or {}
        self.attempts = attempts
        self.problem = problem or (f"HTTP {status_code}" if status_code else "no answer")
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed later (throttling, server errors, network)."""
        return not isinstance(self, AirflowFailException) and (
            self.status_code is None or self.status_code in RETRYABLE_STATUS_CODES or 200 <= self.status_code < 300
        )


class HilosPermanentAPIError(HilosAPIError, AirflowFailException):
    """The API refused the request (400, 401, 403, 404, 405, 409, 422, a redirect, ...): sending it again
    cannot help, so Airflow does not retry the task. Fix the payload, the id, the token or the connection."""


class HilosEndpointNotFoundError(HilosPermanentAPIError):
    """The API has no endpoint at the URL called: the connection's Base URL or API family is wrong.

    Django answers an unknown route with an HTML (or empty) 404, unlike a missing conversation
    (a JSON ``{"detail": ...}`` 404). Every request of that connection would fail the same way,
    so Airflow does not retry it and a batch stops at once.
    """


class HilosBatchError(HilosError):
    """A batch of updates failed by its failure policy. Every row was still accounted for.

    This class itself is retryable: some failed rows may succeed on another try (throttling, server
    errors), and a retried task skips the rows already applied (see the batch operator's ``resume``).

    :param message: the counts and the first failed rows.
    :param result: the batch result (``BatchResult.to_dict()``): counts, duration, failed rows.
    """

    def __init__(self, message: str, *, result: dict[str, Any]) -> None:
        super().__init__(message)
        self.result = result


class HilosPermanentBatchError(HilosBatchError, AirflowFailException):
    """A batch failed, and every failed row was refused for good (400, 404, ...) or the batch stopped on an
    error no row could escape (a missing endpoint, a rejected token): Airflow does not retry it."""


class HilosAPIUnavailableError(HilosBatchError):
    """A batch stopped sending because the API looks unavailable (a run of server errors, timeouts or
    connection failures). Retryable: a later try resumes after the rows already applied."""


class HilosCheckpointError(HilosBatchError):
    """A batch could not record its progress in its checkpoint (a full disk, a lost permission) and stopped
    sending: the rows it applied are counted as updated, and a retry may send them again. Retryable: fix the
    storage, and the next try resumes from what the checkpoint does hold."""


class HilosSyncBusyError(HilosError):
    """Another run of the same sync holds its lease (its state is being changed) and did not let go within the
    waiting bound (``wait_for_other_run``), or took it over from this run. Nothing was sent (or, when the lease was
    lost, this run stopped sending and did not write its state). Retryable: a later try waits for that run again."""


class HilosSyncNotApprovedError(HilosError, AirflowFailException):
    """A sync's plan was not approved: over its limits with ``approval="never"`` (or where no approval can be asked
    for), rejected by a person, unanswered within ``approval_timeout``, or not the plan ``approve_plan`` names.
    Nothing was sent, and the state of the last run is kept as it was. Not retried: another try would plan the same
    writes; fix the desired state, or approve the plan."""


class HilosSyncLogError(HilosError):
    """The sync log could not be written to the warehouse (busy, a permission). Retryable: the rows are kept in the
    sync's state folder (``pending`` of them), and the next run or retry writes them first.

    :param message: what failed and what happens to the rows.
    :param pending: how many log rows wait to be written.
    """

    def __init__(self, message: str, *, pending: int) -> None:
        super().__init__(message)
        self.pending = pending


#: Status codes the hook retries: throttling and transient server/gateway errors.
RETRYABLE_STATUS_CODES: frozenset[int] = frozenset({429, 500, 502, 503, 504})


def _rebuild(cls: type[HilosError], message: str, state: dict[str, Any]) -> HilosError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error
