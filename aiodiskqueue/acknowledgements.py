"""Which got item a `task_done()` finishes, for ``delivery="at-least-once"``.

With at-least-once delivery an item stays stored until its processing is done, so a
`task_done()` must name the right item: removing one that is still being processed loses it
if the process dies. asyncio's `task_done()` takes no argument, so the queue finds the item:

- `get_with_receipt()` returns a `Receipt` beside the item, and ``task_done(receipt)``
  finishes exactly that item (for a pool of workers fed through another queue, say);
- a plain `get()` leaves a *claim* in the calling task's context (a `contextvars` variable,
  which `asyncio.create_task` copies into the tasks it creates). A `task_done()` finishes the
  item that its context holds the only unfinished claim to: the item the task got itself, or,
  in a handler task, the item its creator got just before creating it;
- a `task_done()` whose context holds several unfinished claims, or none, is *anonymous*: it
  finishes one of those items, or one of all the got items, without saying which. It is kept
  until it can be proven which items are done: when the other claims are finished, or when
  as many `task_done()` calls are waiting as there are items they may finish.

An item is removed from storage only once it is proven done, so no unfinished item is ever
lost; a proof that comes late only means that, after a crash, an item already done may be
delivered again, which at-least-once delivery allows.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterable

__all__ = ["Acknowledgements", "Receipt"]


class Receipt:
    """Names one item got from a queue: pass it to ``task_done(receipt)`` to finish that item."""

    __slots__ = ("_done", "_key", "_queue")

    def __init__(self, queue: object, key: int) -> None:
        self._queue = queue
        self._key = key
        self._done = False

    def __repr__(self) -> str:
        state = "done" if self._done else "unfinished"
        return f"<Receipt {self._key} {state}>"


_claims: contextvars.ContextVar[tuple[Receipt, ...]] = contextvars.ContextVar(
    "aiodiskqueue_claims", default=()
)


class Acknowledgements:
    """The items a queue delivered at least once and not yet proven done."""

    def __init__(self, *, tracking: bool) -> None:
        """`tracking`: find the item of every `task_done()` (at-least-once delivery); without
        it, only receipts are checked, and plain `task_done()` calls name no item."""
        self._owner = object()  # what receipts of this queue's carry (not the queue: no cycle)
        self._tracking = tracking
        self._unproven: dict[int, Receipt] = {}  # delivered items not yet proven done, by key
        self._ambiguous: list[set[int]] = []  # task_done() calls each finishing one of a set
        self._anonymous = 0  # task_done() calls that may finish any unproven item

    @property
    def keys(self) -> Iterable[int]:
        """The keys of the items delivered and not yet proven done."""
        return self._unproven.keys()

    def delivered(self, key: int, *, claim: bool) -> Receipt:
        """Record that the item stored under `key` was handed out; return its receipt.

        With `claim`, the calling task's context holds a claim to it, for `finish()`. Without
        tracking nothing is kept: the item left storage when it was got, so that memory does
        not grow with the items got.
        """
        receipt = Receipt(self._owner, key)
        if self._tracking:
            self._unproven[key] = receipt
            if claim:
                _claims.set((*_claims.get(), receipt))
        return receipt

    def finish(self, receipt: Receipt | None) -> list[int]:
        """Record one `task_done()`; return the keys of the items now proven done (without
        tracking, none: they left storage when they were got).

        Raises `ValueError` for a receipt of another queue or one already finished.
        """
        if receipt is not None:
            self._check(receipt)
            if not self._tracking:
                receipt._done = True
                return []
            return self._prove([receipt._key])
        if not self._tracking:
            return []
        claims = tuple(each for each in _claims.get() if not each._done)
        mine = [each for each in claims if each._queue is self._owner]
        _claims.set(claims)
        if len(mine) == 1:
            return self._prove([mine[0]._key])
        if mine:
            self._ambiguous.append({each._key for each in mine})
        else:
            self._anonymous += 1
        return self._prove([])

    def _check(self, receipt: Receipt) -> None:
        if receipt._queue is not self._owner:
            raise ValueError(f"{receipt!r} is a receipt of another queue")
        if receipt._done or (self._tracking and receipt._key not in self._unproven):
            raise ValueError(f"{receipt!r} was already marked done")

    def _prove(self, keys: list[int]) -> list[int]:
        """Mark `keys` done, then whatever the waiting calls now prove; return all of them."""
        proven: list[int] = []
        while True:
            for key in keys:
                self._unproven.pop(key)._done = True
            proven.extend(keys)
            keys = self._deduce()
            if not keys:
                return proven

    def _deduce(self) -> list[int]:
        """Keys that the waiting anonymous and ambiguous calls prove done."""
        if not self._ambiguous and not self._anonymous:
            return []  # no call waits: the usual case, a task_done() that named its item
        unproven = set(self._unproven)
        # A call whose candidates were all proven done by others finished one of them.
        self._ambiguous = [each & unproven for each in self._ambiguous if each & unproven]
        for candidates in self._ambiguous:
            if len(candidates) == 1:
                self._ambiguous.remove(candidates)
                return list(candidates)
        if self._anonymous + len(self._ambiguous) >= len(self._unproven):
            # As many calls as items: every delivered item is done.
            self._ambiguous.clear()
            self._anonymous = 0
            return list(self._unproven)
        for candidates in self._ambiguous:
            within = [each for each in self._ambiguous if each <= candidates]
            if len(within) == len(candidates):  # as many calls as the items they name
                for each in within:
                    self._ambiguous.remove(each)
                return list(candidates)
        return []
