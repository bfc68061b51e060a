"""Provider metadata for Airflow's ProvidersManager (entry point ``apache_airflow_provider``).

Airflow imports this module while it loads its configuration, so it must import nothing
from Airflow (or anything heavy) itself.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_hilos import __version__
from airflow_provider_hilos.endpoints import API_FAMILY_CHOICES, AUTO

DEFAULT_BASE_URL = "https://api.hilos.io"
DEFAULT_WEB_BASE_URL = "https://app.hilos.io"
DEFAULT_HEADER_NAME = "Authorization"
DEFAULT_AUTH_SCHEME = "Token"
#: Which path family to call: decided by the host unless the connection says otherwise.
DEFAULT_API_FAMILY = AUTO
#: Seconds to open the TCP/TLS connection: a healthy API needs well under one second; ten seconds
#: ride out a slow DNS answer or a lost SYN (retransmitted after 1 s and 3 s) and still fail fast.
DEFAULT_CONNECT_TIMEOUT = 10.0
#: Seconds to wait for the answer: a single-conversation PATCH answers in well under a second;
#: thirty seconds tolerate a slow, loaded server, and free the worker slot long before a task timeout.
DEFAULT_READ_TIMEOUT = 30.0
#: Attempts per request (the first one included) for 429, 5xx gateway errors, timeouts, resets.
DEFAULT_MAX_ATTEMPTS = 5

#: The connection form's extra fields. Their names must not look secret to Airflow's masker
#: ("auth_header", "token", ... are hidden as ***), or the form would show and save "***".
CONN_FIELDS: dict[str, dict[str, Any]] = {
    "api_family": {
        "label": "API family",
        "description": "Which published paths to call. auto: ActiveCampaign account hosts (*.api-us1.com, "
        "*.activehosted.com) use /channel/whatsapp/inbox/...; any other host (api.hilos.io) uses /api/inbox/.... "
        "hilos or activecampaign force one.",
        "schema": {"type": ["string", "null"], "default": DEFAULT_API_FAMILY, "enum": list(API_FAMILY_CHOICES)},
    },
    "header_name": {
        "label": "Token header name",
        "description": "HTTP header that carries the token. Hilos: Authorization. "
        "Some account hosts (…/api/3) expect a header named Token.",
        "schema": {"type": ["string", "null"], "default": DEFAULT_HEADER_NAME},
    },
    "auth_scheme": {
        "label": "Auth scheme",
        "description": "The word before the token in that header. Hilos: Token (sends 'Token <key>'). "
        "Leave empty to send the bare token.",
        "schema": {"type": ["string", "null"], "default": DEFAULT_AUTH_SCHEME},
    },
    "connect_timeout": {
        "label": "Connect timeout (seconds)",
        "schema": {"type": ["number", "null"], "default": DEFAULT_CONNECT_TIMEOUT, "exclusiveMinimum": 0},
    },
    "read_timeout": {
        "label": "Read timeout (seconds)",
        "schema": {"type": ["number", "null"], "default": DEFAULT_READ_TIMEOUT, "exclusiveMinimum": 0},
    },
    "max_attempts": {
        "label": "Attempts per request",
        "description": "Including the first; retries 429, 500, 502, 503, 504, timeouts and dropped connections.",
        "schema": {"type": ["integer", "null"], "default": DEFAULT_MAX_ATTEMPTS, "minimum": 1},
    },
    "web_base_url": {
        "label": "Hilos web app URL",
        "description": "Where the 'Hilos conversation' task link points.",
        "schema": {"type": ["string", "null"], "default": DEFAULT_WEB_BASE_URL},
    },
    "allow_insecure_http": {
        "label": "Allow plain http:// to a non-loopback host",
        "description": "Off by default: the token would travel in clear text.",
        "schema": {"type": ["boolean", "null"], "default": False},
    },
}

UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema", "login", "port", "extra"],
    "relabeling": {"host": "Base URL", "password": "API token"},
    "placeholders": {
        "host": DEFAULT_BASE_URL,
        "password": "API token from https://app.hilos.io/dev/api-keys",
    },
}


def get_provider_info() -> dict[str, Any]:
    """Return the provider's metadata in the shape of Airflow's ``provider_info.schema.json``."""
    return {
        "package-name": "airflow-provider-hilos",
        "name": "Hilos",
        "description": "Hilos WhatsApp CRM API: update conversations (status, assignees, team, tags) from DAGs.",
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
            {"integration-name": "Hilos", "python-modules": ["airflow_provider_hilos.operators.conversation"]}
        ],
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
