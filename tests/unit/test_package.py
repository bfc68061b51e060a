"""The package itself: its version, and that importing it is free (DAG files are parsed every few seconds)."""

from __future__ import annotations

import subprocess
import sys

import airflow_provider_hilos


def test_the_version_is_the_one_the_provider_info_reports():
    from airflow_provider_hilos.get_provider_info import get_provider_info

    assert get_provider_info()["versions"] == [airflow_provider_hilos.__version__]


def test_importing_the_package_imports_neither_airflow_nor_http():
    code = "import sys, airflow_provider_hilos; print(sorted(m for m in ('airflow', 'requests') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"
