"""Agents by email and teams by name: the warehouse knows an agent's email and a team's name, the API wants their
ids. A :class:`Directory` is read once per run from ``GET /api/account-member`` (a plain list of the account's
members, each with its email and teams) and turns ``"ana@example.com"`` into user ``1`` and ``"Support"`` into team
``2``, compared case-insensitively.

Wherever an assignee is given (a conversation's ``assigned``, a contact's ``default_assignees``), an email is
accepted; wherever a team is (``assigned_team``), a name is. An email or a name the account does not have makes
that row invalid, naming the email and the row, before anything is sent.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_hilos.schemas import show

#: The fields holding users, and the field holding a team, on either object.
USER_FIELDS = ("assigned", "default_assignees")
TEAM_FIELDS = ("assigned_team",)


def looks_like_email(value: Any) -> bool:
    return isinstance(value, str) and "@" in value and " " not in value.strip()


def looks_like_name(value: Any) -> bool:
    """A team given by name: text that is not a number (``"3"`` is team 3, ``"Support"`` is a name)."""
    return isinstance(value, str) and bool(value.strip()) and not value.strip().isdigit() and value.strip() != "-"


@dataclass
class Directory:
    """The account's members and teams, by email and by name (lower-cased).

    :param users: lower-cased email -> user id.
    :param teams: lower-cased team name -> team id (a name two teams share maps to ``None``: ambiguous).
    """

    users: dict[str, int] = field(default_factory=dict)
    teams: dict[str, int | None] = field(default_factory=dict)

    @classmethod
    def from_members(cls, members: Iterable[Mapping[str, Any]]) -> Directory:
        """From ``AccountMemberUser`` rows (``id``, ``email``, ``teams: [{id, name}]``); rows without an id or an
        email are skipped."""
        directory = cls()
        team_ids: dict[str, set[int]] = {}
        for member in members:
            uid, email = member.get("id"), member.get("email")
            if isinstance(uid, int) and not isinstance(uid, bool) and isinstance(email, str) and email:
                directory.users[email.strip().lower()] = uid
            for team in member.get("teams") or []:
                if isinstance(team, Mapping) and isinstance(team.get("id"), int) and isinstance(team.get("name"), str):
                    team_ids.setdefault(team["name"].strip().lower(), set()).add(team["id"])
        directory.teams = {name: next(iter(ids)) if len(ids) == 1 else None for name, ids in team_ids.items()}
        return directory

    def user(self, email: str) -> int | None:
        return self.users.get(email.strip().lower())

    def team(self, name: str) -> int | None:
        return self.teams.get(name.strip().lower())


def _as_list(value: Any) -> Any:
    """A list as a cell or a rendered template may hold it: a list, JSON text of one (``'["ana@example.com"]'``), or
    one email alone."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except ValueError:
                return value
            return parsed if isinstance(parsed, list) else value
        if looks_like_email(text):
            return [text]
    return value


class PeopleResolver:
    """Replaces emails and team names in rows by ids, reading the directory (one request) the first time a row
    needs it.

    :param load: returns the directory (``HilosHook.account_members.directory``); called at most once.
    """

    def __init__(self, load: Callable[[], Directory]) -> None:
        self._load = load
        self._directory: Directory | None = None
        #: whether the directory was read (a run that never needed it sends no request for it)
        self.used = False

    @property
    def directory(self) -> Directory:
        if self._directory is None:
            self._directory = self._load()
            self.used = True
        return self._directory

    def needs(self, row: Any) -> bool:
        """Whether ``row`` names an agent by email or a team by name."""
        if not isinstance(row, Mapping):
            return False
        for name in USER_FIELDS:
            value = _as_list(row.get(name))
            if isinstance(value, list | tuple) and any(looks_like_email(item) for item in value):
                return True
        return any(looks_like_name(row.get(name)) for name in TEAM_FIELDS)

    def resolve(self, row: Mapping[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        """``row`` with emails and team names replaced by ids, and a problem per unknown one (the field, the email
        or name, what to fix); ``row`` as it is when it names nobody that way."""
        if not self.needs(row):
            return (row if type(row) is dict else dict(row)), []
        out, problems = dict(row), []
        directory = self.directory
        for name in USER_FIELDS:
            value = _as_list(row.get(name))
            if not isinstance(value, list | tuple) or not any(looks_like_email(item) for item in value):
                continue
            resolved = []
            for item in value:
                if looks_like_email(item):
                    uid = directory.user(item)
                    if uid is None:
                        problems.append(
                            (
                                name,
                                f"{show(item)} is not the email of a member of this Hilos account "
                                f"({len(directory.users)} members; emails compared ignoring case): fix the email, "
                                "or give the user's id",
                            )
                        )
                        continue
                    resolved.append(uid)
                else:
                    resolved.append(item)
            out[name] = resolved
        for name in TEAM_FIELDS:
            value = row.get(name)
            if isinstance(value, str) and looks_like_name(value):
                tid = directory.team(value)
                if tid is None:
                    why = "two teams have that name" if value.strip().lower() in directory.teams else "no team has it"
                    problems.append(
                        (
                            name,
                            f"{show(value)} is not one team of this Hilos account ({why}; names compared ignoring "
                            f"case, from the members' teams: {', '.join(sorted(directory.teams)[:10]) or 'none'}): "
                            "give the team's id",
                        )
                    )
                    out.pop(name, None)
                else:
                    out[name] = tid
        return out, problems
