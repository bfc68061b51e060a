"""How a batch's messages name it and its rows: "Hilos batch ... row 12 (conversation ...)" for a change set, whose
rows are lines of a file; "Hilos sync ... conversation ..." for a sync, whose rows come from a query in no stable
order (a position there moves between runs, so a conversation is named by its id, and by its position only when it
has none)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Wording:
    """The words of a batch's messages.

    :param label: how messages begin (``Hilos batch``, ``Hilos sync``).
    :param unit: what a row is called in counts (``row``, ``desired row``, ``update``).
    :param by_key: name a row by its conversation id (its position only when it has none), not by its position.
    :param rest: what the advice calls going on without the invalid rows.
    :param key_field: the key's name in reports and results (``conversation_id``, a contact's ``phone``).
    """

    label: str = "Hilos batch"
    unit: str = "row"
    by_key: bool = False
    rest: str = "send the valid rows only"
    key_field: str = "conversation_id"

    @property
    def noun(self) -> str:
        """What a key names: ``conversation``, ``contact``."""
        return "contact" if self.key_field == "phone" else "conversation"

    def row(self, number: int, key: str | None) -> str:
        """``row 12 (conversation 6513...)``, or ``conversation 6513...`` (``contact +52...``) when rows are named by
        their key."""
        if self.by_key and key:
            return f"{self.noun} {key}"
        return f"row {number}" + (f" ({self.noun} {key})" if key else "")


#: A change set's words (the batch operator, ``HilosHook.update_conversations``).
BATCH = Wording()
#: A sync's desired rows (validated before anything is read from Hilos).
SYNC_ROWS = Wording("Hilos sync", "desired row", by_key=True, rest="sync the valid rows only")
#: A sync's updates (the apply phase).
SYNC_UPDATES = Wording("Hilos sync", "update", by_key=True, rest="sync the valid rows only")
