"""A change set applied by mapped single updates: one ``ConversationUpdateOperator`` task per conversation.

The lower-level way (for a few hundred rows at most); to keep Hilos equal to a warehouse table, use
``hilos_crm_sync`` (``ConversationSyncOperator``), which sends only what differs.

Each row of ``data/crm_changes.csv`` (exported by your warehouse) is one conversation update, in the
provider's CSV change-set format (the one ``ConversationBatchUpdateOperator(updates_path=...)`` reads):

    conversation_id,status,tags,assigned,assigned_team
    6513270e-...,IN_PROGRESS,vip|new-customer,3,2

An empty cell leaves the field unchanged; ``-`` clears it (tags or assignees). Tags and assignees
are replaced as a whole, exactly as the Hilos API does. Every row is checked when the change set is
read, so a bad row fails that task before any update is sent. Each update is then one mapped
``ConversationUpdateOperator`` task (named by its conversation id in the grid) whose arguments come
from XCom; past a few hundred rows per run, prefer ``ConversationBatchUpdateOperator``.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

import pendulum

from airflow.providers.common.compat.sdk import DAG, Param, task

from airflow_provider_hilos.exceptions import HilosValidationError
from airflow_provider_hilos.inputs import rows_from_csv
from airflow_provider_hilos.operators.conversation import ConversationUpdateOperator
from airflow_provider_hilos.rows import RowChecker

CHANGES_FILE = Path(__file__).parent / "data" / "crm_changes.csv"


def load_change_set(path: str | Path) -> list[dict[str, Any]]:
    """Read a change-set CSV into ``{"conversation_id": ..., "payload": {...}}`` updates, every row checked.

    :raises HilosValidationError: naming the line and the problem of every bad row.
    """

    def open_text() -> IO[str]:
        return open(path, newline="", encoding="utf-8")

    updates, problems, checker = [], [], RowChecker()
    for line, row in rows_from_csv(open_text, name=str(path))():
        try:
            checker.check(line, row)
        except HilosValidationError as exc:
            problems += [(f"line {line}: {field}", message) for field, message in exc.problems]
            continue
        fields = dict(row)
        updates.append({"conversation_id": fields.pop("conversation_id"), "payload": fields})
    if problems:
        raise HilosValidationError(problems, f"Invalid change set {path}")
    return updates


with DAG(
    dag_id="hilos_mapped_updates",
    description="Apply a CSV change set with one mapped update task per conversation",
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
        """Turn the change set into one ``{"conversation_id", "payload"}`` per conversation (checked)."""
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
