"""A local Hilos sandbox: a real HTTP server on loopback that behaves like the Hilos API.

Install it with ``pip install "airflow-provider-hilos[sandbox]"`` (FastAPI and uvicorn; Airflow 3
already has them). Use it from tests (``with HilosSandbox(conversations=50) as sb: ...``, or the
``hilos_sandbox`` pytest fixture: ``pytest_plugins = ["airflow_provider_hilos.sandbox.pytest_plugin"]``
in your ``conftest.py``) or from a shell (``hilos-sandbox --port 8765 --token T``). Never imported by
the hook or operator modules: FastAPI stays out of DAG parsing.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["FaultConfig", "HilosSandbox", "SandboxState", "main"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``hilos-sandbox`` command (says how to install the extra when it is missing)."""
    try:
        from airflow_provider_hilos.sandbox.server import main as serve
    except ImportError as exc:
        print(
            f'hilos-sandbox needs the sandbox extra ({exc}): pip install "airflow-provider-hilos[sandbox]"',
            file=sys.stderr,
        )
        return 2
    return serve(argv)


def __getattr__(name: str) -> Any:
    if name == "HilosSandbox":
        from airflow_provider_hilos.sandbox.server import HilosSandbox

        return HilosSandbox
    if name == "FaultConfig":
        from airflow_provider_hilos.sandbox.faults import FaultConfig

        return FaultConfig
    if name == "SandboxState":
        from airflow_provider_hilos.sandbox.state import SandboxState

        return SandboxState
    raise AttributeError(name)
