"""The warehouse layer on top of the ``imports`` table: BI views, data dictionary, report queries.

One place for each thing:

* :data:`VIEWS` holds the SQL of the three BI views, written once for every engine.
  DuckDB (2.x) accepts PostgreSQL's ``percentile_cont(0.5) within group (order by ...)`` and
  ``timestamptz at time zone 'UTC'``, so no dialect switch is needed; the only per-engine part is
  identifier quoting, which dlt's SQL client does. Every output column is cast to an explicit
  type so both engines return the same values *and* the same types.
* :func:`create_views` (re)creates them in the pipeline's dataset; ``run_load`` calls it after
  every successful load.
* :func:`data_dictionary` renders the markdown dictionary from a dlt schema plus the meanings
  and examples declared in :mod:`exa_source.schema` and :data:`VIEW_COLUMNS`.
* :data:`REPORT_QUERIES` and :func:`summary` are what ``exa-source report`` prints and charts;
  :func:`render_report` is the demo's short report.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, cast

import dlt
from dlt.common.destination.typing import PreparedTableSchema
from dlt.common.schema import Schema
from dlt.common.schema.typing import TColumnSchema, TTableSchema
from dlt.common.schema.utils import has_table_seen_data
from dlt.destinations.exceptions import DatabaseException

from exa_source import settings
from exa_source.schema import TABLES, TableSpec

logger = logging.getLogger(__name__)

#: Soft-delete column of deletion detection (null for live rows). When the ``imports`` table
#: has it, ``imports_current`` keeps only the rows where it is null.
DELETED_AT_COLUMN = settings.DELETED_AT_COLUMN

CURRENT_VIEW = "imports_current"
STATUS_VIEW = "import_status_summary"
DAILY_VIEW = "import_daily"

DICTIONARY_START = "<!-- dictionary:start -->"
DICTIONARY_END = "<!-- dictionary:end -->"

# --------------------------------------------------------------------------------- views SQL
# Placeholders: {imports}, {current}, {summary}, {daily} are qualified names; {columns} is the
# quoted column list of ``imports`` (dlt internals and the soft-delete column excluded).

#: One row per id (the newest ``updated_at`` wins). The merge on ``id`` already keeps one row
#: per id; the ranking makes the view's promise hold whatever the write disposition.
#: Deletion detection: ``{live_filter}`` becomes ``and "_exa_deleted_at" is null`` as soon as
#: the table has that column, so a soft-deleted import disappears from every view (the newest
#: row of an id decides; hard-deleted rows are simply absent).
CURRENT_SELECT = """
select {columns}
from (
    select {columns}{deleted_at},
           row_number() over (partition by "id" order by "updated_at" desc) as exa_row_in_id
    from {imports}
) as ranked
where exa_row_in_id = 1{live_filter}
"""
CURRENT_SQL = "create or replace view {current} as" + CURRENT_SELECT

#: PostgreSQL records which views read a table and refuses ``drop table`` while they exist, so
#: ``dlt pipeline exa_websets drop imports`` (and dlt's refresh) would fail after dlt had already
#: reset its state. There ``imports_current`` reads the table through a SQL function: a function
#: body written as a string is not tracked as a dependency, and PostgreSQL inlines a
#: ``language sql stable`` set-returning function into the calling query, so filters on the view
#: still reach the table. DuckDB does not track view dependencies at all.
CURRENT_FUNCTION = "_exa_imports_current"
CURRENT_SQL_POSTGRES = (
    """
create or replace function {function}() returns table({signature})
language sql stable as $exa_source$"""
    + CURRENT_SELECT
    + """$exa_source$;
create or replace view {current} as select * from {function}()
"""
)

#: Live imports and their records by status and entity type.
STATUS_SQL = """
create or replace view {summary} as
select "status",
       "entity__type" as entity_type,
       cast(count(*) as bigint) as imports,
       cast(sum("count") as bigint) as records
from {current}
group by "status", "entity__type"
"""

#: Per UTC day: imports created, completed and failed, and the median time to complete.
#: The API has no ``completedAt``: an import's completion time is its ``updated_at`` while its
#: status is ``completed`` (the final transition bumps ``updatedAt``, ``docs/exa-api.md`` §6).
#: A later PATCH of title/metadata bumps it again, so for edited imports this is an upper bound.
#: Failures are dated by ``failed_at`` (``updated_at`` if absent). Median in exact
#: milliseconds, shown in seconds: a median is an integer or a half millisecond, so 4 decimals
#: are exact on both engines.
DAILY_SQL = """
create or replace view {daily} as
with events as (
    select cast("created_at" at time zone 'UTC' as date) as day,
           1 as created, 0 as completed, 0 as failed,
           cast(null as bigint) as ms_to_complete
    from {current}
    union all
    select cast("updated_at" at time zone 'UTC' as date),
           0, 1, 0,
           cast(extract(epoch from ("updated_at" - "created_at")) * 1000 as bigint)
    from {current}
    where "status" = 'completed'
    union all
    select cast(coalesce("failed_at", "updated_at") at time zone 'UTC' as date),
           0, 0, 1,
           cast(null as bigint)
    from {current}
    where "status" = 'failed'
)
select day,
       cast(sum(created) as bigint) as created,
       cast(sum(completed) as bigint) as completed,
       cast(sum(failed) as bigint) as failed,
       cast(percentile_cont(0.5) within group (order by ms_to_complete) / 1000
            as numeric(18, 4)) as median_seconds_to_complete
from events
group by day
"""

# ------------------------------------------------------------- views of websets and items
# Placeholders: {items}, {websets}, {enrichments} and the view's own name {view} are qualified
# names. JSON columns are unnested per engine: DuckDB's
# json_extract on '$[*]' and PostgreSQL's jsonb_array_elements; every output column is cast to
# the same type on both engines. Soft-deleted rows (``_exa_deleted_at`` set) are left out.

#: Live items with their webset's title and the typed fields BI filters on.
ITEMS_CURRENT_VIEW = "webset_items_current"
#: One row per item and enrichment result, with the enrichment's title and format.
ITEM_ENRICHMENTS_VIEW = "webset_item_enrichments"
#: One row per item and criterion evaluation.
ITEM_EVALUATIONS_VIEW = "webset_item_evaluations"

ITEMS_CURRENT_SQL = """
create or replace view {view} as
select i."id" as item_id,
       i."webset_id",
       cast(w."title" as text) as webset_title,
       i."entity_type",
       cast(coalesce(i."name", i."title") as text) as name_or_title,
       i."url",
       i."description",
       i."position",
       i."company_name",
       i."location",
       i."industry",
       i."employees",
       i."source",
       i."source_id",
       i."created_at",
       i."updated_at"
from {items} as i
left join {websets} as w on w."id" = i."webset_id"
where i."_exa_deleted_at" is null
"""

_ENRICHMENT_COLUMNS = """
select i."id" as item_id,
       i."webset_id",
       cast(({enrichment_id}) as text) as enrichment_id,
       cast(e."title" as text) as title,
       cast(coalesce(({format}), e."format") as text) as format,
       cast(({status}) as text) as status,
       cast({result} as text) as result,
       cast(({reasoning}) as text) as reasoning
"""
ITEM_ENRICHMENTS_DUCKDB = (
    "create or replace view {view} as"
    + _ENRICHMENT_COLUMNS.format(
        enrichment_id="r ->> 'enrichmentId'",
        format="r ->> 'format'",
        status="r ->> 'status'",
        result="case when json_array_length(r, '$.result') > 0 then"
        " array_to_string(json_extract_string(r, '$.result[*]'), ', ') end",
        reasoning="r ->> 'reasoning'",
    )
    + """from {items} as i
cross join unnest(json_extract(i."enrichments", '$[*]')) as t(r)
left join {enrichments} as e on e."id" = (r ->> 'enrichmentId')
where i."_exa_deleted_at" is null
"""
)
ITEM_ENRICHMENTS_POSTGRES = (
    "create or replace view {view} as"
    + _ENRICHMENT_COLUMNS.format(
        enrichment_id="r ->> 'enrichmentId'",
        format="r ->> 'format'",
        status="r ->> 'status'",
        result="(select string_agg(v, ', ') from jsonb_array_elements_text(case when"
        " jsonb_typeof(r -> 'result') = 'array' then r -> 'result' end) as v)",
        reasoning="r ->> 'reasoning'",
    )
    + """from {items} as i
cross join lateral jsonb_array_elements(case when jsonb_typeof(i."enrichments") = 'array'
    then i."enrichments" else '[]'::jsonb end) as r
left join {enrichments} as e on e."id" = (r ->> 'enrichmentId')
where i."_exa_deleted_at" is null
"""
)
_EVALUATION_COLUMNS = """
select i."id" as item_id,
       i."webset_id",
       cast((r ->> 'criterion') as text) as criterion,
       cast((r ->> 'satisfied') as text) as satisfied,
       cast((r ->> 'reasoning') as text) as reasoning
"""
ITEM_EVALUATIONS_DUCKDB = (
    "create or replace view {view} as"
    + _EVALUATION_COLUMNS
    + """from {items} as i
cross join unnest(json_extract(i."evaluations", '$[*]')) as t(r)
where i."_exa_deleted_at" is null
"""
)
ITEM_EVALUATIONS_POSTGRES = (
    "create or replace view {view} as"
    + _EVALUATION_COLUMNS
    + """from {items} as i
cross join lateral jsonb_array_elements(case when jsonb_typeof(i."evaluations") = 'array'
    then i."evaluations" else '[]'::jsonb end) as r
where i."_exa_deleted_at" is null
"""
)

#: Per live monitor and UTC day of its runs' creation: runs by status, plus the monitor's last
#: failure (the same on each of its rows). A monitor without runs has one row, day null.
MONITOR_HEALTH_VIEW = "monitor_run_health"
#: Per live webhook: delivery attempts, failures, failure rate, last failure, status codes.
WEBHOOK_HEALTH_VIEW = "webhook_delivery_health"

MONITOR_HEALTH_SQL = """
create or replace view {view} as
with runs as (
    select "id", "monitor_id", "status", "failed_at", "failed_reason", "updated_at",
           cast("created_at" at time zone 'UTC' as date) as day
    from {runs}
    where "_exa_deleted_at" is null
),
daily as (
    select "monitor_id", day,
           count(*) as runs,
           count(*) filter (where "status" = 'created') as created,
           count(*) filter (where "status" = 'running') as running,
           count(*) filter (where "status" = 'completed') as completed,
           count(*) filter (where "status" = 'canceled') as canceled,
           count(*) filter (where "status" = 'failed') as failed
    from runs
    group by "monitor_id", day
),
failures as (
    select "monitor_id", coalesce("failed_at", "updated_at") as failed_at, "failed_reason",
           row_number() over (
               partition by "monitor_id"
               order by coalesce("failed_at", "updated_at") desc, "id" desc
           ) as exa_rank
    from runs
    where "status" = 'failed'
)
select cast(m."id" as text) as monitor_id,
       cast(m."webset_id" as text) as webset_id,
       cast(m."status" as text) as monitor_status,
       cast(m."cadence__cron" as text) as cadence_cron,
       d.day,
       cast(coalesce(d.runs, 0) as bigint) as runs,
       cast(coalesce(d.created, 0) as bigint) as created,
       cast(coalesce(d.running, 0) as bigint) as running,
       cast(coalesce(d.completed, 0) as bigint) as completed,
       cast(coalesce(d.canceled, 0) as bigint) as canceled,
       cast(coalesce(d.failed, 0) as bigint) as failed,
       cast(f.failed_at as timestamp with time zone) as last_failed_at,
       cast(f."failed_reason" as text) as last_failed_reason
from {monitors} as m
left join daily as d on d."monitor_id" = m."id"
left join failures as f on f."monitor_id" = m."id" and f.exa_rank = 1
where m."_exa_deleted_at" is null
"""

WEBHOOK_HEALTH_SQL = """
create or replace view {view} as
with attempts as (
    select "id", "webhook_id", "successful", "response_status_code", "response_body",
           "attempted_at"
    from {attempts}
    where "_exa_deleted_at" is null
),
totals as (
    select "webhook_id",
           count(*) as attempts,
           count(*) filter (where not "successful") as failed,
           max("attempted_at") as last_attempt_at,
           max(case when "successful" then "attempted_at" end) as last_success_at
    from attempts
    group by "webhook_id"
),
streaks as (
    select a."webhook_id", count(*) as failed_in_a_row
    from attempts as a
    join totals as t on t."webhook_id" = a."webhook_id"
    where not a."successful"
      and (t.last_success_at is null or a."attempted_at" > t.last_success_at)
    group by a."webhook_id"
),
codes as (
    select "webhook_id",
           string_agg(
               coalesce(cast(code as text), 'none') || ': ' || cast(n as text), ', '
               order by code nulls last
           ) as status_codes
    from (
        select "webhook_id", "response_status_code" as code, count(*) as n
        from attempts
        group by "webhook_id", "response_status_code"
    ) as per_code
    group by "webhook_id"
),
failures as (
    select "webhook_id", "attempted_at", "response_status_code", "response_body",
           row_number() over (
               partition by "webhook_id" order by "attempted_at" desc, "id" desc
           ) as exa_rank
    from attempts
    where not "successful"
)
select cast(w."id" as text) as webhook_id,
       cast(w."url" as text) as url,
       cast(w."status" as text) as webhook_status,
       cast(coalesce(t.attempts, 0) as bigint) as attempts,
       cast(coalesce(t.failed, 0) as bigint) as failed,
       cast(t.failed as double precision) / nullif(t.attempts, 0) as failure_rate,
       cast(coalesce(s.failed_in_a_row, 0) as bigint) as failed_since_last_success,
       cast(t.last_attempt_at as timestamp with time zone) as last_attempt_at,
       cast(t.last_success_at as timestamp with time zone) as last_success_at,
       cast(f."attempted_at" as timestamp with time zone) as last_failure_at,
       cast(f."response_status_code" as bigint) as last_failure_status_code,
       cast(substr(f."response_body", 1, 200) as text) as last_failure_body,
       cast(c.status_codes as text) as status_codes
from {webhooks} as w
left join totals as t on t."webhook_id" = w."id"
left join streaks as s on s."webhook_id" = w."id"
left join codes as c on c."webhook_id" = w."id"
left join failures as f on f."webhook_id" = w."id" and f.exa_rank = 1
where w."_exa_deleted_at" is null
"""

_TZ = "timestamp with time zone"
#: PostgreSQL: the item views read each table through a SQL function, like ``imports_current``
#: (see :data:`CURRENT_FUNCTION`): a view that reads a table directly would make PostgreSQL
#: refuse ``dlt pipeline exa_websets drop webset_items`` and dlt's refresh. Placeholder ->
#: (function, table, the columns the views read with their types).
ITEM_FUNCTIONS: dict[str, tuple[str, str, tuple[tuple[str, str], ...]]] = {
    "items": (
        "_exa_webset_items",
        settings.ITEMS_TABLE,
        (
            *((c, "text") for c in ("id", "webset_id", "entity_type", "name", "title", "url")),
            *((c, "text") for c in ("description", "position", "company_name", "location")),
            ("industry", "text"),
            ("employees", "bigint"),
            ("source", "text"),
            ("source_id", "text"),
            ("created_at", _TZ),
            ("updated_at", _TZ),
            ("evaluations", "jsonb"),
            ("enrichments", "jsonb"),
            (settings.DELETED_AT_COLUMN, _TZ),
        ),
    ),
    "websets": ("_exa_websets", settings.WEBSETS_TABLE, (("id", "text"), ("title", "text"))),
    "enrichments": (
        "_exa_webset_enrichments",
        settings.ENRICHMENTS_TABLE,
        (("id", "text"), ("title", "text"), ("format", "text")),
    ),
}

#: Views of the items: name -> (DuckDB SQL, PostgreSQL SQL); other engines get the DuckDB SQL.
ITEM_VIEWS: dict[str, tuple[str, str]] = {
    ITEMS_CURRENT_VIEW: (ITEMS_CURRENT_SQL, ITEMS_CURRENT_SQL),
    ITEM_ENRICHMENTS_VIEW: (ITEM_ENRICHMENTS_DUCKDB, ITEM_ENRICHMENTS_POSTGRES),
    ITEM_EVALUATIONS_VIEW: (ITEM_EVALUATIONS_DUCKDB, ITEM_EVALUATIONS_POSTGRES),
}

#: The health views' tables, read through functions on PostgreSQL like the item views.
HEALTH_FUNCTIONS: dict[str, tuple[str, str, tuple[tuple[str, str], ...]]] = {
    "monitors": (
        "_exa_monitors",
        settings.MONITORS_TABLE,
        (
            *((c, "text") for c in ("id", "webset_id", "status", "cadence__cron")),
            (settings.DELETED_AT_COLUMN, _TZ),
        ),
    ),
    "runs": (
        "_exa_monitor_runs",
        settings.MONITOR_RUNS_TABLE,
        (
            *((c, "text") for c in ("id", "monitor_id", "status", "failed_reason")),
            *((c, _TZ) for c in ("failed_at", "created_at", "updated_at")),
            (settings.DELETED_AT_COLUMN, _TZ),
        ),
    ),
    "webhooks": (
        "_exa_webhooks",
        settings.WEBHOOKS_TABLE,
        (
            *((c, "text") for c in ("id", "url", "status")),
            (settings.DELETED_AT_COLUMN, _TZ),
        ),
    ),
    "attempts": (
        "_exa_webhook_attempts",
        settings.WEBHOOK_ATTEMPTS_TABLE,
        (
            ("id", "text"),
            ("webhook_id", "text"),
            ("successful", "boolean"),
            ("response_status_code", "bigint"),
            ("response_body", "text"),
            ("attempted_at", _TZ),
            (settings.DELETED_AT_COLUMN, _TZ),
        ),
    ),
}


@dataclass(frozen=True)
class ViewGroup:
    """Views over some tables, made once their main table has data.

    Attributes:
        table: the main table: no views until it has received data.
        functions: placeholder -> (PostgreSQL function, table, its columns and types). On
            PostgreSQL the views read each table through its function, so that dropping a
            table is never refused because of a view; a table other than the main one that
            does not exist yet stands in as no rows.
        views: view name -> (DuckDB SQL, PostgreSQL SQL), in creation order.
        meanings: one line per view for the data dictionary.
        columns: the views' columns for the data dictionary.
    """

    table: str
    functions: dict[str, tuple[str, str, tuple[tuple[str, str], ...]]]
    views: dict[str, tuple[str, str]]
    meanings: dict[str, str]
    columns: dict[str, tuple[ViewColumn, ...]]

    def statements(self, qualify: Any, postgres: bool, present: set[str]) -> list[str]:
        """The ``create or replace`` statements of the group's views, for one engine.

        Args:
            qualify: ``name -> qualified name``.
            postgres: PostgreSQL SQL instead of DuckDB's.
            present: the tables that exist (see :attr:`functions`).
        """
        names: dict[str, str] = {}
        statements: list[str] = []
        for placeholder, (function, table, columns) in self.functions.items():
            if table not in present and table != self.table:
                names[placeholder] = _no_rows(columns)
            elif postgres:
                signature = ", ".join(f'"{c}" {kind}' for c, kind in columns)
                selected = ", ".join(f'"{c}"' for c, _ in columns)
                statements.append(
                    f"create or replace function {qualify(function)}() returns"
                    f" table({signature}) language sql stable as $exa_source$ select {selected}"
                    f" from {qualify(table)} $exa_source$"
                )
                names[placeholder] = f"{qualify(function)}()"
            else:
                names[placeholder] = qualify(table)
        return statements + [
            sql[postgres].format(view=qualify(view), **names).strip()
            for view, sql in self.views.items()
        ]


def _no_rows(columns: Sequence[tuple[str, str]]) -> str:
    """A subquery with a table's columns and no row (a table that does not exist yet)."""
    selected = ", ".join(f'cast(null as {kind}) as "{name}"' for name, kind in columns)
    return f"(select {selected} where 1 = 0)"


#: View name -> SQL, in creation order (later views read earlier ones).
#: View name -> SQL, in creation order (later views read earlier ones).
VIEWS: dict[str, str] = {CURRENT_VIEW: CURRENT_SQL, STATUS_VIEW: STATUS_SQL, DAILY_VIEW: DAILY_SQL}


@dataclass(frozen=True)
class ViewColumn:
    """One column of a BI view, for the data dictionary (and checked against the engines).

    Attributes:
        name: column name.
        type: SQL type, the same on DuckDB and PostgreSQL.
        meaning: one line for the data dictionary.
        example: an example value.
    """

    name: str
    type: str
    meaning: str
    example: str


#: Declared columns of the aggregate views (``imports_current`` has the columns of ``imports``).
VIEW_COLUMNS: dict[str, tuple[ViewColumn, ...]] = {
    STATUS_VIEW: (
        ViewColumn("status", "text", "Import status.", "completed"),
        ViewColumn("entity_type", "text", "Entity type (`entity__type`).", "company"),
        ViewColumn("imports", "bigint", "Live imports with this status and type.", "32011"),
        ViewColumn("records", "bigint", "Sum of `count` (records in their files).", "80113470"),
    ),
    DAILY_VIEW: (
        ViewColumn("day", "date", "UTC calendar day.", "2026-03-14"),
        ViewColumn("created", "bigint", "Imports created that day.", "274"),
        ViewColumn(
            "completed",
            "bigint",
            "Imports completed that day (`updated_at` of `completed` imports).",
            "219",
        ),
        ViewColumn("failed", "bigint", "Imports failed that day (`failed_at`).", "19"),
        ViewColumn(
            "median_seconds_to_complete",
            "numeric(18,4)",
            "Median `updated_at - created_at` of the imports completed that day, in seconds;"
            " null when none completed.",
            "301.2345",
        ),
    ),
}

#: Declared columns of the item views.
ITEM_VIEW_COLUMNS: dict[str, tuple[ViewColumn, ...]] = {
    ITEMS_CURRENT_VIEW: (
        ViewColumn("item_id", "text", "Item id.", "witem_01k9x2y3z4a5b6c7d8e9f0g1h2"),
        ViewColumn("webset_id", "text", "Its webset.", "webset_01k9x2y3z4a5b6c7d8e9f0g1h2"),
        ViewColumn("webset_title", "text", "The webset's title.", "Fintech CTOs in Europe"),
        ViewColumn("entity_type", "text", "person, company, article, ...", "person"),
        ViewColumn(
            "name_or_title", "text", "Name of a person or company, else the title.", "Ada Berg"
        ),
        ViewColumn("url", "text", "The item's URL.", "https://www.linkedin.com/in/ada-berg"),
        ViewColumn(
            "…",
            "",
            "`description`, `position`, `company_name`, `location`, `industry`,"
            " `employees`, `source`, `source_id`, `created_at`, `updated_at` as in"
            " `webset_items`.",
            "",
        ),
    ),
    ITEM_ENRICHMENTS_VIEW: (
        ViewColumn("item_id", "text", "Item id.", "witem_01k9x2y3z4a5b6c7d8e9f0g1h2"),
        ViewColumn("webset_id", "text", "Its webset.", "webset_01k9x2y3z4a5b6c7d8e9f0g1h2"),
        ViewColumn(
            "enrichment_id", "text", "The enrichment.", "wenrich_01k9x2y3z4a5b6c7d8e9f0g1h2"
        ),
        ViewColumn("title", "text", "The enrichment's title.", "Annual revenue in USD"),
        ViewColumn("format", "text", "text, date, number, options, email, phone or url.", "number"),
        ViewColumn("status", "text", "pending, completed or canceled.", "completed"),
        ViewColumn("result", "text", "The result values joined by `, `; null if none.", "1715247"),
        ViewColumn("reasoning", "text", "Why Exa found this result.", "Found on the website."),
    ),
    ITEM_EVALUATIONS_VIEW: (
        ViewColumn("item_id", "text", "Item id.", "witem_01k9x2y3z4a5b6c7d8e9f0g1h2"),
        ViewColumn("webset_id", "text", "Its webset.", "webset_01k9x2y3z4a5b6c7d8e9f0g1h2"),
        ViewColumn("criterion", "text", "The search criterion.", "Raised a Series A"),
        ViewColumn("satisfied", "text", "yes, no or unclear.", "yes"),
        ViewColumn("reasoning", "text", "Why.", "The source states that it raised a Series A."),
    ),
}

ITEM_VIEW_MEANINGS: dict[str, str] = {
    ITEMS_CURRENT_VIEW: "Live items (not deleted in Exa) with their webset's title and the"
    " typed fields BI filters on.",
    ITEM_ENRICHMENTS_VIEW: "One row per live item and enrichment result, with the"
    " enrichment's title and format (from `webset_items.enrichments`).",
    ITEM_EVALUATIONS_VIEW: "One row per live item and criterion evaluation (from"
    " `webset_items.evaluations`).",
}

VIEW_MEANINGS: dict[str, str] = {
    CURRENT_VIEW: "Live imports, one row per id; same columns as `imports` (dlt internals and"
    " the soft-delete column excluded).",
    STATUS_VIEW: "Live imports counted by status and entity type.",
    DAILY_VIEW: "Created, completed and failed imports per UTC day, and the median time to"
    " complete. Completion time = `updated_at` of `completed` imports (the API has no"
    " `completedAt`; an edit after completion moves it).",
}


_MONITOR_ID = ViewColumn("monitor_id", "text", "Monitor id.", "monitor_01k9x2y3z4a5b6c7d8e9f0g1h2")
_WEBHOOK_ID = ViewColumn("webhook_id", "text", "Webhook id.", "webhook_01k9x2y3z4a5b6c7d8e9f0g1h2")

#: Declared columns of the health views.
HEALTH_VIEW_COLUMNS: dict[str, tuple[ViewColumn, ...]] = {
    MONITOR_HEALTH_VIEW: (
        _MONITOR_ID,
        ViewColumn("webset_id", "text", "Its webset.", "webset_01k9x2y3z4a5b6c7d8e9f0g1h2"),
        ViewColumn("monitor_status", "text", "enabled or disabled.", "enabled"),
        ViewColumn("cadence_cron", "text", "Its cron expression.", "0 9 * * *"),
        ViewColumn(
            "day", "date", "UTC day the runs were created; null for a monitor with none.", ""
        ),
        ViewColumn("runs", "bigint", "Runs created that day.", "1"),
        *(
            ViewColumn(status, "bigint", f"Of those, runs now `{status}`.", "0")
            for status in ("created", "running", "completed", "canceled", "failed")
        ),
        ViewColumn(
            "last_failed_at",
            _TZ,
            "The monitor's latest failed run (`failed_at`); the same on each of its rows.",
            "2026-12-04 09:01:00+00",
        ),
        ViewColumn("last_failed_reason", "text", "Why that run failed.", "Search failed: timeout"),
    ),
    WEBHOOK_HEALTH_VIEW: (
        _WEBHOOK_ID,
        ViewColumn("url", "text", "Where it posts.", "https://hooks.example.com/exa"),
        ViewColumn("webhook_status", "text", "active or inactive.", "active"),
        ViewColumn("attempts", "bigint", "Delivery attempts loaded.", "240"),
        ViewColumn("failed", "bigint", "Of those, unsuccessful.", "12"),
        ViewColumn(
            "failure_rate",
            "double precision",
            "failed / attempts (0-1); null without attempts.",
            "0.05",
        ),
        ViewColumn(
            "failed_since_last_success",
            "bigint",
            "Failed attempts after the latest successful one (all of them if none succeeded):"
            " alert on this, it does not go stale like the all-time rate.",
            "3",
        ),
        ViewColumn("last_attempt_at", _TZ, "Latest attempt.", "2026-12-05 09:04:11+00"),
        ViewColumn("last_success_at", _TZ, "Latest successful attempt.", "2026-12-05 09:04:11+00"),
        ViewColumn("last_failure_at", _TZ, "Latest failed attempt.", "2026-12-04 18:00:02+00"),
        ViewColumn("last_failure_status_code", "bigint", "Its HTTP status code.", "503"),
        ViewColumn(
            "last_failure_body", "text", "Its reply body (first 200 characters).", "timeout"
        ),
        ViewColumn(
            "status_codes",
            "text",
            "Attempts per receiver status code, lowest code first.",
            "200: 228, 503: 12",
        ),
    ),
}

#: The view groups, each made once its main table has data.
ITEM_GROUP = ViewGroup(
    settings.ITEMS_TABLE, ITEM_FUNCTIONS, ITEM_VIEWS, ITEM_VIEW_MEANINGS, ITEM_VIEW_COLUMNS
)


def _health_group(
    table: str, tables: tuple[str, str], view: str, sql: str, meaning: str
) -> ViewGroup:
    """A group of one health view over a table and its children (same SQL on every engine)."""
    return ViewGroup(
        table,
        {k: HEALTH_FUNCTIONS[k] for k in tables},
        {view: (sql, sql)},
        {view: meaning},
        {view: HEALTH_VIEW_COLUMNS[view]},
    )


MONITOR_GROUP = _health_group(
    settings.MONITORS_TABLE,
    ("monitors", "runs"),
    MONITOR_HEALTH_VIEW,
    MONITOR_HEALTH_SQL,
    "Per live monitor and UTC day: its runs by current status, and the monitor's last failure"
    " and its reason. Alert on `failed > 0` for today.",
)
WEBHOOK_GROUP = _health_group(
    settings.WEBHOOKS_TABLE,
    ("webhooks", "attempts"),
    WEBHOOK_HEALTH_VIEW,
    WEBHOOK_HEALTH_SQL,
    "Per live webhook: delivery attempts, failures, failure rate, the last failure and the"
    " receiver's status codes.",
)
VIEW_GROUPS: tuple[ViewGroup, ...] = (ITEM_GROUP, MONITOR_GROUP, WEBHOOK_GROUP)


def _imports_table(schema: Schema) -> TTableSchema | None:
    return schema.tables.get(settings.IMPORTS_TABLE)


def data_columns(table: TTableSchema) -> list[str]:
    """Return the user-facing columns of ``imports``: dlt internals and soft-delete excluded."""
    return [
        name
        for name, column in table["columns"].items()
        if not name.startswith("_dlt_") and name != DELETED_AT_COLUMN and column.get("data_type")
    ]


def view_statements(
    columns: Sequence[str],
    qualify: Any,
    quote: Any,
    has_deleted_at: bool = False,
    column_types: dict[str, str] | None = None,
) -> list[str]:
    """Return the ``create or replace`` statements of the views, in creation order.

    Args:
        columns: data columns of ``imports`` (normalized names), in table order.
        qualify: ``name -> qualified name`` (dlt's ``make_qualified_table_name``).
        quote: ``column -> quoted column`` (dlt's ``escape_column_name``).
        has_deleted_at: the table has the soft-delete column: filter deleted imports out.
        column_types: PostgreSQL only: each column's type as the table has it; then
            ``imports_current`` reads the table through :data:`CURRENT_FUNCTION`.
    """
    names = {
        "imports": qualify(settings.IMPORTS_TABLE),
        "current": qualify(CURRENT_VIEW),
        "summary": qualify(STATUS_VIEW),
        "daily": qualify(DAILY_VIEW),
        "function": qualify(CURRENT_FUNCTION),
    }
    deleted_at = quote(DELETED_AT_COLUMN)
    values = {
        "columns": ", ".join(quote(c) for c in columns),
        "deleted_at": f", {deleted_at}" if has_deleted_at else "",
        "live_filter": f"\n  and {deleted_at} is null" if has_deleted_at else "",
        "signature": ", ".join(f"{quote(c)} {(column_types or {}).get(c, '')}" for c in columns),
        **names,
    }
    views = dict(VIEWS)
    if column_types is not None:
        views[CURRENT_VIEW] = CURRENT_SQL_POSTGRES
    return [
        part.strip()
        for sql in views.values()
        for part in sql.format(**values).split(";\n")
        if part.strip()
    ]


def _postgres_column_types(client: Any, columns: Sequence[str]) -> dict[str, str]:
    """Each column's type as the PostgreSQL table has it, e.g. ``timestamp with time zone``."""
    sql = (
        "select a.attname, format_type(a.atttypid, a.atttypmod) from pg_attribute a"
        " where a.attrelid = cast(%s as regclass) and a.attnum > 0 and not a.attisdropped"
    )
    rows = client.execute_sql(sql, client.make_qualified_table_name(settings.IMPORTS_TABLE))
    types = {str(name): str(kind) for name, kind in rows or []}
    return {c: types[c] for c in columns if c in types}


def create_views(pipeline: dlt.Pipeline) -> list[str]:
    """Create or refresh the BI views in the pipeline's dataset (cheap: no data is copied).

    The views of a table are skipped (with a log line) while it has never received data: dlt
    has not created it in the destination yet.

    Returns:
        The names of the views created; empty when skipped.
    """
    created = _create_import_views(pipeline)
    for group in VIEW_GROUPS:
        created += _create_group_views(pipeline, group)
    return created


def _seen(pipeline: dlt.Pipeline, table_name: str) -> bool:
    if not pipeline.default_schema_name:
        return False
    table = pipeline.default_schema.tables.get(table_name)
    return table is not None and has_table_seen_data(table)


def _execute(client: Any, statements: list[str], postgres: bool, drop: Callable[[], None]) -> None:
    """Run view statements in one transaction; on PostgreSQL, once more after ``drop``.

    A new column (or a table that stood in as no rows and exists now) changes a function's
    result type, which PostgreSQL cannot replace in place: the views and functions are
    dropped and created again, in one transaction.
    """
    try:
        with client.begin_transaction():
            for statement in statements:
                client.execute_sql(statement)
    except DatabaseException as exc:
        if not postgres:
            raise
        logger.info("views: recreating them (%s)", str(exc).splitlines()[0])
        with client.begin_transaction():
            drop()
            for statement in statements:
                client.execute_sql(statement)


def _create_group_views(pipeline: dlt.Pipeline, group: ViewGroup) -> list[str]:
    """Create the views of ``group`` once its main table has data."""
    if not _seen(pipeline, group.table):
        return []
    present = {t for _, t, _ in group.functions.values() if _seen(pipeline, t)}
    postgres = pipeline.destination is not None and (
        pipeline.destination.destination_name == "postgres"
    )
    with pipeline.sql_client() as client:
        statements = group.statements(client.make_qualified_table_name, postgres, present)
        _execute(client, statements, postgres, lambda: _drop_group(client, postgres, group))
    logger.info("views: %s refreshed in %s", ", ".join(group.views), pipeline.dataset_name)
    return list(group.views)


def _create_import_views(pipeline: dlt.Pipeline) -> list[str]:
    """Create the views of :data:`VIEWS` once ``imports`` has data."""
    table = _imports_table(pipeline.default_schema) if pipeline.default_schema_name else None
    if table is None or not has_table_seen_data(table):
        logger.debug("views: %s has no data yet; views not created", settings.IMPORTS_TABLE)
        return []
    has_deleted_at = DELETED_AT_COLUMN in table["columns"]
    columns = data_columns(table)
    postgres = pipeline.destination is not None and (
        pipeline.destination.destination_name == "postgres"
    )
    with pipeline.sql_client() as client:
        statements = view_statements(
            columns,
            client.make_qualified_table_name,
            client.escape_column_name,
            has_deleted_at,
            _postgres_column_types(client, columns) if postgres else None,
        )
        _execute(client, statements, postgres, lambda: _drop(client, postgres))
    logger.info("views: %s refreshed in %s", ", ".join(VIEWS), pipeline.dataset_name)
    return list(VIEWS)


def _drop_group(client: Any, postgres: bool, group: ViewGroup) -> None:
    """Drop one group's views (and on PostgreSQL its functions) in the caller's transaction."""
    for view in reversed(group.views):
        client.execute_sql(f"drop view if exists {client.make_qualified_table_name(view)}")
    if postgres:
        for function, _, _ in group.functions.values():
            name = client.make_qualified_table_name(function)
            client.execute_sql(f"drop function if exists {name}()")


def _drop(client: Any, postgres: bool) -> None:
    """Drop the views (and on PostgreSQL their function) inside the caller's transaction."""
    for group in reversed(VIEW_GROUPS):
        _drop_group(client, postgres, group)
    for view in reversed(VIEWS):
        client.execute_sql(f"drop view if exists {client.make_qualified_table_name(view)}")
    if postgres:
        function = client.make_qualified_table_name(CURRENT_FUNCTION)
        client.execute_sql(f"drop function if exists {function}()")


def drop_views(pipeline: dlt.Pipeline) -> None:
    """Drop the BI views, e.g. before a full refresh.

    Views made by versions before 0.2 read ``imports`` directly, and PostgreSQL refuses to drop
    a table that views depend on: dlt's full refresh (``refresh="drop_sources"``) would fail and
    leave a pending package. :func:`create_views` recreates the views after the load.
    """
    postgres = pipeline.destination is not None and (
        pipeline.destination.destination_name == "postgres"
    )
    with pipeline.sql_client() as client:
        if not client.has_dataset():
            return
        with client.begin_transaction():
            _drop(client, postgres)
    logger.info("views: dropped in %s", pipeline.dataset_name)


# --------------------------------------------------------------------------------- reports

#: Report queries on the views; ``{current}``, ``{summary}``, ``{daily}`` are qualified names.
REPORT_QUERIES: dict[str, str] = {
    CURRENT_VIEW: "select count(*) as imports, count(distinct id) as distinct_ids,"
    " min(created_at) as first_created_at, max(updated_at) as last_updated_at from {current}",
    STATUS_VIEW: "select status, entity_type, imports, records from {summary}"
    " order by status, entity_type nulls last",
    DAILY_VIEW: "select day, created, completed, failed, median_seconds_to_complete"
    " from {daily} order by day",
}


@dataclass
class ViewResult:
    """Rows of one report query.

    Attributes:
        name: view name.
        headers: column names.
        rows: the rows, values normalized (see :func:`normalize`).
    """

    name: str
    headers: list[str]
    rows: list[tuple[Any, ...]]


def normalize(value: Any) -> Any:
    """Make a value engine-independent: timestamps as UTC ISO text, dates as ISO text.

    Each engine returns aware datetimes in its session time zone; numbers and text are
    already the same Python values (``numeric`` -> Decimal on both).
    """
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


def summary(pipeline: dlt.Pipeline) -> dict[str, ViewResult]:
    """Run the report queries on the views of ``pipeline``'s dataset.

    Returns:
        View name -> its rows (``imports_current`` as one totals row).
    """
    results: dict[str, ViewResult] = {}
    with pipeline.sql_client() as client:
        names = {
            "current": client.make_qualified_table_name(CURRENT_VIEW),
            "summary": client.make_qualified_table_name(STATUS_VIEW),
            "daily": client.make_qualified_table_name(DAILY_VIEW),
        }
        for view, sql in REPORT_QUERIES.items():
            with client.execute_query(sql.format(**names)) as cursor:
                headers = [d[0] for d in cursor.description]
                rows = [tuple(normalize(v) for v in row) for row in cursor.fetchall()]
            results[view] = ViewResult(view, headers, rows)
    return results


def write_chart(results: dict[str, ViewResult], path: str | Path) -> Path:
    """Write a PNG: daily created/completed/failed, median time to complete, status mix.

    matplotlib is imported here, so only ``report --chart`` needs it.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    daily = results[DAILY_VIEW].rows
    days = [date.fromisoformat(str(r[0])) for r in daily]
    fig, (counts, median, status) = plt.subplots(3, 1, figsize=(11, 11))
    for index, label in ((1, "created"), (2, "completed"), (3, "failed")):
        counts.plot(days, [r[index] for r in daily], label=label, linewidth=1)
    counts.set_title("Imports per UTC day")
    counts.legend()
    median.plot(days, [float(r[4]) if r[4] is not None else None for r in daily], linewidth=1)
    median.set_yscale("log")
    median.set_title("Median seconds to complete (imports completed that day; log scale)")
    totals: dict[str, int] = {}
    for row in results[STATUS_VIEW].rows:
        totals[str(row[0])] = totals.get(str(row[0]), 0) + int(row[2])
    status.bar(list(totals), list(totals.values()))
    status.set_title("Live imports by status")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


#: The demo's report: live imports by status and entity type, and the table's totals.
STATUS_BY_ENTITY = f"""
select status, entity__type, count(*) as imports
from {{table}}
where {DELETED_AT_COLUMN} is null
group by status, entity__type
order by status, entity__type
"""
TOTALS = f"""
select count(*), count(distinct id), count({DELETED_AT_COLUMN}), max(updated_at)
from {{table}}
"""


def query(pipeline: dlt.Pipeline, sql: str) -> list[Sequence[Any]]:
    """Run ``sql`` in the pipeline's dataset; ``{table}`` names the imports table."""
    with pipeline.sql_client() as client:
        table = client.make_qualified_table_name(settings.IMPORTS_TABLE)
        with client.execute_query(sql.format(table=table)) as cursor:
            return list(cursor.fetchall())


#: Control characters -> their visible ``\xNN`` escape (see :func:`visible`).
_CONTROLS = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}


def visible(text: str) -> str:
    r"""Return ``text`` with every control character shown as a ``\xNN`` escape.

    Text that came from the API or the destination (titles, entity types, error bodies) may
    hold terminal control sequences: ``"\x1b]0;pwned\x07"`` printed raw retitles the user's
    terminal, and other sequences move the cursor, clear the screen or hide text. Every
    character of the C0 set (``U+0000``-``U+001F``, tab and newline included), ``DEL``
    (``U+007F``) and the C1 set (``U+0080``-``U+009F``, where ``U+009B`` is a one-character
    CSI) is replaced by a backslash, ``x`` and two lower-case hex digits, the way Python's
    ``repr`` writes them: ESC becomes the four characters ``\x1b``, so an escape sequence
    stays readable but inert. All other characters (printable Unicode) are kept; backslashes
    are not doubled, so the result is for display, not a reversible encoding.

    Args:
        text: any text.

    Returns:
        The text without control characters; unchanged when it had none.
    """
    return text.translate(_CONTROLS)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Format rows as an aligned plain-text table; control characters shown by :func:`visible`."""
    cells = [[visible(str(v)) for v in headers], *[[visible(str(v)) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


#: Items and enrichment results per webset, from the item views.
ITEMS_BY_WEBSET = """
select c.webset_title, c.entity_type, count(*) as items,
       coalesce(max(e.results), 0) as enrichment_results
from {items_current} as c
left join (
    select webset_id, count(result) as results from {item_enrichments} group by webset_id
) as e on e.webset_id = c.webset_id
group by c.webset_id, c.webset_title, c.entity_type
order by c.webset_title, c.webset_id
"""


def render_items_report(pipeline: dlt.Pipeline) -> str | None:
    """Live items and enrichment results per webset, as text; None without the item views.

    Asks the destination, not the local pipeline state: an analyst's machine (or another
    pipeline name, like the demo's) has no local record of what was loaded.
    """
    with pipeline.sql_client() as client:
        sql = ITEMS_BY_WEBSET.format(
            items_current=client.make_qualified_table_name(ITEMS_CURRENT_VIEW),
            item_enrichments=client.make_qualified_table_name(ITEM_ENRICHMENTS_VIEW),
        )
        try:
            with client.execute_query(sql) as cursor:
                rows = [tuple(r) for r in cursor.fetchall()]
        except DatabaseException:  # views not created yet (loaded by a script, not run_load)
            return None
    headers = ("webset", "entity type", "live items", "enrichment results")
    return format_table(headers, rows)


#: The report's sections of the health views: title -> (view, query on it).
HEALTH_REPORTS: dict[str, tuple[str, str]] = {
    f"{MONITOR_HEALTH_VIEW}, all days, one line per monitor": (
        MONITOR_HEALTH_VIEW,
        """
select monitor_id, monitor_status, cast(sum(runs) as bigint) as runs,
       cast(sum(completed) as bigint) as completed, cast(sum(failed) as bigint) as failed,
       max(last_failed_at) as last_failed_at, max(last_failed_reason) as last_failed_reason
from {view}
group by monitor_id, monitor_status
order by monitor_id
""",
    ),
    f"{WEBHOOK_HEALTH_VIEW}, one line per webhook": (
        WEBHOOK_HEALTH_VIEW,
        """
select webhook_id, url, webhook_status, attempts, failed, failure_rate,
       failed_since_last_success, last_failure_at, last_failure_status_code, status_codes
from {view}
order by webhook_id
""",
    ),
}


def render_health_report(pipeline: dlt.Pipeline) -> list[tuple[str, str]]:
    """The monitor and webhook health views as ``(title, text table)``; those that exist.

    Asks the destination (see :func:`render_items_report`). Rates are shown to 4 places.
    """
    sections: list[tuple[str, str]] = []
    for title, (view, sql) in HEALTH_REPORTS.items():
        with pipeline.sql_client() as client:
            try:
                with client.execute_query(
                    sql.format(view=client.make_qualified_table_name(view))
                ) as cursor:
                    headers = [d[0] for d in cursor.description]
                    rows = [tuple(_shown_value(v) for v in r) for r in cursor.fetchall()]
            except DatabaseException:  # no such view: its tables were not loaded here
                continue
        sections.append((title, format_table(headers, rows)))
    return sections


def _shown_value(value: Any) -> Any:
    """A report cell: :func:`normalize`, and floats rounded to 4 places."""
    return round(value, 4) if isinstance(value, float) else normalize(value)


def render_report(pipeline: dlt.Pipeline) -> str:
    """Return live imports by status and entity type, and the totals, as text (the demo's)."""
    rows, distinct, deleted, newest = query(pipeline, TOTALS)[0]
    table = format_table(("status", "entity type", "imports"), query(pipeline, STATUS_BY_ENTITY))
    return (
        f"{table}\n\n{rows:,} rows, {distinct:,} distinct ids, {rows - deleted:,} live,"
        f" {deleted:,} soft-deleted (gone from Exa), newest updatedAt {visible(str(newest))}"
    )


# --------------------------------------------------------------------------------- dictionary


def declared_schema() -> Schema:
    """Return the dlt schema the source declares, without any request or destination."""
    from exa_source.source import exa_websets_source

    schema: Schema = exa_websets_source(api_key="dictionary").discover_schema()
    return schema


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _dlt_type(column: TColumnSchema) -> str:
    data_type = str(column.get("data_type", ""))
    if data_type == "timestamp" and column.get("timezone", True):
        return "timestamp (UTC)"
    return data_type


def _table_lines(schema: Schema, spec: TableSpec, mappers: dict[str, Any]) -> list[str]:
    table = schema.tables.get(spec.name)
    if table is None:
        return []
    declared = spec.stored_columns(schema.naming)
    what = f"one row per {spec.noun}, merged on `id`"
    lines = [
        f"### `{spec.name}` (table; {what})",
        "",
        "| column | type | DuckDB | PostgreSQL | nullable | meaning | example |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, column in table["columns"].items():
        if not column.get("data_type"):
            continue
        known = declared.get(name)
        meaning = known.meaning if known else "Added by the API after this schema was declared."
        example = f"`{known.example}`" if known else ""
        prepared = cast(PreparedTableSchema, table)
        engines = [str(m.to_destination_type(column, prepared)) for m in mappers.values()]
        nullable = "yes" if column.get("nullable", True) else "no"
        cells = [f"`{name}`", _dlt_type(column), *engines, nullable, meaning, example]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return lines


def _view_lines(name: str, meaning: str, columns: Sequence[ViewColumn] | None) -> list[str]:
    lines = ["", f"### `{name}` (view)", "", meaning]
    if columns:
        lines += ["", "| column | type | meaning | example |", "|---|---|---|---|"]
        for vc in columns:
            example = f"`{vc.example}`" if vc.example else ""
            cells = [f"`{vc.name}`" if vc.name != "…" else "…", vc.type, vc.meaning, example]
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return lines


def data_dictionary(schema: Schema | None = None) -> str:
    """Render the data dictionary as markdown (the block between the README markers).

    Args:
        schema: a dlt schema, e.g. ``pipeline.default_schema`` (it includes columns the API
            added since); default: the schema the source declares.

    Returns:
        Markdown: each table (dlt type, DuckDB and PostgreSQL types, nullability, meaning,
        example), each followed by its views' columns.
    """
    schema = schema or declared_schema()
    if _imports_table(schema) is None and settings.ITEMS_TABLE not in schema.tables:
        raise ValueError(f"schema {schema.name!r} has none of the source's tables")
    mappers = {
        "DuckDB": dlt.destinations.duckdb().capabilities().get_type_mapper(),
        "PostgreSQL": dlt.destinations.postgres().capabilities().get_type_mapper(),
    }
    lines: list[str] = []
    for spec in TABLES.values():
        table_lines = _table_lines(schema, spec, mappers)
        if not table_lines:
            continue
        lines += ([""] if lines else []) + table_lines
        if spec.name == settings.IMPORTS_TABLE:
            for view in VIEWS:
                lines += _view_lines(view, VIEW_MEANINGS[view], VIEW_COLUMNS.get(view))
        for group in VIEW_GROUPS:
            if spec.name == group.table:
                for view in group.views:
                    lines += _view_lines(view, group.meanings[view], group.columns[view])
    return "\n".join(lines) + "\n"


def readme_dictionary(text: str) -> str | None:
    """Return the dictionary block between the README markers, or None if they are missing."""
    start = text.find(DICTIONARY_START)
    end = text.find(DICTIONARY_END)
    if start < 0 or end < start:
        return None
    return text[start + len(DICTIONARY_START) : end].strip("\n") + "\n"


def check_readme(path: str | Path, schema: Schema | None = None) -> bool:
    """Return whether the README's dictionary block equals the generated dictionary."""
    block = readme_dictionary(Path(path).read_text(encoding="utf-8"))
    return block is not None and block.strip() == data_dictionary(schema).strip()
