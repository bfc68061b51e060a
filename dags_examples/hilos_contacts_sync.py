"""Keep the customer record in Hilos equal to the CRM: a daily sync of contacts (names, email, custom properties,
tags, account owner).

The warehouse's ``crm_contacts`` table holds one row per customer, keyed by phone; ``ContactSyncOperator`` reads it
with ``sql/crm_contacts.sql`` on the ``hilos_warehouse`` connection, parses each phone into E.164 (numbers without a
country code are Mexican, ``default_region="MX"``), reads the contact list, and writes only what differs: a
customer Hilos does not have is created, a changed plan or lifetime value is one partial update, an agent's own
custom properties are kept (``meta_mode="merge"``). The account owner is given by email and resolved through the
account's members once per run. Every contact created, updated, failed or invalid gets a row in the warehouse's
``hilos_sync_log`` table, beside the conversation sync's.

Trigger it with ``{"dry_run": true}`` to see the plan first, or with ``{"mode": "mirror"}`` to also delete the
contacts this sync manages that left the CRM (refused past a tenth of them).
"""

from __future__ import annotations

import os

import pendulum

from airflow.providers.common.compat.assets import Asset
from airflow.providers.common.compat.sdk import DAG, Param

from airflow_provider_hilos.operators.contacts import ContactSyncOperator

SYNCED = Asset("hilos_contacts_synced")
REPORTS = os.path.join(os.environ.get("AIRFLOW_HOME", os.path.expanduser("~/airflow")), "hilos_reports", "contacts")

with DAG(
    dag_id="hilos_contacts_sync",
    description="Make Hilos contacts equal to the CRM's customer record, writing only what differs",
    schedule="@daily",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    params={
        "mode": Param(
            "upsert",
            enum=["upsert", "update", "mirror"],
            description="upsert: create the customers Hilos lacks; update: never create; mirror: also delete the "
            "contacts this sync manages that left the CRM",
        ),
        "dry_run": Param(False, type="boolean", description="Plan and log what would change; write nothing"),
    },
    default_args={"retries": 2, "retry_delay": pendulum.duration(minutes=2), "deferrable": True},
    tags=["hilos", "example"],
    doc_md=__doc__,
) as dag:
    ContactSyncOperator(
        task_id="sync_contacts",
        sql="sql/crm_contacts.sql",
        sql_conn_id="hilos_warehouse",
        column_map={"lifetime_value": "meta.ltv", "owner_email": "default_assignees"},
        default_region="MX",
        mode="{{ params.mode }}",
        dry_run="{{ params.dry_run }}",
        log_table="hilos_sync_log",
        report_path=os.path.join(REPORTS, "{{ ds if dag_run.logical_date else run_id | replace(':', '_') }}.jsonl"),
        max_concurrency=16,
        outlets=[SYNCED],
    )
