"""Keep Hilos equal to the warehouse: a daily declarative sync of every managed conversation.

The warehouse declares, in ``crm_conversation_state``, what each managed conversation should be (status, tags,
assignees, team); ``ConversationSyncOperator`` reads it with ``sql/crm_desired_state.sql`` on the
``hilos_warehouse`` connection (any SQL connection: PostgreSQL, Snowflake, BigQuery, SQLite ...), reads what Hilos
holds through the conversation list, and sends only the conversations that differ: a day on which 1 % of the rows
changed costs 1 % of the writes, plus one read per list page. A conversation an agent changed by hand is put back
(counted as drift corrected). Every conversation changed, failed or not found gets a row in the warehouse's
``hilos_sync_log`` table, and the plan (each field's from and to) is written beside the report.

Trigger it with ``{"dry_run": true}`` to see the plan without sending anything, or with
``{"compare_with": "nothing"}`` to force a full resync.
"""

from __future__ import annotations

import os

import pendulum

from airflow.providers.common.compat.assets import Asset
from airflow.providers.common.compat.sdk import DAG, Param

from airflow_provider_hilos.operators.sync import ConversationSyncOperator

SYNCED = Asset("hilos_conversations_synced")
#: reports and plans go to $AIRFLOW_HOME/hilos_reports/crm_sync/<date>.jsonl (read when the file is parsed: no
#: network, no connection lookup)
REPORTS = os.path.join(os.environ.get("AIRFLOW_HOME", os.path.expanduser("~/airflow")), "hilos_reports", "crm_sync")

with DAG(
    dag_id="hilos_crm_sync",
    description="Make Hilos conversations equal to the warehouse's desired state, sending only what differs",
    schedule="@daily",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # one run at a time: each reads the state the last one left
    params={
        "compare_with": Param(
            "hilos",
            enum=["hilos", "last_sync", "nothing"],
            description="hilos: read what Hilos holds (catches hand edits); last_sync: the last run's snapshot; "
            "nothing: send every row",
        ),
        "dry_run": Param(False, type="boolean", description="Plan and log what would change; send nothing"),
    },
    # deferrable: an outage or a long throttle is waited out in the triggerer, not in a worker slot
    default_args={"retries": 2, "retry_delay": pendulum.duration(minutes=2), "deferrable": True},
    tags=["hilos", "example"],
    doc_md=__doc__,
) as dag:
    ConversationSyncOperator(
        task_id="sync",
        sql="sql/crm_desired_state.sql",
        sql_conn_id="hilos_warehouse",
        column_map={"assignee_ids": "assigned", "team_id": "assigned_team"},
        log_table="hilos_sync_log",
        compare_with="{{ params.compare_with }}",
        dry_run="{{ params.dry_run }}",
        # one report (and plan) per day; a run without a logical date (a manual one on Airflow 3) has no ds: its id
        report_path=os.path.join(REPORTS, "{{ ds if dag_run.logical_date else run_id | replace(':', '_') }}.jsonl"),
        max_concurrency=16,
        outlets=[SYNCED],
    )
