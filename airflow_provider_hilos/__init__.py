"""Apache Airflow provider for the Hilos WhatsApp CRM API.

Importing this package is cheap on purpose: DAG files are parsed every few seconds,
so the hook, the operator and the sandbox live in their own modules.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
