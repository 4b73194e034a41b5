"""A small text report of the loaded ``imports`` table (used by ``exa-source demo``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dlt

from exa_source import settings

STATUS_BY_ENTITY = f"""
select status, entity__type, count(*) as imports
from {{table}}
where {settings.DELETED_AT_COLUMN} is null
group by status, entity__type
order by status, entity__type
"""
TOTALS = f"""
select count(*), count(distinct id), count({settings.DELETED_AT_COLUMN}), max(updated_at)
from {{table}}
"""


def query(pipeline: dlt.Pipeline, sql: str) -> list[Sequence[Any]]:
    """Run ``sql`` in the pipeline's dataset; ``{table}`` names the imports table."""
    with pipeline.sql_client() as client:
        table = client.make_qualified_table_name(settings.IMPORTS_TABLE)
        with client.execute_query(sql.format(table=table)) as cursor:
            return list(cursor.fetchall())


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Format rows as an aligned plain-text table."""
    cells = [list(map(str, headers)), *[[str(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_report(pipeline: dlt.Pipeline) -> str:
    """Return live imports by status and entity type, and the totals, as text."""
    rows, distinct, deleted, newest = query(pipeline, TOTALS)[0]
    table = format_table(("status", "entity type", "imports"), query(pipeline, STATUS_BY_ENTITY))
    return (
        f"{table}\n\n{rows:,} rows, {distinct:,} distinct ids, {rows - deleted:,} live,"
        f" {deleted:,} soft-deleted (gone from Exa), newest updatedAt {newest}"
    )
