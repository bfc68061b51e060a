"""The documentation's recipe for testing one's own DAGs with the ``hilos_sandbox`` fixture, run word for word.

The four files of "Testing your own DAGs against the sandbox" (``docs/sandbox.rst``) are copied out of the page into
an empty project, and pytest runs there in a fresh process (its own AIRFLOW_HOME, nothing from this suite)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import ROOT

SECTION = "Testing your own DAGs against the sandbox\n-----"


def recipe_files() -> dict[str, str]:
    """The code blocks of the page's section whose first line names a file (``# dags/x.py``)."""
    text = (ROOT / "docs" / "sandbox.rst").read_text(encoding="utf-8")
    section = text.split(SECTION, 1)[1]
    files = {}
    for block in re.findall(r"\.\. code-block:: (?:python|toml)\n\n((?:   .*\n|\n)+)", section):
        code = textwrap.dedent(block).strip("\n") + "\n"
        first, _, rest = code.partition("\n")
        if match := re.fullmatch(r"# ([\w./]+\.(?:py|toml))", first.strip()):
            files[match.group(1)] = rest
    return files


def test_the_docs_recipe_for_testing_your_own_dags_runs_as_written(tmp_path: Path):
    files = recipe_files()
    assert set(files) == {
        "dags/close_conversation.py",
        "tests/conftest.py",
        "tests/test_close_conversation.py",
        "pyproject.toml",
    }
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PYTEST"))}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "1 passed" in done.stdout
