"""Renamed: the API's schemas live in :mod:`airflow_provider_hilos.schemas` (this name stays importable)."""

from airflow_provider_hilos.schemas import *  # noqa: F403
