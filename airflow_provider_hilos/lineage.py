"""OpenLineage for the provider's operators: what a run read, and that it wrote Hilos conversations.

Used by ``get_openlineage_facets_on_complete`` of the batch, sync and export operators, which Airflow's OpenLineage
provider calls when a task ends (when that provider is installed: ``pip install
"airflow-provider-hilos[openlineage]"``; without it nothing is imported and nothing runs). Every import is inside a
function; nothing is read or materialised for lineage's sake (no extra request, no database query: SQL inputs come
from parsing the query), and any error gives no lineage rather than a failed task.

Datasets:

* Hilos conversations: namespace ``hilos://<API host>[<path prefix>]`` (``hilos://api.hilos.io``,
  ``hilos://acme.api-us1.com/api/3``), name ``conversations``. OpenLineage publishes naming conventions for
  databases, warehouses and object stores, none for SaaS APIs; this follows the shape of those (a scheme naming the
  system, the authority naming the instance) so that two Airflow deployments writing to one Hilos account meet on one
  dataset, and two accounts do not.
* a file: its storage's dataset (``file`` and the absolute path; ``s3://bucket`` and the key; ...).
* a SQL query's tables: through the SQL connection's hook and OpenLineage's SQL parser, as common.sql's operators do.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

#: The name of the Hilos dataset (its namespace names the API instance).
CONVERSATIONS = "conversations"


def hilos_namespace(base_url: str) -> str:
    """``hilos://`` and the API's host (and path prefix, if any): the namespace of the Hilos datasets."""
    parts = urlsplit(base_url)
    return f"hilos://{parts.netloc.lower()}{parts.path.rstrip('/')}"


def storage_dataset_name(path: str) -> tuple[str, str]:
    """``(namespace, name)`` of a file, by OpenLineage's convention for its storage."""
    if "://" not in path:
        return "file", os.path.abspath(os.path.expanduser(path))
    parts = urlsplit(path)
    if parts.scheme == "file":
        return "file", parts.path
    return f"{parts.scheme}://{parts.netloc}", parts.path.lstrip("/")


def sql_input_datasets(sql_conn_id: str, sql: str) -> list[Any]:
    """The tables ``sql`` reads, as OpenLineage input datasets, from the query's text (no query is run).

    Uses the connection hook's OpenLineage database info (PostgreSQL, Snowflake, BigQuery ... provide it); for a
    hook without it (SQLite), the namespace is ``<conn type>://<host>``.
    """
    from airflow.providers.common.compat.openlineage.facet import Dataset
    from airflow.providers.openlineage.sqlparser import SQLParser

    from airflow_provider_hilos.sync.desired import sql_hook

    hook = sql_hook(sql_conn_id)
    connection = hook.get_connection(sql_conn_id)
    try:
        info = hook.get_openlineage_database_info(connection)
    except AttributeError:
        info = None
    if info is not None:
        parser = SQLParser(
            dialect=hook.get_openlineage_database_dialect(connection),
            default_schema=hook.get_openlineage_default_schema(),
        )
        lineage = parser.generate_openlineage_metadata_from_sql(
            sql=sql, hook=hook, database_info=info, database=None, sqlalchemy_engine=None, use_connection=False
        )
        return list(lineage.inputs)
    meta = SQLParser(dialect="generic").parse(sql)
    namespace = f"{connection.conn_type}://{connection.host or ''}"
    return [Dataset(namespace=namespace, name=table.qualified_name) for table in (meta.in_tables if meta else [])]


def hilos_dataset(base_url: str, *, written: int | None = None, name: str = CONVERSATIONS) -> Any:
    """The Hilos conversations (or ``name``: ``contacts``) of the API at ``base_url``, as a dataset (with the number
    written as output statistics, when it is an output)."""
    from airflow.providers.common.compat.openlineage.facet import Dataset

    return Dataset(namespace=hilos_namespace(base_url), name=name, facets=_written(written))


def file_dataset(path: str, *, written: int | None = None) -> Any:
    """A file as a dataset (with the rows written as output statistics, when it is an output)."""
    from airflow.providers.common.compat.openlineage.facet import Dataset

    namespace, name = storage_dataset_name(path)
    return Dataset(namespace=namespace, name=name, facets=_written(written))


def operator_lineage(*, inputs: list[Any], outputs: list[Any], run_counts: Mapping[str, Any]) -> Any:
    """An ``OperatorLineage`` of ``inputs`` and ``outputs``; ``run_counts`` go into a ``hilos`` run facet."""
    from airflow.providers.openlineage.extractors import OperatorLineage

    return OperatorLineage(inputs=inputs, outputs=outputs, run_facets={"hilos": _run_facet(run_counts)})


def _written(rows: int | None) -> dict[str, Any]:
    """An output dataset's facets: how many rows were written, when known."""
    if rows is None:
        return {}
    from airflow.providers.common.compat.openlineage.facet import OutputStatisticsOutputDatasetFacet

    return {"outputStatistics": OutputStatisticsOutputDatasetFacet(rowCount=rows)}


def _run_facet(counts: Mapping[str, Any]) -> Any:
    """A run facet holding the run's counts (``updated``, ``failed`` ...), numbers only."""
    import attrs

    from airflow.providers.common.compat.openlineage.facet import RunFacet

    @attrs.define
    class HilosRunFacet(RunFacet):
        """What a Hilos task did (counts of conversations)."""

        counts: dict[str, float] = attrs.field(factory=dict)

    numbers = {k: v for k, v in counts.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    return HilosRunFacet(counts=numbers)
