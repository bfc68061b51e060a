"""What the provider's operators share: flags a template renders, the batch options as flat arguments, where
checkpoints live by default, and the Asset events a successful run announces."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_provider_hilos.batch.options import BatchOptions, pop_batch_options
from airflow_provider_hilos.batch.result import StopReason
from airflow_provider_hilos.checkpoint import Checkpoint, task_owner
from airflow_provider_hilos.exceptions import HilosValidationError
from airflow_provider_hilos.schemas import show
from airflow_provider_hilos.storage import StoragePath, storage_path

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_hilos.batch.engine import BatchEngine

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
