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


# -- the customer record: contacts ---------------------------------------------------------------------------

#: The contact table ``dags_examples/sql/crm_contacts.sql`` reads: one row per customer, keyed by phone.
CONTACT_TABLE = "crm_contacts"
#: The agents the warehouse knows by email (the sandbox's users 1 to 4).
OWNER_EMAILS = ("ana@example.com", "luis@example.com", "maria@example.com", "jorge@example.com")
CONTACT_PLANS = ("free", "starter", "pro", "enterprise")


def desired_contacts(contacts: Sequence[dict[str, Any]], *, seed: int = 1, new: int = 0) -> list[dict[str, Any]]:
    """The warehouse's customers: one row per contact of ``contacts`` (as the sandbox holds them), its phone spelled
    as a CRM would (without ``+`` in every third row), its name, email, plan, lifetime value and tags from the CRM
    (so some differ from Hilos), its account owner by email; then ``new`` customers Hilos does not have yet."""
    rng = random.Random(f"warehouse-contacts-{seed}")
    rows = []
    for number, contact in enumerate(contacts):
        phone = contact["phone"]
        raise_by = rng.randint(1, 500) if rng.random() < 0.3 else 0
        rows.append(
            {
                "phone": phone.lstrip("+") if number % 3 == 0 else phone,
                "first_name": contact["first_name"],
                "last_name": contact["last_name"],
                "email": contact["email"],
                "plan": rng.choice(CONTACT_PLANS) if rng.random() < 0.3 else contact["meta"].get("plan"),
                "lifetime_value": int(contact["meta"].get("ltv", 0)) + raise_by,
                "tags": sorted(t["name"] for t in contact["tags"]),
                "owner_email": rng.choice(OWNER_EMAILS),
            }
        )
    rows += new_contacts(new, seed=seed)
    return rows


def new_contacts(count: int, *, seed: int) -> list[dict[str, Any]]:
    """``count`` customers the CRM just signed (Mexico City numbers no sandbox contact has: ``+52 56 ...``)."""
    rng = random.Random(f"warehouse-new-contacts-{seed}")
    return [
        {
            "phone": f"+5256{rng.randrange(10**8):08d}",
            "first_name": rng.choice(("Nuevo", "Nueva")),
            "last_name": "Cliente",
            "email": None,
            "plan": "trial",
            "lifetime_value": 0,
            "tags": ["lead"],
            "owner_email": rng.choice(OWNER_EMAILS),
        }
        for _ in range(count)
    ]


def change_contacts(rows: list[dict[str, Any]], share: float, *, new: int = 0, seed: int = 2) -> list[str]:
    """Day 2 in the CRM: ``share`` of the customers change plan or value, and ``new`` customers arrive; the phones
    changed and added."""
    rng = random.Random(f"warehouse-contact-change-{seed}")
    count = max(1, round(len(rows) * share))
    changed = []
    for row in rng.sample(rows, count):
        if rng.random() < 0.5:
            row["plan"] = rng.choice([p for p in CONTACT_PLANS if p != row["plan"]])
        else:
            row["lifetime_value"] += rng.randint(1, 1000)
        changed.append(row["phone"])
    added = new_contacts(new, seed=seed + 1000)
    rows += added
    return changed + [row["phone"] for row in added]


def write_contacts_sqlite(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """(Re)write the contact table in the SQLite file ``path`` (``tags`` ``|``-separated, the meta as JSON text
    holding the plan, the lifetime value as its own ``meta.ltv`` column), and the sync log table if missing."""
    import json

    with sqlite3.connect(path) as db:
        db.execute(f"DROP TABLE IF EXISTS {CONTACT_TABLE}")
        db.execute(
            f"CREATE TABLE {CONTACT_TABLE} (phone TEXT PRIMARY KEY, first_name TEXT, last_name TEXT, email TEXT, "
            "meta TEXT, lifetime_value INTEGER, tags TEXT, owner_email TEXT)"
        )
        db.executemany(
            f"INSERT INTO {CONTACT_TABLE} VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    row["phone"],
                    row["first_name"],
                    row["last_name"],
                    row["email"],
                    json.dumps({"plan": row["plan"]}) if row["plan"] is not None else None,
                    row["lifetime_value"],
                    "|".join(row["tags"]) or "-",
                    row["owner_email"],
                )
                for row in rows
            ],
        )
        from airflow_provider_hilos.sync.warehouse_log import LOG_TABLE_DDL

        exists = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (LOG_TABLE,)).fetchone()
        if not exists:
            db.execute(LOG_TABLE_DDL.format(table=LOG_TABLE))


def contact_mismatches(row: dict[str, Any], held: dict[str, Any] | None, owner_ids: dict[str, int]) -> list[str]:
    """The managed fields where the contact ``held`` (the sandbox's detail) differs from the customer ``row``."""
    if held is None:
        return ["missing"]
    wrong = [name for name in ("first_name", "last_name", "email") if (held[name] or None) != (row[name] or None)]
    if row["plan"] is not None and held["meta"].get("plan") != row["plan"]:
        wrong.append("meta.plan")
    if held["meta"].get("ltv") != str(row["lifetime_value"]):
        wrong.append("meta.ltv")
    if sorted(t["name"] for t in held["tags"]) != sorted(row["tags"]):
        wrong.append("tags")
    if [u["id"] if isinstance(u, dict) else u for u in held["default_assignees"]] != [owner_ids[row["owner_email"]]]:
        wrong.append("default_assignees")
    return wrong
