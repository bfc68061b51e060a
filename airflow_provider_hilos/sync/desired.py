"""Where a sync's desired state comes from: a SQL query on any Airflow SQL connection (read in chunks), a change-set
file, or a list; and how its columns and cells become rows of the object's fields (:class:`Columns` says which a
conversation and a contact have).

Cells, whatever the source:

* a column is named by its lower-cased name, renamed by ``column_map`` (``{"team_id": "assigned_team"}``); a column
  that is neither the key (``conversation_id``, a contact's ``phone``) nor a managed field is refused (naming the
  closest field), so a typo never passes as "not managed"; a contact's custom properties are a ``meta`` column (a JSON
  object, or a SQL JSON type) or one column per property, ``meta.<name>``;
* ``NULL`` / ``None`` leaves that field of that conversation unmanaged;
* ``tags`` and ``assigned``: a SQL array (``text[]``, ``int[]``) or a list as is; a string is split on
  ``list_separator`` (``"vip|renewal"``), ``"[...]"`` is read as JSON, an empty string or ``"-"`` means "must be
  empty";
* a whole-number ``Decimal`` (Snowflake's ``NUMBER``, Oracle's) or ``float`` (SQLite's ``REAL``, a CSV read by
  pandas) is an integer; a ``UUID`` is its text.
"""

from __future__ import annotations

import difflib
import json
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from airflow_provider_hilos.exceptions import HilosConfigurationError, HilosValidationError
from airflow_provider_hilos.schemas import CLEAR, show
from airflow_provider_hilos.sync.diff import LIST_FIELDS, SYNC_FIELDS


@dataclass(frozen=True)
class Columns:
    """The columns an object's desired state may have.

    :param key: the key column (``conversation_id``, ``phone``).
    :param fields: the managed fields' columns.
    :param lists: those holding a list (a SQL array, a JSON list, or text split on ``list_separator``).
    :param objects: those holding an object (a SQL JSON type, or JSON text): a contact's ``meta``.
    :param prefix: a prefix naming more columns, one per name (``meta.``: a contact's custom properties).
    """

    key: str
    fields: tuple[str, ...]
    lists: tuple[str, ...]
    objects: tuple[str, ...] = ()
    prefix: str | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return (self.key, *self.fields)

    def known(self, name: str) -> bool:
        return name in self.names or (
            self.prefix is not None and name.startswith(self.prefix) and len(name) > len(self.prefix)
        )

    def described(self) -> str:
        extra = f", and {self.prefix}<name>" if self.prefix else ""
        return ", ".join(self.names) + extra


#: A conversation's columns.
CONVERSATION_COLUMNS = Columns("conversation_id", SYNC_FIELDS, LIST_FIELDS)
#: The columns a conversation's desired-state row may have (after ``column_map``).
DESIRED_COLUMNS = CONVERSATION_COLUMNS.names
#: Rows fetched from the database at a time.
DEFAULT_CHUNK_SIZE = 5_000

#: ``(row number, row)`` pairs, read once.
DesiredRows = Iterator[tuple[int, Any]]


def column_map_problem(column_map: Any, columns: Columns = CONVERSATION_COLUMNS) -> str | None:
    """What is wrong with a ``column_map``, or ``None``."""
    if column_map is None:
        return None
    if not isinstance(column_map, Mapping):
        return f"must be a dict of source column -> field, e.g. {{'team_id': 'assigned_team'}}, got {show(column_map)}"
    for source, target in column_map.items():
        if not isinstance(source, str) or not source.strip():
            return f"has a source column {show(source)}; give column names as strings"
        if not isinstance(target, str) or not columns.known(target):
            close = difflib.get_close_matches(str(target), columns.names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            return f"maps {source!r} to {show(target)}{hint}; fields are {columns.described()}"
    targets = [t for t in column_map.values()]
    for target in set(targets):
        if targets.count(target) > 1:
            return f"maps several columns to {target!r}; map one column to each field"
    return None


class RowShaper:
    """Turns a source row (a dict of column -> cell) into a change-set row.

    :param column_map: source column -> field (compared lower-cased).
    :param list_separator: what separates names or ids in one text cell.
    :param origin: what the rows are called in errors (``"sql"``, ``"state_path"``, ``"state"``).
    :param columns: the object's columns (default: a conversation's).
    """

    def __init__(
        self,
        column_map: Mapping[str, str] | None,
        list_separator: str,
        origin: str,
        columns: Columns = CONVERSATION_COLUMNS,
    ) -> None:
        self.renames = {k.strip().lower(): v for k, v in (column_map or {}).items()}
        self.separator = list_separator
        self.origin = origin
        self.spec = columns
        self._lists = frozenset(columns.lists)
        self._objects = frozenset(columns.objects)
        self._checked: tuple[str, ...] | None = None
        #: list cells already split (text -> items): a column of tags or assignees repeats a few lists
        self._split: dict[str, tuple[Any, ...]] = {}
        #: the field of each of the checked columns, in their order, and whether it is a plain one (no list, no object)
        self._fields: list[tuple[str, bool]] = []

    def columns(self, names: list[str]) -> list[str]:
        """The fields of the source's columns, in order.

        :raises HilosValidationError: a column that is no field, or two columns for one field, or no id column.
        """
        spec = self.spec
        fields = [self.renames.get(name.strip().lower(), self._name(name)) for name in names]
        problems = []
        for name, field in zip(names, fields, strict=True):
            if not spec.known(field):
                close = difflib.get_close_matches(field, spec.names, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                more = f" or {spec.prefix}<name> columns" if spec.prefix else ""
                problems.append(
                    (
                        f"column {show(name)}",
                        f"is not a field a sync manages; {hint}select only {spec.key} and any of "
                        f"{', '.join(spec.fields)}{more}, or rename it with column_map={{{name!r}: '<field>'}}",
                    )
                )
        for field in set(fields):
            if fields.count(field) > 1 and spec.known(field):
                problems.append((f"field {field!r}", f"comes from {fields.count(field)} columns; select it once"))
        if spec.key not in fields:
            problems.append(
                (
                    spec.key,
                    f"no column of the {self.origin} is the {spec.key.replace('_', ' ')}; select it as {spec.key}, "
                    f"or map it with column_map={{'<column>': '{spec.key}'}}",
                )
            )
        if problems:
            raise HilosValidationError(problems, f"Invalid Hilos sync: the columns of the {self.origin}")
        return fields

    def shape(self, row: Any) -> Any:
        """The change-set row of one source row (a non-dict is passed on, for validation to refuse it)."""
        if not isinstance(row, Mapping):
            return row
        names = tuple(str(name) for name in row)
        if names != self._checked:  # every row of a query has the same columns: checked once
            self._fields = [
                (field, field not in self._lists and field not in self._objects) for field in self.columns(list(names))
            ]
            self._checked = names
        out: dict[str, Any] = {}
        for (field, plain), cell in zip(self._fields, row.values(), strict=True):
            if cell is None:
                continue
            if plain and (type(cell) is str or type(cell) is int):
                out[field] = cell  # the common cells, as they are
                continue
            if type(cell) is str and not plain:  # a list in a text cell: the same few lists, split once each
                split = self._split.get(cell)
                if split is not None:
                    out[field] = list(split)
                    continue
            value = self.cell(field, cell)
            if type(cell) is str and type(value) is list and len(self._split) < _SPLIT_MEMO:
                self._split[cell] = tuple(value)
            if value is not None:
                out[field] = value
        return out

    def _name(self, name: str) -> str:
        """A column's field: its lower-cased name (a custom property's name keeps its case: ``meta.PlanTier``)."""
        text = name.strip()
        prefix = self.spec.prefix
        if prefix and text.lower().startswith(prefix) and len(text) > len(prefix):
            return prefix + text[len(prefix) :]
        return text.lower()

    def cell(self, field: str, value: Any) -> Any:
        """One cell as the change-set row has it (``None``: not managed)."""
        if value is None:
            return None
        kind = type(value)
        if (kind is str or kind is int) and field not in self._lists and field not in self._objects:
            return value  # the common cells, as they are
        if field in self._objects:
            return _object_cell(field, value)
        if isinstance(value, uuid.UUID):
            return str(value)
        whole_decimal = isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value()
        if whole_decimal or (isinstance(value, float) and value.is_integer()):
            value = int(value)
        if field in self._lists:
            if type(value) is int:
                return [value]  # one id in a number column (an account owner): a list of one
            if isinstance(value, (list, tuple)):
                return [
                    item if type(item) is str or type(item) is int else self.cell("", item)
                    for item in value
                    if item is not None
                ]
            if isinstance(value, str):
                text = value.strip()
                if text in ("", CLEAR):
                    return []
                if text.startswith("["):
                    return text  # JSON: validation reads it
                return [part.strip() for part in text.split(self.separator) if part.strip()]
        return value


#: How many distinct list texts a shaper remembers split.
_SPLIT_MEMO = 8_192


def _object_cell(field: str, value: Any) -> Any:
    """An object cell (a contact's ``meta``): a mapping as it is (psycopg reads ``jsonb`` as a dict), JSON text read
    (an invalid one is passed on as it is, for validation to name the row), ``-`` or empty: "no properties"."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, bytes | bytearray):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        text = value.strip()
        if text in ("", CLEAR):
            return {}
        try:
            parsed = json.loads(text)
        except ValueError:
            return value
        return parsed
    return value


def rows_from_sql(
    sql_conn_id: str,
    sql: str,
    *,
    parameters: Mapping[str, Any] | list[Any] | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    log: Any = None,
) -> DesiredRows:
    """The rows of a query on an Airflow SQL connection, as dicts, fetched ``chunk_size`` at a time (a server-side
    cursor on PostgreSQL, so the database holds the result, not the worker).

    :param sql_conn_id: an Airflow connection whose hook is a common.sql ``DbApiHook`` (Postgres, Snowflake,
        BigQuery, SQLite, ...).
    :param sql: one query.
    :param parameters: the query's bind parameters.
    :param chunk_size: rows per ``fetchmany``.
    :raises HilosConfigurationError: the connection has no SQL hook.
    """
    hook = sql_hook(sql_conn_id)
    if log is not None:
        log.info(
            "Hilos sync: reading the desired state from %s (%s), %d rows at a time",
            sql_conn_id,
            type(hook).__name__,
            chunk_size,
        )
    with closing(hook.get_conn()) as conn:
        cursor = _cursor(conn)
        try:
            try:
                if parameters:
                    cursor.execute(sql, parameters)
                else:
                    cursor.execute(sql)
                chunk = cursor.fetchmany(chunk_size)
            except Exception as exc:  # the driver's own error (a syntax error, two statements, a missing table)
                first = (str(exc).strip().splitlines() or [""])[0][:300]
                raise HilosValidationError(
                    [
                        (
                            "sql",
                            f"the warehouse refused the query ({type(exc).__name__}: {first}); give one SELECT "
                            "statement (no ; between statements) that runs on that connection",
                        )
                    ],
                    f"Invalid Hilos sync query on {sql_conn_id}",
                ) from None
            if cursor.description is None:
                raise HilosValidationError(
                    [("sql", "returned no result set; give one SELECT query")], "Invalid Hilos sync query"
                )
            names = [column[0] for column in cursor.description]
            number = 0
            while chunk:
                for values in chunk:
                    number += 1
                    yield number, dict(zip(names, values, strict=False))
                chunk = cursor.fetchmany(chunk_size)
        finally:
            cursor.close()


def sql_hook(sql_conn_id: str) -> Any:
    """The ``DbApiHook`` of an Airflow connection.

    :raises HilosConfigurationError: the connection is missing, or its type has no SQL hook.
    """
    from airflow.providers.common.compat.sdk import BaseHook
    from airflow.providers.common.sql.hooks.sql import DbApiHook

    try:
        connection = BaseHook.get_connection(sql_conn_id)
    except Exception as exc:  # AirflowNotFoundException, in both Airflows' spellings
        if type(exc).__name__ != "AirflowNotFoundException":
            raise
        raise HilosConfigurationError(
            f"Hilos sync: the connection {sql_conn_id!r} (sql_conn_id) is not defined; create it (Admin > Connections,"
            f" or AIRFLOW_CONN_{sql_conn_id.upper()}) with the warehouse's connection type"
        ) from None
    hook = connection.get_hook()  # type: ignore[no-untyped-call]
    if not isinstance(hook, DbApiHook):
        raise HilosConfigurationError(
            f"Hilos sync: the connection {sql_conn_id!r} (sql_conn_id) is of type {connection.conn_type!r}, whose hook "
            f"({type(hook).__name__}) is not a SQL hook (common.sql DbApiHook); use a SQL connection (postgres, "
            "snowflake, sqlite, ...) and its provider"
        )
    return hook


def _cursor(conn: Any) -> Any:
    """A server-side (named) cursor where the driver has one (psycopg 2 and 3), else a plain cursor."""
    if type(conn).__module__.split(".")[0] in ("psycopg2", "psycopg"):
        try:
            return conn.cursor(name=f"hilos_sync_{uuid.uuid4().hex[:8]}")
        except TypeError:
            pass
    return conn.cursor()


def rows_from_list(rows: Any) -> Callable[[], DesiredRows]:
    """Rows given as a list (or the JSON a template rendered), as change-set rows are."""
    from airflow_provider_hilos.rows import rows_from_updates

    source = rows_from_updates(rows)
    return source
