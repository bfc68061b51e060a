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


def _deferrable_batch(sb, **kwargs):
    from airflow_provider_hilos.operators.conversation import ConversationBatchUpdateOperator

    rows = [{"conversation_id": cid, "status": "CLOSED"} for cid in sb.conversation_ids()[:40]]
    return rows, ConversationBatchUpdateOperator(
        task_id="batch", updates=rows, deferrable=True, max_concurrency=4, progress_interval=3600, **kwargs
    )


def test_a_deferrable_batch_meeting_an_outage_defers_then_resumes_and_lands_everything(sb, monkeypatch):
    from airflow.exceptions import TaskDeferred

    from tests.conftest import TEST_TOKEN, FakeTI
    from tests.helpers import patches

    monkeypatch.setattr("airflow_provider_hilos.hooks.hilos.HilosHook.backoff_delay", lambda self, attempt, ra=None: 0)
    sb.set_faults(error_rate=1.0, error_statuses=[503], retry_after_seconds=0)
    rows, task = _deferrable_batch(sb)
    ti = FakeTI(task_id="batch")
    try:
        task.execute({"ti": ti})
    except TaskDeferred as deferred:
        trigger, method, kwargs = deferred.trigger, deferred.method_name, deferred.kwargs
    else:
        raise AssertionError("the batch did not defer")
    classpath, trigger_kwargs = trigger.serialize()
    assert classpath.endswith("HilosAvailableTrigger") and method == "execute_complete"
    assert trigger_kwargs["hilos_conn_id"] == "hilos_default"
    assert 15 <= trigger_kwargs["not_before"] - kwargs["deferred_at"] <= 16  # the breaker's first cool-down
    assert TEST_TOKEN not in repr(trigger_kwargs) + repr(kwargs)
    sb.set_faults()  # the API is back: the triggerer fires "ready", the task resumes
    result = task.execute_complete({"ti": ti}, {"status": "ready"}, **kwargs)
    assert result["updated"] == 40 and result["failed"] == 0
    landed = [p for p in patches(sb) if p["status"] == 200]
    assert len(landed) == 40 and all(sb.conversation(r["conversation_id"])["status"] == "CLOSED" for r in rows)


def test_a_short_wait_is_waited_out_in_the_worker_and_the_total_is_bounded(sb, monkeypatch):
    from airflow_provider_hilos.exceptions import HilosAPIUnavailableError
    from tests.conftest import FakeTI

    monkeypatch.setattr("airflow_provider_hilos.hooks.hilos.HilosHook.backoff_delay", lambda self, attempt, ra=None: 0)
    sb.set_faults(error_rate=1.0, error_statuses=[503], retry_after_seconds=0)
    waits: list[float] = []

    def wait_then_recover(seconds: float) -> None:
        waits.append(seconds)
        sb.set_faults()

    monkeypatch.setattr("airflow_provider_hilos.operators._common.time.sleep", wait_then_recover)
    _, task = _deferrable_batch(sb, defer_after_seconds=60)
    assert task.execute({"ti": FakeTI(task_id="batch")})["updated"] == 40
    assert len(waits) == 1 and 15 <= waits[0] <= 16
    sb.set_faults(error_rate=1.0, error_statuses=[503], retry_after_seconds=0)
    _, bounded = _deferrable_batch(sb, max_wait=5)
    with pytest.raises(HilosAPIUnavailableError, match=r"would pass max_wait=5 s"):
        bounded.execute({"ti": FakeTI(task_id="batch")})


def test_coming_back_from_the_triggerer_with_a_timeout_or_a_refusal_fails_clearly(sb):
    from airflow_provider_hilos.exceptions import HilosAPIUnavailableError, HilosConfigurationError
    from tests.conftest import FakeTI

    _, task = _deferrable_batch(sb, max_wait=600)
    with pytest.raises(HilosAPIUnavailableError, match=r"still unavailable after \d+ s of waiting \(max_wait=600 s\)"):
        task.execute_complete({"ti": FakeTI()}, {"status": "timeout"}, waited=590.0, deferred_at=0.0)
    with pytest.raises(HilosConfigurationError, match="refused the probe"):
        task.execute_complete({"ti": FakeTI()}, {"status": "error", "message": "the token was rejected"})


def test_deferrable_follows_airflows_default_and_waits_are_checked(monkeypatch):
    from airflow_provider_hilos.operators.export import ConversationExportOperator
    from airflow_provider_hilos.operators.sync import ConversationSyncOperator

    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "True")
    assert ConversationExportOperator(task_id="e", output_path="/tmp/x.csv").deferrable is True
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "False")
    assert ConversationSyncOperator(task_id="s", state=[]).deferrable is False
    with pytest.raises(ValueError, match="max_wait='1h' must be a number of seconds"):
        ConversationSyncOperator(task_id="s", state=[], max_wait="1h")
