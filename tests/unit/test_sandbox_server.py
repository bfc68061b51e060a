"""Running the sandbox: loopback only, stopped when done, the hilos-sandbox command and its flags."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import requests

import airflow_provider_hilos.sandbox
from airflow_provider_hilos.hooks.hilos import HilosHook
from airflow_provider_hilos.sandbox import HilosSandbox
from airflow_provider_hilos.sandbox.state import SandboxData
from tests.conftest import TEST_TOKEN
from tests.helpers import NATIVE


def test_loopback_only():
    with pytest.raises(ValueError, match="loopback only"):
        HilosSandbox(host="0.0.0.0")


def test_context_manager_stops_the_server():
    with HilosSandbox(conversations=1) as sb:
        url = sb.root_url
        assert requests.get(f"{url}/_sandbox/health", timeout=5).ok
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"{url}/_sandbox/health", timeout=2)


def test_a_stop_that_does_not_wait_still_stops_the_server_shortly():
    import threading

    sb = HilosSandbox(conversations=1).start()
    url, thread = sb.root_url, sb._thread
    assert requests.get(f"{url}/_sandbox/health", timeout=5).ok
    sb.stop(wait=False)
    # it did not wait: uvicorn's shutdown sleeps 0.1 s before the thread can end
    assert thread is not None and thread.is_alive()
    thread.join(timeout=5)
    assert not thread.is_alive() and thread not in threading.enumerate()
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"{url}/_sandbox/health", timeout=2)


@pytest.mark.slow  # starts the sandbox in a process of its own: not in the --fast tier
def test_hilos_sandbox_command_prints_its_url_and_serves():
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_provider_hilos.sandbox.server",
            "--port",
            "0",
            "--token",
            "T0KEN-cli",
            "--conversations",
            "1000",
            "--seed",
            "7",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        page = requests.get(
            f"{url}{NATIVE}", params={"page_size": 1}, headers={"Authorization": "Token T0KEN-cli"}, timeout=10
        ).json()
        assert page["count"] == 1000
        assert page["results"][0]["id"] == next(iter(SandboxData.seeded(1, 7).conversations))
    finally:
        proc.terminate()
        assert proc.wait(timeout=15) == 0
    assert "1000 conversations (seed 7)" in proc.stderr.read()


def test_hilos_sandbox_console_script_is_installed():
    from importlib.metadata import entry_points

    (script,) = [ep for ep in entry_points(group="console_scripts") if ep.name == "hilos-sandbox"]
    assert script.value == "airflow_provider_hilos.sandbox:main"
    assert script.load() is airflow_provider_hilos.sandbox.main


def test_uri_form_of_a_plain_http_loopback_sandbox(sandbox, monkeypatch):
    """The README's recipe: put the scheme in the URI; without it, the TLS error says how."""
    port = sandbox.port
    monkeypatch.setenv("AIRFLOW_CONN_HILOS_DEFAULT", f"hilos://http://:{TEST_TOKEN}@127.0.0.1:{port}")
    cid = sandbox.conversation_ids()[0]
    assert HilosHook().update_conversation(cid, {"status": "CLOSED"})["status"] == "CLOSED"
    monkeypatch.setenv("AIRFLOW_CONN_HILOS_DEFAULT", f"hilos://:{TEST_TOKEN}@127.0.0.1:{port}")
    with pytest.raises(Exception, match="TLS error") as err:
        HilosHook().update_conversation(cid, {"status": "NEW"})
    assert f"write the Base URL as http://127.0.0.1:{port} (URI form: hilos://http://:<token>@127.0.0.1:{port})" in str(
        err.value
    )
    assert TEST_TOKEN not in str(err.value)


def test_every_fault_setting_has_the_command_line_flag_of_the_same_name():
    from dataclasses import fields

    from airflow_provider_hilos.sandbox.faults import FaultConfig
    from airflow_provider_hilos.sandbox.server import build_parser

    flags = {option for action in build_parser()._actions for option in action.option_strings}
    names = [f.name for f in fields(FaultConfig)]
    assert "fault_seed" in names and "seed" not in names  # --fault-seed on the command line, fault_seed in Python
    missing = [name for name in names if "--" + name.replace("_", "-") not in flags]
    assert not missing
    args = build_parser().parse_args(["--fault-seed", "4", "--error-statuses", "502,503", "--rate-limit", "5"])
    assert (args.fault_seed, args.error_statuses, args.rate_limit_per_second) == (4, (502, 503), 5.0)
    with pytest.raises(ValueError, match=r"unknown fault setting.*'seed'.*fault_seed"):
        FaultConfig.from_dict({"seed": 1})
