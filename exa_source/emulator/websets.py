"""In-memory data model of the emulated Websets and their Items (docs/exa-api.md §4).

Websets are few, so each is kept as a dict (with its embedded ``searches`` and
``enrichments`` lists) and serialized on read. Items can be millions, so, like imports, each
is kept as its serialized JSON bytes, per webset, with a sorted list of ids. Ids are
``<prefix>_`` + a ULID whose time part is ``createdAt``, so ascending id order is ascending
``(createdAt, id)`` order:

* websets list newest first (as recorded for ``GET /v0/websets``), a reverse slice;
* items list oldest first (the order recorded in two item samples), a forward slice.

Cursors are the bare ULID of the last object of the previous page (recorded for websets);
the next page holds the objects strictly after it in list order, whether or not it still
exists, so a cursor survives deletions between pages.

Nothing changes by itself: searches and enrichments stay as they are until
:meth:`WebsetStore.step` (``POST /_emulator/websets/step``) drives them. A search or an
enrichment is the very dict embedded in its webset's ``searches`` or ``enrichments``, so
``GET .../searches/{id}`` and the webset always agree.

``updatedAt``: an object that changes gets the emulator clock, or its previous ``updatedAt`` +
1 ms if the clock has not moved past it, so it strictly increases even in a frozen millisecond.
A webset's own ``updatedAt`` moves only when its status, title or metadata change, not when its
items, searches or enrichments do: the API does not say whether item activity bumps it, so a
connector must not rely on it (embedded searches and enrichments carry their own).
"""

from __future__ import annotations

import bisect
import logging
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from .events import EventLog
from .store import (
    ENTITY_TYPES,
    SEED_ANCHOR,
    Clock,
    Page,
    _dumps,
    encode_ulid,
    iso_ms,
    newest_first_page,
    next_ulid,
    to_ms,
)

logger = logging.getLogger(__name__)

__all__ = [
    "ENRICHMENT_FORMATS",
    "EnrichmentNotFoundError",
    "ItemNotFoundError",
    "SearchNotFoundError",
    "WebsetConflictError",
    "WebsetNotFoundError",
    "WebsetStore",
]

ENRICHMENT_FORMATS = ("text", "date", "number", "options", "email", "phone", "url")
"""Enrichment ``format`` values (docs/exa-api.md §4.3)."""

DASHBOARD_URL = "https://websets.exa.ai/websets/"
"""Prefix of ``Webset.dashboardUrl`` (required by exa-py 2.28, docs/exa-api.md §8 item 2)."""

_SEED_WINDOW_MS = 365 * 86_400_000


class WebsetNotFoundError(KeyError):
    """Unknown webset id or externalId."""


class ItemNotFoundError(KeyError):
    """Unknown item id (or an item of another webset)."""


class SearchNotFoundError(KeyError):
    """Unknown search id (or a search of another webset)."""


class EnrichmentNotFoundError(KeyError):
    """Unknown enrichment id (or an enrichment of another webset)."""


class WebsetConflictError(ValueError):
    """A webset with this ``externalId`` exists already (the API answers 409)."""


def _webset_dict(
    id_: str,
    status: str,
    external_id: str | None,
    title: str | None,
    searches: list[dict[str, Any]],
    enrichments: list[dict[str, Any]],
    metadata: Mapping[str, Any],
    created: int,
    updated: int,
) -> dict[str, Any]:
    return {
        "id": id_,
        "object": "webset",
        "status": status,
        "externalId": external_id,
        "title": title,
        "dashboardUrl": DASHBOARD_URL + id_,
        "searches": searches,
        "imports": [],
        "enrichments": enrichments,
        "monitors": [],
        "excludes": [],
        "metadata": dict(metadata),
        "createdAt": iso_ms(created),
        "updatedAt": iso_ms(updated),
    }


def _search_dict(
    id_: str,
    webset_id: str,
    params: Mapping[str, Any],
    status: str,
    found: int,
    created: int,
    updated: int,
) -> dict[str, Any]:
    count = int(params.get("count") or 10)
    criteria = [
        {"description": c["description"], "successRate": 100 if status == "completed" else 0}
        for c in params.get("criteria") or []
    ]
    return {
        "id": id_,
        "object": "webset_search",
        "status": status,
        "websetId": webset_id,
        "query": params["query"],
        "entity": params.get("entity") or {"type": "company"},
        "criteria": criteria,
        "count": count,
        "behavior": params.get("behavior") or "override",
        "exclude": list(params.get("exclude") or []),
        "scope": list(params.get("scope") or []),
        "progress": {
            "found": found,
            "analyzed": found,
            "completion": 100 if status == "completed" else 0,
            "timeLeft": None if status == "completed" else 0,
        },
        "recall": None,
        "metadata": dict(params.get("metadata") or {}),
        "canceledAt": None,
        "canceledReason": None,
        "createdAt": iso_ms(created),
        "updatedAt": iso_ms(updated),
    }


def _enrichment_dict(
    id_: str, webset_id: str, params: Mapping[str, Any], status: str, created: int, updated: int
) -> dict[str, Any]:
    description = params["description"]
    fmt = params.get("format") or "text"
    options = params.get("options")
    return {
        "id": id_,
        "object": "webset_enrichment",
        "status": status,
        "websetId": webset_id,
        "title": description[:60],
        "description": description,
        "format": fmt,
        "options": [{"label": o["label"]} for o in options] if options else None,
        "instructions": f"Find: {description}",
        "metadata": dict(params.get("metadata") or {}),
        "createdAt": iso_ms(created),
        "updatedAt": iso_ms(updated),
    }


def _result_dict(
    enrichment_id: str, fmt: str, status: str, result: list[str] | None, url: str
) -> dict[str, Any]:
    """An item's ``EnrichmentResult``: reasoning and a reference only when something was found."""
    found = status == "completed" and result is not None
    return {
        "object": "enrichment_result",
        "status": status,
        "format": fmt,
        "result": result,
        "reasoning": "Found on the website." if found else None,
        "references": [{"title": None, "snippet": None, "url": url}] if found else [],
        "enrichmentId": enrichment_id,
    }


def _evaluations(
    criteria: Sequence[str], url: str, rand: Callable[[], float]
) -> list[dict[str, Any]]:
    """An item's evaluations: one per criterion, 90 % ``yes`` (else ``unclear``), one reference."""
    return [
        {
            "criterion": c,
            "reasoning": f"The source states that it {c.lower()}.",
            "satisfied": "yes" if rand() < 0.9 else "unclear",
            "references": [{"title": "Source", "snippet": c, "url": url}],
        }
        for c in criteria
    ]


def _item_dict(
    id_: str,
    search_id: str,
    webset_id: str,
    properties: dict[str, Any],
    evaluations: list[dict[str, Any]],
    enrichments: list[dict[str, Any]],
    created: int,
    updated: int,
) -> dict[str, Any]:
    """A ``WebsetItem`` found by the search ``search_id``."""
    return {
        "id": id_,
        "object": "webset_item",
        "source": "search",
        "sourceId": search_id,
        "websetId": webset_id,
        "properties": properties,
        "evaluations": evaluations,
        "enrichments": enrichments,
        "createdAt": iso_ms(created),
        "updatedAt": iso_ms(updated),
    }


def _bump(obj: dict[str, Any], now: int) -> int:
    """Set ``obj["updatedAt"]`` to ``now``, or 1 ms after its old value if that is not earlier.

    So the ``updatedAt`` of an object that changes strictly increases even when many changes
    fall in one frozen millisecond. Returns the new value in epoch ms.
    """
    stamp = max(now, to_ms(obj["updatedAt"]) + 1)
    obj["updatedAt"] = iso_ms(stamp)
    return stamp


def _copy(obj: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of a JSON object (what a route serves, detached from the store)."""
    return orjson.loads(orjson.dumps(obj))  # type: ignore[no-any-return]


_ACTIVE_SEARCH = ("created", "pending", "running")
"""Search statuses a step drives (and that keep a webset ``running``)."""


def _busy(webset: Mapping[str, Any]) -> bool:
    """Whether a webset has a search to drive or a ``pending`` enrichment."""
    return any(s["status"] in _ACTIVE_SEARCH for s in webset["searches"]) or any(
        e["status"] == "pending" for e in webset["enrichments"]
    )


class _Webset:
    """One webset: its object, and its items as bytes keyed by id plus the sorted ids."""

    __slots__ = ("item_ids", "items", "obj")

    def __init__(self, obj: dict[str, Any]) -> None:
        self.obj = obj
        self.items: dict[str, bytes] = {}
        self.item_ids: list[str] = []  # ascending == oldest first == list order


class WebsetStore:
    """Thread-safe in-memory collection of websets and their items.

    Args:
        seed: Seed of the random generator used for ids and seeded data.
        clock: Clock to stamp with (share the import store's so one clock drives both).
        events: Event log to record ``webset.*`` events in (a new one on ``clock`` by
            default; share the emulator's so imports and websets land in one log).
    """

    def __init__(
        self, seed: int = 0, clock: Clock | None = None, events: EventLog | None = None
    ) -> None:
        self.clock = clock or Clock()
        self.events = events if events is not None else EventLog(seed=seed, clock=self.clock)
        self._lock = threading.RLock()
        self._seed = seed
        self._rng = random.Random(f"{seed}:websets")
        self._seed_calls = 0
        self._websets: dict[str, _Webset] = {}
        self._ids: list[str] = []  # ascending == oldest first
        self._external: dict[str, str] = {}
        self._last_stamp = 0
        self._last_ulid: dict[str, int] = {}

    # ------------------------------------------------------------------ basics

    def __len__(self) -> int:
        with self._lock:
            return len(self._ids)

    def item_count(self) -> int:
        """Return the number of items over all websets."""
        with self._lock:
            return sum(len(w.item_ids) for w in self._websets.values())

    def _stamp(self) -> int:
        stamp = max(self.clock.now_ms(), self._last_stamp + 1)
        self._last_stamp = stamp
        return stamp

    def _new_id(self, prefix: str, created_ms: int) -> str:
        """``<prefix>_<ulid>`` with time part ``created_ms``, monotonic per prefix."""
        return self._seed_id(self._rng, prefix, created_ms)

    def _resolve(self, webset: str) -> _Webset:
        """Find a webset by id or externalId (docs/exa-api.md §4.1 note on ``{webset}``)."""
        ws = self._websets.get(webset)
        if ws is None:
            real = self._external.get(webset)
            ws = self._websets.get(real) if real is not None else None
        if ws is None:
            raise WebsetNotFoundError(webset)
        return ws

    def _add(self, ws: _Webset) -> None:
        id_ = ws.obj["id"]
        self._websets[id_] = ws
        if not self._ids or self._ids[-1] < id_:
            self._ids.append(id_)
        else:
            bisect.insort(self._ids, id_)
        if ws.obj["externalId"] is not None:
            self._external[ws.obj["externalId"]] = id_

    # ------------------------------------------------------------------ websets

    def create(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Create a webset from a (validated) ``CreateWebsetParameters`` body.

        The optional ``search`` becomes one embedded search in status ``created`` and the
        webset is ``running``; without a search the webset is ``idle``. Each of
        ``enrichments`` becomes an embedded enrichment in status ``pending``. Items only appear
        when :meth:`step` drives the search, or through :meth:`seed`.

        Raises:
            WebsetConflictError: ``externalId`` is taken (the API's 409).
        """
        with self._lock:
            external = params.get("externalId")
            if external is not None and external in self._external:
                raise WebsetConflictError(external)
            now = self._stamp()
            id_ = self._new_id("webset", now)
            searches = []
            if params.get("search") is not None:
                sid = self._new_id("wsearch", now)
                searches.append(_search_dict(sid, id_, params["search"], "created", 0, now, now))
            enrichments = [
                _enrichment_dict(self._new_id("wenrich", now), id_, e, "pending", now, now)
                for e in params.get("enrichments") or []
            ]
            obj = _webset_dict(
                id_,
                "running" if searches else "idle",
                external,
                params.get("title"),
                searches,
                enrichments,
                params.get("metadata") or {},
                now,
                now,
            )
            self._add(_Webset(obj))
            emitted = [("webset.created", orjson.dumps(obj), now)]
            emitted.extend(("webset.search.created", orjson.dumps(s), now) for s in searches)
            self.events.emit_many(emitted)
            logger.debug("created %s", id_)
            return orjson.loads(orjson.dumps(obj))  # type: ignore[no-any-return]

    def get(self, webset: str, expand_items: bool = False) -> dict[str, Any]:
        """Return a webset (by id or externalId), with all its items if ``expand_items``.

        Raises:
            WebsetNotFoundError: Unknown webset.
        """
        return orjson.loads(self.get_bytes(webset, expand_items))  # type: ignore[no-any-return]

    def get_bytes(self, webset: str, expand_items: bool = False) -> bytes:
        """:meth:`get` already serialized."""
        with self._lock:
            ws = self._resolve(webset)
            raw = orjson.dumps(ws.obj)
            if not expand_items:
                return raw
            items = b",".join(ws.items[i] for i in ws.item_ids)
        return raw[:-1] + b',"items":[' + items + b"]}"

    def page(self, cursor: str | None, limit: int, quirk_last_page: bool = False) -> Page:
        """One page of ``GET /v0/websets``, newest first, keyset-paginated (see module doc).

        ``quirk_last_page`` reproduces the imports list's recorded ``hasMore: true,
        nextCursor: null`` on the last page; off by default, as nothing recorded it here.
        """
        with self._lock:
            page = newest_first_page(
                self._ids, "webset_", cursor, limit, lambda i: orjson.dumps(self._websets[i].obj)
            )
        if not page.has_more and quirk_last_page:
            return Page(page.items, True, None)
        return page

    def update(
        self, webset: str, title: str | None = None, metadata: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """Apply ``POST /v0/websets/{id}``: set title and/or replace metadata, bump updatedAt.

        Raises:
            WebsetNotFoundError: Unknown webset.
        """
        with self._lock:
            ws = self._resolve(webset)
            if title is not None:
                ws.obj["title"] = title
            if metadata is not None:
                ws.obj["metadata"] = dict(metadata)
            _bump(ws.obj, self._stamp())
            return self.get(ws.obj["id"])

    def delete(self, webset: str) -> dict[str, Any]:
        """Delete a webset and its items; return it as it was (without items).

        Raises:
            WebsetNotFoundError: Unknown webset.
        """
        with self._lock:
            ws = self._resolve(webset)
            obj = self.get(ws.obj["id"])
            del self._websets[obj["id"]]
            del self._ids[bisect.bisect_left(self._ids, obj["id"])]
            if obj["externalId"] is not None:
                self._external.pop(obj["externalId"], None)
            self.events.emit("webset.deleted", orjson.dumps(obj), self._stamp())
            return obj

    def ids(self) -> list[str]:
        """Return all webset ids in list order (newest first)."""
        with self._lock:
            return self._ids[::-1]

    # ------------------------------------------------------------------ items

    def items_page(
        self, webset: str, cursor: str | None, limit: int, source_id: str | None = None
    ) -> Page:
        """One page of ``GET /v0/websets/{webset}/items``, oldest first, keyset-paginated.

        Args:
            webset: Webset id or externalId.
            cursor: ``None`` or the bare ULID of the last item of the previous page.
            limit: Page size (validated by the caller).
            source_id: Only items whose ``sourceId`` is this (a search or import id).

        Raises:
            WebsetNotFoundError: Unknown webset.
        """
        with self._lock:
            ws = self._resolve(webset)
            ids = ws.item_ids
            pos = 0 if cursor is None else bisect.bisect_right(ids, "witem_" + cursor)
            data = ws.items
            if source_id is None:
                chosen = ids[pos : pos + limit]
                more = pos + limit < len(ids)
            else:
                needle = b'"sourceId":' + orjson.dumps(source_id)
                chosen = []
                more = False
                for i in ids[pos:]:
                    if needle in data[i]:
                        if len(chosen) == limit:
                            more = True
                            break
                        chosen.append(i)
            items = [data[i] for i in chosen]
        if more and chosen:
            return Page(items, True, chosen[-1].removeprefix("witem_"))
        return Page(items, False, None)

    def get_item_bytes(self, webset: str, item_id: str) -> bytes:
        """Return one item's bytes.

        Raises:
            WebsetNotFoundError: Unknown webset. ItemNotFoundError: unknown item.
        """
        with self._lock:
            raw = self._resolve(webset).items.get(item_id)
        if raw is None:
            raise ItemNotFoundError(item_id)
        return raw

    def delete_item(self, webset: str, item_id: str) -> dict[str, Any]:
        """Delete one item and return it as it was.

        Emits nothing: the API has no item-deleted event type (docs/exa-api.md §4.6), so a
        connector following events never learns of a deletion.

        Raises:
            WebsetNotFoundError: Unknown webset. ItemNotFoundError: unknown item.
        """
        with self._lock:
            ws = self._resolve(webset)
            raw = ws.items.pop(item_id, None)
            if raw is None:
                raise ItemNotFoundError(item_id)
            del ws.item_ids[bisect.bisect_left(ws.item_ids, item_id)]
        return orjson.loads(raw)  # type: ignore[no-any-return]

    def item_ids(self, webset: str) -> list[str]:
        """Return the item ids of a webset in list order (oldest first)."""
        with self._lock:
            return list(self._resolve(webset).item_ids)

    # ------------------------------------------------------------------ searches

    def _search(self, ws: _Webset, search_id: str) -> dict[str, Any]:
        for search in ws.obj["searches"]:
            if search["id"] == search_id:
                return search  # type: ignore[no-any-return]
        raise SearchNotFoundError(search_id)

    def _enrichment(self, ws: _Webset, enrichment_id: str) -> dict[str, Any]:
        for enrichment in ws.obj["enrichments"]:
            if enrichment["id"] == enrichment_id:
                return enrichment  # type: ignore[no-any-return]
        raise EnrichmentNotFoundError(enrichment_id)

    def _set_status(self, ws: _Webset, status: str, now: int) -> bool:
        """Set the webset's status, bumping its ``updatedAt`` if it changed; return whether."""
        if ws.obj["status"] == status:
            return False
        ws.obj["status"] = status
        _bump(ws.obj, now)
        return True

    def create_search(self, webset: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Add a search (a validated ``CreateWebsetSearchParameters`` body) to a webset.

        The search is ``created`` with nothing found; the webset becomes ``running`` (its
        ``updatedAt`` bumped if that changed its status). Emits ``webset.search.created``.
        Nothing is found until :meth:`step` drives it; ``behavior`` is recorded only (an
        ``override`` search does not discard earlier items).

        Raises:
            WebsetNotFoundError: Unknown webset.
        """
        with self._lock:
            ws = self._resolve(webset)
            now = self._stamp()
            search = _search_dict(
                self._new_id("wsearch", now), ws.obj["id"], params, "created", 0, now, now
            )
            ws.obj["searches"].append(search)
            self._set_status(ws, "running", now)
            self.events.emit("webset.search.created", orjson.dumps(search), now)
            return _copy(search)

    def get_search(self, webset: str, search_id: str) -> dict[str, Any]:
        """Return one search of a webset (the same object as in its ``searches``).

        Raises:
            WebsetNotFoundError: Unknown webset. SearchNotFoundError: unknown search.
        """
        with self._lock:
            return _copy(self._search(self._resolve(webset), search_id))

    def cancel_search(self, webset: str, search_id: str) -> dict[str, Any]:
        """Cancel a search: ``canceled``, ``canceledAt``, reason ``webset_canceled``.

        Emits ``webset.search.canceled``. A ``completed`` or ``canceled`` search is returned
        unchanged (no event). The webset's own status is settled by the next :meth:`step`.

        Raises:
            WebsetNotFoundError: Unknown webset. SearchNotFoundError: unknown search.
        """
        with self._lock:
            search = self._search(self._resolve(webset), search_id)
            if search["status"] in _ACTIVE_SEARCH:
                stamp = _bump(search, self._stamp())
                search["status"] = "canceled"
                search["canceledAt"] = iso_ms(stamp)
                search["canceledReason"] = "webset_canceled"
                search["progress"]["timeLeft"] = None
                self.events.emit("webset.search.canceled", orjson.dumps(search), stamp)
            return _copy(search)

    # ------------------------------------------------------------------ enrichments

    def create_enrichment(self, webset: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Add an enrichment (a validated ``CreateEnrichmentParameters`` body) to a webset.

        The enrichment is ``pending``; every item of the webset gets a ``pending`` result for
        it (its ``updatedAt`` bumped) and the webset becomes ``running`` (``updatedAt`` bumped
        if that changed its status). Emits nothing: the API has no enrichment event type.

        Raises:
            WebsetNotFoundError: Unknown webset.
        """
        with self._lock:
            ws = self._resolve(webset)
            now = self._stamp()
            eid = self._new_id("wenrich", now)
            enrichment = _enrichment_dict(eid, ws.obj["id"], params, "pending", now, now)
            ws.obj["enrichments"].append(enrichment)
            pending = _result_dict(eid, enrichment["format"], "pending", None, "")

            def add(item: dict[str, Any]) -> bool:
                item["enrichments"] = [*(item["enrichments"] or []), pending]
                return True

            self._edit_items(ws, b"", add, now)
            self._set_status(ws, "running", now)
            return _copy(enrichment)

    def get_enrichment(self, webset: str, enrichment_id: str) -> dict[str, Any]:
        """Return one enrichment of a webset (the same object as in its ``enrichments``).

        Raises:
            WebsetNotFoundError: Unknown webset. EnrichmentNotFoundError: unknown enrichment.
        """
        with self._lock:
            return _copy(self._enrichment(self._resolve(webset), enrichment_id))

    def delete_enrichment(self, webset: str, enrichment_id: str) -> dict[str, Any]:
        """Remove an enrichment and its results from every item; return it as it was.

        The items that carried a result for it get their ``updatedAt`` bumped. Emits nothing.

        Raises:
            WebsetNotFoundError: Unknown webset. EnrichmentNotFoundError: unknown enrichment.
        """
        with self._lock:
            ws = self._resolve(webset)
            enrichment = self._enrichment(ws, enrichment_id)
            ws.obj["enrichments"].remove(enrichment)

            def drop(item: dict[str, Any]) -> bool:
                kept = [r for r in item["enrichments"] or [] if r["enrichmentId"] != enrichment_id]
                changed = len(kept) != len(item["enrichments"] or [])
                item["enrichments"] = kept
                return changed

            self._edit_items(ws, orjson.dumps(enrichment_id), drop, self._stamp())
            return enrichment

    def cancel_enrichment(self, webset: str, enrichment_id: str) -> dict[str, Any]:
        """Cancel an enrichment: status ``canceled``; its ``pending`` results become ``canceled``.

        Items whose result changed get their ``updatedAt`` bumped; a canceled enrichment is
        returned unchanged. Emits nothing. The webset's own status is settled by the next
        :meth:`step`.

        Raises:
            WebsetNotFoundError: Unknown webset. EnrichmentNotFoundError: unknown enrichment.
        """
        with self._lock:
            ws = self._resolve(webset)
            enrichment = self._enrichment(ws, enrichment_id)
            if enrichment["status"] != "canceled":
                now = self._stamp()
                enrichment["status"] = "canceled"
                _bump(enrichment, now)
                pending = _result_dict(enrichment_id, enrichment["format"], "pending", None, "")

                def cancel(item: dict[str, Any]) -> bool:
                    for result in item["enrichments"]:
                        if result == pending:
                            result["status"] = "canceled"
                    return True

                self._edit_items(ws, orjson.dumps(pending), cancel, now)
            return _copy(enrichment)

    def _edit_items(
        self,
        ws: _Webset,
        needle: bytes,
        edit: Callable[[dict[str, Any]], bool],
        now: int,
        limit: int | None = None,
    ) -> tuple[list[tuple[str, bytes, int]], bool]:
        """Apply ``edit`` to the items (oldest first) whose bytes contain ``needle``.

        An item ``edit`` changed (it returns True) is stored again with ``updatedAt`` bumped.

        Args:
            ws: The webset.
            needle: Bytes a candidate item contains (``b""``: every item).
            edit: Changes an item dict in place; returns whether it changed anything.
            now: The stamp to bump to.
            limit: Change at most this many items (all when ``None``).

        Returns:
            ``(id, new bytes, new updatedAt)`` of each changed item, and whether candidates
            were left over because of ``limit``.
        """
        changed: list[tuple[str, bytes, int]] = []
        data = ws.items
        for item_id in ws.item_ids:
            raw = data[item_id]
            if needle not in raw:
                continue
            if limit is not None and len(changed) >= limit:
                return changed, True
            item = orjson.loads(raw)
            if edit(item):
                stamp = _bump(item, now)
                data[item_id] = raw = _dumps(item)
                changed.append((item_id, raw, stamp))
        return changed, False

    # ------------------------------------------------------------------ driven steps

    def step(
        self, webset: str | None = None, items: int = 10, enrich: int | None = None
    ) -> dict[str, list[str]]:
        """Drive searches and enrichments one step (nothing in the emulator moves by itself).

        For each webset (only ``webset``, an id or externalId, if given), at the emulator
        clock: every ``created``/``pending``/``running`` search goes ``running`` and finds up to
        ``items`` new items (``webset.item.created`` each), then emits
        ``webset.search.completed`` if it reached its ``count``, else
        ``webset.search.updated`` (one search event per changed search per step). Each new
        item carries a ``pending`` result per non-canceled enrichment (a ``completed`` one
        goes back to ``pending``). Then every ``pending`` enrichment fills its result on up to
        ``enrich`` items still pending for it (``webset.item.enriched`` each) and is
        ``completed`` when none remain. A ``running`` webset left with no search to drive and
        no pending enrichment becomes ``idle`` (``webset.idle``).

        Args:
            webset: Webset id or externalId; every webset when ``None``.
            items: Most items each search finds in this step.
            enrich: Most items each pending enrichment fills in this step (all if ``None``).

        Returns:
            The ids touched: ``items_created``, ``items_enriched`` (an item once per
            enrichment filled), ``searches`` and ``enrichments`` that changed.

        Raises:
            WebsetNotFoundError: Unknown ``webset``.
        """
        with self._lock:
            if webset is None:
                targets = [self._websets[i] for i in self._ids]
            else:
                targets = [self._resolve(webset)]
            now = self._stamp()
            touched: dict[str, list[str]] = {
                "items_created": [],
                "items_enriched": [],
                "searches": [],
                "enrichments": [],
            }
            emitted: list[tuple[str, bytes, int]] = []
            for ws in targets:
                first = len(emitted)
                self._step_searches(ws, items, now, touched, emitted)
                self._step_enrichments(ws, enrich, now, touched, emitted)
                if ws.obj["status"] == "running" and not _busy(ws.obj):
                    # idle after (not before) the item events this step stamped now + 1...
                    self._set_status(ws, "idle", max([now] + [e[2] for e in emitted[first:]]))
                    stamp = to_ms(ws.obj["updatedAt"])
                    emitted.append(("webset.idle", orjson.dumps(ws.obj), stamp))
            self.events.emit_many(emitted)
            return touched

    def _step_searches(
        self,
        ws: _Webset,
        limit: int,
        now: int,
        touched: dict[str, list[str]],
        emitted: list[tuple[str, bytes, int]],
    ) -> None:
        """The search half of :meth:`step` for one webset."""
        rng = self._rng
        webset_id = ws.obj["id"]
        live = [e for e in ws.obj["enrichments"] if e["status"] != "canceled"]
        for search in ws.obj["searches"]:
            if search["status"] not in _ACTIVE_SEARCH:
                continue
            progress = search["progress"]
            found = progress["found"]
            n = min(limit, search["count"] - found)
            if n <= 0 and search["status"] == "running":
                continue
            entity = search["entity"] or {"type": "company"}
            make = _PROPERTIES.get(entity["type"], _PROPERTIES["company"])
            criteria = [c["description"] for c in search["criteria"]]
            yes = [0] * len(criteria)
            for k in range(n):
                item_id = self._new_id("witem", now)
                props = make(rng, f"{search['id'][-8:]}-{found + k}")
                evaluations = _evaluations(criteria, props["url"], rng.random)
                for j, e in enumerate(evaluations):
                    yes[j] += e["satisfied"] == "yes"
                results = [_result_dict(e["id"], e["format"], "pending", None, "") for e in live]
                raw = _dumps(
                    _item_dict(
                        item_id, search["id"], webset_id, props, evaluations, results, now, now
                    )
                )
                ws.items[item_id] = raw
                if ws.item_ids and ws.item_ids[-1] > item_id:
                    bisect.insort(ws.item_ids, item_id)
                else:
                    ws.item_ids.append(item_id)
                touched["items_created"].append(item_id)
                emitted.append(("webset.item.created", raw, now))
            total = found + n
            for criterion, hits in zip(search["criteria"], yes, strict=True):
                rate = (criterion["successRate"] * found + 100 * hits) / max(total, 1)
                criterion["successRate"] = round(rate, 1)
            done = total >= search["count"]
            search["status"] = "completed" if done else "running"
            progress.update(
                found=total,
                analyzed=progress["analyzed"] + n + n // 4,
                completion=100 if done else total * 100 // search["count"],
                timeLeft=None if done else search["count"] - total,
            )
            stamp = _bump(search, now)
            kind = "webset.search.completed" if done else "webset.search.updated"
            emitted.append((kind, orjson.dumps(search), stamp))
            touched["searches"].append(search["id"])
            if n:
                for enrichment in live:
                    if enrichment["status"] == "completed":
                        enrichment["status"] = "pending"
                        _bump(enrichment, now)

    def _step_enrichments(
        self,
        ws: _Webset,
        limit: int | None,
        now: int,
        touched: dict[str, list[str]],
        emitted: list[tuple[str, bytes, int]],
    ) -> None:
        """The enrichment half of :meth:`step` for one webset: each pending enrichment."""
        for enrichment in ws.obj["enrichments"]:
            if enrichment["status"] == "pending":
                self._fill(ws, enrichment, limit, now, touched, emitted)

    def _fill(
        self,
        ws: _Webset,
        enrichment: dict[str, Any],
        limit: int | None,
        now: int,
        touched: dict[str, list[str]],
        emitted: list[tuple[str, bytes, int]],
    ) -> None:
        """Fill one enrichment's pending results (result by format, as seeding does)."""
        rng = self._rng
        eid, fmt = enrichment["id"], enrichment["format"]
        labels = [o["label"] for o in enrichment["options"] or []] or None
        pending = _result_dict(eid, fmt, "pending", None, "")

        def fill(item: dict[str, Any]) -> bool:
            url = item["properties"]["url"]
            value = _enrichment_value(rng, fmt, item["id"][-8:], labels)
            item["enrichments"] = [
                _result_dict(eid, fmt, "completed", value, url) if r == pending else r
                for r in item["enrichments"]
            ]
            return True

        changed, more = self._edit_items(ws, orjson.dumps(pending), fill, now, limit)
        for item_id, raw, stamp in changed:
            touched["items_enriched"].append(item_id)
            emitted.append(("webset.item.enriched", raw, stamp))
        if not more:
            enrichment["status"] = "completed"
            _bump(enrichment, now)
        if changed or not more:
            touched["enrichments"].append(eid)

    # ------------------------------------------------------------------ seeding

    def seed(self, websets: int, items_per_webset: int) -> None:
        """Add ``websets`` realistic websets with ``items_per_webset`` items each.

        Deterministic for the store seed (and the number of earlier :meth:`seed` calls). Each
        webset is ``idle`` with one completed search (``progress.found`` = its items), two
        criteria, one completed enrichment whose result every item carries, and items of the
        search's entity type with evaluations and references. createdAt values are spread over
        the 365 days before :data:`~exa_source.emulator.store.SEED_ANCHOR`; items follow their
        webset at about one a second.
        """
        with self._lock:
            rng = random.Random(f"{self._seed}:websets-seed:{self._seed_calls}")
            self._seed_calls += 1
            anchor = to_ms(SEED_ANCHOR)
            step = _SEED_WINDOW_MS / max(websets, 1)
            emitted: list[tuple[str, bytes, int]] = []
            for w in range(websets):
                created = int(anchor - _SEED_WINDOW_MS + w * step + rng.random() * step / 2)
                self._seed_one(rng, w, created, items_per_webset, emitted)
            self.events.emit_many(emitted)
            logger.info(
                "seeded %d websets x %d items (total %d websets)",
                websets,
                items_per_webset,
                len(self._ids),
            )

    def _seed_one(
        self,
        rng: random.Random,
        n: int,
        created: int,
        count: int,
        emitted: list[tuple[str, bytes, int]],
    ) -> None:
        """Build one seeded webset and append the events that made it to ``emitted``.

        The events: ``webset.created`` (the webset as created: ``running``, its search
        ``created``, its enrichment ``pending``) and ``webset.search.created`` at
        ``createdAt``; per item ``webset.item.created`` at its ``createdAt`` and
        ``webset.item.enriched`` at its ``updatedAt``; then ``webset.search.completed`` and
        ``webset.idle`` once the last item is enriched. Item events share the item's bytes
        (the item as it is now, enrichment result included) so they cost no copy.
        """
        etype = _ENTITY_CYCLE[n % len(_ENTITY_CYCLE)]
        topic = rng.choice(_TOPICS)
        id_ = self._seed_id(rng, "webset", created)
        entity: dict[str, Any] = {"type": etype}
        if etype == "custom":
            entity["description"] = "Open-source repositories"
        criteria = [{"description": c} for c in rng.sample(_CRITERIA[etype], 2)]
        done = created + count * 1000 + 5000
        sid = self._seed_id(rng, "wsearch", created)
        query = f"{_QUERY_NOUN[etype]} {topic}"
        search = _search_dict(
            sid,
            id_,
            {"query": query, "count": max(count, 1), "entity": entity, "criteria": criteria},
            "completed",
            count,
            created,
            done,
        )
        enr_desc, enr_fmt = _ENRICHMENTS[etype][n % len(_ENRICHMENTS[etype])]
        eid = self._seed_id(rng, "wenrich", created + 1)
        enrichment = _enrichment_dict(
            eid,
            id_,
            {"description": enr_desc, "format": enr_fmt, "options": _OPTIONS.get(enr_fmt)},
            "completed",
            created + 1,
            done,
        )
        meta = {"owner": rng.choice(("alice", "bob", "carol")), "team": "growth"}
        obj = _webset_dict(
            id_,
            "idle",
            f"ext-{self._seed}-{self._seed_calls}-{n}",
            f"{_QUERY_NOUN[etype].capitalize()} {topic}",
            [search],
            [enrichment],
            meta if n % 3 else {},
            created,
            done,
        )
        ws = _Webset(obj)
        make = _PROPERTIES[etype]
        rand = rng.random
        crit_texts = [c["description"] for c in criteria]
        ids = ws.item_ids
        data = ws.items
        t = created + 2000
        last = done
        emitted.extend(_creation_events(obj, created))
        for i in range(count):
            t += 200 + int(rand() * 1600)
            item_id = self._seed_id(rng, "witem", t)
            slug = f"{n}-{i}"
            props = make(rng, slug)
            url = props["url"]
            evaluations = _evaluations(crit_texts, url, rand)
            result = _enrichment_value(rng, enr_fmt, slug)
            enriched = t + 1000 + int(rand() * 60_000)
            data[item_id] = _dumps(
                _item_dict(
                    item_id,
                    sid,
                    id_,
                    props,
                    evaluations,
                    [_result_dict(eid, enr_fmt, "completed", result, url)],
                    t,
                    enriched,
                )
            )
            ids.append(item_id)
            raw = data[item_id]
            emitted.append(("webset.item.created", raw, t))
            emitted.append(("webset.item.enriched", raw, enriched))
            last = max(last, enriched)
        self._add(ws)
        emitted.append(("webset.search.completed", orjson.dumps(search), last + 1))
        emitted.append(("webset.idle", orjson.dumps(obj), last + 1))

    def _seed_id(self, rng: random.Random, prefix: str, created: int) -> str:
        """``<prefix>_<ulid>`` whose time part is ``created``; monotonic within one ms.

        Like the ULID spec's monotonic generator (and imports), so the id's time part always
        equals ``createdAt`` and id order stays ``(createdAt, id)`` order even when a second
        :meth:`seed` call goes back in time.
        """
        value = next_ulid(created, self._last_ulid.get(prefix, 0), rng)
        self._last_ulid[prefix] = value
        return f"{prefix}_{encode_ulid(value)}"


def _creation_events(obj: dict[str, Any], created: int) -> list[tuple[str, bytes, int]]:
    """``webset.created`` and ``webset.search.created`` of a seeded webset, as it was then."""
    start: dict[str, Any] = orjson.loads(orjson.dumps(obj))
    stamp = iso_ms(created)
    start["status"] = "running"
    start["updatedAt"] = stamp
    for search in start["searches"]:
        search.update(status="created", updatedAt=stamp)
        search["progress"] = {"found": 0, "analyzed": 0, "completion": 0, "timeLeft": 0}
        for criterion in search["criteria"]:
            criterion["successRate"] = 0
    for enrichment in start["enrichments"]:
        enrichment.update(status="pending", createdAt=stamp, updatedAt=stamp)
    out = [("webset.created", orjson.dumps(start), created)]
    out.extend(("webset.search.created", orjson.dumps(s), created) for s in start["searches"])
    return out


# ---------------------------------------------------------------------- sample data

_ENTITY_CYCLE = ("company", "person", "company", "article", "research_paper", "person", "custom")
_TOPICS = (
    "in fintech in Europe",
    "building climate software",
    "in healthcare AI",
    "selling to developers",
    "in B2B SaaS in the US",
    "working on robotics",
    "in cybersecurity",
    "in logistics",
)
_QUERY_NOUN = {
    "company": "companies",
    "person": "people",
    "article": "articles about startups",
    "research_paper": "papers about models",
    "custom": "repositories",
}
_CRITERIA: dict[str, tuple[str, ...]] = {
    "company": ("Has more than 50 employees", "Raised a Series A", "Is headquartered in Europe"),
    "person": ("Works in engineering leadership", "Is based in Europe", "Has 5+ years experience"),
    "article": ("Was published in 2026", "Mentions a funding round", "Names the founders"),
    "research_paper": ("Is peer reviewed", "Reports benchmark results", "Has open code"),
    "custom": ("Has more than 100 stars", "Was updated this year", "Has a permissive license"),
}
_ENRICHMENTS: dict[str, tuple[tuple[str, str], ...]] = {
    "company": (("Annual revenue in USD", "number"), ("Company stage", "options")),
    "person": (("Work email address", "email"), ("Current seniority", "options")),
    "article": (("Publication date", "date"), ("One-line summary", "text")),
    "research_paper": (("Number of citations", "number"), ("Code repository URL", "url")),
    "custom": (("Main programming language", "text"), ("Maintainer contact", "email")),
}
_OPTIONS = {"options": [{"label": "Seed"}, {"label": "Growth"}, {"label": "Late"}]}
_FIRST = ("Ada", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas")
_LAST = ("Almeida", "Berg", "Chen", "Dubois", "Evans", "Fischer", "Garcia", "Haddad", "Ito")
_POSITIONS = ("CTO", "VP Engineering", "Head of Data", "Staff Engineer", "Founder", "CEO")
_CITIES = ("Berlin, Germany", "London, UK", "Paris, France", "New York, US", "Lisbon, Portugal")
_INDUSTRIES = ("Software", "Financial Services", "Healthcare", "Energy", "Logistics")
_WORDS = ("Nova", "Quanta", "Helio", "Arbor", "Vector", "Lumen", "Orbit", "Tessel", "Kite")
_SUFFIX = ("Labs", "AI", "Systems", "Health", "Pay", "Robotics", "Cloud")


def _company_name(rng: random.Random) -> str:
    return f"{rng.choice(_WORDS)} {rng.choice(_SUFFIX)}"


def _company(rng: random.Random, slug: str) -> dict[str, Any]:
    name = _company_name(rng)
    return {
        "type": "company",
        "url": f"https://{name.lower().replace(' ', '')}-{slug}.example.com",
        "description": f"{name} builds tools for its industry.",
        "content": None,
        "company": {
            "name": name,
            "location": rng.choice(_CITIES),
            "employees": rng.randint(5, 5000),
            "industry": rng.choice(_INDUSTRIES),
            "about": f"{name} is a {rng.choice(_INDUSTRIES).lower()} company.",
            "logoUrl": None,
        },
    }


def _person(rng: random.Random, slug: str) -> dict[str, Any]:
    name = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
    company = _company_name(rng)
    return {
        "type": "person",
        "url": f"https://www.linkedin.com/in/{name.lower().replace(' ', '-')}-{slug}",
        "description": f"{name} leads a team at {company}.",
        "person": {
            "name": name,
            "location": rng.choice(_CITIES),
            "position": rng.choice(_POSITIONS),
            "company": {"name": company, "location": rng.choice(_CITIES)},
            "pictureUrl": None,
        },
    }


def _document(key: str, host: str) -> Any:
    def make(rng: random.Random, slug: str) -> dict[str, Any]:
        title = f"{_company_name(rng)} {rng.choice(('raises', 'launches', 'studies', 'ships'))}"
        return {
            "type": key if key != "researchPaper" else "research_paper",
            "url": f"https://{host}/{slug}",
            "description": f"{title}: relevant to the query.",
            "content": None,
            key: {
                "title": title,
                "author": f"{rng.choice(_FIRST)} {rng.choice(_LAST)}",
                "publishedAt": f"2026-{rng.randint(1, 9):02d}-{rng.randint(1, 28):02d}",
            },
        }

    return make


_PROPERTIES: dict[str, Any] = {
    "company": _company,
    "person": _person,
    "article": _document("article", "news.example.com"),
    "research_paper": _document("researchPaper", "arxiv.example.org"),
    "custom": _document("custom", "github.example.com"),
}


def _enrichment_value(
    rng: random.Random, fmt: str, slug: str, labels: Sequence[str] | None = None
) -> list[str] | None:
    """A random result in ``fmt`` (5 % ``None``: not found); ``labels`` are the options."""
    r = rng.random()
    if r < 0.05:
        return None  # not found: result null, as the API reports an unsuccessful enrichment
    if fmt == "number":
        return [str(rng.randint(1, 10_000_000))]
    if fmt == "options":
        return [rng.choice(labels or ("Seed", "Growth", "Late"))]
    if fmt == "phone":
        return [f"+1 555 {rng.randint(100, 999)} {rng.randint(1000, 9999)}"]
    if fmt == "email":
        return [f"contact-{slug}@example.com"]
    if fmt == "date":
        return [f"2026-{rng.randint(1, 9):02d}-{rng.randint(1, 28):02d}"]
    if fmt == "url":
        return [f"https://code.example.com/{slug}"]
    return [rng.choice(("Python", "Rust", "Go", "TypeScript"))]


def validate_webset_create(body: Any) -> list[str]:
    """Validate a ``CreateWebsetParameters`` body; class-validator-style messages, [] if valid."""
    if not isinstance(body, dict):
        return ["request body must be an object"]
    allowed = {"title", "search", "import", "enrichments", "exclude", "externalId", "metadata"}
    errors = [f"property {k} should not exist" for k in body if k not in allowed]
    for name in ("title", "externalId"):
        if body.get(name) is not None and not isinstance(body[name], str):
            errors.append(f"{name} must be a string")
    search = body.get("search")
    if search is not None:
        errors.extend(_search_errors(search, "search."))
    enrichments = body.get("enrichments")
    if enrichments is not None:
        if not isinstance(enrichments, list):
            errors.append("enrichments must be an array")
        else:
            for i, e in enumerate(enrichments):
                errors.extend(_enrichment_errors(e, f"enrichments.{i}."))
    metadata = body.get("metadata")
    if metadata is not None:
        errors.extend(_metadata_errors(metadata))
    return errors


_SEARCH_KEYS = (
    "query",
    "count",
    "entity",
    "criteria",
    "exclude",
    "scope",
    "behavior",
    "metadata",
    "recall",
    "maxPeoplePerCompany",
)
_SOURCES = ("import", "webset")


def _search_errors(search: Any, prefix: str, count_required: bool = False) -> list[str]:
    """Messages for a ``CreateWebsetSearchParameters`` body, each led by ``prefix``."""
    if not isinstance(search, dict):
        return [f"{prefix.rstrip('.') or 'request body'} must be an object"]
    errors = []
    query = search.get("query")
    if not isinstance(query, str) or not 1 <= len(query) <= 5000:
        errors.append(f"{prefix}query must be a string of 1 to 5000 characters")
    count = search.get("count")
    if (count is not None or count_required) and (
        not isinstance(count, int) or isinstance(count, bool) or count < 1
    ):
        errors.append(f"{prefix}count must be a positive integer")
    entity = search.get("entity")
    if entity is not None and (
        not isinstance(entity, dict) or entity.get("type") not in ENTITY_TYPES
    ):
        errors.append(f"{prefix}entity.type must be a valid entity type")
    criteria = search.get("criteria")
    if criteria is not None and (
        not isinstance(criteria, list)
        or not all(isinstance(c, dict) and isinstance(c.get("description"), str) for c in criteria)
    ):
        errors.append(f"{prefix}criteria must be a list of {{description}}")
    if search.get("behavior") is not None and search["behavior"] not in ("override", "append"):
        errors.append(f"{prefix}behavior must be one of the following values: override, append")
    for name in ("exclude", "scope"):
        sources = search.get(name)
        if sources is not None and (
            not isinstance(sources, list)
            or not all(
                isinstance(x, dict) and x.get("source") in _SOURCES and isinstance(x.get("id"), str)
                for x in sources
            )
        ):
            errors.append(f"{prefix}{name} must be a list of {{source: import|webset, id}}")
    if search.get("metadata") is not None:
        errors.extend(prefix + m for m in _metadata_errors(search["metadata"]))
    return errors


def validate_search_create(body: Any) -> list[str]:
    """Validate a ``CreateWebsetSearchParameters`` body (``POST .../{webset}/searches``)."""
    if not isinstance(body, dict):
        return ["request body must be an object"]
    errors = [f"property {k} should not exist" for k in body if k not in _SEARCH_KEYS]
    return errors + _search_errors(body, "", count_required=True)


def validate_enrichment_create(body: Any) -> list[str]:
    """Validate a ``CreateEnrichmentParameters`` body (``POST .../{webset}/enrichments``)."""
    if not isinstance(body, dict):
        return ["request body must be an object"]
    allowed = ("description", "format", "options", "metadata")
    errors = [f"property {k} should not exist" for k in body if k not in allowed]
    return errors + _enrichment_errors(body, "")


def _enrichment_errors(e: Any, prefix: str) -> list[str]:
    if not isinstance(e, dict):
        return [f"{prefix.rstrip('.')} must be an object"]
    errors = []
    if not isinstance(e.get("description"), str) or not e["description"]:
        errors.append(f"{prefix}description must be a non-empty string")
    if e.get("format") is not None and e["format"] not in ENRICHMENT_FORMATS:
        errors.append(
            f"{prefix}format must be one of the following values: " + ", ".join(ENRICHMENT_FORMATS)
        )
    options = e.get("options")
    if options is not None and (
        not isinstance(options, list)
        or not all(isinstance(o, dict) and isinstance(o.get("label"), str) for o in options)
    ):
        errors.append(f"{prefix}options must be a list of {{label}}")
    if e.get("metadata") is not None:
        errors.extend(prefix + m for m in _metadata_errors(e["metadata"]))
    return errors


def _metadata_errors(value: Any) -> list[str]:
    if not isinstance(value, dict):
        return ["metadata must be an object"]
    return [
        f"metadata.{k} must be a string of at most 1000 characters"
        for k, v in value.items()
        if not isinstance(v, str) or len(v) > 1000
    ]


def validate_webset_update(body: Any) -> list[str]:
    """Validate an ``UpdateWebsetRequest`` body (``title``, ``metadata``)."""
    if not isinstance(body, dict):
        return ["request body must be an object"]
    errors = [f"property {k} should not exist" for k in body if k not in ("title", "metadata")]
    if body.get("title") is not None and not isinstance(body["title"], str):
        errors.append("title must be a string")
    if body.get("metadata") is not None:
        errors.extend(_metadata_errors(body["metadata"]))
    return errors
