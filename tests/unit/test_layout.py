"""The tests mirror the package: every module has its own test file (tests/unit/test_<package path>.py)."""

from __future__ import annotations

from tests.conftest import ROOT


def test_every_module_of_the_package_has_a_test_file():
    package = ROOT / "airflow_provider_hilos"
    expected = set()
    for module in package.rglob("*.py"):
        parts = module.relative_to(package).with_suffix("").parts
        if parts[-1] == "__init__" and len(parts) > 1:
            continue  # a subpackage's __init__ re-exports its modules, which have their own files
        name = "_".join(part.lstrip("_") for part in parts if part != "__init__") or "package"
        expected.add(f"test_{name}.py")
    present = {path.name for path in (ROOT / "tests" / "unit").glob("test_*.py")}
    assert sorted(expected - present) == []
