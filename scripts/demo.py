"""The one-command demo: the CRM sync example DAGs (``hilos_crm_sync`` for conversations, ``hilos_contacts_sync`` for
the customer record) end to end, two days in a row, against a local Hilos sandbox and an embedded SQLite warehouse.

Starts the sandbox on a free loopback port with a generated token, writes the warehouse (a SQLite file holding the
desired state of 600 of the sandbox's 1,000 conversations, and the CRM's record of 500 of its contacts plus 5 new
customers), sets a throwaway AIRFLOW_HOME with the two connections, migrates the metadata DB, then:

* day 1: ``airflow dags test hilos_crm_sync 2026-01-01``: most conversations differ, they are sent;
  ``airflow dags test hilos_contacts_sync 2026-01-01``: the new customers are created, every contact gets its account
  owner (given by email), the ones whose plan or value differ are updated;
* day 2: 1 % of the warehouse rows change and three conversations are edited by hand in Hilos;
  ``airflow dags test hilos_crm_sync 2026-01-02`` sends only those, putting the hand edits back; 1 % of the
  customers change and 1 new one arrives, and an agent edits two contacts' plan by hand:
  ``airflow dags test hilos_contacts_sync 2026-01-02`` writes only those and puts the plans back.

Prints each run's plan and request counts, and exits non-zero if a run failed, if Hilos does not hold the desired
state at the end, or if the token appears in Airflow's output.

Run it through ``python3 scripts/dev.py demo`` (which prepares the locked environment first).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DAGS = ROOT / "dags_examples"
DAG_ID = "hilos_crm_sync"
CONTACTS_DAG_ID = "hilos_contacts_sync"
MANAGED = 600
CONTACTS = 500
NEW_CONTACTS = 5
DAYS = ("2026-01-01", "2026-01-02")


def run(cmd: list[str], env: dict[str, str], log: Path) -> int:
    with log.open("ab") as handle:
        handle.write(f"\n$ {' '.join(cmd)}\n".encode())
        handle.flush()
        return subprocess.run(cmd, env=env, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT).returncode


def plan_lines(plan_file: Path) -> tuple[Counter[str], list[str], int]:
    """The plan's action counts, its per-field transitions, and how many updates put back a hand edit."""
    actions: Counter[str] = Counter()
    moves: dict[str, Counter[str]] = {}
    drift = 0
    for line in plan_file.read_text().splitlines():
        record = json.loads(line)
        actions[record["action"]] += 1
        drift += bool(record.get("drift"))
        for field, change in record.get("changes", {}).items():
            before, after = change["from"], change["to"]
            if isinstance(after, list):
                label = (
                    " ".join(
                        [f"+{i}" for i in after if i not in (before or [])]
                        + [f"-{i}" for i in (before or []) if i not in after]
                    )
                    or "="
                )
            else:
                label = f"{before}→{after}"
            moves.setdefault(field, Counter())[label] += 1
    lines = [
        f"{field}: {sum(c.values())} ({', '.join(f'{k} {n}' for k, n in c.most_common(4))}"
        f"{', ...' if len(c) > 4 else ''})"
        for field, c in sorted(moves.items(), key=lambda kv: -sum(kv[1].values()))
    ]
    return actions, lines, drift


def contact_day(
    sandbox: Any, env: dict[str, str], log: Path, home: Path, day: str, day_number: int, failures: list[str]
) -> None:
    """One run of the contact sync: its plan (per action and per field) and the requests it sent."""
    sandbox.clear_requests()
    print(f"Running: airflow dags test {CONTACTS_DAG_ID} {day} ...", flush=True)
    code = run([sys.executable, "-m", "airflow", "dags", "test", CONTACTS_DAG_ID, day], env, log)
    sent = Counter(r["method"] for r in sandbox.requests())
    plan = home / "hilos_reports" / "contacts" / f"{day}.jsonl.plan.jsonl"
    if code != 0 or not plan.exists():
        failures.append(f"day {day_number}: the contact sync failed (exit code {code})")
        return
    actions, lines, drift = plan_lines(plan)
    listed = sum(actions.values())
    print(
        f"  contact plan: {actions['create']} to create, {actions['update']} to update, "
        f"{CONTACTS + NEW_CONTACTS + (day_number - 1) - listed} unchanged, {actions['invalid']} invalid; "
        f"{drift} hand edit(s) put back"
    )
    for line in lines:
        print(f"    {line}")
    print(
        f"  requests: {sent['GET']} GET (1 account-member list + contact list pages) + {sent['POST']} POST "
        f"(create) + {sent['PATCH']} PATCH"
    )


def main() -> int:
    from airflow_provider_hilos.sandbox import HilosSandbox, warehouse

    started = time.monotonic()
    home = Path(tempfile.mkdtemp(prefix="hilos-demo-airflow-home-"))
    log = home / "demo.log"
    database = home / "warehouse.db"
    failures: list[str] = []
    with HilosSandbox(conversations=1000, seed=7) as sandbox:
        ids = sandbox.conversation_ids()[:MANAGED]
        desired = warehouse.desired_rows(ids, seed=1)
        warehouse.write_sqlite(database, desired)
        customers = warehouse.desired_contacts(
            [sandbox.contact(cid) for cid in sandbox.contact_ids()[:CONTACTS]], new=NEW_CONTACTS
        )
        warehouse.write_contacts_sqlite(database, customers)
        print(f"Hilos sandbox on {sandbox.url} (1,000 conversations and their contacts, seed 7, generated token)")
        print(f"Warehouse: SQLite {database}, table {warehouse.TABLE}: the desired state of {MANAGED} conversations")
        print(
            f"           table {warehouse.CONTACT_TABLE}: the CRM's record of {CONTACTS} contacts and {NEW_CONTACTS} "
            "new customers"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update(
            {
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW_CONN_HILOS_DEFAULT": sandbox.connection_json(),
                "AIRFLOW_CONN_HILOS_WAREHOUSE": json.dumps({"conn_type": "sqlite", "host": str(database)}),
            }
        )
        print(f"Throwaway AIRFLOW_HOME {home}: migrating the metadata DB ...", flush=True)
        if run([sys.executable, "-m", "airflow", "db", "migrate"], env, log) != 0:
            print(log.read_text()[-4000:])
            print("FAILED: airflow db migrate")
            return 1
        hand_edited: list[str] = []
        for day_number, day in enumerate(DAYS, start=1):
            if day_number == 2:
                changed = warehouse.change_some(desired, 0.01)
                warehouse.write_sqlite(database, desired)
                hand_edited = [row["conversation_id"] for row in desired[100:103]]
                for cid in hand_edited:  # an agent reopens three conversations in the Hilos app
                    sandbox.state.partial_update(cid, {"status": "IN_PROGRESS", "tags": [{"name": "agent-note"}]})
                changed_customers = warehouse.change_contacts(customers, 0.01, new=1)
                warehouse.write_contacts_sqlite(database, customers)
                for row in customers[200:202]:  # an agent changes two customers' plan in the Hilos app
                    held = sandbox.contact_by_phone(_e164(row["phone"]))
                    sandbox.state.update_contact(held["id"], {"meta": {"plan": "agent-edit"}}, partial=True)
                print(
                    f"\nDay 2: {len(changed)} warehouse row(s) changed (1 %), {len(hand_edited)} conversation(s) "
                    f"edited by hand in Hilos; {len(changed_customers)} customer(s) changed or new in the CRM, 2 "
                    "contacts' plan edited by hand"
                )
            else:
                print("\nDay 1: the first sync")
            sandbox.clear_requests()
            print(f"Running: airflow dags test {DAG_ID} {day} ...", flush=True)
            code = run([sys.executable, "-m", "airflow", "dags", "test", DAG_ID, day], env, log)
            sent = Counter(r["method"] for r in sandbox.requests())
            plan = home / "hilos_reports" / "crm_sync" / f"{day}.jsonl.plan.jsonl"
            if code != 0 or not plan.exists():
                failures.append(f"day {day_number}: the DAG run failed (exit code {code})")
                break
            actions, lines, drift = plan_lines(plan)
            unchanged = MANAGED - sum(actions.values())  # the plan file lists only what is not unchanged
            print(
                f"  plan: {actions['update']} to update, {unchanged} unchanged, {actions['not_found']} not "
                f"found, {actions['invalid']} invalid; {drift} hand edit(s) put back"
            )
            for line in lines:
                print(f"    {line}")
            print(f"  requests: {sent['GET']} GET (list pages) + {sent['PATCH']} PATCH")
            contact_day(sandbox, env, log, home, day, day_number, failures)
            if failures:
                break
        with sqlite3.connect(database) as db:
            logged = db.execute(
                f"SELECT run_id, object, outcome, COUNT(*) FROM {warehouse.LOG_TABLE} GROUP BY 1, 2, 3"
            ).fetchall()
        wrong = {
            row["conversation_id"]: w
            for row in desired
            if (w := warehouse.mismatches(row, sandbox.conversation(row["conversation_id"])))
        }
        owners = {m["email"]: m["id"] for m in sandbox.state.account_members({})}
        wrong_contacts = {
            row["phone"]: w
            for row in customers
            if (w := warehouse.contact_mismatches(row, sandbox.contact_by_phone(_e164(row["phone"])), owners))
        }
        text = log.read_text(errors="replace")
        leaked = sandbox.token in text
    print(f"\nSync log in the warehouse ({warehouse.LOG_TABLE}):")
    for run_id, obj, outcome, count in logged:
        print(f"  {run_id}: {count} {obj}(s) {outcome}")
    if wrong:
        failures.append(f"{len(wrong)} conversation(s) differ from the warehouse at the end: {list(wrong.items())[:3]}")
    if wrong_contacts:
        failures.append(
            f"{len(wrong_contacts)} contact(s) differ from the CRM at the end: {list(wrong_contacts.items())[:3]}"
        )
    if leaked:
        failures.append("the sandbox token appears in the Airflow output")
    elapsed = time.monotonic() - started
    if failures:
        print(text[-6000:])
        for failure in failures:
            print(f"FAILED: {failure}")
        print(f"(full log: {log})")
        return 1
    shutil.rmtree(home, ignore_errors=True)
    print(
        f"\nOK: Hilos holds the warehouse's desired state for all {MANAGED} conversations and "
        f"{len(customers)} contacts ({elapsed:.0f} s)."
    )
    return 0


def _e164(phone: str) -> str:
    from airflow_provider_hilos.contacts import canonical_phone

    return canonical_phone(phone, "MX")


if __name__ == "__main__":
    sys.exit(main())
