"""The declarative sync: make Hilos hold what the warehouse declares, sending only what differs.

* :mod:`~airflow_provider_hilos.sync.diff`: the diff of one conversation, a pure function.
* :mod:`~airflow_provider_hilos.sync.desired`: the desired state's sources (SQL, a file, a list) and cells.
* :mod:`~airflow_provider_hilos.sync.plan`: the plan's summary and its JSON Lines file.
* :mod:`~airflow_provider_hilos.sync.state`: the snapshot and failed conversations a run leaves for the next.
* :mod:`~airflow_provider_hilos.sync.lease`: one run of a sync at a time.
* :mod:`~airflow_provider_hilos.sync.runner`: one run, from reading to keeping the state.
* :mod:`~airflow_provider_hilos.sync.warehouse_log`: the per-conversation log written back to the warehouse.

The operator is :class:`~airflow_provider_hilos.operators.sync.ConversationSyncOperator`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from airflow_provider_hilos.batch.options import BatchOptions
from airflow_provider_hilos.exceptions import HilosSyncBusyError
from airflow_provider_hilos.storage import AtomicText
from airflow_provider_hilos.sync.diff import Action, CompareWith, ListMode, PlanEntry, plan_conversation
from airflow_provider_hilos.sync.lease import SyncLease
from airflow_provider_hilos.sync.objects import SyncObject
from airflow_provider_hilos.sync.runner import SyncRunner, SyncSettings
from airflow_provider_hilos.sync.state import SyncStateStore, sync_owner

if TYPE_CHECKING:
    from airflow_provider_hilos.checkpoint import Checkpoint
    from airflow_provider_hilos.hooks.hilos import HilosHook

__all__ = [
    "Action",
    "CompareWith",
    "ListMode",
    "PlanEntry",
    "SyncRunner",
    "SyncSettings",
    "SyncStateStore",
    "plan_conversation",
    "sync_conversations",
    "sync_owner",
]


def sync_conversations(
    hook: HilosHook,
    rows: Iterable[tuple[int, Any]],
    *,
    settings: SyncSettings | None = None,
    options: BatchOptions | None = None,
    store: SyncStateStore | None = None,
    plan: AtomicText | None = None,
    report: AtomicText | None = None,
    checkpoint: Checkpoint | None = None,
    dry_run: bool = False,
    run_id: str | None = None,
    obj: SyncObject | None = None,
) -> dict[str, Any]:
    """One sync without an operator (scripts, tests, benchmarks): validate ``rows`` (``(number, change-set row)``
    pairs), plan, and unless ``dry_run`` apply and keep the state (``obj``: what is synced; default conversations,
    with the settings' modes; a :class:`~airflow_provider_hilos.sync.objects.contact.ContactObject` syncs contacts).

    :return: the counts, the plan's summary and the costs, as the operator returns them.
    :raises HilosValidationError: invalid rows (nothing was sent), unless ``options.skip_invalid_rows``.
    :raises HilosBatchError: the apply failed (the state is kept first).
    :raises HilosSyncBusyError: another run holds the state's lease (nothing was read or sent).
    """
    settings = settings or SyncSettings()
    lease = None
    if store is not None:  # one run at a time, as the operator's (without waiting: a script says so at once)
        lease = SyncLease(store.folder, run_id=run_id or "sync_conversations")
        if (holder := lease.try_acquire()) is not None:
            raise HilosSyncBusyError(f"Hilos sync: another run of this sync holds its state ({holder.describe()})")
        lease.keep()
    runner = SyncRunner(hook, settings, options or BatchOptions(), store=store, log=hook.log, obj=obj)
    try:
        runner.read_desired(iter(rows))
        runner.plan(plan, keep_updates=not dry_run)
        batch = None
        if not dry_run:
            try:
                batch = runner.apply(report=report, checkpoint=checkpoint)
            finally:
                runner.save(run_id)
        return {
            "dry_run": dry_run,
            **runner.counts(batch, dry_run=dry_run),
            "summary": runner.summary.to_dict(),
            "costs": runner.costs(),
        }
    finally:
        runner.close()
        if lease is not None:
            lease.release()
