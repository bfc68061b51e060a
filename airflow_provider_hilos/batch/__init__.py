"""Bulk conversation updates: validate every row first, then send them concurrently over the hook's one pooled
session, at the pace the connection allows, resuming after the conversations an earlier try updated.

The engine is made of small parts, each in its module, called in one direction:

* :mod:`~airflow_provider_hilos.batch.options`: :class:`BatchOptions`, how a batch sends and when it fails;
* :mod:`~airflow_provider_hilos.batch.pipeline`: the rows (read, validated, de-duplicated, skipped), raw or
  already validated;
* :mod:`~airflow_provider_hilos.batch.scheduler`: which row goes out next, and when a retry is due;
* :mod:`~airflow_provider_hilos.batch.engine`: the sending loop, its workers, the accounting;
* :mod:`~airflow_provider_hilos.batch.report`: the per-row report, in input order;
* :mod:`~airflow_provider_hilos.batch.verdict`: pass or fail, a pure function of the result;
* :mod:`~airflow_provider_hilos.batch.dry_run`: what would be sent.
"""

from __future__ import annotations

from airflow_provider_hilos.batch.options import BatchOptions, FailurePolicy
from airflow_provider_hilos.batch.result import BatchResult, StopReason

__all__ = ["BatchOptions", "BatchResult", "FailurePolicy", "StopReason"]
