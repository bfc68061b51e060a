"""The account's members (``GET /api/account-member``: a plain list, not pages, of ``AccountMemberUser`` rows with
their emails and teams), and the :class:`~airflow_provider_hilos.people.Directory` read from them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_hilos.endpoints import ApiFamily
from airflow_provider_hilos.exceptions import HilosAPIError, HilosConfigurationError
from airflow_provider_hilos.people import Directory

if TYPE_CHECKING:
    from airflow_provider_hilos.hooks.hilos import HilosHook

MEMBER_PATH = "/api/account-member"


class AccountMembers:
    """The members of one connection's account (Hilos's own API family only).

    :param hook: the connection.
    """

    def __init__(self, hook: HilosHook) -> None:
        self.hook = hook

    def list(self, **filters: str) -> list[dict[str, Any]]:
        """Every member (``email__iexact``, ``email__icontains``, ``search`` ... as the document's filters).

        :raises HilosAPIError: the answer is not a list.
        """
        settings = self.hook.settings
        if settings.api_family is not ApiFamily.HILOS:
            raise HilosConfigurationError(
                f"Hilos connection {settings.conn_id!r} uses {settings.family_display}, whose document has no account "
                "members: give agents by user id, or point a connection at api.hilos.io for emails"
            )
        answer = self.hook.transport.request("GET", MEMBER_PATH, params=filters or None, subject="the account members")
        if not isinstance(answer, list):
            raise HilosAPIError(
                f"Hilos answered GET {MEMBER_PATH} with {type(answer).__name__} instead of a list of members",
                status_code=200,
                method="GET",
                path=MEMBER_PATH,
                problem="an answer that is not a list",
            )
        return [member for member in answer if isinstance(member, dict)]

    def directory(self) -> Directory:
        """Members by email and teams by name (one request), for resolving the warehouse's emails and names."""
        directory = Directory.from_members(self.list())
        self.hook.log.info(
            "Hilos: %d account member(s) and %d team(s) read, to resolve agents given by email and teams by name",
            len(directory.users),
            len(directory.teams),
        )
        return directory
