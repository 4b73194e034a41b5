"""Which websets' items a run re-reads: the event feed, checked against the destination.

Items can be millions and their list has no time filter (``docs/exa-api.md`` §4.1), so
re-reading every item on every run is what the connector must avoid. A webset's items are
read **whole** (every page of its cursor chain, compared with the table like imports, its
deleted items found) when, and only when, one of these holds:

* **new**: the webset has no entry in the resource state (first run, or it was created since);
* **table differs**: the table's live rows of that webset no longer match the fingerprint
  (count and a 64-bit sum over ``(id, updated_at)``) the state recorded after the last load.
  This is what makes the state safe to trust: a dropped or restored table, rows deleted by
  hand, a second destination sharing the pipelines folder, a load package that was never
  committed, all show here, and the webset is simply read again;
* **webset changed**: its ``updatedAt``, or its enrichments (ids, statuses), differ from the
  state. An enrichment added, canceled or deleted changes every item's ``enrichments`` with
  no item event;
* **reconcile**: it was last read whole more than ``items_reconcile_days`` ago (default 7).
  The API announces no item deletion; this is when deleted items are found;
* **events**: the event feed lists a ``webset.item.created`` or ``webset.item.enriched``
  event since the last run whose item is not in the table at that ``updatedAt`` or later;
* **events expired**: the last event read is older than the feed keeps events (60 days):
  every webset is read whole.

The event read starts ``EVENT_OVERLAP_SECONDS`` before the newest event the last run saw
(``createdAfter`` is inclusive); an event re-read in the overlap whose item is already stored
at that version costs nothing. The mark is the newest event's ``createdAt``: the server's
clock, never this machine's. Websets deleted from the API have all their items marked deleted.
"""

from __future__ import annotations

import email.utils
import hashlib
import logging
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pyarrow as pa

from exa_source import settings
from exa_source.client import ExaRESTClient
from exa_source.exceptions import ExaDataError
from exa_source.schema import ITEMS
from exa_source.sync import Record

logger = logging.getLogger(__name__)

#: The fingerprint of no rows.
EMPTY = "0:0000000000000000"


def _iso(when: datetime) -> str:
    return when.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def combine(first: str, second: str) -> str:
    """The fingerprint of the union of two disjoint sets of rows."""
    c1, s1 = first.split(":")
    c2, s2 = second.split(":")
    return f"{int(c1) + int(c2)}:{(int(s1, 16) + int(s2, 16)) % 2**64:016x}"


def embedded(webset: dict[str, Any]) -> str:
    """What of a webset, when it changes, changes its items with no item event."""
    enrichments = sorted(
        (str(e.get("id")), str(e.get("status")))
        for e in webset.get("enrichments") or []
        if isinstance(e, dict)
    )
    text = repr((webset.get("updatedAt"), enrichments)).encode()
    return hashlib.blake2b(text, digest_size=8).hexdigest()


def server_now(date: str | None) -> datetime:
    """The server's clock from a ``Date`` header; this machine's clock without one.

    Retention (60 days on the server's clock) and reconciles are judged by the server's time,
    so that a machine whose clock is wrong neither trusts an expired event feed nor skips one.
    """
    if date:
        try:
            parsed = email.utils.parsedate_to_datetime(date)
            if parsed.tzinfo is not None:
                return parsed.astimezone(timezone.utc)
        except (TypeError, ValueError):
            pass
    return datetime.now(timezone.utc)


class ItemsPlan:
    """One run's choice of websets to read whole, and the state to save after it.

    Args:
        client: the items resource's client.
        websets: the complete websets listing of this load.
        record: the ``webset_items`` table as the record (with its ``webset_id`` scope).
        state: the resource state (``websets``: per webset ``[fingerprint, embedded, last
            whole read]``; ``events_to``: the newest event seen).
        reconcile_days: see the module docstring.
        now: this machine's clock (only schedules reconciles).
    """

    def __init__(
        self,
        client: ExaRESTClient,
        websets: list[dict[str, Any]],
        record: Record,
        state: dict[str, Any],
        reconcile_days: float,
        now: datetime | None = None,
    ) -> None:
        self.client = client
        self.live = {str(w["id"]): w for w in websets if isinstance(w, dict) and "id" in w}
        self.record = record
        self.known: dict[str, list[Any]] = dict(state.get("websets") or {})
        self.events_to: str | None = state.get("events_to")
        self.reconcile = timedelta(days=reconcile_days)
        self.now = now or datetime.now(timezone.utc)
        self.reasons: Counter[str] = Counter()
        self.whole: set[str] = set()
        self.events_read = 0
        self.complete: set[str] = set()

    def choose(self) -> set[str]:
        """Decide which websets to read whole (see the module docstring); reads the feed."""
        stored = self.record.fingerprints()
        for wid, webset in self.live.items():
            known = self.known.get(wid)
            if known is None:
                reason = "new"
            elif known[0] != stored.get(wid, EMPTY):
                reason = "table differs"
            elif known[1] != embedded(webset):
                reason = "webset changed"
            elif self.now - _parse(known[2]) >= self.reconcile:
                reason = "reconcile"
            else:
                continue
            self._add(wid, reason)
        self._read_events()
        logger.info(
            "%s: %d of %d websets read whole (%s); %d events read",
            ITEMS.name,
            len(self.whole),
            len(self.live),
            ", ".join(f"{n} {r}" for r, n in sorted(self.reasons.items())) or "nothing changed",
            self.events_read,
        )
        return self.whole

    def _read_events(self) -> None:
        """Flag the websets with item events since the last run; advance the mark."""
        horizon = timedelta(
            days=settings.EVENT_RETENTION_DAYS - settings.EVENT_RETENTION_MARGIN_DAYS
        )
        quiet = set(self.live) - self.whole
        if self.events_to is None or self.now - _parse(self.events_to) >= horizon:
            if quiet:
                self.whole |= quiet
                self.reasons["events expired" if self.events_to else "no event mark"] += len(quiet)
            self._mark(self._newest_event())
            return
        start = _parse(self.events_to) - timedelta(seconds=settings.EVENT_OVERLAP_SECONDS)
        params = {"types": list(settings.ITEM_EVENT_TYPES), "createdAfter": _iso(start)}
        newest: str | None = None
        for page in self.client.pages(settings.EVENTS_PATH, settings.EVENTS_PAGE_SIZE, params):
            self.events_read += len(page)
            if page and newest is None:
                newest = page[0].get("createdAt")  # newest first
            self._flag(page)
        self._mark(newest)

    def _mark(self, newest: str | None) -> None:
        """Advance the mark to the server's time of the read, else to the newest event.

        The ``Date`` of the reply is when the server listed the events: any event stamped
        later is read next run. Without a ``Date`` header, the newest event listed.
        """
        date = self.client.stats.server_date
        candidates = [self.events_to] if self.events_to else []
        if date:
            candidates.append(_iso(server_now(date)))
        elif newest:
            candidates.append(_iso(_parse(newest)))
        self.events_to = max(candidates, key=_parse) if candidates else None

    def _newest_event(self) -> str | None:
        """``createdAt`` of the newest event of any type, if any (one request)."""
        page = self.client.first_page(settings.EVENTS_PATH, 1)
        self.events_read += len(page)
        return str(page[0]["createdAt"]) if page else None

    def _flag(self, events: list[dict[str, Any]]) -> None:
        """Flag the websets of events whose item the table lacks at that version."""
        items = [
            e["data"]
            for e in events
            if isinstance(e.get("data"), dict) and e["data"].get("websetId") in self.live
        ]
        items = [i for i in items if str(i["websetId"]) not in self.whole]
        if not items:
            return
        try:
            ids, updated = ITEMS.keys(items)
        except ExaDataError:  # an event's item without a usable id or updatedAt: read whole
            for item in items:
                self._add(str(item["websetId"]), "events")
            return
        micros = np.asarray(updated.cast(pa.int64()).to_numpy(zero_copy_only=False))
        pos = self.record.positions(ids)
        present = pos >= 0
        stale = ~present
        where = pos[present]
        stale[present] = (self.record.updated[where] < micros[present]) | self.record.deleted[where]
        for i in np.flatnonzero(stale):
            self._add(str(items[int(i)]["websetId"]), "events")

    def _add(self, wid: str, reason: str) -> None:
        if wid not in self.whole:
            self.whole.add(wid)
            self.reasons[reason] += 1

    def paths(self) -> dict[str, str]:
        """The items list of every webset to read whole, oldest webset first."""
        return {wid: f"{settings.WEBSETS_PATH}/{wid}/items" for wid in sorted(self.whole)}

    def pages(self, concurrency: int) -> Iterator[list[dict[str, Any]]]:
        """The items of the chosen websets, ``concurrency`` websets at a time."""
        for wid, page in self.client.chains(self.paths(), settings.ITEMS_PAGE_SIZE, concurrency):
            if isinstance(page, list):
                yield page
            elif page is None:
                self.complete.add(wid)
            else:
                logger.warning(
                    "%s: webset %s was deleted while its items were read; its items are"
                    " marked deleted next run",
                    ITEMS.name,
                    wid,
                )

    def scopes_complete(self) -> set[str]:
        """Websets listed whole by this run, plus websets gone from the API (all deleted)."""
        gone = set(self.record.scope_names) - set(self.live)
        return self.complete | gone

    def state(self, listed: dict[str, str], unseen_kept: dict[str, str]) -> dict[str, Any]:
        """The resource state after this run's package loads.

        Args:
            listed: fingerprints of the rows this run listed, per webset.
            unseen_kept: fingerprints of stored rows this run did not list and does not mark
                deleted (deletion policy ``off``), per webset.
        """
        stored = self.record.fingerprints()
        websets: dict[str, list[Any]] = {}
        stamp = _iso(self.now)
        for wid, webset in self.live.items():
            if wid in self.complete:
                fp = combine(listed.get(wid, EMPTY), unseen_kept.get(wid, EMPTY))
                websets[wid] = [fp, embedded(webset), stamp]
            elif wid not in self.whole and wid in self.known:
                websets[wid] = [stored.get(wid, EMPTY), *self.known[wid][1:]]
        return {"websets": websets, "events_to": self.events_to}
