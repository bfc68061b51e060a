"""Airflow 2.11 and 3.x from one code base: no 3-only import, masking, the connection form, links."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from airflow_provider_hilos.hooks.hilos import HilosHook
from tests.conftest import AIRFLOW_V3, EXAMPLE_DAGS, ROOT, TEST_TOKEN

#: Modules that exist on Airflow 3 only; the package reaches Airflow through common-compat instead.
AIRFLOW_3_ONLY = ("airflow.sdk",)


def runtime_airflow_imports(path: Path, root: Path = ROOT) -> list[str]:
    """``module:line`` for each Airflow-3-only import outside ``if TYPE_CHECKING:`` (paths relative to ``root``)."""
    tree = ast.parse(path.read_text())
    type_checking = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for node in ast.walk(block)
    }
    found = []
    for node in ast.walk(tree):
        if id(node) in type_checking:
            continue
        names = (
            [node.module or ""]
            if isinstance(node, ast.ImportFrom)
            else ([a.name for a in node.names] if isinstance(node, ast.Import) else [])
        )
        found += [f"{path.relative_to(root)}:{node.lineno} {n}" for n in names if n.startswith(AIRFLOW_3_ONLY)]
    return found


def test_no_airflow_3_only_import_in_the_package_or_examples():
    files = [*(ROOT / "airflow_provider_hilos").rglob("*.py"), *EXAMPLE_DAGS.glob("*.py")]
    assert len(files) > 10
    assert [hit for path in files for hit in runtime_airflow_imports(path)] == []


def test_the_import_check_can_fail(tmp_path):
    bad = tmp_path / "airflow_provider_hilos" / "_probe_for_test.py"
    bad.parent.mkdir()
    bad.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from airflow.sdk import Context\n"
        "from airflow.sdk import BaseHook\n"
    )
    assert runtime_airflow_imports(bad, root=tmp_path) == ["airflow_provider_hilos/_probe_for_test.py:4 airflow.sdk"]


def test_the_token_is_registered_with_the_secrets_masker(hilos_conn):
    from airflow.providers.common.compat.sdk import redact

    hilos_conn(password=TEST_TOKEN)
    _ = HilosHook().settings  # loading the connection masks its token
    assert redact(f"sent {TEST_TOKEN} to Hilos") == "sent *** to Hilos"


def test_classic_connection_form_for_airflow_before_3_2():
    pytest.importorskip("flask_appbuilder", reason="the classic form needs Flask-AppBuilder (Airflow 2)")
    from wtforms import BooleanField, IntegerField, StringField

    widgets = HilosHook.get_connection_form_widgets()
    assert {name: type(field.field_class) for name, field in widgets.items()}.keys() == {
        "api_family",
        "header_name",
        "auth_scheme",
        "connect_timeout",
        "read_timeout",
        "max_attempts",
        "web_base_url",
        "allow_insecure_http",
    }
    assert widgets["api_family"].field_class is StringField  # Airflow 2 allows no select field
    assert widgets["api_family"].kwargs["default"] == "auto"
    assert widgets["api_family"].kwargs["description"].endswith("One of: auto, hilos, activecampaign.")
    assert widgets["max_attempts"].field_class is IntegerField
    assert widgets["allow_insecure_http"].field_class is BooleanField
    assert widgets["read_timeout"].field_class is StringField and widgets["read_timeout"].kwargs["default"] == "30.0"
    behaviour = HilosHook.get_ui_field_behaviour()
    assert behaviour["relabeling"] == {"host": "Base URL", "password": "API token"}
    assert "login" in behaviour["hidden_fields"]


def test_ui_metadata_has_one_source():
    from airflow_provider_hilos.connection import CONN_FIELDS, UI_FIELD_BEHAVIOUR

    assert HilosHook.get_ui_field_behaviour()["placeholders"] == UI_FIELD_BEHAVIOUR["placeholders"]
    if not AIRFLOW_V3:
        assert list(HilosHook.get_connection_form_widgets()) == list(CONN_FIELDS)
