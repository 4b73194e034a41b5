"""HTTP front end of the Exa Websets emulator (imports, websets, monitors, webhooks, events).

A stdlib ``ThreadingHTTPServer`` speaking HTTP/1.1 with keep-alive. Every reply is written
with a single ``write`` carrying the status line, ``Content-Type``, ``Content-Length`` and the
body. Routes (docs/exa-api.md §3.1):

* ``POST/GET /websets/v0/imports`` and ``GET/PATCH/DELETE /websets/v0/imports/{id}``: the API,
  authenticated with ``x-api-key`` or ``Authorization: Bearer`` (docs/exa-api.md §1).
* ``POST/GET /websets/v0/websets``, ``GET/POST/DELETE /websets/v0/websets/{webset}``
  (``POST`` is the update; ``GET`` takes ``expand=items``), ``GET .../{webset}/items`` and
  ``GET/DELETE .../{webset}/items/{id}``, where ``{webset}`` is an id or an externalId
  (docs/exa-api.md §4.5), same authentication; data in :class:`~.websets.WebsetStore`. Their
  requests are counted per route in the stats; ``list_pages`` counts import pages only.
* ``POST .../{webset}/searches`` (201), ``GET .../{webset}/searches/{id}``,
  ``POST .../{webset}/searches/{id}/cancel``; ``POST .../{webset}/enrichments`` (201),
  ``GET/DELETE .../{webset}/enrichments/{id}``, ``POST .../{webset}/enrichments/{id}/cancel``:
  same authentication; they move only when driven (``POST /_emulator/websets/step``).
* ``GET /websets/v0/events`` (``cursor``, ``limit``, ``types``, ``createdAfter``,
  ``createdBefore``) and ``GET /websets/v0/events/{id}``: the events the other routes and
  seeding emitted (docs/exa-api.md §4.6), same authentication; data in
  :class:`~.events.EventLog`.
* ``POST/GET /websets/v0/monitors`` (201; list: ``cursor``, ``limit`` 1-200/25, ``websetId``),
  ``GET/PATCH/DELETE /websets/v0/monitors/{id}``, ``GET .../{id}/runs`` (``cursor``,
  ``limit`` 1-200/25, though the spec declares none) and ``GET .../{id}/runs/{run}``;
  ``POST/GET /websets/v0/webhooks`` (201, the only reply carrying ``secret``),
  ``GET/PATCH/DELETE /websets/v0/webhooks/{id}`` and ``GET .../{id}/attempts`` (``cursor``,
  ``limit``, ``eventType``, ``successful``): same authentication; data in
  :class:`~.monitors.MonitorStore` (``emu.monitors``). Runs and attempts exist only when
  driven (``POST /_emulator/monitors/step``, ``POST /_emulator/webhooks/step``).
* ``PUT /_uploads/{id}.csv?X-Amz-Expires=3600&X-Amz-Signature=...``: the presigned upload URL
  returned by create (stands in for S3, docs/exa-api.md §3.5). No API key.
* ``/_emulator/...``: control endpoints for tests and benchmarks in other processes. **No API
  key**: this is a loopback test tool; do not expose it.

  - ``GET /_emulator/stats`` → ``{"requests": {"GET /websets/v0/imports": n, ...},
    "list_pages": n, "list_queries": ["limit=200&cursor=...", ...]}``;
    ``DELETE /_emulator/stats`` resets the counters.
  - ``GET /_emulator/imports`` → the store snapshot (JSON list, list order).
  - ``POST /_emulator/faults`` with a :class:`Fault` spec (``kind`` among status, html, slow,
    reset, malformed; ``method``, ``path``, ``skip``, ``times``, ``status``, ``headers``,
    ``body``, ``delay``); ``GET`` lists pending faults; ``DELETE`` clears them.
  - ``POST /_emulator/mutate`` ``{"update": n, "create": n, "delete": n, "advance": n,
    "seed": s}`` → ids touched (see :meth:`ImportStore.mutate`).
  - ``POST /_emulator/clock`` ``{"advance": seconds}`` and/or ``{"set": "<iso>"}`` (set first,
    then advance) → ``{"now"}``.
  - ``POST /_emulator/websets/step`` ``{"webset": "<id or externalId>", "items": n,
    "enrich": n}`` (all optional: every webset, 10, all) → ``{"items_created": [...],
    "items_enriched": [...], "searches": [...], "enrichments": [...]}``: one driven step of
    searches and enrichments (see :meth:`~.websets.WebsetStore.step`); unknown webset 404.
  - ``POST /_emulator/monitors/step`` ``{"monitor": "<id>", "status": "completed"}`` (both
    optional: every enabled monitor, ``completed``) → the new runs, one per monitor
    (:meth:`~.monitors.MonitorStore.step_monitors`); ``{"run": "<id>", "status": s}`` moves
    that run on instead (:meth:`~.monitors.MonitorStore.advance_run`; 409 if it cannot).
    Unknown monitor or run 404.
  - ``POST /_emulator/webhooks/step`` ``{"webhook": "<id>", "successful": true}`` (both
    optional: every active webhook, successful) → the new attempts, one per webhook
    (:meth:`~.monitors.MonitorStore.step_webhooks`); unknown webhook 404.

Hostile input (what a test can throw at it):

* Request bodies are bounded: ``Content-Length`` above :data:`MAX_BODY_BYTES` (1 MiB; uploads
  :data:`MAX_UPLOAD_BYTES`, the API's 50 MB file-size maximum) gets 413 before any of the body
  is read, a ``Transfer-Encoding`` (chunked) body gets 411, a malformed or conflicting
  ``Content-Length`` gets 400; each closes the connection. ``Expect: 100-continue`` is
  answered with the same refusal instead of ``100 Continue``.
* Idle timeout (``idle_timeout``, :data:`IDLE_TIMEOUT_S` = 30 s by default): a connection
  silent for that long (before or inside a request, or not reading a reply) is closed, and
  each request (line, headers, body) must arrive whole within that long of its first bytes,
  so idle, drip-feeding or stalled clients never pin a server thread.
* Clock values and other control numbers are validated: non-ISO strings, wrong JSON types,
  non-finite or huge offsets, readings outside ``CLOCK_MIN``..``CLOCK_MAX`` (1970..9999-01-01)
  and store stamps outside year 1..9999 get 400 and change nothing.
* Binding a non-loopback address logs a warning: there is no authentication beyond the
  fixed test key, and the control and upload routes need none.
"""

from __future__ import annotations

import contextlib
import email.utils
import io
import ipaddress
import logging
import math
import re
import secrets
import socket
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs, urlsplit

import orjson

from .events import EVENT_TYPES, EventLog, EventNotFoundError
from .monitors import (
    MONITOR_RUN_STATUSES,
    MonitorNotFoundError,
    MonitorStore,
    RunNotFoundError,
    WebhookNotFoundError,
    validate_monitor_create,
    validate_monitor_update,
    validate_webhook_create,
    validate_webhook_update,
)
from .store import (
    ENTITY_TYPES,
    ImportNotFoundError,
    ImportStore,
    InvalidTransitionError,
    TimeRangeError,
    is_ulid,
    iso_ms,
    parse_time,
    to_ms,
)
from .websets import (
    EnrichmentNotFoundError,
    ItemNotFoundError,
    SearchNotFoundError,
    WebsetConflictError,
    WebsetNotFoundError,
    WebsetStore,
    validate_enrichment_create,
    validate_search_create,
    validate_webset_create,
    validate_webset_update,
)

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

logger = logging.getLogger(__name__)

__all__ = [
    "IDLE_TIMEOUT_S",
    "MAX_BODY_BYTES",
    "MAX_FAULT_DELAY_S",
    "MAX_MUTATE",
    "MAX_UPLOAD_BYTES",
    "Emulator",
    "EmulatorStats",
    "Fault",
    "FaultKind",
    "FaultList",
    "validate_create",
    "validate_update",
]

FaultKind = Literal["status", "html", "slow", "reset", "malformed", "mutate"]
LIST_ROUTE = "/websets/v0/imports"
_IMPORTS = "/websets/v0/imports"
_WEBSETS = "/websets/v0/websets"
_EVENTS = "/websets/v0/events"
_MONITORS = "/websets/v0/monitors"
_WEBHOOKS = "/websets/v0/webhooks"
_JSON = "application/json; charset=utf-8"
_MAX_SIZE = (
    50_000_000  # CreateImportParameters.size maximum, bytes (docs/exa-api.md §3.2, §8 item 8)
)
MAX_BODY_BYTES = 1 << 20
"""Largest request body (``Content-Length``) read on the API and control routes: 1 MiB."""
MAX_UPLOAD_BYTES = _MAX_SIZE
"""Largest body read on the presigned upload route: the API's 50 MB file-size maximum."""
IDLE_TIMEOUT_S = 30.0
"""Default ``idle_timeout``: longest silence on a connection, and longest time a request may
take to arrive from its first bytes."""
MAX_FAULT_DELAY_S = 600.0
"""Largest ``delay`` of a ``slow`` fault accepted by ``POST /_emulator/faults``."""
MAX_MUTATE = 1_000_000
"""Largest count per field accepted by ``POST /_emulator/mutate``."""
_FAULT_KINDS = ("status", "html", "slow", "reset", "malformed")
_STEP_KEYS = ("webset", "items", "enrich")
_MONITOR_STEP_KEYS = ("monitor", "status", "run")
_HOOK_KEYS = ("webhook", "successful")
_TRUE_FALSE = {"true": True, "false": False, "True": True, "False": False}
_SubAction = Callable[[str, str], dict[str, Any]]
"""A store method on one search or enrichment: ``(webset, id) -> object``."""
_SUB_IDS = {"items": "{item}", "searches": "{search}", "enrichments": "{enrichment}"}
_CRLF = re.compile(r"[\r\n]")
_RATE_LIMIT_MSG = (
    "You've exceeded your Exa rate limit of 10 requests per second. Please slow down and try again."
)
_CLOUDFLARE_502 = (
    "<!DOCTYPE html>\n<html>\n<head><title>api.exa.ai | 502: Bad gateway</title></head>\n"
    '<body><div id="cf-wrapper"><h1>Bad gateway <span>Error code 502</span></h1>'
    "<p>The web server reported a bad gateway error.</p>"
    "<p>Cloudflare Ray ID: <strong>8f0c0ffee0000000</strong></p></div></body>\n</html>\n"
)


@dataclass
class Fault:
    """One injected fault, consumed in order by matching requests.

    A fault matches a request when the method matches (``None`` = any) and the path (without
    query) equals the list route ``/websets/v0/imports`` if ``path`` is ``None``, else starts
    with ``path``. Every added fault counts the matching requests it sees from the moment it
    is added; it lets the first ``skip`` pass, then hits the next ``times`` ones. When several
    faults are due on the same request, the earliest added one fires (``mutate`` faults fire
    in addition, they do not replace the reply) and the others wait for later requests.

    Args:
        kind: ``status`` (reply ``status`` with ``headers``/``body``), ``html`` (502 Cloudflare
            HTML page), ``slow`` (sleep ``delay`` then reply normally), ``reset`` (send headers
            and half the body, then reset the connection), ``malformed`` (200 with truncated
            JSON), ``mutate`` (run ``fn(store)`` before serving normally).
        method: HTTP method to match, ``None`` for any.
        path: Path prefix to match; ``None`` = exactly the list route.
        skip: Matching requests to let through first.
        times: Matching requests to hit.
        status: Status code for ``status`` (default 500; 429 gets the documented body).
        headers: Extra reply headers, e.g. ``{"Retry-After": "2"}``.
        body: Reply body (bytes/str sent as is, anything else JSON-encoded); a default
            suitable for the status is used when ``None``.
        delay: Seconds to sleep for ``slow``.
        fn: Callback for ``mutate``.
    """

    kind: FaultKind
    method: str | None = "GET"
    path: str | None = None
    skip: int = 0
    times: int = 1
    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    delay: float = 0.0
    fn: Callable[[ImportStore], None] | None = None
    seen: int = 0
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        """Return whether this fault applies to a request (ignoring skip/times)."""
        if self.method is not None and self.method.upper() != method:
            return False
        if self.path is None:
            return path.rstrip("/") == LIST_ROUTE
        return path.startswith(self.path)

    @property
    def exhausted(self) -> bool:
        """Whether the fault has hit ``times`` requests already."""
        return self.hits >= self.times

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Fault:
        """Build a fault from a JSON spec (control endpoint); ``mutate`` is not allowed.

        Raises:
            ValueError: Bad spec (unknown field, wrong type, number out of range).
            OverflowError: A number too large to convert.
        """
        allowed = {"kind", "method", "path", "skip", "times", "status", "headers", "body", "delay"}
        unknown = set(spec) - allowed
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        kind = spec.get("kind")
        if kind not in _FAULT_KINDS:
            raise ValueError("kind must be one of " + ", ".join(_FAULT_KINDS))
        for name in ("method", "path"):
            if not isinstance(spec.get(name), (str, type(None))):
                raise ValueError(f"{name} must be a string or null")
        headers = spec.get("headers") or {}
        if not isinstance(headers, dict):
            raise ValueError("headers must be an object")
        headers = {str(k): str(v) for k, v in headers.items()}
        if any(_CRLF.search(k + v) or not k for k, v in headers.items()):
            raise ValueError("header names must be non-empty; names and values without CR/LF")
        skip = int(spec.get("skip", 0))
        times = int(spec.get("times", 1))
        status = int(spec.get("status", 500))
        delay = float(spec.get("delay", 0.0))
        if skip < 0 or times < 0:
            raise ValueError("skip and times must not be less than 0")
        if not 100 <= status <= 599:
            raise ValueError("status must be an HTTP status code, 100-599")
        if not 0 <= delay <= MAX_FAULT_DELAY_S:  # also rejects NaN
            raise ValueError(f"delay must be a number of seconds, 0-{MAX_FAULT_DELAY_S:g}")
        return cls(
            kind=kind,
            method=spec.get("method", "GET"),
            path=spec.get("path"),
            skip=skip,
            times=times,
            status=status,
            headers=headers,
            body=spec.get("body"),
            delay=delay,
        )

    def describe(self) -> dict[str, Any]:
        """Return a JSON-able summary."""
        return {
            "kind": self.kind,
            "method": self.method,
            "path": self.path,
            "skip": self.skip,
            "times": self.times,
            "status": self.status,
            "delay": self.delay,
            "seen": self.seen,
            "hits": self.hits,
        }


class FaultList:
    """Thread-safe ordered list of pending faults."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> Fault:
        """Append a fault and return it."""
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        """Remove every pending fault."""
        with self._lock:
            self._faults.clear()

    def pending(self) -> list[Fault]:
        """Return the faults that have not been used up."""
        with self._lock:
            return [f for f in self._faults if not f.exhausted]

    def __len__(self) -> int:
        return len(self.pending())

    def take(self, method: str, path: str) -> tuple[list[Fault], Fault | None]:
        """Register a request; return the mutate faults due and the reply fault due, if any."""
        mutates: list[Fault] = []
        reply: Fault | None = None
        with self._lock:
            if not self._faults:
                return mutates, None
            for fault in self._faults:
                if fault.exhausted or not fault.matches(method, path):
                    continue
                fault.seen += 1
                if fault.seen <= fault.skip:
                    continue
                if fault.kind == "mutate":
                    fault.hits += 1
                    mutates.append(fault)
                elif reply is None:
                    fault.hits += 1
                    reply = fault
                else:
                    fault.seen -= 1  # not consumed; it will get a later request
            self._faults = [f for f in self._faults if not f.exhausted]
        return mutates, reply


class EmulatorStats:
    """Request counters: per ``"METHOD route"``, list pages served, list query strings."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, str]] = Counter()
        self.list_pages = 0
        self.list_queries: list[str] = []

    def count(self, method: str, route: str) -> None:
        """Count one request."""
        with self._lock:
            self.requests[(method, route)] += 1

    def list_request(self, query: str) -> None:
        """Record the raw query string of a list request."""
        with self._lock:
            self.list_queries.append(query)

    def page_served(self) -> None:
        """Count one successful list page."""
        with self._lock:
            self.list_pages += 1

    def reset(self) -> None:
        """Zero all counters."""
        with self._lock:
            self.requests.clear()
            self.list_pages = 0
            self.list_queries = []

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-able copy."""
        with self._lock:
            return {
                "requests": {f"{m} {r}": n for (m, r), n in sorted(self.requests.items())},
                "list_pages": self.list_pages,
                "list_queries": list(self.list_queries),
            }


class _Reply(Exception):
    """Raised inside a handler to send an error reply."""

    def __init__(self, status: int, body: Any, content_type: str = _JSON) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.content_type = content_type


def _request_id() -> str:
    return secrets.token_hex(16)


def _bad_request(messages: list[str] | str) -> _Reply:
    # NestJS ValidationPipe shape (docs/exa-api.md §5.2 item 1 family).
    return _Reply(400, {"statusCode": 400, "message": messages, "error": "Bad Request"})


def _not_found(message: str, path: str) -> _Reply:
    # Recorded shape, `path` without the `/websets` prefix (docs/exa-api.md §5.2 item 1).
    return _Reply(
        404,
        {
            "statusCode": 404,
            "timestamp": iso_ms(time.time_ns() // 1_000_000),
            "message": message,
            "error": "Not Found",
            "path": path,
        },
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_metadata(value: Any, errors: list[str]) -> None:
    if not isinstance(value, dict):
        errors.append("metadata must be an object")
        return
    for key, item in value.items():
        if not isinstance(item, str):
            errors.append(f"metadata.{key} must be a string")
        elif len(item) > 1000:
            errors.append(f"metadata.{key} must be shorter than or equal to 1000 characters")


def validate_create(body: Any) -> list[str]:
    """Validate a ``CreateImportParameters`` body (docs/exa-api.md §3.2, §3.4).

    Optional fields sent as ``null`` count as absent (class-validator ``@IsOptional``).

    Returns:
        class-validator-style messages; empty when valid.
    """
    if not isinstance(body, dict):
        return ["request body must be an object"]
    errors: list[str] = []
    allowed = {"size", "count", "format", "entity", "title", "metadata", "csv"}
    errors.extend(f"property {k} should not exist" for k in body if k not in allowed)
    for name in ("size", "count"):
        value = body.get(name)
        if value is None:
            errors.append(f"{name} should not be empty")
        elif not _is_number(value):
            errors.append(f"{name} must be a number conforming to the specified constraints")
        elif value < 0:
            errors.append(f"{name} must not be less than 0")
    size: Any = body.get("size")
    if _is_number(size) and size > _MAX_SIZE:
        errors.append(f"size must not be greater than {_MAX_SIZE}")
    if body.get("format") != "csv":
        errors.append("format must be one of the following values: csv")
    entity = body.get("entity")
    if not isinstance(entity, dict):
        errors.append("entity must be an object")
    else:
        etype = entity.get("type")
        if etype not in ENTITY_TYPES:
            errors.append(
                "entity.type must be one of the following values: " + ", ".join(ENTITY_TYPES)
            )
        extra = set(entity) - ({"type", "description"} if etype == "custom" else {"type"})
        errors.extend(f"property entity.{k} should not exist" for k in sorted(extra))
        if etype == "custom":
            desc = entity.get("description")
            if not isinstance(desc, str):
                errors.append("entity.description must be a string")
            elif not 2 <= len(desc) <= 200:
                errors.append(
                    "entity.description must be longer than or equal to 2 characters"
                    if len(desc) < 2
                    else "entity.description must be shorter than or equal to 200 characters"
                )
    title = body.get("title")
    if title is not None and not isinstance(title, str):
        errors.append("title must be a string")
    if body.get("metadata") is not None:
        _check_metadata(body["metadata"], errors)
    csv_cfg = body.get("csv")
    if csv_cfg is not None:
        if not isinstance(csv_cfg, dict):
            errors.append("csv must be an object")
        else:
            errors.extend(
                f"property csv.{k} should not exist" for k in csv_cfg if k != "identifier"
            )
            ident = csv_cfg.get("identifier")
            if ident is not None and (
                not isinstance(ident, int) or isinstance(ident, bool) or ident < 0
            ):
                errors.append("csv.identifier must be an integer number not less than 0")
    return errors


def validate_update(body: Any) -> list[str]:
    """Validate an ``UpdateImport`` PATCH body (docs/exa-api.md §3.6); unknown fields are errors."""
    if not isinstance(body, dict):
        return ["request body must be an object"]
    errors = [f"property {k} should not exist" for k in body if k not in ("title", "metadata")]
    title = body.get("title")
    if title is not None and not isinstance(title, str):
        errors.append("title must be a string")
    if body.get("metadata") is not None:
        _check_metadata(body["metadata"], errors)
    return errors


def _parse_limit(values: list[str] | None, default: int = 25, maximum: int = 200) -> int:
    """Parse ``limit``: imports 1-200 (default 25), websets 1-100 (25), items 1-100 (20)."""
    if values is None:
        return default
    if len(values) != 1 or not values[0].isascii() or not values[0].isdigit():
        raise _bad_request(
            [
                f"limit must not be greater than {maximum}",
                "limit must not be less than 1",
                "limit must be an integer number",
            ]
        )
    limit = int(values[0])
    if limit < 1:
        raise _bad_request(["limit must not be less than 1"])
    if limit > maximum:
        raise _bad_request([f"limit must not be greater than {maximum}"])
    return limit


def _parse_cursor(values: list[str] | None) -> str | None:
    if values is None:
        return None
    if len(values) != 1:
        raise _bad_request(["cursor must be a string"])
    cursor = values[0]
    if not cursor:
        raise _bad_request(["cursor must be longer than or equal to 1 characters"])
    if not is_ulid(cursor):
        raise _bad_request(["cursor is invalid"])
    return cursor


def _parse_instant(values: list[str] | None, name: str) -> int | None:
    """Parse an ISO-8601 query timestamp (``createdAfter``/``createdBefore``) to epoch ms."""
    if values is None:
        return None
    try:
        if len(values) != 1:
            raise ValueError(name)
        return to_ms(parse_time(values[0]))
    except ValueError:  # TimeRangeError included
        raise _bad_request([f"{name} must be a valid ISO 8601 date string"]) from None


def _body_length(headers: Message, path: str) -> int:
    """Return the declared body length of a request, refusing bodies the emulator won't read.

    Args:
        headers: The request headers (``http.client.HTTPMessage``).
        path: The request path without query (uploads get :data:`MAX_UPLOAD_BYTES`).

    Returns:
        The ``Content-Length`` (0 when absent: an HTTP/1.1 request without it has no body).

    Raises:
        _Reply: 411 for any ``Transfer-Encoding``, 400 for a malformed or conflicting
            ``Content-Length``, 413 above the bound (S3 XML on the upload route).
    """
    if headers.get("Transfer-Encoding") is not None:
        raise _Reply(
            411,
            {
                "statusCode": 411,
                "message": "Content-Length required: the emulator does not read chunked bodies",
                "error": "Length Required",
            },
        )
    values = {str(v).strip() for v in headers.get_all("Content-Length") or ()}
    if not values:
        return 0
    text = values.pop()
    if values or not (text.isascii() and text.isdigit()):
        raise _Reply(
            400,
            {"statusCode": 400, "message": "Bad Content-Length", "error": "Bad Request"},
        )
    upload = path.startswith("/_uploads/")
    limit = MAX_UPLOAD_BYTES if upload else MAX_BODY_BYTES
    if len(text) > len(str(limit)) or int(text) > limit:
        if upload:
            raise _Reply(
                413,
                _s3_error(
                    "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size"
                ),
                "application/xml",
            )
        raise _Reply(
            413,
            {
                "statusCode": 413,
                "message": f"request entity too large: the limit is {limit} bytes",
                "error": "Payload Too Large",
            },
        )
    return int(text)


class _DeadlineSocketIO(socket.SocketIO):
    """Raw socket reader that stops a request once its read deadline has passed.

    The socket timeout bounds each silent wait; the deadline, set when the first bytes of a
    request arrive, bounds a client that keeps trickling bytes (each ``recv`` would otherwise
    restart the socket timeout forever).
    """

    def __init__(self, sock: socket.socket, handler: _Handler) -> None:
        super().__init__(sock, "rb")
        self._handler = handler

    def readinto(self, b: WriteableBuffer) -> int | None:
        """Read like :class:`socket.SocketIO`, then enforce the handler's read deadline.

        Raises:
            TimeoutError: The socket timed out or the deadline has passed.
        """
        n = super().readinto(b)
        handler = self._handler
        now = time.monotonic()
        if handler.read_deadline is None:
            handler.read_deadline = now + handler.server.emulator.idle_timeout
        elif now > handler.read_deadline:
            raise TimeoutError("request not received within the idle timeout")
        return n


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    emulator: Emulator

    def __init__(self, address: tuple[str, int], emulator: Emulator) -> None:
        self.emulator = emulator
        self.connections: set[socket.socket] = set()
        self.conn_lock = threading.Lock()
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log a request that ended in an exception, instead of printing it to stderr.

        A client that hangs up or stalls is routine hostile input (DEBUG); anything else is
        an emulator bug (ERROR with the traceback). Either way only that connection ends.
        """
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            logger.debug("connection from %s ended: %r", client_address, exc)
        else:
            logger.exception("emulator error serving %s", client_address)


class _Handler(BaseHTTPRequestHandler):
    """Request handler; all logic lives in the owning :class:`Emulator`."""

    protocol_version = "HTTP/1.1"
    server_version = "exa-emulator"
    disable_nagle_algorithm = True
    server: _Server

    read_deadline: float | None = None

    def setup(self) -> None:
        """Register the connection; bound reads by the emulator's idle timeout."""
        super().setup()
        self.connection.settimeout(self.server.emulator.idle_timeout)
        self.rfile.close()  # the makefile() reader of StreamRequestHandler, replaced:
        self.rfile = io.BufferedReader(_DeadlineSocketIO(self.connection, self))
        with self.server.conn_lock:
            self.server.connections.add(self.connection)

    def handle_one_request(self) -> None:
        """Serve one request; it must arrive whole within ``idle_timeout`` of its first bytes."""
        self.read_deadline = None  # armed by the first recv of this request
        super().handle_one_request()

    def handle_expect_100(self) -> bool:
        """Refuse an unwanted body before the client sends it, else send ``100 Continue``."""
        if self.server.emulator.check_body(self) is None:
            return False
        return super().handle_expect_100()

    def finish(self) -> None:
        with self.server.conn_lock:
            self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def address_string(self) -> str:
        """Return the client IP without a reverse DNS lookup."""
        return str(self.client_address[0])

    def log_message(self, format: str, *args: Any) -> None:
        """Log at DEBUG through :mod:`logging` instead of writing to stderr."""
        logger.debug("%s - %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        """Dispatch GET."""
        self.server.emulator.handle(self)

    do_POST = do_PATCH = do_DELETE = do_PUT = do_HEAD = do_OPTIONS = do_GET

    # ---------------------------------------------------------------- writing

    def reply(
        self,
        status: int,
        body: bytes,
        content_type: str = _JSON,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Write a whole response with one socket write."""
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
        head = [f"HTTP/1.1 {status} {reason}"]
        if content_type:
            head.append(f"Content-Type: {content_type}")
        head.append(f"Content-Length: {len(body)}")
        # the emulator's clock, as a real server's Date (clients may read the server's time)
        now = self.server.emulator.store.clock.now_ms() / 1000
        head.append(f"Date: {email.utils.formatdate(now, usegmt=True)}")
        for name, value in (headers or {}).items():
            head.append(f"{name}: {value}")
        if self.close_connection:
            head.append("Connection: close")
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        if self.command != "HEAD":
            data += body
        self.wfile.write(data)
        logger.debug('"%s" %d %d', self.requestline, status, len(body))

    def reply_json(self, status: int, obj: Any, headers: Mapping[str, str] | None = None) -> None:
        """Write ``obj`` as JSON."""
        body = obj if isinstance(obj, bytes) else orjson.dumps(obj)
        self.reply(status, body, _JSON, headers)

    def reset_midway(self, body: bytes) -> None:
        """Send headers with the full Content-Length and half the body, then send an RST."""
        head = (
            f"HTTP/1.1 200 OK\r\nContent-Type: {_JSON}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode("latin-1")
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.wfile.write(head + body[: max(1, len(body) // 2)])
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()


class Emulator:
    """The emulated Exa Websets API server (imports in :attr:`store`, websets in :attr:`websets`).

    Args:
        api_key: The one valid API key.
        imports: Imports to seed (deterministic for a given ``seed``).
        seed: Seed of the store's random generator.
        host: Interface to bind.
        port: Port to bind; 0 picks a free one (see :attr:`base_url`).
        quirk_last_page: Reproduce the recorded ``hasMore: true, nextCursor: null`` on the
            last list page (docs/exa-api.md §2 / §8 item 3); ``False`` answers ``hasMore: false``.
        no_credits_keys: Keys that authenticate but are out of credits (402).
        store: Use this store instead of building one from ``imports``/``seed``.
        websets: Websets to seed (deterministic for ``seed``), each with a completed search,
            a completed enrichment and ``items_per_webset`` items.
        items_per_webset: Items per seeded webset.
        monitors: Monitors to seed over the seeded websets (needs ``websets``), each with
            five runs, one per run status (see :meth:`~.monitors.MonitorStore.seed`).
        webhooks: Webhooks to seed, each with successful and failed attempts.
        idle_timeout: Seconds a connection may stay silent, and the time a request gets to
            arrive whole from its first bytes; idle or drip-feeding clients are disconnected.

    Raises:
        ValueError: ``idle_timeout`` is not a positive finite number.

    Example:
        >>> with Emulator(api_key="k", imports=10) as emu:  # doctest: +SKIP
        ...     requests.get(emu.base_url + "/websets/v0/imports", headers={"x-api-key": "k"})
    """

    def __init__(
        self,
        api_key: str = "test-key",
        imports: int = 0,
        seed: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        quirk_last_page: bool = True,
        no_credits_keys: tuple[str, ...] | list[str] | set[str] | frozenset[str] = (),
        store: ImportStore | None = None,
        idle_timeout: float = IDLE_TIMEOUT_S,
        websets: int = 0,
        items_per_webset: int = 0,
        monitors: int = 0,
        webhooks: int = 0,
    ) -> None:
        if not (_is_number(idle_timeout) and idle_timeout > 0):
            raise ValueError(f"idle_timeout must be a positive number of seconds: {idle_timeout}")
        self.idle_timeout = float(idle_timeout)
        self.api_key = api_key
        self.host = host
        self.port = port
        self.quirk_last_page = quirk_last_page
        self.no_credits_keys = frozenset(no_credits_keys)
        self.store = store if store is not None else ImportStore(seed=seed, imports=imports)
        if self.store.events is None:
            self.store.events = EventLog(seed=seed, clock=self.store.clock)
        self.events: EventLog = self.store.events
        self.websets = WebsetStore(seed=seed, clock=self.store.clock, events=self.events)
        if websets:
            self.websets.seed(websets, items_per_webset)
        self.monitors = MonitorStore(self.websets, seed=seed)
        if monitors or webhooks:
            self.monitors.seed(monitors, webhooks)
        self.faults = FaultList()
        self.stats = EmulatorStats()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> Emulator:
        """Bind and serve in a background thread; return ``self``."""
        if self._server is not None:
            return self
        self._server = _Server((self.host, self.port), self)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"exa-emulator-{self.port}",
            daemon=True,
        )
        self._thread.start()
        logger.info("exa emulator serving on %s", self.base_url)
        bound = str(self._server.server_address[0])
        if not _is_loopback(bound):
            logger.warning(
                "exa emulator bound to %s (%s), which is not a loopback address: it is "
                "reachable from the network and has no authentication beyond the fixed test "
                "API key (the /_emulator control endpoints and upload URLs need no key at all)",
                self.host,
                bound,
            )
        return self

    def stop(self) -> None:
        """Stop serving and drop open keep-alive connections."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with server.conn_lock:
            conns = list(server.connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
        logger.info("exa emulator stopped")

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """``http://host:port`` (the real port once started)."""
        return f"http://{self.host}:{self.port}"

    # ---------------------------------------------------------------- helpers for tests

    def inject(self, kind: FaultKind, **kwargs: Any) -> Fault:
        """Shortcut for ``emu.faults.add(Fault(kind, **kwargs))``."""
        return self.faults.add(Fault(kind, **kwargs))

    def reset_stats(self) -> None:
        """Zero the request counters."""
        self.stats.reset()

    def upload_url(self, import_id: str) -> str:
        """Return the presigned upload URL of an import (as returned by create)."""
        token = self.store.upload_token(import_id) or ""
        return (
            f"{self.base_url}/_uploads/{import_id}.csv"
            f"?X-Amz-Expires=3600&X-Amz-Signature={token}&x-id=PutObject"
        )

    # ---------------------------------------------------------------- dispatch

    def handle(self, h: _Handler) -> None:
        """Serve one request (called by the handler thread)."""
        method = h.command
        split = urlsplit(h.path)
        path = split.path
        query = split.query
        length = self.check_body(h)
        if length is None:
            return
        body = h.rfile.read(length) if length > 0 else b""
        route = self._route_name(path)
        self.stats.count(method, route)
        if route == LIST_ROUTE and method == "GET":
            self.stats.list_request(query)
        mutates, fault = self.faults.take(method, path)
        for m in mutates:
            if m.fn is not None:
                m.fn(self.store)
        if fault is not None and self._apply_fault(h, fault, method, path, query, body):
            return
        try:
            status, payload, ctype, headers = self._serve(method, path, query, body, h)
        except _Reply as err:
            status, payload, ctype, headers = err.status, _encode(err.body), err.content_type, {}
        except TimeRangeError as err:  # a stamp or clock reading the store cannot write
            status, payload, ctype, headers = 400, _encode(_bad_request([str(err)]).body), _JSON, {}
        except Exception:  # pragma: no cover - defensive
            logger.exception("emulator error on %s %s", method, h.path)
            status, payload, ctype, headers = (
                500,
                orjson.dumps({"statusCode": 500, "message": "Internal server error"}),
                _JSON,
                {},
            )
        if fault is not None and fault.kind == "reset":
            h.reset_midway(payload)
            return
        if fault is not None and fault.kind == "malformed":
            payload = payload[: max(1, len(payload) // 2)] if len(payload) > 2 else b'{"data":['
            status = 200
        h.reply(status, payload, ctype, headers)

    def check_body(self, h: _Handler) -> int | None:
        """Return the body length to read, or send the refusal and return ``None``.

        A refused body is never read, so the connection is closed after the reply.
        """
        try:
            return _body_length(h.headers, urlsplit(h.path).path)
        except _Reply as err:
            h.close_connection = True
            h.reply(err.status, _encode(err.body), err.content_type)
            return None

    @staticmethod
    def _route_name(path: str) -> str:
        if path.startswith(_IMPORTS):
            rest = path[len(_IMPORTS) :].strip("/")
            return LIST_ROUTE if not rest else _IMPORTS + "/{id}"
        if path.startswith(_EVENTS):
            return _EVENTS if not path[len(_EVENTS) :].strip("/") else _EVENTS + "/{id}"
        for base, sub in ((_MONITORS, "{run}"), (_WEBHOOKS, "{attempt}")):
            if path.startswith(base):
                parts = [p for p in path[len(base) :].split("/") if p]
                name = [base, "{id}"][: len(parts) + 1] + parts[1:2]
                if len(parts) > 2:
                    name.append(sub)
                return "/".join(name)
        if path.startswith(_WEBSETS):
            parts = [p for p in path[len(_WEBSETS) :].split("/") if p]
            name = [_WEBSETS, "{id}"][: len(parts) + 1] + parts[1:2]
            if len(parts) > 2:
                name.append(_SUB_IDS.get(parts[1], "{sub}"))
            return "/".join(name + parts[3:4])
        if path.startswith("/_uploads/"):
            return "/_uploads/{id}"
        if path.startswith("/_emulator/"):
            return path
        return "other"

    def _apply_fault(
        self, h: _Handler, fault: Fault, method: str, path: str, query: str, body: bytes
    ) -> bool:
        """Apply a fault; return True when the reply has been sent already."""
        logger.debug("fault %s on %s %s", fault.kind, method, path)
        if fault.kind == "slow":
            time.sleep(fault.delay)
            return False
        if fault.kind == "html":
            status = fault.status if fault.status != 500 else 502
            text = fault.body if fault.body is not None else _CLOUDFLARE_502
            h.reply(status, _encode(text), "text/html", fault.headers)
            return True
        if fault.kind == "status":
            default: Any
            if fault.status == 429:
                default = {"error": _RATE_LIMIT_MSG}
            elif fault.status == 401:
                default = {
                    "requestId": _request_id(),
                    "error": "Invalid API key",
                    "tag": "INVALID_API_KEY",
                }
            else:
                phrase = _phrase(fault.status)
                default = {
                    "statusCode": fault.status,
                    "timestamp": iso_ms(time.time_ns() // 1_000_000),
                    "message": phrase,
                    "error": phrase,
                    "path": path.removeprefix("/websets"),
                }
            payload = _encode(fault.body if fault.body is not None else default)
            h.reply(fault.status, payload, _JSON, fault.headers)
            return True
        return False  # reset / malformed / mutate act on the normal reply

    # ---------------------------------------------------------------- routes

    def _serve(
        self, method: str, path: str, query: str, body: bytes, h: _Handler
    ) -> tuple[int, bytes, str, Mapping[str, str]]:
        if path.startswith("/websets/"):
            self._auth(h)
            api_path = path.removeprefix("/websets")
            if path.rstrip("/") == _IMPORTS:
                if method == "GET":
                    return 200, self._list(query), _JSON, {}
                if method == "POST":
                    return 201, self._create(body), _JSON, {}
            elif path == _WEBSETS or path.startswith(_WEBSETS + "/"):
                return self._websets_route(method, path, query, body, api_path)
            elif (path == _EVENTS or path.startswith(_EVENTS + "/")) and method == "GET":
                return self._events_route(path, query, api_path)
            elif path == _MONITORS or path.startswith(_MONITORS + "/"):
                return self._monitors_route(method, path, query, body, api_path)
            elif path == _WEBHOOKS or path.startswith(_WEBHOOKS + "/"):
                return self._webhooks_route(method, path, query, body, api_path)
            elif path.startswith(_IMPORTS + "/"):
                import_id = path[len(_IMPORTS) + 1 :].rstrip("/")
                if "/" not in import_id and import_id:
                    if method == "GET":
                        return 200, self._get(import_id, api_path), _JSON, {}
                    if method == "PATCH":
                        return 200, self._update(import_id, api_path, body), _JSON, {}
                    if method == "DELETE":
                        return 200, self._delete(import_id, api_path), _JSON, {}
            raise _not_found(f"Cannot {method} {api_path}", api_path)
        if path.startswith("/_uploads/") and method == "PUT":
            return self._upload(path, query, body)
        if path.startswith("/_emulator/"):
            return 200, self._control(method, path, body), _JSON, {}
        raise _not_found(f"Cannot {method} {path}", path)

    def _auth(self, h: _Handler) -> None:
        """Check the API key (docs/exa-api.md §1, §5.2, §8 item 5).

        ``x-api-key`` wins over ``Authorization: Bearer``. Missing key → 401 with the
        documented general error form (the real missing-key reply is UNCONFIRMED); wrong key
        → 400 ``x-api-key header is invalid`` (recorded real behaviour); out of credits → 402.
        """
        key = h.headers.get("x-api-key")
        if key is None:
            auth = h.headers.get("Authorization") or ""
            if auth[:7].lower() == "bearer ":
                key = auth[7:].strip()
        if not key:
            raise _Reply(
                401,
                {
                    "requestId": _request_id(),
                    "error": "Missing API key: send the x-api-key header",
                    "tag": "INVALID_API_KEY",
                },
            )
        if key in self.no_credits_keys:
            raise _Reply(
                402,
                {
                    "requestId": _request_id(),
                    "error": "You have run out of credits",
                    "tag": "NO_MORE_CREDITS",
                },
            )
        if key != self.api_key:
            raise _Reply(400, {"requestId": _request_id(), "error": "x-api-key header is invalid"})

    def _list(self, query: str) -> bytes:
        params = parse_qs(query, keep_blank_values=True)
        limit = _parse_limit(params.get("limit"))
        cursor = _parse_cursor(params.get("cursor"))
        page = self.store.page(cursor, limit, self.quirk_last_page)
        self.stats.page_served()
        return page.to_json()

    def _create(self, body: bytes) -> bytes:
        params = _parse_json(body)
        errors = validate_create(params)
        if errors:
            raise _bad_request(errors)
        csv_cfg = params.get("csv") or {}
        obj = self.store.create(
            params["entity"],
            title=params.get("title"),
            metadata=params.get("metadata"),
            count=params["count"],
            size=params["size"],
            csv_identifier=csv_cfg.get("identifier"),
        )
        valid_until = self.store.upload_valid_until_ms(obj["id"]) or 0
        obj["uploadUrl"] = self.upload_url(obj["id"])
        obj["uploadValidUntil"] = iso_ms(valid_until)
        return orjson.dumps(obj)

    def _get(self, import_id: str, api_path: str) -> bytes:
        raw = self.store.get_bytes(import_id)
        if raw is None:
            raise _not_found("Import not found", api_path)
        return raw

    def _update(self, import_id: str, api_path: str, body: bytes) -> bytes:
        params = _parse_json(body) if body.strip() else {}
        errors = validate_update(params)
        if errors:
            raise _bad_request(errors)
        try:
            obj = self.store.update(
                import_id, title=params.get("title"), metadata=params.get("metadata")
            )
        except ImportNotFoundError:
            raise _not_found("Import not found", api_path) from None
        return orjson.dumps(obj)

    def _delete(self, import_id: str, api_path: str) -> bytes:
        try:
            return orjson.dumps(self.store.delete(import_id))
        except ImportNotFoundError:
            raise _not_found("Import not found", api_path) from None

    # ---------------------------------------------------------------- websets and items

    def _websets_route(
        self, method: str, path: str, query: str, body: bytes, api_path: str
    ) -> tuple[int, bytes, str, Mapping[str, str]]:
        """Serve ``/websets/v0/websets[/{webset}[/items[/{item}]]]`` (docs/exa-api.md §4).

        ``{webset}`` is an id or an externalId. Update is ``POST`` on the webset (not PATCH
        as for imports: exa-py and the spec both use POST).
        """
        parts = [p for p in path[len(_WEBSETS) :].split("/") if p]
        params = parse_qs(query, keep_blank_values=True)
        try:
            if not parts:
                if method == "GET":
                    limit = _parse_limit(params.get("limit"), 25, 100)
                    page = self.websets.page(_parse_cursor(params.get("cursor")), limit)
                    return 200, page.to_json(), _JSON, {}
                if method == "POST":
                    create = _parse_json(body)
                    errors = validate_webset_create(create)
                    if errors:
                        raise _bad_request(errors)
                    try:
                        return 201, orjson.dumps(self.websets.create(create)), _JSON, {}
                    except WebsetConflictError:
                        raise _Reply(
                            409,
                            {
                                "statusCode": 409,
                                "timestamp": iso_ms(time.time_ns() // 1_000_000),
                                "message": "Webset with this externalId already exists",
                                "error": "Conflict",
                                "path": api_path,
                            },
                        ) from None
            elif len(parts) == 1:
                return self._webset_one(method, parts[0], params, body)
            elif len(parts) == 2 and parts[1] == "items" and method == "GET":
                limit = _parse_limit(params.get("limit"), 20, 100)
                cursor = _parse_cursor(params.get("cursor"))
                source = params.get("sourceId")
                if source is not None and (len(source) != 1 or not source[0]):
                    raise _bad_request(["sourceId must be a non-empty string"])
                page = self.websets.items_page(
                    parts[0], cursor, limit, None if source is None else source[0]
                )
                return 200, page.to_json(), _JSON, {}
            elif len(parts) == 3 and parts[1] == "items":
                if method == "GET":
                    return 200, self.websets.get_item_bytes(parts[0], parts[2]), _JSON, {}
                if method == "DELETE":
                    obj = self.websets.delete_item(parts[0], parts[2])
                    return 200, orjson.dumps(obj), _JSON, {}
            elif parts[1] in ("searches", "enrichments"):
                reply = self._sub_route(method, parts, body)
                if reply is not None:
                    return reply
        except WebsetNotFoundError:
            raise _not_found("Webset not found", api_path) from None
        except ItemNotFoundError:
            raise _not_found("Item not found", api_path) from None
        except SearchNotFoundError:
            raise _not_found("Search not found", api_path) from None
        except EnrichmentNotFoundError:
            raise _not_found("Enrichment not found", api_path) from None
        raise _not_found(f"Cannot {method} {api_path}", api_path)

    def _sub_route(
        self, method: str, parts: list[str], body: bytes
    ) -> tuple[int, bytes, str, Mapping[str, str]] | None:
        """Searches and enrichments of a webset: ``parts`` is ``[webset, kind, id?, "cancel"?]``.

        ``POST`` creates (201, as observed; the spec says 200); ``GET`` one; ``POST .../cancel``;
        ``DELETE`` an enrichment. Returns ``None`` for a method or path that is not a route.
        """
        webset, kind, rest = parts[0], parts[1], parts[2:]
        store = self.websets
        actions: dict[tuple[str, int], _SubAction]
        if kind == "searches":
            validate, create = validate_search_create, store.create_search
            actions = {("GET", 1): store.get_search, ("POST", 2): store.cancel_search}
        else:
            validate, create = validate_enrichment_create, store.create_enrichment
            actions = {
                ("GET", 1): store.get_enrichment,
                ("DELETE", 1): store.delete_enrichment,
                ("POST", 2): store.cancel_enrichment,
            }
        if not rest and method == "POST":
            params = _parse_json(body)
            errors = validate(params)
            if errors:
                raise _bad_request(errors)
            return 201, orjson.dumps(create(webset, params)), _JSON, {}
        action = actions.get((method, len(rest)))
        if action is None or rest[1:] not in ([], ["cancel"]):
            return None
        return 200, orjson.dumps(action(webset, rest[0])), _JSON, {}

    def _webset_one(
        self, method: str, webset: str, params: Mapping[str, list[str]], body: bytes
    ) -> tuple[int, bytes, str, Mapping[str, str]]:
        """GET (``expand=items``), POST (update) and DELETE of one webset."""
        if method == "GET":
            expand = params.get("expand") or []
            bad = [e for e in expand if e != "items"]
            if bad:
                raise _bad_request(
                    ["each value in expand must be one of the following values: items"]
                )
            return 200, self.websets.get_bytes(webset, expand_items=bool(expand)), _JSON, {}
        if method == "POST":
            update = _parse_json(body) if body.strip() else {}
            errors = validate_webset_update(update)
            if errors:
                raise _bad_request(errors)
            obj = self.websets.update(
                webset, title=update.get("title"), metadata=update.get("metadata")
            )
            return 200, orjson.dumps(obj), _JSON, {}
        if method == "DELETE":
            return 200, orjson.dumps(self.websets.delete(webset)), _JSON, {}
        raise _not_found(f"Cannot {method} /v0/websets/{webset}", f"/v0/websets/{webset}")

    def _events_route(
        self, path: str, query: str, api_path: str
    ) -> tuple[int, bytes, str, Mapping[str, str]]:
        """Serve ``GET /v0/events`` and ``GET /v0/events/{id}`` (docs/exa-api.md §4.6).

        ``types`` is a repeated key (``types=a&types=b``, what exa-py and exa-js send);
        ``types[]`` (the bracket form some clients use for arrays) is accepted as well.
        ``createdAfter`` and ``createdBefore`` are ISO-8601 and both inclusive.
        """
        rest = path[len(_EVENTS) :].strip("/")
        if rest:
            if "/" in rest:
                raise _not_found(f"Cannot GET {api_path}", api_path)
            try:
                return 200, self.events.get_bytes(rest), _JSON, {}
            except EventNotFoundError:
                raise _not_found("Event not found", api_path) from None
        params = parse_qs(query, keep_blank_values=True)
        limit = _parse_limit(params.get("limit"), 25, 200)
        cursor = _parse_cursor(params.get("cursor"))
        types = [*params.get("types", []), *params.get("types[]", [])]
        if any(t not in EVENT_TYPES for t in types):
            raise _bad_request(
                [
                    "each value in types must be one of the following values: "
                    + ", ".join(EVENT_TYPES)
                ]
            )
        after = _parse_instant(params.get("createdAfter"), "createdAfter")
        before = _parse_instant(params.get("createdBefore"), "createdBefore")
        page = self.events.page(cursor, limit, types, after, before)
        return 200, page.to_json(), _JSON, {}

    # ---------------------------------------------------------------- monitors and webhooks

    def _monitors_route(
        self, method: str, path: str, query: str, body: bytes, api_path: str
    ) -> tuple[int, bytes, str, Mapping[str, str]]:
        """Serve ``/websets/v0/monitors[/{id}[/runs[/{run}]]]`` (docs/exa-api.md §4).

        Create answers 201 (as the spec says); an unknown ``websetId`` is 404 ``Webset not
        found``. The runs list takes ``cursor`` and ``limit`` (1-200, default 25) although
        the spec declares none (exa-js sends them, exa-py does not).
        """
        parts = [p for p in path[len(_MONITORS) :].split("/") if p]
        params = parse_qs(query, keep_blank_values=True)
        store = self.monitors
        try:
            if not parts and method == "GET":
                limit = _parse_limit(params.get("limit"), 25, 200)
                cursor = _parse_cursor(params.get("cursor"))
                webset = params.get("websetId")
                if webset is not None and (len(webset) != 1 or not webset[0]):
                    raise _bad_request(["websetId must be a non-empty string"])
                page = store.monitors_page(cursor, limit, None if webset is None else webset[0])
                return 200, page.to_json(), _JSON, {}
            if len(parts) <= 1:
                reply = _crud(
                    method,
                    parts,
                    body,
                    (validate_monitor_create, store.create_monitor),
                    (validate_monitor_update, store.update_monitor),
                    store.get_monitor,
                    store.delete_monitor,
                )
                if reply is not None:
                    return reply
            elif parts[1] == "runs" and method == "GET" and len(parts) == 2:
                limit = _parse_limit(params.get("limit"), 25, 200)
                page = store.runs_page(parts[0], _parse_cursor(params.get("cursor")), limit)
                return 200, page.to_json(), _JSON, {}
            elif parts[1] == "runs" and method == "GET" and len(parts) == 3:
                return 200, orjson.dumps(store.get_run(parts[0], parts[2])), _JSON, {}
        except WebsetNotFoundError:
            raise _not_found("Webset not found", api_path) from None
        except MonitorNotFoundError:
            raise _not_found("Monitor not found", api_path) from None
        except RunNotFoundError:
            raise _not_found("Monitor run not found", api_path) from None
        raise _not_found(f"Cannot {method} {api_path}", api_path)

    def _webhooks_route(
        self, method: str, path: str, query: str, body: bytes, api_path: str
    ) -> tuple[int, bytes, str, Mapping[str, str]]:
        """Serve ``/websets/v0/webhooks[/{id}[/attempts]]`` (docs/exa-api.md §4).

        Create answers 201 (observed for the other creates; the spec says 200) and is the
        only reply carrying ``secret``. Attempts take ``eventType`` and ``successful``
        (``true``/``false``, and ``True``/``False`` as exa-py sends a Python bool).
        """
        parts = [p for p in path[len(_WEBHOOKS) :].split("/") if p]
        params = parse_qs(query, keep_blank_values=True)
        store = self.monitors
        try:
            if not parts and method == "GET":
                limit = _parse_limit(params.get("limit"), 25, 200)
                page = store.webhooks_page(_parse_cursor(params.get("cursor")), limit)
                return 200, page.to_json(), _JSON, {}
            if len(parts) <= 1:
                reply = _crud(
                    method,
                    parts,
                    body,
                    (validate_webhook_create, store.create_webhook),
                    (validate_webhook_update, store.update_webhook),
                    store.get_webhook,
                    store.delete_webhook,
                )
                if reply is not None:
                    return reply
            elif len(parts) == 2 and parts[1] == "attempts" and method == "GET":
                limit = _parse_limit(params.get("limit"), 25, 200)
                cursor = _parse_cursor(params.get("cursor"))
                event_type = params.get("eventType")
                if event_type is not None and (
                    len(event_type) != 1 or event_type[0] not in EVENT_TYPES
                ):
                    raise _bad_request(
                        ["eventType must be one of the following values: " + ", ".join(EVENT_TYPES)]
                    )
                successful = params.get("successful")
                if successful is not None and (
                    len(successful) != 1 or successful[0] not in _TRUE_FALSE
                ):
                    raise _bad_request(["successful must be a boolean value"])
                page = store.attempts_page(
                    parts[0],
                    cursor,
                    limit,
                    None if event_type is None else event_type[0],
                    None if successful is None else _TRUE_FALSE[successful[0]],
                )
                return 200, page.to_json(), _JSON, {}
        except WebhookNotFoundError:
            raise _not_found("Webhook not found", api_path) from None
        raise _not_found(f"Cannot {method} {api_path}", api_path)

    def _step_monitors(self, params: Mapping[str, Any], path: str) -> list[dict[str, Any]]:
        """``POST /_emulator/monitors/step``: new runs, or (with ``run``) move one run on."""
        errors = [f"property {k} should not exist" for k in params if k not in _MONITOR_STEP_KEYS]
        for key in ("monitor", "run"):
            if not isinstance(params.get(key, ""), str):
                errors.append(f"{key} must be a string")
        status = params.get("status", "completed")
        if status not in MONITOR_RUN_STATUSES:
            errors.append(
                "status must be one of the following values: " + ", ".join(MONITOR_RUN_STATUSES)
            )
        if params.get("run") is not None and params.get("monitor") is not None:
            errors.append("give monitor or run, not both")
        if errors:
            raise _bad_request(errors)
        try:
            if params.get("run") is not None:
                return [self.monitors.advance_run(params["run"], status)]
            return self.monitors.step_monitors(params.get("monitor"), status)
        except MonitorNotFoundError:
            raise _not_found("Monitor not found", path) from None
        except RunNotFoundError:
            raise _not_found("Monitor run not found", path) from None
        except InvalidTransitionError as err:
            raise _Reply(
                409, {"statusCode": 409, "message": str(err), "error": "Conflict"}
            ) from None

    def _upload(
        self, path: str, query: str, body: bytes
    ) -> tuple[int, bytes, str, Mapping[str, str]]:
        """Presigned S3-style PUT (docs/exa-api.md §3.5): signature checked, no API key."""
        name = path.removeprefix("/_uploads/")
        import_id = name.removesuffix(".csv")
        params = parse_qs(query, keep_blank_values=True)
        signature = (params.get("X-Amz-Signature") or [""])[0]
        token = self.store.upload_token(import_id)
        if token is None or not secrets.compare_digest(signature, token):
            return (
                403,
                _s3_error(
                    "SignatureDoesNotMatch",
                    "The request signature we calculated "
                    "does not match the signature you provided.",
                ),
                "application/xml",
                {},
            )
        valid_until = self.store.upload_valid_until_ms(import_id) or 0
        if self.store.clock.now_ms() > valid_until:
            return 403, _s3_error("AccessDenied", "Request has expired"), "application/xml", {}
        try:
            self.store.upload(import_id, body)
        except ImportNotFoundError:
            return (
                404,
                _s3_error("NoSuchKey", "The specified key does not exist."),
                "application/xml",
                {},
            )
        return 200, b"", "", {}

    def _control(self, method: str, path: str, body: bytes) -> bytes:
        """Control endpoints (no auth; loopback test tool)."""
        params: Any = _parse_json(body) if body.strip() else {}
        if not isinstance(params, dict):
            raise _bad_request(["request body must be an object"])
        if path == "/_emulator/stats" and method == "GET":
            return orjson.dumps(self.stats.as_dict())
        if path == "/_emulator/stats" and method == "DELETE":
            self.reset_stats()
            return orjson.dumps({"ok": True})
        if path == "/_emulator/imports" and method == "GET":
            return self.store.snapshot_json()
        if path == "/_emulator/faults":
            if method == "POST":
                try:
                    fault = self.faults.add(Fault.from_spec(params))
                except (ValueError, TypeError, OverflowError) as err:
                    raise _bad_request([str(err)]) from None
                return orjson.dumps(fault.describe())
            if method == "DELETE":
                self.faults.clear()
                return orjson.dumps({"ok": True})
            if method == "GET":
                return orjson.dumps([f.describe() for f in self.faults.pending()])
        if path == "/_emulator/mutate" and method == "POST":
            errors = _mutate_errors(params)
            if errors:
                raise _bad_request(errors)
            return orjson.dumps(self.store.mutate(**params))
        if path == "/_emulator/websets/step" and method == "POST":
            errors = _step_errors(params)
            if errors:
                raise _bad_request(errors)
            try:
                return orjson.dumps(self.websets.step(**params))
            except WebsetNotFoundError:
                raise _not_found("Webset not found", path) from None
        if path == "/_emulator/monitors/step" and method == "POST":
            return orjson.dumps(self._step_monitors(params, path))
        if path == "/_emulator/webhooks/step" and method == "POST":
            errors = [f"property {k} should not exist" for k in params if k not in _HOOK_KEYS]
            if not isinstance(params.get("webhook", ""), str):
                errors.append("webhook must be a string")
            if not isinstance(params.get("successful", True), bool):
                errors.append("successful must be a boolean value")
            if errors:
                raise _bad_request(errors)
            try:
                return orjson.dumps(self.monitors.step_webhooks(**params))
            except WebhookNotFoundError:
                raise _not_found("Webhook not found", path) from None
        if path == "/_emulator/clock" and method in ("POST", "GET"):
            self._move_clock(params)
            return orjson.dumps({"now": iso_ms(self.store.clock.now_ms())})
        raise _not_found(f"Cannot {method} {path}", path)

    def _move_clock(self, params: Mapping[str, Any]) -> None:
        """Apply ``{"set": iso, "advance": seconds}`` (both optional) atomically.

        Raises:
            _Reply: 400 for unknown keys, wrong types, unparsable or out-of-range values;
                the clock is unchanged.
        """
        errors = [f"property {k} should not exist" for k in params if k not in ("set", "advance")]
        when, seconds = params.get("set"), params.get("advance", 0)
        if "set" in params and not isinstance(when, str):
            errors.append("set must be an ISO-8601 timestamp string")
        if not _is_number(seconds):
            errors.append("advance must be a finite number of seconds")
        if errors:
            raise _bad_request(errors)
        clock = self.store.clock
        try:
            if when is None:
                clock.advance(seconds)
            else:
                clock.set(when, advance=seconds)
        except TimeRangeError as err:
            raise _bad_request([f"{'advance' if when is None else 'set'}: {err}"]) from None
        except ValueError:  # fromisoformat
            raise _bad_request([f"set must be an ISO-8601 timestamp: {when!r:.80}"]) from None


_Validated = tuple[Callable[[Any], list[str]], Callable[..., dict[str, Any]]]


def _crud(
    method: str,
    parts: list[str],
    body: bytes,
    create: _Validated,
    update: _Validated,
    get: Callable[[str], dict[str, Any]],
    delete: Callable[[str], dict[str, Any]],
) -> tuple[int, bytes, str, Mapping[str, str]] | None:
    """``POST`` a collection (201) and ``GET``/``PATCH``/``DELETE`` one of its objects.

    ``create`` and ``update`` are (validator, store call); a body the validator rejects gets
    400 with its messages. None for any other method or path (the caller answers 404).
    """
    if not parts and method == "POST":
        check, make = create
        params = _parse_json(body)
        if errors := check(params):
            raise _bad_request(errors)
        return 201, orjson.dumps(make(params)), _JSON, {}
    if len(parts) != 1:
        return None
    if method == "GET":
        return 200, orjson.dumps(get(parts[0])), _JSON, {}
    if method == "PATCH":
        check, change = update
        params = _parse_json(body) if body.strip() else {}
        if errors := check(params):
            raise _bad_request(errors)
        return 200, orjson.dumps(change(parts[0], params)), _JSON, {}
    if method == "DELETE":
        return 200, orjson.dumps(delete(parts[0])), _JSON, {}
    return None


def _is_loopback(address: str) -> bool:
    """Return whether a bound (numeric) address is a loopback address."""
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _mutate_errors(params: Mapping[str, Any]) -> list[str]:
    """Validate a ``POST /_emulator/mutate`` body; return messages (empty when valid)."""
    allowed = ("update", "create", "delete", "advance", "seed")
    errors = [f"property {k} should not exist" for k in params if k not in allowed]
    for key in allowed:
        value = params.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool):
            errors.append(f"{key} must be an integer number")
        elif key != "seed" and not 0 <= value <= MAX_MUTATE:
            errors.append(f"{key} must be between 0 and {MAX_MUTATE}")
    return errors


def _step_errors(params: Mapping[str, Any]) -> list[str]:
    """Validate a ``POST /_emulator/websets/step`` body; return messages (empty when valid)."""
    errors = [f"property {k} should not exist" for k in params if k not in _STEP_KEYS]
    if params.get("webset") is not None and not isinstance(params["webset"], str):
        errors.append("webset must be a string")
    for key in ("items", "enrich"):
        value = params.get(key, 10 if key == "items" else None)
        if value is None and key == "enrich":
            continue
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_MUTATE:
            errors.append(f"{key} must be an integer between 0 and {MAX_MUTATE}")
    return errors


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _encode(body: Any) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    return orjson.dumps(body)


def _parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as err:
        # NestJS body-parser error: message is a string, not a list.
        raise _Reply(
            400,
            {
                "statusCode": 400,
                "message": f"Unexpected token in JSON: {err}",
                "error": "Bad Request",
            },
        ) from None


def _s3_error(code: str, message: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<RequestId>{secrets.token_hex(8).upper()}</RequestId></Error>"
    ).encode()
