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
    from airflow.providers.common.compat.sdk import TaskDeferred

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


def _throttle_from(monkeypatch, sb, request_number: int, retry_after: float) -> None:
    """From the ``request_number``-th request the task sends, the sandbox answers every request 429 with
    ``Retry-After: retry_after`` (a quota exhausted part-way through the task)."""
    import itertools

    from airflow_provider_hilos.transport import HilosTransport

    attempt, numbers = HilosTransport.attempt, itertools.count(1)

    def counted(self, *args, **kwargs):
        if next(numbers) == request_number:
            sb.set_faults(throttle_rate=1.0, retry_after_seconds=retry_after)
        return attempt(self, *args, **kwargs)

    monkeypatch.setattr(HilosTransport, "attempt", counted)


def _deferred(call):
    from airflow.providers.common.compat.sdk import TaskDeferred

    with pytest.raises(TaskDeferred) as deferred:
        call()
    _, trigger_kwargs = deferred.value.trigger.serialize()
    return trigger_kwargs, deferred.value.kwargs


def test_a_long_retry_after_in_a_batch_defers_for_that_wait_then_resumes_after_the_rows_applied(sb, monkeypatch):
    import time

    from tests.conftest import TEST_TOKEN, FakeTI
    from tests.helpers import patches

    _throttle_from(monkeypatch, sb, 11, retry_after=120)
    rows, task = _deferrable_batch(sb)
    ti = FakeTI(task_id="batch")
    started = time.monotonic()
    trigger_kwargs, kwargs = _deferred(lambda: task.execute({"ti": ti}))
    assert time.monotonic() - started < 30  # the worker did not hold the 120 s
    assert 120 <= trigger_kwargs["not_before"] - kwargs["deferred_at"] <= 121  # the wait the API asked for
    assert "Retry-After" in trigger_kwargs["reason"] and TEST_TOKEN not in repr(trigger_kwargs) + repr(kwargs)
    before = patches(sb)
    landed_before = {p["path"] for p in before if p["status"] == 200}
    assert 6 <= len(landed_before) <= 10 and len(before) <= 10 + 2 * 4  # it stopped at the first long wait
    sb.set_faults()  # the quota is back: the trigger fires "ready"
    sb.clear_requests()
    result = task.execute_complete({"ti": ti}, {"status": "ready"}, **kwargs)
    after = patches(sb)
    assert result["updated"] + result["already_applied"] == 40 and result["already_applied"] == len(landed_before)
    assert not landed_before & {p["path"] for p in after}  # no row applied before the wait is sent again
    assert len(after) == 40 - len(landed_before)
    assert all(sb.conversation(r["conversation_id"])["status"] == "CLOSED" for r in rows)


def test_without_deferral_a_long_retry_after_is_waited_in_the_worker_as_before(sb, monkeypatch):
    from tests.conftest import FakeTI

    waits: list[float] = []

    def recorded(self, attempt, retry_after=None):
        waits.append(retry_after)
        sb.set_faults()
        return 0

    monkeypatch.setattr("airflow_provider_hilos.hooks.hilos.HilosHook.backoff_delay", recorded)
    _throttle_from(monkeypatch, sb, 3, retry_after=120)
    _, task = _deferrable_batch(sb)
    task.deferrable = False
    assert task.execute({"ti": FakeTI(task_id="batch")})["updated"] == 40
    assert waits and set(waits) == {120}


@pytest.mark.parametrize("kind", ["single", "export", "sync"])
def test_a_long_retry_after_on_a_single_update_or_a_listing_defers_at_once(sb, monkeypatch, tmp_path, kind):
    from airflow_provider_hilos.operators.conversation import ConversationUpdateOperator
    from airflow_provider_hilos.operators.export import ConversationExportOperator
    from airflow_provider_hilos.operators.sync import ConversationSyncOperator
    from tests.conftest import FakeTI
    from tests.helpers import patches

    cid = sb.conversation_ids()[0]
    task = {
        "single": lambda: ConversationUpdateOperator(
            task_id="one", conversation_id=cid, payload={"status": "CLOSED"}, deferrable=True
        ),
        "export": lambda: ConversationExportOperator(
            task_id="export", output_path=str(tmp_path / "all.jsonl"), deferrable=True, page_size=50
        ),
        "sync": lambda: ConversationSyncOperator(
            task_id="sync",
            state=[{"conversation_id": cid, "status": "CLOSED"}],
            report_path=str(tmp_path / "report.jsonl"),
            deferrable=True,
        ),
    }[kind]()
    ti = FakeTI(task_id=task.task_id)
    sb.set_faults(throttle_rate=1.0, retry_after_seconds=300)
    trigger_kwargs, kwargs = _deferred(lambda: task.execute({"ti": ti}))
    assert 300 <= trigger_kwargs["not_before"] - kwargs["deferred_at"] <= 301
    assert len(sb.requests()) == 1  # one answer asked for 300 s: no retry held the worker
    sb.set_faults()
    sb.clear_requests()
    task.execute_complete({"ti": ti}, {"status": "ready"}, **kwargs)
    if kind == "export":
        assert len((tmp_path / "all.jsonl").read_text().splitlines()) == 400
    else:
        assert [p["status"] for p in patches(sb)] == [200] and sb.conversation(cid)["status"] == "CLOSED"


def test_a_sync_throttled_mid_apply_defers_and_its_resumed_run_sends_only_what_is_left(sb, monkeypatch, tmp_path):
    from airflow_provider_hilos.operators.sync import ConversationSyncOperator
    from tests.conftest import FakeTI
    from tests.helpers import patches

    ids = sb.conversation_ids()[:40]
    for cid in ids:
        sb.state.update(cid, {"status": "NEW"}, partial=True)
    task = ConversationSyncOperator(
        task_id="sync",
        state=[{"conversation_id": cid, "status": "CLOSED"} for cid in ids],
        report_path=str(tmp_path / "report.jsonl"),
        page_size=100,
        max_concurrency=4,
        deferrable=True,
    )
    ti = FakeTI(task_id="sync")
    _throttle_from(monkeypatch, sb, 4 + 11, retry_after=120)  # 4 pages read, then 10 updates land
    trigger_kwargs, kwargs = _deferred(lambda: task.execute({"ti": ti}))
    assert 120 <= trigger_kwargs["not_before"] - kwargs["deferred_at"] <= 121
    landed = {p["path"] for p in patches(sb) if p["status"] == 200}
    assert 6 <= len(landed) <= 10
    sb.set_faults()
    sb.clear_requests()
    result = task.execute_complete({"ti": ti}, {"status": "ready"}, **kwargs)
    again = [p["path"] for p in patches(sb)]
    assert not landed & set(again) and len(again) == 40 - len(landed)  # what landed is now unchanged
    assert (result["unchanged"], result["updated"], result["failed"]) == (len(landed), 40 - len(landed), 0)
    assert all(sb.conversation(cid)["status"] == "CLOSED" for cid in ids)
