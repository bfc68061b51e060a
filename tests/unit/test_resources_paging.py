"""The one paginator every list goes through: pages in order, read ahead under a bound, repeats flagged, and a
server that never ends (or ignores the page number) stopped with a message that says what to check."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from airflow_provider_hilos.exceptions import HilosAPIError
from airflow_provider_hilos.resources.paging import (
    MAX_STALE_PAGES,
    KeySet,
    ListingProgress,
    Paginator,
    listing_page_bound,
)


class PagedServer:
    """A DRF list of ``rows`` ids; ``served`` caps a page; ``ignore_page`` serves page 1 for every page."""

    def __init__(self, rows: int, *, served: int | None = None, ignore_page: bool = False, count=None) -> None:
        self.rows = [{"id": f"r{i}"} for i in range(rows)]
        self.served, self.ignore_page, self.count = served, ignore_page, count
        self.asked: list[int] = []
        self.lock = threading.Lock()
        self.in_flight = self.most_in_flight = 0
        self.delay = 0.0

    def request(self, method, path, params=None, max_attempts=None, **_):
        with self.lock:
            self.asked.append(params["page"])
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if params["page"] > 1:
                time.sleep(self.delay)
            size = self.served or params["page_size"]
            page = 1 if self.ignore_page else params["page"]
            start = (page - 1) * size
            if start >= len(self.rows) and page > 1:
                raise HilosAPIError("Hilos 404", status_code=404, method="GET", path=path, detail="Invalid page.")
            results = self.rows[start : start + size]
            more = self.ignore_page or start + size < len(self.rows)
            return {
                "count": len(self.rows) if self.count is None else self.count,
                "next": "http://elsewhere.example/?page=x" if more else None,
                "previous": None,
                "results": results,
            }
        finally:
            with self.lock:
                self.in_flight -= 1


def paginator(server: PagedServer) -> Paginator:
    hook = SimpleNamespace(transport=server)
    return Paginator(hook, "/api/contact", "contact", lambda row: row["id"])  # type: ignore[arg-type]


def test_every_row_comes_once_in_order_whatever_size_the_server_serves():
    server = PagedServer(23, served=5)  # DRF's max_page_size below what was asked
    rows = list(paginator(server).rows({}, page_size=10, concurrency=3))
    assert [r["id"] for r in rows] == [f"r{i}" for i in range(23)]
    assert sorted(set(server.asked)) == [1, 2, 3, 4, 5]  # never a page past what the count announces


def test_pages_are_read_ahead_up_to_the_concurrency_and_never_more():
    server = PagedServer(100)
    server.delay = 0.05  # long enough for the pages asked together to overlap
    pages = paginator(server).pages({}, page_size=10, concurrency=4)
    first = next(pages)
    assert first.number == 1 and all(first.fresh)
    rest = list(pages)
    assert [p.number for p in rest] == list(range(2, 11))
    assert 1 < server.most_in_flight <= 4


def test_the_pages_read_ahead_hold_at_most_max_rows_ahead_rows(monkeypatch):
    from airflow_provider_hilos.resources import paging

    monkeypatch.setattr(paging, "MAX_ROWS_AHEAD", 30)
    server = PagedServer(200)
    server.delay = 0.05
    pages = paginator(server).pages({}, page_size=10, concurrency=16)
    next(pages)
    time.sleep(0.2)  # the read-ahead has had time to ask for all it may
    assert max(server.asked) == 4  # pages 2 to 4: 30 rows ahead of the caller, not 16 pages
    assert [p.number for p in pages] == list(range(2, 21))
    assert server.most_in_flight <= 3
    monkeypatch.setattr(paging, "MAX_ROWS_AHEAD", 5)  # less than a page: two pages all the same
    server = PagedServer(50)
    server.delay = 0.05
    assert len(list(paginator(server).pages({}, page_size=10, concurrency=16))) == 5
    assert server.most_in_flight <= 2


def test_no_page_is_asked_for_ahead_with_concurrency_zero():
    server = PagedServer(30)
    pages = paginator(server).pages({}, page_size=10, concurrency=0)
    next(pages)
    assert server.asked == [1]  # the next page waits for the caller
    next(pages)
    assert server.asked == [1, 2]


def test_repeats_are_flagged_and_counted_and_yielded_only_when_asked():
    server = PagedServer(6)
    seen = KeySet(lambda row: row["id"])
    seen.fresh([{"id": "r0"}, {"id": "r1"}])  # read before (a first pass)
    progress = ListingProgress()
    pages = list(paginator(server).pages({}, page_size=3, seen=seen, progress=progress))
    assert pages[0].fresh == [False, False, True] and progress.duplicates == 2 and progress.rows == 4
    assert progress.pages == 2 and progress.count == 6
    assert len(list(paginator(server).rows({}, page_size=3, repeats=True))) == 6


def test_a_server_that_ignores_the_page_number_is_stopped_naming_what_to_check():
    server = PagedServer(10, ignore_page=True)
    with pytest.raises(HilosAPIError, match=r"answered 3 list pages in a row with only contacts already read"):
        list(paginator(server).rows({}, page_size=10))
    assert len(server.asked) <= MAX_STALE_PAGES + 2


def test_a_second_look_may_read_pages_it_knows_without_being_called_stale():
    server = PagedServer(40)
    seen = KeySet(lambda row: row["id"])
    list(paginator(server).pages({}, page_size=10, seen=seen))
    again = list(paginator(server).pages({}, page_size=10, seen=seen, stale_pages=None, concurrency=0))
    assert len(again) == 4 and not any(any(p.fresh) for p in again)


def test_a_page_larger_than_asked_or_more_pages_than_the_count_are_errors():
    big = PagedServer(30, served=30)
    with pytest.raises(HilosAPIError, match="30 rows for page_size=10"):
        list(paginator(big).rows({}, page_size=10, concurrency=0))
    liar = PagedServer(500, count=20)  # the count says 2 pages of 10; the server goes on
    with pytest.raises(HilosAPIError, match=r"more than its own count \(20 contacts\) allows"):
        list(paginator(liar).rows({}, page_size=10, concurrency=0))
    assert listing_page_bound(20, 10) == 12 and listing_page_bound(100_000, 100) == 1100


def test_answers_that_are_not_pages_are_errors():
    class Odd(PagedServer):
        def request(self, *a, **k):
            return self.answer

    odd = Odd(0)
    for answer, message in (([], "instead of a page object"), ({"count": 1}, "without a results list")):
        odd.answer = answer
        with pytest.raises(HilosAPIError, match=message):
            list(paginator(odd).rows({}, page_size=10))


def test_a_list_that_shrinks_while_it_is_read_ends_at_the_invalid_page():
    server = PagedServer(25)
    pages = paginator(server).pages({}, page_size=10, concurrency=0)
    next(pages)
    del server.rows[5:]  # 20 rows gone before page 2 is asked for
    assert list(pages) == []
