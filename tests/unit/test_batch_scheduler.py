"""The scheduler decides what a batch does next on a clock the test owns: nothing here sleeps."""

from __future__ import annotations

from airflow_provider_hilos.batch.scheduler import Action, Scheduler


class FakeClock:
    def __init__(self) -> None:
        self.now_value = 100.0
        self.slept: list[float] = []

    def now(self) -> float:
        return self.now_value

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now_value += seconds


def test_new_rows_go_out_until_the_cap_then_it_waits_for_an_answer():
    scheduler: Scheduler[str] = Scheduler(max_in_flight=2, clock=FakeClock())
    assert scheduler.next_step(more_input=True).action is Action.READ
    scheduler.sent()
    scheduler.sent()
    assert scheduler.next_step(more_input=True) == (Action.WAIT_FOR_ANSWER, None)
    scheduler.answered()
    assert scheduler.next_step(more_input=True).action is Action.READ


def test_a_retry_waits_its_time_while_new_rows_go_out_then_comes_first():
    clock = FakeClock()
    scheduler: Scheduler[str] = Scheduler(max_in_flight=4, clock=clock)
    due = scheduler.retry_later("row-1", delay=2.0)
    assert due == 102.0 and scheduler.waiting == 1
    assert scheduler.next_step(more_input=True).action is Action.READ  # not due yet: the batch goes on
    clock.now_value = 102.0
    assert scheduler.next_step(more_input=True).action is Action.RETRY  # due: before new rows
    assert scheduler.take_retry() == "row-1" and scheduler.waiting == 0


def test_with_no_input_left_it_waits_for_answers_until_the_next_retry_is_due():
    clock = FakeClock()
    scheduler: Scheduler[str] = Scheduler(max_in_flight=4, clock=clock)
    scheduler.sent()
    scheduler.retry_later("late", delay=5.0)
    assert scheduler.next_step(more_input=False) == (Action.WAIT_FOR_ANSWER, 105.0)
    scheduler.answered()
    assert scheduler.next_step(more_input=False) == (Action.SLEEP, 105.0)  # nothing in flight: sleep until due
    clock.sleep(5.0)
    assert scheduler.next_step(more_input=False).action is Action.RETRY
    scheduler.take_retry()
    assert scheduler.next_step(more_input=False).action is Action.DONE


def test_retries_come_back_in_due_order_and_equal_times_keep_their_order():
    clock = FakeClock()
    scheduler: Scheduler[str] = Scheduler(max_in_flight=8, clock=clock)
    for name, delay in (("c", 3.0), ("a", 1.0), ("b1", 2.0), ("b2", 2.0)):
        scheduler.retry_later(name, delay)
    assert scheduler.drain() == ["a", "b1", "b2", "c"]
    assert scheduler.waiting == 0


def test_a_negative_delay_is_due_at_once():
    scheduler: Scheduler[str] = Scheduler(max_in_flight=1, clock=FakeClock())
    scheduler.retry_later("now", delay=-3)
    assert scheduler.next_step(more_input=False).action is Action.RETRY
