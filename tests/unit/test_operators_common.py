"""What the operators share: flags from templates, default checkpoint folders."""

from __future__ import annotations

import pytest

from airflow_provider_hilos.exceptions import HilosValidationError
from airflow_provider_hilos.operators._common import default_checkpoint_root, parse_flag


@pytest.mark.parametrize(
    ("value", "expected"), [(True, True), ("True", True), (" yes ", True), ("0", False), (False, False)]
)
def test_flags_a_template_renders_are_read(value, expected):
    assert parse_flag(value, field="dry_run") is expected


def test_anything_else_is_refused_naming_the_argument():
    with pytest.raises(HilosValidationError, match="dry_run: must be True or False, got str 'perhaps'"):
        parse_flag("perhaps", field="dry_run")


def test_checkpoints_go_next_to_the_report_or_under_airflow_home(monkeypatch, tmp_path):
    assert str(default_checkpoint_root(str(tmp_path / "r" / "report.jsonl"))) == str(
        tmp_path / "r" / "_hilos_checkpoints"
    )
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "home"))
    assert str(default_checkpoint_root(None)) == str(tmp_path / "home" / "hilos_checkpoints")


def test_every_engine_operator_stops_its_engine_and_closes_its_checkpoint_on_kill():
    from airflow_provider_hilos.operators._common import KILL_GRACE_SECONDS, EngineStopper
    from airflow_provider_hilos.operators.conversation import ConversationBatchUpdateOperator
    from airflow_provider_hilos.operators.sync import ConversationSyncOperator

    assert issubclass(ConversationBatchUpdateOperator, EngineStopper)
    assert issubclass(ConversationSyncOperator, EngineStopper)
    calls: list[tuple] = []

    class Engine:
        def stop(self, reason, message):
            calls.append(("stop", reason.value))

        def wait_idle(self, timeout):
            calls.append(("wait", timeout))

    class Closing:
        def close(self):
            calls.append(("close",))

    stopper = EngineStopper()
    stopper.on_kill()  # not started yet: nothing to stop
    assert calls == []
    stopper._keep_engine(Engine())  # type: ignore[arg-type]
    stopper._checkpoint = Closing()  # type: ignore[assignment]
    stopper.on_kill()
    assert calls == [("stop", "killed"), ("wait", KILL_GRACE_SECONDS), ("close",)]


def test_a_task_checkpoint_is_keyed_by_its_task_instance(tmp_path):
    from airflow_provider_hilos.operators._common import task_checkpoint
    from tests.conftest import FakeTI

    assert task_checkpoint({"ti": FakeTI()}, resume=False, checkpoint_path=None, report_path=None) is None
    one = task_checkpoint({"ti": FakeTI("r1")}, resume=True, checkpoint_path=str(tmp_path), report_path=None)
    two = task_checkpoint({"ti": FakeTI("r2")}, resume=True, checkpoint_path=str(tmp_path), report_path=None)
    beside = task_checkpoint(
        {"ti": FakeTI("r1")}, resume=True, checkpoint_path=None, report_path=str(tmp_path / "out" / "report.jsonl")
    )
    assert one is not None and two is not None and beside is not None
    assert one.folder != two.folder and str(beside.folder).startswith(str(tmp_path / "out" / "_hilos_checkpoints"))
