"""Reading a paginated list of the API (Django REST Framework pages: ``count``, ``next``, ``previous``,
``results``), whatever the object: conversations, contacts.

Pages are requested by number, always from the connection's own Base URL: a ``next`` link only says that there is
a next page, so the token never goes to a host, scheme or port ``next`` names. The server may serve fewer rows per
page than asked (DRF caps it at its ``max_page_size``): the reader goes by the ``next`` link and the page numbers,
whatever size pages come in. A 404 ``Invalid page.`` past the end ends the listing.

Bounded whatever the server does: no page larger than asked, no more pages than the API's own ``count`` needs (with
slack for rows arriving meanwhile), three pages in a row of rows already read end it with an error (a server that
ignores the page number), and each answer is bounded in size and time by the transport.

Up to ``concurrency`` pages are read at once (after the first, which says how many there are), under the
connection's quota like every request, and handed to the caller in order; no page past the last one the count
announces is asked for. The pages read ahead of the caller hold at most :data:`MAX_ROWS_AHEAD` rows together, so
that the memory of a listing does not grow with its concurrency times its page size.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from airflow_provider_hilos.exceptions import HilosAPIError
from airflow_provider_hilos.projection import page_decoder

if TYPE_CHECKING:
    from airflow_provider_hilos.hooks.hilos import HilosHook

#: Pages in a row with only rows already read (and a next page announced) before a listing gives up.
MAX_STALE_PAGES = 3
#: The most rows the pages asked for ahead of the caller hold together (two pages at least): what a listing holds
#: in memory is bounded by this, not by ``concurrency`` x ``page_size`` (16 decoded pages of 1,000 conversations
#: are about 70 MB).
MAX_ROWS_AHEAD = 4_000


@dataclasses.dataclass
class ListingProgress:
    """How far a listing got: pages read, rows yielded, rows seen twice (skipped), and the count the API gave."""

    pages: int = 0
    rows: int = 0
    duplicates: int = 0
    count: int | None = None


def listing_page_bound(count: int, served: int) -> int:
    """The most pages a listing reads for ``count`` rows served ``served`` a page: what the count needs, plus a
    slack for the rows that arrive (and move) while it runs (a tenth more, and at least 10 pages)."""
    needed = -(-count // max(served, 1))
    return needed + max(10, needed // 10)


def row_key(row: Any, key: Callable[[Mapping[str, Any]], Any]) -> Any:
    """A row's de-duplication key (``None``: a row that can't be keyed is never called a repeat)."""
    if not isinstance(row, Mapping):
        return None
    try:
        return key(row)
    except (ValueError, TypeError):
        return None


class Seen(Protocol):
    """What a listing has seen: which rows of a page are new (a repeat is a row the list showed again as it
    shifted). A sync keeps this in its work database; :class:`KeySet` keeps it in memory."""

    def fresh(self, rows: Sequence[Any]) -> list[bool]: ...


class KeySet:
    """The keys seen so far, in memory (a set).

    :param key: a row's identity.
    """

    def __init__(self, key: Callable[[Mapping[str, Any]], Any]) -> None:
        self.key = key
        self.keys: set[Any] = set()

    def fresh(self, rows: Sequence[Any]) -> list[bool]:
        flags = []
        for row in rows:
            key = row_key(row, self.key)
            new = key is None or key not in self.keys
            if key is not None:
                self.keys.add(key)
            flags.append(new)
        return flags


class Page(NamedTuple):
    """One page's rows, and for each whether it is new to the listing (``False``: a repeat)."""

    number: int
    rows: list[Any]
    fresh: list[bool]


class Paginator:
    """Reads one list endpoint of one hook.

    :param hook: sends the requests (its quota, breaker and retries).
    :param path: the list's path (``/api/inbox/conversation``, ``/api/contact``).
    :param noun: what a row is, in messages (``conversation``, ``contact``).
    :param key: a row's identity, for de-duplication (its id as a compact value).
    """

    def __init__(self, hook: HilosHook, path: str, noun: str, key: Callable[[Mapping[str, Any]], Any]) -> None:
        self.hook = hook
        self.path = path
        self.noun = noun
        self.key = key

    def page(
        self,
        number: int,
        params: Mapping[str, Any],
        *,
        max_attempts: int | None = None,
        decode: Callable[[bytes], Any] | None = None,
    ) -> dict[str, Any]:
        """One page as the API answered it.

        :param decode: how its body is decoded (default: in full, ``json.loads``).
        :raises HilosAPIError: the answer is not a page object.
        """
        answer = self.hook.transport.request(
            "GET", self.path, params={"page": number, **params}, max_attempts=max_attempts, decode=decode
        )
        if not isinstance(answer, dict):
            raise self._error(f"answered the {self.noun} list with {type(answer).__name__} instead of a page object")
        return answer

    def _error(self, what: str, problem: str = "an answer that is not a page") -> HilosAPIError:
        return HilosAPIError(f"Hilos {what}", status_code=200, method="GET", path=self.path, problem=problem)

    def _fetch(
        self, number: int, params: Mapping[str, Any], decode: Callable[[bytes], Any] | None = None
    ) -> dict[str, Any] | None:
        try:
            return self.page(number, params, decode=decode)
        except HilosAPIError as exc:
            if number > 1 and exc.status_code == 404 and exc.detail == "Invalid page.":
                return None  # past the end (the list shrank while it was read): DRF's answer, not an error
            raise

    def pages(
        self,
        params: Mapping[str, Any],
        *,
        page_size: int,
        concurrency: int = 1,
        progress: ListingProgress | None = None,
        seen: Seen | None = None,
        stale_pages: int | None = MAX_STALE_PAGES,
        fields: Sequence[str] | None = None,
    ) -> Iterator[Page]:
        """Every page, in order, its rows as the API sent them (repeats included, flagged: the caller decides).

        :param params: the list's query parameters (filters), without ``page`` and ``page_size``.
        :param page_size: rows per page asked for.
        :param concurrency: pages read at once (1: one page read ahead of the caller; 0: none ahead, each page asked
            for once the caller is done with the one before), at most as many as hold :data:`MAX_ROWS_AHEAD` rows
            together (two pages at least). Once a page shows rows of earlier pages again (the list
            moves while it is read), the rest is read one page ahead at most: pages asked for together move it more.
        :param progress: filled in as pages arrive (pages, rows, duplicates, count).
        :param seen: what tells new rows from repeats (default: the keys, in memory).
        :param stale_pages: pages in a row with only rows ``seen`` knows (and a next page announced) that end the
            listing with an error (``None``: never; a caller that reads a list again, bounded, knows most rows).
        :param fields: the row fields the caller reads (``None``: every field): each page is decoded into rows of
            those fields alone (:func:`~airflow_provider_hilos.projection.page_decoder`).
        """
        progress = progress if progress is not None else ListingProgress()
        query = {**params, "page_size": page_size}
        seen = seen if seen is not None else KeySet(self.key)
        decode = page_decoder(fields) if fields is not None else None
        largest = served = 0  # the largest count the API gave, the most rows it served on one page
        stale = 0
        workers = max(1, min(concurrency, max(2, MAX_ROWS_AHEAD // max(page_size, 1))))
        ahead = concurrency > 0
        with ThreadPoolExecutor(workers, thread_name_prefix=f"hilos-list-{self.noun}") as pool:
            coming: dict[int, Future[dict[str, Any] | None]] = {1: pool.submit(self._fetch, 1, query, decode)}
            number = 1
            while True:
                answer = coming.pop(number).result()
                if answer is None:
                    return
                rows = answer.get("results")
                if not isinstance(rows, list):
                    raise self._error(
                        f"answered a {self.noun} list page without a results list (not a DRF page)",
                        "a page without results",
                    )
                progress.pages += 1
                if len(rows) > page_size:  # DRF serves at most the page size asked for: this is not a page of it
                    raise self._error(
                        f"answered list page {number} with {len(rows)} rows for page_size={page_size}: a paginated "
                        "API never serves more than it was asked; check the Base URL",
                        "a page larger than asked",
                    )
                count = answer.get("count")
                if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
                    progress.count = count
                    largest = max(largest, count)
                served = max(served, len(rows))
                if largest and progress.pages > listing_page_bound(largest, served):
                    raise self._error(
                        f"listed {progress.pages} pages of up to {served} rows, more than its own count "
                        f"({largest:,} {self.noun}s) allows, and still says there is a next page: the listing stops "
                        "(a server that never ends would be read forever); check the Base URL",
                        "more pages than the count",
                    )
                flags = seen.fresh(rows)
                fresh = sum(flags)
                progress.duplicates += len(rows) - fresh  # the list shifted: rows of an earlier page came again
                progress.rows += fresh
                more = bool(answer.get("next")) and bool(rows)
                stale = 0 if fresh else stale + 1
                if fresh < len(rows):
                    workers = 1  # the list moves: pages asked for together would each move it before being served
                too_stale = stale_pages is not None and stale >= stale_pages
                if more and not too_stale and ahead:
                    # the pages the count says exist (at least the next one), up to `workers` in flight
                    last = max(number + 1, -(-largest // served)) if largest and served else number + 1
                    for following in range(number + 1, min(last, number + workers) + 1):
                        if following not in coming:
                            coming[following] = pool.submit(self._fetch, following, query, decode)
                yield Page(number, rows, flags)
                if not more:
                    return
                if too_stale:  # a server that ignores the page number would be read forever
                    raise self._error(
                        f"answered {stale} list pages in a row with only {self.noun}s already read, and still says "
                        "there is a next page: the API seems to ignore the page number (check the Base URL), or "
                        f"the list moves as fast as it is read (a page's worth of {self.noun}s with new activity "
                        "before each page; try a larger page_size)",
                        "pages that repeat",
                    )
                number += 1
                if number not in coming:
                    coming[number] = pool.submit(self._fetch, number, query, decode)

    def rows(
        self,
        params: Mapping[str, Any],
        *,
        page_size: int,
        concurrency: int = 1,
        on_page: Callable[[ListingProgress], None] | None = None,
        repeats: bool = False,
    ) -> Iterator[dict[str, Any]]:
        """Every row, each once (``repeats``: a row shown again is yielded again, the later copy being the newer),
        ``on_page`` told the progress after each page."""
        progress = ListingProgress()
        for page in self.pages(params, page_size=page_size, concurrency=concurrency, progress=progress):
            for row, new in zip(page.rows, page.fresh, strict=True):
                if new or repeats:
                    yield row
            if on_page is not None:
                on_page(progress)
