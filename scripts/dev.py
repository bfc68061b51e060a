#!/usr/bin/env python3
"""Bootstrap and run the project with nothing but Python (>= 3.11) on the machine.

    python3 scripts/dev.py demo    # the CRM-sync example DAG end to end against a local Hilos sandbox
    python3 scripts/dev.py test    # everything CI checks: lint, docs, both Airflows' suites, the wheel with pip
    python3 scripts/dev.py test --fast     # the tests that need no server of their own, on Airflow 3 (< 90 s)
    python3 scripts/dev.py test --airflow 2 [pytest args]   # one Airflow only (3 or 2), e.g. -k quota
    python3 scripts/dev.py docs    # build the documentation site into docs/_build/html (warnings are errors)
    python3 scripts/dev.py bench   # the bulk-update benchmark (prints a table; a few minutes)
    python3 scripts/dev.py bench-weather   # the batch under throttling, outages and a crash (about 2 minutes)
    python3 scripts/dev.py bench-export    # exporting 100,000 conversations: requests, memory, quota used
    python3 scripts/dev.py bench-sync      # day 2 of a 50,000-conversation sync vs a full push; a 100,000-row plan
    python3 scripts/dev.py bench-scale     # a 1,000,000-row plan in bounded memory; the listing at the quota
    python3 scripts/dev.py bench-syncs-page   # the "Hilos syncs" page for 50 syncs x 100 runs (under a second)

Finds ``uv`` (or installs a pinned one into ``.bootstrap/``), syncs the locked environment
(``uv sync --locked``) with this Python, then runs the command inside it.
Standard library only: this file runs before any dependency exists.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import venv
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UV_VERSION = "0.13.9"
BOOTSTRAP = ROOT / ".bootstrap"
CHROMIUM = "/usr/bin/chromium"
#: pytest's exit code when it collected no test: a failure here (a wrong path or marker must not pass CI)
PYTEST_NO_TESTS = 5
#: The tests that need no server of their own (no Airflow deployment, PostgreSQL, Redis or browser).
FAST = ["-m", "not e2e and not slow"]


def find_uv() -> str:
    """A ``uv`` executable: the one on PATH, or a pinned copy installed into ``.bootstrap/``."""
    if found := shutil.which("uv"):
        return found
    uv = BOOTSTRAP / "uv-venv" / "bin" / "uv"
    if uv.exists():
        return str(uv)
    print(f"dev.py: installing uv {UV_VERSION} into {BOOTSTRAP} ...", flush=True)
    try:
        venv.EnvBuilder(with_pip=True, clear=True).create(BOOTSTRAP / "uv-venv")
        pip = [str(BOOTSTRAP / "uv-venv" / "bin" / "python"), "-m", "pip"]
    except Exception as exc:  # e.g. Debian's python3 without python3-venv
        print(f"dev.py: venv unavailable ({exc}); installing uv with pip --target", flush=True)
        target = BOOTSTRAP / "uv-target"
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(target), f"uv=={UV_VERSION}"],
            check=True,
        )
        return str(target / "bin" / "uv")
    subprocess.run([*pip, "install", "--quiet", "--disable-pip-version-check", f"uv=={UV_VERSION}"], check=True)
    return str(uv)


def ensure_test_services() -> None:
    """Debian packages the tests drive, installed when missing: Chromium (the browser end-to-end tests),
    Redis and PostgreSQL (the CeleryExecutor deployment). The tests start and stop the servers themselves,
    on loopback; the packages' own services are not used."""
    missing = [package for package, present in TEST_PACKAGES.items() if not present()]
    if not missing:
        return
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        print(
            f"dev.py: Debian packages {', '.join(missing)} are missing and cannot be installed here (needs root "
            "and apt-get); install them, or the end-to-end tests will fail",
            file=sys.stderr,
        )
        return
    print(f"dev.py: installing Debian's {', '.join(missing)} for the end-to-end tests ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([apt, "update", "-qq"], check=True, env=env)
    subprocess.run([apt, "install", "-y", "-qq", *missing], check=True, env=env)
    for server in ("redis-server", "postgresql"):  # the packages start their own; the tests start theirs
        if server in missing and shutil.which("service"):
            subprocess.run(["service", server, "stop"], env=env, capture_output=True)


#: Debian package -> is it installed (by the file the tests use)
TEST_PACKAGES = {
    "chromium": lambda: Path(CHROMIUM).exists(),
    "redis-server": lambda: Path("/usr/bin/redis-server").exists(),
    "postgresql": lambda: bool(list(Path("/usr/lib/postgresql").glob("*/bin/initdb"))),
}


def uv_env(airflow: str = "3") -> dict[str, str]:
    env = dict(os.environ)
    env["UV_PROJECT_ENVIRONMENT"] = str(ROOT / AIRFLOWS[airflow]["venv"])
    env.setdefault("UV_PYTHON", sys.executable)  # use this Python; never download one
    env.setdefault("UV_PYTHON_DOWNLOADS", "never")
    env.pop("VIRTUAL_ENV", None)
    return env


#: Each Airflow the suite runs on: its uv dependency groups and its environment (one uv.lock holds both).
AIRFLOWS = {
    "3": {"groups": ["--extra", "sandbox"], "venv": ".venv"},  # and the default groups: dev, docs, airflow3, ...
    "2": {
        "groups": ["--extra", "sandbox", "--no-default-groups", "--group", "dev", "--group", "airflow2"],
        "venv": ".venv-airflow2",
    },
}


def sync(uv: str, airflow: str = "3") -> None:
    spec = AIRFLOWS[airflow]
    subprocess.run([uv, "sync", "--locked", "--quiet", *spec["groups"]], cwd=ROOT, env=uv_env(airflow), check=True)


def in_env(uv: str, *cmd: str, airflow: str = "3", log: Path | None = None) -> int:
    """Run ``cmd`` in an Airflow's locked environment; its output goes to ``log`` when given."""
    spec = AIRFLOWS[airflow]
    full = [uv, "run", "--locked", "--no-sync", *spec["groups"], *cmd]
    if log is None:
        return subprocess.run(full, cwd=ROOT, env=uv_env(airflow)).returncode
    with log.open("a") as out:
        return subprocess.run(full, cwd=ROOT, env=uv_env(airflow), stdout=out, stderr=subprocess.STDOUT).returncode


def pytest_command(airflow: str, args: list[str], *, workers: int, by_file: bool = True) -> list[str]:
    """pytest on one Airflow: the end-to-end suite drives Airflow 3's REST API and UI, so Airflow 2 skips it; in the
    whole suite, the tests that cannot depend on the Airflow version (marked ``airflow_agnostic``: the sandbox, the
    pacer, the published documents, the transport under weather, ...) run once, on Airflow 3. ``by_file=False``
    (the fast tier: no deployment in it) spreads single tests over the workers, for the shortest wall time."""
    cmd = ["pytest", "-p", "no:cacheprovider"]
    if workers > 1:
        # each test file on one worker, so a deployment (a module fixture) starts once; not loadgroup: with pytest
        # 9.2 its xdist_group marks are silently ignored (pytest-xdist#1386) and both workers started every deployment.
        # Files in collection order (not the most tests first): the long end-to-end files start first, not last.
        cmd += ["-n", str(workers), *(["--dist", "loadfile", "--no-loadscope-reorder"] if by_file else [])]
    if airflow == "2" and not args:  # the whole suite
        cmd += ["-m", "not e2e and not airflow_agnostic"]
    elif airflow == "2" and not any(arg.startswith("-m") for arg in args):
        cmd += ["-m", "not e2e"]
    return cmd + args


def run_tests(
    uv: str, airflow: str, args: list[str], *, workers: int = 1, by_file: bool = True, log: Path | None = None
) -> int:
    code = in_env(uv, *pytest_command(airflow, args, workers=workers, by_file=by_file), airflow=airflow, log=log)
    if code == PYTEST_NO_TESTS:
        message = f"dev.py: pytest collected no tests on Airflow {airflow}; that is a failure here\n"
        if log is None:
            print(message, end="", file=sys.stderr)
        else:
            with log.open("a") as out:
                out.write(message)
        return 1
    return code


def lint(uv: str, log: Path | None = None) -> int:
    """ruff (lint and format) over the tree, mypy over the package: CI fails on either."""
    codes = [
        in_env(uv, "ruff", "check", ".", log=log),
        in_env(uv, "ruff", "format", "--check", ".", log=log),
        in_env(uv, "mypy", log=log),
    ]
    return max(codes)


def build_docs(uv: str, log: Path | None = None) -> int:
    """The documentation site: Sphinx, warnings as errors (a broken reference or include fails the build)."""
    out = ROOT / "docs" / "_build" / "html"
    return in_env(uv, "sphinx-build", "-W", "--keep-going", "-q", "-b", "html", "docs", str(out), log=log)


class Lane(threading.Thread):
    """Steps run one after another in a thread; their output goes to a log file, printed when the lane ends."""

    def __init__(self, name: str, steps: list[tuple[str, Callable[[Path], int]]], folder: Path) -> None:
        super().__init__(name=name, daemon=True)
        self.steps = steps
        self.log = folder / f"{name}.log"
        self.codes: dict[str, int] = {}
        self.seconds: dict[str, float] = {}

    def run(self) -> None:
        for label, step in self.steps:
            started = time.monotonic()
            with self.log.open("a") as out:
                out.write(f"\n===== {label} =====\n")
            try:
                self.codes[label] = step(self.log)
            except Exception as exc:  # a step that crashes fails the lane, and says why
                with self.log.open("a") as out:
                    out.write(f"dev.py: {label} crashed: {exc!r}\n")
                self.codes[label] = 1
            self.seconds[label] = time.monotonic() - started
            verdict = "passed" if self.codes[label] == 0 else "FAILED"
            print(f"dev.py: {label}: {verdict} in {self.seconds[label]:.0f} s", flush=True)


def whole_test_command(uv: str) -> int:
    """What CI runs: the Debian packages and both environments, then three lanes at once on the machine's cores
    (the checks, Airflow 3's suite with the end-to-end tests, Airflow 2's suite); each lane's output is printed
    when it ends, and a summary with every step's time last."""
    started = time.monotonic()
    services = threading.Thread(target=ensure_test_services, name="debian-packages")
    services.start()  # apt downloads while uv syncs
    for airflow in AIRFLOWS:
        sync(uv, airflow)
    folder = Path(tempfile.mkdtemp(prefix="hilos-test-command-"))

    def packages_ready(log: Path) -> int:
        services.join()  # the end-to-end tests drive Chromium, PostgreSQL and Redis; the sync tests PostgreSQL
        return 0

    lanes = [
        Lane(
            "checks",
            [
                ("ruff and mypy", lambda log: lint(uv, log)),
                ("docs", lambda log: build_docs(uv, log)),
                ("the wheel with pip", lambda log: check_wheel(uv, log)),
            ],
            folder,
        ),
        Lane(
            "airflow3",
            [
                ("Debian packages", packages_ready),
                ("Airflow 3.3.x suite", lambda log: run_tests(uv, "3", [], workers=2, log=log)),
            ],
            folder,
        ),
        Lane(
            "airflow2",
            [
                ("Debian packages (for Airflow 2)", packages_ready),  # the sync's PostgreSQL test
                ("Airflow 2.11.x suite", lambda log: run_tests(uv, "2", [], log=log)),
            ],
            folder,
        ),
    ]
    for lane in lanes:
        lane.start()
    for lane in lanes:
        lane.join()
    for lane in lanes:
        print(lane.log.read_text(errors="replace"), flush=True)
    codes = {label: code for lane in lanes for label, code in lane.codes.items()}
    seconds = {label: spent for lane in lanes for label, spent in lane.seconds.items()}
    summary = ", ".join(
        f"{label}: {'passed' if code == 0 else f'FAILED (exit {code})'} ({seconds[label]:.0f} s)"
        for label, code in codes.items()
    )
    print(f"dev.py: {summary}; wall time {time.monotonic() - started:.0f} s", flush=True)
    shutil.rmtree(folder, ignore_errors=True)
    return max(codes.values())


def check_wheel(uv: str, log: Path | None = None) -> int:
    """Build the wheel and sdist, install the wheel with plain pip (no uv) into a fresh venv on Airflow 3.3
    and on 2.11 (pinned to the lock's versions), and check that Airflow lists the provider and its hook."""
    with tempfile.TemporaryDirectory(prefix="hilos-wheel-") as tmp:
        work = Path(tmp)
        subprocess.run([uv, "build", "--quiet", "--out-dir", str(work / "dist")], cwd=ROOT, check=True, env=uv_env())
        (wheel,) = (work / "dist").glob("*.whl")
        (sdist,) = (work / "dist").glob("*.tar.gz")
        with tarfile.open(sdist) as archive:
            names = archive.getnames()
        missing = [
            f
            for f in ("pyproject.toml", "README.md", "airflow_provider_hilos/py.typed")
            if not any(n.endswith(f) for n in names)
        ]
        if missing:
            say(log, f"dev.py: the sdist lacks {missing}")
            return 1
        for airflow in ("3", "2"):
            spec, venv_dir = AIRFLOWS[airflow], work / f"venv-airflow{airflow}"
            groups = ["--no-default-groups", "--group", "airflow3" if airflow == "3" else "airflow2"]
            constraints = work / f"constraints-{airflow}.txt"
            exported = subprocess.run(
                [uv, "export", "--locked", "--no-hashes", "--no-emit-project", *groups, "--format", "requirements.txt"],
                cwd=ROOT,
                env=uv_env(airflow),
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            constraints.write_text(exported)
            try:
                venv.EnvBuilder(with_pip=True).create(venv_dir)
            except Exception:  # a Python without ensurepip: let uv make the venv, pip still installs
                subprocess.run([uv, "venv", "--seed", "--python", sys.executable, str(venv_dir)], check=True)
            started = time.monotonic()
            pip = subprocess.run(
                [
                    str(venv_dir / "bin" / "python"),
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    str(wheel),
                    "-c",
                    str(constraints),
                ],
                capture_output=True,
                text=True,
            )  # its output only matters when it fails (some machines' pip configs warn on every package)
            if pip.returncode != 0:
                say(log, pip.stdout[-3000:] + pip.stderr[-3000:])
                return pip.returncode
            env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
            env["AIRFLOW_HOME"] = str(work / f"home-airflow{airflow}")
            listed = {}
            for what in ("list", "hooks"):
                out = subprocess.run(
                    [str(venv_dir / "bin" / "airflow"), "providers", what, "-o", "json"],
                    env=env,
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                listed[what] = json.loads(out[out.index("[") :])
            provider = [p for p in listed["list"] if p["package_name"] == "airflow-provider-hilos"]
            hook = [h for h in listed["hooks"] if h.get("connection_type") == "hilos"]
            ok = bool(provider) and bool(hook) and hook[0]["class"] == "airflow_provider_hilos.hooks.hilos.HilosHook"
            say(
                log,
                f"dev.py: Airflow {airflow} ({spec['venv']} pins), {wheel.name} installed by pip in "
                f"{time.monotonic() - started:.0f} s: providers list {'shows' if provider else 'LACKS'} it, "
                f"providers hooks {'shows' if hook else 'LACKS'} the hilos hook",
            )
            if not ok:
                return 1
    return 0


def say(log: Path | None, text: str) -> None:
    """A line for the person running the command: to ``log`` when the step has one, else to stdout."""
    if log is None:
        print(text, flush=True)
    else:
        with log.open("a") as out:
            out.write(text + "\n")


def main(argv: list[str]) -> int:
    if sys.version_info < (3, 11):  # noqa: UP036 - this file runs on whatever python3 the machine has
        print("dev.py: Python >= 3.11 is required", file=sys.stderr)
        return 2
    if not argv or argv[0] not in (
        "test",
        "docs",
        "demo",
        "bench",
        "bench-weather",
        "bench-export",
        "bench-sync",
        "bench-scale",
        "bench-syncs-page",
    ):
        print(__doc__, file=sys.stderr)
        return 2
    uv = find_uv()
    if argv[0] == "test":
        args = argv[1:]
        if not args:
            return whole_test_command(uv)
        if args[:1] == ["--fast"]:
            started = time.monotonic()
            sync(uv)
            code = run_tests(uv, "3", [*FAST, *args[1:]], workers=2, by_file=False)
            print(f"dev.py: the fast tier took {time.monotonic() - started:.0f} s", flush=True)
            return code
        airflows = ["3", "2"]
        if args[:1] == ["--airflow"] and len(args) > 1 and args[1] in AIRFLOWS:
            airflows, args = [args[1]], args[2:]
        ensure_test_services()
        codes = {}
        for airflow in airflows:
            sync(uv, airflow)
            codes[airflow] = run_tests(uv, airflow, args)
        return max(codes.values())
    sync(uv)
    if argv[0] == "docs":
        code = build_docs(uv)
        print(f"dev.py: docs {'built in' if code == 0 else 'FAILED; see'} {ROOT / 'docs' / '_build' / 'html'}")
        return code
    if argv[0] == "demo":
        return in_env(uv, "python", "scripts/demo.py", *argv[1:])
    script = {
        "bench-weather": "benchmarks/bench_weather.py",
        "bench-export": "benchmarks/bench_export.py",
        "bench-sync": "benchmarks/bench_sync.py",
        "bench-scale": "benchmarks/bench_scale.py",
        "bench-syncs-page": "benchmarks/bench_syncs_page.py",
    }.get(argv[0], "benchmarks/bench_batch.py")
    return in_env(uv, "python", script, *argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
