"""pytest fixtures for testing DAGs against the Hilos sandbox (registered as a pytest plugin).

``hilos_sandbox`` starts a fresh sandbox for one test and stops it afterwards; it also points
``AIRFLOW_CONN_HILOS_DEFAULT`` at it for the duration of the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from airflow_provider_hilos.sandbox.server import HilosSandbox


@pytest.fixture
def hilos_sandbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[HilosSandbox]:
    """A running Hilos sandbox (50 conversations, seed 7), with ``hilos_default`` pointing at it."""
    from airflow_provider_hilos.sandbox.server import HilosSandbox

    with HilosSandbox(conversations=50, seed=7) as sandbox:
        monkeypatch.setenv("AIRFLOW_CONN_HILOS_DEFAULT", sandbox.connection_json())
        yield sandbox
