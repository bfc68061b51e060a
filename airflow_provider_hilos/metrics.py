"""The provider's metrics, sent through Airflow's ``Stats`` (statsd, or OpenTelemetry, when the deployment's
``[metrics]`` section turns them on; otherwise they cost a function call and go nowhere).

==========================  =======  =========================================================
name                        kind     what it counts
==========================  =======  =========================================================
``hilos.updates.applied``   counter  conversation updates the API accepted
``hilos.updates.failed``    counter  conversation updates that failed for good (after retries)
``hilos.requests.retried``  counter  requests sent again (after a 429, a 5xx, a timeout, a drop)
``hilos.requests.throttled`` counter requests the API answered 429
``hilos.request.duration``  timer    milliseconds from sending a request to its answer
``hilos.conversations.read`` counter conversations read from the list endpoint (an export, a sync)
==========================  =======  =========================================================

With ``statsd_prefix = airflow`` (the default) they arrive as ``airflow.hilos.updates.applied`` and so on.
"""

from __future__ import annotations

import functools
from typing import Any

APPLIED = "hilos.updates.applied"
FAILED = "hilos.updates.failed"
RETRIED = "hilos.requests.retried"
THROTTLED = "hilos.requests.throttled"
DURATION = "hilos.request.duration"
READ = "hilos.conversations.read"


def incr(name: str, count: int = 1) -> None:
    """Add ``count`` to a counter."""
    if count:
        _stats().incr(name, count)


def timing(name: str, milliseconds: float) -> None:
    """Record a duration, in milliseconds."""
    _stats().timing(name, milliseconds)


@functools.cache
def _stats() -> Any:
    """Airflow's ``Stats``, imported on first use (not when a DAG file imports the provider) and then kept:
    a batch records a few metrics per request, and the compat layer's lookup costs more than the call."""
    from airflow.providers.common.compat.sdk import Stats

    return Stats
