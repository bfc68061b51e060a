"""The test command's own plumbing (``scripts/dev.py``): how it spreads the suite over pytest-xdist workers."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def _dev():
    spec = importlib.util.spec_from_file_location("dev_script", ROOT / "scripts" / "dev.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_deployment_fixture_starts_once_although_two_workers_share_the_suite(tmp_path: Path):
    """The end-to-end files start an Airflow deployment in a module fixture: the command must keep each file on one
    worker, or every worker starts its own deployment (what ``--dist loadgroup`` did with pytest 9.2)."""
    log = tmp_path / "setups.log"
    (tmp_path / "test_deployment.py").write_text(
        "import os, pytest, time\n"
        "@pytest.fixture(scope='module')\n"
        "def deployment():\n"
        f"    with open({str(log)!r}, 'a') as out: out.write(f'{{os.getpid()}}\\n')\n"
        "    yield\n" + "".join(f"def test_{n}(deployment): time.sleep(0.3)\n" for n in range(4))
    )
    (tmp_path / "test_others.py").write_text(
        "import pytest, time\n@pytest.mark.parametrize('i', range(30))\ndef test_x(i): time.sleep(0.02)\n"
    )
    command = _dev().pytest_command("3", [], workers=2)
    assert command[0] == "pytest"
    done = subprocess.run(
        [sys.executable, "-m", *command, "-q", "-p", "no:randomly", "--rootdir", str(tmp_path), str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "34 passed" in done.stdout
    assert len(log.read_text().split()) == 1, "the module fixture was set up on more than one worker"


def test_the_airflow_2_lane_skips_only_what_cannot_depend_on_the_airflow_version():
    dev = _dev()
    whole = dev.pytest_command("2", [], workers=1)
    assert whole[whole.index("-m") + 1] == "not e2e and not airflow_agnostic"
    assert dev.pytest_command("2", ["-k", "quota"], workers=1)[-3:] == ["not e2e", "-k", "quota"]
    assert "-m" not in dev.pytest_command("3", [], workers=2)


def test_every_module_listed_as_airflow_agnostic_exists():
    """A renamed module would silently lose its mark: the list must name files that are there."""
    from tests.conftest import AIRFLOW_AGNOSTIC

    missing = sorted(path for path in AIRFLOW_AGNOSTIC if not (ROOT / path).is_file())
    assert not missing, f"tests/conftest.py AIRFLOW_AGNOSTIC names modules that do not exist: {missing}"
