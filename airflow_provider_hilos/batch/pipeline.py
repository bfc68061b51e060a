"""The row pipeline: read, validate, de-duplicate, skip.

One pass over the input yields one :class:`Item` per row: to send, already applied by an earlier try, or
invalid. Validation (:meth:`RowPipeline.survey`), the dry run and sending all read the input through it, so
they reach the same verdict on every row.

Two kinds of input:

* :class:`RowPipeline`: raw rows (a list, a JSON Lines or CSV file) from a re-iterable source. The input is
  read twice, once to validate every row before anything is sent and once to send, so a file is streamed and
  never held in memory.
* :class:`UpdatePipeline`: already-validated updates (:class:`~airflow_provider_hilos.schemas.ValidatedUpdate`,
  e.g. a sync's plan), read once.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping, Sized
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from airflow_provider_hilos.checkpoint import fingerprint
from airflow_provider_hilos.exceptions import HilosValidationError
from airflow_provider_hilos.rows import (
    RowChecker,
    RowSource,
    plain_conversation_id,
    reasons,
    row_label,
    rows_from_updates,
    shard_of,
    shard_problem,
)
from airflow_provider_hilos.schemas import ValidatedUpdate, id_key

if TYPE_CHECKING:
    from airflow_provider_hilos.people import PeopleResolver

#: How many invalid rows an error message lists (all of them are counted, and written to the report).
MAX_LISTED_INVALID_ROWS = 50


class ItemKind(StrEnum):
    """What the batch does with a row."""

    SEND = "send"
    ALREADY_APPLIED = "already_applied"
    INVALID = "skipped"


@dataclass(frozen=True, slots=True)
class Item:
    """One row of the input, as the pipeline judged it.

    :param number: the row's number: its line in a file (the header is line 1 of a CSV), its position in a list.
    :param kind: send it, skip it as already applied, or skip it as invalid.
    :param update: the validated update (not for an invalid row).
    :param digest: the fingerprint of what the update sends (its checkpoint entry).
    :param conversation_id: the canonical id; for an invalid row, the id as given when it is a string.
    :param label: `` (conversation '...')`` for messages about an invalid row.
    :param reason: why an invalid row is invalid.
    """

    number: int
    kind: ItemKind
    #: the write: a :class:`~airflow_provider_hilos.schemas.ValidatedUpdate`, or a contact's ``ContactWrite``
    update: Any = None
    digest: str = ""
    conversation_id: str | None = None
    label: str = ""
    reason: str = ""


@dataclass
class Survey:
    """The validation pass: how many rows there are, and which are invalid.

    When sharded, ``total`` and ``invalid`` count this shard's rows, ``set_total`` and ``set_invalid`` the whole
    change set's (the verdict is on those), and ``listed`` is taken from the whole set.
    """

    total: int = 0
    invalid: int = 0
    set_total: int = 0
    set_invalid: int = 0
    sharded: bool = False
    #: the first invalid rows (of the whole change set): ``(row label, reasons)``
    listed: list[tuple[str, str]] = field(default_factory=list)


class Pipeline(Protocol):
    """What the engine reads its rows from."""

    def survey(self) -> Survey: ...

    def items(self, applied: Mapping[str, str] | None = None) -> Iterator[Item]: ...


class RowPipeline:
    """Raw rows from a re-iterable source, validated one by one (see :func:`~airflow_provider_hilos.rows.validate_row`).

    A conversation repeated in the input is invalid from its second row on: two rows for one conversation would be
    in flight together and could land in either order.

    :param source: returns ``(row number, row)`` pairs afresh on each call.
    :param shard_index: with ``shard_count``, only the rows of that shard are sent (see
        :func:`~airflow_provider_hilos.rows.shard_of`); every row is still read and validated.
    :param shard_count: how many shards the input is split into.
    :param people: turns agents given by email and teams given by name into ids (an unknown one: an invalid row).
    """

    def __init__(
        self,
        source: RowSource,
        *,
        shard_index: int | None = None,
        shard_count: int | None = None,
        people: PeopleResolver | None = None,
    ) -> None:
        if problem := shard_problem(shard_index, shard_count):
            raise ValueError(problem)
        self.source = source
        self.people = people
        self.shard = None if shard_count is None or shard_index is None else (shard_index, shard_count)

    def _in_shard(self, row: Any) -> bool:
        return self.shard is None or shard_of(row, self.shard[1]) == self.shard[0]

    def _judged(self) -> Iterator[tuple[int, Any, bool, ValidatedUpdate | HilosValidationError]]:
        checker = RowChecker()
        for number, row in self.source():
            try:
                resolved = row
                if self.people is not None and isinstance(row, Mapping):
                    resolved, problems = self.people.resolve(row)  # agents by email, teams by name: ids
                    if problems:
                        raise HilosValidationError(problems, "Invalid row")
                verdict: ValidatedUpdate | HilosValidationError = checker.check(number, resolved)
            except HilosValidationError as exc:
                verdict = exc
            yield number, row, self._in_shard(row), verdict

    def survey(self) -> Survey:
        """Read every row once and validate it."""
        survey = Survey(sharded=self.shard is not None)
        for number, row, in_shard, verdict in self._judged():
            survey.set_total += 1
            survey.total += in_shard
            if isinstance(verdict, HilosValidationError):
                survey.set_invalid += 1
                survey.invalid += in_shard
                if len(survey.listed) < MAX_LISTED_INVALID_ROWS:  # of the whole set: the verdict is on it
                    survey.listed.append((f"row {number}{row_label(row)}", reasons(verdict)))
        return survey

    def items(self, applied: Mapping[str, str] | None = None) -> Iterator[Item]:
        """The rows (of this shard), in order. ``applied``: conversation id -> digest an earlier try recorded."""
        applied = applied or {}
        for number, row, in_shard, verdict in self._judged():
            if not in_shard:
                continue
            if isinstance(verdict, HilosValidationError):
                yield Item(
                    number,
                    ItemKind.INVALID,
                    conversation_id=plain_conversation_id(row),
                    label=row_label(row),
                    reason=reasons(verdict),
                )
            else:
                yield _valid_item(number, verdict, applied)


class UpdatePipeline:
    """Updates that already passed validation, read once (a sync's plan, an upstream task's list).

    :param updates: the updates, in the order they are sent; or ``(row number, update)`` pairs with ``numbered``
        (a sync's updates keep the number of their desired row, so the report and every message name them alike).
    :param total: how many there are, when ``updates`` is an iterator (a list says it itself); used for progress
        and for ``max_failed_ratio``.
    :param numbered: ``updates`` are ``(row number, update)`` pairs.
    :param unique: the writes' keys are known to be unique (a sync's plan): not checked (the check holds every key
        in memory).
    """

    def __init__(
        self,
        updates: Iterable[Any],
        *,
        total: int | None = None,
        numbered: bool = False,
        unique: bool = False,
    ) -> None:
        self.updates = updates
        self.numbered = numbered
        self.unique = unique
        self.total = total if total is not None else (len(updates) if isinstance(updates, Sized) else 0)

    def survey(self) -> Survey:
        """Nothing to read: the updates are valid already."""
        return Survey(total=self.total, set_total=self.total)

    def items(self, applied: Mapping[str, str] | None = None) -> Iterator[Item]:
        """The updates in order; one that repeats an earlier update's conversation is invalid (not sent)."""
        applied = applied or {}
        first: dict[int, int] = {}
        pairs = self.updates if self.numbered else enumerate(self.updates, start=1)
        for number, update in pairs:
            if not hasattr(update, "digest_body"):
                raise TypeError(f"update {number} is a {type(update).__name__}, not a ValidatedUpdate")
            if not self.unique:
                earlier = first.setdefault(id_key(update.key), number)
                if earlier != number:
                    yield Item(
                        number,
                        ItemKind.INVALID,
                        conversation_id=update.key,
                        label=f" (conversation {update.key!r})",
                        reason=f"conversation_id: {update.key} is already updated by update {earlier}",
                    )
                    continue
            yield _valid_item(number, update, applied)


def _valid_item(number: int, update: Any, applied: Mapping[str, str]) -> Item:
    digest = fingerprint(update.key, update.digest_body)
    kind = ItemKind.ALREADY_APPLIED if applied.get(update.key) == digest else ItemKind.SEND
    return Item(number, kind, update=update, digest=digest, conversation_id=update.key)


def pipeline_for(updates: Any) -> Pipeline:
    """The pipeline for whatever a caller passes as a batch's input.

    :param updates: a :class:`RowPipeline` or :class:`UpdatePipeline`; a source returning ``(row number, row)``
        pairs; rows (a list, the JSON a template rendered); or :class:`~airflow_provider_hilos.schemas.ValidatedUpdate`
        objects (a list or an iterator: not read twice).
    :raises HilosValidationError: ``updates`` is not rows.
    """
    if isinstance(updates, (RowPipeline, UpdatePipeline)):
        return updates
    if callable(updates):
        return RowPipeline(updates)
    if isinstance(updates, Iterable) and not isinstance(updates, (str, bytes, Mapping)):
        iterator = iter(updates)
        first = next(iterator, _NOTHING)
        if isinstance(first, ValidatedUpdate):
            total = len(updates) if isinstance(updates, Sized) else None
            return UpdatePipeline(itertools.chain([first], iterator), total=total)
        if not isinstance(updates, Sized):  # an iterator of raw rows: held, as raw rows are read twice
            updates = [] if first is _NOTHING else [first, *iterator]
    return RowPipeline(rows_from_updates(updates))


_NOTHING = object()
