"""A real Airflow 3 deployment on loopback for the end-to-end tests.

api-server, scheduler, dag-processor and triggerer as separate processes, SQLite and LocalExecutor,
a throwaway AIRFLOW_HOME, ``dags_examples/`` as the DAGs folder, a known admin password, and
``AIRFLOW__CORE__TEST_CONNECTION=Enabled``. Every process is started in its own process group and
always torn down.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

ADMIN = ("admin", "e2e-admin-password")
LOCAL_BUNDLE = "airflow.dag_processing.bundles.local.LocalDagBundle"
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
#: what /api/v2/monitor/health calls each component that reports there
HEALTH_PARTS = {"scheduler": "scheduler", "dag-processor": "dag_processor", "triggerer": "triggerer"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AirflowDeployment:
    """Start with :meth:`start`, stop with :meth:`stop` (or use it as a context manager).

    :param dags_folder: the DAGs folder.
    :param more_dag_folders: more folders of DAGs, each its own DAG bundle (the tests' own DAGs).
    :param extra_env: more environment (e.g. ``AIRFLOW_CONN_HILOS_DEFAULT``, or another executor and
        metadata DB) for every component.
    :param components: the ``airflow <component>`` processes :meth:`start` runs (more, such as Celery
        workers, with :meth:`spawn`).
    """

    def __init__(
        self,
        dags_folder: Path,
        extra_env: dict[str, str] | None = None,
        *,
        components: tuple[str, ...] = COMPONENTS,
        more_dag_folders: tuple[Path, ...] = (),
    ) -> None:
        self.components = components
        self.home = Path(tempfile.mkdtemp(prefix="hilos-e2e-airflow-home-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        passwords = self.home / "passwords.json"
        passwords.write_text(json.dumps({ADMIN[0]: ADMIN[1]}))
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": "4",
                "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN[0]}:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__BASE_URL": self.url,
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API_AUTH__JWT_SECRET": "e2e-jwt-secret-not-for-production",
                "AIRFLOW__API_AUTH__JWT_ISSUER": "hilos-e2e",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
                "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "300",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
                "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
                **(extra_env or {}),
            }
        )
        if more_dag_folders:
            bundles = [("dags-folder", dags_folder)] + [(f"dags-{i}", f) for i, f in enumerate(more_dag_folders, 1)]
            env["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"] = json.dumps(
                [
                    {"name": name, "classpath": LOCAL_BUNDLE, "kwargs": {"path": str(folder), "refresh_interval": 5}}
                    for name, folder in bundles
                ]
            )
        self.env = env
        self.processes: dict[str, subprocess.Popen] = {}
        self._token: str | None = None

    # -- life cycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 180.0) -> AirflowDeployment:
        try:
            migrate = subprocess.run(
                [sys.executable, "-m", "airflow", "db", "migrate"],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            if migrate.returncode != 0:
                raise RuntimeError(f"airflow db migrate failed:\n{migrate.stdout[-3000:]}{migrate.stderr[-3000:]}")
            for name in self.components:
                self.spawn(name, [name])
            self.wait_until_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start ``airflow <args>`` as process ``name`` (its own session, so it can be stopped as a group),
        logging to ``<home>/<name>.log``."""
        with (self.home / f"{name}.log").open("w") as log:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "airflow", *args],
                env={**self.env, **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self.processes[name]

    def wait_until_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            for name, proc in self.processes.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"airflow {name} exited with {proc.returncode}:\n{self.log_tail(name)}")
            try:
                last = requests.get(f"{self.url}/api/v2/monitor/health", timeout=5).json()
                parts = ["metadatabase", *(HEALTH_PARTS[c] for c in self.components if c in HEALTH_PARTS)]
                if all(last.get(part, {}).get("status") == "healthy" for part in parts):
                    return
            except (requests.RequestException, ValueError) as exc:
                last = repr(exc)
            time.sleep(1)
        raise TimeoutError(
            f"Airflow was not healthy after {timeout:.0f} s; last health: {last}\n"
            + "\n".join(self.log_tail(n) for n in self.processes)
        )

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.home / f"{name}.log"
        return f"--- {name} ---\n" + (path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)")

    def stop(self) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 20
        for proc in self.processes.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)

    def cleanup(self) -> None:
        shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self) -> AirflowDeployment:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- REST API -----------------------------------------------------------------------------

    @property
    def token(self) -> str:
        if self._token is None:
            response = requests.post(
                f"{self.url}/auth/token", json={"username": ADMIN[0], "password": ADMIN[1]}, timeout=30
            )
            response.raise_for_status()
            self._token = response.json()["access_token"]
        return self._token

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return requests.request(
            method, f"{self.url}{path}", headers={"Authorization": f"Bearer {self.token}"}, timeout=60, **kwargs
        )

    def wait_for_dag(self, dag_id: str, timeout: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            response = self.api("GET", f"/api/v2/dags/{dag_id}")
            if response.status_code == 200:
                return response.json()
            time.sleep(1)
        raise TimeoutError(f"DAG {dag_id} was not parsed within {timeout:.0f} s\n{self.log_tail('dag-processor')}")

    def wait_for_run(self, dag_id: str, run_id: str | None = None, timeout: float = 180.0) -> dict[str, Any]:
        """Wait until a run (the given one, or the first) of ``dag_id`` is finished; return it."""
        deadline = time.monotonic() + timeout
        run: dict[str, Any] = {}
        while time.monotonic() < deadline:
            if run_id is None:
                runs = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns").json().get("dag_runs", [])
                run = runs[0] if runs else {}
            else:
                run = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}").json()
            if run.get("state") in ("success", "failed"):
                return run
            time.sleep(1)
        raise TimeoutError(f"run of {dag_id} not finished within {timeout:.0f} s: {run}\n{self.log_tail('scheduler')}")
