"""A large CRM sync split over several workers, sharing one API quota.

One change set (a JSON Lines or CSV file your warehouse exports, on storage every worker reaches:
a shared volume, ``s3://``, ``gs://`` ...) is split into ``SHARDS`` mapped
``ConversationBatchUpdateOperator`` tasks. Each task reads the whole file and sends only its shard's rows
(a stable hash of the conversation id: every row in exactly one shard, every row of one conversation in
the same shard), paced at ``API_QUOTA * TARGET_SHARE / SHARDS`` requests per second. The pool
``hilos_api`` (``SHARDS`` slots) keeps more than ``SHARDS`` of them from running at once, across runs and
DAGs, so together they stay under the quota however the executor spreads them over workers.

Before the first run:

    airflow pools set hilos_api 4 "Hilos API: one slot per shard"

A shard whose worker dies is retried (by the scheduler, on any worker) and skips the rows it had
already applied: its checkpoint lives under ``checkpoint_path``, which must be storage every worker
reaches too (here: ``$AIRFLOW_HOME/hilos_checkpoints`` unless the run's conf says otherwise).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pendulum

from airflow.providers.common.compat.sdk import DAG, Param, task

from airflow_provider_hilos.operators.conversation import ConversationBatchUpdateOperator

#: how many tasks share the change set (and how many slots the ``hilos_api`` pool has)
SHARDS = 4
#: requests per second the shards share. Hilos does not publish its limits: use what your plan allows
#: (a batch that meets 429s slows down by itself, but staying under the quota costs no retries).
API_QUOTA = 400.0
#: the share of the quota the shards aim for: an API counts requests as they arrive, and arrivals bunch
#: (the network, busy workers), so shards paced at exactly the quota would now and then cross it
TARGET_SHARE = 0.9
#: the pool that keeps at most SHARDS shards running at once
POOL = "hilos_api"
CHANGES_FILE = Path(__file__).parent / "data" / "crm_changes.csv"

with DAG(
    dag_id="hilos_crm_sync_sharded",
    description="Apply a large change set to Hilos with several workers under one API quota",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    params={
        "updates_path": Param(
            str(CHANGES_FILE),
            type="string",
            description="The change set: a JSON Lines or CSV file (local path, s3://, gs:// ...) every worker reads",
        ),
        "checkpoint_path": Param(
            "",
            type="string",
            description="Where shards record applied rows (storage every worker reaches); empty: $AIRFLOW_HOME",
        ),
    },
    # a worker lost mid-shard is retried; the retry delay is the deployment's [core] default_task_retry_delay
    default_args={"retries": 2},
    tags=["hilos", "example"],
    doc_md=__doc__,
) as dag:
    shards = ConversationBatchUpdateOperator.sharded(
        task_id="sync_shard",
        shards=SHARDS,
        total_requests_per_second=API_QUOTA * TARGET_SHARE,
        updates_path="{{ params.updates_path }}",
        checkpoint_path="{{ params.checkpoint_path }}",  # empty: the default
        max_concurrency=8,
        pool=POOL,
    )

    @task
    def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
        """Add up what the shards did (each shard's result is one dict)."""
        counts = ("total", "updated", "already_applied", "failed", "skipped", "not_sent", "retried", "throttled")
        summary: dict[str, Any] = {name: sum(r[name] for r in results) for name in counts}
        summary["shards"] = len(results)
        summary["slowest_shard_seconds"] = max(r["duration_seconds"] for r in results)
        print(f"{summary['updated']} of {summary['total']} updates applied over {len(results)} shards: {summary}")
        return summary

    summarize(shards.output)
