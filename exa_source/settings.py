"""Constants of the Exa Websets API and of the connector's defaults.

Every number that describes the API cites ``docs/exa-api.md``; every default that is a choice
of ours says why in a comment.
"""

from __future__ import annotations

from typing import Final

#: Where the real API lives; every Websets path starts with ``/websets/v0/``
#: (``docs/exa-api.md`` §1).
DEFAULT_BASE_URL: Final = "https://api.exa.ai"
#: The imports list endpoint, relative to the base URL (``docs/exa-api.md`` §3.1).
IMPORTS_PATH: Final = "/websets/v0/imports"
#: The websets list endpoint; a webset's items are at ``{WEBSETS_PATH}/{id}/items``
#: (``docs/exa-api.md`` §4.1). Searches and enrichments have no list endpoint: they come
#: embedded in each webset.
WEBSETS_PATH: Final = "/websets/v0/websets"
#: The event feed, the only list with a time filter (``createdAfter``, inclusive; §4.2).
EVENTS_PATH: Final = "/websets/v0/events"
#: Monitors (scheduled searches); a monitor's runs are at ``{MONITORS_PATH}/{id}/runs``.
MONITORS_PATH: Final = "/websets/v0/monitors"
#: Webhooks; a webhook's delivery attempts are at ``{WEBHOOKS_PATH}/{id}/attempts``.
WEBHOOKS_PATH: Final = "/websets/v0/webhooks"
#: Header that carries the API key (``docs/exa-api.md`` §1). The SDKs never send anything else.
API_KEY_HEADER: Final = "x-api-key"

#: ``limit`` accepts 1-200 on ``GET /v0/imports`` (``docs/exa-api.md`` §3.1).
MIN_PAGE_SIZE: Final = 1
MAX_PAGE_SIZE: Final = 200
#: The API's own default is 25; we ask for the maximum: 8x fewer requests for a full scan,
#: and a full scan happens on every run because the API has no ``updatedAt`` filter.
DEFAULT_PAGE_SIZE: Final = MAX_PAGE_SIZE

#: ``limit`` of the websets and items lists: 1-100 (``docs/exa-api.md`` §4.1); the events list
#: takes 1-200. The maximum each: fewest requests.
WEBSETS_PAGE_SIZE: Final = 100
ITEMS_PAGE_SIZE: Final = 100
EVENTS_PAGE_SIZE: Final = 200
#: Monitors, webhooks and webhook attempts take 1-200 (§4.1). A monitor's runs document no
#: query parameter at all (the reply pages anyway): the connector sends only the cursor.
MONITORS_PAGE_SIZE: Final = 200
WEBHOOKS_PAGE_SIZE: Final = 200
ATTEMPTS_PAGE_SIZE: Final = 200

#: The event types that say an item changed (§4.2). Nothing announces an item's deletion, nor
#: the pending results an enrichment added to every item: see ``ITEMS_RECONCILE_DAYS``.
ITEM_EVENT_TYPES: Final = ("webset.item.created", "webset.item.enriched")
#: Events are kept 60 days (§4.2). A run whose last event read is older than this (less a day
#: of margin for clocks) cannot trust the feed and scans every webset's items whole.
EVENT_RETENTION_DAYS: Final = 60
EVENT_RETENTION_MARGIN_DAYS: Final = 1
#: The event read starts this long before the newest event the previous run saw: events are
#: stamped by many servers, and one stamped a little earlier may be listed a little later.
#: Events whose item is already in the table at that version cost nothing.
EVENT_OVERLAP_SECONDS: Final = 600.0
#: A webhook's attempts are listed newest first with no time filter: each run reads them back
#: until a page reaches this long before the newest attempt the table holds for that webhook.
#: Attempts re-read in the overlap are already stored and are not written again.
ATTEMPT_OVERLAP_SECONDS: Final = 600.0
#: A webset's items are scanned whole (which also finds deleted items: the API announces no
#: item deletion) at least this often; between, only websets with item events are re-read.
#: 0 scans every webset whole on every run.
ITEMS_RECONCILE_DAYS: Final = 7.0
#: Websets whose items are read at once (each webset's pages are one cursor chain). Each
#: request retries 429s after the server's Retry-After on its own.
DEFAULT_CONCURRENCY: Final = 4
MAX_CONCURRENCY: Final = 32

#: The field that says when an import last changed (``docs/exa-api.md`` §4.4).
CURSOR_FIELD: Final = "updatedAt"

#: dlt names. The pipeline and dataset share a name; the DuckDB *file* must not (dlt fails with
#: "Ambiguous reference to catalog or schema" when a DuckDB file is named like its dataset).
SOURCE_NAME: Final = "exa"
PIPELINE_NAME: Final = "exa_websets"
DATASET_NAME: Final = "exa_websets"
DEFAULT_DUCKDB_FILE: Final = "exa.duckdb"
IMPORTS_TABLE: Final = "imports"
WEBSETS_TABLE: Final = "websets"
SEARCHES_TABLE: Final = "webset_searches"
ENRICHMENTS_TABLE: Final = "webset_enrichments"
ITEMS_TABLE: Final = "webset_items"
MONITORS_TABLE: Final = "monitors"
MONITOR_RUNS_TABLE: Final = "monitor_runs"
WEBHOOKS_TABLE: Final = "webhooks"
WEBHOOK_ATTEMPTS_TABLE: Final = "webhook_attempts"
EVENTS_TABLE: Final = "events"
#: Every resource of the source, in the order they run; the default selection.
RESOURCES: Final = (
    IMPORTS_TABLE,
    WEBSETS_TABLE,
    SEARCHES_TABLE,
    ENRICHMENTS_TABLE,
    ITEMS_TABLE,
    MONITORS_TABLE,
    MONITOR_RUNS_TABLE,
    WEBHOOKS_TABLE,
    WEBHOOK_ATTEMPTS_TABLE,
    EVENTS_TABLE,
)

#: Column stamped when an import disappears from the API (soft-delete policy); null while live.
DELETED_AT_COLUMN: Final = "_exa_deleted_at"
#: dlt's column naming the load that wrote a row. dlt adds it to Arrow tables only when a
#: normalizer setting is on; the source stamps it itself so that every row has it.
LOAD_ID_COLUMN: Final = "_dlt_load_id"
#: What to do with imports deleted in Exa: "soft" keeps the row and stamps DELETED_AT_COLUMN
#: (history survives, BI filters on it), "hard" deletes the row, "off" does nothing.
DEFAULT_DELETIONS: Final = "soft"

#: Memory cap of the embedded DuckDB while dlt loads into it (it spills to disk past it). Left to
#: itself DuckDB takes up to 80% of RAM: a 1M-import merge peaked at 674 MB in our process,
#: 517 MB with this cap, and shared Airflow workers need bounded memory. Override with the env
#: variable below ("" = DuckDB's own default).
DUCKDB_MEMORY_LIMIT: Final = "256MB"
DUCKDB_MEMORY_LIMIT_ENV: Final = "EXA_DUCKDB_MEMORY_LIMIT"
#: How long a run waits for readers (a BI tool) to release the DuckDB file before failing, in
#: seconds. A reader that re-opens the file every 50 ms lets a writer in within a second or two;
#: a minute covers a long query without letting a scheduled run hang.
DUCKDB_LOCK_WAIT_SECONDS: Final = 60.0
DUCKDB_LOCK_WAIT_ENV: Final = "EXA_DUCKDB_LOCK_WAIT_SECONDS"

#: Environment variable many Exa users already have (the SDKs read it too).
API_KEY_ENV: Final = "EXA_API_KEY"
#: Where a missing key can be set, for the error raised before any request.
NO_KEY_MESSAGE: Final = (
    "No Exa API key. Set one of: SOURCES__EXA__API_KEY, EXA_API_KEY, or api_key under"
    " [sources.exa] in .dlt/secrets.toml (see .dlt/secrets.toml.example). Without a key,"
    " `exa-source demo` runs against the bundled emulator."
)

#: Log a progress line at most this often during a long scan, in seconds.
PROGRESS_EVERY_SECONDS: Final = 5.0

#: Pages fetched ahead of the one being converted (a background thread; see helpers.pages).
PAGES_AHEAD: Final = 2

#: Rows gathered into one Arrow table before it is handed to dlt. dlt computes the table schema
#: once per Arrow item, ~4 ms each: per 200-row page that was most of the extract time. 10,000
#: rows (~4 MB) keeps that negligible and memory flat.
ROWS_PER_TABLE: Final = 10_000

#: Bounds on one scan, so that every run ends even when the API pages forever (``hasMore: true``
#: with a fresh cursor each time leaves no repeated cursor to catch). Set per run with the
#: source's ``max_pages`` / ``max_seconds``. 1,000,000 pages is 200 million imports at the
#: default page size (and still a million at ``page_size=1``), far beyond any team's imports; it
#: matters when the server answers in milliseconds (a proxy or stand-in looping), where 6 hours
#: would be tens of millions of pages. 6 hours is ~8x a full scan of a million imports (5,000
#: pages at ~0.5 s each) and still ends a runaway run well within a daily schedule.
MAX_PAGES: Final = 1_000_000
MAX_SECONDS: Final = 6 * 60 * 60.0
#: Where a scan stopped by a bound tells the user to raise it (the source's options).
MAX_PAGES_HINT: Final = "max_pages (SOURCES__EXA__MAX_PAGES)"
MAX_SECONDS_HINT: Final = "max_seconds (SOURCES__EXA__MAX_SECONDS)"
#: A body-reading watchdog thread exits after this many idle seconds (restarted on demand).
BODY_WATCHDOG_IDLE_SECONDS: Final = 30.0
