"""End to end in a real Airflow 3: scheduler, LocalExecutor, the REST API, and the UI in a browser.

Starts api-server, scheduler, dag-processor and triggerer on loopback (SQLite, a throwaway
AIRFLOW_HOME, ``dags_examples/`` as the DAGs folder) with the Hilos sandbox behind ``hilos_default``,
then checks what users do every day. Run alone with ``pytest -m e2e``. Screenshots are saved under
``test-artifacts/e2e/``.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import shutil
import time
from datetime import datetime
from pathlib import Path

import pytest
import requests

from airflow_provider_hilos.sandbox import HilosSandbox
from tests.conftest import EXAMPLE_DAGS, ROOT, TEST_DAGS
from tests.e2e.airflow_deployment import ADMIN, AirflowDeployment

pytestmark = pytest.mark.e2e  # the whole file runs on one xdist worker (scripts/dev.py: --dist loadfile)

SANDBOX_TOKEN = "hilos-E2E-token-Vq8Wn3Tz"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
ARTIFACTS = ROOT / "test-artifacts" / "e2e"
KILL_ROWS = 3000


@pytest.fixture(scope="module")
def sandbox():
    with HilosSandbox(conversations=40, seed=7, token=SANDBOX_TOKEN) as sb:
        yield sb


@pytest.fixture(scope="module")
def slow_sandbox():
    """A second API whose every answer takes 100 ms: a batch over it runs long enough to be killed mid-way."""
    with HilosSandbox(
        conversations=KILL_ROWS,
        seed=17,
        token=SANDBOX_TOKEN,
        request_log_limit=2 * KILL_ROWS,
        faults={"latency_ms": 100},
    ) as sb:
        yield sb


OUTAGE_ROWS = 400
OUTAGE_SECONDS = 90


@pytest.fixture(scope="module")
def outage_sandbox():
    """A third API, for the batch that meets an outage in its middle."""
    with HilosSandbox(
        conversations=OUTAGE_ROWS, seed=19, token=SANDBOX_TOKEN, request_log_limit=20 * OUTAGE_ROWS
    ) as sb:
        yield sb


@pytest.fixture(scope="module")
def approval_sandbox():
    """A fourth API, for the syncs whose plans wait for approval (every request it gets is theirs)."""
    with HilosSandbox(conversations=60, seed=23, token=SANDBOX_TOKEN) as sb:
        yield sb


#: The conversations of ``sandbox`` the lineage run's warehouse manages: none that another test here checks.
LINEAGE_MANAGED = slice(36, 40)


@pytest.fixture(scope="module")
def lineage_files(sandbox, tmp_path_factory):
    """The warehouse the example sync reads (SQLite, four conversations no other test touches) and the file the
    OpenLineage provider's file transport writes its events to."""
    from airflow_provider_hilos.sandbox import warehouse

    folder = tmp_path_factory.mktemp("lineage")
    database = folder / "warehouse.db"
    warehouse.write_sqlite(database, warehouse.desired_rows(sandbox.conversation_ids()[LINEAGE_MANAGED], seed=5))
    contacts = [sandbox.contact(c) for c in sandbox.contact_ids()[-4:]]  # the customer record of four contacts
    warehouse.write_contacts_sqlite(database, warehouse.desired_contacts(contacts, seed=5))
    return {"warehouse": database, "events": folder / "openlineage.jsonl"}


@pytest.fixture(scope="module")
def airflow(sandbox, slow_sandbox, outage_sandbox, approval_sandbox, lineage_files):
    deployment = AirflowDeployment(
        EXAMPLE_DAGS,
        {
            "AIRFLOW_CONN_HILOS_DEFAULT": sandbox.connection_json(),
            "AIRFLOW_CONN_HILOS_SLOW": slow_sandbox.connection_json(),
            "AIRFLOW_CONN_HILOS_OUTAGE": outage_sandbox.connection_json(),
            "AIRFLOW_CONN_HILOS_APPROVAL": approval_sandbox.connection_json(),
            "AIRFLOW_CONN_HILOS_WAREHOUSE": json.dumps(
                {"conn_type": "sqlite", "host": str(lineage_files["warehouse"])}
            ),
            "AIRFLOW__OPENLINEAGE__NAMESPACE": "hilos-e2e",
            "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
                {"type": "file", "log_file_path": str(lineage_files["events"]), "append": True}
            ),
        },
        more_dag_folders=(TEST_DAGS,),
    )
    atexit.register(deployment.stop)  # even if the session is interrupted
    deployment.start()
    try:
        for dag_id in (
            "hilos_mapped_updates",
            "hilos_manual_update",
            "hilos_test_kill",
            "hilos_export_conversations",
            "hilos_test_outage",
            "hilos_crm_sync",
            "hilos_test_approval",
        ):
            deployment.wait_for_dag(dag_id)
        yield deployment
    finally:
        deployment.stop()
        logs = deployment.home / "logs"
        if logs.exists():  # keep the task logs next to the screenshots, then drop the rest
            shutil.copytree(logs, ARTIFACTS / "task-logs", dirs_exist_ok=True)
        deployment.cleanup()


@pytest.fixture(scope="module")
def crm_sync_started(airflow):
    """Unpause the scheduled CRM sync early: the scheduler runs it while the other checks go on."""
    response = airflow.api("PATCH", "/api/v2/dags/hilos_mapped_updates", json={"is_paused": False})
    assert response.status_code == 200, response.text
    return time.monotonic()


@pytest.fixture(scope="module")
def lineage_run(airflow):
    """Trigger the example sync (from the warehouse table to Hilos) early; its lineage is checked at the end."""
    dag = "/api/v2/dags/hilos_crm_sync"
    assert airflow.api("PATCH", dag, json={"is_paused": False}).status_code == 200
    response = airflow.api("POST", f"{dag}/dagRuns", json={"logical_date": None, "conf": {}})
    assert response.status_code == 200, response.text
    return response.json()["dag_run_id"]


@pytest.fixture(scope="module")
def outage(airflow, outage_sandbox, tmp_path_factory):
    """Start a deferrable, paced batch; once a third of it landed, the API answers 503 to everything for
    OUTAGE_SECONDS. A thread watches the task instance meanwhile, through the REST API. It starts with the browser
    test and the test that reads it runs last, so the outage overlaps the slower checks instead of adding to the
    suite's time (it starts after the trigger-time checks: SQLite is the deployment's metadata DB)."""
    import threading

    folder = tmp_path_factory.mktemp("outage")
    updates = folder / "updates.jsonl"
    ids = outage_sandbox.conversation_ids()
    updates.write_text("".join(json.dumps({"conversation_id": c, "status": "RESOLVED"}) + "\n" for c in ids))
    dag = "/api/v2/dags/hilos_test_outage"
    assert airflow.api("PATCH", dag, json={"is_paused": False}).status_code == 200
    conf = {"updates_path": str(updates), "checkpoint_path": str(folder / "checkpoints")}
    response = airflow.api("POST", f"{dag}/dagRuns", json={"logical_date": None, "conf": conf})
    assert response.status_code == 200, response.text
    run_id = response.json()["dag_run_id"]
    seen: dict[str, object] = {"states": [], "requests_in_outage": None, "outage": None}

    def landed() -> int:
        return len({r["path"] for r in outage_sandbox.requests() if r["method"] == "PATCH" and r["status"] == 200})

    def watch() -> None:
        deadline = time.monotonic() + 240
        while landed() < OUTAGE_ROWS // 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        outage_sandbox.set_faults(error_rate=1.0, error_statuses=[503], retry_after_seconds=0)
        began, before = time.monotonic(), len(outage_sandbox.requests())
        seen["outage"] = (landed(), time.time())
        while time.monotonic() - began < OUTAGE_SECONDS:
            ti = airflow.api("GET", f"{dag}/dagRuns/{run_id}/taskInstances/paced_batch")
            if ti.status_code == 200:
                body = ti.json()
                seen["states"].append((round(time.monotonic() - began, 1), body["state"], body.get("try_number")))
            time.sleep(2)
        seen["requests_in_outage"] = len(outage_sandbox.requests()) - before
        outage_sandbox.set_faults()

    watcher = threading.Thread(target=watch, name="outage-watch", daemon=True)
    watcher.start()
    return {"run_id": run_id, "seen": seen, "watcher": watcher, "landed": landed}


def patches_for(sandbox, conversation_id: str) -> list[dict]:
    return [r for r in sandbox.requests() if r["method"] == "PATCH" and conversation_id in r["path"]]


def test_provider_and_connection_type_are_registered(airflow, crm_sync_started):
    providers = airflow.api("GET", "/api/v2/providers").json()["providers"]
    assert "airflow-provider-hilos" in {p["package_name"] for p in providers}
    (meta,) = [h for h in airflow.api("GET", "/ui/connections/hook_meta").json() if h["connection_type"] == "hilos"]
    assert meta["hook_name"] == "Hilos"
    assert meta["hook_class_name"] == "airflow_provider_hilos.hooks.hilos.HilosHook"
    fields = meta["standard_fields"]
    assert (fields["host"]["title"], fields["host"]["placeholder"]) == ("Base URL", "https://api.hilos.io")
    assert fields["password"]["title"] == "API token"
    assert all(fields[f]["hidden"] for f in ("login", "port", "url_schema"))
    extras = meta["extra_fields"]
    assert {
        "header_name",
        "auth_scheme",
        "connect_timeout",
        "read_timeout",
        "max_attempts",
        "web_base_url",
        "allow_insecure_http",
    } <= set(extras)
    assert extras["header_name"]["value"] == "Authorization"  # shown, not masked as a secret
    assert extras["api_family"]["value"] == "auto"
    assert extras["api_family"]["schema"]["enum"] == ["auto", "hilos", "activecampaign"]
    assert extras["auth_scheme"]["value"] == "Token"


def test_connection_test_button(airflow, sandbox):
    body = {"connection_id": "hilos_e2e", "conn_type": "hilos", "host": sandbox.url, "password": SANDBOX_TOKEN}
    ok = airflow.api("POST", "/api/v2/connections/test", json=body).json()
    assert ok["status"] is True, ok
    assert ok["message"].startswith(f"Connected to Hilos at {sandbox.url}: the API token was accepted")
    wrong = airflow.api("POST", "/api/v2/connections/test", json={**body, "password": "wrong-" + SANDBOX_TOKEN}).json()
    assert wrong["status"] is False
    assert "rejected the API token" in wrong["message"] and "HTTP 401" in wrong["message"]
    assert SANDBOX_TOKEN not in wrong["message"] and SANDBOX_TOKEN not in ok["message"]
    tests = [r for r in sandbox.requests() if r["path"] == "/api/inbox/conversation"]
    assert len(tests) == 2 and all(r["method"] == "GET" and "page_size=1" in r["query"] for r in tests)


def test_trigger_manual_dag_with_a_valid_conf(airflow, sandbox):
    cid = sandbox.conversation_ids()[20]
    assert airflow.api("PATCH", "/api/v2/dags/hilos_manual_update", json={"is_paused": False}).status_code == 200
    conf = {"conversation_id": cid, "status": "RESOLVED", "tags": ["vip", "e2e"], "assignees": [4], "team": 2}
    response = airflow.api(
        "POST", "/api/v2/dags/hilos_manual_update/dagRuns", json={"logical_date": None, "conf": conf}
    )
    assert response.status_code == 200, response.text
    run = airflow.wait_for_run("hilos_manual_update", response.json()["dag_run_id"])
    assert run["state"] == "success", airflow.log_tail("scheduler")
    conv = sandbox.conversation(cid)
    assert (conv["status"], conv["assigned"], conv["assigned_team"]) == ("RESOLVED", [{"id": 4}], 2)
    assert [t["name"] for t in conv["tags"]] == ["vip", "e2e"]


@pytest.mark.parametrize(
    "conf",
    [{"conversation_id": "CID", "status": "FINISHED"}, {"conversation_id": "not-a-uuid", "status": "CLOSED"}],
    ids=["bad status", "bad id"],
)
def test_conf_violating_the_param_schema_is_refused_at_trigger_time(airflow, sandbox, conf):
    cid = sandbox.conversation_ids()[30]
    conf = {**conf, "conversation_id": conf["conversation_id"].replace("CID", cid)}
    before = len(airflow.api("GET", "/api/v2/dags/hilos_manual_update/dagRuns").json()["dag_runs"])
    response = airflow.api(
        "POST", "/api/v2/dags/hilos_manual_update/dagRuns", json={"logical_date": None, "conf": conf}
    )
    assert response.status_code == 400, response.text
    assert "param" in response.text.lower() or "invalid" in response.text.lower()
    time.sleep(2)
    assert len(airflow.api("GET", "/api/v2/dags/hilos_manual_update/dagRuns").json()["dag_runs"]) == before
    assert patches_for(sandbox, cid) == []


def test_scheduler_runs_the_crm_sync_and_every_update_lands(airflow, sandbox, crm_sync_started):
    run = airflow.wait_for_run("hilos_mapped_updates", timeout=240)
    assert run["state"] == "success", airflow.log_tail("scheduler")
    assert run["run_type"] == "scheduled"
    spec = importlib.util.spec_from_file_location("mapped_updates_example", EXAMPLE_DAGS / "hilos_mapped_updates.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    intent = module.load_change_set(module.CHANGES_FILE)
    for update in intent:
        assert sandbox.mismatches(update["conversation_id"], update["payload"]) == [], update
    links = airflow.api(
        "GET",
        f"/api/v2/dags/hilos_mapped_updates/dagRuns/{run['dag_run_id']}/taskInstances/apply_update/links",
        params={"map_index": 3},
    ).json()
    expected = f"https://app.hilos.io/inbox/conversation/{intent[3]['conversation_id']}"
    assert links["extra_links"] == {"Hilos conversation": expected}


def test_browser_trigger_form_and_connection_form(airflow, sandbox, outage, lineage_run):
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: install Debian's chromium (scripts/dev.py test does)"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    cid = sandbox.conversation_ids()[25]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(30_000)
            page.goto(f"{airflow.url}/")
            page.get_by_label("Username").fill(ADMIN[0])
            page.get_by_label("Password").fill(ADMIN[1])
            page.screenshot(path=str(ARTIFACTS / "01-login.png"))
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(f"{airflow.url}/", timeout=30_000)

            page.goto(f"{airflow.url}/dags/hilos_manual_update")
            page.get_by_role("button", name="Trigger").first.click()
            dialog = page.get_by_role("dialog")
            dialog.locator("#element_conversation_id").fill(cid)
            dialog.locator("#element_status").click()
            options = [o.inner_text() for o in page.get_by_role("option").all()]
            assert options == [
                "(keep the current status)",
                "Created",
                "Flow",
                "Flow paused",
                "New",
                "In progress",
                "Resolved",
                "Closed",
            ]
            page.screenshot(path=str(ARTIFACTS / "02-trigger-form-status-dropdown.png"))
            page.get_by_role("option", name="Closed", exact=True).click()
            page.screenshot(path=str(ARTIFACTS / "03-trigger-form-filled.png"), full_page=True)
            dialog.get_by_role("button", name="Trigger").last.click()
            page.get_by_text("Dag run has been successfully triggered").first.wait_for()  # a toast may be doubled

            runs = airflow.api("GET", "/api/v2/dags/hilos_manual_update/dagRuns").json()["dag_runs"]
            (mine,) = [r for r in runs if r["conf"].get("conversation_id") == cid]
            assert mine["conf"]["status"] == "CLOSED" and mine["conf"]["tags"] is None
            run = airflow.wait_for_run("hilos_manual_update", mine["dag_run_id"])
            assert run["state"] == "success"
            page.reload()
            page.get_by_text("Success").first.wait_for()
            page.screenshot(path=str(ARTIFACTS / "04-run-succeeded.png"))
            assert sandbox.conversation(cid)["status"] == "CLOSED"

            page.goto(f"{airflow.url}/connections")
            page.get_by_role("button", name="Add Connection").click()
            page.get_by_role("combobox").first.click()
            page.keyboard.type("Hilos")
            page.get_by_role("option", name="Hilos", exact=True).click()
            page.get_by_text("API token", exact=True).wait_for()
            assert page.get_by_text("Base URL", exact=True).is_visible()
            assert page.get_by_text("Login", exact=True).count() == 0
            page.screenshot(path=str(ARTIFACTS / "05-connection-form-hilos.png"), full_page=True)
            page.get_by_text("Extra Fields", exact=True).click()
            page.get_by_text("API family", exact=True).wait_for()
            assert page.get_by_text("Token header name", exact=True).is_visible()
            page.wait_for_timeout(1000)  # let the accordion finish its animation before the screenshot
            page.screenshot(path=str(ARTIFACTS / "06-connection-form-extra-fields.png"), full_page=True)
        finally:
            browser.close()
    shots = sorted(p.name for p in ARTIFACTS.glob("*.png"))
    assert len(shots) == 6, shots
    assert all(SANDBOX_TOKEN not in json.dumps(r) for r in sandbox.requests())


def test_marking_a_running_batch_failed_stops_it_and_its_checkpoint_holds_what_landed(airflow, slow_sandbox, tmp_path):
    """What a user's "mark failed" does: Airflow's supervisor sends SIGTERM to the task, whose ``on_kill`` stops the
    batch. At most ``max_concurrency`` requests (those in flight) arrive after it; every update the API accepted is
    in the checkpoint, so a later try resumes after them."""
    updates = tmp_path / "updates.jsonl"
    updates.write_text(
        "".join(
            json.dumps({"conversation_id": c, "status": "RESOLVED"}) + "\n" for c in slow_sandbox.conversation_ids()
        )
    )
    checkpoints = tmp_path / "checkpoints"
    dag = "/api/v2/dags/hilos_test_kill"
    assert airflow.api("PATCH", dag, json={"is_paused": False}).status_code == 200
    conf = {"updates_path": str(updates), "checkpoint_path": str(checkpoints)}
    response = airflow.api("POST", f"{dag}/dagRuns", json={"logical_date": None, "conf": conf})
    assert response.status_code == 200, response.text
    run_id = response.json()["dag_run_id"]
    deadline = time.monotonic() + 120
    while len(slow_sandbox.requests()) < 200:
        assert time.monotonic() < deadline, airflow.log_tail("scheduler")
        time.sleep(0.2)
    marked = airflow.api("PATCH", f"{dag}/dagRuns/{run_id}/taskInstances/long_batch", json={"new_state": "failed"})
    assert marked.status_code == 200, marked.text
    run = airflow.wait_for_run("hilos_test_kill", run_id, timeout=120)
    assert run["state"] == "failed"
    deadline = time.monotonic() + 60
    log = None
    while log is None or "on_kill" not in log.read_text():
        logs = list((airflow.home / "logs" / "dag_id=hilos_test_kill").rglob("*.log"))
        log = logs[0] if logs else None
        assert time.monotonic() < deadline, "no on_kill line in the task log"
        time.sleep(0.5)
    line = next(json.loads(line) for line in log.read_text().splitlines() if "on_kill" in line)  # the first
    killed_at = datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")).timestamp()
    time.sleep(2)  # the process is gone: nothing more may arrive
    sent = slow_sandbox.requests()
    after = [r for r in sent if r["time"] > killed_at]
    assert len(after) <= 8, len(after)  # max_concurrency: the requests in flight
    assert len(sent) < KILL_ROWS
    landed = {r["path"].split("/")[-2] for r in sent if r["status"] == 200}
    (folder,) = [p for p in checkpoints.rglob("*") if p.is_dir() and any(p.glob("applied-*.txt"))]
    recorded = {line.split()[0] for f in folder.glob("applied-*.txt") for line in f.read_text().splitlines()}
    assert recorded == landed


def test_nothing_leaked_into_task_logs(airflow, sandbox):
    # a run of its own first: under pytest-xdist this test may come before the tests that ran the other DAGs
    assert airflow.api("PATCH", "/api/v2/dags/hilos_manual_update", json={"is_paused": False}).status_code == 200
    conf = {"conversation_id": sandbox.conversation_ids()[21], "status": "CLOSED"}
    response = airflow.api(
        "POST", "/api/v2/dags/hilos_manual_update/dagRuns", json={"logical_date": None, "conf": conf}
    )
    assert response.status_code == 200, response.text
    run = airflow.wait_for_run("hilos_manual_update", response.json()["dag_run_id"])
    assert run["state"] == "success", airflow.log_tail("scheduler")
    logs = airflow.home / "logs"
    texts = [p.read_text(errors="replace") for p in logs.rglob("*") if p.is_file()]
    assert texts, "the runs above should have written task logs"
    assert any("Hilos conversation" in t and "updated" in t for t in texts)
    assert not [t for t in texts if SANDBOX_TOKEN in t]
    health = requests.get(f"{airflow.url}/api/v2/monitor/health", timeout=10).json()
    assert health["scheduler"]["status"] == "healthy"


def test_the_export_dag_writes_every_conversation_and_its_asset_event(airflow, sandbox, tmp_path):
    """The read side in a real deployment: the scheduler runs the export; the file holds every conversation in
    the change-set format, and the Asset event carries the count and the path."""
    target = tmp_path / "export" / "conversations.csv"
    assert airflow.api("PATCH", "/api/v2/dags/hilos_export_conversations", json={"is_paused": False}).status_code == 200
    response = airflow.api(
        "POST",
        "/api/v2/dags/hilos_export_conversations/dagRuns",
        json={"logical_date": None, "conf": {"output_path": str(target)}},
    )
    assert response.status_code == 200, response.text
    run = airflow.wait_for_run("hilos_export_conversations", response.json()["dag_run_id"])
    assert run["state"] == "success", airflow.log_tail("scheduler")
    lines = target.read_text().splitlines()
    assert lines[0] == "conversation_id,status,assigned,tags,assigned_team,channel"
    assert sorted(line.split(",")[0] for line in lines[1:]) == sorted(sandbox.conversation_ids())
    events = airflow.api("GET", "/api/v2/assets/events", params={"source_dag_id": "hilos_export_conversations"})
    assert events.status_code == 200, events.text
    extra = events.json()["asset_events"][-1]["extra"]
    assert extra["count"] == len(lines) - 1 and extra["output_path"] == str(target)


def test_zz_an_outage_in_the_middle_of_a_deferrable_batch_is_waited_out_in_the_triggerer(
    airflow, outage_sandbox, outage
):
    """Runs last (its name), so the 90-s outage started by the fixture overlapped the checks before it. During the
    outage the task instance is deferred (no worker slot); afterwards it finishes with every update landed, without
    spending an Airflow retry, and the requests sent during the outage stay few (the batch stopped, the triggerer
    probed)."""
    outage["watcher"].join(timeout=OUTAGE_SECONDS + 300)
    seen = outage["seen"]
    assert seen["outage"] is not None, "the batch never reached a third of its rows"
    assert OUTAGE_ROWS // 3 <= seen["outage"][0] < OUTAGE_ROWS, seen
    states = [state for _, state, _ in seen["states"]]
    assert "deferred" in states, seen["states"]
    # once deferred, it stays deferred until the API is back: never running (holding a slot) in between
    first = states.index("deferred")
    assert set(states[first:]) == {"deferred"}, seen["states"]
    assert first * 2 <= 40, seen["states"]  # deferred within about 40 s of the outage's start
    run = airflow.wait_for_run("hilos_test_outage", outage["run_id"], timeout=300)
    assert run["state"] == "success", airflow.log_tail("triggerer")
    ti = airflow.api("GET", f"/api/v2/dags/hilos_test_outage/dagRuns/{outage['run_id']}/taskInstances/paced_batch")
    assert ti.json()["try_number"] == 1  # no Airflow retry spent
    assert outage["landed"]() == OUTAGE_ROWS
    assert all(outage_sandbox.conversation(c)["status"] == "RESOLVED" for c in outage_sandbox.conversation_ids())
    # the batch stops once its breaker opens (tens of requests), then one probe every 15 s
    assert seen["requests_in_outage"] <= 120, seen


def test_zz_the_sync_reports_its_lineage_warehouse_table_to_hilos_conversations(
    airflow, sandbox, lineage_files, lineage_run
):
    """The OpenLineage provider's file transport, configured in the deployment, receives the sync's events: the
    COMPLETE event of its task names the warehouse table as input and the Hilos conversations as output."""
    from airflow_provider_hilos.sandbox import warehouse

    run = airflow.wait_for_run("hilos_crm_sync", lineage_run, timeout=180)
    assert run["state"] == "success", airflow.log_tail("scheduler")
    desired = warehouse.desired_rows(sandbox.conversation_ids()[LINEAGE_MANAGED], seed=5)
    assert all(warehouse.mismatches(row, sandbox.conversation(row["conversation_id"])) == [] for row in desired)
    events: list[dict] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # events are emitted asynchronously as the task ends
        path = lineage_files["events"]
        lines = path.read_text().splitlines() if path.exists() else []
        events = [json.loads(line) for line in lines if line.strip()]
        done = [
            e
            for e in events
            if e.get("eventType") == "COMPLETE" and e.get("job", {}).get("name") == "hilos_crm_sync.sync"
        ]
        if done:
            break
        time.sleep(1)
    assert done, [(e.get("eventType"), e.get("job", {}).get("name")) for e in events][-20:]
    (event,) = done[-1:]
    inputs = [(d["namespace"], d["name"]) for d in event["inputs"]]
    outputs = [(d["namespace"], d["name"]) for d in event["outputs"]]
    assert inputs == [(f"sqlite://{lineage_files['warehouse']}", warehouse.TABLE)]
    assert outputs == [(f"hilos://{sandbox.url.split('://')[1]}", "conversations")]
    assert event["run"]["facets"]["hilos"]["counts"]["desired"] == len(desired)
    assert SANDBOX_TOKEN not in path.read_text()


APPROVAL_DAG = "/api/v2/dags/hilos_test_approval"
APPROVAL_SHOTS = ARTIFACTS / "approval"


def _approval_rows(approval_sandbox, picked: slice) -> list[dict]:
    """Desired rows closing conversations the sandbox holds open: each one a change."""
    open_ids = [
        c for c in approval_sandbox.conversation_ids() if approval_sandbox.conversation(c)["status"] != "CLOSED"
    ]
    return [{"conversation_id": c, "status": "CLOSED"} for c in open_ids[picked]]


def _trigger_approval_run(airflow, rows: list[dict], folder: Path) -> str:
    conf = {"rows": rows, "state_store": str(folder / "state"), "report_path": str(folder / "out" / "report.jsonl")}
    response = airflow.api("POST", f"{APPROVAL_DAG}/dagRuns", json={"logical_date": None, "conf": conf})
    assert response.status_code == 200, response.text
    return response.json()["dag_run_id"]


def _watch_until_awaiting_input(airflow, run_id: str, timeout: float = 180.0) -> list[str]:
    """The task instance's states, polled until it waits for input."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = airflow.api("GET", f"{APPROVAL_DAG}/dagRuns/{run_id}/taskInstances/sync").json().get("state")
        if not seen or seen[-1] != state:
            seen.append(state)
        if state == "awaiting_input":
            return seen
        assert state not in ("failed", "success", "upstream_failed"), (seen, airflow.log_tail("scheduler"))
        time.sleep(0.5)
    raise TimeoutError(f"the sync never waited for input: {seen}")


def _never_running_while_it_waits(airflow, run_id: str, timeout: float = 60.0) -> None:
    """While it waits, the task instance holds no worker slot: polled until the scheduler has taken the exit of
    the worker that parked it, it is never running.

    (Airflow 3.3.2 fails a task answered before its scheduler processed that exit: "Executor ... reported that the
    task instance ... finished with state success, but the task instance's state attribute is queued". A person
    answers seconds later, not in the same second: the test waits for the scheduler as a person would.)"""
    parked = f"run_id={run_id}, map_index=-1"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = airflow.api("GET", f"{APPROVAL_DAG}/dagRuns/{run_id}/taskInstances/sync").json()["state"]
        assert state == "awaiting_input", state
        log = (airflow.home / "scheduler.log").read_text(errors="replace")
        if any(parked in line and "state=awaiting_input" in line for line in log.splitlines()):
            return
        time.sleep(0.5)
    raise TimeoutError(f"the scheduler never took the parking worker's exit\n{airflow.log_tail('scheduler')}")


def _signed_in(browser, airflow):
    """A page of ``browser`` signed in to the deployment's UI as its admin."""
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.set_default_timeout(30_000)
    page.goto(f"{airflow.url}/")
    page.get_by_label("Username").fill(ADMIN[0])
    page.get_by_label("Password").fill(ADMIN[1])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{airflow.url}/", timeout=30_000)
    return page


def _hitl(airflow, run_id: str) -> str:
    return f"{APPROVAL_DAG}/dagRuns/{run_id}/taskInstances/sync/-1/hitlDetails"


def test_zz_a_plan_over_its_limit_waits_for_approval_in_the_ui_and_applies_exactly_the_approved_rows(
    airflow, approval_sandbox, tmp_path
):
    from playwright.sync_api import sync_playwright

    assert airflow.api("PATCH", APPROVAL_DAG, json={"is_paused": False}).status_code == 200
    rows = _approval_rows(approval_sandbox, slice(0, 12))
    assert len(rows) == 12
    approval_sandbox.clear_requests()
    run_id = _trigger_approval_run(airflow, rows, tmp_path)
    states = _watch_until_awaiting_input(airflow, run_id)
    assert "deferred" not in states, states  # Airflow 3.3 parks it: no trigger
    detail = airflow.api("GET", _hitl(airflow, run_id)).json()
    assert detail["subject"] == "Approve Hilos sync hilos_test_approval.sync: 12 conversation change(s)"
    assert "| to update | 12 |" in detail["body"] and "| status | 12 |" in detail["body"]
    assert "12 changes \\> max\\_changes\\=5" in detail["body"] and detail["options"] == ["Approve", "Reject"]
    assert SANDBOX_TOKEN not in json.dumps(detail)
    assert not [r for r in approval_sandbox.requests() if r["method"] == "PATCH"]  # nothing sent while it waits
    _never_running_while_it_waits(airflow, run_id)

    APPROVAL_SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = _signed_in(browser, airflow)
            page.goto(f"{airflow.url}/dags/hilos_test_approval/runs/{run_id}/tasks/sync/required_actions")
            page.get_by_text("Approve Hilos sync hilos_test_approval.sync").first.wait_for()
            page.get_by_text("12 changes > max_changes=5").first.wait_for()  # the Markdown rendered, as typed
            text = page.inner_text("body")
            assert "to update" in text and "12" in text and "CLOSED" in text
            page.wait_for_timeout(500)
            page.screenshot(path=str(APPROVAL_SHOTS / "01-required-action-plan.png"), full_page=True)
            page.get_by_role("button", name="Approve").first.click()
            run = airflow.wait_for_run("hilos_test_approval", run_id)
            page.screenshot(path=str(APPROVAL_SHOTS / "02-approved.png"), full_page=True)
        finally:
            browser.close()
    assert run["state"] == "success", airflow.log_tail("scheduler")
    sent = [r for r in approval_sandbox.requests() if r["method"] == "PATCH"]
    assert sorted(r["path"].split("/")[-2] for r in sent) == sorted(r["conversation_id"] for r in rows)
    assert all(approval_sandbox.conversation(r["conversation_id"])["status"] == "CLOSED" for r in rows)
    result = airflow.api(
        "GET", f"{APPROVAL_DAG}/dagRuns/{run_id}/taskInstances/sync/xcomEntries/hilos_sync_result"
    ).json()["value"]
    result = json.loads(result) if isinstance(result, str) else result
    assert result["updated"] == 12 and result["approval"]["approved_by"] == ADMIN[0]

    # a second run over its limit, rejected through the REST API: nothing is sent, the state is kept
    state_files = {p: p.read_bytes() for p in (tmp_path / "state").rglob("state*") if p.is_file()}
    assert state_files
    more = _approval_rows(approval_sandbox, slice(0, 8))  # the first twelve are closed now: eight others
    second = _trigger_approval_run(airflow, more, tmp_path)
    _watch_until_awaiting_input(airflow, second)
    _never_running_while_it_waits(airflow, second)
    approval_sandbox.clear_requests()  # the plan read the list; from here on, nothing may reach the API
    answer = airflow.api("PATCH", _hitl(airflow, second), json={"chosen_options": ["Reject"], "params_input": {}})
    assert answer.status_code == 200, answer.text
    rejected = airflow.wait_for_run("hilos_test_approval", second)
    assert rejected["state"] == "failed"
    assert approval_sandbox.requests() == [], "a rejected plan sends nothing at all"
    assert {p: p.read_bytes() for p in state_files} == state_files
    refused = airflow.api(
        "GET", f"{APPROVAL_DAG}/dagRuns/{second}/taskInstances/sync/xcomEntries/hilos_sync_result"
    ).json()["value"]
    refused = json.loads(refused) if isinstance(refused, str) else refused
    assert refused["approval"]["decision"] == "rejected" and refused["approval"]["answered_by"] == ADMIN[0]
    assert "Nothing was sent" in refused["refused"]
    deadline, logs = time.monotonic() + 30, []
    while time.monotonic() < deadline:  # the task's last lines reach its log file just after its state
        logs = [p.read_text(errors="replace") for p in (airflow.home / "logs").rglob("*") if p.is_file()]
        if any("was not approved: rejected by admin" in t for t in logs):
            break
        time.sleep(1)
    assert any("was not approved: rejected by admin" in t for t in logs)
    assert not [t for t in logs if SANDBOX_TOKEN in t]


def test_zz_the_hilos_syncs_page_shows_both_syncs_and_refuses_an_unauthenticated_request(airflow, sandbox, lineage_run):
    from playwright.sync_api import sync_playwright

    dag = "/api/v2/dags/hilos_contacts_sync"
    assert airflow.api("PATCH", dag, json={"is_paused": False}).status_code == 200
    response = airflow.api("POST", f"{dag}/dagRuns", json={"logical_date": None, "conf": {}})
    assert response.status_code == 200, response.text
    contacts_run = airflow.wait_for_run("hilos_contacts_sync", response.json()["dag_run_id"])
    assert contacts_run["state"] == "success", airflow.log_tail("scheduler")
    assert airflow.wait_for_run("hilos_crm_sync", lineage_run)["state"] == "success"

    page_url = f"{airflow.url}/hilos/syncs"
    for headers in ({}, {"Authorization": "Bearer not-a-valid-token"}):
        refused = requests.get(page_url, headers=headers, timeout=30)
        assert refused.status_code in (401, 403) and "Hilos syncs" not in refused.text
    page = requests.get(page_url, headers={"Authorization": f"Bearer {airflow.token}"}, timeout=30)
    assert page.status_code == 200, page.text
    for name in ("hilos_crm_sync.sync", "hilos_contacts_sync.sync_contacts"):
        assert f"data-sync='{name}'" in page.text, name
    assert "(contacts, " in page.text and "(conversations, " in page.text
    assert SANDBOX_TOKEN not in page.text and airflow.token not in page.text
    plugins = airflow.api("GET", "/api/v2/plugins").json()["plugins"]
    (hilos,) = [p for p in plugins if p["name"] == "hilos"]
    assert hilos["external_views"][0]["href"] == "/hilos/syncs"

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            view = _signed_in(browser, airflow)
            view.goto(f"{airflow.url}/plugin/hilos-syncs")  # the page inside Airflow's UI, from its navigation
            frame = view.frame_locator("iframe").first
            frame.get_by_text("hilos_contacts_sync.sync_contacts").first.wait_for()
            frame.get_by_text("hilos_crm_sync.sync").first.wait_for()
            APPROVAL_SHOTS.mkdir(parents=True, exist_ok=True)
            view.wait_for_timeout(500)
            view.screenshot(path=str(APPROVAL_SHOTS / "03-hilos-syncs-page.png"), full_page=True)
        finally:
            browser.close()
