"""Decoding a list page for a sync: only the fields of each row the sync reads.

A conversation list row is about 1.4 KB of JSON (its contact, its first and last message, each assignee in full)
of which a sync reads six fields. :func:`page_decoder` decodes a DRF page with :mod:`msgspec` (which Airflow
already brings) into rows that hold only the fields asked for, skipping the rest of the text without building it
as Python objects: about half the CPU of ``json.loads`` on the same page, and much less memory per page in flight.

What the rows hold is what ``json.loads`` gives for those fields (a field the row lacks is missing, not ``None``);
a page that is not a JSON object with a list of objects in ``results`` (or not UTF-8) is decoded in full by
``json.loads``, so the listing judges it exactly as it judges any other answer (invalid JSON raises
:class:`ValueError`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

#: The page's own fields (DRF's page object), kept whatever the rows' projection.
_PAGE_FIELDS = ("count", "next", "previous")


def page_decoder(fields: Sequence[str]) -> Callable[[bytes], Any]:
    """A decoder of a list page (bytes) whose rows keep only ``fields`` (their top-level names).

    :param fields: the row fields to keep (``id``, ``status``, ...).
    """
    return _decoder(tuple(sorted(set(fields))))


@lru_cache(maxsize=16)
def _decoder(fields: tuple[str, ...]) -> Callable[[bytes], Any]:
    import msgspec  # Airflow's own dependency; imported once a sync lists

    unset = msgspec.UNSET
    row_type = msgspec.defstruct(
        "ListRow", [(name, Any, unset) for name in fields], forbid_unknown_fields=False, gc=False
    )
    page_type = msgspec.defstruct(
        "ListPage",
        [*((name, Any, unset) for name in _PAGE_FIELDS), ("results", list[row_type], unset)],  # type: ignore[valid-type]
        forbid_unknown_fields=False,
    )
    typed = msgspec.json.Decoder(page_type)

    def decode(body: bytes) -> Any:
        try:
            page = typed.decode(body)
        except msgspec.MsgspecError:  # not a page of objects, or not UTF-8 JSON: whatever json.loads makes of it
            return json.loads(body)
        answer: dict[str, Any] = {name: value for name in _PAGE_FIELDS if (value := getattr(page, name)) is not unset}
        results = getattr(page, "results")  # noqa: B009 (a field of a type made at run time)
        if results is not unset:
            answer["results"] = [
                {name: value for name in fields if (value := getattr(row, name)) is not unset} for row in results
            ]
        return answer

    return decode
