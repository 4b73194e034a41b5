"""The dlt source ``exa`` and its resource ``imports``.

``GET /websets/v0/imports`` has no filter on ``updatedAt`` and lists imports newest first by
``createdAt`` (``docs/exa-api.md`` §2, §4.4), so every run pages through all imports. Which of
them are written is decided by comparing the scan with the destination table
(:mod:`exa_source.sync`): no high-water mark, no lag window and no keys in the local state take
part, so the table converges on the API whatever happened to the state or the table in between.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import dlt
from dlt.extract.resource import DltResource

from exa_source import settings
from exa_source.client import ExaRESTClient
from exa_source.config import (
    DeletionPolicy,
    parse_timestamp,
    require_api_key,
    validate_base_url,
    validate_page_size,
    validate_policy,
)
from exa_source.schema import column_hints
from exa_source.sync import (
    Record,
    Scan,
    emptied_by_this_load,
    plan_for,
    read_record,
    recreate_if_dropped,
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


def _imports(
    client: ExaRESTClient,
    page_size: int,
    policy: DeletionPolicy,
    since: datetime | None,
) -> Iterator[Any]:
    """Yield the imports that differ from the destination table, then the deletion marks.

    Yields Arrow tables (one may be wrapped by ``dlt.mark.with_hints``, see
    :meth:`~exa_source.sync.Scan.select`).

    Pages are gathered into batches of ``ROWS_PER_TABLE`` rows. For each batch only ``id`` and
    ``updatedAt`` are converted first; the rows to write are picked by comparing them with the
    record read from the destination (:class:`~exa_source.sync.Record`) and only those are
    converted to a full table (a rerun with few changes converts almost nothing). One table per
    batch, not per page: dlt computes the table schema once per Arrow item (~4 ms).

    After the last page (a complete scan) the imports gone from the API are yielded as deletion
    marks. The resource state then describes the scan (``dlt pipeline exa_websets info -v``);
    a scan stopped early (``add_limit``, an error) records ``complete: false`` and deletes
    nothing.
    """
    pipeline, resource, schema, load_id = _running()
    plan = plan_for(resource, schema.naming if schema is not None else None, policy)
    state = dlt.current.resource_state() if pipeline is not None else {}
    for key in _LEGACY_STATE:
        state.pop(key, None)
    if resource is not None and resource.incremental is None:
        state.pop("incremental", None)  # the high-water mark of versions before 0.2
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
    stats = client.stats
    batch: list[dict[str, Any]] = []
    next_log = time.monotonic() + settings.PROGRESS_EVERY_SECONDS
    try:
        with _quiet_declared_json(resource.name if resource is not None else plan.table):
            for page in client.pages(settings.IMPORTS_PATH, page_size):
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
            yield from scan.deletion_marks(pipeline)
    finally:
        state["last_scan"] = scan.state(time.monotonic() - stats.started, stats)
        if scan.hinted and resource is not None:
            # this package appends into the empty table; the resource merges again next run
            resource.write_disposition = plan.hint
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
) -> DltResource:
    """Exa Websets: the ``imports`` resource, merged on ``id``, written only where it changed.

    Args:
        api_key: Exa API key: ``SOURCES__EXA__API_KEY``, ``[sources.exa] api_key`` in
            ``.dlt/secrets.toml``, else the ``EXA_API_KEY`` environment variable.
        base_url: API root; ``/websets/v0/...`` is appended. Plain http only on loopback.
        page_size: imports per request, 1-200; 200 means the fewest requests.
        initial_updated_at: backfill start: only imports updated at or after it are loaded
            (older ones are never counted as deleted either).
        deletions: imports deleted in Exa: ``soft`` (keep the row, stamp
            ``_exa_deleted_at``), ``hard`` (delete the row) or ``off``. Written in the same
            load package as the changed rows, after a complete scan only.
        max_pages: a scan still paging after this many pages fails (and deletes nothing): an
            API that answers ``hasMore: true`` with a fresh cursor forever would otherwise
            never end.
        max_seconds: the same bound in wall-clock seconds.

    Returns:
        The ``imports`` resource.

    Raises:
        ExaConfigError: no key, or an invalid option (checked before any request).
    """
    key = require_api_key(api_key)
    base_url = validate_base_url(base_url)
    validate_page_size(page_size)
    policy = validate_policy(deletions)
    since = parse_timestamp(initial_updated_at) if initial_updated_at else None
    client = ExaRESTClient(base_url, key, max_pages=max_pages, max_seconds=max_seconds)
    resource: DltResource = dlt.resource(
        _imports,
        name=settings.IMPORTS_TABLE,
        primary_key="id",
        # "deduplicated": the scan lists each import once; if it ever meets one twice, it marks
        # its load for deduplication (exa_source.sync.Scan._duplicates)
        write_disposition={
            "disposition": "merge",
            "strategy": "delete-insert",
            "deduplicated": True,
        },
        columns=column_hints(hard_delete=policy == "hard"),
        # New API fields add columns; a type change fails the run at extract, before anything
        # is written. With the default ("evolve"), dlt retypes the column in its schema only,
        # and the load then fails on the destination (PostgreSQL: retried as a transient
        # error, leaving a pending package that blocks later runs).
        schema_contract={"tables": "evolve", "columns": "evolve", "data_type": "freeze"},
    )(client, page_size, policy, since)
    return resource
