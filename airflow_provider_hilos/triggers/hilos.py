"""``HilosAvailableTrigger``: waits in the triggerer, not in a worker slot, until the Hilos API answers again.

A deferrable operator that meets an outage (its circuit breaker opened) or a long ``Retry-After`` defers with this
trigger. The trigger sleeps for the wait the API asked for, then probes the API with the cheapest read there is (one
list page of one conversation, through the same connection) every ``probe_interval`` seconds until it answers, and
fires ``{"status": "ready"}``; the operator then resumes where it was (its checkpoint skips what was applied). It
fires ``{"status": "timeout"}`` at ``deadline``, and ``{"status": "error"}`` when the API refuses the probe for good
(a rejected token, a wrong Base URL): waiting cannot fix that.

Its kwargs are the connection id, times and a reason: never the token (the triggerer reads the connection itself),
never rows.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

#: How often the trigger asks whether the API answers again, by default (seconds).
DEFAULT_PROBE_INTERVAL = 15.0


def _event(payload: dict[str, Any]) -> TriggerEvent:
    return TriggerEvent(payload)  # type: ignore[no-untyped-call]


class HilosAvailableTrigger(BaseTrigger):
    """Fire once the Hilos API answers again (or at ``deadline``).

    :param hilos_conn_id: the Airflow connection of type ``hilos`` to probe.
    :param not_before: when to send the first probe (epoch seconds): the end of the wait the API asked for.
    :param deadline: when to give up (epoch seconds): the operator's ``max_wait`` from its first wait.
    :param probe_interval: seconds between probes while the API does not answer.
    :param reason: why the task waits (for the log).
    """

    def __init__(
        self,
        *,
        hilos_conn_id: str,
        not_before: float,
        deadline: float,
        probe_interval: float = DEFAULT_PROBE_INTERVAL,
        reason: str = "",
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.hilos_conn_id = hilos_conn_id
        self.not_before = float(not_before)
        self.deadline = float(deadline)
        self.probe_interval = float(probe_interval)
        self.reason = reason

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """The classpath and kwargs the triggerer rebuilds the trigger from (ids and times only)."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "hilos_conn_id": self.hilos_conn_id,
                "not_before": self.not_before,
                "deadline": self.deadline,
                "probe_interval": self.probe_interval,
                "reason": self.reason,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Sleep until ``not_before``, then probe until the API answers (or the deadline, or a refusal)."""
        probes = 0
        wake = self.not_before
        while True:
            now = time.time()
            if now >= self.deadline:
                yield _event({"status": "timeout", "probes": probes})
                return
            if now < wake:
                await asyncio.sleep(min(wake, self.deadline) - now)
                continue
            probes += 1
            state, message, retry_after = await asyncio.to_thread(self._probe)
            if state == "up":
                yield _event({"status": "ready", "probes": probes})
                return
            if state == "refused":
                yield _event({"status": "error", "message": message, "probes": probes})
                return
            self.log.info("Hilos API still unavailable (%s); next probe in %.0f s", message, self.probe_interval)
            wake = time.time() + max(self.probe_interval, retry_after or 0.0)

    def _probe(self) -> tuple[str, str, float | None]:
        """One read of one conversation: ``("up", "", None)``, ``("down", why, retry_after)`` or
        ``("refused", why, None)`` (a refusal waiting cannot fix)."""
        from airflow_provider_hilos.exceptions import HilosAPIError, HilosConfigurationError
        from airflow_provider_hilos.hooks.hilos import HilosHook

        try:
            with HilosHook(self.hilos_conn_id) as hook:
                hook.list_conversations(page=1, page_size=1, max_attempts=1)
        except HilosAPIError as exc:
            if exc.retryable:
                return "down", exc.problem, exc.retry_after
            return "refused", str(exc), None
        except HilosConfigurationError as exc:
            return "refused", str(exc), None
        return "up", "", None


#: How often a sync waiting for another run of it looks at the lease, by default (seconds).
DEFAULT_LEASE_POLL = 5.0


class HilosSyncLeaseTrigger(BaseTrigger):
    """Fire once another run of the same sync let go of the sync's lease (or its lease expired), or at ``deadline``.

    A deferrable :class:`~airflow_provider_hilos.operators.sync.ConversationSyncOperator` that finds its sync's state
    held by another run (a manual run beside the scheduled one) waits here, not in a worker slot, then takes the
    lease itself. Its kwargs are the state folder's path and times: no token, no rows.

    :param state_folder: the sync task's state folder (where ``lease.json`` is).
    :param deadline: when to give up (epoch seconds): ``wait_for_other_run`` from the first wait.
    :param poll_interval: seconds between looks at the lease.
    :param holder: who held it when the task deferred (for the log).
    """

    def __init__(
        self, *, state_folder: str, deadline: float, poll_interval: float = DEFAULT_LEASE_POLL, holder: str = ""
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.state_folder = state_folder
        self.deadline = float(deadline)
        self.poll_interval = float(poll_interval)
        self.holder = holder

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """The classpath and kwargs the triggerer rebuilds the trigger from (a path and times only)."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "state_folder": self.state_folder,
                "deadline": self.deadline,
                "poll_interval": self.poll_interval,
                "holder": self.holder,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Look at the lease every ``poll_interval`` seconds until it is free (or expired), or the deadline."""
        looks = 0
        while True:
            looks += 1
            if await asyncio.to_thread(self._free):
                yield _event({"status": "free", "looks": looks})
                return
            if time.time() >= self.deadline:
                yield _event({"status": "timeout", "looks": looks})
                return
            await asyncio.sleep(max(0.0, min(self.poll_interval, self.deadline - time.time())))

    def _free(self) -> bool:
        from airflow_provider_hilos.storage import storage_path
        from airflow_provider_hilos.sync.lease import lease_is_free

        return lease_is_free(storage_path(self.state_folder))
