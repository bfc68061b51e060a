"""The one-command demo: the CRM sync example DAG (``hilos_crm_sync``) end to end, two days in a row, against a local
Hilos sandbox and an embedded SQLite warehouse.

Starts the sandbox on a free loopback port with a generated token, writes the warehouse (a SQLite file holding the
desired state of 600 of the sandbox's 1,000 conversations), sets a throwaway AIRFLOW_HOME with the two connections,
migrates the metadata DB, then:

* day 1: ``airflow dags test hilos_crm_sync 2026-01-01``: most conversations differ, they are sent;
* day 2: 1 % of the warehouse rows change and three conversations are edited by hand in Hilos;
  ``airflow dags test hilos_crm_sync 2026-01-02`` sends only those, putting the hand edits back.

Prints each day's plan and request counts, and exits non-zero if a run failed, if Hilos does not hold the desired
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

ROOT = Path(__file__).resolve().parents[1]
DAGS = ROOT / "dags_examples"
DAG_ID = "hilos_crm_sync"
MANAGED = 600
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
        print(f"Hilos sandbox on {sandbox.url} (1,000 conversations, seed 7, generated token)")
        print(f"Warehouse: SQLite {database}, table {warehouse.TABLE}: the desired state of {MANAGED} conversations")
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
                print(
                    f"\nDay 2: {len(changed)} warehouse row(s) changed (1 %), {len(hand_edited)} conversation(s) "
                    "edited by hand in Hilos"
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
        with sqlite3.connect(database) as db:
            logged = db.execute(f"SELECT run_id, outcome, COUNT(*) FROM {warehouse.LOG_TABLE} GROUP BY 1, 2").fetchall()
        wrong = {
            row["conversation_id"]: w
            for row in desired
            if (w := warehouse.mismatches(row, sandbox.conversation(row["conversation_id"])))
        }
        text = log.read_text(errors="replace")
        leaked = sandbox.token in text
    print(f"\nSync log in the warehouse ({warehouse.LOG_TABLE}):")
    for run_id, outcome, count in logged:
        print(f"  {run_id}: {count} {outcome}")
    if wrong:
        failures.append(f"{len(wrong)} conversation(s) differ from the warehouse at the end: {list(wrong.items())[:3]}")
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
    print(f"\nOK: Hilos holds the warehouse's desired state for all {MANAGED} conversations ({elapsed:.0f} s).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
