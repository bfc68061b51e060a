"""The guard's arithmetic at and around each limit, the three approval modes, and the plan's digest."""

from __future__ import annotations

import pytest

from airflow_provider_hilos.sync.guard import (
    DIGEST_DIGITS,
    Approval,
    Decision,
    Limits,
    PlanSize,
    decide,
    digest_problem,
    over_limits,
    plan_digest,
    row_hash,
    share_or_none,
    whole_or_none,
)
from airflow_provider_hilos.sync.work import WorkStore

DIGEST = "0" * DIGEST_DIGITS


@pytest.mark.parametrize(
    ("size", "limits", "over"),
    [
        (PlanSize(changes=100, desired=1000), Limits(max_changes=100), False),  # at the limit: within it
        (PlanSize(changes=101, desired=1000), Limits(max_changes=100), True),
        (PlanSize(changes=99, desired=1000), Limits(max_changes=100), False),
        (PlanSize(changes=0, desired=1000), Limits(max_changes=0), False),
        (PlanSize(changes=1, desired=1000), Limits(max_changes=0), True),
        (PlanSize(changes=50, desired=1000), Limits(max_change_ratio=0.05), False),
        (PlanSize(changes=51, desired=1000), Limits(max_change_ratio=0.05), True),
        (PlanSize(changes=1, desired=0), Limits(max_change_ratio=0.5), True),  # nothing desired: any write is over
        (PlanSize(changes=10, desired=10), Limits(max_change_ratio=1), False),
        (PlanSize(changes=5, desired=100, deletes=5), Limits(max_deletes=5), False),
        (PlanSize(changes=6, desired=100, deletes=6), Limits(max_deletes=5), True),
        (PlanSize(changes=3, desired=100, deletes=3, managed=30), Limits(max_delete_ratio=0.1), False),
        (PlanSize(changes=4, desired=100, deletes=4, managed=30), Limits(max_delete_ratio=0.1), True),
        (PlanSize(changes=4, desired=100, deletes=4, managed=0), Limits(max_delete_ratio=0.1), False),
        (PlanSize(changes=10**6, desired=10), Limits(), False),  # no limits: never over
    ],
)
def test_a_plan_is_over_its_limits_only_past_one(size, limits, over):
    assert bool(over_limits(size, limits, "conversation")) is over


def test_each_limit_passed_is_named_with_its_numbers():
    size = PlanSize(changes=240, desired=1000, deletes=40, managed=100)
    over = over_limits(size, Limits(100, 0.2, 30, 0.3), "contact")
    assert over == [
        "240 changes > max_changes=100",
        "240 changes of 1,000 desired contacts (24.0%) > max_change_ratio=0.2",
        "40 deletes > max_deletes=30",
        "40 deletes of the 100 contacts this sync manages (40.0%) > max_delete_ratio=0.3",
    ]


@pytest.mark.parametrize(
    ("changes", "approval", "can_wait", "decision"),
    [
        (50, Approval.OVER_LIMITS, True, Decision.APPLY),
        (101, Approval.OVER_LIMITS, True, Decision.WAIT),
        (101, Approval.OVER_LIMITS, False, Decision.REFUSE),  # Airflow 2: nobody can be asked
        (50, Approval.ALWAYS, True, Decision.WAIT),
        (50, Approval.ALWAYS, False, Decision.REFUSE),
        (0, Approval.ALWAYS, True, Decision.APPLY),  # an empty plan never waits
        (101, Approval.NEVER, True, Decision.REFUSE),
        (50, Approval.NEVER, True, Decision.APPLY),
    ],
)
def test_the_approval_modes(changes, approval, can_wait, decision):
    verdict = decide(
        PlanSize(changes=changes, desired=1000), Limits(max_changes=100), approval, digest=DIGEST, can_wait=can_wait
    )
    assert verdict.decision is decision
    if decision is Decision.REFUSE and not can_wait:
        assert "no Human-in-the-loop" in verdict.reason


def test_a_given_digest_applies_that_plan_and_only_that_one():
    size, limits = PlanSize(changes=500, desired=1000), Limits(max_changes=100)
    other = "1" * DIGEST_DIGITS
    assert decide(size, limits, Approval.NEVER, digest=DIGEST, approved_digest=DIGEST).decision is (
        Decision.APPLY_APPROVED
    )
    refused = decide(size, limits, Approval.OVER_LIMITS, digest=DIGEST, approved_digest=other, can_wait=True)
    assert refused.decision is Decision.REFUSE and other in refused.reason and DIGEST in refused.reason
    # a plan within its limits needs no approval: a stale digest in the conf does not stop it
    small = decide(
        PlanSize(changes=5, desired=1000), limits, Approval.OVER_LIMITS, digest=DIGEST, approved_digest=other
    )
    assert small.decision is Decision.APPLY


def test_the_digest_is_the_writes_whatever_their_row_order(tmp_path):
    def digest(rows: list[tuple[str, int, dict]]) -> str:
        with WorkStore(str(tmp_path)) as work:
            work.add_plan(
                [(k, n, "update", False, None, None, row_hash(k, "update", ("conversation", k, w))) for k, n, w in rows]
            )
            return plan_digest(work.hashes())

    rows = [("a", 1, {"status": "CLOSED"}), ("b", 2, {"status": "NEW"}), ("c", 3, {"tags": ["vip"]})]
    first = digest(rows)
    assert digest(list(reversed([(k, 4 - n, w) for k, n, w in rows]))) == first  # same writes, other rows
    assert digest([*rows[:2], ("c", 3, {"tags": ["vip", "x"]})]) != first  # one value more
    assert digest(rows[:2]) != first  # one object less
    assert digest([*rows, ("d", 4, {"status": "NEW"})]) != first
    assert len(first) == DIGEST_DIGITS and digest_problem(first) is None
    assert row_hash("a", "update", [1]) != row_hash("a", "delete", [1])


@pytest.mark.parametrize("value", ["", "xyz", "0" * (DIGEST_DIGITS + 1), "G" * DIGEST_DIGITS, 12, None])
def test_a_wrong_digest_is_named(value):
    assert "is not a plan digest" in (digest_problem(value) or "")


def test_limits_read_from_templates():
    problems: list[tuple[str, str]] = []
    assert whole_or_none("12", "max_changes", problems) == 12 and whole_or_none("None", "x", problems) is None
    assert share_or_none("0.25", "max_change_ratio", problems) == 0.25 and share_or_none("", "x", problems) is None
    assert problems == []
    whole_or_none(-1, "max_changes", problems)
    share_or_none(1.5, "max_change_ratio", problems)
    share_or_none(True, "max_delete_ratio", problems)
    assert [name for name, _ in problems] == ["max_changes", "max_change_ratio", "max_delete_ratio"]
    assert Limits(max_changes=5, max_change_ratio=0.1).described() == "max_changes=5, max_change_ratio=0.1"
    assert Limits().described() == "no limits"
