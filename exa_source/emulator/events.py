"""In-memory event log of the emulator: ``GET /v0/events`` (docs/exa-api.md §4.6).

Every action the emulator performs records the event the API would emit (``webset.created``,
``webset.search.completed``, ``webset.item.created``, ``import.completed``, ...), stamped with
the emulator's clock. An event keeps a reference to its object's serialized bytes, so the
``W x M`` item events of a seeded store cost a tuple each, not a copy of the item; the event
envelope is built around those bytes when a page is served.

Ids are ``event_`` + a ULID whose time part is ``createdAt`` (the real prefix is not
documented), so ascending id order is ascending ``(createdAt, emission)`` order and a page is a
reverse slice found by ``bisect``: newest first, like the other lists. The cursor is the bare
ULID of a page's last event; the next page holds the events strictly older than it.

Retention: the API keeps events 60 days. Events whose ``createdAt`` is more than
:data:`RETENTION_MS` before the emulator clock are neither listed nor found by id.
"""

from __future__ import annotations

import bisect
import random
import threading
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import orjson

from .store import Clock, Page, decode_ulid, encode_ulid, is_ulid, iso_ms, next_ulid

__all__ = [
    "EVENT_TYPES",
    "RETENTION_MS",
    "EventLog",
    "EventNotFoundError",
]

EVENT_TYPES = (
    "webset.created",
    "webset.deleted",
    "webset.paused",
    "webset.idle",
    "webset.search.created",
    "webset.search.canceled",
    "webset.search.completed",
    "webset.search.updated",
    "import.created",
    "import.completed",
    "webset.item.created",
    "webset.item.enriched",
    "monitor.created",
    "monitor.updated",
    "monitor.deleted",
    "monitor.run.created",
    "monitor.run.completed",
    "webset.export.created",
    "webset.export.completed",
)
"""The ``EventType`` enum (docs/exa-api.md §4.6); the emulator emits a subset of it."""

RETENTION_MS = 60 * 86_400_000
"""Events older than this (emulator clock) are gone, as the API keeps events 60 days."""

_PREFIX = "event_"


class EventNotFoundError(KeyError):
    """Unknown (or expired) event id."""


class _Event(NamedTuple):
    id: int  # the ULID value: ids are encoded only when served (seeding makes 200k)
    type: str
    created: int
    data: bytes


def _envelope(event: _Event) -> bytes:
    return b"".join(
        (
            b'{"id":"event_',
            encode_ulid(event.id).encode(),
            b'","object":"event","type":"',
            event.type.encode(),
            b'","data":',
            event.data,
            b',"createdAt":"',
            iso_ms(event.created).encode(),
            b'"}',
        )
    )


class EventLog:
    """Thread-safe, append-mostly log of events, listed newest first.

    Args:
        seed: Seed of the random part of event ids.
        clock: The emulator clock (retention is measured on it).
    """

    def __init__(self, seed: int = 0, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self._lock = threading.Lock()
        self._rng = random.Random(f"{seed}:events")
        self._events: dict[int, _Event] = {}
        self._ids: list[int] = []  # ULID values, ascending == oldest first
        self._by_type: dict[str, list[int]] = {}
        self._last_ulid = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._ids)

    def _new_id(self, created: int) -> int:
        self._last_ulid = next_ulid(created, self._last_ulid, self._rng)
        return self._last_ulid

    def emit(self, type_: str, data: bytes, at: int) -> str:
        """Record one event of ``type_`` carrying ``data`` (the object's JSON) at ``at`` ms.

        Args:
            type_: One of :data:`EVENT_TYPES`.
            data: The serialized object (Webset, WebsetSearch, WebsetItem or Import).
            at: ``createdAt`` in epoch ms (clamped to 1970 or later: the id's ULID time
                part is unsigned).

        Returns:
            The new event id.
        """
        with self._lock:
            event = _Event(self._new_id(max(at, 0)), type_, max(at, 0), data)
            self._insert([event])
        return _PREFIX + encode_ulid(event.id)

    def emit_many(
        self, events: Iterable[tuple[str, bytes, int]], return_ids: bool = False
    ) -> list[str]:
        """Record several ``(type, data, at)`` events at once (seeding).

        They may go back in time; events with the same ``at`` keep their given order.

        Args:
            events: ``(type, data, at)`` tuples, as for :meth:`emit`.
            return_ids: Encode and return the new ids (off by default: a big seed emits
                hundreds of thousands of events and nobody needs their ids).

        Returns:
            The new event ids in the order the events were given, or ``[]`` unless
            ``return_ids``.
        """
        given = list(events)
        ids: list[str] = [""] * len(given) if return_ids else []
        with self._lock:
            new: list[_Event] = []
            for n in sorted(range(len(given)), key=lambda k: given[k][2]):
                type_, data, at = given[n]
                at = max(at, 0)
                event = _Event(self._new_id(at), type_, at, data)
                new.append(event)
                if return_ids:
                    ids[n] = _PREFIX + encode_ulid(event.id)
            self._insert(new)
        return ids

    def _insert(self, new: Sequence[_Event]) -> None:
        if not new:
            return
        self._events.update((e.id, e) for e in new)
        _merge(self._ids, [e.id for e in new])
        groups: dict[str, list[int]] = {}
        for e in new:
            groups.setdefault(e.type, []).append(e.id)
        for type_, ids in groups.items():
            _merge(self._by_type.setdefault(type_, []), ids)

    def _floor_id(self, created_after: int | None) -> int:
        """Smallest id value still listed: retention and ``createdAfter`` (inclusive)."""
        return max(self.clock.now_ms() - RETENTION_MS, created_after or 0, 0) << 80

    def get_bytes(self, event_id: str) -> bytes:
        """Return one event as the API would.

        Raises:
            EventNotFoundError: Unknown event, or older than the retention.
        """
        ulid = event_id.removeprefix(_PREFIX)
        if len(ulid) == len(event_id) or not is_ulid(ulid):
            raise EventNotFoundError(event_id)
        value = decode_ulid(ulid)
        with self._lock:
            event = self._events.get(value)
            if event is None or value < self._floor_id(None):
                raise EventNotFoundError(event_id)
        return _envelope(event)

    def page(
        self,
        cursor: str | None,
        limit: int,
        types: Sequence[str] = (),
        created_after: int | None = None,
        created_before: int | None = None,
    ) -> Page:
        """One page of ``GET /v0/events``, newest first.

        Args:
            cursor: ``None`` or the bare ULID of the last event of the previous page
                (validated by the caller).
            limit: Page size (validated by the caller).
            types: Only these event types (any of them); all when empty.
            created_after: Only events created at or after this (epoch ms, inclusive).
            created_before: Only events created at or before this (epoch ms, inclusive).

        Returns:
            The page; ``hasMore: false, nextCursor: null`` on the last one.
        """
        with self._lock:
            low = self._floor_id(created_after)
            high = None
            if created_before is not None:
                if created_before < 0:
                    return Page([], False, None)
                high = (created_before + 1) << 80
            if cursor is not None and (high is None or decode_ulid(cursor) < high):
                high = decode_ulid(cursor)
            lists = [self._ids] if not types else [self._by_type.get(t, []) for t in set(types)]
            chosen: list[int] = []
            for ids in lists:
                end = len(ids) if high is None else bisect.bisect_left(ids, high)
                start = max(bisect.bisect_left(ids, low), end - limit - 1)
                chosen.extend(ids[start:end])
            chosen.sort(reverse=True)
            more = len(chosen) > limit
            chosen = chosen[:limit]
            items = [_envelope(self._events[i]) for i in chosen]
        if more:
            return Page(items, True, encode_ulid(chosen[-1]))
        return Page(items, False, None)

    def all(self) -> list[dict[str, Any]]:
        """Return every retained event, newest first, as dicts (for tests)."""
        with self._lock:
            low = self._floor_id(None)
            start = bisect.bisect_left(self._ids, low)
            raws = [_envelope(self._events[i]) for i in reversed(self._ids[start:])]
        return [orjson.loads(r) for r in raws]


def _merge(target: list[int], new: list[int]) -> None:
    """Add sorted ``new`` ids to sorted ``target`` (append when they are all newer)."""
    if not target or target[-1] < new[0]:
        target.extend(new)
    elif len(new) == 1:
        bisect.insort(target, new[0])
    else:
        target.extend(new)
        target.sort()
