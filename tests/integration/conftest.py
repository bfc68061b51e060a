"""Integration tests run Airflow itself (DAG runs, the CLI, subprocesses): marked ``slow``, outside the fast tier."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.path):
            item.add_marker(pytest.mark.slow)
