"""The dlt source ``exa`` and its resources, one per table (``settings.RESOURCES``).

No list of the API has a filter on ``updatedAt`` (``docs/exa-api.md`` §4.4), so ``imports`` and
``websets`` page through everything on every run, and searches and enrichments come embedded
in the websets. Which rows are written is decided by comparing the scan with the destination
table (:mod:`exa_source.sync`): no high-water mark, no lag window and no keys in the local
state take part, so each table converges on the API whatever happened to the state or the
table in between. Items are the exception to "page through everything": only the websets
:mod:`exa_source.items` picks (new, changed, with item events, due a reconcile, or whose rows
in the table no longer match what the last load wrote) are read, each whole, several at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Protocol

import dlt
import numpy as np
import pyarrow as pa
from dlt.extract.resource import DltResource

from exa_source import settings
from exa_source.client import ExaRESTClient, SharedList
from exa_source.config import (
    DeletionPolicy,
    parse_timestamp,
    require_api_key,
    validate_base_url,
    validate_concurrency,
    validate_event_types,
    validate_page_size,
    validate_policy,
    validate_reconcile_days,
)
from exa_source.items import ItemsPlan, server_now
from exa_source.schema import (
    ENRICHMENTS,
    EVENTS,
    IMPORTS,
    ITEMS,
    MONITOR_RUNS,
    MONITORS,
    SEARCHES,
    WEBHOOK_ATTEMPTS,
    WEBHOOKS,
    WEBSETS,
    TableSpec,
)
from exa_source.sync import (
    Record,
    Scan,
    emptied_by_this_load,
    from_micros,
    future_cap,
    plan_for,
    read_record,
    recreate_if_dropped,
    to_micros,
)

logger = logging.getLogger(__name__)

#: Keys earlier versions kept in the resource state; removed when a scan starts.
_LEGACY_STATE = ("window", "deletions")


class _DeclaredJsonFilter(logging.Filter):
    """Drop dlt's warning that an Arrow type differs from the declared hint, for one resource.

    ``metadata`` travels as JSON text in Arrow and is declared ``json``: dlt keeps the declared
    hint (what we want) but warns once per Arrow table.
    """

    def __init__(self, resource_name: str) -> None:
        super().__init__()
        self.prefix = f"In resource: {resource_name}, when merging arrow schema with dlt schema"

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


@contextmanager
def _quiet_declared_json(resource_name: str) -> Iterator[None]:
    """Install :class:`_DeclaredJsonFilter` on dlt's logger for the life of one scan only."""
    dlt_logger = logging.getLogger("dlt")
    quiet = _DeclaredJsonFilter(resource_name)
    dlt_logger.addFilter(quiet)
    try:
        yield
    finally:
        dlt_logger.removeFilter(quiet)


def _running() -> tuple[Any, Any, Any, str | None]:
    """The running pipeline, resource, schema and load id; Nones outside a pipeline run."""
    try:
        pipeline = dlt.current.pipeline()
        resource = dlt.current.resource()
        schema = dlt.current.source_schema()
        load_id = dlt.current.load_package_state()["load_id"]
    except Exception:  # iterated outside a pipeline, e.g. list(source)
        return None, None, None, None
    return pipeline, resource, schema, load_id


class _Feed(Protocol):
    """Where one resource's rows come from, and what it saves after a complete scan."""

    client: ExaRESTClient

    def bind(self, state: dict[str, Any]) -> None:
        """Give the feed the resource state (before :meth:`pages`)."""
        ...

    def pages(self, record: Record, load_id: str | None) -> Iterator[list[dict[str, Any]]]:
        """The rows to compare with ``record``, a page (or any batch) at a time."""
        ...

    def complete(self) -> set[str] | None:
        """For a scoped table: the scopes listed whole (deletions only there); else None."""
        ...

    def save(self, state: dict[str, Any], scan: Scan) -> None:
        """Update the resource state after the deletion marks (a complete scan only)."""
        ...


class _ListFeed:
    """A list endpoint read whole: ``imports``."""

    def __init__(self, client: ExaRESTClient, path: str, page_size: int | None) -> None:
        self.client, self.path, self.page_size = client, path, page_size
        self.state: dict[str, Any] = {}

    def bind(self, state: dict[str, Any]) -> None:
        self.state = state

    def pages(self, record: Record, load_id: str | None) -> Iterator[list[dict[str, Any]]]:
        return self.client.pages(self.path, self.page_size)

    def complete(self) -> set[str] | None:
        return None

    def save(self, state: dict[str, Any], scan: Scan) -> None:
        return None


class _SharedFeed(_ListFeed):
    """A shared listing (websets, monitors, webhooks), or what is embedded in each (``embedded``).

    Searches and enrichments have no list endpoint (``docs/exa-api.md`` §4.1): a complete
    websets listing holds every one of them, so the ones absent from it were deleted (with
    their webset, or on their own).
    """

    def __init__(self, client: ExaRESTClient, websets: SharedList, embedded: str | None) -> None:
        super().__init__(client, websets.path, websets.page_size)
        self.websets, self.embedded = websets, embedded

    def pages(self, record: Record, load_id: str | None) -> Iterator[list[dict[str, Any]]]:
        websets = self.websets.get(self.client, load_id)
        if self.embedded is None:
            yield websets
            return
        rows = [
            row
            for webset in websets
            for row in webset.get(self.embedded) or []
            if isinstance(row, dict)
        ]
        yield rows


class _ItemsFeed(_ListFeed):
    """The items of the websets :class:`~exa_source.items.ItemsPlan` picks, read whole."""

    def __init__(
        self,
        client: ExaRESTClient,
        websets: SharedList,
        concurrency: int,
        reconcile_days: float,
        policy: DeletionPolicy,
    ) -> None:
        super().__init__(client, settings.WEBSETS_PATH, settings.ITEMS_PAGE_SIZE)
        self.websets, self.concurrency = websets, concurrency
        self.reconcile_days, self.policy = reconcile_days, policy
        self.plan: ItemsPlan | None = None

    def pages(self, record: Record, load_id: str | None) -> Iterator[list[dict[str, Any]]]:
        websets = self.websets.get(self.client, load_id)
        self.plan = ItemsPlan(
            self.client,
            websets,
            record,
            self.state,
            self.reconcile_days,
            now=server_now(self.websets.server_date),
        )
        self.plan.choose()
        return self.plan.pages(self.concurrency)

    def complete(self) -> set[str] | None:
        return None if self.plan is None else self.plan.scopes_complete()

    def save(self, state: dict[str, Any], scan: Scan) -> None:
        if self.plan is None or scan.listed is None:
            return
        kept = scan.record.fingerprints(unseen=True) if self.policy == "off" else {}
        state.update(self.plan.state(scan.listed.result(), kept))
        state["last_scan"]["websets_read"] = len(self.plan.complete)
        state["last_scan"]["events_read"] = self.plan.events_read


class _ChildFeed(_ListFeed):
    """The list under each object of a shared listing: a monitor's runs, a webhook's attempts.

    One cursor chain per parent, ``concurrency`` at a time. Rows of parents gone from the
    listing are taken for deleted (the API deletes them with their parent).

    With ``overlap`` (webhook attempts: immutable, listed newest first, no time filter), a
    parent's chain is read back only until a page reaches ``overlap`` seconds before the newest
    row the table holds for that parent: the table is the mark, so a restored or emptied table
    is simply read back further. A chain read to its end that way was read whole, and its
    deletions are found; one stopped early finds none.
    """

    def __init__(
        self,
        client: ExaRESTClient,
        parents: SharedList,
        child: str,
        page_size: int | None,
        concurrency: int,
        spec: TableSpec,
        overlap: float | None = None,
    ) -> None:
        super().__init__(client, parents.path, page_size)
        self.parents, self.child = parents, child
        self.concurrency, self.spec, self.overlap = concurrency, spec, overlap
        self.whole: set[str] = set()
        self.stopped: set[str] = set()
        self.gone: set[str] = set()

    def pages(self, record: Record, load_id: str | None) -> Iterator[list[dict[str, Any]]]:
        live = {
            str(p["id"])
            for p in self.parents.get(self.client, load_id)
            if isinstance(p, dict) and "id" in p
        }
        self.gone = set(record.scope_names) - live
        paths = {pid: f"{self.parents.path}/{pid}/{self.child}" for pid in sorted(live)}
        until = None
        if self.overlap is not None:
            margin = int(self.overlap * 1_000_000)
            floors = {pid: top - margin for pid, top in record.newest_per_scope().items()}
            until = partial(self._caught_up, floors)
        for key, page in self.client.chains(paths, self.page_size, self.concurrency, until):
            if isinstance(page, list):
                yield page
            elif page is None:
                if key not in self.stopped:
                    self.whole.add(key)
            else:
                logger.warning(
                    "%s: %s answered 404 (deleted while read)", self.spec.name, paths[key]
                )

    def _caught_up(self, floors: dict[str, int], key: str, page: list[dict[str, Any]]) -> bool:
        """Whether a newest-first page reached what the table holds (the chain can stop).

        A page whose cursor values do not descend (an order the API does not document)
        never stops the chain: reading on costs requests, stopping could lose rows.
        """
        floor = floors.get(key)
        if floor is None or not page:
            return False
        try:
            _, stamps = self.spec.keys(page)
        except Exception:  # an unusable row is reported by the scan itself
            return False
        micros = np.asarray(stamps.cast(pa.int64()).to_numpy(zero_copy_only=False))
        if len(micros) > 1 and bool((np.diff(micros) > 0).any()):
            return False
        if int(micros[-1]) < floor:
            self.stopped.add(key)
            return True
        return False

    def complete(self) -> set[str] | None:
        return self.whole | self.gone


class _EventsFeed(_ListFeed):
    """The event log: append-only, read from the newest stored event on (``createdAfter``).

    ``createdAfter`` is inclusive and the read starts ``EVENT_OVERLAP_SECONDS`` before the
    newest ``created_at`` in the table (the table is the mark: nothing local decides what is
    read); events listed again are already stored at that version and are not written twice.
    Events leave the API after 60 days and never leave the table. When the table's newest
    event (or, if the table still holds everything, the last complete read) is older than
    that, the events between could not be read: the run warns, naming the gap.
    """

    def __init__(self, client: ExaRESTClient, types: tuple[str, ...] | None = None) -> None:
        super().__init__(client, settings.EVENTS_PATH, settings.EVENTS_PAGE_SIZE)
        self.types = types
        self.gap: tuple[str, str] | None = None
        self.newest: int | None = None

    def pages(self, record: Record, load_id: str | None) -> Iterator[list[dict[str, Any]]]:
        self.newest = newest = record.newest()
        params: dict[str, Any] = {}
        last = self.state.get("events") or {}
        chosen = None if self.types is None else list(self.types)
        if newest is not None and last.get("types", chosen) != chosen:
            # other types than the stored events': read everything the API still keeps
            logger.info("%s: event types changed; reading every retained event", EVENTS.name)
        elif newest is not None:
            start = newest - int(settings.EVENT_OVERLAP_SECONDS * 1_000_000)
            params["createdAfter"] = from_micros(start).isoformat(timespec="microseconds")
        if chosen:
            params["types"] = chosen
        for page in self.client.pages(self.path, self.page_size, params):
            yield [_without_secret(event) for event in page]
        self._check_gap(newest)

    def _check_gap(self, newest: int | None) -> None:
        """Warn when events the API no longer keeps may be missing from the table.

        Judged after the read, on the server's clock (the ``Date`` of its replies).
        """
        now = server_now(self.client.stats.server_date)
        floor = now - timedelta(days=settings.EVENT_RETENTION_DAYS)
        last = self.state.get("events") or {}
        read_to, loaded = last.get("read_to"), last.get("newest")
        # the table still holds what the last complete read loaded: it is complete up to then
        consistent = loaded is not None and newest is not None and newest >= loaded
        since: datetime | None = None
        if consistent and read_to:
            since = datetime.fromisoformat(read_to)
        elif newest is not None:
            since = from_micros(newest)
        elif loaded is not None:  # the table was emptied after events were loaded
            since = from_micros(last.get("oldest") or 0)
        if since is None or since >= floor:
            return
        self.gap = (since.isoformat(timespec="seconds"), floor.isoformat(timespec="seconds"))
        logger.warning("%s", gap_warning(self.gap))

    def complete(self) -> set[str] | None:
        return set()  # append-only: an event gone from the API is kept

    def save(self, state: dict[str, Any], scan: Scan) -> None:
        top = scan.counters.max_updated_at
        cap = to_micros(future_cap())
        newest = max((v for v in (top, self.newest) if v is not None and v <= cap), default=None)
        read_to = server_now(self.client.stats.server_date)
        before = (state.get("events") or {}).get("oldest")
        oldest = min(
            (v for v in (before, scan.counters.min_updated_at) if v is not None), default=None
        )
        state["events"] = {
            "read_to": read_to.isoformat(timespec="microseconds"),
            "newest": newest,
            "oldest": oldest,  # the oldest event ever loaded: names the gap of an emptied table
            "types": None if self.types is None else list(self.types),
        }
        state["last_scan"]["gap"] = None if self.gap is None else list(self.gap)


def gap_warning(gap: tuple[str, str] | list[str]) -> str:
    """The words of a gap in the event log (logged, and in the load's summary)."""
    return (
        f"events created between {gap[0]} and {gap[1]} may be missing from the"
        f" {EVENTS.name} table: the API keeps events {settings.EVENT_RETENTION_DAYS} days and no"
        f" complete read covered them (run at least every {settings.EVENT_RETENTION_DAYS} days)"
    )


def _without_secret(event: dict[str, Any]) -> dict[str, Any]:
    """The event, without a webhook ``secret`` if its ``data`` carries one (never stored)."""
    data = event.get("data")
    if isinstance(data, dict) and "secret" in data:
        return {**event, "data": {k: v for k, v in data.items() if k != "secret"}}
    return event


def _scan(
    spec: TableSpec, feed: _Feed, policy: DeletionPolicy, since: datetime | None
) -> Iterator[Any]:
    """Yield the rows of ``spec``'s table that differ from the destination, then deletion marks.

    Yields Arrow tables (one may be wrapped by ``dlt.mark.with_hints``, see
    :meth:`~exa_source.sync.Scan.select`).

    Pages are gathered into batches of ``ROWS_PER_TABLE`` rows. For each batch only ``id`` and
    ``updatedAt`` are converted first; the rows to write are picked by comparing them with the
    record read from the destination (:class:`~exa_source.sync.Record`) and only those are
    converted to a full table (a rerun with few changes converts almost nothing). One table per
    batch, not per page: dlt computes the table schema once per Arrow item (~4 ms).

    After the last page (a complete scan) the rows gone from the API are yielded as deletion
    marks. The resource state then describes the scan (``dlt pipeline exa_websets info -v``);
    a scan stopped early (``add_limit``, an error) records ``complete: false`` and deletes
    nothing.
    """
    pipeline, resource, schema, load_id = _running()
    plan = plan_for(resource, schema.naming if schema is not None else None, policy, spec)
    state = dlt.current.resource_state() if pipeline is not None else {}
    for key in _LEGACY_STATE:
        state.pop(key, None)
    if resource is not None and resource.incremental is None:
        state.pop("incremental", None)  # the high-water mark of versions before 0.2
    feed.bind(state)
    emptied = emptied_by_this_load(plan)
    if plan.mode == "snapshot" or emptied:
        record = Record.empty()
    else:
        record = read_record(pipeline, plan)
        recreate_if_dropped(record, plan, schema)
    # the destination answered: nothing is there (or this load empties the table first)
    empty_table = emptied or (record.found != "unknown" and not len(record))
    scan = Scan(plan, record, since, load_id, empty_table=empty_table and resource is not None)
    logger.info(
        "%s: %s mode, %d rows in the destination table (%s)",
        plan.table,
        plan.mode,
        len(record),
        record.found,
    )
    stats = feed.client.stats
    batch: list[dict[str, Any]] = []
    next_log = time.monotonic() + settings.PROGRESS_EVERY_SECONDS
    try:
        with _quiet_declared_json(resource.name if resource is not None else plan.table):
            for page in feed.pages(record, load_id):
                batch.extend(page)
                if len(batch) >= settings.ROWS_PER_TABLE:
                    if (table := scan.select(batch)) is not None:
                        yield table
                    batch = []
                if time.monotonic() >= next_log:
                    logger.info(
                        "%s: %d rows read in %d pages so far",
                        plan.table,
                        scan.counters.rows + len(batch),
                        stats.pages,
                    )
                    next_log = time.monotonic() + settings.PROGRESS_EVERY_SECONDS
            if (table := scan.select(batch)) is not None:
                yield table
            yield from scan.deletion_marks(pipeline, feed.complete())
    finally:
        state["last_scan"] = scan.state(time.monotonic() - stats.started, stats)
        if scan.hinted and resource is not None:
            # this package appends into the empty table; the resource merges again next run
            resource.write_disposition = plan.hint
    feed.save(state, scan)
    logger.info(
        "%s: scan complete, %d rows in %d pages; %d new or changed, %d deleted",
        plan.table,
        scan.counters.rows,
        stats.pages,
        scan.counters.changed,
        scan.counters.deleted,
    )


@dlt.source(name=settings.SOURCE_NAME, section=settings.SOURCE_NAME)
def exa_websets_source(
    api_key: str | None = dlt.secrets.value,
    base_url: str = settings.DEFAULT_BASE_URL,
    page_size: int = settings.DEFAULT_PAGE_SIZE,
    initial_updated_at: str | None = None,
    deletions: str = settings.DEFAULT_DELETIONS,
    max_pages: int = settings.MAX_PAGES,
    max_seconds: float = settings.MAX_SECONDS,
    concurrency: int = settings.DEFAULT_CONCURRENCY,
    items_reconcile_days: float = settings.ITEMS_RECONCILE_DAYS,
    event_types: str | Sequence[str] | None = None,
) -> Sequence[DltResource]:
    """Exa Websets: every resource merged on ``id``, written only where it changed.

    Resources (``with_resources(...)`` selects; default all): ``imports``, ``websets``,
    ``webset_searches``, ``webset_enrichments``, ``webset_items``, ``monitors``,
    ``monitor_runs``, ``webhooks``, ``webhook_attempts``, ``events``.

    Args:
        api_key: Exa API key: ``SOURCES__EXA__API_KEY``, ``[sources.exa] api_key`` in
            ``.dlt/secrets.toml``, else the ``EXA_API_KEY`` environment variable.
        base_url: API root; ``/websets/v0/...`` is appended. Plain http only on loopback.
        page_size: imports per request, 1-200; 200 means the fewest requests. (Websets and
            items are always read 100 a page, their maximum.)
        initial_updated_at: backfill start for ``imports``: only imports updated at or after
            it are loaded (older ones are never counted as deleted either).
        deletions: objects deleted in Exa: ``soft`` (keep the row, stamp
            ``_exa_deleted_at``), ``hard`` (delete the row) or ``off``. Written in the same
            load package as the changed rows, after a complete scan only.
        max_pages: a scan still paging after this many pages fails (and deletes nothing): an
            API that answers ``hasMore: true`` with a fresh cursor forever would otherwise
            never end. Counted per list (per webset for items).
        max_seconds: the same bound in wall-clock seconds.
        concurrency: websets whose items (monitors whose runs, webhooks whose attempts) are
            read at once, 1-32.
        items_reconcile_days: every webset's items are read whole at least this often, in
            days (0: on every run); this is when items deleted in Exa are found.
        event_types: the event types the ``events`` table loads (a list, or a comma-separated
            string); default every type. Changing it reads every event the API still keeps
            (60 days) once.

    Returns:
        The resources.

    Raises:
        ExaConfigError: no key, or an invalid option (checked before any request).
    """
    key = require_api_key(api_key)
    base_url = validate_base_url(base_url)
    validate_page_size(page_size)
    policy = validate_policy(deletions)
    concurrency = validate_concurrency(concurrency)
    reconcile_days = validate_reconcile_days(items_reconcile_days)
    types = validate_event_types(event_types)
    since = parse_timestamp(initial_updated_at) if initial_updated_at else None

    def client() -> ExaRESTClient:  # one per resource: its own request counters
        return ExaRESTClient(base_url, key, max_pages=max_pages, max_seconds=max_seconds)

    websets = SharedList(settings.WEBSETS_PATH, settings.WEBSETS_PAGE_SIZE)
    monitors = SharedList(settings.MONITORS_PATH, settings.MONITORS_PAGE_SIZE)
    webhooks = SharedList(settings.WEBHOOKS_PATH, settings.WEBHOOKS_PAGE_SIZE)
    feeds: list[tuple[TableSpec, _Feed, datetime | None]] = [
        (IMPORTS, _ListFeed(client(), settings.IMPORTS_PATH, page_size), since),
        (WEBSETS, _SharedFeed(client(), websets, None), None),
        (SEARCHES, _SharedFeed(client(), websets, "searches"), None),
        (ENRICHMENTS, _SharedFeed(client(), websets, "enrichments"), None),
        (ITEMS, _ItemsFeed(client(), websets, concurrency, reconcile_days, policy), None),
        (MONITORS, _SharedFeed(client(), monitors, None), None),
        (
            MONITOR_RUNS,
            _ChildFeed(client(), monitors, "runs", None, concurrency, MONITOR_RUNS),
            None,
        ),
        (WEBHOOKS, _SharedFeed(client(), webhooks, None), None),
        (
            WEBHOOK_ATTEMPTS,
            _ChildFeed(
                client(),
                webhooks,
                "attempts",
                settings.ATTEMPTS_PAGE_SIZE,
                concurrency,
                WEBHOOK_ATTEMPTS,
                overlap=settings.ATTEMPT_OVERLAP_SECONDS,
            ),
            None,
        ),
        (EVENTS, _EventsFeed(client(), types), None),
    ]
    return [
        dlt.resource(
            _scan,
            name=spec.name,
            primary_key="id",
            # "deduplicated": the scan lists each object once; if it ever meets one twice, it
            # marks its load for deduplication (exa_source.sync.Scan._duplicates)
            write_disposition={
                "disposition": "merge",
                "strategy": "delete-insert",
                "deduplicated": True,
            },
            columns=spec.hints(hard_delete=policy == "hard"),
            # New API fields add columns; a type change fails the run at extract, before
            # anything is written. With the default ("evolve"), dlt retypes the column in its
            # schema only, and the load then fails on the destination (PostgreSQL: retried as
            # a transient error, leaving a pending package that blocks later runs).
            schema_contract={"tables": "evolve", "columns": "evolve", "data_type": "freeze"},
        )(spec, feed, policy, feed_since)
        for spec, feed, feed_since in feeds
    ]
