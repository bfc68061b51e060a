"""The hilos_sandbox fixture users add to their own tests."""

from __future__ import annotations

import json
import os

from airflow_provider_hilos.hooks.hilos import HilosHook


def test_hilos_sandbox_fixture_points_hilos_default_at_a_running_sandbox(hilos_sandbox):
    """The fixture users get from the provider's pytest plugin."""
    conn = json.loads(os.environ["AIRFLOW_CONN_HILOS_DEFAULT"])
    assert conn["host"] == hilos_sandbox.url and conn["password"] == hilos_sandbox.token
    cid = hilos_sandbox.conversation_ids()[0]
    assert HilosHook().update_conversation(cid, {"status": "RESOLVED"})["status"] == "RESOLVED"
    assert hilos_sandbox.conversation(cid)["status"] == "RESOLVED"
