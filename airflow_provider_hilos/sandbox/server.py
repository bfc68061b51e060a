"""Run the sandbox: :class:`HilosSandbox` (a context manager) and the ``hilos-sandbox`` command."""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import signal
import socket
import sys
import threading
import time
from dataclasses import asdict, fields
from types import TracebackType
from typing import Any

import uvicorn

from airflow_provider_hilos.endpoints import ApiFamily
from airflow_provider_hilos.sandbox.app import SandboxApp
from airflow_provider_hilos.sandbox.faults import FaultConfig, FaultInjector
from airflow_provider_hilos.sandbox.state import SandboxState, payload_mismatches
from airflow_provider_hilos.urls import is_loopback_host


def warn_if_truncated(total: int, kept: int, limit: int | None) -> None:
    """Log a warning when the request log dropped requests (a test counting them would be short)."""
    if total > kept:
        logging.getLogger("airflow_provider_hilos.sandbox").warning(
            "Hilos sandbox: the request log holds the last %d of %d requests (request_log_limit=%s): %d dropped; "
            "raise request_log_limit to keep them all",
            kept,
            total,
            limit,
            total - kept,
        )


def _check_loopback(host: str) -> None:
    if not is_loopback_host(host):  # the same check that grants the provider's plain-http exemption
        raise ValueError(f"the sandbox listens on loopback only (127.0.0.1, ::1, localhost), not {host!r}")


def connection_for(url: str, token: str, extra: dict[str, Any]) -> dict[str, Any]:
    """A Hilos Airflow connection in JSON form (for ``AIRFLOW_CONN_<ID>``): a sandbox at ``url`` with ``token``."""
    conn: dict[str, Any] = {"conn_type": "hilos", "host": url, "password": token}
    if extra:
        conn["extra"] = extra
    return conn


class HilosSandbox:
    """A Hilos API sandbox served by uvicorn in a background thread.

    :param port: the TCP port; 0 picks a free one (read it back from :attr:`url`).
    :param host: a loopback address.
    :param token: the API token it accepts; a random one when omitted (:attr:`token`).
    :param conversations: how many conversations to seed.
    :param seed: the seed of the data (same seed, same conversations).
    :param api_family: the path family it serves: ``hilos`` (``/api/inbox/...``, the default, as api.hilos.io)
        or ``activecampaign`` (``/channel/whatsapp/inbox/...``, as ActiveCampaign account hosts). The other
        family's paths answer a Django route 404, as a real deployment would.
    :param prefix: a path prefix for the API, e.g. ``/api/3`` (account-host style).
    :param header_name: the header that carries the token.
    :param auth_scheme: the word before the token (``Token``); empty for a bare token.
    :param faults: fault and load knobs (:class:`~airflow_provider_hilos.sandbox.app.FaultConfig` or a dict).
    :param request_log_limit: how many requests the log keeps.
    :param extra_contacts: contacts beyond the conversations' own (each seeded conversation's ``contact`` is a
        seeded contact; these have no conversation).
    """

    def __init__(
        self,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        token: str | None = None,
        conversations: int = 100,
        seed: int = 7,
        api_family: ApiFamily | str = ApiFamily.HILOS,
        prefix: str = "",
        header_name: str = "Authorization",
        auth_scheme: str = "Token",
        faults: FaultConfig | dict[str, Any] | None = None,
        request_log_limit: int = 10_000,
        extra_contacts: int = 0,
    ) -> None:
        _check_loopback(host)
        self.host = host
        self.requested_port = port
        self.token = token or f"sandbox-{secrets.token_urlsafe(18)}"
        self.state = SandboxState(
            conversations=conversations, seed=seed, request_log_limit=request_log_limit, extra_contacts=extra_contacts
        )
        config = FaultConfig.from_dict(faults) if isinstance(faults, dict) else faults
        self.faults = FaultInjector(config)
        self.asgi = SandboxApp(
            self.state,
            token=self.token,
            api_family=api_family,
            prefix=prefix,
            header_name=header_name,
            auth_scheme=auth_scheme,
            faults=self.faults,
        )
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    def __repr__(self) -> str:
        return f"HilosSandbox(url={self.url if self.port else None!r}, conversations={self.state.conversation_count})"

    # -- life cycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 15.0) -> HilosSandbox:
        """Start serving; returns once the port accepts connections."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.requested_port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.asgi, log_level="warning", access_log=False, lifespan="off", timeout_keep_alive=30, backlog=2048
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="hilos-sandbox", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the Hilos sandbox did not start on {self.host}:{self.port}")
            time.sleep(0.01)
        return self

    def stop(self, *, wait: bool = True) -> None:
        """Stop serving and wait for the server thread to end.

        :param wait: ``False``: ask the server to stop and return at once; it closes its socket and its thread ends
            on their own within about 0.2 s (uvicorn's shutdown ticks). A test suite that starts a sandbox per test
            saves that much per test.
        """
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None and wait:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> HilosSandbox:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- addresses ----------------------------------------------------------------------------

    @property
    def root_url(self) -> str:
        """``http://127.0.0.1:PORT`` (the inspection API lives under ``/_sandbox`` here)."""
        if self.port is None:
            raise RuntimeError("the sandbox is not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The API base URL to put in a Hilos connection's host: root URL plus the prefix."""
        return self.root_url + self.asgi.prefix

    @property
    def api_family(self) -> ApiFamily:
        """The path family this sandbox serves."""
        return self.asgi.api_family

    def connection(self, **extra: Any) -> dict[str, Any]:
        """A Hilos Airflow connection in JSON form (for ``AIRFLOW_CONN_<ID>``) pointing here.

        A loopback host is not an ActiveCampaign account host, so for an ``activecampaign`` sandbox the
        connection names the family (``api_family``); for the default family it relies on ``auto``.
        """
        if self.api_family is not ApiFamily.HILOS:
            extra = {"api_family": self.api_family.value, **extra}
        return connection_for(self.url, self.token, extra)

    def connection_json(self, **extra: Any) -> str:
        return json.dumps(self.connection(**extra))

    # -- inspection (in process; the same data is served under /_sandbox) ---------------------

    def conversation(self, conversation_id: str) -> dict[str, Any]:
        """A conversation's current state."""
        return self.state.conversation(conversation_id)

    def conversation_ids(self) -> list[str]:
        return self.state.conversation_ids()

    def mismatches(self, conversation_id: str, payload: dict[str, Any]) -> list[str]:
        """The fields of ``payload`` the conversation does not show as sent: ``[]`` when it landed.

        :param conversation_id: the conversation's UUID.
        :param payload: what a PATCH was meant to set, in any form the operators accept, e.g.
            ``{"status": "CLOSED", "tags": ["vip"]}``.
        :raises ValueError: the payload is not a valid update.
        """
        return payload_mismatches(payload, self.state.conversation(conversation_id))

    def contact(self, contact_id: str) -> dict[str, Any]:
        """A contact as ``GET /api/contact/{id}`` shows it (``default_assignees`` as user objects)."""
        return self.state.contact_detail(contact_id, public=False)

    def contact_ids(self) -> list[str]:
        """Every contact's id, the most recently updated first."""
        return list(self.state.contacts.ordered())

    def contact_by_phone(self, phone: str) -> dict[str, Any] | None:
        """The contact with this phone (any spelling the phone library reads as the same E.164 number), or None."""
        from airflow_provider_hilos.contacts import canonical_phone

        cid = self.state.contacts.by_phone.get(canonical_phone(phone))
        return None if cid is None else self.contact(cid)

    def requests(self) -> list[dict[str, Any]]:
        """The request log, oldest first (tokens replaced by ``<sandbox-token>``). It keeps the last
        ``request_log_limit`` requests: when it dropped older ones, a warning says how many (see
        :attr:`requests_dropped`), so a count taken from it is never silently short."""
        kept = self.state.requests()
        warn_if_truncated(self.state.request_count, len(kept), self.state.request_log.maxlen)
        return kept

    @property
    def requests_dropped(self) -> int:
        """How many requests the log no longer holds (``request_log_limit`` or its byte bound reached)."""
        return self.state.request_count - len(self.state.request_log)

    def clear_requests(self) -> None:
        self.state.clear_requests()

    def set_faults(self, **settings: Any) -> FaultConfig:
        """Replace the fault settings, e.g. ``set_faults(error_rate=0.3, fault_seed=1)``."""
        config = FaultConfig.from_dict(settings)
        self.faults.configure(config)
        return config

    def fail_next(self, kind: str, count: int = 1) -> None:
        """Force the next ``count`` API requests to get fault ``kind`` (``503``, ``429``, ``400``, ``drop``, ...)."""
        self.faults.fail_next(kind, count)

    def clear_next(self) -> int:
        """Forget the faults :meth:`fail_next` queued and no request used yet; how many there were."""
        return self.faults.clear_script()

    def reset(self) -> None:
        """Back to the seeded data, no faults, empty request log."""
        self.asgi.reset()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hilos-sandbox",
        description="Serve a local Hilos API sandbox on loopback. Prints its base URL on the first line of stdout.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="TCP port; 0 picks a free one (default 8765)")
    parser.add_argument("--token", help="API token to accept (default: a random one, printed to stderr)")
    parser.add_argument("--conversations", type=int, default=100, help="conversations to seed (default 100)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the data (default 7)")
    parser.add_argument(
        "--api-family",
        default=ApiFamily.HILOS.value,
        choices=[f.value for f in ApiFamily],
        help="path family to serve: hilos (/api/inbox/..., as api.hilos.io; the default) or "
        "activecampaign (/channel/whatsapp/inbox/..., as ActiveCampaign account hosts)",
    )
    parser.add_argument("--prefix", default="", help="path prefix of the API, e.g. /api/3")
    parser.add_argument("--header-name", default="Authorization", help="header carrying the token")
    parser.add_argument("--auth-scheme", default="Token", help="word before the token ('' for a bare token)")
    faults = parser.add_argument_group("faults and load")
    faults.add_argument("--latency-ms", type=float, default=0.0)
    faults.add_argument("--jitter-ms", type=float, default=0.0)
    faults.add_argument(
        "--rate-limit-per-second",
        "--rate-limit",
        type=float,
        default=None,
        help="token bucket: requests per second before 429",
    )
    faults.add_argument("--rate-limit-burst", type=int, default=1)
    faults.add_argument(
        "--retry-after-seconds", "--retry-after", type=float, default=1.0, help="Retry-After seconds on 429/503"
    )
    faults.add_argument("--throttle-rate", type=float, default=0.0, help="share of requests answered 429")
    faults.add_argument("--error-rate", type=float, default=0.0, help="share answered 500/502/503")
    faults.add_argument(
        "--error-statuses",
        type=lambda text: tuple(int(part) for part in text.split(",")),
        default=(500, 502, 503),
        help="which statuses --error-rate picks from, comma-separated (default 500,502,503)",
    )
    faults.add_argument("--drop-rate", type=float, default=0.0, help="share whose connection drops mid-answer")
    faults.add_argument("--slow-rate", type=float, default=0.0)
    faults.add_argument("--slow-seconds", type=float, default=0.0)
    faults.add_argument("--truncate-rate", type=float, default=0.0, help="share answered with truncated JSON")
    faults.add_argument("--html-rate", type=float, default=0.0, help="share answered 200 with an HTML page")
    faults.add_argument(
        "--max-page-size", type=int, default=1000, help="the list's cap on page_size, as DRF's max_page_size"
    )
    faults.add_argument(
        "--arrivals-per-page",
        type=int,
        default=0,
        help="new conversations arriving before each list page after the first",
    )
    faults.add_argument(
        "--moves-per-page",
        type=int,
        default=0,
        help="conversations with the oldest activity moving to the front before each list page after the first",
    )
    faults.add_argument("--fault-seed", type=int, default=0, help="seed of the fault dice (fault_seed in Python)")
    parser.add_argument("--request-log-limit", type=int, default=10_000)
    parser.add_argument(
        "--extra-contacts",
        type=int,
        default=0,
        help="contacts beyond the conversations' own (they have no conversation)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``hilos-sandbox``."""
    args = build_parser().parse_args(argv)
    stop = threading.Event()  # handlers first: a stop request during start-up must not kill us half-way
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    # every FaultConfig field is the flag of the same name (--fault-seed is fault_seed): one spelling for both
    faults = FaultConfig(**{f.name: getattr(args, f.name) for f in fields(FaultConfig)})
    try:
        sandbox = HilosSandbox(
            port=args.port,
            host=args.host,
            token=args.token,
            conversations=args.conversations,
            seed=args.seed,
            api_family=args.api_family,
            prefix=args.prefix,
            header_name=args.header_name,
            auth_scheme=args.auth_scheme,
            faults=faults,
            request_log_limit=args.request_log_limit,
            extra_contacts=args.extra_contacts,
        ).start()
    except (ValueError, OSError) as exc:
        print(f"hilos-sandbox: {exc}", file=sys.stderr)
        return 2
    print(sandbox.url, flush=True)
    token_note = "the --token you gave" if args.token else f"{sandbox.token} (generated; pass --token to choose)"
    defaults = asdict(FaultConfig())
    active = {k: v for k, v in asdict(faults).items() if v != defaults[k]}
    print(
        f"Hilos sandbox: {args.conversations} conversations (seed {args.seed}) at {sandbox.url}, "
        f"API family {sandbox.api_family.value} ({sandbox.url}{sandbox.api_family.conversation_path})\n"
        f"  token: {token_note}\n"
        f"  inspect: {sandbox.root_url}/_sandbox/requests, {sandbox.root_url}/_sandbox/conversations/<id>\n"
        f"  faults: {active or 'none'}\n"
        "  Ctrl+C to stop.",
        file=sys.stderr,
        flush=True,
    )
    stop.wait()
    sandbox.stop()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
