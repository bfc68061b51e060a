"""The one-command demo: run the CRM-sync example DAG end to end against a local Hilos sandbox.

Starts the sandbox on a free loopback port with a generated token, sets a throwaway AIRFLOW_HOME
and AIRFLOW_CONN_HILOS_DEFAULT, migrates the SQLite DB, runs ``airflow dags test hilos_crm_sync``,
prints a before/after table of the conversations it changed, and stops everything.
Exits non-zero if the DAG failed or any intended change did not land.

Run it through ``python3 scripts/dev.py demo`` (which prepares the locked environment first).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DAGS = ROOT / "dags_examples"
DAG_ID = "hilos_crm_sync"


def load_intent() -> list[dict[str, Any]]:
    spec = importlib.util.spec_from_file_location("hilos_crm_sync_example", DAGS / "hilos_crm_sync.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.load_change_set(module.CHANGES_FILE)


def summarize(conv: dict[str, Any]) -> dict[str, str]:
    return {
        "status": conv["status"],
        "tags": ",".join(t["name"] for t in conv["tags"]) or "-",
        "assigned": ",".join(str(u["id"]) for u in conv["assigned"]) or "-",
        "assigned_team": str(conv["assigned_team"]) if conv["assigned_team"] is not None else "-",
    }


def run(cmd: list[str], env: dict[str, str], log: Path) -> int:
    with log.open("ab") as handle:
        handle.write(f"\n$ {' '.join(cmd)}\n".encode())
        handle.flush()
        return subprocess.run(cmd, env=env, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT).returncode


def main() -> int:
    from airflow_provider_hilos.sandbox import HilosSandbox
    from airflow_provider_hilos.sandbox.state import payload_mismatches

    started = time.monotonic()
    home = Path(tempfile.mkdtemp(prefix="hilos-demo-airflow-home-"))
    log = home / "demo.log"
    intent = load_intent()
    with HilosSandbox(conversations=1000, seed=7) as sandbox:
        print(f"Hilos sandbox on {sandbox.url} (1000 conversations, seed 7, generated token)")
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update(
            {
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW_CONN_HILOS_DEFAULT": sandbox.connection_json(),
            }
        )
        before = {u["conversation_id"]: sandbox.conversation(u["conversation_id"]) for u in intent}
        print(f"Throwaway AIRFLOW_HOME {home}: migrating the SQLite DB ...", flush=True)
        if run([sys.executable, "-m", "airflow", "db", "migrate"], env, log) != 0:
            print(log.read_text()[-4000:])
            print("FAILED: airflow db migrate")
            return 1
        print(f"Running: airflow dags test {DAG_ID} ({len(intent)} conversation updates) ...", flush=True)
        code = run([sys.executable, "-m", "airflow", "dags", "test", DAG_ID], env, log)
        after = {cid: sandbox.conversation(cid) for cid in before}
        patches = [r for r in sandbox.requests() if r["method"] == "PATCH"]
        text = log.read_text(errors="replace")
        leaked = sandbox.token in text
    rows = []
    failures = 0
    for update in intent:
        cid = update["conversation_id"]
        wrong = payload_mismatches(update["payload"], after[cid])
        failures += bool(wrong)
        b, a = summarize(before[cid]), summarize(after[cid])
        for field in ("status", "tags", "assigned", "assigned_team"):
            if field in update["payload"] or b[field] != a[field]:
                mark = "MISSING" if field in wrong else "ok"
                rows.append((cid[:8], field, b[field], a[field], mark))
    header = ("conversation", "field", "before", "after", "landed")
    widths = [max(len(str(r[i])) for r in [*rows, header]) for i in range(5)]
    print()
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    last = None
    for row in rows:
        shown = ("" if row[0] == last else row[0], *row[1:])
        last = row[0]
        print("  ".join(str(c).ljust(w) for c, w in zip(shown, widths, strict=True)))
    print()
    elapsed = time.monotonic() - started
    print(
        f"{len(patches)} PATCH request(s) received by the sandbox; {len(intent) - failures}/{len(intent)} "
        f"updates landed; DAG run exit code {code}; {elapsed:.0f} s."
    )
    if leaked:
        print("FAILED: the sandbox token appears in the Airflow output")
    if code != 0 or failures or leaked:
        print(text[-6000:])
        print(f"FAILED (full log: {log})")
        return 1
    shutil.rmtree(home, ignore_errors=True)
    print("OK: every intended update landed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
