"""A sync's guardrails, as pure functions: how big a plan is against its limits, whether it is applied at once,
waits for a person's approval, or is refused; and the plan's digest, which names exactly the writes a person
approves.

The limits (every one optional, each checked on the plan before the first write):

* ``max_changes``: the writes (updates, creates and deletes) a run may send;
* ``max_change_ratio``: the same as a share of the desired rows;
* ``max_deletes`` / ``max_delete_ratio``: the deletes of a mirror (the share is of the objects the sync manages).

A plan is *over its limits* when it passes any of them (a plan exactly at a limit is within it).
``approval="over_limits"`` (the default) applies a plan within its limits at once and asks for approval of one over
them; ``"always"`` asks for every plan that writes anything; ``"never"`` fails a plan over its limits before any
write. Where no approval can be asked for (Airflow 2, or Airflow 3 before its Human-in-the-loop), a plan that would
wait fails instead, with its digest: a run given that digest (``approve_plan``) applies that plan, and only that one.

The digest is a hash over every write the plan would send (each object's key, its action and the write's body),
in key order: the same writes give the same digest in any row order; one value more or less, or one more object,
gives another. The values the writes replace are not in it, so a plan that sends the same writes is the same plan
even if unrelated fields moved in between.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from airflow_provider_hilos.schemas import show

#: How many hexadecimal digits of the SHA-256 a digest keeps (80 bits: short enough to paste into a form).
DIGEST_DIGITS = 20
#: How many of a row's hash it keeps (the per-object hashes of an approved plan).
ROW_HASH_DIGITS = 32


class Approval(StrEnum):
    """When a plan waits for a person (see the module's text)."""

    OVER_LIMITS = "over_limits"
    ALWAYS = "always"
    NEVER = "never"


class Decision(StrEnum):
    """What happens to a plan."""

    #: applied at once (within the limits, or nothing to write)
    APPLY = "apply"
    #: applied because the run was given its digest (``approve_plan``)
    APPLY_APPROVED = "apply_approved"
    #: waits for a person's answer (Airflow's Human-in-the-loop)
    WAIT = "wait"
    #: fails before any write
    REFUSE = "refuse"


@dataclass(frozen=True)
class Limits:
    """A sync's limits (``None``: no such limit).

    :param max_changes: writes a run may send.
    :param max_change_ratio: writes as a share of the desired rows (0 to 1).
    :param max_deletes: deletes a run may send (a mirror).
    :param max_delete_ratio: deletes as a share of the objects the sync manages (a mirror).
    """

    max_changes: int | None = None
    max_change_ratio: float | None = None
    max_deletes: int | None = None
    max_delete_ratio: float | None = None

    def described(self) -> str:
        """The limits as a sentence part: ``max_changes=100, max_change_ratio=0.05``, or ``no limits``."""
        given = [f"{name}={value:g}" for name, value in vars(self).items() if value is not None]
        return ", ".join(given) or "no limits"


@dataclass(frozen=True)
class PlanSize:
    """What a plan does, counted.

    :param changes: the writes it sends (updates, creates, deletes).
    :param desired: the desired rows read.
    :param deletes: the deletes among the writes.
    :param managed: the objects the sync manages (created or updated by it before), the deletes' base.
    """

    changes: int
    desired: int
    deletes: int = 0
    managed: int = 0


@dataclass(frozen=True)
class Verdict:
    """What the guard decided, and why.

    :param decision: apply, apply as approved, wait or refuse.
    :param over: each limit the plan passes, with the numbers (empty: within them).
    :param reason: one sentence a person reads in the log.
    """

    decision: Decision
    over: tuple[str, ...] = ()
    reason: str = ""

    @property
    def over_limits(self) -> bool:
        return bool(self.over)


def over_limits(size: PlanSize, limits: Limits, noun: str = "object") -> list[str]:
    """Each limit ``size`` passes, as ``"240 changes > max_changes=100"`` (empty: within every limit).

    :param noun: what the objects are called (``conversation``, ``contact``).
    """
    over = []
    if limits.max_changes is not None and size.changes > limits.max_changes:
        over.append(f"{size.changes:,} changes > max_changes={limits.max_changes:,}")
    if limits.max_change_ratio is not None and size.changes > limits.max_change_ratio * size.desired:
        share = size.changes / size.desired if size.desired else 1.0
        over.append(
            f"{size.changes:,} changes of {size.desired:,} desired {noun}s ({share:.1%}) > "
            f"max_change_ratio={limits.max_change_ratio:g}"
        )
    if limits.max_deletes is not None and size.deletes > limits.max_deletes:
        over.append(f"{size.deletes:,} deletes > max_deletes={limits.max_deletes:,}")
    if limits.max_delete_ratio is not None and size.managed and size.deletes > limits.max_delete_ratio * size.managed:
        over.append(
            f"{size.deletes:,} deletes of the {size.managed:,} {noun}s this sync manages "
            f"({size.deletes / size.managed:.1%}) > max_delete_ratio={limits.max_delete_ratio:g}"
        )
    return over


def decide(
    size: PlanSize,
    limits: Limits,
    approval: Approval,
    *,
    digest: str,
    approved_digest: str | None = None,
    can_wait: bool = True,
    noun: str = "object",
) -> Verdict:
    """What happens to a plan (pure: the same inputs, the same verdict).

    :param digest: the plan's digest (:func:`plan_digest`).
    :param approved_digest: the digest the run was given (``approve_plan``), if any: a plan with that digest is
        applied whatever its size; a plan with another one is refused when it needs approval.
    :param can_wait: whether a person can be asked (Airflow's Human-in-the-loop is there); when not, a plan that
        would wait is refused, with its digest.
    """
    over = tuple(over_limits(size, limits, noun))
    if size.changes == 0:
        return Verdict(Decision.APPLY, over, "the plan writes nothing")
    if approved_digest and approved_digest == digest:
        return Verdict(Decision.APPLY_APPROVED, over, f"approve_plan={digest} is this plan's digest")
    needs = approval is Approval.ALWAYS or bool(over)
    if not needs:
        return Verdict(Decision.APPLY, over, f"within its limits ({limits.described()})")
    why = "; ".join(over) if over else "approval='always': every plan that writes waits for approval"
    if approved_digest:
        return Verdict(
            Decision.REFUSE,
            over,
            f"approve_plan={approved_digest} is not this plan's digest ({digest}): the plan changed since it was "
            f"approved ({why})",
        )
    if approval is Approval.NEVER:
        return Verdict(Decision.REFUSE, over, f"over its limits ({why}) and approval='never'")
    if not can_wait:
        return Verdict(
            Decision.REFUSE, over, f"{why}; this Airflow has no Human-in-the-loop to ask for approval in the UI"
        )
    return Verdict(Decision.WAIT, over, why)


def row_hash(key: str, action: str, write: Any) -> str:
    """The hash of one write: its object's key, its action and its body (as the work database keeps it)."""
    text = json.dumps([key, action, write], sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:ROW_HASH_DIGITS]


def plan_digest(hashes: Iterable[tuple[str, str]]) -> str:
    """The digest of a plan from each write's ``(key, row hash)``, **in key order** (the work database sorts
    them); an empty plan has one too."""
    digest = hashlib.sha256(b"hilos-sync-plan-v1\n")
    for key, hashed in hashes:
        digest.update(f"{key}\t{hashed}\n".encode())
    return digest.hexdigest()[:DIGEST_DIGITS]


def digest_problem(value: Any) -> str | None:
    """What is wrong with a digest given as ``approve_plan`` (``None``: nothing)."""
    if not isinstance(value, str) or len(value) != DIGEST_DIGITS or any(c not in "0123456789abcdef" for c in value):
        return (
            f"{show(value)} is not a plan digest ({DIGEST_DIGITS} lower-case hexadecimal digits, as the refused "
            "run's log and result give it)"
        )
    return None


def whole_or_none(value: Any, name: str, problems: list[tuple[str, str]]) -> int | None:
    """A count limit as given (a number, its text, or ``None``/``""``/``"none"``: no limit); a wrong one adds to
    ``problems``."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        problems.append((name, f"{show(value)} must be a whole number, 0 or more (or None: no limit)"))
        return None
    return value


def share_or_none(value: Any, name: str, problems: list[tuple[str, str]]) -> float | None:
    """A share limit (0 to 1, its text, or ``None``/``""``/``"none"``: no limit); a wrong one adds to
    ``problems``."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    try:
        share = float(value) if not isinstance(value, bool) else -1.0
    except (TypeError, ValueError):
        share = -1.0
    if not 0 <= share <= 1:
        problems.append((name, f"{show(value)} must be a share from 0 to 1 (0.1: a tenth)"))
        return None
    return share
