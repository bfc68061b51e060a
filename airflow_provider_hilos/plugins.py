"""The provider's Airflow plugin: the "Hilos syncs" page (:mod:`airflow_provider_hilos.syncs_page`), a FastAPI app
the api-server mounts under ``/hilos``, and its entry in the UI's navigation (Browse → Hilos syncs).

Registered through the ``airflow.plugins`` entry point. Every Airflow component loads plugins (a worker does for
each task), so this module imports nothing heavy: the page's FastAPI app is built on its first request
(:class:`LazyApp`). On Airflow 2 (no FastAPI api-server) it registers nothing.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from airflow.plugins_manager import AirflowPlugin

#: Where the api-server mounts the page's app.
URL_PREFIX = "/hilos"

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class LazyApp:
    """An ASGI app that builds the page's FastAPI app (:func:`~airflow_provider_hilos.syncs_page.create_app`) on its
    first request: loading the plugin costs nothing in the components that never serve it."""

    def __init__(self) -> None:
        self._app: Any = None

    @property
    def app(self) -> Any:
        if self._app is None:
            from airflow_provider_hilos.syncs_page import create_app

            self._app = create_app()
        return self._app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    def __repr__(self) -> str:
        return "airflow_provider_hilos.syncs_page:create_app"


def has_api_server() -> bool:
    """Whether this Airflow has the FastAPI api-server (Airflow 3) that mounts plugin apps."""
    try:
        return importlib.util.find_spec("airflow.api_fastapi") is not None
    except (ImportError, ValueError):
        return False


class HilosPlugin(AirflowPlugin):
    """The "Hilos syncs" page and its place in the navigation."""

    name = "hilos"
    fastapi_apps = [{"app": LazyApp(), "url_prefix": URL_PREFIX, "name": "Hilos syncs"}] if has_api_server() else []
    external_views = (
        [
            {
                "name": "Hilos syncs",
                "href": f"{URL_PREFIX}/syncs",
                "destination": "nav",
                "category": "browse",
                "url_route": "hilos-syncs",
            }
        ]
        if fastapi_apps
        else []
    )
