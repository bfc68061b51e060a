"""The pacer and the circuit breaker, on a simulated clock."""

from __future__ import annotations

import heapq
import itertools
import random
from collections import deque
from dataclasses import dataclass

import pytest

from airflow_provider_hilos.pacing import AdaptivePacer, CircuitBreaker


@dataclass
class Run:
    wall: float
    rate: float
    requests: int
    throttled: int
    done: int
    pacer: AdaptivePacer

    @property
    def share_429(self) -> float:
        return self.throttled / self.requests


def simulate(
    rows: int = 2000,
    workers: int = 16,
    latency: float = 0.02,
    limit: float | None = None,
    burst: float = 10,
    random_429: float = 0.0,
    retry_after: float = 1.0,
    ceiling: float | None = None,
    seed: int = 1,
    outage: tuple[float, float] | None = None,
) -> Run:
    """Play ``rows`` updates through an :class:`AdaptivePacer` on virtual time.

    :param limit: the server's token bucket (requests per second), with ``burst`` tokens; or ``None``.
    :param random_429: the share of requests the server answers 429 at random.
    :param outage: ``(start, end)`` seconds during which the server answers every request 429.
    """
    now = [0.0]
    slept = [0.0]
    pacer = AdaptivePacer(ceiling, clock=lambda: now[0], sleep=lambda s: slept.__setitem__(0, s))
    rng = random.Random(seed)
    tokens, refilled = float(burst), 0.0
    todo = deque((number, 1) for number in range(rows))
    waiting: list[tuple[float, int, int]] = []  # retries: (not before, row, attempt)
    events: list[tuple[float, int, str, tuple]] = []
    counter = 0
    requests = throttled = done = 0
    end = 0.0

    def schedule(at: float, kind: str, data: tuple = ()) -> None:
        nonlocal counter
        counter += 1
        heapq.heappush(events, (at, counter, kind, data))

    def refuses(at: float) -> bool:
        nonlocal tokens, refilled
        if outage and outage[0] <= at < outage[1]:
            return True
        if limit:
            tokens = min(burst, tokens + (at - refilled) * limit)
            refilled = at
            if tokens < 1:
                return True
            tokens -= 1
        return rng.random() < random_429

    def next_row(at: float) -> None:
        if waiting and waiting[0][0] <= at:
            _, number, attempt = heapq.heappop(waiting)
            schedule(at, "send", (number, attempt))
        elif todo:
            schedule(at, "send", todo.popleft())
        elif waiting:
            schedule(waiting[0][0], "idle")

    for _ in range(workers):
        schedule(0.0, "idle")
    while events:
        at, _, kind, data = heapq.heappop(events)
        now[0] = at
        if kind == "idle":
            next_row(at)
        elif kind == "send":
            slept[0] = 0.0
            ticket = pacer.acquire()
            schedule(at + slept[0] + latency, "answer", (*data, ticket, at + slept[0]))
        else:
            number, attempt, ticket, sent = data
            requests += 1
            refused = refuses(sent + latency / 2)
            pacer.answered(ticket, throttled=refused)
            if refused:
                throttled += 1
                heapq.heappush(waiting, (at + retry_after, number, attempt + 1))
            else:
                done += 1
                end = at
            next_row(at)
    return Run(wall=end, rate=done / end, requests=requests, throttled=throttled, done=done, pacer=pacer)


CALM = simulate()


@pytest.mark.parametrize("seed", range(1, 11))
def test_sporadic_429s_do_not_slow_the_batch_down(seed):
    """5 % random 429s with Retry-After: 1: the cost is each throttled row's own wait, not a collapsed pace."""
    run = simulate(random_429=0.05, seed=seed)
    bound = CALM.wall + run.throttled * 1.0 / 16 * 1.5  # the benchmark's target
    assert run.done == 2000 and run.wall <= bound
    assert run.pacer.undone >= 1  # a cut was tried, found not to help, and undone
    assert run.pacer.rate is None or run.pacer.rate > 200  # not stuck at a crawl


@pytest.mark.parametrize(
    ("latency", "limit", "burst"), [(0.02, 100, 10), (0.05, 100, 10), (0.02, 300, 30), (0.005, 100, 10), (0.02, 50, 5)]
)
def test_a_rate_limit_is_found_and_held(latency, limit, burst):
    rows = int(limit * 20)
    run = simulate(rows=rows, latency=latency, limit=limit, burst=burst)
    assert run.done == rows
    assert run.rate >= 0.9 * limit
    steady = simulate(rows=rows * 3, latency=latency, limit=limit, burst=burst)
    assert steady.share_429 <= 0.05  # the first second's overshoot, then a few per cut


def test_a_configured_rate_is_held_exactly():
    run = simulate(limit=100, burst=10, ceiling=100)
    assert run.rate >= 0.97 * 100 and run.share_429 <= 0.01
    assert simulate(ceiling=50).rate == pytest.approx(50, rel=0.01)


def test_no_permanent_floor_trap():
    """A 10-second wall of 429s drives the pace to its floor; afterwards it climbs back."""
    run = simulate(rows=6000, limit=100, burst=10, outage=(5.0, 15.0))
    assert run.done == 6000
    assert run.pacer.cuts >= 5
    # 6000 rows at 100/s need 60 s; the 10 s wall costs 10 s, and the climb back at most 25 s more
    assert run.wall <= 60 + 10 + 25


def test_429s_for_requests_sent_before_a_cut_do_not_cut_again():
    now = [0.0]
    pacer = AdaptivePacer(None, clock=lambda: now[0], sleep=lambda s: None)
    old = [pacer.acquire() for _ in range(40)]
    now[0] = 0.1
    for ticket in old[:5]:
        pacer.answered(ticket, throttled=True)  # overloaded: the pace is cut once
    assert pacer.cuts == 1
    for ticket in old[5:]:  # the rest of the burst, sent before the cut
        pacer.answered(ticket, throttled=True)
    assert pacer.cuts == 1
    new = [pacer.acquire() for _ in range(5)]
    for ticket in new:  # requests sent at the new pace, refused too: a new window, a new cut
        pacer.answered(ticket, throttled=True)
    assert pacer.cuts == 2


def test_the_pace_grows_back_linearly_after_a_cut_up_to_the_ceiling():
    now = [0.0]
    pacer = AdaptivePacer(100, clock=lambda: now[0], sleep=lambda s: None)
    assert pacer.rate == 100
    tickets = [pacer.acquire() for _ in range(10)]
    for ticket in tickets:
        now[0] += 0.01
        pacer.answered(ticket, throttled=True)
    cut = pacer.rate
    assert cut is not None and cut < 100
    now[0] += 1
    assert pacer.rate == pytest.approx(cut + 1.0, abs=0.01)  # +max(1, 5 % of the best accepted rate) per second
    now[0] += 1000
    assert pacer.rate == 100


def test_acquire_spaces_requests_at_the_ceiling():
    now = [0.0]
    slept: list[float] = []
    pacer = AdaptivePacer(10, clock=lambda: now[0], sleep=slept.append)
    for _ in range(3):
        pacer.acquire()
    assert slept == [pytest.approx(0.1), pytest.approx(0.2)]


def test_max_requests_per_second_is_checked():
    for bad in (0, -1, True, "10"):
        with pytest.raises(ValueError, match="must be a number greater than 0"):
            AdaptivePacer(bad)  # type: ignore[arg-type]


def test_breaker_opens_on_a_run_of_failed_requests_and_says_since_when():
    breaker = CircuitBreaker.for_concurrency(16)
    assert breaker.max_failed_attempts == 64
    for _ in range(63):
        breaker.attempt_failed("HTTP 503")
    assert not breaker.open
    breaker.attempt_failed("HTTP 503")
    assert breaker.open
    assert breaker.describe().startswith("64 consecutive failed requests since 20")
    assert breaker.describe().endswith("UTC (last: HTTP 503)")


def test_breaker_is_reset_by_a_working_api_and_ignores_a_flaky_one():
    breaker = CircuitBreaker.for_concurrency(16)
    rng = random.Random(3)
    for _ in range(100_000):  # 30 % of requests fail at random: never 64 in a row
        if rng.random() < 0.3:
            breaker.attempt_failed("HTTP 502")
        else:
            breaker.succeeded()
    assert not breaker.open
    for _ in range(60):
        breaker.attempt_failed("HTTP 500")
    breaker.refused()  # a 404 answer: the API is up
    for _ in range(60):
        breaker.attempt_failed("HTTP 500")
    assert not breaker.open


def test_breaker_opens_when_rows_keep_failing_after_every_retry():
    breaker = CircuitBreaker.for_concurrency(4)
    for _ in range(4):
        breaker.row_failed("HTTP 429")
    assert not breaker.open
    breaker.row_failed("HTTP 429")
    assert breaker.open
    assert breaker.describe().startswith("5 consecutive rows failed after every retry since ")


def test_a_thread_that_wakes_long_after_its_slot_takes_a_new_one_instead_of_bursting():
    """Slots are handed out ahead of time; a process held up (an import, the interpreter lock) wakes every sleeper at
    once. Each takes a fresh slot then, so the sends resume at the pace, not all together."""
    now = [0.0]
    oversleep = [0.2]  # the first sleep ends 200 ms late

    def sleep(seconds: float) -> None:
        now[0] += seconds + oversleep[0]
        oversleep[0] = 0.0

    pacer = AdaptivePacer(40, clock=lambda: now[0], sleep=sleep)
    sent = []
    for _ in range(4):
        pacer.acquire()
        sent.append(round(now[0], 3))
    assert sent == [0.0, 0.225, 0.25, 0.275]  # the late one went at 0.225 and the next ones 25 ms after it
    assert all(b - a >= 0.025 - 1e-9 for a, b in itertools.pairwise(sent[1:]))


# -- issue 27: against an unknown quota, hold under the rate at which 429s began --------------------------------


@pytest.mark.parametrize(("latency", "limit", "burst"), [(0.02, 100, 10), (0.05, 100, 10), (0.02, 50, 5)])
def test_the_pace_holds_under_the_rate_at_which_429s_began_instead_of_probing_past_it(latency, limit, burst):
    run = simulate(rows=limit * 60, latency=latency, limit=limit, burst=burst)
    assert run.rate >= 0.95 * limit  # the quota is still used
    assert run.pacer.limit == pytest.approx(limit, rel=0.15)  # found where the 429s began
    assert run.pacer.cuts <= 10  # a probe past the limit every few seconds cut it 22 times
    assert run.share_429 <= 0.021  # the first second's overshoot, then hardly any


def test_a_held_pace_probes_slowly_then_grows_again_so_a_raised_quota_is_found():
    now = [0.0]
    pacer = AdaptivePacer(None, clock=lambda: now[0], sleep=lambda s: None)
    pacer.limit, pacer._pace, pacer._best = 100.0, 90.0, 100.0  # as a cut at 100/s leaves it
    now[0] = 1.0
    assert pacer.rate == pytest.approx(95.0)  # grows back at 5/s to 95 % of the limit
    now[0] = 11.0
    assert pacer.rate == pytest.approx(95.0 + 5.0 * 0.1 * 10)  # then at a tenth of that for 30 s
    now[0] = 41.0
    assert pacer.rate == pytest.approx(95.0 + 5.0 * 0.1 * 30 + 5.0 * 10)  # then as before


def test_a_wall_of_429s_does_not_lower_the_rate_the_pace_holds_under():
    run = simulate(rows=6000, limit=100, burst=10, outage=(5.0, 15.0))
    assert run.pacer.limit is not None and run.pacer.limit >= 80  # the outage accepted nothing: it found no limit
