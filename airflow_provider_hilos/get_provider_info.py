"""Provider metadata for Airflow's ProvidersManager (entry point ``apache_airflow_provider``).

Airflow imports this module while it loads its configuration, so it must import nothing
from Airflow (or anything heavy) itself.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_hilos import __version__
from airflow_provider_hilos.connection import CONN_FIELDS, UI_FIELD_BEHAVIOUR


def get_provider_info() -> dict[str, Any]:
    """Return the provider's metadata in the shape of Airflow's ``provider_info.schema.json``."""
    return {
        "package-name": "airflow-provider-hilos",
        "name": "Hilos",
        "description": "Hilos WhatsApp CRM API: update conversations (status, assignees, team, tags) from DAGs, "
        "export them, and keep them equal to a warehouse table (a declarative sync).",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Hilos",
                "external-doc-url": "https://hilos.io/docs/api",
                "tags": ["service"],
            }
        ],
        "hooks": [{"integration-name": "Hilos", "python-modules": ["airflow_provider_hilos.hooks.hilos"]}],
        "operators": [
            {
                "integration-name": "Hilos",
                "python-modules": [
                    "airflow_provider_hilos.operators.contacts",
                    "airflow_provider_hilos.operators.conversation",
                    "airflow_provider_hilos.operators.export",
                    "airflow_provider_hilos.operators.sync",
                ],
            }
        ],
        "triggers": [{"integration-name": "Hilos", "python-modules": ["airflow_provider_hilos.triggers.hilos"]}],
        "connection-types": [
            {
                "connection-type": "hilos",
                "hook-class-name": "airflow_provider_hilos.hooks.hilos.HilosHook",
                "hook-name": "Hilos",
                "conn-fields": CONN_FIELDS,
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
            }
        ],
        "extra-links": ["airflow_provider_hilos.links.HilosConversationLink"],
    }
