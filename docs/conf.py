"""Sphinx configuration of the provider's documentation site (built by ``python3 scripts/dev.py docs``)."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# autodoc imports the package, which imports Airflow: give it a throwaway home, as the tests do
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="hilos-docs-airflow-home-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")

logging.getLogger("airflow").setLevel(logging.WARNING)  # its start-up notes are not the build's business

import airflow_provider_hilos  # noqa: E402

project = "airflow-provider-hilos"
author = "airflow-provider-hilos developers"
release = version = airflow_provider_hilos.__version__
extensions = ["sphinx.ext.autodoc", "sphinx.ext.intersphinx", "sphinx.ext.viewcode"]
exclude_patterns = ["_build", "_generated/README.md"]
html_theme = "furo"
html_title = f"airflow-provider-hilos {release}"

#: The benchmark pages read their figures from the results files the benchmarks write (never typed by hand).
BENCHMARKS = ("bench_batch", "bench_weather", "bench_export", "bench_sync", "bench_scale", "bench_syncs_page")


def write_benchmark_includes(app: object) -> None:
    import json

    generated = Path(__file__).parent / "_generated"
    generated.mkdir(exist_ok=True)
    for name in BENCHMARKS:
        results = ROOT / "benchmarks" / "results" / f"{name}.json"
        if results.exists():
            data = json.loads(results.read_text())
            machine = data["machine"]
            text = (
                f"Measured {data['measured_at']} on {machine['cpus']} CPUs ({machine['platform']}), Python "
                f"{machine['python']}, with ``{data['command']}``, one run:\n\n"
                ".. code-block:: text\n\n" + "".join(f"   {line}\n" for line in data["report"].splitlines())
            )
        else:
            text = f"No results yet: run the benchmark (``benchmarks/{name}.py``) to write ``{results.name}``.\n"
        (generated / f"{name}.rst").write_text(text)


def setup(app: object) -> None:
    app.connect("builder-inited", write_benchmark_includes)  # type: ignore[attr-defined]
