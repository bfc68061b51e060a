"""What the provider's operators share: flags a template renders, the batch options as flat arguments, where
checkpoints live by default, and the Asset events a successful run announces."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from airflow_provider_hilos.batch.options import BatchOptions, insert_param_docs, pop_batch_options
from airflow_provider_hilos.batch.result import StopReason
from airflow_provider_hilos.checkpoint import Checkpoint, task_owner
from airflow_provider_hilos.exceptions import (
    HilosAPIError,
    HilosAPIUnavailableError,
    HilosConfigurationError,
    HilosValidationError,
)
from airflow_provider_hilos.schemas import show
from airflow_provider_hilos.storage import StoragePath, storage_path

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_hilos.batch.engine import BatchEngine

T = TypeVar("T")

#: A wait shorter than this is waited out in the worker; a longer one, in the triggerer (``defer_after_seconds``).
DEFAULT_DEFER_AFTER_SECONDS = 10.0
#: The longest a task waits for the API in all, deferred or not, before it fails (``max_wait``).
DEFAULT_MAX_WAIT = 3600.0

#: How long ``on_kill`` waits for the requests in flight to finish, so their outcomes reach the checkpoint
#: (Airflow 3's supervisor sends SIGKILL 5 s after SIGTERM).
KILL_GRACE_SECONDS = 4.0


def parse_flag(value: Any, *, field: str) -> bool:
    """A bool argument that may come from a template (``"True"``, ``"false"``, ``"1"``...).

    :raises HilosValidationError: anything else.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    raise HilosValidationError(
        [(field, f"must be True or False, got {type(value).__name__} {show(value)}")], f"Invalid Hilos {field}"
    )


class BatchArguments:
    """The batch options as an operator's own flat, templated arguments (``max_concurrency=32``,
    ``max_requests_per_second="{{ var.value.hilos_quota }}"``): one definition, :class:`BatchOptions`.

    The operator's ``__init__`` is decorated with :func:`~airflow_provider_hilos.batch.options.with_batch_options`
    and calls :meth:`_take_batch_options` with its ``**kwargs`` before ``BaseOperator.__init__``.
    """

    def _take_batch_options(self, kwargs: dict[str, Any]) -> None:
        values = pop_batch_options(kwargs)
        task = kwargs.get("task_id", "")
        try:
            BatchOptions.check_arguments(values)  # when the DAG file is parsed: what is not a template yet
        except ValueError as exc:
            raise ValueError(f"{type(self).__name__} {task!r}: {exc}") from None
        for name, value in values.items():
            setattr(self, name, value)

    def batch_options(self) -> BatchOptions:
        """The options, from the (rendered) arguments.

        :raises HilosValidationError: a rendered value is not what its option takes.
        """
        values = {name: getattr(self, name) for name in BatchOptions.names()}
        try:
            return BatchOptions.from_arguments(values)
        except ValueError as exc:
            field = str(exc).split("=", 1)[0]
            raise HilosValidationError([(field, str(exc))], "Invalid Hilos batch options") from None


class EngineStopper:
    """What an operator that runs the batch engine needs to stop cleanly when killed: it keeps the engine (pass
    :meth:`_keep_engine` as the hook's ``engine=`` callback) and the checkpoint (``self._checkpoint``)."""

    _engine: BatchEngine | None = None
    _checkpoint: Checkpoint | None = None

    def _keep_engine(self, engine: BatchEngine) -> None:
        self._engine = engine

    def on_kill(self) -> None:
        """Stop sending: no new request starts; the requests in flight finish (or time out, waited for up to
        ``KILL_GRACE_SECONDS``) and what they applied is in the checkpoint."""
        engine = self._engine
        if engine is None:
            return
        engine.stop(StopReason.KILLED, "the task was stopped (on_kill: marked failed, timed out or shut down)")
        engine.wait_idle(KILL_GRACE_SECONDS)
        if self._checkpoint is not None:
            self._checkpoint.close()


def task_checkpoint(
    context: Context, *, resume: bool, checkpoint_path: str | None, report_path: str | None
) -> Checkpoint | None:
    """The checkpoint of the running task instance (``None`` with ``resume=False``), under ``checkpoint_path`` or
    :func:`default_checkpoint_root`."""
    if not resume:
        return None
    root = storage_path(checkpoint_path) if checkpoint_path else default_checkpoint_root(report_path)
    ti = context["ti"]
    return Checkpoint.for_task(root, task_owner(ti.dag_id, ti.run_id, ti.task_id, getattr(ti, "map_index", None)))


def default_checkpoint_root(report_path: str | None) -> StoragePath:
    """Where checkpoints go when ``checkpoint_path`` is not given: ``_hilos_checkpoints`` next to the report if
    there is one, else ``$AIRFLOW_HOME/hilos_checkpoints``."""
    if report_path:
        return storage_path(report_path).parent / "_hilos_checkpoints"
    home = os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")
    return storage_path(os.path.join(home, "hilos_checkpoints"))


def announce(context: Context, outlets: Any, summary: Mapping[str, Any]) -> None:
    """Put ``summary`` in the event of every Asset in ``outlets`` (downstream DAGs scheduled on it run after this
    task, and can read what it did from the event's extra)."""
    events = context.get("outlet_events")
    if events is None:
        return
    from airflow.providers.common.compat.assets import Asset

    for outlet in outlets or []:
        if isinstance(outlet, Asset):
            events[outlet].extra.update(summary)


def default_deferrable() -> bool:
    """Airflow's ``[operators] default_deferrable`` (``False`` when it is not set)."""
    from airflow.configuration import conf

    return conf.getboolean("operators", "default_deferrable", fallback=False)


#: The ``:param:`` lines of the three arguments every operator takes from :class:`WaitsOutOutages`.
WAIT_OPTION_DOCS = """\
:param deferrable: wait out an outage or a long ``Retry-After`` instead of failing: up to
    ``defer_after_seconds`` in the worker, longer in the triggerer (the worker slot is free meanwhile), then resume
    where the task was. Default: Airflow's ``[operators] default_deferrable``. The triggerer must be running.
:param defer_after_seconds: the longest wait spent in the worker (default 10 s).
:param max_wait: the most a task waits for the API in all, deferred or not, before it fails (default 3600 s)."""


def with_wait_option_docs(doc: str | None) -> str:
    """An operator's docstring with :data:`WAIT_OPTION_DOCS` in place of its line ``{wait_options}``."""
    return insert_param_docs(doc, "{wait_options}", WAIT_OPTION_DOCS)


def check_waits(defer_after_seconds: Any, max_wait: Any, where: str) -> None:
    """Refuse a ``defer_after_seconds`` or ``max_wait`` that is not a number of seconds (when the DAG is parsed).

    :raises ValueError: naming the argument and the fix.
    """
    for name, value in (("defer_after_seconds", defer_after_seconds), ("max_wait", max_wait)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 7 * 24 * 3600:
            raise ValueError(f"{where}: {name}={show(value)} must be a number of seconds from 0 to 604800 (a week)")


class WaitsOutOutages:
    """What makes an operator wait out an outage instead of failing.

    With ``deferrable``, a wait the API asks for (its circuit breaker's cool-down after a run of failures, a
    ``Retry-After``) is waited out in the worker when it is at most ``defer_after_seconds``, and in the triggerer
    when longer (:class:`~airflow_provider_hilos.triggers.hilos.HilosAvailableTrigger`); then the operator runs
    again where it was (its checkpoint skips what was applied). ``max_wait`` bounds the waiting in all. Without
    ``deferrable``, the error is raised as before (Airflow's ``retries`` decide).

    The operator calls :meth:`_take_wait_arguments` in its ``__init__``, keeps the hook it sends with as
    ``self._hilos_hook``, and runs its work (``_execute_once``) through :meth:`_run_waiting`.
    """

    deferrable: bool
    defer_after_seconds: float
    max_wait: float
    hilos_conn_id: str
    log: Any

    def _run_waiting(self, attempt: Callable[[], T], *, waited: float = 0.0) -> T:
        """``attempt()``, again after each wait for the API (in the worker, or deferred), until it succeeds."""
        while True:
            try:
                return attempt()
            except (HilosAPIUnavailableError, HilosAPIError) as exc:
                if not self.deferrable or (isinstance(exc, HilosAPIError) and not exc.retryable):
                    raise
                wait = self._wait_for(exc)
                if waited + wait > self.max_wait:
                    raise HilosAPIUnavailableError(
                        f"Hilos API unavailable: this task has waited {waited:.0f} s for it, and another "
                        f"{wait:.0f} s would pass max_wait={self.max_wait:g} s; it fails now ({exc})",
                        result=getattr(exc, "result", {}),
                    ) from exc
                if wait <= self.defer_after_seconds:
                    self.log.warning("Hilos API unavailable (%s); waiting %.0f s in the worker", _why(exc), wait)
                    time.sleep(wait)
                    waited += wait
                    continue
                self._defer_for(wait, waited, _why(exc))

    def _take_wait_arguments(
        self, deferrable: bool | None, defer_after_seconds: float, max_wait: float, where: str
    ) -> None:
        """Set (and check) the three arguments; ``deferrable=None`` is Airflow's ``default_deferrable``."""
        check_waits(defer_after_seconds, max_wait, where)
        self.deferrable = default_deferrable() if deferrable is None else bool(deferrable)
        self.defer_after_seconds = float(defer_after_seconds)
        self.max_wait = float(max_wait)

    def _longest_hold(self) -> float | None:
        """The longest ``Retry-After`` the task's hook waits out in the worker: ``defer_after_seconds`` when
        deferrable (a longer one is waited out deferred), else ``None`` (every wait held, as without deferral)."""
        return self.defer_after_seconds if self.deferrable else None

    def _wait_for(self, exc: Exception) -> float:
        """The wait the API asked for: what is left of the hook's circuit-breaker cool-down, or the last
        ``Retry-After``; at least the breaker's first cool-down (the hook already retried with backoff)."""
        from airflow_provider_hilos.pacing import CircuitBreaker

        hook = getattr(self, "_hilos_hook", None)
        left = hook.breaker.retry_in() if hook is not None and "transport" in hook.__dict__ else 0.0
        retry_after = (
            getattr(exc, "retry_after", None) or (getattr(exc, "result", None) or {}).get("retry_after") or 0.0
        )
        return max(CircuitBreaker.COOL_DOWN, float(retry_after), left)

    def _defer_for(self, wait: float, waited: float, reason: str) -> None:
        from airflow_provider_hilos.triggers.hilos import HilosAvailableTrigger

        now = time.time()
        self.log.warning(
            "Hilos API unavailable (%s): deferring for %.0f s (then probing it), the worker slot is free meanwhile",
            reason,
            wait,
        )
        self.defer(  # type: ignore[attr-defined]
            trigger=HilosAvailableTrigger(
                hilos_conn_id=self.hilos_conn_id,
                not_before=now + wait,
                deadline=now + max(wait, self.max_wait - waited),
                reason=reason,
            ),
            method_name="execute_complete",
            kwargs={"waited": waited, "deferred_at": now},
        )

    def execute_complete(
        self, context: Context, event: Mapping[str, Any], waited: float = 0.0, deferred_at: float | None = None
    ) -> Any:
        """Back from the triggerer: run again where the task was, or fail if the wait ran out or was refused."""
        waited += max(0.0, time.time() - (deferred_at or time.time()))
        status = event.get("status")
        if status == "error":
            raise HilosConfigurationError(f"Hilos API refused the probe while this task waited: {event.get('message')}")
        if status != "ready":
            raise HilosAPIUnavailableError(
                f"Hilos API still unavailable after {waited:.0f} s of waiting (max_wait={self.max_wait:g} s); the "
                "task fails now, and Airflow's retries (if any) start over from its checkpoint",
                result={},
            )
        self.log.info("Hilos API answers again after %.0f s of waiting; resuming", waited)
        return self._run_waiting(lambda: self._execute_once(context), waited=waited)

    def _execute_once(self, context: Context) -> Any:
        raise NotImplementedError


def _why(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


class EmitsLineage:
    """``get_openlineage_facets_on_complete`` for Airflow's OpenLineage provider (see
    :mod:`~airflow_provider_hilos.lineage`): the operator implements ``_lineage()`` from what its run kept in
    ``self._lineage_facts``; no lineage (``None``) when the provider is not installed, the task kept nothing, or
    anything goes wrong: lineage never fails a task."""

    _lineage_facts: dict[str, Any] | None = None
    log: Any

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """What this run read and wrote, as OpenLineage datasets, with its counts as a run facet."""
        if not self._lineage_facts:
            return None
        try:
            import airflow.providers.openlineage  # noqa: F401  (the provider: without it, no lineage)
        except ImportError:
            return None
        try:
            return self._lineage(self._lineage_facts)
        except Exception as exc:  # never fail a task for its lineage
            self.log.debug("Hilos: no OpenLineage facets for this task (%s)", exc)
            return None

    def _lineage(self, facts: dict[str, Any]) -> Any:
        raise NotImplementedError
