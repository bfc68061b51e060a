"""Scheduled CRM sync: apply a warehouse change set to Hilos conversations.

Each row of ``data/crm_changes.csv`` (exported by your warehouse) is one conversation update:

    conversation_id,status,tags,assignee_ids,team_id
    6513270e-...,IN_PROGRESS,vip|new-customer,3,2

An empty cell leaves the field unchanged; ``-`` clears a list (tags or assignees). Tags and assignees
are replaced as a whole, exactly as the Hilos API does. Each update is one mapped
``ConversationUpdateOperator`` task whose payload comes from XCom; past a few hundred rows
per run, prefer a batch operator to one task per row.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pendulum

from airflow.providers.common.compat.sdk import DAG, Param, task

from airflow_provider_hilos.operators.conversation import ConversationUpdateOperator

CHANGES_FILE = Path(__file__).parent / "data" / "crm_changes.csv"


def _split(cell: str) -> list[str] | None:
    cell = (cell or "").strip()
    if not cell:
        return None  # unchanged
    if cell == "-":
        return []  # cleared
    return [part.strip() for part in cell.split("|") if part.strip()]


def row_to_update(row: dict[str, str]) -> dict[str, Any]:
    """One CSV row -> ``{"conversation_id": ..., "payload": {...}}`` (only the fields the row sets)."""
    payload: dict[str, Any] = {}
    if status := (row.get("status") or "").strip():
        payload["status"] = status
    if (tags := _split(row.get("tags", ""))) is not None:
        payload["tags"] = [{"name": name} for name in tags]
    if (assignees := _split(row.get("assignee_ids", ""))) is not None:
        payload["assigned"] = [{"id": int(user_id)} for user_id in assignees]
    if team := (row.get("team_id") or "").strip():
        payload["assigned_team"] = int(team)
    return {"conversation_id": row["conversation_id"].strip(), "payload": payload}


def load_change_set(path: str | Path) -> list[dict[str, Any]]:
    """Read a change-set CSV into conversation updates."""
    with open(path, newline="", encoding="utf-8") as handle:
        return [row_to_update(row) for row in csv.DictReader(handle)]


with DAG(
    dag_id="hilos_crm_sync",
    description="Push the warehouse's conversation changes (status, tags, assignees, team) to Hilos",
    schedule="@daily",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    params={"changes_file": Param(str(CHANGES_FILE), type="string", description="CSV change set to apply")},
    default_args={"retries": 2, "retry_delay": pendulum.duration(minutes=2)},
    tags=["hilos", "example"],
    doc_md=__doc__,
) as dag:

    @task
    def read_change_set(params: dict[str, Any]) -> list[dict[str, Any]]:
        """Turn the change set into one ``{"conversation_id", "payload"}`` per conversation."""
        updates = load_change_set(params["changes_file"])
        print(f"{len(updates)} conversation update(s) to apply from {params['changes_file']}")
        return updates

    @task
    def report(results: list[dict[str, Any]]) -> dict[str, int]:
        """Summarise the conversations as Hilos returned them."""
        by_status: dict[str, int] = {}
        for conversation in results:
            by_status[conversation["status"]] = by_status.get(conversation["status"], 0) + 1
        print(f"{len(results)} conversation(s) updated; status now: {by_status}")
        return by_status

    applied = ConversationUpdateOperator.partial(task_id="apply_update", hilos_conn_id="hilos_default").expand_kwargs(
        read_change_set()
    )
    report(applied.output)
