"""Airflow 2.11 and 3.x from one code base: no import that only one of them has."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import EXAMPLE_DAGS, ROOT

#: Modules that exist on Airflow 3 only; the package reaches Airflow through common-compat instead.
AIRFLOW_3_ONLY = ("airflow.sdk",)
#: Modules for a feature only Airflow 3 has (Human-in-the-loop, common-compat has no bridge for it): they may import
#: Airflow-3-only modules inside their functions, which run only once they probed that the feature is there
#: (``can_ask()``, ``parks()``), never at module level.
FEATURE_PROBES = ("airflow_provider_hilos/sync/approval.py",)


def runtime_airflow_imports(path: Path, root: Path = ROOT) -> list[str]:
    """``module:line`` for each Airflow-3-only import outside ``if TYPE_CHECKING:`` (paths relative to ``root``)."""
    tree = ast.parse(path.read_text())
    type_checking = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for node in ast.walk(block)
    }
    if str(path.relative_to(root)) in FEATURE_PROBES:  # imports inside functions run only after a probe
        type_checking |= {
            id(node)
            for block in ast.walk(tree)
            if isinstance(block, ast.FunctionDef | ast.AsyncFunctionDef)
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
