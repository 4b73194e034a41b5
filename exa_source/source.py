"""The dlt source ``exa`` and its resource ``imports``.

``GET /websets/v0/imports`` has no filter on ``updatedAt`` and comes back newest first by
``createdAt`` (reference §2, §4.4), so every run pages through all imports and keeps only what
changed since the last run (:mod:`exa_source.incremental`; dlt's incremental on ``updatedAt``
holds the high-water mark). The list is not ordered by the cursor, so the incremental has no
``row_order``: dlt would stop reading at the first old row and silently drop later changes.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import dlt
import pyarrow as pa
from dlt.extract.resource import DltResource

from exa_source import deletions as _deletions
from exa_source import settings
from exa_source.helpers import ExaConfigError, ExaRESTClient
from exa_source.incremental import DLT_LAG_SECONDS, ChangeFilter
from exa_source.schema import COLUMN_HINTS, keys, page_to_table

logger = logging.getLogger(__name__)


class _DeclaredJsonFilter(logging.Filter):
    """Drop dlt's warning that an Arrow type differs from the declared hint.

    ``metadata`` travels as JSON text in Arrow and is declared ``json``: dlt keeps the declared
    hint (what we want) but would warn once per Arrow table of every run.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(
            f"In resource: {settings.IMPORTS_TABLE}, when merging arrow schema with dlt schema"
        )


logging.getLogger("dlt").addFilter(_DeclaredJsonFilter())

#: Default backfill start: the beginning of time, as a datetime so that the cursor is typed.
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def parse_timestamp(value: str | datetime, option: str = "initial_updated_at") -> datetime:
    """Parse an ISO-8601 timestamp option into an aware UTC datetime.

    Naive values are taken as UTC; ``Z`` and offsets are accepted.

    Raises:
        ExaConfigError: the value is not an ISO-8601 date or timestamp.
    """
    if isinstance(value, datetime):
        parsed = value
    else:
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ExaConfigError(
                f"{option}={value!r} is not an ISO-8601 timestamp"
                " (e.g. 2025-01-01 or 2025-01-01T00:00:00Z)"
            ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def validate_base_url(base_url: str) -> str:
    """Check the base URL: https, or plain http only on a loopback host.

    The key travels in a header of every request; over plain http anyone on the path reads it.

    Raises:
        ExaConfigError: not an http(s) URL, or plain http to a non-loopback host.
    """
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ExaConfigError(f"base_url={base_url!r} is not an http(s) URL")
    if parts.scheme == "http":
        host = parts.hostname
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            raise ExaConfigError(
                f"base_url={base_url!r} uses plain http to a non-loopback host; the API key"
                " would travel in clear. Use https (plain http is allowed only for 127.0.0.1,"
                " ::1 or localhost, e.g. the bundled emulator)."
            )
    return base_url.rstrip("/")


def validate_page_size(page_size: int) -> int:
    """Check that the page size is an integer the API accepts (1-200, reference §3.1).

    Raises:
        ExaConfigError: out of range or not an integer.
    """
    if isinstance(page_size, bool) or not isinstance(page_size, int):
        raise ExaConfigError(f"page_size={page_size!r} must be an integer from 1 to 200")
    if not settings.MIN_PAGE_SIZE <= page_size <= settings.MAX_PAGE_SIZE:
        raise ExaConfigError(
            f"page_size={page_size} is outside {settings.MIN_PAGE_SIZE}-"
            f"{settings.MAX_PAGE_SIZE}, the range the Exa API accepts"
        )
    return page_size


def _imports(
    client: ExaRESTClient,
    page_size: int,
    deletion_policy: _deletions.DeletionPolicy,
    lag_seconds: float,
    updated_at: dlt.sources.incremental[datetime] = dlt.sources.incremental(  # noqa: B008
        settings.CURSOR_FIELD, initial_value=EPOCH
    ),
) -> Iterator[pa.Table]:
    """Yield the imports changed since the last run as Arrow tables.

    Pages are gathered into batches of ``ROWS_PER_TABLE`` rows. For each batch only ``id`` and
    ``updatedAt`` are converted first; :class:`~exa_source.incremental.ChangeFilter` picks the
    changed rows, and only those are converted to a full table (a rerun with few changes
    converts almost nothing). One table per batch, not per page: dlt computes the table schema
    once per Arrow item (~4 ms; its contract cache is off for Arrow).

    ``updated_at`` needs its Incremental *default*: this module uses postponed annotations, and
    dlt then cannot see the annotation, so without a default it silently ignores the argument
    and loads every row on every run.

    After the last page (a complete scan), records in the resource state the scan's counters
    (shown by ``dlt pipeline exa_websets info``), the next run's dedup window and the ids
    deleted upstream (see :mod:`exa_source.deletions`); the state is committed with the load.
    """
    state = dlt.current.resource_state()
    previous = state.get("window", {})
    changes = ChangeFilter(
        # the raw high-water mark: `last_value` would return it minus dlt's (huge) lag
        high_water=updated_at.get_state().get("last_value"),
        initial=updated_at.initial_value or EPOCH,
        lag_seconds=lag_seconds,
        previous_scan_seconds=previous.get("scan_seconds", 0.0),
        loaded_keys=previous.get("loaded_keys", []),
    )
    stats = client.stats
    rows = 0
    batch: list[dict[str, Any]] = []
    next_log = time.monotonic() + settings.PROGRESS_EVERY_SECONDS

    def changed(batch: list[dict[str, Any]]) -> pa.Table | None:
        picked = changes.select(*keys(batch)).to_pylist()
        if not picked:
            return None
        return page_to_table(batch if len(picked) == len(batch) else [batch[i] for i in picked])

    for page in client.pages(settings.IMPORTS_PATH, page_size):
        rows += len(page)
        batch.extend(page)
        if len(batch) >= settings.ROWS_PER_TABLE:
            if (table := changed(batch)) is not None:
                yield table
            batch = []
        if time.monotonic() >= next_log:
            logger.info("imports: %d rows read in %d pages so far", rows, stats.pages)
            next_log = time.monotonic() + settings.PROGRESS_EVERY_SECONDS
    if batch and (table := changed(batch)) is not None:
        yield table
    seconds = time.monotonic() - stats.started
    state["window"] = changes.next_state(seconds)
    if deletion_policy != "off":
        found = _deletions.find_deleted(changes.ids)
        state["deletions"] = _deletions.record(deletion_policy, found)
    else:
        state.pop("deletions", None)
    state["last_scan"] = {
        "rows": rows,
        "pages": stats.pages,
        "requests": stats.requests,
        "retried": stats.retried,
        "unchanged_in_window": changes.skipped,
        "seconds": round(seconds, 3),
    }
    logger.info("imports: scan complete, %d rows in %d pages", rows, stats.pages)
    if lag_seconds and seconds > lag_seconds:
        logger.warning(
            "imports: the scan took %.0f s, longer than lag_seconds=%.0f; the next run widens"
            " its re-read window by the scan time, but consider a larger lag_seconds",
            seconds,
            lag_seconds,
        )


@dlt.source(name=settings.SOURCE_NAME)
def exa_websets_source(
    api_key: str = dlt.secrets.value,
    base_url: str = settings.DEFAULT_BASE_URL,
    page_size: int = settings.DEFAULT_PAGE_SIZE,
    initial_updated_at: str | None = None,
    lag_seconds: float = settings.DEFAULT_LAG_SECONDS,
    deletions: str = settings.DEFAULT_DELETIONS,
) -> DltResource:
    """Exa Websets: the ``imports`` resource, incremental on ``updatedAt``, merged on ``id``.

    Args:
        api_key: Exa API key (``SOURCES__EXA__API_KEY`` or ``[sources.exa] api_key``).
        base_url: API root; ``/websets/v0/...`` is appended. Plain http only on loopback.
        page_size: imports per request, 1-200; 200 means the fewest requests.
        initial_updated_at: backfill start: only imports updated at or after it are loaded.
        lag_seconds: re-read window before the last run's highest ``updatedAt`` that catches
            late commits; 0 disables it.
        deletions: imports deleted in Exa: ``soft`` (stamp ``_exa_deleted_at``, keep the row),
            ``hard`` (delete the row) or ``off``. Applied after a successful load of a complete
            scan by :func:`exa_source.deletions.apply_deletions`.

    Returns:
        The ``imports`` resource.

    Raises:
        ExaConfigError: an option is invalid (checked before any request).
    """
    if not api_key or not str(api_key).strip():
        raise ExaConfigError(settings.NO_KEY_MESSAGE)
    base_url = validate_base_url(base_url)
    validate_page_size(page_size)
    if lag_seconds < 0:
        raise ExaConfigError(f"lag_seconds={lag_seconds} must be 0 or more")
    policy = _deletions.validate_policy(deletions)
    start = parse_timestamp(initial_updated_at) if initial_updated_at else EPOCH
    client = ExaRESTClient(base_url, api_key)
    resource: DltResource = dlt.resource(
        _imports,
        name=settings.IMPORTS_TABLE,
        primary_key="id",
        write_disposition={"disposition": "merge", "strategy": "delete-insert"},
        columns=COLUMN_HINTS,
        # New API fields add columns; a type change fails the run at extract, before anything
        # is written. With the default ("evolve"), dlt retypes the column in its schema only,
        # and the load then fails on the destination (PostgreSQL: retried as a transient
        # error, leaving a pending package that blocks later runs).
        schema_contract={"tables": "evolve", "columns": "evolve", "data_type": "freeze"},
    )(
        client,
        page_size,
        policy,
        lag_seconds,
        updated_at=dlt.sources.incremental[datetime](
            settings.CURSOR_FIELD, initial_value=start, lag=DLT_LAG_SECONDS
        ),
    )
    return resource
