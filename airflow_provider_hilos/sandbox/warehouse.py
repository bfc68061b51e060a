"""An embedded warehouse for the sync demo, tests and benchmark: the desired state of the sandbox's conversations
in a SQL table, and the day-2 changes a data team would make to it.

The table is what ``dags_examples/sql/crm_desired_state.sql`` reads::

    crm_conversation_state(conversation_id, status, tags, assignee_ids, team_id)

In SQLite, ``tags`` and ``assignee_ids`` are ``|``-separated text; in PostgreSQL (:func:`postgres_rows`) they are
``text[]`` and ``int[]``. The desired state is derived from the seed, so the same sandbox and seed give the same
warehouse.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from airflow_provider_hilos.sandbox.state import TAG_NAMES, TEAM_NAMES

TABLE = "crm_conversation_state"
LOG_TABLE = "hilos_sync_log"
STATUSES = ("NEW", "IN_PROGRESS", "RESOLVED", "CLOSED")
#: The sandbox's user ids (its seeded users are 1 to 8 and more; ids 1-6 are safe on every seed)
USER_IDS = (1, 2, 3, 4, 5, 6)


def desired_rows(conversation_ids: Sequence[str], *, seed: int = 1) -> list[dict[str, Any]]:
    """A desired state for each conversation id: status, tags, assignees and team, drawn from ``seed``."""
    rng = random.Random(f"warehouse-{seed}")
    rows = []
    for cid in conversation_ids:
        rows.append(
            {
                "conversation_id": cid,
                "status": rng.choice(STATUSES),
                "tags": sorted(rng.sample(TAG_NAMES, rng.randint(0, 2))),
                "assignee_ids": sorted(rng.sample(USER_IDS, rng.randint(0, 2))),
                "team_id": rng.randint(1, len(TEAM_NAMES)),
            }
        )
    return rows


def change_some(rows: list[dict[str, Any]], share: float, *, seed: int = 2) -> list[str]:
    """Day 2 in the warehouse: ``share`` of the rows get a new status (and some a new tag); the ids changed."""
    rng = random.Random(f"warehouse-change-{seed}")
    count = max(1, round(len(rows) * share))
    changed = []
    for row in rng.sample(rows, count):
        row["status"] = rng.choice([s for s in STATUSES if s != row["status"]])
        if rng.random() < 0.3:
            row["tags"] = sorted({*row["tags"], rng.choice(TAG_NAMES)})
        changed.append(row["conversation_id"])
    return changed


def write_sqlite(path: str | Path, rows: Iterable[dict[str, Any]], *, separator: str = "|") -> None:
    """(Re)write the warehouse table in the SQLite file ``path``, and create the sync log table if missing."""
    with sqlite3.connect(path) as db:
        db.execute(f"DROP TABLE IF EXISTS {TABLE}")
        db.execute(
            f"CREATE TABLE {TABLE} (conversation_id TEXT PRIMARY KEY, status TEXT, tags TEXT, assignee_ids TEXT, "
            "team_id INTEGER)"
        )
        db.executemany(
            f"INSERT INTO {TABLE} VALUES (?, ?, ?, ?, ?)",
            [
                (
                    row["conversation_id"],
                    row["status"],
                    separator.join(row["tags"]),
                    separator.join(map(str, row["assignee_ids"])),
                    row["team_id"],
                )
                for row in rows
            ],
        )
        from airflow_provider_hilos.sync.warehouse_log import LOG_TABLE_DDL

        exists = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (LOG_TABLE,)).fetchone()
        if not exists:
            db.execute(LOG_TABLE_DDL.format(table=LOG_TABLE))


def postgres_rows(rows: Iterable[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """The rows as PostgreSQL takes them: ``tags`` a ``text[]``, ``assignee_ids`` an ``int[]``."""
    return [
        (row["conversation_id"], row["status"], list(row["tags"]), list(row["assignee_ids"]), row["team_id"])
        for row in rows
    ]


#: The PostgreSQL table, with array columns.
POSTGRES_DDL = (
    f"CREATE TABLE {TABLE} (conversation_id uuid PRIMARY KEY, status text, tags text[], assignee_ids int[], "
    "team_id int)"
)


def mismatches(row: dict[str, Any], held: dict[str, Any]) -> list[str]:
    """The managed fields where the conversation ``held`` (as the sandbox shows it) differs from ``row``."""
    wrong = []
    if held["status"] != row["status"]:
        wrong.append("status")
    if sorted(t["name"] for t in held["tags"]) != sorted(row["tags"]):
        wrong.append("tags")
    if sorted(u["id"] for u in held["assigned"]) != sorted(row["assignee_ids"]):
        wrong.append("assigned")
    if held["assigned_team"] != row["team_id"]:
        wrong.append("assigned_team")
    return wrong
