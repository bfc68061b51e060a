"""The two published path families of the Hilos API, and which one a connection uses.

The same conversation API is served under two path families:

* ``hilos``: Hilos's own document, ``https://api.hilos.io/api/inbox/conversation...``;
* ``activecampaign``: the copy in ActiveCampaign's developer reference, served on ActiveCampaign
  account hosts, ``https://<account>.api-us1.com/api/3/channel/whatsapp/inbox/conversation...``.

A connection chooses one with its extra ``api_family`` (``auto``, ``hilos`` or ``activecampaign``);
``auto`` picks ``activecampaign`` for an ActiveCampaign account host and ``hilos`` for any other host.
Standard library only: the sandbox and the provider metadata import it too.
"""

from __future__ import annotations

import enum
import re

#: The value of the ``api_family`` extra that lets the host decide.
AUTO = "auto"

#: ActiveCampaign account API hosts: ``<account>.api-us1.com`` (any ``api-usN.com``) and ``<account>.activehosted.com``.
_ACTIVECAMPAIGN_HOST = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.(?:api-us\d+\.com|activehosted\.com)", re.ASCII)


class ApiFamily(enum.StrEnum):
    """A path family of the Hilos API: where each endpoint lives under the base URL."""

    HILOS = "hilos"
    ACTIVECAMPAIGN = "activecampaign"

    @property
    def conversation_path(self) -> str:
        """The list endpoint (``GET``), also the root of the conversation paths."""
        return _CONVERSATION_PATHS[self]

    def update_path(self, conversation_id: str) -> str:
        """The "Partially update a Conversation" endpoint (``PATCH``) for an already URL-safe id."""
        return f"{self.conversation_path}/{conversation_id}/update"

    @property
    def label(self) -> str:
        """How the family is named in messages."""
        return _LABELS[self]


_CONVERSATION_PATHS = {
    ApiFamily.HILOS: "/api/inbox/conversation",
    ApiFamily.ACTIVECAMPAIGN: "/channel/whatsapp/inbox/conversation",
}
_LABELS = {
    ApiFamily.HILOS: "Hilos's own API (/api/inbox/...)",
    ApiFamily.ACTIVECAMPAIGN: "ActiveCampaign-hosted API (/channel/whatsapp/inbox/...)",
}

#: Every value the ``api_family`` extra accepts.
API_FAMILY_CHOICES: tuple[str, ...] = (AUTO, *(family.value for family in ApiFamily))


def is_activecampaign_host(hostname: str) -> bool:
    """Whether ``hostname`` is an ActiveCampaign account host (``acme.api-us1.com``, ``acme.activehosted.com``)."""
    return _ACTIVECAMPAIGN_HOST.fullmatch(hostname.lower().rstrip(".")) is not None


def resolve_api_family(choice: str, hostname: str) -> tuple[ApiFamily, str]:
    """The family a connection uses, and why (for the log and error messages).

    :param choice: ``auto``, ``hilos`` or ``activecampaign`` (already checked).
    :param hostname: the base URL's host.
    """
    if choice != AUTO:
        return ApiFamily(choice), f"api_family={choice!r} in the connection"
    if is_activecampaign_host(hostname):
        return ApiFamily.ACTIVECAMPAIGN, f"auto: {hostname} is an ActiveCampaign account host"
    return ApiFamily.HILOS, f"auto: {hostname} is not an ActiveCampaign account host"
