"""What a benchmark prints is also what it writes: ``benchmarks/results/<name>.json``, the file the
documentation's figures come from (never numbers typed by hand).

Standard library only. The file is written to a temporary name and moved into place, so a benchmark that
dies half-way leaves the previous results as they were.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


class Report:
    """Lines printed as they come, kept for the results file.

    :param name: the benchmark's name (the results file's name).
    :param command: the command that runs it, shown with the figures.
    """

    def __init__(self, name: str, command: str) -> None:
        self.name = name
        self.command = command
        self.lines: list[str] = []
        self.figures: dict[str, Any] = {}

    def line(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.extend(text.splitlines() or [""])

    def write(self, **figures: Any) -> Path:
        """Write the results file: the printed report, the figures, when and where they were measured."""
        self.figures.update(figures)
        RESULTS.mkdir(exist_ok=True)
        document = {
            "benchmark": self.name,
            "command": self.command,
            "measured_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "platform": platform.machine()},
            "report": "\n".join(self.lines).strip("\n"),
            "figures": self.figures,
        }
        target = RESULTS / f"{self.name}.json"
        handle, temporary = tempfile.mkstemp(dir=RESULTS, prefix=f".{self.name}.", suffix=".tmp")
        with os.fdopen(handle, "w") as out:
            json.dump(document, out, indent=2)
            out.write("\n")
        os.replace(temporary, target)
        print(f"results written to {target.relative_to(RESULTS.parent.parent)}", flush=True)
        return target
