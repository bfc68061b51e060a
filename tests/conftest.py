"""Test set-up: a throwaway AIRFLOW_HOME (set before Airflow is imported), a migrated SQLite DB for
DAG runs, and a distinctive token that no output may ever contain."""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest

#: The sandbox's pytest fixtures (hilos_sandbox): opt-in, as for any user of the provider.
pytest_plugins = ["airflow_provider_hilos.sandbox.pytest_plugin"]

#: The Airflow the suite runs against (read without importing Airflow: AIRFLOW_HOME is not set yet).
AIRFLOW_V3 = int(version("apache-airflow").split(".")[0]) >= 3

ROOT = Path(__file__).resolve().parents[1]
TEST_DAGS = ROOT / "tests" / "dags"
EXAMPLE_DAGS = ROOT / "dags_examples"
#: A token distinctive enough that finding it anywhere in output is a leak, not a coincidence.
TEST_TOKEN = "hilos-TEST-token-7Qx9Zr2Kp5Lm"

#: Test modules whose outcome cannot depend on which Airflow runs them: the sandbox, the pacer, the scheduler, the
#: pure diff and plan, the published documents, and the transport and engine under weather (the only Airflow code
#: the last three reach is the hook's connection lookup, which the hook tests check on both Airflows). They are
#: marked ``airflow_agnostic`` and run once, on Airflow 3: the Airflow 2 lane of the whole test command skips them.
AIRFLOW_AGNOSTIC = frozenset(
    {
        "tests/contract/test_contract.py",
        "tests/property/test_properties.py",
        "tests/unit/test_sandbox_app.py",
        "tests/unit/test_sandbox_faults.py",
        "tests/unit/test_sandbox_state.py",
        "tests/unit/test_sandbox_process.py",
        "tests/unit/test_sandbox_server.py",
        "tests/unit/test_sandbox_warehouse.py",
        "tests/unit/test_pacing.py",
        "tests/unit/test_batch_scheduler.py",
        "tests/unit/test_batch_result.py",
        "tests/unit/test_batch_report.py",
        "tests/unit/test_conversations.py",
        "tests/unit/test_rows.py",
        "tests/unit/test_sync_diff.py",
        "tests/unit/test_sync_plan.py",
        "tests/unit/test_layout.py",
        "tests/integration/test_reliability.py",
        "tests/integration/test_quota.py",
        "tests/integration/test_sync_reliability.py",
        "tests/integration/test_sync_concurrency.py",
        "tests/unit/test_batch_wording.py",
        "tests/unit/test_sync_lease.py",
        "tests/unit/test_contacts.py",
        "tests/unit/test_people.py",
        "tests/unit/test_sandbox_contacts.py",
        "tests/unit/test_sync_work.py",
        "tests/unit/test_resources_paging.py",
        "tests/unit/test_sync_objects_contact.py",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.relative_to(ROOT).as_posix() in AIRFLOW_AGNOSTIC:
            item.add_marker(pytest.mark.airflow_agnostic)


_HOME = tempfile.mkdtemp(prefix="hilos-tests-airflow-home-")
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)
_LOCAL_BUNDLE = "airflow.dag_processing.bundles.local.LocalDagBundle"
os.environ.update(
    {
        "AIRFLOW_HOME": _HOME,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLE_DAGS),
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(
            [
                {"name": "hilos-test-dags", "classpath": _LOCAL_BUNDLE, "kwargs": {"path": str(TEST_DAGS)}},
                {"name": "hilos-examples", "classpath": _LOCAL_BUNDLE, "kwargs": {"path": str(EXAMPLE_DAGS)}},
            ]
        ),
    }
)
for _name in [n for n in os.environ if n.startswith("AIRFLOW_CONN_")]:
    del os.environ[_name]


@pytest.fixture
def hilos_conn(monkeypatch: pytest.MonkeyPatch):
    """Set ``hilos_default`` (or another id) from keyword arguments, JSON form."""

    def make(
        conn_id: str = "hilos_default",
        *,
        host: str | None = "https://api.hilos.io",
        password: str | None = TEST_TOKEN,
        extra: dict | None = None,
        **fields,
    ) -> dict:
        conn = {"conn_type": "hilos", "host": host, "password": password, **fields}
        if extra is not None:
            conn["extra"] = extra
        conn = {k: v for k, v in conn.items() if v is not None}
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
        return conn

    return make


class FakeTI:
    """The part of a task instance an operator's ``execute`` uses outside a DAG run: ``xcom_push`` and the
    key of its batch checkpoint (a run id of its own, so no two tests share a checkpoint)."""

    def __init__(
        self, run_id: str | None = None, map_index: int = -1, dag_id: str = "hilos_tests", task_id: str = "batch"
    ) -> None:
        import uuid

        self.pushed: dict[str, object] = {}
        self.dag_id, self.task_id, self.map_index = dag_id, task_id, map_index
        self.run_id = run_id or f"manual__{uuid.uuid4().hex}"

    def xcom_push(self, key: str, value: object) -> None:
        self.pushed[key] = value


@pytest.fixture
def output(capfd: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture):
    """Everything printed or logged since the last read, as one string (Airflow 3 logs to stdout through
    structlog; Airflow 2 logs through the logging module, which pytest captures in caplog)."""
    caplog.set_level(logging.INFO)

    def read() -> str:
        out, err = capfd.readouterr()
        text = out + err + caplog.text
        caplog.clear()
        return text

    return read


@pytest.fixture(scope="session")
def airflow_db() -> Iterator[None]:
    """A migrated SQLite metadata DB in the throwaway AIRFLOW_HOME (once per session)."""
    from airflow.utils import db

    db.initdb()
    yield


@pytest.fixture
def sandbox(monkeypatch: pytest.MonkeyPatch):
    """A fresh Hilos sandbox with the test token; ``hilos_default`` points at it."""
    from airflow_provider_hilos.sandbox import HilosSandbox

    sb = HilosSandbox(conversations=20, seed=11, token=TEST_TOKEN).start()
    try:
        monkeypatch.setenv("AIRFLOW_CONN_HILOS_DEFAULT", sb.connection_json())
        yield sb
    finally:
        sb.stop(wait=False)  # it ends on its own (~0.2 s): the next test need not wait for it


def run_dag(dag_id: str, conf: dict | None = None):
    """Run a DAG from the test or example bundles with ``dag.test()``; return the DagRun."""
    for folder in (TEST_DAGS, EXAMPLE_DAGS):
        dag = dag_bag(folder).get_dag(dag_id)
        if dag is not None:
            return dag.test(run_conf=conf)
    raise LookupError(f"no DAG {dag_id!r} in {TEST_DAGS} or {EXAMPLE_DAGS}")


def dag_bag(folder: Path):
    """A DagBag of one folder, on Airflow 3 or 2."""
    if AIRFLOW_V3:
        from airflow.dag_processing.dagbag import DagBag

        return DagBag(str(folder))
    from airflow.models.dagbag import DagBag

    return DagBag(str(folder), include_examples=False)


def stored_xcoms(dag_run) -> list[tuple[str, str, int, object]]:
    """Every XCom of a finished run, from the metadata DB: ``(task_id, key, map_index, value)``."""
    from airflow.utils.session import create_session

    if AIRFLOW_V3:
        from airflow.models.xcom import XComModel as Model
    else:
        from airflow.models.xcom import BaseXCom as Model
    with create_session() as session:
        rows = session.query(Model).filter(Model.dag_id == dag_run.dag_id, Model.run_id == dag_run.run_id).all()
        # Airflow 2's model deserializes the value when it loads the row
        return [(r.task_id, r.key, r.map_index, Model.deserialize_value(r) if AIRFLOW_V3 else r.value) for r in rows]


def xcom_value(dag_run, task_id: str, key: str = "return_value", map_index: int = -1):
    """An XCom value of a finished run, read from the metadata DB."""
    found = [v for t, k, m, v in stored_xcoms(dag_run) if (t, k, m) == (task_id, key, map_index)]
    return found[0] if found else None


def rendered_fields(dag_run, task_id: str) -> dict:
    """The rendered template fields of a task instance of a finished run, from the metadata DB."""
    from airflow.models.renderedtifields import RenderedTaskInstanceFields as RTIF
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.query(RTIF).filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id, task_id=task_id).one()
        return dict(row.rendered_fields)


@pytest.fixture
def hook(hilos_conn):
    """A hook on ``hilos_default`` (api.hilos.io, the test token) that records its waits instead of sleeping."""
    from airflow_provider_hilos.hooks.hilos import HilosHook

    hilos_conn()
    h = HilosHook()
    h.sleeps = []  # type: ignore[attr-defined]
    h._sleep = h.sleeps.append
    return h


@pytest.fixture
def sb(monkeypatch):
    """A sandbox of 400 conversations (seed 3) behind ``hilos_default``, whose request log keeps 100,000 entries."""
    from airflow_provider_hilos.sandbox import HilosSandbox

    sandbox = HilosSandbox(conversations=400, seed=3, token=TEST_TOKEN, request_log_limit=100_000).start()
    try:
        monkeypatch.setenv("AIRFLOW_CONN_HILOS_DEFAULT", sandbox.connection_json())
        yield sandbox
    finally:
        sandbox.stop(wait=False)  # it ends on its own (~0.2 s): the next test need not wait for it
