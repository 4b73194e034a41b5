"""Deletion detection: imports deleted in Exa leave the list without a trace, so find them.

The API has no deleted-imports feed and no event for a deletion (reference §3.7): a deleted
import simply stops appearing in ``GET /v0/imports``. Every run pages through all imports anyway
(there is no ``updatedAt`` filter), so after a **complete** scan the ids that are live in the
destination but were not in the scan are the deleted ones. A scan that failed or stopped early
never gets here, so it never deletes.

Two steps, so that nothing changes in the destination unless the load itself succeeded:

1. at the end of a complete scan the ``imports`` resource calls :func:`find_deleted`, which
   compares the scanned ids with the destination's live ids (both as Arrow arrays: ~40 MB at
   1M imports) and records the deleted ids in the resource state. The state is committed
   with the load, atomically with the data and the cursor;
2. after the load, :func:`apply_deletions` applies the recorded ids with plain SQL, by policy:
   ``soft`` (default) stamps ``_exa_deleted_at`` and keeps the row for history; ``hard``
   deletes the row. Both statements are idempotent: if the process dies between the load and
   this step, the next complete scan finds the same ids again (they are still live).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, Literal

import dlt
import pyarrow as pa
import pyarrow.compute as pc
from dlt.destinations.exceptions import DatabaseUndefinedRelation

from exa_source import settings
from exa_source.helpers import ExaConfigError

logger = logging.getLogger(__name__)

DeletionPolicy = Literal["soft", "hard", "off"]
POLICIES: tuple[str, ...] = ("soft", "hard", "off")
#: ids per ``IN (...)`` list when applying deletions.
_CHUNK = 1_000
#: ids per fetch when reading the destination's live ids.
_FETCH = 50_000


def validate_policy(policy: str) -> DeletionPolicy:
    """Check a deletion policy name.

    Raises:
        ExaConfigError: not one of soft, hard, off.
    """
    if policy not in POLICIES:
        raise ExaConfigError(f"deletions={policy!r} must be one of {', '.join(POLICIES)}")
    return policy  # type: ignore[return-value]


def _gone_in_duckdb(client: Any, table: str, column: str, scanned: pa.ChunkedArray) -> list[str]:
    """DuckDB: anti-join the live ids against the scanned ids inside the database.

    DuckDB reads the scanned ids straight from Arrow memory (no copy) and does the join within
    its own memory limit, so only the deleted ids ever reach Python: at 1M imports this saves
    ~180 MB over materialising every live id and a hash set in Python.
    """
    native = client.native_connection
    view = "_exa_scanned_ids"
    native.register(view, pa.table({"id": scanned}))
    try:
        rows = client.execute_sql(
            f"select id from {table} where {column} is null and id not in (select id from {view})"
        )
    finally:
        native.unregister(view)
    return [str(row[0]) for row in rows or []]


def _gone_in_python(client: Any, table: str, column: str, scanned: pa.ChunkedArray) -> list[str]:
    """Any SQL destination: read the live ids in chunks and compare in Arrow."""
    chunks: list[pa.Array] = []
    with client.execute_query(f"select id from {table} where {column} is null") as cursor:
        # fetchmany into Arrow chunks (dlt's cursor.arrow() calls fetch_arrow_table, which
        # DuckDB 2.0 removed, and other drivers have no Arrow path at all)
        while rows := cursor.fetchmany(_FETCH):
            chunks.append(pa.array([row[0] for row in rows], pa.string()))
    live = pa.chunked_array(chunks, pa.string())
    gone = live.filter(pc.invert(pc.is_in(live, value_set=scanned)))
    return [str(v) for v in gone.to_pylist()]


def find_deleted(seen: Sequence[pa.ChunkedArray | pa.Array]) -> list[str]:
    """Return the ids live in the destination but absent from a complete scan.

    Args:
        seen: the id columns of every table the scan produced, before incremental filtering.

    Returns:
        The deleted ids; empty when no pipeline is active or the table does not exist yet.
    """
    try:
        pipeline = dlt.current.pipeline()
    except Exception:  # iterated outside a pipeline, e.g. list(source)
        return []
    if pipeline.destination is None:
        return []
    # chunked: no concatenated copy of a million ids
    scanned = pa.chunked_array(
        [c for col in seen for c in (col.chunks if isinstance(col, pa.ChunkedArray) else [col])],
        type=pa.string(),
    )
    try:
        with pipeline.sql_client() as client:
            table = client.make_qualified_table_name(settings.IMPORTS_TABLE)
            column = client.escape_column_name(settings.DELETED_AT_COLUMN)
            in_duckdb = pipeline.destination.destination_name == "duckdb"
            compare = _gone_in_duckdb if in_duckdb else _gone_in_python
            return compare(client, table, column, scanned)
    except DatabaseUndefinedRelation:
        return []  # first run: no table yet


def record(policy: DeletionPolicy, deleted: list[str]) -> dict[str, Any]:
    """Return the resource-state entry that :func:`apply_deletions` reads after the load."""
    return {
        "policy": policy,
        "detected_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        "ids": deleted,
    }


def imports_state(pipeline: dlt.Pipeline) -> dict[str, Any]:
    """The ``imports`` resource's state as last committed (scan counters, window, deletions)."""
    state: dict[str, Any] = (
        pipeline.state.get("sources", {})
        .get(settings.SOURCE_NAME, {})
        .get("resources", {})
        .get(settings.IMPORTS_TABLE, {})
    )
    return state


def apply_deletions(pipeline: dlt.Pipeline) -> int:
    """Apply the deletions recorded by the last complete scan; returns how many ids.

    Soft: ``_exa_deleted_at`` is set to the scan's time on rows where it is still null.
    Hard: the rows are deleted. Running it twice changes nothing the second time.
    """
    entry = imports_state(pipeline).get("deletions")
    if not entry or not entry.get("ids") or entry.get("policy") == "off":
        return 0
    ids: list[str] = entry["ids"]
    with pipeline.sql_client() as client:
        table = client.make_qualified_table_name(settings.IMPORTS_TABLE)
        column = client.escape_column_name(settings.DELETED_AT_COLUMN)
        when = datetime.fromisoformat(entry["detected_at"])
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            marks = ", ".join(["%s"] * len(chunk))
            if entry["policy"] == "hard":
                sql = f"delete from {table} where id in ({marks})"
                args: list[Any] = chunk
            else:
                sql = f"update {table} set {column} = %s where {column} is null and id in ({marks})"
                args = [when, *chunk]
            client.execute_sql(sql, *args)
    logger.info("deletions: %s-deleted %d imports gone from the API", entry["policy"], len(ids))
    return len(ids)
