"""Export every Hilos conversation to a change-set file, daily.

``ConversationExportOperator`` reads the paginated conversation list (one page in memory at a time, each
conversation once, under the connection's quota) and writes it to ``output_path`` in the provider's change-set
format: the CSV the batch operator reads, so the file can be edited and fed back as is. The file appears only once
complete; a downstream DAG scheduled on the ``hilos_conversations`` Asset gets the count and the path in the
event's extra.

Trigger it with ``{"output_path": "s3://bucket/hilos/conversations.csv"}`` to write elsewhere (any
``ObjectStoragePath``).
"""

from __future__ import annotations

import os

import pendulum

from airflow.providers.common.compat.assets import Asset
from airflow.providers.common.compat.sdk import DAG, Param

from airflow_provider_hilos.operators.export import ConversationExportOperator

CONVERSATIONS = Asset("hilos_conversations")
#: $AIRFLOW_HOME/hilos_exports/conversations-<date>.csv unless the run's conf says otherwise (read when the file is
#: parsed: no network, no connection lookup)
DEFAULT_OUTPUT = os.path.join(
    os.environ.get("AIRFLOW_HOME", os.path.expanduser("~/airflow")), "hilos_exports", "conversations-"
)

with DAG(
    dag_id="hilos_export_conversations",
    description="Every Hilos conversation as a change-set CSV",
    schedule="@daily",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["hilos", "example"],
    doc_md=__doc__,
    params={
        "output_path": Param(
            "",
            type="string",
            description="Where to write (a path or URL); empty: $AIRFLOW_HOME/hilos_exports/conversations-<date>.csv",
        ),
    },
) as dag:
    ConversationExportOperator(
        task_id="export",
        # a run without a logical date (a manual one on Airflow 3) has no ds: its file is named by its run id
        output_path="{{ params.output_path or '"
        + DEFAULT_OUTPUT
        + "' ~ (ds if dag_run.logical_date else run_id | replace(':', '_')) ~ '.csv' }}",
        outlets=[CONVERSATIONS],
    )
