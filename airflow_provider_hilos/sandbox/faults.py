"""The sandbox's weather: which requests fail, and how (throttled, server errors, dropped, slow, garbled).

A :class:`FaultConfig` sets the rates and the token-bucket limit; a :class:`FaultInjector` decides,
request by request, which fault (if any) a request gets, from seeded dice or a script
(``fail_next``); :func:`fault_response` writes the answers of the faults that replace the API's own.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import math
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, fields
from typing import Any

#: Fault kinds a request can be given (randomly by the rates, or scripted with ``fail_next``).
FAULT_KINDS = ("ok", "400", "404", "409", "429", "500", "502", "503", "drop", "slow", "truncate", "html200")
#: The faults answered instead of the API (before anything is applied): refusals, throttling, server errors.
ANSWERED_FAULTS = ("400", "404", "409", "429", "500", "502", "503")
#: The statuses ``error_rate`` may pick from: server errors, and refusals (DRF's shapes) a test wants at random.
ERROR_STATUSES = (400, 404, 409, 500, 502, 503)

HTML_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1>"
    "</center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
HTML_500 = (
    '<!doctype html>\n<html lang="en">\n<head><title>Server Error (500)</title></head>\n<body>\n'
    "  <h1>Server Error (500)</h1><p></p>\n</body>\n</html>\n"
)


@dataclass
class FaultConfig:
    """Fault and load knobs. Rates are shares of Hilos API requests (0 to 1), drawn independently.

    :param latency_ms: every API answer leaves this long after its request arrived (processing included).
    :param jitter_ms: extra random delay, uniform in ``[0, jitter_ms]``.
    :param rate_limit_per_second: a token-bucket limit; past it, 429 with ``Retry-After``.
    :param rate_limit_burst: the bucket's size.
    :param retry_after_seconds: the ``Retry-After`` sent with a random 429 or 503.
    :param throttle_rate: share answered 429 at random (before the update is applied).
    :param error_rate: share answered with one of ``error_statuses`` (before the update is applied).
    :param error_statuses: which of 500, 502, 503 (server errors) and 400, 404, 409 (refusals in DRF's shapes: a
        field error, a missing object, a conflict) ``error_rate`` picks from.
    :param drop_rate: share whose connection is dropped mid-response (after the update is applied).
    :param slow_rate: share answered only after ``slow_seconds`` (after the update is applied).
    :param slow_seconds: how slow a slow answer is.
    :param truncate_rate: share answered 200 with truncated JSON (after the update is applied).
    :param html_rate: share answered 200 with an HTML page instead of JSON (after the update is applied).
    :param max_page_size: the list endpoint's cap on ``page_size`` (a larger one is served this many rows, as DRF's
        ``PageNumberPagination.max_page_size`` does).
    :param arrivals_per_page: new conversations that arrive (at the front of the list) before each list request
        for a page after the first: a busy account, whose pages shift while a listing runs.
    :param moves_per_page: before each list request for a page after the first, this many of the conversations with
        the oldest activity get new activity and move to the front (those a listing by page number has not read
        yet, and misses).
    :param fault_seed: seed of the fault dice (same seed, same sequence of faults); ``--fault-seed`` on the
        command line.
    """

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    rate_limit_per_second: float | None = None
    rate_limit_burst: int = 1
    retry_after_seconds: float = 1.0
    throttle_rate: float = 0.0
    error_rate: float = 0.0
    error_statuses: tuple[int, ...] = (500, 502, 503)
    drop_rate: float = 0.0
    slow_rate: float = 0.0
    slow_seconds: float = 0.0
    truncate_rate: float = 0.0
    html_rate: float = 0.0
    max_page_size: int = 1000
    arrivals_per_page: int = 0
    moves_per_page: int = 0
    fault_seed: int = 0

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FaultConfig:
        """Settings checked when they are set (type and range), so a wrong one is refused at once instead of
        turning every later API call into a 500.

        :raises ValueError: an unknown setting (with a "did you mean"), a wrong type or a value out of range.
        """
        if not isinstance(values, dict):
            raise ValueError('fault settings must be a JSON object, e.g. {"error_rate": 0.1}')
        known = [f.name for f in fields(cls)]
        problems = []
        for name in sorted(set(values) - set(known), key=str):
            close = difflib.get_close_matches(str(name), known, n=1) or [k for k in known if str(name) in k][:1]
            problems.append(
                f"unknown fault setting {str(name)[:60]!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
            )
        if problems:
            raise ValueError(f"{'; '.join(problems)}; known: {', '.join(sorted(known))}")
        checked: dict[str, Any] = {}
        for name, value in values.items():
            checked[name] = _checked(name, value)
        return cls(**checked)


#: Each setting's kind and range: ``(type, minimum, maximum)``; ``None``: no bound.
_RANGES: dict[str, tuple[str, float | None, float | None]] = {
    "latency_ms": ("number", 0, 600_000),
    "jitter_ms": ("number", 0, 600_000),
    "rate_limit_per_second": ("number?", 0, 1_000_000),
    "rate_limit_burst": ("integer", 1, 1_000_000),
    "retry_after_seconds": ("number", 0, 86_400),
    "throttle_rate": ("number", 0, 1),
    "error_rate": ("number", 0, 1),
    "drop_rate": ("number", 0, 1),
    "slow_rate": ("number", 0, 1),
    "slow_seconds": ("number", 0, 3_600),
    "truncate_rate": ("number", 0, 1),
    "html_rate": ("number", 0, 1),
    "max_page_size": ("integer", 1, 100_000),
    "arrivals_per_page": ("integer", 0, 10_000),
    "moves_per_page": ("integer", 0, 10_000),
    "fault_seed": ("integer", None, None),
}
#: The most requests ``fail_next`` may script at once (each takes memory until it is used).
MAX_SCRIPTED = 100_000


def _checked(name: str, value: Any) -> Any:
    if name == "error_statuses":
        if not isinstance(value, list | tuple) or not value or any(s not in ERROR_STATUSES for s in value):
            raise ValueError(f"error_statuses must be a non-empty list of {', '.join(map(str, ERROR_STATUSES))}")
        return tuple(int(s) for s in value)
    kind, low, high = _RANGES[name]
    if value is None and kind.endswith("?"):
        return None
    integer = kind.startswith("integer")
    if isinstance(value, bool) or not isinstance(value, int | float) or (integer and not isinstance(value, int)):
        raise ValueError(f"{name} must be {'a whole number' if integer else 'a number'}, not {type(value).__name__}")
    if not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(
            f"{name} must be between {low:g} and {high:g}"
            if low is not None and high is not None
            else f"{name} is out of range"
        )
    if name == "rate_limit_per_second" and value == 0:
        raise ValueError("rate_limit_per_second must be greater than 0 (null: no limit)")
    return value


class FaultInjector:
    """Decides, request by request, which fault (if any) to inject. Thread-safe."""

    def __init__(self, config: FaultConfig | None = None) -> None:
        self._lock = threading.Lock()
        self.configure(config or FaultConfig())
        self.script: deque[str] = deque()
        self.injected: dict[str, int] = {}

    def configure(self, config: FaultConfig) -> None:
        with self._lock:
            self.config = config
            self._rng = random.Random(config.fault_seed)
            self._tokens = float(config.rate_limit_burst)
            self._refilled = time.monotonic()

    def fail_next(self, kind: Any, count: Any = 1) -> None:
        """Script the next ``count`` requests' fault (at most :data:`MAX_SCRIPTED` waiting in all).

        :raises ValueError: an unknown kind (with a "did you mean"), or a count that is not a whole number in range.
        """
        if not isinstance(kind, str) or kind not in FAULT_KINDS:
            close = difflib.get_close_matches(str(kind), FAULT_KINDS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown fault kind {str(kind)[:40]!r}{hint}; known: {', '.join(FAULT_KINDS)}")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError("count must be a whole number, at least 1")
        with self._lock:
            if len(self.script) + count > MAX_SCRIPTED:
                raise ValueError(
                    f"count: at most {MAX_SCRIPTED:,} scripted faults may wait at once ({len(self.script):,} do now)"
                )
            self.script.extend([kind] * count)

    def clear_script(self) -> int:
        """Forget the scripted faults not used yet; how many there were."""
        with self._lock:
            cleared = len(self.script)
            self.script.clear()
            return cleared

    def delay(self) -> float:
        cfg = self.config
        with self._lock:
            jitter = self._rng.uniform(0, cfg.jitter_ms) if cfg.jitter_ms else 0.0
        return (cfg.latency_ms + jitter) / 1000.0

    def _rate_limited(self) -> float | None:
        cfg = self.config
        if not cfg.rate_limit_per_second:
            return None
        now = time.monotonic()
        self._tokens = min(
            float(cfg.rate_limit_burst), self._tokens + (now - self._refilled) * cfg.rate_limit_per_second
        )
        self._refilled = now
        if self._tokens >= 1:
            self._tokens -= 1
            return None
        return (1 - self._tokens) / cfg.rate_limit_per_second

    def choose(self) -> tuple[str, float | None]:
        """The fault for the next request, and the seconds to ask the client to wait (429)."""
        with self._lock:
            if self.script:
                kind = self.script.popleft()
                wait = self.config.retry_after_seconds if kind in ("429", "503") else None
            elif (wait := self._rate_limited()) is not None:
                kind = "429"
            else:
                kind, wait = self._roll()
            self.injected[kind] = self.injected.get(kind, 0) + 1
            return kind, wait

    def _roll(self) -> tuple[str, float | None]:
        cfg, rng = self.config, self._rng
        if cfg.throttle_rate and rng.random() < cfg.throttle_rate:
            return "429", cfg.retry_after_seconds
        if cfg.error_rate and rng.random() < cfg.error_rate:
            status = str(rng.choice(cfg.error_statuses))
            return status, (cfg.retry_after_seconds if status == "503" else None)
        for kind, rate in (
            ("drop", cfg.drop_rate),
            ("slow", cfg.slow_rate),
            ("truncate", cfg.truncate_rate),
            ("html200", cfg.html_rate),
        ):
            if rate and rng.random() < rate:
                return kind, None
        return "ok", None


async def sleep_until(moment: float) -> None:
    if (left := moment - time.monotonic()) > 0:
        await asyncio.sleep(left)


#: The refusals the sandbox answers for the 4xx fault kinds, in the shapes DRF gives them.
REFUSALS: dict[str, dict[str, Any]] = {
    "400": {"status": ['"INJECTED" is not a valid choice.']},  # a field error
    "404": {"detail": "Not found."},  # a missing object (JSON: not Django's route 404)
    "409": {"detail": "Conflict: the object was changed by another request (sandbox fault 409)."},
}


async def fault_response(send: Any, kind: str, wait: float | None) -> None:
    status = int(kind)
    headers: list[tuple[bytes, bytes]] = []
    if kind in REFUSALS:
        body, ctype = json.dumps(REFUSALS[kind]).encode(), b"application/json"
    elif kind == "429":
        seconds = math.ceil(wait) if wait is not None else 1
        body = json.dumps({"detail": f"Request was throttled. Expected available in {seconds} seconds."}).encode()
        ctype = b"application/json"
        headers.append((b"retry-after", str(seconds).encode()))
    elif kind == "502":
        body, ctype = HTML_502.encode(), b"text/html"
    elif kind == "500":
        body, ctype = HTML_500.encode(), b"text/html; charset=utf-8"
    else:
        body = json.dumps({"detail": "Service temporarily unavailable, try again later."}).encode()
        ctype = b"application/json"
        if wait:
            headers.append((b"retry-after", str(math.ceil(wait)).encode()))
    headers += [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
