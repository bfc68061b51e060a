"""A local Hilos sandbox: a real HTTP server on loopback that behaves like the Hilos API.

Use it from tests (``with HilosSandbox(conversations=50) as sb: ...``, or the ``hilos_sandbox``
pytest fixture) or from a shell (``hilos-sandbox --port 8765 --token T``). Never imported by the
hook or operator modules: FastAPI stays out of DAG parsing.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FaultConfig", "HilosSandbox", "SandboxState"]


def __getattr__(name: str) -> Any:
    if name == "HilosSandbox":
        from airflow_provider_hilos.sandbox.server import HilosSandbox

        return HilosSandbox
    if name == "FaultConfig":
        from airflow_provider_hilos.sandbox.app import FaultConfig

        return FaultConfig
    if name == "SandboxState":
        from airflow_provider_hilos.sandbox.state import SandboxState

        return SandboxState
    raise AttributeError(name)
