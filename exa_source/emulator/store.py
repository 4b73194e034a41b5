"""In-memory data model of the emulated Exa Websets Imports API.

The store keeps every import as its serialized JSON bytes (exactly what the API returns,
``orjson`` encoded, key order as recorded in docs/exa-api.md §3.3) in a dict keyed by id, plus a
sorted list of ids. Because an id is ``import_`` + a ULID whose 48-bit time part equals
``createdAt`` in milliseconds, ascending id order is ascending ``(createdAt, id)`` order, so
the list endpoint (newest first, docs/exa-api.md §2 "Ordering") is a reverse slice found by
``bisect``. Keyset cursors therefore stay valid while imports are created, updated or deleted
between pages, even when the cursor names a deleted import.

Keeping only bytes makes a 1,000,000-import store cost roughly 0.5 GB and makes a page a
``b",".join`` of cached bytes. Mutations (rare) decode, change and re-encode one import.

Nothing changes by itself: there are no background threads. Status transitions happen in
:meth:`ImportStore.upload` (what a CSV upload triggers) or through the explicit mutators.
"""

from __future__ import annotations

import base64
import bisect
import csv
import hashlib
import io
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from .events import EventLog

logger = logging.getLogger(__name__)

__all__ = [
    "CLOCK_MAX",
    "CLOCK_MIN",
    "ENTITY_TYPES",
    "FAILED_REASONS",
    "IMPORT_STATUSES",
    "SEED_ANCHOR",
    "TIME_MAX",
    "TIME_MIN",
    "Clock",
    "ImportNotFoundError",
    "ImportStore",
    "InvalidTransitionError",
    "Page",
    "TimeRangeError",
    "decode_ulid",
    "encode_ulid",
    "iso_ms",
    "next_ulid",
    "parse_time",
]

IMPORT_STATUSES = ("pending", "processing", "completed", "failed", "canceled")
"""Import statuses (docs/exa-api.md §3.3; ``canceled`` per §8 item 1)."""

FAILED_REASONS = ("invalid_format", "invalid_file_content", "missing_identifier")
"""Values of ``failedReason`` (docs/exa-api.md §3.3)."""

ENTITY_TYPES = ("company", "person", "article", "research_paper", "custom")
"""Entity ``type`` values (docs/exa-api.md §3.4)."""

SEED_ANCHOR = datetime(2026, 10, 1, tzinfo=timezone.utc)
"""Seeded imports are created in the 365 days before this instant (fixed for determinism)."""

SEED_WINDOW_MS = 365 * 86_400_000
UPLOAD_VALID_MS = 3_600_000  # uploadValidUntil = createdAt + 1 h (docs/exa-api.md §3.5)

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

TIME_MIN = datetime(1, 1, 1, tzinfo=timezone.utc)
"""Earliest timestamp the store writes or accepts (``0001-01-01T00:00:00.000Z``)."""

TIME_MAX = datetime(9999, 12, 31, 23, 59, 59, 999_000, tzinfo=timezone.utc)
"""Latest timestamp the store writes or accepts (``9999-12-31T23:59:59.999Z``)."""

CLOCK_MIN = _EPOCH
"""Earliest reading :class:`Clock` may be set or advanced to: ids carry ``createdAt`` as an
unsigned 48-bit ULID time, so the store cannot create imports before 1970."""

CLOCK_MAX = datetime(9999, 1, 1, tzinfo=timezone.utc)
"""Latest reading :class:`Clock` may be set or advanced to; the year left before
:data:`TIME_MAX` is headroom for ``uploadValidUntil`` (+1 h) and stamps after it."""


def _dt_ms(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return (value - _EPOCH) // timedelta(milliseconds=1)


_TIME_MIN_MS = _dt_ms(TIME_MIN)
_TIME_MAX_MS = _dt_ms(TIME_MAX)
_CLOCK_MIN_MS = _dt_ms(CLOCK_MIN)
_CLOCK_MAX_MS = _dt_ms(CLOCK_MAX)
_CREATE_MAX_MS = _TIME_MAX_MS - UPLOAD_VALID_MS
_MAX_ADVANCE_S = (_CLOCK_MAX_MS - _CLOCK_MIN_MS) / 1000
_B32_STD = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_B32_CROCKFORD = b"0123456789abcdefghjkmnpqrstvwxyz"
_B32_TABLE = bytes.maketrans(_B32_STD, _B32_CROCKFORD)
_ULID_RE = re.compile(r"^[0-7][0-9a-hjkmnp-tv-z]{25}$")
_PREFIX = "import_"


def encode_ulid(value: int) -> str:
    """Encode a 128-bit integer as a 26-character lowercase Crockford base32 ULID.

    Args:
        value: The 128-bit ULID value (48-bit ms timestamp << 80 | 80 random bits).

    Returns:
        The 26-character ULID text, e.g. ``01karvd35zwwmej8ee444tpcbp``.
    """
    # 160 bits = 32 base32 chars; the first 6 chars cover the 32 zero pad bits + 2 bits of
    # the 130-bit ULID text space, so the last 26 chars are exactly the ULID.
    raw = base64.b32encode(value.to_bytes(20, "big")).translate(_B32_TABLE)
    return raw[6:].decode("ascii")


_FROM_CROCKFORD = str.maketrans(
    "0123456789abcdefghjkmnpqrstvwxyz", "0123456789abcdefghijklmnopqrstuv"
)


def decode_ulid(text: str) -> int:
    """Decode a lowercase ULID (checked with :func:`is_ulid`) to its 128-bit value."""
    return int(text.translate(_FROM_CROCKFORD), 32)


def next_ulid(created_ms: int, last: int, rng: random.Random) -> int:
    """A ULID value whose time part is ``created_ms``, greater than ``last`` within one ms.

    The ULID spec's monotonic generator: within the millisecond of ``last`` the random part is
    incremented, so id order stays ``(createdAt, id)`` order. Every emulated id uses it.
    """
    value = (created_ms << 80) | rng.getrandbits(80)
    if created_ms == last >> 80 and value <= last:
        value = last + 1
    return value


def is_ulid(text: str) -> bool:
    """Return whether ``text`` is a well-formed lowercase 26-character ULID."""
    return bool(_ULID_RE.match(text))


_date_cache: dict[int, str] = {}


def iso_ms(ms: int) -> str:
    """Format epoch milliseconds as ISO-8601 UTC with milliseconds and ``Z`` (docs/exa-api.md §1).

    Args:
        ms: Milliseconds since the Unix epoch.

    Returns:
        Text such as ``2025-11-23T17:15:22.175Z``.

    Raises:
        TimeRangeError: ``ms`` is outside :data:`TIME_MIN`..:data:`TIME_MAX`.
    """
    days, rem = divmod(ms, 86_400_000)
    date = _date_cache.get(days)
    if date is None:
        if not _TIME_MIN_MS <= ms <= _TIME_MAX_MS:
            raise TimeRangeError(f"{ms} ms is outside {_RANGE_TEXT}")
        day = _EPOCH + timedelta(days=days)
        date = f"{day.year:04d}-{day.month:02d}-{day.day:02d}"
        _date_cache[days] = date
    hours, rem = divmod(rem, 3_600_000)
    minutes, rem = divmod(rem, 60_000)
    seconds, millis = divmod(rem, 1000)
    return f"{date}T{hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}Z"


class TimeRangeError(ValueError):
    """A timestamp, clock reading or clock move the emulator cannot represent.

    The HTTP front end answers it with 400; the store and clock are left unchanged.
    """


_RANGE_TEXT = "the representable range 0001-01-01T00:00:00.000Z..9999-12-31T23:59:59.999Z"


def to_ms(value: datetime | str | int) -> int:
    """Convert a datetime (naive = UTC), ISO string or epoch-ms int to epoch milliseconds.

    Raises:
        ValueError: ``value`` is not an ISO-8601 timestamp; :class:`TimeRangeError` when it is
            outside :data:`TIME_MIN`..:data:`TIME_MAX` or not a datetime, string or int.
    """
    if isinstance(value, bool) or not isinstance(value, (int, str, datetime)):
        raise TimeRangeError(f"not a timestamp: {value!r}")
    if isinstance(value, int):
        ms = value
    else:
        ms = _dt_ms(parse_time(value) if isinstance(value, str) else value)
    if not _TIME_MIN_MS <= ms <= _TIME_MAX_MS:
        raise TimeRangeError(f"{value!r} is outside {_RANGE_TEXT}")
    return ms


def parse_time(text: str) -> datetime:
    """Parse an ISO-8601 timestamp (``Z`` suffix allowed) into an aware UTC datetime.

    Raises:
        ValueError: Not an ISO-8601 timestamp; :class:`TimeRangeError` when its UTC reading
            falls outside year 1..9999 (e.g. ``0001-01-01T00:00:00+01:00``).
    """
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    try:
        return parsed.astimezone(timezone.utc)
    except OverflowError:
        raise TimeRangeError(f"{text!r} is outside {_RANGE_TEXT}") from None


def _check_clock_ms(ms: int, what: object) -> None:
    if not _CLOCK_MIN_MS <= ms <= _CLOCK_MAX_MS:
        raise TimeRangeError(
            f"{what} would put the clock at {ms} ms, outside the clock range "
            "1970-01-01T00:00:00.000Z..9999-01-01T00:00:00.000Z"
        )


def _advance_ms(seconds: float) -> int:
    """Validate a clock move in seconds and return it in whole milliseconds."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TimeRangeError(f"clock advance must be a number of seconds, got {seconds!r}")
    if not abs(seconds) <= _MAX_ADVANCE_S:  # also rejects NaN and infinities
        raise TimeRangeError(
            f"clock advance must be finite and within +/-{_MAX_ADVANCE_S:.0f} s, got {seconds!r}"
        )
    return round(seconds * 1000)


class ImportNotFoundError(KeyError):
    """Raised by store mutators for an unknown import id."""


class InvalidTransitionError(ValueError):
    """Raised by :meth:`ImportStore.advance` for a transition the lifecycle does not allow."""


class Clock:
    """Wall clock that tests can set, advance and freeze.

    ``now_ms()`` is wall time plus an offset, or a frozen instant. The store adds its own
    monotonic guard on top, so stamps it writes never go backwards even if the clock does.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._offset_ms = 0
        self._frozen_ms: int | None = None

    def now_ms(self) -> int:
        """Return the current emulated time in epoch milliseconds."""
        with self._lock:
            if self._frozen_ms is not None:
                return self._frozen_ms
            return time.time_ns() // 1_000_000 + self._offset_ms

    def now(self) -> datetime:
        """Return the current emulated time as an aware UTC datetime."""
        return _EPOCH + timedelta(milliseconds=self.now_ms())

    def set(self, when: datetime | str | int, advance: float = 0) -> None:
        """Jump to ``when``; a frozen clock stays frozen there, a running one runs on from it.

        Args:
            when: The new reading (datetime, ISO-8601 string or epoch ms).
            advance: Seconds to add to ``when`` in the same step.

        Raises:
            ValueError: ``when`` is not a timestamp, or (:class:`TimeRangeError`) the
                reading is outside :data:`CLOCK_MIN`..:data:`CLOCK_MAX`; the clock is unchanged.
        """
        target = to_ms(when) + _advance_ms(advance)
        _check_clock_ms(target, f"set {when!r} + {advance!r} s")
        with self._lock:
            if self._frozen_ms is not None:
                self._frozen_ms = target
            else:
                self._offset_ms = target - time.time_ns() // 1_000_000

    def advance(self, seconds: float) -> None:
        """Move the clock forward (or backward, if negative) by ``seconds``.

        Raises:
            TimeRangeError: ``seconds`` is not a finite number, or the reading would leave
                :data:`CLOCK_MIN`..:data:`CLOCK_MAX`; the clock is unchanged.
        """
        delta = _advance_ms(seconds)
        with self._lock:
            now = (
                self._frozen_ms
                if self._frozen_ms is not None
                else time.time_ns() // 1_000_000 + self._offset_ms
            )
            _check_clock_ms(now + delta, f"advance {seconds!r} s")
            if self._frozen_ms is not None:
                self._frozen_ms += delta
            else:
                self._offset_ms += delta

    def freeze(self) -> None:
        """Stop the clock at its current reading."""
        now = self.now_ms()
        with self._lock:
            self._frozen_ms = now

    def unfreeze(self) -> None:
        """Let the clock run again from its frozen reading."""
        with self._lock:
            if self._frozen_ms is not None:
                self._offset_ms = self._frozen_ms - time.time_ns() // 1_000_000
                self._frozen_ms = None


@dataclass(frozen=True)
class Page:
    """One page of the list endpoint, already serialized item by item."""

    items: list[bytes]
    has_more: bool
    next_cursor: str | None

    def to_json(self) -> bytes:
        """Build the ``{"data":[...],"hasMore":...,"nextCursor":...}`` body."""
        tail = orjson.dumps({"hasMore": self.has_more, "nextCursor": self.next_cursor})
        return b'{"data":[' + b",".join(self.items) + b"]," + tail[1:]


def newest_first_page(
    ids: Sequence[str],
    prefix: str,
    cursor: str | None,
    limit: int,
    render: Callable[[str], bytes],
    keep: Callable[[str], bool] | None = None,
) -> Page:
    """One newest-first page over ascending ``ids`` (``<prefix><ulid>``), keyset-paginated.

    Args:
        ids: All ids, ascending (== oldest first).
        prefix: The ids' prefix, ``_`` included (the cursor is the id without it).
        cursor: ``None`` or the bare ULID of the previous page's last object.
        limit: Page size.
        render: Serializes one object by id.
        keep: Filter on ids (all kept when ``None``).

    Returns:
        The page; ``hasMore: false, nextCursor: null`` on the last one.
    """
    end = len(ids) if cursor is None else bisect.bisect_left(ids, prefix + cursor)
    chosen: list[str] = []
    more = False
    for i in range(end - 1, -1, -1):
        id_ = ids[i]
        if keep is not None and not keep(id_):
            continue
        if len(chosen) == limit:
            more = True
            break
        chosen.append(id_)
    items = [render(i) for i in chosen]
    if more:
        return Page(items, True, chosen[-1].removeprefix(prefix))
    return Page(items, False, None)


@dataclass
class _UploadInfo:
    token: str
    identifier: int | None
    size: float
    valid_until_ms: int


_TITLE_WORDS_A = (
    "Q1",
    "Q2",
    "Q3",
    "Q4",
    "Enterprise",
    "Startup",
    "EMEA",
    "APAC",
    "US",
    "Fintech",
    "Healthcare",
    "Climate",
    "AI",
    "Seed-stage",
    "Series B",
)
_TITLE_WORDS_B = (
    "leads",
    "accounts",
    "prospects",
    "CRM export",
    "conference attendees",
    "target list",
    "partners",
    "competitors",
    "investors",
    "papers",
    "press coverage",
    "alumni",
)
_CUSTOM_DESCRIPTIONS = (
    "Open-source repositories",
    "Podcasts about developer tools",
    "Local bakeries with online ordering",
    "YouTube channels reviewing cameras",
    "Nonprofits working on water access",
    "Job postings for data engineers",
)
_META_KEYS = ("source", "owner", "batch", "region", "campaign", "team")
_META_VALUES = ("crm", "alice", "bob", "emea", "2026-q3", "growth", "17", "hubspot", "manual")
_FAIL_MESSAGES = {
    "invalid_format": "The file could not be parsed as CSV: rows have inconsistent column counts",
    "invalid_file_content": "The file is empty or contains no data rows",
    "missing_identifier": "Could not find an identifier column (e.g. a URL) in the file",
}
_ENTITY_SHARED: dict[str, dict[str, str]] = {t: {"type": t} for t in ENTITY_TYPES if t != "custom"}
_EMPTY: dict[str, str] = {}


def _import_dict(
    id_: str,
    status: str,
    fmt: str,
    entity: Mapping[str, Any] | None,
    title: str,
    count: float,
    metadata: Mapping[str, str],
    failed_reason: str | None,
    failed_message: str | None,
    failed_at: int | None,
    created_at: int,
    updated_at: int,
) -> dict[str, Any]:
    # Key order exactly as recorded (docs/exa-api.md §3.3 "OBSERVED key order").
    return {
        "id": id_,
        "object": "import",
        "status": status,
        "format": fmt,
        "entity": entity,
        "title": title,
        "count": count,
        "metadata": metadata,
        "failedReason": failed_reason,
        "failedMessage": failed_message,
        "failedAt": None if failed_at is None else iso_ms(failed_at),
        "createdAt": iso_ms(created_at),
        "updatedAt": iso_ms(updated_at),
    }


def _dumps(obj: Any) -> bytes:
    """``orjson.dumps`` copied into an exact-size bytes object.

    orjson's result keeps its over-sized growth buffer alive (about 4 KB per small object
    here), which made a 1M-import store take 4 GB; copying brings it back to ~0.4 KB.
    """
    return memoryview(orjson.dumps(obj)).tobytes()


def _normalize_count(count: float) -> float:
    if isinstance(count, float) and count.is_integer():
        return int(count)
    return count


class ImportStore:
    """Thread-safe in-memory collection of imports with a deterministic id generator.

    Args:
        seed: Seed of the random generator used for ids, upload tokens and seeded data.
        imports: Number of realistic imports to seed immediately (see :meth:`seed`).
        clock: Clock to stamp with; a fresh wall :class:`Clock` by default.
    """

    def __init__(self, seed: int = 0, imports: int = 0, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self._lock = threading.RLock()
        self._seed = seed
        self._rng = random.Random(seed)
        self._secret = self._rng.getrandbits(128).to_bytes(16, "big")
        self._seed_calls = 0
        self._data: dict[str, bytes] = {}
        self._ids: list[str] = []  # ascending == oldest first
        self._uploads: dict[str, _UploadInfo] = {}
        self._last_stamp = 0
        self._last_ulid = 0
        self.events: EventLog | None = None
        """Where ``import.created`` / ``import.completed`` go (the :class:`Emulator` sets its
        log here); seeded imports emit none."""
        if imports:
            self.seed(imports)

    # ------------------------------------------------------------------ basics

    def __len__(self) -> int:
        with self._lock:
            return len(self._ids)

    def __contains__(self, import_id: object) -> bool:
        with self._lock:
            return import_id in self._data

    def _stamp(self, floor: int = 0, limit: int = _TIME_MAX_MS) -> int:
        """Next store timestamp: clock time, but > every earlier stamp and > ``floor``.

        Raises:
            TimeRangeError: The stamp would pass ``limit`` (an import's ``updatedAt`` was put
                at the very end of time with :meth:`touch`); nothing is changed.
        """
        stamp = max(self.clock.now_ms(), self._last_stamp + 1, floor + 1)
        if stamp > limit:
            raise TimeRangeError(
                f"the next timestamp {stamp} ms would pass {iso_ms(limit)}, the latest the "
                "store can write (an updatedAt was set at the end of the representable range)"
            )
        self._last_stamp = stamp
        return stamp

    def _new_id(self, created_ms: int, rng: random.Random | None = None) -> str:
        """Return a fresh ``import_<ulid>`` whose time part is ``created_ms``.

        Within one millisecond ids are monotonic (the random part is incremented), like the
        ULID spec's monotonic generator.
        """
        value = next_ulid(created_ms, self._last_ulid, rng or self._rng)
        while True:
            id_ = _PREFIX + encode_ulid(value)
            if id_ not in self._data:
                break
            value += 1
        self._last_ulid = value
        return id_

    def _load(self, import_id: str) -> dict[str, Any]:
        raw = self._data.get(import_id)
        if raw is None:
            raise ImportNotFoundError(import_id)
        result: dict[str, Any] = orjson.loads(raw)
        return result

    def _save(self, obj: dict[str, Any]) -> None:
        self._data[obj["id"]] = _dumps(obj)

    def _insert(self, import_id: str, raw: bytes) -> None:
        self._data[import_id] = raw
        ids = self._ids
        if not ids or ids[-1] < import_id:
            ids.append(import_id)
        else:
            bisect.insort(ids, import_id)

    # ------------------------------------------------------------------ reads

    def get(self, import_id: str) -> dict[str, Any] | None:
        """Return the import as the API would, or ``None`` if unknown."""
        raw = self.get_bytes(import_id)
        if raw is None:
            return None
        result: dict[str, Any] = orjson.loads(raw)
        return result

    def get_bytes(self, import_id: str) -> bytes | None:
        """Return the cached serialized import, or ``None`` if unknown."""
        with self._lock:
            return self._data.get(import_id)

    def ids(self) -> list[str]:
        """Return all ids in list order (newest first)."""
        with self._lock:
            return self._ids[::-1]

    def snapshot(self) -> list[dict[str, Any]]:
        """Return every import as the API would, in list order (newest first)."""
        with self._lock:
            raws = [self._data[i] for i in reversed(self._ids)]
        return [orjson.loads(r) for r in raws]

    def snapshot_json(self) -> bytes:
        """Return :meth:`snapshot` already serialized as a JSON array."""
        with self._lock:
            raws = [self._data[i] for i in reversed(self._ids)]
        return b"[" + b",".join(raws) + b"]"

    def page(self, cursor: str | None, limit: int, quirk_last_page: bool = True) -> Page:
        """Return one list page (newest first), keyset-paginated.

        Args:
            cursor: ``None`` for the first page, else a previous ``nextCursor``: the bare ULID
                of the last item of the previous page (docs/exa-api.md §2, OBSERVED). The page holds
                the imports strictly older than it, whether or not it still exists.
            limit: Page size (validated by the caller).
            quirk_last_page: Reproduce the recorded last page ``"hasMore": true,
                "nextCursor": null`` (docs/exa-api.md §2 / §8 item 3). If false the last page says
                ``hasMore: false``.

        Returns:
            The page.
        """
        with self._lock:
            ids = self._ids
            end = len(ids) if cursor is None else bisect.bisect_left(ids, _PREFIX + cursor)
            start = max(0, end - limit)
            chosen = ids[start:end]
            data = self._data
            items = [data[i] for i in reversed(chosen)]
        if start > 0 and chosen:
            return Page(items, True, chosen[0][len(_PREFIX) :])
        return Page(items, quirk_last_page, None)

    def upload_token(self, import_id: str) -> str | None:
        """Return the presigned-upload signature of an import (``None`` if unknown)."""
        with self._lock:
            info = self._uploads.get(import_id)
            return None if info is None else info.token

    def upload_valid_until_ms(self, import_id: str) -> int | None:
        """Return when the upload URL of an import expires (epoch ms), if known."""
        with self._lock:
            info = self._uploads.get(import_id)
            return None if info is None else info.valid_until_ms

    # ------------------------------------------------------------------ mutators

    def create(
        self,
        entity: Mapping[str, Any] | None = None,
        *,
        title: str | None = None,
        metadata: Mapping[str, str] | None = None,
        count: float = 0,
        size: float = 0,
        format: str = "csv",
        csv_identifier: int | None = None,
        at: datetime | str | int | None = None,
    ) -> dict[str, Any]:
        """Create a ``pending`` import, as ``POST /v0/imports`` does.

        Args:
            entity: Entity object (docs/exa-api.md §3.4); ``{"type": "company"}`` by default.
            title: Title; when omitted the emulator uses ``"Import <YYYY-MM-DD>"`` of the
                creation date (the real default is UNCONFIRMED, docs/exa-api.md §3.2).
            metadata: String map, ``{}`` when omitted.
            count: Declared number of records (replaced by the real row count on upload).
            size: Declared file size in bytes (kept, not enforced on upload).
            format: ``"csv"`` (``"webset"`` also accepted here for tests).
            csv_identifier: Column index of the identifier, or ``None`` to infer it.
            at: Explicit creation time; the store clock otherwise.

        Returns:
            The new import (``createdAt == updatedAt``, status ``pending``).

        Raises:
            TimeRangeError: ``at`` (or the next stamp) is before 1970 (the id's ULID time part
                is unsigned) or leaves no room for ``uploadValidUntil`` (+1 h) before
                :data:`TIME_MAX`.
        """
        with self._lock:
            if at is None:
                created = self._stamp(limit=_CREATE_MAX_MS)
            else:
                created = to_ms(at)
                if not 0 <= created <= _CREATE_MAX_MS:
                    raise TimeRangeError(
                        f"createdAt {at!r} must be within 1970-01-01T00:00:00.000Z.."
                        f"{iso_ms(_CREATE_MAX_MS)} (unsigned ULID time, +1 h upload window)"
                    )
            id_ = self._new_id(created)
            obj = _import_dict(
                id_,
                "pending",
                format,
                dict(entity) if entity is not None else {"type": "company"},
                title if title is not None else f"Import {iso_ms(created)[:10]}",
                _normalize_count(count),
                dict(metadata or {}),
                None,
                None,
                None,
                created,
                created,
            )
            token = hashlib.sha256(self._secret + id_.encode()).hexdigest()
            self._uploads[id_] = _UploadInfo(token, csv_identifier, size, created + UPLOAD_VALID_MS)
            raw = _dumps(obj)
            self._insert(id_, raw)
            if self.events is not None:
                self.events.emit("import.created", raw, created)
            logger.debug("created %s", id_)
            return obj

    def update(
        self,
        import_id: str,
        title: str | None = None,
        metadata: Mapping[str, str] | None = None,
        at: datetime | str | int | None = None,
    ) -> dict[str, Any]:
        """Apply a PATCH: set title and/or **replace** metadata, bump ``updatedAt``.

        Metadata replacement (not merge) is a choice: docs/exa-api.md §3.6 only shows that
        the response carries exactly the sent map.

        Raises:
            ImportNotFoundError: Unknown id.
        """
        with self._lock:
            obj = self._load(import_id)
            if title is not None:
                obj["title"] = title
            if metadata is not None:
                obj["metadata"] = dict(metadata)
            obj["updatedAt"] = iso_ms(self._when(obj, at))
            self._save(obj)
            return obj

    def touch(self, import_id: str, at: datetime | str | int) -> dict[str, Any]:
        """Set ``updatedAt`` to exactly ``at`` (may go backwards; for late-write tests).

        Any instant in :data:`TIME_MIN`..:data:`TIME_MAX` is accepted, so tests can serve
        odd-but-valid stamps such as ``9999-01-01T00:00:00Z`` or dates before 1970.

        Raises:
            ImportNotFoundError: Unknown id.
            TimeRangeError: ``at`` is outside :data:`TIME_MIN`..:data:`TIME_MAX`.
        """
        with self._lock:
            obj = self._load(import_id)
            obj["updatedAt"] = iso_ms(to_ms(at))
            self._save(obj)
            return obj

    def delete(self, import_id: str) -> dict[str, Any]:
        """Delete an import and return it as it was.

        Raises:
            ImportNotFoundError: Unknown id.
        """
        with self._lock:
            obj = self._load(import_id)
            del self._data[import_id]
            idx = bisect.bisect_left(self._ids, import_id)
            del self._ids[idx]
            self._uploads.pop(import_id, None)
            return obj

    def _when(self, obj: Mapping[str, Any], at: datetime | str | int | None) -> int:
        if at is not None:
            return to_ms(at)
        return self._stamp(to_ms(obj["updatedAt"]))

    def advance(
        self,
        import_id: str,
        status: str | None = None,
        failed_reason: str | None = None,
        failed_message: str | None = None,
        count: int | None = None,
        at: datetime | str | int | None = None,
    ) -> dict[str, Any]:
        """Move an import along its lifecycle, bumping ``updatedAt``.

        Default step: pending → processing → completed. ``status="failed"`` (from pending or
        processing) sets ``failedReason`` (default ``invalid_file_content``),
        ``failedMessage`` and ``failedAt`` together (docs/exa-api.md §6). ``"canceled"`` is allowed
        from pending/processing.

        Raises:
            ImportNotFoundError: Unknown id.
            InvalidTransitionError: The import is terminal or the target is not reachable.
        """
        with self._lock:
            obj = self._load(import_id)
            current = obj["status"]
            if status is None:
                status = {"pending": "processing", "processing": "completed"}.get(current)
                if status is None:
                    raise InvalidTransitionError(f"{import_id} is {current} (terminal)")
            allowed = {
                "pending": {"processing", "completed", "failed", "canceled"},
                "processing": {"completed", "failed", "canceled"},
            }.get(current, set())
            if status not in allowed:
                raise InvalidTransitionError(f"{import_id}: {current} -> {status} not allowed")
            stamp = self._when(obj, at)
            obj["status"] = status
            obj["updatedAt"] = iso_ms(stamp)
            if status == "failed":
                reason = failed_reason or "invalid_file_content"
                obj["failedReason"] = reason
                obj["failedMessage"] = failed_message or _FAIL_MESSAGES.get(reason, reason)
                obj["failedAt"] = iso_ms(stamp)
            if count is not None:
                obj["count"] = count
            self._save(obj)
            if status == "completed" and self.events is not None:
                # docs/exa-api.md §3.7: only completion has an event (no import.failed).
                self.events.emit("import.completed", self._data[import_id], stamp)
            return obj

    def upload(self, import_id: str, body: bytes) -> dict[str, Any]:
        """Process an uploaded CSV file synchronously: pending → processing → completed/failed.

        Failure rules (the real validation rules are not documented): not UTF-8, empty, or
        header only → ``invalid_file_content``; ragged rows or unparsable CSV →
        ``invalid_format``; identifier column index out of range, or no identifier-like
        column when none is given → ``missing_identifier``. On success ``count`` becomes the
        number of data rows. An upload to an import that is no longer pending is accepted
        and ignored (S3 would simply overwrite the object).

        Raises:
            ImportNotFoundError: Unknown id.
        """
        with self._lock:
            obj = self._load(import_id)
            if obj["status"] != "pending":
                logger.info("upload for %s ignored: status %s", import_id, obj["status"])
                return obj
            info = self._uploads.get(import_id)
            identifier = info.identifier if info else None
            original = self._data[import_id]
            try:
                self.advance(import_id, "processing")
                rows, reason = _check_csv(body, identifier)
                if reason is not None:
                    return self.advance(import_id, "failed", failed_reason=reason)
                return self.advance(import_id, "completed", count=rows)
            except TimeRangeError:
                self._data[import_id] = original  # all or nothing
                raise

    # ------------------------------------------------------------------ seeding

    def seed(self, n: int) -> None:
        """Add ``n`` realistic imports deterministically (same store seed → same data).

        createdAt values are spread over the 365 days before :data:`SEED_ANCHOR`; statuses
        are mostly ``completed`` with some pending/processing/failed/canceled; all entity
        types occur (custom ones with a description); metadata has 0-3 keys; ``updatedAt``
        is at or after ``createdAt`` and before the anchor plus a few days.

        Args:
            n: How many imports to add.
        """
        with self._lock:
            rng = random.Random(f"{self._seed}:seed:{self._seed_calls}")
            self._seed_calls += 1
            anchor = to_ms(SEED_ANCHOR)
            start = anchor - SEED_WINDOW_MS
            step = SEED_WINDOW_MS / max(n, 1)
            rand = rng.random
            getbits = rng.getrandbits
            data = self._data
            new_ids: list[str] = []
            last_value = 0
            dumps = _dumps
            customs = [{"type": "custom", "description": d} for d in _CUSTOM_DESCRIPTIONS]
            metas: list[dict[str, str]] = [_EMPTY]
            for _ in range(40):
                k = rng.randint(1, 3)
                keys = rng.sample(_META_KEYS, k)
                metas.append({key: rng.choice(_META_VALUES) for key in keys})
            titles = [f"{a} {b}" for a in _TITLE_WORDS_A for b in _TITLE_WORDS_B]
            for i in range(n):
                created = int(start + i * step + rand() * step)
                value = (created << 80) | getbits(80)
                if value <= last_value:
                    value = last_value + 1
                id_ = _PREFIX + encode_ulid(value)
                while id_ in data:
                    value += 1
                    id_ = _PREFIX + encode_ulid(value)
                last_value = value
                r = rand()
                failed_reason = failed_message = None
                failed_at = None
                fmt = "webset" if rand() < 0.05 else "csv"
                if r < 0.80:
                    status = "completed"
                    updated = created + 2000 + int(rand() * 600_000)
                elif r < 0.87:
                    status = "failed"
                    updated = created + 300 + int(rand() * 30_000)
                    failed_reason = FAILED_REASONS[int(rand() * 3)]
                    failed_message = _FAIL_MESSAGES[failed_reason]
                    failed_at = updated
                elif r < 0.91:
                    status = "canceled"
                    updated = created + 500 + int(rand() * 60_000)
                elif r < 0.96:
                    status = "processing"
                    updated = created + 200 + int(rand() * 400)
                else:
                    status = "pending"
                    updated = created
                if status != "pending" and rand() < 0.1:
                    # Later PATCH of title/metadata, up to 3 days after creation.
                    updated = max(updated, created + int(rand() * 259_200_000))
                e = rand()
                if e < 0.40:
                    entity = _ENTITY_SHARED["company"]
                elif e < 0.65:
                    entity = _ENTITY_SHARED["person"]
                elif e < 0.75:
                    entity = _ENTITY_SHARED["article"]
                elif e < 0.85:
                    entity = _ENTITY_SHARED["research_paper"]
                else:
                    entity = customs[int(rand() * len(customs))]
                meta = metas[int(rand() * len(metas))] if rand() < 0.5 else _EMPTY
                count = 1 + int(rand() * 5000)
                if status == "failed":
                    count = 0
                title = f"{titles[int(rand() * len(titles))]} #{i + 1}"
                data[id_] = dumps(
                    _import_dict(
                        id_,
                        status,
                        fmt,
                        entity,
                        title,
                        count,
                        meta,
                        failed_reason,
                        failed_message,
                        failed_at,
                        created,
                        updated,
                    )
                )
                new_ids.append(id_)
            if self._ids and new_ids and self._ids[-1] > new_ids[0]:
                self._ids.extend(new_ids)
                self._ids.sort()
            else:
                self._ids.extend(new_ids)
            self._last_ulid = max(self._last_ulid, last_value)
            logger.info("seeded %d imports (total %d)", n, len(self._ids))

    # ------------------------------------------------------------------ bulk mutation

    def mutate(
        self,
        update: int = 0,
        create: int = 0,
        delete: int = 0,
        advance: int = 0,
        seed: int = 0,
    ) -> dict[str, list[str]]:
        """Deterministically change many imports at once (benchmarks: "PATCH 1%").

        Picks distinct existing imports with ``random.Random(seed)``: ``update`` of them get a
        new title and metadata, ``delete`` are deleted, ``advance`` of the non-terminal ones
        move one lifecycle step; then ``create`` new pending imports are created.

        Returns:
            ``{"updated": [...], "deleted": [...], "advanced": [...], "created": [...]}``.
        """
        with self._lock:
            rng = random.Random(f"mutate:{seed}")
            ids = self._ids
            k = min(len(ids), update + delete)
            picked = [ids[i] for i in rng.sample(range(len(ids)), k)]
            to_update, to_delete = picked[:update], picked[update:]
            for id_ in to_update:
                self.update(
                    id_,
                    title=f"Updated import {rng.randrange(10**6)}",
                    metadata={"mutation": str(seed)},
                )
            for id_ in to_delete:
                self.delete(id_)
            advanced: list[str] = []
            if advance:
                live = [i for i in self._ids if _status_of(self._data[i]) in _LIVE]
                for id_ in rng.sample(live, min(advance, len(live))):
                    self.advance(id_)
                    advanced.append(id_)
            created = [
                self.create({"type": "company"}, title=f"Mutation import {seed}-{j}", count=j)["id"]
                for j in range(create)
            ]
            return {
                "updated": to_update,
                "deleted": to_delete,
                "advanced": advanced,
                "created": created,
            }


_LIVE = {b"pending", b"processing"}
_STATUS_RE = re.compile(rb'"status":"([a-z]+)"')


def _status_of(raw: bytes) -> bytes:
    match = _STATUS_RE.search(raw)
    return match.group(1) if match else b""


_IDENTIFIER_HINTS = (
    "url",
    "website",
    "domain",
    "link",
    "linkedin",
    "email",
    "doi",
    "name",
    "title",
    "id",
)


def _check_csv(body: bytes, identifier: int | None) -> tuple[int, str | None]:
    """Validate an uploaded CSV; return (data rows, failure reason or None)."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        return 0, "invalid_file_content"
    if not text.strip():
        return 0, "invalid_file_content"
    try:
        rows = [row for row in csv.reader(io.StringIO(text), strict=True) if row]
    except csv.Error:
        return 0, "invalid_format"
    if len(rows) < 2:
        return 0, "invalid_file_content"
    header, data = rows[0], rows[1:]
    if any(len(row) != len(header) for row in data):
        return 0, "invalid_format"
    if identifier is not None:
        if identifier >= len(header):
            return 0, "missing_identifier"
    elif not _infer_identifier(header, data[0]):
        return 0, "missing_identifier"
    return len(data), None


def _infer_identifier(header: Iterable[str], first: list[str]) -> bool:
    for name in header:
        lowered = name.strip().lower()
        if any(h in lowered for h in _IDENTIFIER_HINTS):
            return True
    return any(v.startswith(("http://", "https://")) or "." in v for v in first)
