"""Real PostgreSQL and Redis servers for the distributed test, from Debian's packages, on loopback.

Each one runs from a throwaway folder, is started as a child process (PostgreSQL as the ``postgres``
user when the tests run as root: it refuses to run as root), answers only on 127.0.0.1, and is stopped
by its process id, also when a test fails. ``scripts/dev.py test`` installs the packages when missing.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.e2e.airflow_deployment import free_port


def wait_for_port(port: int, process: subprocess.Popen, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def stop_process(process: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
    """Stop one server by its process id: ``sig``, then SIGKILL if it is still there after ``timeout``."""
    if process is None or process.poll() is not None:
        return
    try:
        os.kill(process.pid, sig)
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
    except ProcessLookupError:
        pass


class PostgresServer:
    """A throwaway PostgreSQL cluster (``initdb`` into a temporary folder) with database ``airflow``.

    :attr:`url` is the SQLAlchemy URL for Airflow's ``sql_alchemy_conn``.
    """

    def __init__(self) -> None:
        self.bin = self._bin_dir()
        self.folder = Path(tempfile.mkdtemp(prefix="hilos-pg-"))
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.user: str | None = None
        if os.geteuid() == 0:  # PostgreSQL will not run as root: run it as its own user
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise RuntimeError("running as root and there is no 'postgres' user to run PostgreSQL as") from exc
            self.user = "postgres"
            os.chown(self.folder, owner.pw_uid, owner.pw_gid)
        self.url = f"postgresql+psycopg2://airflow@127.0.0.1:{self.port}/airflow"

    @staticmethod
    def _bin_dir() -> Path:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
        if not found:
            raise RuntimeError("PostgreSQL is not installed (Debian package 'postgresql'; scripts/dev.py installs it)")
        return Path(found[-1]).parent

    def _run(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess:
        return subprocess.run(args, user=self.user, capture_output=True, text=True, check=True, **kwargs)

    def start(self) -> PostgresServer:
        data, log = self.folder / "data", self.folder / "postgres.log"
        try:
            self._run(
                str(self.bin / "initdb"), "-D", str(data), "-U", "airflow", "--auth=trust", "-E", "UTF8", "--no-sync"
            )
            with log.open("w") as out:
                self.process = subprocess.Popen(
                    [
                        str(self.bin / "postgres"),
                        "-D",
                        str(data),
                        "-h",
                        "127.0.0.1",
                        "-p",
                        str(self.port),
                        "-k",
                        str(self.folder),  # the Unix socket stays in the throwaway folder
                        "-c",
                        "fsync=off",  # a throwaway cluster: durability is not what is tested
                        "-c",
                        "synchronous_commit=off",
                        "-c",
                        "full_page_writes=off",
                        "-c",
                        "max_connections=200",
                    ],
                    user=self.user,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            wait_for_port(self.port, self.process, log)
            deadline = time.monotonic() + 30
            while True:
                created = subprocess.run(
                    [str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "airflow", "airflow"],
                    capture_output=True,
                    text=True,
                )
                if created.returncode == 0:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"createdb failed: {created.stderr}")
                time.sleep(0.5)  # "the database system is starting up"
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        stop_process(self.process, signal.SIGINT)  # SIGINT: PostgreSQL's fast shutdown
        self.process = None
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RedisServer:
    """A Redis server on loopback with no persistence; :attr:`url` is the Celery broker URL."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).exists():
            raise RuntimeError("redis-server is missing (Debian package 'redis-server'; scripts/dev.py installs it)")
        self.binary = binary
        self.folder = Path(tempfile.mkdtemp(prefix="hilos-redis-"))
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        log = self.folder / "redis.log"
        try:
            with log.open("w") as out:
                self.process = subprocess.Popen(
                    [
                        self.binary,
                        "--bind",
                        "127.0.0.1",
                        "--port",
                        str(self.port),
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--dir",
                        str(self.folder),
                        "--daemonize",
                        "no",
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            wait_for_port(self.port, self.process, log)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
