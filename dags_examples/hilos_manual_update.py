"""Update one Hilos conversation by hand, from the Airflow UI's trigger form.

Fill the form (conversation id, status from the dropdown, tags, assignees, team) and trigger.
Leave a field empty to keep its current value. Tick ``dry_run`` to validate the update and log
exactly what would be sent (method, URL, body) without sending anything.

The form's values go straight into ``ConversationUpdateOperator``'s arguments: with
``render_template_as_native_obj=True`` an empty field renders as ``None`` ("not given": the field is
left as it is), tags as a list of names, assignees as a list of ids.
"""

from __future__ import annotations

import pendulum

from airflow.providers.common.compat.sdk import DAG, Param

from airflow_provider_hilos.operators.conversation import ConversationUpdateOperator
from airflow_provider_hilos.schemas import ConversationStatus

with DAG(
    dag_id="hilos_manual_update",
    description="Update one Hilos conversation from the trigger form",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    render_template_as_native_obj=True,
    tags=["hilos", "example", "manual"],
    doc_md=__doc__,
    params={
        "conversation_id": Param(
            type="string",
            format="uuid",
            title="Conversation id",
            description="The conversation's UUID, e.g. from the Hilos inbox URL.",
        ),
        "status": Param(
            None,
            type=["null", "string"],
            enum=[None, *[s.value for s in ConversationStatus]],
            title="Status",
            values_display={
                None: "(keep the current status)",
                **{s.value: s.value.replace("_", " ").capitalize() for s in ConversationStatus},
            },
            description="The new status, from the dropdown.",
        ),
        "tags": Param(
            None,
            type=["null", "array"],
            items={"type": "string", "maxLength": 100},
            title="Tags",
            description="Tag names, one per line. They replace the conversation's tags; empty keeps them.",
        ),
        "assignees": Param(
            None,
            type=["null", "array"],
            items={"type": "integer"},
            title="Assignees",
            description="Hilos user ids as a JSON list, e.g. [3, 7]. They replace the assignees; "
            "null keeps them, [] removes them all.",
        ),
        "team": Param(None, type=["null", "integer"], minimum=1, title="Team", description="Team id; empty keeps it."),
        "dry_run": Param(
            False, type="boolean", title="Dry run", description="Validate and log what would be sent; send nothing."
        ),
    },
) as dag:
    ConversationUpdateOperator(
        task_id="update_conversation",
        conversation_id="{{ params.conversation_id }}",
        status="{{ params.status }}",
        tags="{{ params.tags }}",
        assigned="{{ params.assignees }}",
        assigned_team="{{ params.team }}",
        dry_run="{{ params.dry_run }}",
    )
