"""In-memory monitors, monitor runs, webhooks and webhook attempts (docs/exa-api.md §4.3).

One :class:`MonitorStore` holds all four, as dicts (they are few). Ids are ``<prefix>_`` + a
ULID whose time part is ``createdAt`` (``attemptedAt`` for attempts); the prefixes
``monitor_``, ``monitor_run_``, ``webhook_`` and ``webhook_attempt_`` are guesses (the real
ones are not documented). Every list is newest first, keyset-paginated like the websets list:
the cursor is the bare ULID of a page's last object and the next page holds the objects
strictly older than it, whether or not it still exists.

Nothing happens by itself. Monitor runs exist only once :meth:`MonitorStore.step_monitors`
(``POST /_emulator/monitors/step``) creates them, and move on only through
:meth:`MonitorStore.advance_run`; webhook attempts exist only once
:meth:`MonitorStore.step_webhooks` (``POST /_emulator/webhooks/step``) makes them. No cron is
evaluated: ``nextRunAt`` is the last run's (else the monitor's) ``createdAt`` + 1 day.

Events (into the shared :class:`~.events.EventLog`, at the emulator clock):
``monitor.created``, ``monitor.updated`` (PATCH), ``monitor.deleted`` with the Monitor;
``monitor.run.created`` with the run as created and ``monitor.run.completed`` with the run
once ``completed``. Failed and canceled runs, webhooks and attempts have no event type.
"""

from __future__ import annotations

import bisect
import logging
import random
import threading
import zoneinfo
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import orjson

from .events import EVENT_TYPES, EventLog
from .store import (
    ENTITY_TYPES,
    SEED_ANCHOR,
    Clock,
    InvalidTransitionError,
    Page,
    encode_ulid,
    iso_ms,
    newest_first_page,
    next_ulid,
    to_ms,
)
from .websets import WebsetStore, _bump, _copy, _metadata_errors

logger = logging.getLogger(__name__)

__all__ = [
    "MONITOR_RUN_STATUSES",
    "MonitorNotFoundError",
    "MonitorStore",
    "RunNotFoundError",
    "WebhookNotFoundError",
    "validate_monitor_create",
    "validate_monitor_update",
    "validate_webhook_create",
    "validate_webhook_update",
]

MONITOR_RUN_STATUSES = ("created", "running", "completed", "canceled", "failed")
"""``MonitorRun.status`` values (docs/exa-api.md §4.3)."""

_TERMINAL = ("completed", "canceled", "failed")
DAY_MS = 86_400_000
FAILED_REASON = "The monitor's search could not be completed"
"""``failedReason`` of a failed run (the real texts are not documented)."""

_SEED_WEEK_MS = 7 * DAY_MS
_SEED_RUN_ORDER = ("completed", "failed", "canceled", "running", "created")
"""Statuses of a seeded monitor's runs, oldest first, one day apart."""
_SEED_SUBSCRIPTIONS = (
    ("monitor.created", "monitor.run.created", "monitor.run.completed"),
    ("monitor.run.completed",),
    ("monitor.created", "monitor.updated", "monitor.deleted", "webset.created"),
    ("monitor.run.created", "monitor.run.completed", "webset.item.created"),
)
_SUCCESS_HEADERS = {"content-type": "text/plain; charset=utf-8", "content-length": "2"}
_FAILURE_BODY = '{"error":"Internal Server Error"}'
_FAILURE_HEADERS = {
    "content-type": "application/json; charset=utf-8",
    "content-length": str(len(_FAILURE_BODY)),
}


class MonitorNotFoundError(KeyError):
    """Unknown monitor id."""


class RunNotFoundError(KeyError):
    """Unknown monitor run id (or a run of another monitor)."""


class WebhookNotFoundError(KeyError):
    """Unknown webhook id."""


def _config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A monitor's ``behavior.config`` as stored: the given keys, ``behavior`` defaulted."""
    out: dict[str, Any] = {}
    for key in ("query", "criteria", "entity"):
        if config.get(key) is not None:
            out[key] = _copy({"v": config[key]})["v"]
    out["count"] = config["count"]
    out["behavior"] = config.get("behavior") or "append"
    return out


def _cadence(cadence: Mapping[str, Any]) -> dict[str, Any]:
    return {"cron": cadence["cron"], "timezone": cadence.get("timezone") or "Etc/UTC"}


def _monitor_dict(
    id_: str, webset_id: str, params: Mapping[str, Any], created: int
) -> dict[str, Any]:
    return {
        "id": id_,
        "object": "monitor",
        "status": "enabled",
        "websetId": webset_id,
        "cadence": _cadence(params["cadence"]),
        "behavior": {"type": "search", "config": _config(params["behavior"]["config"])},
        "lastRun": None,
        "nextRunAt": iso_ms(created + DAY_MS),
        "metadata": dict(params.get("metadata") or {}),
        "createdAt": iso_ms(created),
        "updatedAt": iso_ms(created),
    }


def _run_dict(id_: str, monitor_id: str, created: int) -> dict[str, Any]:
    stamp = iso_ms(created)
    return {
        "id": id_,
        "object": "monitor_run",
        "monitorId": monitor_id,
        "status": "created",
        "type": "search",
        "completedAt": None,
        "failedAt": None,
        "failedReason": None,
        "canceledAt": None,
        "createdAt": stamp,
        "updatedAt": stamp,
    }


def _set_run_status(run: dict[str, Any], status: str, stamp: int) -> None:
    """Move ``run`` to ``status`` at ``stamp`` (epoch ms): its timestamps follow."""
    run["status"] = status
    when = iso_ms(stamp)
    run["updatedAt"] = when
    if status == "completed":
        run["completedAt"] = when
    elif status == "failed":
        run["failedAt"] = when
        run["failedReason"] = FAILED_REASON
    elif status == "canceled":
        run["canceledAt"] = when


def _webhook_dict(
    id_: str, params: Mapping[str, Any], created: int, secret: str | None
) -> dict[str, Any]:
    return {
        "id": id_,
        "object": "webhook",
        "status": "active",
        "events": list(params["events"]),
        "url": params["url"],
        "secret": secret,
        "metadata": dict(params.get("metadata") or {}),
        "createdAt": iso_ms(created),
        "updatedAt": iso_ms(created),
    }


def _attempt_dict(
    id_: str,
    webhook: Mapping[str, Any],
    event_id: str,
    event_type: str,
    successful: bool,
    attempt: int,
    at: int,
) -> dict[str, Any]:
    return {
        "id": id_,
        "object": "webhook_attempt",
        "eventId": event_id,
        "eventType": event_type,
        "webhookId": webhook["id"],
        "url": webhook["url"],
        "successful": successful,
        "responseHeaders": dict(_SUCCESS_HEADERS if successful else _FAILURE_HEADERS),
        "responseBody": "ok" if successful else _FAILURE_BODY,
        "responseStatusCode": 200 if successful else 500,
        "attempt": attempt,
        "attemptedAt": iso_ms(at),
    }


class MonitorStore:
    """Thread-safe store of monitors (with their runs) and webhooks (with their attempts).

    Args:
        websets: The webset store (a monitor's ``websetId`` must name one of its websets).
        seed: Seed of the random generator used for ids, secrets and seeded data.
        clock: Clock to stamp with (the websets' by default).
        events: Event log to record ``monitor.*`` events in (the websets' by default).
    """

    def __init__(
        self,
        websets: WebsetStore,
        seed: int = 0,
        clock: Clock | None = None,
        events: EventLog | None = None,
    ) -> None:
        self.websets = websets
        self.clock = clock or websets.clock
        self.events = events if events is not None else websets.events
        self._lock = threading.RLock()
        self._seed = seed
        self._rng = random.Random(f"{seed}:monitors")
        self._seed_calls = 0
        self._last_stamp = 0
        self._last_ulid: dict[str, int] = {}
        self._monitors: dict[str, dict[str, Any]] = {}
        self._monitor_ids: list[str] = []
        self._runs: dict[str, dict[str, Any]] = {}
        self._run_ids: dict[str, list[str]] = {}  # monitor id -> its run ids, ascending
        self._webhooks: dict[str, dict[str, Any]] = {}
        self._webhook_ids: list[str] = []
        self._attempts: dict[str, dict[str, Any]] = {}
        self._attempt_ids: dict[str, list[str]] = {}  # webhook id -> its attempt ids

    # ------------------------------------------------------------------ helpers

    def _stamp(self) -> int:
        stamp = max(self.clock.now_ms(), self._last_stamp + 1)
        self._last_stamp = stamp
        return stamp

    def _new_id(self, prefix: str, created: int, rng: random.Random | None = None) -> str:
        """``<prefix>_<ulid>`` with time part ``created``, monotonic per prefix."""
        value = next_ulid(created, self._last_ulid.get(prefix, 0), rng or self._rng)
        self._last_ulid[prefix] = value
        return f"{prefix}_{encode_ulid(value)}"

    def _monitor(self, monitor_id: str) -> dict[str, Any]:
        monitor = self._monitors.get(monitor_id)
        if monitor is None:
            raise MonitorNotFoundError(monitor_id)
        return monitor

    def _webhook(self, webhook_id: str) -> dict[str, Any]:
        webhook = self._webhooks.get(webhook_id)
        if webhook is None:
            raise WebhookNotFoundError(webhook_id)
        return webhook

    def _emit(self, type_: str, obj: Mapping[str, Any], at: int) -> None:
        self.events.emit(type_, orjson.dumps(obj), at)

    # ------------------------------------------------------------------ monitors

    def monitor_count(self) -> int:
        """Return the number of monitors."""
        with self._lock:
            return len(self._monitor_ids)

    def run_count(self) -> int:
        """Return the number of monitor runs over all monitors."""
        with self._lock:
            return len(self._runs)

    def create_monitor(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Create a monitor from a (validated) ``CreateMonitorParameters`` body.

        The monitor is ``enabled``, without runs, ``nextRunAt`` = ``createdAt`` + 1 day.
        ``websetId`` may be a webset id or externalId; the monitor records the id. Emits
        ``monitor.created``.

        Raises:
            WebsetNotFoundError: ``websetId`` names no webset.
        """
        with self._lock:
            webset_id = self.websets.get(params["websetId"])["id"]
            now = self._stamp()
            monitor = _monitor_dict(self._new_id("monitor", now), webset_id, params, now)
            self._monitors[monitor["id"]] = monitor
            self._monitor_ids.append(monitor["id"])
            self._run_ids[monitor["id"]] = []
            self._emit("monitor.created", monitor, now)
            return _copy(monitor)

    def get_monitor(self, monitor_id: str) -> dict[str, Any]:
        """Return one monitor (``lastRun`` embedded as it is now).

        Raises:
            MonitorNotFoundError: Unknown monitor.
        """
        with self._lock:
            return _copy(self._monitor(monitor_id))

    def monitors_page(self, cursor: str | None, limit: int, webset_id: str | None = None) -> Page:
        """One page of ``GET /v0/monitors``, newest first.

        Args:
            cursor: ``None`` or the bare ULID of the previous page's last monitor.
            limit: Page size (validated by the caller).
            webset_id: Only the monitors of this webset id (no match: an empty page).
        """
        with self._lock:
            monitors = self._monitors
            keep = None if webset_id is None else (lambda i: monitors[i]["websetId"] == webset_id)
            return newest_first_page(
                self._monitor_ids,
                "monitor_",
                cursor,
                limit,
                lambda i: orjson.dumps(monitors[i]),
                keep,
            )

    def update_monitor(self, monitor_id: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Apply a (validated) ``PATCH /v0/monitors/{id}`` body; emit ``monitor.updated``.

        ``cadence`` and ``behavior`` are replaced, ``metadata`` is replaced, ``status``
        set; ``updatedAt`` is bumped. Disabling clears ``nextRunAt``; enabling a disabled
        monitor sets it to now + 1 day.

        Raises:
            MonitorNotFoundError: Unknown monitor.
        """
        with self._lock:
            monitor = self._monitor(monitor_id)
            now = self._stamp()
            if params.get("cadence") is not None:
                monitor["cadence"] = _cadence(params["cadence"])
            if params.get("behavior") is not None:
                config = _config(params["behavior"]["config"])
                monitor["behavior"] = {"type": "search", "config": config}
            if params.get("metadata") is not None:
                monitor["metadata"] = dict(params["metadata"])
            status = params.get("status")
            if status is not None and status != monitor["status"]:
                monitor["status"] = status
                monitor["nextRunAt"] = None if status == "disabled" else iso_ms(now + DAY_MS)
            stamp = _bump(monitor, now)
            self._emit("monitor.updated", monitor, stamp)
            return _copy(monitor)

    def delete_monitor(self, monitor_id: str) -> dict[str, Any]:
        """Delete a monitor and its runs; return it as it was. Emits ``monitor.deleted``.

        Raises:
            MonitorNotFoundError: Unknown monitor.
        """
        with self._lock:
            monitor = self._monitor(monitor_id)
            del self._monitors[monitor_id]
            del self._monitor_ids[bisect.bisect_left(self._monitor_ids, monitor_id)]
            for run_id in self._run_ids.pop(monitor_id, []):
                del self._runs[run_id]
            self._emit("monitor.deleted", monitor, self._stamp())
            return _copy(monitor)

    def monitor_ids(self) -> list[str]:
        """Return every monitor id in list order (newest first)."""
        with self._lock:
            return self._monitor_ids[::-1]

    # ------------------------------------------------------------------ runs

    def runs_page(self, monitor_id: str, cursor: str | None, limit: int) -> Page:
        """One page of ``GET /v0/monitors/{monitor}/runs``, newest first.

        Raises:
            MonitorNotFoundError: Unknown monitor.
        """
        with self._lock:
            self._monitor(monitor_id)
            runs = self._runs
            return newest_first_page(
                self._run_ids[monitor_id],
                "monitor_run_",
                cursor,
                limit,
                lambda i: orjson.dumps(runs[i]),
            )

    def get_run(self, monitor_id: str, run_id: str) -> dict[str, Any]:
        """Return one run of a monitor.

        Raises:
            MonitorNotFoundError: Unknown monitor. RunNotFoundError: unknown run.
        """
        with self._lock:
            self._monitor(monitor_id)
            run = self._runs.get(run_id)
            if run is None or run["monitorId"] != monitor_id:
                raise RunNotFoundError(run_id)
            return _copy(run)

    def step_monitors(
        self, monitor: str | None = None, status: str = "completed"
    ) -> list[dict[str, Any]]:
        """Run monitors once (nothing runs by itself): one new run each, in ``status``.

        For every ``enabled`` monitor (or only ``monitor``, enabled or not), at the emulator
        clock: a run is created (``monitor.run.created``, the run as ``created``) and set to
        ``status`` in the same instant: ``completedAt`` (and ``monitor.run.completed``),
        ``failedAt`` + ``failedReason``, or ``canceledAt``. The monitor's ``lastRun`` becomes
        the run, ``nextRunAt`` the run's ``createdAt`` + 1 day, and its ``updatedAt`` is
        bumped (no ``monitor.updated`` event: the run events tell).

        Args:
            monitor: A monitor id; every enabled monitor when ``None``.
            status: One of :data:`MONITOR_RUN_STATUSES`.

        Returns:
            The new runs (copies), oldest monitor first.

        Raises:
            MonitorNotFoundError: Unknown ``monitor``.
            ValueError: Unknown ``status``.
        """
        if status not in MONITOR_RUN_STATUSES:
            raise ValueError(f"status must be one of {', '.join(MONITOR_RUN_STATUSES)}")
        with self._lock:
            if monitor is None:
                targets = [
                    self._monitors[i]
                    for i in self._monitor_ids
                    if self._monitors[i]["status"] == "enabled"
                ]
            else:
                targets = [self._monitor(monitor)]
            now = self._stamp()
            out = []
            for target in targets:
                run = _run_dict(self._new_id("monitor_run", now), target["id"], now)
                self._runs[run["id"]] = run
                self._run_ids[target["id"]].append(run["id"])
                self._emit("monitor.run.created", run, now)
                if status != "created":
                    _set_run_status(run, status, now)
                    if status == "completed":
                        self._emit("monitor.run.completed", run, now)
                target["lastRun"] = run
                enabled = target["status"] == "enabled"
                target["nextRunAt"] = iso_ms(now + DAY_MS) if enabled else None
                _bump(target, now)
                out.append(_copy(run))
            return out

    def advance_run(self, run_id: str, status: str) -> dict[str, Any]:
        """Move an existing run on to ``status`` at the emulator clock; bump its ``updatedAt``.

        Allowed: ``created`` to ``running``, and ``created`` or ``running`` to ``completed``
        (emits ``monitor.run.completed``), ``failed`` or ``canceled``. If the run is its
        monitor's ``lastRun`` the monitor's ``updatedAt`` is bumped too.

        Returns:
            The run (a copy).

        Raises:
            RunNotFoundError: Unknown run.
            InvalidTransitionError: The run is finished, or ``status`` does not move it on.
        """
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                raise RunNotFoundError(run_id)
            current = run["status"]
            allowed = {"created": ("running", *_TERMINAL), "running": _TERMINAL}.get(current, ())
            if status not in allowed:
                raise InvalidTransitionError(f"a {current} run cannot become {status!r}")
            stamp = max(self._stamp(), to_ms(run["updatedAt"]) + 1)
            _set_run_status(run, status, stamp)
            if status == "completed":
                self._emit("monitor.run.completed", run, stamp)
            monitor = self._monitors.get(run["monitorId"])
            if monitor is not None and monitor["lastRun"] is run:
                _bump(monitor, stamp)
            return _copy(run)

    # ------------------------------------------------------------------ webhooks

    def webhook_count(self) -> int:
        """Return the number of webhooks."""
        with self._lock:
            return len(self._webhook_ids)

    def attempt_count(self) -> int:
        """Return the number of webhook attempts over all webhooks."""
        with self._lock:
            return len(self._attempts)

    def create_webhook(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Create an ``active`` webhook from a (validated) ``CreateWebhookParameters`` body.

        Returns:
            The webhook with its ``secret`` (``whsec_`` + 32 hex): the only time it is shown.
        """
        with self._lock:
            now = self._stamp()
            id_ = self._new_id("webhook", now)
            webhook = _webhook_dict(id_, params, now, None)
            self._webhooks[id_] = webhook
            self._webhook_ids.append(id_)
            self._attempt_ids[id_] = []
            out = _copy(webhook)
            out["secret"] = f"whsec_{self._rng.getrandbits(128):032x}"
            return out

    def get_webhook(self, webhook_id: str) -> dict[str, Any]:
        """Return one webhook (``secret`` null).

        Raises:
            WebhookNotFoundError: Unknown webhook.
        """
        with self._lock:
            return _copy(self._webhook(webhook_id))

    def webhooks_page(self, cursor: str | None, limit: int) -> Page:
        """One page of ``GET /v0/webhooks``, newest first."""
        with self._lock:
            hooks = self._webhooks
            return newest_first_page(
                self._webhook_ids, "webhook_", cursor, limit, lambda i: orjson.dumps(hooks[i])
            )

    def update_webhook(self, webhook_id: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Apply a (validated) ``PATCH /v0/webhooks/{id}`` body and bump ``updatedAt``.

        ``events``, ``url``, ``metadata`` (replaced) and ``status``. Emits nothing.

        Raises:
            WebhookNotFoundError: Unknown webhook.
        """
        with self._lock:
            webhook = self._webhook(webhook_id)
            for key in ("events", "url", "status"):
                if params.get(key) is not None:
                    webhook[key] = _copy({"v": params[key]})["v"]
            if params.get("metadata") is not None:
                webhook["metadata"] = dict(params["metadata"])
            _bump(webhook, self._stamp())
            return _copy(webhook)

    def delete_webhook(self, webhook_id: str) -> dict[str, Any]:
        """Delete a webhook and its attempts; return it as it was. Emits nothing.

        Raises:
            WebhookNotFoundError: Unknown webhook.
        """
        with self._lock:
            webhook = self._webhook(webhook_id)
            del self._webhooks[webhook_id]
            del self._webhook_ids[bisect.bisect_left(self._webhook_ids, webhook_id)]
            for attempt_id in self._attempt_ids.pop(webhook_id, []):
                del self._attempts[attempt_id]
            return _copy(webhook)

    def webhook_ids(self) -> list[str]:
        """Return every webhook id in list order (newest first)."""
        with self._lock:
            return self._webhook_ids[::-1]

    def attempts_page(
        self,
        webhook_id: str,
        cursor: str | None,
        limit: int,
        event_type: str | None = None,
        successful: bool | None = None,
    ) -> Page:
        """One page of ``GET /v0/webhooks/{id}/attempts``, newest first (documented order).

        Args:
            webhook_id: The webhook.
            cursor: ``None`` or the bare ULID of the previous page's last attempt.
            limit: Page size (validated by the caller).
            event_type: Only attempts for events of this type.
            successful: Only successful (``True``) or failed (``False``) attempts.

        Raises:
            WebhookNotFoundError: Unknown webhook.
        """
        with self._lock:
            self._webhook(webhook_id)
            attempts = self._attempts

            def keep(i: str) -> bool:
                a = attempts[i]
                return (event_type is None or a["eventType"] == event_type) and (
                    successful is None or a["successful"] is successful
                )

            return newest_first_page(
                self._attempt_ids[webhook_id],
                "webhook_attempt_",
                cursor,
                limit,
                lambda i: orjson.dumps(attempts[i]),
                None if event_type is None and successful is None else keep,
            )

    def step_webhooks(
        self, webhook: str | None = None, successful: bool = True
    ) -> list[dict[str, Any]]:
        """Deliver once (nothing is delivered by itself): one attempt per webhook.

        For every ``active`` webhook (or only ``webhook``, active or not), at the emulator
        clock: one attempt for the newest retained event of a type it subscribes to (a
        synthetic ``event_`` id of its first event type, stamped now, if there is none).
        ``attempt`` counts the webhook's attempts for that event (1 for the first).
        Successful: status 200, body ``ok``; failed: status 500 with a JSON error body.

        Args:
            webhook: A webhook id; every active webhook when ``None``.
            successful: Whether the attempts succeed.

        Returns:
            The new attempts (copies), oldest webhook first.

        Raises:
            WebhookNotFoundError: Unknown ``webhook``.
        """
        with self._lock:
            if webhook is None:
                targets = [
                    self._webhooks[i]
                    for i in self._webhook_ids
                    if self._webhooks[i]["status"] == "active"
                ]
            else:
                targets = [self._webhook(webhook)]
            now = self._stamp()
            out = []
            for target in targets:
                page = self.events.page(None, 1, target["events"])
                if page.items:
                    event = orjson.loads(page.items[0])
                    event_id, event_type = event["id"], event["type"]
                else:
                    event_id = self._new_id("event", now)
                    event_type = target["events"][0]
                out.append(_copy(self._add_attempt(target, event_id, event_type, successful, now)))
            return out

    def _add_attempt(
        self,
        webhook: Mapping[str, Any],
        event_id: str,
        event_type: str,
        successful: bool,
        at: int,
        rng: random.Random | None = None,
    ) -> dict[str, Any]:
        ids = self._attempt_ids[webhook["id"]]
        number = 1 + sum(1 for i in ids if self._attempts[i]["eventId"] == event_id)
        id_ = self._new_id("webhook_attempt", at, rng)
        attempt = _attempt_dict(id_, webhook, event_id, event_type, successful, number, at)
        self._attempts[id_] = attempt
        if ids and ids[-1] > id_:
            bisect.insort(ids, id_)
        else:
            ids.append(id_)
        return attempt

    # ------------------------------------------------------------------ seeding

    def seed(self, monitors: int, webhooks: int) -> None:
        """Add ``monitors`` monitors with runs and ``webhooks`` webhooks with attempts.

        Deterministic for the store seed (and the number of earlier :meth:`seed` calls).
        Everything is stamped in the week before
        :data:`~exa_source.emulator.store.SEED_ANCHOR`. Webhooks come first (created up to a
        minute apart in that week's first hour), each subscribed to ``monitor.*`` event
        types (some also to ``webset.*`` ones). Monitors follow, spread round-robin over
        the existing websets (oldest webset first), one about every ``24 h / monitors`` on
        the week's first day; each has five runs one day apart, oldest first
        ``completed``, ``failed``, ``canceled``, ``running``, ``created`` (the last is its
        ``lastRun``), and emits ``monitor.created`` and per run ``monitor.run.created``
        (plus ``monitor.run.completed`` for the completed one). Every webhook then has attempts on
        two of those events it subscribes to: for the first a failed attempt 1 then a
        successful attempt 2, for the second a successful attempt 1 (without monitors,
        synthetic event ids).

        Raises:
            ValueError: ``monitors`` > 0 but there is no webset to attach them to.
        """
        with self._lock:
            webset_ids = self.websets.ids()[::-1]  # oldest first
            if monitors and not webset_ids:
                raise ValueError("seeding monitors needs websets: seed websets first")
            rng = random.Random(f"{self._seed}:monitors-seed:{self._seed_calls}")
            self._seed_calls += 1
            start = to_ms(SEED_ANCHOR) - _SEED_WEEK_MS
            gap = min(60_000, 3_600_000 // max(webhooks, 1))  # all before the first monitor
            hooks = [self._seed_webhook(rng, h, start + h * gap) for h in range(webhooks)]
            emitted: list[tuple[str, bytes, int]] = []
            step = DAY_MS // max(monitors, 1)
            for k in range(monitors):
                created = start + 3_600_000 + k * step + rng.randrange(max(step // 2, 1))
                self._seed_monitor(rng, k, webset_ids[k % len(webset_ids)], created, emitted)
            ids = self.events.emit_many(emitted, return_ids=True)
            events = sorted(zip(ids, (e[0] for e in emitted), (e[2] for e in emitted), strict=True))
            for hook in hooks:
                self._seed_attempts(rng, hook, events)
            logger.info(
                "seeded %d monitors (%d runs) and %d webhooks (%d attempts)",
                monitors,
                monitors * len(_SEED_RUN_ORDER),
                webhooks,
                sum(len(self._attempt_ids[h["id"]]) for h in hooks),
            )

    def _seed_webhook(self, rng: random.Random, n: int, created: int) -> dict[str, Any]:
        params = {
            "events": list(_SEED_SUBSCRIPTIONS[n % len(_SEED_SUBSCRIPTIONS)]),
            "url": f"https://hooks.example.com/exa/{self._seed}-{n}",
            "metadata": {"team": rng.choice(("growth", "data", "ops"))} if n % 2 else {},
        }
        id_ = self._new_id("webhook", created, rng)
        webhook = _webhook_dict(id_, params, created, None)
        self._webhooks[id_] = webhook
        bisect.insort(self._webhook_ids, id_)
        self._attempt_ids[id_] = []
        return webhook

    def _seed_monitor(
        self,
        rng: random.Random,
        k: int,
        webset_id: str,
        created: int,
        emitted: list[tuple[str, bytes, int]],
    ) -> None:
        """One seeded monitor and its five runs; append their events to ``emitted``."""
        hour = rng.randrange(24)
        params = {
            "cadence": {"cron": f"{rng.randrange(60)} {hour} * * *", "timezone": "Etc/UTC"},
            "behavior": {
                "type": "search",
                "config": {"count": rng.choice((5, 10, 25)), "behavior": "append"},
            },
            "metadata": {"owner": rng.choice(("alice", "bob", "carol"))} if k % 2 else {},
        }
        id_ = self._new_id("monitor", created, rng)
        monitor = _monitor_dict(id_, webset_id, params, created)
        emitted.append(("monitor.created", orjson.dumps(monitor), created))
        run_ids: list[str] = []
        run: dict[str, Any] | None = None
        for day, status in enumerate(_SEED_RUN_ORDER, start=1):
            at = created + day * DAY_MS + rng.randrange(60_000)
            run = _run_dict(self._new_id("monitor_run", at, rng), id_, at)
            emitted.append(("monitor.run.created", orjson.dumps(run), at))
            if status != "created":
                _set_run_status(run, status, at + 60_000 + rng.randrange(600_000))
                if status == "completed":
                    emitted.append(
                        ("monitor.run.completed", orjson.dumps(run), to_ms(run["updatedAt"]))
                    )
            self._runs[run["id"]] = run
            run_ids.append(run["id"])
        assert run is not None
        monitor["lastRun"] = run
        monitor["nextRunAt"] = iso_ms(to_ms(run["createdAt"]) + DAY_MS)
        monitor["updatedAt"] = run["updatedAt"]
        self._monitors[id_] = monitor
        bisect.insort(self._monitor_ids, id_)
        self._run_ids[id_] = run_ids

    def _seed_attempts(
        self, rng: random.Random, hook: dict[str, Any], events: list[tuple[str, str, int]]
    ) -> None:
        """Attempts of one seeded webhook on two events it subscribes to (see :meth:`seed`)."""
        wanted = set(hook["events"])
        matching = [e for e in events if e[1] in wanted]
        if len(matching) >= 2:
            chosen = sorted(rng.sample(matching, 2), key=lambda e: e[2])
        else:
            base = to_ms(SEED_ANCHOR) - DAY_MS
            chosen = [
                (self._new_id("event", at, rng), hook["events"][0], at)
                for at in (base, base + 3_600_000)
            ]
        (first_id, first_type, first_at), (second_id, second_type, second_at) = chosen
        self._add_attempt(hook, first_id, first_type, False, first_at + 1000, rng)
        self._add_attempt(hook, first_id, first_type, True, first_at + 61_000, rng)
        self._add_attempt(hook, second_id, second_type, True, second_at + 1000, rng)


# ---------------------------------------------------------------------- validation

_MONITOR_KEYS = ("websetId", "cadence", "behavior", "metadata")
_CONFIG_KEYS = ("query", "criteria", "entity", "count", "behavior")


def _cron_errors(cron: Any) -> list[str]:
    """A 5-field Unix cron that triggers at most once a day: fixed minute and hour."""
    if not isinstance(cron, str):
        return ["cadence.cron must be a string"]
    fields = cron.split()
    if len(fields) != 5:
        return ["cadence.cron must be a valid Unix cron expression with 5 fields"]
    minute, hour = fields[0], fields[1]
    if not (minute.isdigit() and int(minute) < 60 and hour.isdigit() and int(hour) < 24):
        return ["cadence.cron must trigger at most once per day"]
    return []


def _timezone_ok(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return not zoneinfo.available_timezones()  # no tz database here: accept anything
    return True


def _cadence_errors(cadence: Any) -> list[str]:
    if not isinstance(cadence, dict):
        return ["cadence must be an object"]
    errors = [
        f"property cadence.{k} should not exist" for k in cadence if k not in ("cron", "timezone")
    ]
    errors.extend(_cron_errors(cadence.get("cron")))
    tz = cadence.get("timezone")
    if tz is not None and (not isinstance(tz, str) or not _timezone_ok(tz)):
        errors.append("cadence.timezone must be a valid IANA time zone")
    return errors


def _behavior_errors(behavior: Any) -> list[str]:
    if not isinstance(behavior, dict):
        return ["behavior must be an object"]
    errors = [
        f"property behavior.{k} should not exist" for k in behavior if k not in ("type", "config")
    ]
    if behavior.get("type") != "search":
        errors.append("behavior.type must be one of the following values: search")
    config = behavior.get("config")
    if not isinstance(config, dict):
        return [*errors, "behavior.config must be an object"]
    errors.extend(
        f"property behavior.config.{k} should not exist" for k in config if k not in _CONFIG_KEYS
    )
    count = config.get("count")
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        errors.append("behavior.config.count must be a positive integer")
    query = config.get("query")
    if query is not None and (not isinstance(query, str) or not 2 <= len(query) <= 10_000):
        errors.append("behavior.config.query must be a string of 2 to 10000 characters")
    criteria = config.get("criteria")
    if criteria is not None and (
        not isinstance(criteria, list)
        or len(criteria) > 5
        or not all(isinstance(c, dict) and isinstance(c.get("description"), str) for c in criteria)
    ):
        errors.append("behavior.config.criteria must be a list of at most 5 {description}")
    entity = config.get("entity")
    if entity is not None and (
        not isinstance(entity, dict) or entity.get("type") not in ENTITY_TYPES
    ):
        errors.append(
            "behavior.config.entity.type must be one of the following values: "
            + ", ".join(ENTITY_TYPES)
        )
    mode = config.get("behavior")
    if mode is not None and mode not in ("override", "append"):
        errors.append(
            "behavior.config.behavior must be one of the following values: override, append"
        )
    return errors


def validate_monitor_create(body: Any) -> list[str]:
    """Validate a ``CreateMonitorParameters`` body; class-validator-style messages, [] if valid."""
    if not isinstance(body, dict):
        return ["request body must be an object"]
    errors = [f"property {k} should not exist" for k in body if k not in _MONITOR_KEYS]
    webset = body.get("websetId")
    if not isinstance(webset, str) or not webset:
        errors.append("websetId must be a non-empty string")
    errors.extend(_cadence_errors(body.get("cadence")))
    errors.extend(_behavior_errors(body.get("behavior")))
    if body.get("metadata") is not None:
        errors.extend(_metadata_errors(body["metadata"]))
    return errors


def validate_monitor_update(body: Any) -> list[str]:
    """Validate a ``PATCH /v0/monitors/{id}`` body (cadence, behavior, status, metadata)."""
    if not isinstance(body, dict):
        return ["request body must be an object"]
    allowed = ("cadence", "behavior", "status", "metadata")
    errors = [f"property {k} should not exist" for k in body if k not in allowed]
    if body.get("cadence") is not None:
        errors.extend(_cadence_errors(body["cadence"]))
    if body.get("behavior") is not None:
        errors.extend(_behavior_errors(body["behavior"]))
    if body.get("status") is not None and body["status"] not in ("enabled", "disabled"):
        errors.append("status must be one of the following values: enabled, disabled")
    if body.get("metadata") is not None:
        errors.extend(_metadata_errors(body["metadata"]))
    return errors


def _url_ok(url: Any) -> bool:
    if not isinstance(url, str) or len(url) > 2048:
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _events_errors(events: Any) -> list[str]:
    if not isinstance(events, list) or not events:
        return ["events must contain at least 1 elements"]
    if not all(e in EVENT_TYPES for e in events):
        return [
            "each value in events must be one of the following values: " + ", ".join(EVENT_TYPES)
        ]
    return []


def validate_webhook_create(body: Any) -> list[str]:
    """Validate a ``CreateWebhookParameters`` body (``events``, ``url``, ``metadata?``)."""
    if not isinstance(body, dict):
        return ["request body must be an object"]
    allowed = ("events", "url", "metadata")
    errors = [f"property {k} should not exist" for k in body if k not in allowed]
    errors.extend(_events_errors(body.get("events")))
    if not _url_ok(body.get("url")):
        errors.append("url must be a URL address")
    if body.get("metadata") is not None:
        errors.extend(_metadata_errors(body["metadata"]))
    return errors


def validate_webhook_update(body: Any) -> list[str]:
    """Validate a ``PATCH /v0/webhooks/{id}`` body (events, url, metadata, status)."""
    if not isinstance(body, dict):
        return ["request body must be an object"]
    allowed = ("events", "url", "metadata", "status")
    errors = [f"property {k} should not exist" for k in body if k not in allowed]
    if body.get("events") is not None:
        errors.extend(_events_errors(body["events"]))
    if body.get("url") is not None and not _url_ok(body["url"]):
        errors.append("url must be a URL address")
    if body.get("status") is not None and body["status"] not in ("active", "inactive"):
        errors.append("status must be one of the following values: active, inactive")
    if body.get("metadata") is not None:
        errors.extend(_metadata_errors(body["metadata"]))
    return errors
