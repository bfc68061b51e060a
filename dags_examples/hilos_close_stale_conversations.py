"""Close stale conversations: the payload comes from an upstream API call's XCom.

An upstream task reads conversations through ``HilosHook.list_conversations`` (read-only), picks
those still ``NEW`` or ``CREATED`` after ``max_age_days``, and builds one update per conversation:
status ``CLOSED`` plus an ``auto-closed`` tag *added to the tags it already has* (the API replaces
the tag list, so the payload carries the old tags too). The updates flow through XCom into mapped
``ConversationUpdateOperator`` tasks.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pendulum

from airflow.providers.common.compat.sdk import DAG, Param, task

from airflow_provider_hilos.operators.conversation import ConversationUpdateOperator

with DAG(
    dag_id="hilos_close_stale_conversations",
    description="Close conversations left NEW/CREATED too long, tagging them auto-closed",
    schedule="@weekly",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["hilos", "example"],
    doc_md=__doc__,
    params={
        "max_age_days": Param(30, type="integer", minimum=1, description="Close conversations older than this"),
        "max_updates": Param(50, type="integer", minimum=1, maximum=500, description="At most this many per run"),
        "tag": Param("auto-closed", type="string", maxLength=100),
    },
) as dag:

    @task
    def find_stale_conversations(params: dict[str, Any], logical_date=None) -> list[dict[str, Any]]:
        from airflow_provider_hilos.hooks.hilos import HilosHook

        now = logical_date or datetime.now(UTC)
        cutoff = now - timedelta(days=params["max_age_days"])
        updates: list[dict[str, Any]] = []
        with HilosHook() as hook:
            page_number = 1
            while len(updates) < params["max_updates"]:
                page = hook.list_conversations(page=page_number, page_size=100)
                for conv in page["results"]:
                    created = datetime.fromisoformat(conv["created_on"].replace("Z", "+00:00"))
                    if conv["status"] in ("NEW", "CREATED") and created < cutoff:
                        names = [tag["name"] for tag in conv.get("tags") or []]
                        if params["tag"] not in names:
                            names.append(params["tag"])
                        payload = {"status": "CLOSED", "tags": names}  # plain tag names
                        updates.append({"conversation_id": conv["id"], "payload": payload})
                if not page.get("next"):
                    break
                page_number += 1
        updates = updates[: params["max_updates"]]
        print(f"{len(updates)} stale conversation(s) to close (created before {cutoff:%Y-%m-%d})")
        return updates

    ConversationUpdateOperator.partial(task_id="close_conversation").expand_kwargs(find_stale_conversations())
