"""Airflow finds the provider (``airflow providers list`` / ``hooks`` in a subprocess), and importing it is cheap
and offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import airflow_provider_hilos


def airflow_cli(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "airflow", *args], capture_output=True, text=True, env=os.environ.copy(), timeout=180
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_airflow_providers_list_shows_it():
    rows = json.loads(airflow_cli("providers", "list", "-o", "json"))
    mine = [r for r in rows if r["package_name"] == "airflow-provider-hilos"]
    assert mine and mine[0]["version"] == airflow_provider_hilos.__version__


def test_airflow_providers_hooks_and_links_show_it():
    hooks = json.loads(airflow_cli("providers", "hooks", "-o", "json"))
    (hilos,) = [h for h in hooks if h["connection_type"] == "hilos"]
    assert hilos["class"] == "airflow_provider_hilos.hooks.hilos.HilosHook"
    assert hilos["conn_id_attribute_name"] == "hilos_conn_id"
    assert hilos["hook_name"] == "Hilos"
    links = airflow_cli("providers", "links", "-o", "json")
    assert "airflow_provider_hilos.links.HilosConversationLink" in links


@pytest.mark.parametrize(
    "module", ["airflow_provider_hilos.hooks.hilos", "airflow_provider_hilos.operators.conversation"]
)
def test_importing_hook_and_operator_is_cheap_and_offline(module):
    code = f"""
import socket, sys
def no_network(*a, **k):
    raise AssertionError("network call at import time")
socket.socket.connect = no_network
socket.create_connection = no_network
import {module}
heavy = sorted(m for m in ("fastapi", "uvicorn", "airflow_provider_hilos.sandbox", "starlette") if m in sys.modules)
print(heavy)
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=os.environ.copy()
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
