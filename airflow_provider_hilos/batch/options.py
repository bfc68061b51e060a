"""How a batch sends, and when it fails: :class:`BatchOptions`, defined once.

The batch and sync operators take every option as a flat keyword argument of the same name, with the same
default and documentation: their signatures and docstrings are built from this class
(:func:`with_batch_options`, :func:`with_batch_option_docs`), so an option added here is an operator argument too.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

from airflow_provider_hilos.pacing import check_rate


class FailurePolicy(StrEnum):
    """What a batch does when rows fail.

    * ``fail_at_end``: send every row, then fail if more rows failed than ``max_failed_ratio`` allows.
    * ``fail_fast``: stop sending as soon as that many rows failed (rows not sent are reported).
    * ``never``: send every row and never fail; read the counts and the report.

    Whatever the policy, a batch stops at once on an error every row would share (a missing endpoint,
    a rejected token), and when the API looks unavailable (see :class:`~airflow_provider_hilos.pacing.CircuitBreaker`).
    """

    FAIL_AT_END = "fail_at_end"
    FAIL_FAST = "fail_fast"
    NEVER = "never"


@dataclass(frozen=True)
class BatchOptions:
    """How a batch sends, and when it fails. Checked once, when it is made (an operator's, when the DAG
    file is parsed); the operators, ``HilosHook.update_conversations`` and the batch engine share it.

    :param max_concurrency: requests in flight at once (1 to 256); the session's pool is sized to match.
    :param max_requests_per_second: the most this batch may send, or ``None``: no limit of its own. It can only
        lower the batch's share of the connection's quota (the extra ``max_requests_per_second``), never raise
        it; either way, the batch slows down to the rate the API allows when it answers 429.
    :param failure_policy: ``fail_at_end`` (send all, then fail if too many failed), ``fail_fast``
        (stop sending once too many failed) or ``never``. See :class:`FailurePolicy`.
    :param max_failed_ratio: the share of rows that may fail without failing the batch (0 to 1).
    :param skip_invalid_rows: send the valid rows and report the invalid ones as skipped (each logged
        with its reasons), instead of refusing the whole batch before sending anything.
    :param max_invalid_ratio: with ``skip_invalid_rows``, the share of rows that may be invalid;
        ``None``: any share but all (a batch of invalid rows only, the wrong file, fails).
    :param max_failed_rows: how many failed (and skipped) rows the result lists; all are logged and reported.
    :param progress_interval: seconds between progress lines (done/total, failures, req/s, ETA).
    """

    max_concurrency: int = 16
    max_requests_per_second: float | None = None
    failure_policy: FailurePolicy | str = FailurePolicy.FAIL_AT_END
    max_failed_ratio: float = 0.0
    skip_invalid_rows: bool = False
    max_invalid_ratio: float | None = None
    max_failed_rows: int = 100
    progress_interval: float = 10.0

    def __post_init__(self) -> None:
        check_concurrency(self.max_concurrency)
        check_rate(self.max_requests_per_second)
        object.__setattr__(self, "failure_policy", check_failure_policy(self.failure_policy))
        check_ratio(self.max_failed_ratio)
        if self.max_invalid_ratio is not None:
            check_ratio(self.max_invalid_ratio, "max_invalid_ratio")
        if not isinstance(self.skip_invalid_rows, bool):
            raise ValueError(f"skip_invalid_rows={self.skip_invalid_rows!r} must be True or False")
        if (
            isinstance(self.max_failed_rows, bool)
            or not isinstance(self.max_failed_rows, int)
            or self.max_failed_rows < 0
        ):
            raise ValueError(f"max_failed_rows={self.max_failed_rows!r} must be a whole number, 0 or more")
        if (
            isinstance(self.progress_interval, bool)
            or not isinstance(self.progress_interval, (int, float))
            or self.progress_interval < 0
        ):
            raise ValueError(f"progress_interval={self.progress_interval!r} must be a number of seconds, 0 or more")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The options' names, in order."""
        return tuple(f.name for f in fields(cls))

    @property
    def policy(self) -> FailurePolicy:
        """``failure_policy`` as a :class:`FailurePolicy` (it is one once checked)."""
        return FailurePolicy(self.failure_policy)

    def replace(self, **changes: Any) -> BatchOptions:
        """A copy with ``changes``, checked again."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_arguments(cls, values: Mapping[str, Any]) -> BatchOptions:
        """Options from operator arguments after their templates were rendered: numbers and flags a template
        rendered as text (``"40"``, ``"0.5"``, ``"True"``, ``"None"``) are read as what they spell.

        :raises ValueError: naming the option and what it must be.
        """
        return cls(**{name: _read_rendered(name, value) for name, value in values.items()})

    @classmethod
    def check_arguments(cls, values: Mapping[str, Any]) -> BatchOptions | None:
        """Check operator arguments when the DAG file is parsed: every option that is not a template yet.

        :return: the options, when none of them is a template (``None`` otherwise: they are built after rendering).
        :raises ValueError: naming the option and what it must be.
        """
        templated = {name for name, value in values.items() if is_template(value)}
        concrete = {name: value for name, value in values.items() if name not in templated}
        options = cls.from_arguments(concrete)  # the templated ones keep their defaults for this check
        return None if templated else options


def is_template(value: Any) -> bool:
    """Whether an argument is a Jinja template Airflow renders before ``execute`` (``"{{ params.rate }}"``)."""
    return isinstance(value, str) and ("{{" in value or "{%" in value)


_DEFAULTS = {f.name: f.default for f in fields(BatchOptions)}
_FLOATS = {"max_requests_per_second", "max_failed_ratio", "max_invalid_ratio", "progress_interval"}
_INTEGERS = {"max_concurrency", "max_failed_rows"}


def _read_rendered(name: str, value: Any) -> Any:
    if not isinstance(value, str) or name == "failure_policy":
        return value
    text = value.strip()
    if name == "skip_invalid_rows":
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        return value  # refused by the check, naming the option
    if text in ("", "None", "null") and _DEFAULTS[name] is None:
        return None
    try:
        if name in _INTEGERS and re.fullmatch(r"[+-]?[0-9]+", text):
            return int(text)
        if name in _FLOATS:
            return float(text)
    except ValueError:
        pass
    return value  # refused by the check, naming the option


def operator_parameters() -> list[inspect.Parameter]:
    """Every option as a keyword-only parameter with its default, for an operator's ``__init__`` signature."""
    return [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default) for f in fields(BatchOptions)]


def with_batch_options(function: Any) -> Any:
    """Give an operator's ``__init__(self, *, ..., **kwargs)`` the options as keyword-only parameters in its
    signature (so ``partial()``, ``expand()`` and ``default_args`` know them), before its ``**kwargs``."""
    signature = inspect.signature(function)
    params = list(signature.parameters.values())
    variadic = [p for p in params if p.kind is inspect.Parameter.VAR_KEYWORD]
    others = [p for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD and p.name not in _DEFAULTS]
    function.__signature__ = signature.replace(parameters=[*others, *operator_parameters(), *variadic])
    return function


def pop_batch_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Take the options out of an operator's keyword arguments (defaults for those not given)."""
    return {name: kwargs.pop(name, default) for name, default in _DEFAULTS.items()}


def insert_param_docs(doc: str | None, marker: str, params: str) -> str:
    """``doc`` with the ``:param:`` lines ``params`` (unindented) in place of its line ``marker``, indented like the
    docstring's own ``:param:`` lines: one text for every operator that shares those arguments."""
    lines = (doc or "").splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip() == marker)
    own = [line for line in lines[:at] if line.lstrip().startswith(":param ")]
    indent = (len(own[-1]) - len(own[-1].lstrip())) * " " if own else ""
    inserted = [indent + line if line else "" for line in params.splitlines()]
    return "\n".join([*lines[:at], *inserted, *lines[at + 1 :]])


def with_batch_option_docs(doc: str | None, marker: str = "{batch_options}") -> str:
    """An operator's docstring with the ``:param:`` lines of :class:`BatchOptions` in place of ``marker``."""
    options = inspect.getdoc(BatchOptions) or ""
    return insert_param_docs(doc, marker, options[options.index(":param") :])


def check_concurrency(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 256:
        raise ValueError(f"max_concurrency={value!r} must be a whole number from 1 to 256")
    return value


def check_failure_policy(value: FailurePolicy | str) -> FailurePolicy:
    try:
        return FailurePolicy(value)
    except ValueError:
        allowed = ", ".join(p.value for p in FailurePolicy)
        raise ValueError(f"failure_policy={value!r} is not one of {allowed}") from None


def check_ratio(value: float, name: str = "max_failed_ratio") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}={value!r} must be a number from 0 to 1")
    return float(value)
