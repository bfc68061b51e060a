"""``[core] hostname_callable`` for the distributed test: two Celery workers on one machine, told apart.

Airflow records the hostname a task instance ran on from this callable; each worker process gets its
own ``HILOS_TEST_WORKER_NAME`` (its task processes inherit it), the other components fall back to the
machine's name.
"""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    return os.environ.get("HILOS_TEST_WORKER_NAME") or socket.getfqdn()
