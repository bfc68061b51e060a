"""The provider's metadata: what Airflow's ProvidersManager reads, valid and light."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import jsonschema

import airflow_provider_hilos
from airflow_provider_hilos.get_provider_info import get_provider_info
from tests.conftest import AIRFLOW_V3


def test_entry_point_is_declared():
    (ep,) = [
        ep for ep in entry_points(group="apache_airflow_provider") if ep.value.startswith("airflow_provider_hilos")
    ]
    assert ep.load() is get_provider_info


def test_provider_info_is_valid_for_airflow():
    import airflow

    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    info = get_provider_info()
    jsonschema.validate(info, schema)
    assert info["package-name"] == "airflow-provider-hilos"
    assert info["versions"] == [airflow_provider_hilos.__version__]
    (conn,) = info["connection-types"]
    assert conn["connection-type"] == "hilos"
    assert conn["hook-class-name"] == "airflow_provider_hilos.hooks.hilos.HilosHook"
    assert info["extra-links"] == ["airflow_provider_hilos.links.HilosConversationLink"]


def test_connection_form_declared_the_airflow_32_way():
    from airflow.providers_manager import ProvidersManager

    pm = ProvidersManager()
    widgets = pm.connection_form_widgets
    for field in (
        "header_name",
        "auth_scheme",
        "connect_timeout",
        "read_timeout",
        "max_attempts",
        "web_base_url",
        "allow_insecure_http",
    ):
        assert f"extra__hilos__{field}" in widgets, field
    scheme = widgets["extra__hilos__auth_scheme"].field
    # Airflow 3.2+ builds the form from conn-fields; older versions from HilosHook.get_connection_form_widgets
    assert (scheme["value"] if AIRFLOW_V3 else scheme.kwargs["default"]) == "Token"
    behaviour = pm.field_behaviours["hilos"]
    assert behaviour["relabeling"] == {"host": "Base URL", "password": "API token"}
    assert set(behaviour["hidden_fields"]) == {"schema", "login", "port", "extra"}
    assert behaviour["placeholders"]["host"] == "https://api.hilos.io"


def test_form_field_names_are_not_masked_as_secrets():
    """Airflow hides values of extras whose names look secret; the form must show our defaults."""
    if AIRFLOW_V3:
        from airflow.sdk._shared.secrets_masker import should_hide_value_for_key
    else:
        from airflow.utils.log.secrets_masker import should_hide_value_for_key

    from airflow_provider_hilos.connection import CONN_FIELDS

    assert [name for name in CONN_FIELDS if should_hide_value_for_key(name)] == []
    assert should_hide_value_for_key("api_password")  # the check can fail: this name would be hidden


def test_the_provider_metadata_imports_nothing_from_airflow():
    """Airflow imports get_provider_info (and through it the connection form) while it loads its providers."""
    code = """
import sys
import airflow_provider_hilos.get_provider_info as info
info.get_provider_info()
import airflow_provider_hilos.connection
print(sorted(m for m in sys.modules if m == "airflow" or m.startswith("airflow.")))
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=os.environ.copy()
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
