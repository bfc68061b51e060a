"""Update one Hilos conversation by hand, from the Airflow UI's trigger form.

Fill the form (conversation id, status from the dropdown, tags, assignees, team) and trigger.
Leave a field empty to keep its current value. Tick ``dry_run`` to validate and log the payload
without sending anything.
"""

from __future__ import annotations

import json
from typing import Any

import pendulum

from airflow.providers.common.compat.sdk import DAG, Param, task

from airflow_provider_hilos.operators.conversation import ConversationUpdateOperator
from airflow_provider_hilos.schemas import ConversationStatus, validate_update

with DAG(
    dag_id="hilos_manual_update",
    description="Update one Hilos conversation from the trigger form",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
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
        "dry_run": Param(False, type="boolean", title="Dry run", description="Validate and log, send nothing."),
    },
) as dag:

    @task(multiple_outputs=True)
    def build_request(params: dict[str, Any]) -> dict[str, Any]:
        """The form's fields as a validated Hilos payload (fails here, before anything is sent)."""
        payload: dict[str, Any] = {}
        if params.get("status"):
            payload["status"] = params["status"]
        if params.get("tags") is not None:
            payload["tags"] = [{"name": str(name)} for name in params["tags"]]
        if params.get("assignees") is not None:
            payload["assigned"] = [{"id": int(user_id)} for user_id in params["assignees"]]
        if params.get("team") is not None:
            payload["assigned_team"] = int(params["team"])
        update = validate_update(params["conversation_id"], payload)
        print(f"Payload for conversation {update.conversation_id}: {json.dumps(update.body, sort_keys=True)}")
        return {"conversation_id": update.conversation_id, "payload": update.body}

    @task.short_circuit
    def send_unless_dry_run(params: dict[str, Any]) -> bool:
        if params["dry_run"]:
            print("dry_run is set: the payload is valid and nothing was sent.")
        return not params["dry_run"]

    request = build_request()
    update = ConversationUpdateOperator(
        task_id="update_conversation", conversation_id=request["conversation_id"], payload=request["payload"]
    )
    request >> send_unless_dry_run() >> update
